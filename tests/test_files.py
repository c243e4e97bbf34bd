"""Transcript files written from the bus: JSONL/SRT/VTT per stream, flushed per final, rotation."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from streamer.bus import Bus
from streamer.config import ConfigError, TranscriptConfig
from streamer.events import parse_event
from streamer.sinks import formats
from streamer.sinks.files import TranscriptWriter, part_stem, should_rotate

from .sink_events import final
from .sink_harness import publish_in_thread

T0 = dt.datetime(2026, 3, 1, 23, 59, 58)


def read_parts(d: Path, stream: str, ext: str) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(d.glob(f"{stream}-*.{ext}"))]


def test_writes_jsonl_srt_vtt_per_stream_and_flushes_each_final(tmp_path: Path) -> None:
    bus = Bus()
    w = TranscriptWriter(TranscriptConfig(dir=tmp_path / "tx"), bus, clock=lambda: T0)
    w.start()
    main = [final(i, f"línea {i}") for i in range(1, 4)]
    other = [final(1, "other stream", stream="room2")]
    publish_in_thread(bus, [main[0]]).join()
    jsonl = tmp_path / "tx" / "main-20260301-235958.jsonl"
    deadline = time.monotonic() + 5
    while not (jsonl.exists() and jsonl.read_text(encoding="utf-8")):
        assert time.monotonic() < deadline, "first final not on disk before close"
        time.sleep(0.01)
    assert jsonl.read_text(encoding="utf-8") == formats.jsonl_line(main[0])  # flushed, not buffered
    publish_in_thread(bus, [*main[1:], *other]).join()
    w.close()
    d = tmp_path / "tx"
    assert read_parts(d, "main", "jsonl") == [formats.format_jsonl(main)]
    assert read_parts(d, "main", "srt") == [formats.format_srt(main)]
    assert read_parts(d, "main", "vtt") == [formats.format_vtt(main)]
    assert read_parts(d, "room2", "srt") == [formats.format_srt(other)]
    assert sorted(p.name for p in w.files) == sorted(p.name for p in d.iterdir())


def test_rotation_by_size_keeps_every_final_once(tmp_path: Path) -> None:
    bus = Bus()
    w = TranscriptWriter(
        TranscriptConfig(dir=tmp_path, rotate="size", rotate_bytes=2048), bus, clock=lambda: T0
    )
    w.start()
    finals = [final(i, f"{i} " + "x" * 400) for i in range(1, 16)]
    publish_in_thread(bus, finals).join()
    w.close()
    # Parts opened within the same second get -2, -3 ...: take them in the order written.
    parts = [p.read_text(encoding="utf-8") for p in w.files if p.suffix == ".jsonl"]
    assert len(parts) > 3
    assert [parse_event(line) for part in parts for line in part.splitlines()] == finals
    for srt in read_parts(tmp_path, "main", "srt"):
        assert srt.startswith("1\n")  # each part is a valid SRT file numbered from 1
    assert all(v.startswith("WEBVTT\n\n") for v in read_parts(tmp_path, "main", "vtt"))


def test_rotation_by_day(tmp_path: Path) -> None:
    now = [T0]
    bus = Bus()
    w = TranscriptWriter(TranscriptConfig(dir=tmp_path, rotate="day"), bus, clock=lambda: now[0])
    w.start()
    publish_in_thread(bus, [final(1), final(2)]).join()
    first = tmp_path / "main-20260301-235958.jsonl"
    deadline = time.monotonic() + 20
    while not (first.exists() and first.read_text(encoding="utf-8").count("\n") == 2):
        assert time.monotonic() < deadline, "finals 1 and 2 never written"
        time.sleep(0.01)
    now[0] = T0 + dt.timedelta(seconds=3)  # past midnight
    publish_in_thread(bus, [final(3)]).join()
    w.close()
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert names == ["main-20260301-235958.jsonl", "main-20260302-000001.jsonl"]
    assert len((tmp_path / names[1]).read_text().splitlines()) == 1


def test_pure_rules() -> None:
    assert should_rotate("none", opened=T0, now=T0 + dt.timedelta(days=3), size=10**9, limit=1) is False
    assert should_rotate("size", opened=T0, now=T0, size=100, limit=100) is True
    assert should_rotate("day", opened=T0, now=T0 + dt.timedelta(seconds=1), size=0, limit=1) is False
    taken = {"main-20260301-235958", "main-20260301-235958-2"}
    assert part_stem("main", T0, taken.__contains__) == "main-20260301-235958-3"


def test_unusable_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    w = TranscriptWriter(TranscriptConfig(dir=blocker / "sub"), Bus())
    with pytest.raises(ConfigError, match=r"transcripts\.dir"):
        w.start()
