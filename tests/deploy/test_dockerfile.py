"""The Dockerfile's structure (the image is not built by the tests: no container engine is
assumed): a build stage that compiles the native core into wheels, a runtime stage that
installs only those, a non-root user, `mover` as the entrypoint, no secrets, and a build context
that holds everything the build stage copies."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.kube_schema import ROOT

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    name: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        name, _, args = full.partition(" ")
        result.append(Instruction(name.upper(), args.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return result


def stages(steps: list[Instruction]) -> list[tuple[str, list[Instruction]]]:
    found: list[tuple[str, list[Instruction]]] = []
    for step in steps:
        if step.name == "FROM":
            words = step.args.split()
            assert len(words) == 3 and words[1].upper() == "AS", f"unnamed stage: {step}"
            found.append((words[2], []))
        elif found:
            found[-1][1].append(step)
    return found


def parsed() -> list[tuple[str, list[Instruction]]]:
    return stages(instructions((ROOT / "Dockerfile").read_text()))


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves `path` out of the context: a pattern matches the path or a
    folder above it, from the root; `**/` matches at any depth; `!` takes a path back in."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    anywhere = ["/".join(parts[i:j]) for j in range(1, len(parts) + 1) for i in range(j)]
    out = False
    for line in patterns:
        negate = line.startswith("!")
        pattern = line.removeprefix("!")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p, pattern[3:]) for p in anywhere)
        else:
            hit = any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
        if hit:
            out = not negate
    return out


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_two_stages_build_then_runtime() -> None:
    names = [name for name, _ in parsed()]
    assert names == ["build", "runtime"]


def test_build_stage_compiles_the_core_into_wheels() -> None:
    (_, build), _ = parsed()
    runs = " ".join(s.args for s in build if s.name == "RUN")
    assert "pip wheel" in runs
    assert "gcc" in runs  # Cython's output is compiled here, not in the runtime stage
    copied = [shlex.split(s.args)[:-1] for s in build if s.name == "COPY"]
    sources = {src for group in copied for src in group}
    assert {"setup.py", "pyproject.toml", "ext", "mover", "agent/mover_k8s"} <= sources


def test_build_context_holds_what_the_build_copies() -> None:
    patterns = dockerignore()
    (_, build), _ = parsed()
    for step in build:
        if step.name != "COPY":
            continue
        for source in shlex.split(step.args)[:-1]:
            assert (ROOT / source).exists(), source
            assert not ignored(source, patterns), f"{source} is excluded by .dockerignore"
    for private in [".git", "build", "tests", "mover/_native/cdc.cpython-311-x86_64-linux-gnu.so"]:
        assert ignored(private, patterns), private
    for secret in [".env", "deploy/.env", "keys/tls.key", ".kube", "kubeconfig.yaml", ".aws"]:
        assert ignored(secret, patterns), secret


def test_runtime_installs_only_the_built_wheels_and_runs_as_non_root() -> None:
    _, (_, runtime) = parsed()
    runs = " ".join(s.args for s in runtime if s.name == "RUN")
    assert "from=build" in runs and "--no-index" in runs
    assert "gcc" not in runs and "apt-get install" not in runs
    users = [s.args for s in runtime if s.name == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root"), user
    assert user.isdigit(), "a numeric uid lets runAsNonRoot verify it"
    last_user = max(i for i, s in enumerate(runtime) if s.name == "USER")
    assert all(s.name != "RUN" for s in runtime[last_user:]), "RUN after USER"


def test_entrypoint_is_mover() -> None:
    _, (_, runtime) = parsed()
    (entrypoint,) = [s.args for s in runtime if s.name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["mover"]


def test_no_secrets_in_the_image() -> None:
    steps = instructions((ROOT / "Dockerfile").read_text())
    for step in steps:
        if step.name in ("ENV", "ARG", "LABEL"):
            assert not SECRET_NAME.search(step.args), step
        if step.name in ("COPY", "ADD"):
            assert not SECRET_NAME.search(step.args), step
            assert step.name != "ADD" or "http" not in step.args, step


def test_the_parser_sees_a_bad_dockerfile() -> None:
    """The checks can fail: a root USER and a one-stage file are found."""
    bad = 'FROM python:3.11 AS runtime\nUSER root\nENTRYPOINT ["python"]\n'
    ((name, steps),) = stages(instructions(bad))
    assert name == "runtime"
    assert [s.args for s in steps if s.name == "USER"] == ["root"]
    assert not ignored("mover/cli.py", ["tests", "**/*.so"])
    assert ignored("a/b/c.so", ["**/*.so"])


def test_the_node_agent_gets_its_privilege_from_the_chart_not_the_image() -> None:
    # Intended change (issue 15): privileged only under the chart's node.blockAccess.
    template = (ROOT / "agent" / "chart" / "templates" / "node-agent.yaml").read_text()
    block = template.index("{{- if .Values.node.blockAccess }}")
    assert block < template.index("privileged: true") < template.index("{{- else }}", block)
    assert "blockAccess: true" in (ROOT / "agent" / "chart" / "values.yaml").read_text()
    runs = " ".join(s.args for s in instructions((ROOT / "Dockerfile").read_text()))
    for widening in ("setcap", "chmod u+s", "chmod 4", "sudo"):
        assert widening not in runs, widening


def build_context(target: Path) -> Path:
    """What the build stage's COPY instructions put in its WORKDIR, from the context that
    .dockerignore leaves."""
    patterns = dockerignore()
    (_, build), _ = parsed()
    for step in build:
        if step.name != "COPY":
            continue
        *sources, dest = shlex.split(step.args)
        for source in sources:
            path = ROOT / source
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in files:
                rel = file.relative_to(ROOT).as_posix()
                if ignored(rel, patterns):
                    continue
                if path.is_file():
                    out = target / dest / file.name
                else:
                    out = target / dest / file.relative_to(path)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, out)
    return target


@pytest.mark.slow
def test_build_stage_makes_a_wheel_with_the_native_core(tmp_path: Path) -> None:
    """The build stage's `pip wheel .`, run on exactly what it copies (not in a container:
    pip fetches the build requirements, as in the image). The wheel holds the compiled core,
    the CRDs and the `mover` entry points."""
    context = build_context(tmp_path / "src")
    assert not list(context.rglob("*.so")), "the context carries a compiled module"
    wheels = tmp_path / "w"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = wheels.glob("mover-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entries = archive.read(entry_points).decode()
    for module in ("cdc", "index_run"):
        assert any(re.fullmatch(rf"mover/_native/{module}\..*\.so", n) for n in names), module
    assert "mover_k8s/crds/backups.yaml" in names
    assert "mover = mover.cli.main:main" in entries
    assert "[mover.commands]" in entries
