"""`mover benchmark` through the installed command line."""

from __future__ import annotations

import json
import subprocess
import sys

MOVER = [sys.executable, "-m", "mover"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOVER, *args], capture_output=True, text=True, timeout=300)


def test_benchmark_json_names_every_stage() -> None:
    proc = run("benchmark", "--json", "--size", "4MiB", "--min-time", "0")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    stages = report["stages"]
    for name in (
        "chunk_scalar",
        "blake3",
        "chunk_hash",
        "zstd_1",
        "zstd_3",
        "aes_gcm",
        "zero_test",
    ):
        assert stages[name]["one_core_bytes_per_s"] > 0
        assert stages[name]["all_cores_bytes_per_s"] > 0
    assert report["data_bytes"] == 4 << 20
    preferred = report["preferred"]
    assert preferred["zstd_level"] in (1, 3)
    assert preferred["kernel"] == report["kernels"][-1]
    level = preferred["zstd_level"]
    assert (stages[f"zstd_{level}"]["all_cores_bytes_per_s"] >= 500e6) == (
        "MB/s on all cores" in preferred["reason"]
    )
    assert set(report["kernels"]) <= {"scalar", "avx512"}
    assert all(f"chunk_{k}" in stages for k in report["kernels"])


def test_benchmark_table_for_people() -> None:
    proc = run("benchmark", "--size", "2MiB", "--min-time", "0", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "zstd_3" in proc.stdout
    assert "preferred here: `mover init --compression" in proc.stdout
    assert "MB/s" in proc.stdout


def test_bad_size_is_one_clear_line() -> None:
    for bad in ("lots", "5x", "-3MiB", "100"):
        proc = run("benchmark", "--size", bad)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("mover: error: --size")


def test_bad_threads_and_unknown_verb() -> None:
    proc = run("benchmark", "--threads", "0")
    assert proc.returncode == 2
    assert "--threads" in proc.stderr
    proc = run("frobnicate")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr


def test_kernel_request_that_cannot_run_fails_loudly() -> None:
    env_run = subprocess.run(
        [*MOVER, "benchmark", "--size", "2MiB"],
        capture_output=True,
        text=True,
        env={"MOVER_CDC_KERNEL": "neon9000", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert env_run.returncode == 3
    assert env_run.stderr.strip().splitlines() == [
        "mover: error: unknown chunker kernel 'neon9000' (from MOVER_CDC_KERNEL or --kernel); "
        "use one of: auto, scalar, avx512"
    ]


def test_missing_native_module_is_one_line_with_exit_3() -> None:
    code = (
        "import sys; sys.modules['mover._native.cdc'] = None\n"
        "from mover.cli.main import main\n"
        "sys.exit(main(['benchmark', '--size', '1MiB']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "native core is not built" in lines[0]
    assert "pip install" in lines[0]
