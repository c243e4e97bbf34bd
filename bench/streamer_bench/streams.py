"""Many streams, one model: how many concurrent real-time streams one daemon sustains.

Each stream replays its own slice of a long recording (different speech per stream, cut in the
pauses between words) at 1x through the daemon's file source. Three ways to run N streams:

- `one daemon`: one `streamer run` with N `[[streams]]` sharing one model (model.batch_size = 1);
- `one daemon, batched`: the same with model.batch_size = N (windows of the streams encoded in one
  call, see streamer.decode.batch);
- `separate daemons`: N `streamer run` processes, one model each (as bench.capacity does).

A level passes when every stream's per-word final latency p90 (all streams' words together) stays
under 2 s, no audio is dropped, no process fails and every stream finalised words. Each mode goes
up from N = 1 while nothing breaks and p90 stays within twice the limit (the trend across N is what
compares the modes on a loaded machine); `max_streams` is the largest N up to which every level passed.
"""

from __future__ import annotations

import sys
import wave
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamer_bench.capacity import CAPACITY_P90_LIMIT, daemon_command, run_daemons, settings_env
from streamer_bench.metrics import RefWord, summarize, word_latencies
from streamer_bench.tables import fmt, table

SAMPLE_RATE = 16000
MODES = ("one daemon", "one daemon, batched", "separate daemons")


def cut_points(ref: Sequence[RefWord], seconds: float, count: int) -> list[tuple[float, float]]:
    """`count` consecutive slices of about `seconds` each, every cut in the pause between two words.

    Pure. Fewer slices when the recording runs out."""
    out: list[tuple[float, float]] = []
    start = 0.0
    for _ in range(count):
        target = start + seconds
        later = [i for i, w in enumerate(ref) if w.start >= target]
        if not later:
            break
        k = later[0]
        end = (ref[k - 1].end + ref[k].start) / 2 if k > 0 else ref[k].start
        out.append((start, end))
        start = end
    return out


def slice_reference(ref: Sequence[RefWord], start: float, end: float) -> list[RefWord]:
    """The reference words inside [start, end), on the slice's own clock. Pure."""
    return [
        RefWord(w.text, w.start - start, w.end - start, w.source)
        for w in ref
        if w.start >= start and w.end <= end
    ]


def write_slices(audio: np.ndarray, cuts: Sequence[tuple[float, float]], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (a, b) in enumerate(cuts):
        path = out_dir / f"stream-{i}.wav"
        pcm = (np.clip(audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)], -1, 1) * 32767).astype(np.int16)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())
        paths.append(path)
    return paths


def streams_config(paths: Sequence[Path], model: str, batch_size: int) -> str:
    """A daemon configuration with one `[[streams]]` per file, all on one model."""
    lines = ["[model]", f'name = "{model}"', f"batch_size = {batch_size}", "", "[decoder]", 'language = "en"']
    for i, p in enumerate(paths):
        lines += ["", "[[streams]]", f'name = "s{i}"', f'source = "file:{p}"']
    return "\n".join(lines) + "\n"


def verdict(per_stream: Sequence[dict[str, Any]], finals: Sequence[float]) -> dict[str, Any]:
    """Pass or fail of one level from its streams' figures. Pure."""
    p90 = summarize(list(finals))["p90"]
    dropped = sum(float(s["dropped_seconds"]) for s in per_stream)
    failed = sum(1 for s in per_stream if s["returncode"] != 0)
    silent = sum(1 for s in per_stream if not s["finalised_words"])
    healthy = failed == 0 and silent == 0 and dropped == 0.0 and p90 is not None
    lat = float(p90) if p90 is not None else float("inf")
    ok = healthy and lat <= CAPACITY_P90_LIMIT
    # Worth a higher N while nothing breaks and latency is within twice the limit: on a shared,
    # loaded machine even N = 1 can miss 2 s, and the trend across N is what compares the modes.
    going = healthy and lat <= 2 * CAPACITY_P90_LIMIT
    return {
        "final_p90": p90,
        "dropped_seconds": dropped,
        "failed": failed,
        "silent_streams": silent,
        "ok": ok,
        "going": going,
    }


def run_level(
    mode: str, model: str, paths: Sequence[Path], refs: Sequence[list[RefWord]], seconds: float, work: Path
) -> dict[str, Any]:
    n = len(paths)
    timeout = seconds * 3 + 180
    per_stream: list[dict[str, Any]] = []
    finals: list[float] = []
    if mode == "separate daemons":
        cmds = [
            daemon_command(p, model, "en", work / f"transcripts-{model}-{n}-{i}") for i, p in enumerate(paths)
        ]
        runs = run_daemons(cmds, work, timeout=timeout)
        cpu = sum(r.cpu_seconds for r in runs)
        rss = sum(r.peak_rss_mb for r in runs)
        for r, ref in zip(runs, refs, strict=True):
            lat = word_latencies(ref, r.events)
            finals += lat.final_latencies
            per_stream.append(
                {
                    "returncode": r.returncode,
                    "dropped_seconds": r.dropped_seconds,
                    "finalised_words": len(lat.final_latencies),
                    "final_p90": summarize(lat.final_latencies)["p90"],
                }
            )
    else:
        cfg = work / f"streams-{model}-{n}-{'b' if 'batched' in mode else 's'}.toml"
        cfg.write_text(streams_config(paths, model, n if "batched" in mode else 1))
        cmd = [sys.executable, "-m", "streamer", "run", "--config", str(cfg), "--jsonl", "--no-server"]
        (r,) = run_daemons([cmd], work, timeout=timeout, env_extra=settings_env({}))
        cpu, rss = r.cpu_seconds, r.peak_rss_mb
        for i, ref in enumerate(refs):
            lat = word_latencies(ref, [e for e in r.events if e.stream == f"s{i}"])
            finals += lat.final_latencies
            per_stream.append(
                {
                    "returncode": r.returncode,
                    # The daemon's drop warning names no stream here: it counts once, on stream 0.
                    "dropped_seconds": r.dropped_seconds if i == 0 else 0.0,
                    "finalised_words": len(lat.final_latencies),
                    "final_p90": summarize(lat.final_latencies)["p90"],
                }
            )
        if r.returncode:
            per_stream[0]["stderr_tail"] = r.stderr_tail
    return {
        "streams": n,
        **verdict(per_stream, finals),
        "cpu_seconds": cpu,
        "peak_rss_mb": rss,
        "per_stream": per_stream,
    }


def many_streams(
    audio: np.ndarray,
    ref: list[RefWord],
    models: Sequence[str],
    levels: Sequence[int],
    seconds: float,
    work: Path,
    modes: Sequence[str] = MODES,
    on_level: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every model x mode, N = levels (ascending) until the first failing level."""
    cuts = cut_points(ref, seconds, max(levels))
    paths = write_slices(audio, cuts, work / "slices")
    refs = [slice_reference(ref, a, b) for a, b in cuts]
    results: dict[str, Any] = {"seconds": seconds, "p90_limit": CAPACITY_P90_LIMIT, "runs": []}
    for model in models:
        for mode in modes:
            best = 0
            rows = []
            for n in sorted(set(levels)):
                if n > len(paths):
                    break
                row = run_level(mode, model, paths[:n], refs[:n], seconds, work)
                rows.append(row)
                if on_level is not None:
                    on_level(f"{model} {mode} N={n}: p90 {row['final_p90']} ok={row['ok']}")
                if row["ok"] and best == n - 1:
                    best = n
                if not row["going"]:
                    break
            results["runs"].append({"model": model, "mode": mode, "max_streams": best, "levels": rows})
    return results


def markdown(res: dict[str, Any]) -> list[str]:
    """The many-streams table for the bench report."""
    lines = [
        "",
        f"## Many streams ({fmt(res['seconds'], 0)} s of different speech per stream, replayed at 1x)",
        "",
        f"Largest N with every stream's per-word final latency p90 ≤ {res['p90_limit']} s and no audio "
        "dropped, for N streams in one daemon (one shared model), with batched encoding, and as N "
        "separate daemons. "
        + (f"Load average before the run: {res['load_before']}." if res.get("load_before") else ""),
        "",
    ]
    lines += table(
        ["model", "mode", "max streams"],
        [[r["model"], r["mode"], str(r["max_streams"])] for r in res["runs"]],
    )
    lines += [""]
    rows = []
    for r in res["runs"]:
        for lv in r["levels"]:
            rows.append(
                [
                    r["model"],
                    r["mode"],
                    str(lv["streams"]),
                    fmt(lv["final_p90"]),
                    fmt(lv["dropped_seconds"], 1),
                    fmt(lv["cpu_seconds"], 0),
                    fmt(lv["peak_rss_mb"], 0),
                    "yes" if lv["ok"] else "no",
                ]
            )
    lines += table(
        ["model", "mode", "N", "final p90 s", "dropped s", "CPU s", "peak RSS MB (sum)", "ok"], rows
    )
    return lines
