"""`mover benchmark`: how fast this node runs each stage of the data path."""

from __future__ import annotations

import click

from mover import api
from mover.cli.output import emit_json, emit_table, human_rate, status
from mover.cli.sizes import parse_size


@click.command()
@click.option(
    "--size",
    default="256MiB",
    show_default=True,
    help="Amount of generated data each stage processes (e.g. 64MiB, 1GiB).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=1024),
    default=None,
    help="Threads for the all-cores column [default: the CPUs this process may use].",
)
@click.option(
    "--min-time",
    type=click.FloatRange(min=0.0, max=600.0),
    default=0.5,
    show_default=True,
    help="Seconds to repeat each measurement for; the best round counts.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def benchmark(size: str, threads: int | None, min_time: float, as_json: bool) -> None:
    """Measure chunking, BLAKE3, zstd and the zero test on this node.

    Every stage runs on the same generated data with a realistic mix (text, binaries,
    compressed data, zeros), first on one core, then on all cores (one thread per core).
    The zero test runs on zeros, where it must read every byte.
    """
    nbytes = parse_size(size, "--size", minimum=1 << 20)
    result = api.benchmark_node(
        size=nbytes,
        threads=threads,
        min_time=min_time,
        progress=lambda stage: status(f"measuring {stage}..."),
    )
    if as_json:
        emit_json(result.as_json())
        return
    rows = [
        [
            s.name,
            human_rate(s.one_core),
            human_rate(s.all_cores),
            f"{s.scaling:.2f}x",
            s.description,
        ]
        for s in result.stages
    ]
    emit_table(
        f"mover benchmark: {nbytes / 2**20:,.0f} MiB, {result.threads} threads, "
        f"kernels {', '.join(result.kernels)}",
        ["stage", "one core", "all cores", "scaling", "what"],
        rows,
    )
    level, reason = result.preferred_zstd_level()
    click.echo(
        f"preferred here: `mover init --compression {level}` with the {result.kernels[-1]} "
        f"chunker kernel ({reason}); the default, auto, picks 1 to 3 while it backs up"
    )
