"""The README's two set-up commands stay true: CI runs exactly the README's test command, both
commands start with a virtualenv, and nothing in the README points outside the clone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TEST_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && "
    "python3 -m pip install -e '.[test]' && python3 -m pytest"
)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    assert TEST_COMMAND in README
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == TEST_COMMAND


def test_the_demo_makes_its_own_virtualenv() -> None:
    assert "bash scripts/demo.sh" in README
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    assert 'python3 -m venv "$venv"' in demo


def test_no_link_or_path_leaves_the_clone() -> None:
    targets = re.findall(r"\]\(([^)]+)\)", README)
    assert targets, "the README links its docs"
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        path = (ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), target
        assert path.exists(), target
    assert "../" not in README
