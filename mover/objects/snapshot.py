"""Snapshot manifests: small, sealed JSON naming the root of a volume's chunk tree."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = 1


@dataclass(frozen=True)
class Snapshot:
    time: str  # UTC, ISO 8601
    hostname: str
    source: str
    size: int
    tree: str  # root id, hex: identifies the volume's content
    stats: dict[str, int] = field(default_factory=dict)
    id: str = ""  # filled when stored/loaded; not part of the sealed body

    def to_json(self) -> bytes:
        body = asdict(self)
        body.pop("id")
        body["format"] = FORMAT
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, snapshot_id: str) -> Snapshot:
        body: dict[str, Any] = json.loads(raw)
        body.pop("format", None)
        return cls(**body, id=snapshot_id)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "short_id": self.id[:8], **json.loads(self.to_json())}
