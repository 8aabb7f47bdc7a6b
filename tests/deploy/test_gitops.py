"""docs/gitops.md and agent/examples/: every `mover` command the docs quote parses with the
real CLI, and every example manifest is a valid object that runs an existing command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from mover.cli.main import cli
from tests.deploy.kube_schema import ROOT, validate_all
from tests.deploy.test_chart import objects as chart_objects

DOC = ROOT / "docs" / "gitops.md"
EXAMPLES = ROOT / "agent" / "examples"
USER = "mover-app-user"  # the chart's ClusterRole for people and pipelines

Obj = dict[str, Any]
SHELL_OPERATORS = {">", ">>", "<", "|", "||", "&&", ";", "&", "2>", "2>&1"}
HOOKS = {"PreSync", "Sync", "PostSync", "SyncFail", "Skip"}
DELETE_POLICIES = {"HookSucceeded", "HookFailed", "BeforeHookCreation"}


def parse(argv: list[str], complete: bool = True) -> click.Context:
    """Parse `mover ARGV` as the real CLI would, down to the command, without running it:
    click raises a UsageError for an unknown command or option, a missing argument, a bad
    choice. mover's groups take no options of their own, so each group's next word is its
    command's name. With complete=False, ARGV may name just a group or a command (prose that
    mentions `mover app` or `mover app backup`): only the names are checked."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="mover")
    rest = list(argv)
    while isinstance(command, click.Group):
        if not rest and not complete:
            return ctx
        assert rest and not rest[0].startswith("-"), f"mover {shlex.join(argv)}: no command"
        name = rest.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"no such command {name!r}", ctx)
        command = sub
        if isinstance(command, click.Group):
            ctx = click.Context(command, info_name=name, parent=ctx)
        elif complete or rest:
            return command.make_context(name, rest, parent=ctx)
        else:
            return click.Context(command, info_name=name, parent=ctx)
    raise AssertionError("unreachable")


def command_lines(markdown: str) -> list[str]:
    """Every `mover ...` command the page quotes: lines of its fenced code blocks (after a
    `run:` key, for CI YAML) and inline code spans; words only (`mover app backup`) are a
    mention of the command, anything with an option a command line to parse in full."""
    lines: list[str] = []
    in_block = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            text = re.sub(r"^\s*(?:-\s*)?(?:run:\s*)?", "", line)
            if text.startswith("mover "):
                lines.append(text)
        else:
            lines += [span for span in re.findall(r"`([^`]+)`", line) if span.startswith("mover ")]
    return lines


def argv_of(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for word in lexer:
        if word in SHELL_OPERATORS or word.startswith("#"):
            break
        words.append(word)
    assert words[0] == "mover", line
    return words[1:]


def test_the_docs_quote_the_commands_a_pipeline_needs() -> None:
    commands = [argv_of(line) for line in command_lines(DOC.read_text())]
    assert len(commands) >= 6
    backups = [c for c in commands if c[:2] == ["app", "backup"]]
    assert any({"--wait", "--json", "--include-namespace"} <= set(c) for c in backups)
    restores = [c for c in commands if c[:2] == ["app", "restore"]]
    assert any("data-only" in c and "--wait" in c for c in restores)


@pytest.mark.parametrize("line", command_lines(DOC.read_text()))
def test_every_quoted_command_parses(line: str) -> None:
    argv = argv_of(line)
    ctx = parse(argv, complete=any(word.startswith("-") for word in argv))
    assert ctx.command.name is not None


@pytest.mark.parametrize(
    "line",
    [
        "mover app backup x --include-namespace shop --wiat",
        "mover app restore x --mode data-only",  # --from-backup is required
        "mover app restore x --from-backup b --mode data",
        "mover app bakcup x",
        "mover app bakcup",
    ],
)
def test_a_wrong_command_fails_to_parse(line: str) -> None:
    argv = argv_of(line)
    with pytest.raises(click.UsageError):
        parse(argv, complete=any(word.startswith("-") for word in argv) or len(argv) > 2)


def test_the_exit_codes_the_docs_state_are_the_clis() -> None:
    """The table's codes are those of mover's main (`mover.cli.main`) and errors."""
    from mover.errors import MoverError, UsageError
    from mover_k8s.errors import Conflict, KubeError

    text = DOC.read_text()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert code in text
    assert MoverError.exit_code == 1 and KubeError.exit_code == 1
    assert UsageError.exit_code == 2
    assert Conflict.exit_code == 1  # the CLI turns a taken name into a UsageError (exit 2)
    main_doc = (ROOT / "mover" / "cli" / "main.py").read_text()
    assert "130 interrupted" in main_doc and "2 bad usage" in main_doc


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["app", "backup", "x"], 2),  # nothing to back up: before any API call
        (["app", "backup", "x", "--include-namespace", "shop", "--selector", "oops"], 2),
        (["app", "restore", "x", "--from-backup", "b", "--mode", "bogus"], 2),
        (["app", "restore", "x", "--from-backup", "b", "--namespace-mapping", "shop"], 2),
        (["app", "backup", "x", "--include-namespace", "shop", "--wait", "--json"], 1),
    ],
)
def test_exit_codes_of_the_real_cli(
    argv: list[str], code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The codes the table states, from the real `mover` (no cluster: the last one cannot
    reach one, which is exit 1). Bad input is one line on stderr and nothing on stdout."""
    from mover.cli.main import main

    missing = tmp_path / "no-kubeconfig"
    assert main([*argv, "--kubeconfig", str(missing)]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err


def example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.yaml"))


def substitutions() -> dict[Path, dict[str, str]]:
    """Flux's postBuild substitutions, per folder its Kustomizations apply."""
    found: dict[Path, dict[str, str]] = {}
    for path in example_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("kustomize.toolkit.fluxcd.io/"):
                folder = path.parent / doc["spec"]["path"].rsplit("/", 1)[-1]
                found[folder] = (doc["spec"].get("postBuild") or {}).get("substitute") or {}
    return found


def substitute(text: str, values: dict[str, str]) -> str:
    """Flux's postBuild: ${VAR} only ($(VAR) is the kubelet's); a missing one raises here."""
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def example_objects() -> list[tuple[Path, Obj]]:
    subs = substitutions()
    objects: list[tuple[Path, Obj]] = []
    for path in example_files():
        text = path.read_text()
        if path.parent in subs:
            text = substitute(text, subs[path.parent])
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append((path, doc))
    return objects


def test_example_manifests_are_valid_objects() -> None:
    objects = example_objects()
    kinds = {doc["kind"] for _, doc in objects}
    assert {"Job", "ServiceAccount", "RoleBinding", "Kustomization"} <= kinds
    manifests = [d for _, d in objects if d["apiVersion"] != "kustomize.config.k8s.io/v1beta1"]
    assert validate_all(manifests) == []
    for path, doc in objects:
        if doc["apiVersion"] == "kustomize.config.k8s.io/v1beta1":
            for resource in doc["resources"]:
                assert (path.parent / resource).is_file(), resource


def test_flux_applies_the_backup_before_the_app() -> None:
    kustomizations = {
        d["metadata"]["name"]: d
        for _, d in example_objects()
        if d["apiVersion"].startswith("kustomize.toolkit.fluxcd.io/")
    }
    backup = kustomizations["shop-pre-deploy-backup"]["spec"]
    assert backup["wait"] is True and backup["force"] is True
    assert (EXAMPLES / "flux" / backup["path"].rsplit("/", 1)[-1]).is_dir()
    app = kustomizations["shop"]["spec"]
    assert {"name": "shop-pre-deploy-backup"} in app["dependsOn"]


def jobs() -> list[tuple[Path, Obj]]:
    return [(p, d) for p, d in example_objects() if d["kind"] == "Job"]


def test_argo_hook_annotations_are_valid() -> None:
    argo = [(p, d) for p, d in example_objects() if "argocd" in p.parts]
    assert argo
    for _, doc in argo:
        annotations = doc["metadata"].get("annotations") or {}
        assert annotations.get("argocd.argoproj.io/hook") in HOOKS, doc["metadata"]
        policy = annotations.get("argocd.argoproj.io/hook-delete-policy", "")
        assert set(policy.split(",")) <= DELETE_POLICIES, policy
    assert any(
        d["kind"] == "Job" and d["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
        for _, d in argo
    )


def test_example_jobs_run_a_backup_that_fails_the_job_when_it_fails() -> None:
    (role,) = [
        d for d in chart_objects() if d["kind"] == "ClusterRole" and d["metadata"]["name"] == USER
    ]
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    found = jobs()
    assert len(found) == 2
    for path, job in found:
        spec = job["spec"]
        assert spec["backoffLimit"] == 0, path
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        argv = []
        for arg in container["args"]:
            for var in re.findall(r"\$\((\w+)\)", arg):  # expanded by the kubelet from env
                assert var in env, var
            argv.append(re.sub(r"\$\((\w+)\)", "shop-pre-sync-backup-x7k2p", arg))
        ctx = parse(argv)
        assert ctx.command.name == "backup"
        assert ctx.params["wait"] and ctx.params["as_json"] and ctx.params["namespaces"]
        assert ctx.params["timeout"] < spec["activeDeadlineSeconds"]
        # The Job's account may do what `mover app backup --wait` does.
        assert ("backups", "create") in granted and ("backups", "get") in granted
        bindings = [
            d
            for p, d in example_objects()
            if p.parent == path.parent and d["kind"] == "RoleBinding"
        ]
        assert any(
            b["roleRef"]["name"] == role["metadata"]["name"]
            and b["metadata"]["namespace"] == ctx.params["namespace"]
            and {"kind": "ServiceAccount", "name": pod["serviceAccountName"]}.items()
            <= b["subjects"][0].items()
            for b in bindings
        ), path
