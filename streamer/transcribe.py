"""`streamer transcribe PATH...`: the streaming pipeline over files, as fast as it can run.

The files go through exactly the pipeline `streamer run` uses (VAD, re-decoded windows, agreement,
filters), in lockstep, so what this prints is what a live audience would have seen as finals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
from tqdm import tqdm

from streamer.audio.decode import probe
from streamer.config import Settings
from streamer.decode.engine import DecodeEngine
from streamer.decode.filters import FilterOptions
from streamer.errors import UserError
from streamer.events import Final, Partial, Status
from streamer.pipeline import run_file
from streamer.sinks.formats import format_as


def _progress(path: Path, show: bool):  # type: ignore[no-untyped-def]
    """A tqdm bar over the file's audio seconds, on stderr, for files long enough to need one."""
    if not show:
        return None
    try:
        with av.open(str(path)) as c:
            duration = float(c.duration or 0) / 1_000_000
    except Exception:
        return None
    if duration < 30:
        return None
    return tqdm(
        total=round(duration, 1),
        unit="s",
        desc=path.name,
        file=sys.stderr,
        leave=False,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]",
    )


def transcribe_path(
    settings: Settings, engine: DecodeEngine, path: Path, progress: bool, filters: FilterOptions | None = None
) -> list[Final]:
    bar = _progress(path, progress)

    def on_event(ev: Partial | Final | Status) -> None:
        if bar is not None and not isinstance(ev, Status):
            bar.update(max(0.0, round(ev.end, 1) - bar.n))

    try:
        events = run_file(settings, path, engine, realtime=False, emit=on_event, filters=filters)
    finally:
        if bar is not None:
            bar.close()
    return [e for e in events if isinstance(e, Final)]


def main(settings: Settings, args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths]
    for p in paths:
        if not p.is_file():
            raise UserError(f"cannot read audio from '{p}': no such file")
    # Fail on a bad file before the model takes seconds to load.
    for p in paths:
        probe(p)
    engine = DecodeEngine.from_settings(settings)
    rules = settings.layout.rules()
    filters = FilterOptions.off() if args.no_filters else None
    out = Path(args.output) if args.output else None
    if out is not None and len(paths) > 1:
        out.mkdir(parents=True, exist_ok=True)
    try:
        show = not args.no_progress and sys.stderr.isatty()
        for p in paths:
            finals = transcribe_path(settings, engine, p, show, filters)
            text = format_as(args.format, finals, rules)
            if out is None:
                sys.stdout.write(text)
                sys.stdout.flush()
            elif len(paths) > 1:
                (out / f"{p.stem}.{args.format}").write_text(text, encoding="utf-8")
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text, encoding="utf-8")
    finally:
        engine.close()
    return 0
