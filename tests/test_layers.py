"""The layering contracts of pyproject.toml's [tool.importlinter], checked by import-linter's own
command (`lint-imports`) with this interpreter: on the tree as it is, and on copies with one
forbidden import added, so that a contract that stopped biting fails too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` run by this interpreter (the venv's), without its cache (nothing written
    into the tree; parallel runs do not share one); the packages are found from `cwd` first."""
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [sys.executable, str(script), "--config", str(CONFIG), "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_contracts_kept() -> None:
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("mover_k8s/store.py", "import mover.pipeline.backup", "mover_k8s uses mover through"),
        (
            "mover_k8s/node/delta.py",
            "from mover.objects.tree import walk",
            "mover_k8s uses mover through",
        ),
        (
            "mover_k8s/cli/render.py",
            "from mover.cli.output import emit_json",
            "mover_k8s uses mover",
        ),
        ("mover_k8s/verify.py", "import kubernetes", "only mover_k8s.k8s imports"),
        ("mover/api/__init__.py", "import mover_k8s", "mover never imports the Kubernetes side"),
        ("mover/storage/memory.py", "import mover.objects.repository", "mover's layers"),
        ("mover/content/pack.py", "from mover.pipeline import backup", "mover's layers"),
        ("mover/maintenance/prune.py", "import mover.pipeline.restore", "mover's layers"),
        ("mover/objects/tree.py", "import mover.api", "mover's layers"),
        ("mover/chunking/native.py", "import mover.objects.repository", "mover's layers"),
        ("mover/mount.py", "import mover.api", "mover's layers"),
        ("mover/tools/nodebench.py", "from mover.mount import load_fuse", "mover's layers"),
        (
            "mover/cli/backup_cmd.py",
            "from mover.pipeline.backup import run_backup",
            "mover.cli uses the library through",
        ),
        ("mover/cli/check_cmd.py", "from mover.text import plural", "mover.cli uses the library"),
        (
            "mover/pipeline/backup.py",
            "from mover.cli.sizes import parse_size",
            "only the command line",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(ROOT / "mover", tmp_path / "mover", ignore=ignore)
    shutil.copytree(ROOT / "agent" / "mover_k8s", tmp_path / "mover_k8s", ignore=ignore)
    with (tmp_path / module).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0, proc.stdout
    broken = [row for row in proc.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), proc.stdout
