"""docs/events.schema.json is the exported schema of the current event model."""

from __future__ import annotations

import json
from pathlib import Path

from streamer.events import dump_schema, json_schema

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_schema_export_is_current() -> None:
    exported = (DOCS / "events.schema.json").read_text(encoding="utf-8")
    assert json.loads(exported) == json_schema(), (
        "regenerate: python -c \"import streamer.events as e; print(e.dump_schema(), end='')\" "
        "> docs/events.schema.json"
    )
    assert exported == dump_schema()


def test_protocol_doc_names_every_close_code_and_route() -> None:
    from streamer.sinks import clients, server

    doc = (DOCS / "protocol.md").read_text(encoding="utf-8")
    codes = [
        clients.CLOSE_TOO_SLOW,
        server.CLOSE_GOING_AWAY,
        server.CLOSE_UNSUPPORTED_DATA,
        server.CLOSE_POLICY,
        server.CLOSE_TRY_AGAIN,
    ]
    for code in codes:
        assert f"| {code} |" in doc, code
    for route in ("/ws", "/health", "/metrics", "/streams", "/transcript/"):
        assert f"`{route}" in doc, route
