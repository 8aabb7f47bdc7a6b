"""Regenerate snapshot_metadata_pb2.py and its .pyi from snapshot_metadata.proto with
grpcio-tools' bundled protoc (`pip install grpcio-tools`): `python -m mover_k8s.cbt.generate`.
Only the messages are generated; the two calls are made with the channel's generic
unary_stream (client.py), so no service stub module is needed. tests/k8s/test_cbt.py checks
that the committed files are what this writes."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "snapshot_metadata.proto"
OUTPUTS = ("snapshot_metadata_pb2.py", "snapshot_metadata_pb2.pyi")


def generate(out: Path) -> None:
    """Write the generated modules into `out`; SystemExit with protoc's message on failure."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    code = protoc.main(["protoc", f"-I{HERE}", f"--python_out={out}", f"--pyi_out={out}", PROTO])
    if code != 0:
        raise SystemExit(f"protoc failed on {HERE / PROTO} (exit {code})")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name in OUTPUTS:
            (HERE / name).write_bytes((Path(tmp) / name).read_bytes())
    print(f"wrote {', '.join(OUTPUTS)} in {HERE}", file=sys.stderr)


if __name__ == "__main__":
    main()
