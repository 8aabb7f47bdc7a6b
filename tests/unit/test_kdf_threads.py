"""Argon2id derivations from several threads at once complete (the node agent opens
repositories from several job threads): without mover's lock, two at once with lanes > 1 hung
or raised MemoryError."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import threading
from mover.crypto import KdfParams

errors = []

def derive(seed: int) -> None:
    try:
        for i in range(20):
            KdfParams(8192, 3, 4).derive(b"password %d" % seed, b"0123456789abcdef")
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=derive, args=(n,)) for n in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("errors", errors)
raise SystemExit(1 if errors else 0)
"""


def test_concurrent_derivations_complete() -> None:
    # In a child with a deadline: the failure this guards against is a hang.
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "errors []" in proc.stdout
