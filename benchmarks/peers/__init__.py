"""mover, restic and borg side by side on the same datasets: `python -m benchmarks.peers`."""
