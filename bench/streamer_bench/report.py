"""The benchmark's output: JSON with every figure, a Markdown report, PNG plots, a terminal summary.

`evaluate_targets` (pure) compares the figures with the project's targets from issue 4.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

import streamer
from streamer import __version__
from streamer_bench.streams import markdown as many_streams_markdown
from streamer_bench.tables import fmt, pct, table

# (label, model, path into a configuration / result, comparison, limit, unit)
Target = tuple[str, str, Callable[[dict[str, Any], dict[str, Any]], Any], str, float, str]


def _cfg(results: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The first configuration of `model` without overrides (its defaults), else its first one."""
    configs = [c for c in results.get("configs", []) if c["model"] == model]
    plain = [c for c in configs if not c["overrides"]]
    return (plain or configs or [None])[0]


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# Latency sections of a configuration: (key, short name, description, accuracy set it pairs with).
SECTIONS: list[tuple[str, str, str, str]] = [
    ("latency", "en", "English at 1x (en/ subset + the 26 s long clip)", "english"),
    ("latency_ko", "ko", "Korean at 1x (ko/ subset)", "ko"),
    ("latency_long", "long", "long English clips at 1x", "long"),
    ("latency_ko_long", "ko-long", "Korean concatenation (~10 min, 0.5 s pauses) at 1x", "ko"),
    ("overload", "overload", "Korean concatenation at 1x, 1 decode thread, one core burned", "ko"),
]


def sections(cfg: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, short name, section) for each latency section this configuration measured."""
    return [(key, short, cfg[key]) for key, short, _, _ in SECTIONS if cfg.get(key)]


def _acc(c: dict[str, Any], name: str) -> dict[str, Any]:
    """Corpus accuracy of one set (summarize_accuracy names CER sets 'NAME (cer)'); {} if absent."""
    sets = _get(c, "accuracy", "sets") or {}
    found = sets.get(name) or sets.get(f"{name} (cer)")
    return found if isinstance(found, dict) else {}


def _lag_growth(c: dict[str, Any], key: str) -> float | None:
    """The largest growth of last-final delay (last 2 min − first 2 min) over the section's files."""
    lags = _get(c, key, "lag") or {}
    growths = [v["growth"] for v in lags.values() if v.get("growth") is not None]
    return max(growths) if growths else None


def _revisions(c: dict[str, Any], r: dict[str, Any]) -> int | None:
    found = [sec["overall"].get("revisions") for _, _, sec in sections(c)]
    found = [x for x in found if x is not None]
    return sum(found) if found else None


def _lat(key: str, *path: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    return lambda c, r: _get(c, key, "overall", *path)


TARGETS: list[Target] = [
    # tiny.en on English (issue 8)
    ("median first-appearance latency", "tiny.en", _lat("latency", "first", "median"), "<=", 0.5, "s"),
    ("median final latency", "tiny.en", _lat("latency", "final", "median"), "<=", 1.0, "s"),
    ("p90 final latency", "tiny.en", _lat("latency", "final", "p90"), "<=", 1.6, "s"),
    (
        "final after end of speech (median)",
        "tiny.en",
        _lat("latency", "end_of_speech", "median"),
        "<=",
        0.8,
        "s",
    ),
    ("settled words revised", "tiny.en", _revisions, "<=", 0, "words"),
    (
        "English WER / offline WER",
        "tiny.en",
        lambda c, r: _acc(c, "english").get("ratio"),
        "<=",
        1.03,
        "x",
    ),
    (
        "hallucinated words on non-speech",
        "tiny.en",
        lambda c, r: _get(c, "hallucinations", "with_filters", "total_words"),
        "<=",
        0,
        "words",
    ),
    (
        "CPU seconds per audio second (1x)",
        "tiny.en",
        lambda c, r: _get(c, "latency", "cost", "cpu_per_audio_second"),
        "<=",
        0.35,
        "s/s",
    ),
    (
        "peak RSS of the daemon",
        "tiny.en",
        lambda c, r: _get(r, "offline", "tiny.en", "daemon", "peak_rss_mb"),
        "<=",
        350,
        "MB",
    ),
    (
        "first caption after start",
        "tiny.en",
        lambda c, r: _get(r, "offline", "tiny.en", "daemon", "first_caption_s"),
        "<=",
        2.0,
        "s",
    ),
    (
        "concurrent real-time streams (final p90 <= 2 s)",
        "tiny.en",
        lambda c, r: _get(r, "capacity", "max_streams"),
        ">=",
        6,
        "streams",
    ),
    # base on Korean (issues 7 and 8)
    ("Korean median first-appearance latency", "base", _lat("latency_ko", "first", "median"), "<=", 1.0, "s"),
    ("Korean median final latency", "base", _lat("latency_ko", "final", "median"), "<=", 1.5, "s"),
    ("Korean p90 final latency", "base", _lat("latency_ko", "final", "p90"), "<=", 2.5, "s"),
    (
        "Korean last final after end of speech (p90)",
        "base",
        _lat("latency_ko", "end_of_speech", "p90"),
        "<=",
        1.5,
        "s",
    ),
    (
        "Korean CER / offline CER",
        "base",
        lambda c, r: _acc(c, "ko").get("ratio"),
        "<=",
        1.05,
        "x",
    ),
    (
        "Korean 10 min: last-final delay growth (last 2 min - first 2 min)",
        "base",
        lambda c, r: _lag_growth(c, "latency_ko_long"),
        "<=",
        1.0,
        "s",
    ),
    ("overload: last-final delay growth", "base", lambda c, r: _lag_growth(c, "overload"), "<=", 1.0, "s"),
    # base on English (issue 7: finals at end of speech; issue 8: CPU)
    ("English median first-appearance latency", "base", _lat("latency", "first", "median"), "<=", 1.0, "s"),
    ("English median final latency", "base", _lat("latency", "final", "median"), "<=", 3.5, "s"),
    (
        "English WER / offline WER",
        "base",
        lambda c, r: _acc(c, "english").get("ratio"),
        "<=",
        1.03,
        "x",
    ),
    (
        "CPU seconds per audio second (1x, English)",
        "base",
        lambda c, r: _get(c, "latency", "cost", "cpu_per_audio_second"),
        "<=",
        0.6,
        "s/s",
    ),
    ("settled words revised", "base", _revisions, "<=", 0, "words"),
]


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (None: not measured in this run)."""
    out = []
    for label, model, get, op, limit, unit in TARGETS:
        cfg = _cfg(results, model)
        if cfg is None:
            continue
        value = get(cfg, results)
        ok = None if value is None else (value <= limit if op == "<=" else value >= limit)
        out.append(
            {
                "target": label,
                "model": model,
                "config": cfg["name"],
                "op": op,
                "limit": limit,
                "unit": unit,
                "value": value,
                "ok": ok,
            }
        )
    return out


# --------------------------------------------------------------------------- machine


def _commit() -> str | None:
    """The git commit of the streamer code being measured, "+dirty" if it has local changes."""
    root = Path(streamer.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "streamer"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for pkg in ("streamer", "faster-whisper", "ctranslate2", "onnxruntime", "numpy", "av"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    if versions["streamer"] == "not installed":
        versions["streamer"] = __version__
    info: dict[str, Any] = {
        "commit": _commit(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }
    try:
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------- JSON


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (JSON has no NaN), tuples lists, floats rounded."""
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(
        json.dumps(_clean(results), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
    )


# --------------------------------------------------------------------------- plots


def curve_points(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per configuration and language: per-word final latency (median, p90) against the
    error rate of its finals relative to offline, for the latency-versus-accuracy curve."""
    points = []
    for c in results.get("configs", []):
        for key, short, sec in sections(c):
            if key not in ("latency", "latency_ko"):
                continue
            acc_set = "english" if key == "latency" else "ko"
            acc = _acc(c, acc_set)
            points.append(
                {
                    "config": c["name"],
                    "model": c["model"],
                    "set": short,
                    "final_median": sec["overall"]["final"]["median"],
                    "final_p90": sec["overall"]["final"]["p90"],
                    "error_rate": acc.get("stream"),
                    "ratio": acc.get("ratio"),
                }
            )
    return points


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    # lazy: matplotlib takes ~0.5 s to load and only plots need it; Agg (no display) before pyplot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    configs = results.get("configs", [])
    boxes = [(c, short, sec) for c in configs for _, short, sec in sections(c)]
    if boxes:
        fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(boxes) + 4), 4.5), sharey=True)
        labels = [f"{c['name']} [{short}]" for c, short, _ in boxes]
        for ax, key, title in ((axes[0], "first", "first appearance"), (axes[1], "final", "final")):
            data = [sec["samples"][key] or [math.nan] for _, _, sec in boxes]
            ax.boxplot(data, whis=(10, 90), showfliers=True)
            ax.set_xticks(range(1, len(boxes) + 1), labels, rotation=20, ha="right", fontsize=8)
            ax.set_title(f"{title} latency per word (1x replay)")
            ax.axhline(0, color="grey", lw=0.5)
            ax.grid(axis="y", alpha=0.3)
        axes[0].set_ylabel("seconds after the word was spoken")
        fig.text(0.01, 0.01, "boxes: quartiles; whiskers: p10-p90", fontsize=7)
        fig.tight_layout()
        path = out_dir / "latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    with_acc = [c for c in configs if c.get("accuracy")]
    if with_acc:
        fig, axes_arr = plt.subplots(
            1, len(with_acc), figsize=(max(6.0, 4.2 * len(with_acc)), 4.6), squeeze=False
        )
        for ax, c in zip(axes_arr[0], with_acc, strict=True):
            rows = c["accuracy"]["files"]
            top = 0.05
            for st in sorted({r["set"] for r in rows}):
                xs = [r["offline"] for r in rows if r["set"] == st and not r["excluded"]]
                ys = [r["stream"] for r in rows if r["set"] == st and not r["excluded"]]
                ax.scatter(xs, ys, s=14, label=st, alpha=0.7)
                top = max([top, *xs, *ys])
            ax.plot([0, top], [0, top], color="grey", lw=0.8)
            ax.set_title(c["name"], fontsize=9)
            ax.set_xlabel("offline faster-whisper error rate")
            ax.set_ylabel("streaming error rate")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.suptitle(
            "Error rate per file (WER; CER for ko/zh): streaming vs offline\n"
            "above the line = streaming is worse",
            fontsize=9,
        )
        fig.tight_layout()
        path = out_dir / "wer.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    points = [p for p in curve_points(results) if p["final_median"] is not None and p["ratio"] is not None]
    if points:
        groups = sorted({(p["model"], p["set"]) for p in points})
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for model, st in groups:
            pts = sorted(
                (p for p in points if (p["model"], p["set"]) == (model, st)), key=lambda p: p["final_median"]
            )
            xs = [p["final_median"] for p in pts]
            ys = [p["ratio"] for p in pts]
            ax.plot(xs, ys, marker="o", label=f"{model} on {st}")
            for p in pts:
                ax.annotate(
                    p["config"],
                    (p["final_median"], p["ratio"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("final latency per word, median (s, 1x replay)")
        ax.set_ylabel("error rate of finals / offline (WER; CER for ko)")
        ax.set_title("Latency against accuracy, one point per configuration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "curve.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------- text


def _header(results: dict[str, Any]) -> list[str]:
    """Title, command, run, machine and versions, and the targets table."""
    meta = results.get("meta", {})
    mach = meta.get("machine", {})
    lines = [
        "# streamer bench report",
        "",
        f"Command: `{meta.get('command', '')}`  ",
        f"Run: {meta.get('started', '')} – {meta.get('finished', '')} "
        f"({fmt(meta.get('wall_seconds'), 0)} s)  ",
        f"Machine: {mach.get('cpu', '?')}, {mach.get('cores', '?')} cores, {mach.get('memory_gb', '?')} GB, "
        f"{mach.get('platform', '')}, Python {mach.get('python', '')}, load average at start "
        f"{mach.get('load_average', '?')}  ",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in mach.get("versions", {}).items())
        + f"; streamer commit {mach.get('commit') or 'unknown'}",
        "",
        "## Targets",
        "",
    ]
    lines += table(
        ["model", "target", "limit", "measured", "met"],
        [
            [
                t["model"],
                t["target"],
                f"{t['op']} {t['limit']} {t['unit']}",
                fmt(t["value"]),
                {True: "yes", False: "**no**", None: "not measured"}[t["ok"]],
            ]
            for t in results.get("targets", [])
        ],
    )
    return lines


def _latency(configs: list[dict[str, Any]]) -> list[str]:
    """Latency per configuration and set, then per file (folded)."""
    lines: list[str] = [
        "",
        "## Latency (1x replay, audio clock, per reference word)",
        "",
        "Every file is replayed at real time through the daemon's file source. Latency = event "
        "`emitted_at` − the word's end in the reference timing. First = the word first shown correctly "
        "(the partial tail or final that introduced it); final = the first final holding the word (the "
        "texts of all finals aligned with the reference, as for WER). EOS → last final = the final "
        "closing an utterance − the end of the utterance's last word its finals got right. Revisions = "
        "settled words (in a final or a partial's `stable`) that later changed in the utterance's "
        "display (its finals so far + the latest partial's tail), as displayed / words only; must be 0. "
        "Tail flicker = unsettled displayed words later changed / unsettled words shown (as displayed / "
        "words only). Tail insertions = words in finals after the last reference word of a file. Sets: "
        + "; ".join(f"{short} = {desc}" for _, short, desc, _ in SECTIONS)
        + ".",
        "",
    ]
    rows = []
    for c in configs:
        for _, short, sec in sections(c):
            o = sec["overall"]
            rows.append(
                [
                    c["name"],
                    short,
                    fmt(sec["cost"]["audio_seconds"], 0),
                    "/".join(fmt(o["first"][k]) for k in ("median", "p90", "p99")),
                    "/".join(fmt(o["final"][k]) for k in ("median", "p90", "p99")),
                    f"{fmt(o['end_of_speech']['median'])}/{fmt(o['end_of_speech']['p90'])}",
                    f"{fmt(o.get('revisions'))} / {fmt(o.get('revisions_normalized'))}",
                    f"{pct(o.get('tail_flicker'))} / {pct(o.get('tail_flicker_normalized'))}",
                    fmt(o.get("tail_insertions")),
                    f"{o['missed_final']}/{o['words']}",
                ]
            )
    lines += table(
        [
            "config",
            "set",
            "audio s",
            "first med/p90/p99",
            "final med/p90/p99",
            "EOS → last final med/p90",
            "revisions",
            "tail flicker",
            "tail insertions",
            "missed words",
        ],
        rows,
    )
    for c in configs:
        for _, short, sec in sections(c):
            lines += ["", f"<details><summary>{c['name']} [{short}]: per file</summary>", ""]
            lines += table(
                [
                    "file",
                    "s",
                    "first med/p90/p99",
                    "final med/p90/p99",
                    "EOS p90",
                    "revisions",
                    "tail flicker",
                    "finals/utterances",
                    "missed",
                ],
                [
                    [
                        name,
                        fmt(f["seconds"], 1),
                        "/".join(fmt(f["first"][k]) for k in ("median", "p90", "p99")),
                        "/".join(fmt(f["final"][k]) for k in ("median", "p90", "p99")),
                        fmt(_get(f, "end_of_speech", "p90")),
                        fmt(f.get("revisions")),
                        pct(f.get("tail_flicker")),
                        f"{f.get('finals')}/{f.get('utterances')}",
                        f"{f['missed_final']}/{f['words']}",
                    ]
                    for name, f in sec["files"].items()
                ],
            )
            lines += ["", "</details>"]
    return lines


def _lag(configs: list[dict[str, Any]]) -> list[str]:
    """Does the delay grow over one long input? (only where a set measured it)"""
    lag_rows = []
    for c in configs:
        for _, short, sec in sections(c):
            for name, lag in (sec.get("lag") or {}).items():
                lag_rows.append(
                    [
                        c["name"],
                        short,
                        name.split("/")[-1],
                        f"{fmt(lag['first_median'])} (n={lag['first_n']})",
                        f"{fmt(lag['last_median'])} (n={lag['last_n']})",
                        fmt(lag["growth"]),
                        {True: "yes", False: "**no**", None: "–"}[
                            None if lag["growth"] is None else lag["growth"] <= 1.0
                        ],
                    ]
                )
    if not lag_rows:
        return []
    lines = [
        "",
        "## Lag over time (does the delay grow?)",
        "",
        "Delay of each utterance's last final after its end of speech, median over the utterances "
        "that ended in the first and in the last 2 minutes of one long input (thirds of a shorter "
        "one). Bounded means growth ≤ 1 s.",
        "",
    ]
    lines += table(
        ["config", "set", "input", "first median s", "last median s", "growth s", "bounded"], lag_rows
    )
    return lines


def _overload(configs: list[dict[str, Any]]) -> list[str]:
    """The overload mode: latency and degradation with decoding starved of CPU."""
    over = [(c, c["overload"]) for c in configs if c.get("overload")]
    if not over:
        return []
    lines = [
        "",
        "## Overload (decoding starved on purpose)",
        "",
        "The Korean concatenation at 1x with `model.cpu_threads=1` while a busy-loop process burns "
        "one core. Degradation as the daemon reports it: the `streamer_degraded_level` gauge "
        "(sampled every 0.25 s: max, mean, share of the time above 0), the scheduler's counters "
        "(cancelled / discarded decodes, skipped partials, cut decodes; – where this pipeline has "
        "none) and the stream's status events other than running.",
        "",
    ]
    rows = []
    for c, ov in over:
        deg = ov["cost"].get("degradation", {})
        lvl = ov.get("degraded_level", {})
        ol: dict[str, Any] = next(iter((ov.get("lag") or {}).values()), {})
        rows.append(
            [
                c["name"],
                fmt(ov["cost"]["audio_seconds"], 0),
                f"{fmt(ol.get('first_median'))} → {fmt(ol.get('last_median'))}",
                fmt(_get(ov, "overall", "end_of_speech", "p90")),
                fmt(_get(ov, "overall", "final", "p90")),
                f"{fmt(lvl.get('max'))} / {fmt(lvl.get('mean'))} / {pct(lvl.get('degraded_share'))}",
                " / ".join(
                    fmt(deg.get(k), 0)
                    for k in (
                        "streamer_decodes_cancelled_total",
                        "streamer_decodes_discarded_total",
                        "streamer_partials_skipped_total",
                        "streamer_decode_cut_total",
                    )
                ),
                fmt(ov["cost"].get("dropped_seconds")),
                str(len(ov.get("statuses", []))),
            ]
        )
    lines += table(
        [
            "config",
            "audio s",
            "last-final delay first → last (median s)",
            "EOS → last final p90",
            "final p90",
            "degraded level max / mean / share",
            "cancelled / discarded / partials skipped / cut",
            "dropped s",
            "status events",
        ],
        rows,
    )
    return lines


def _curve(results: dict[str, Any]) -> list[str]:
    """Latency against accuracy, one point per configuration (curve.png)."""
    points = curve_points(results)
    if not points:
        return []
    lines = [
        "",
        "## Latency against accuracy (one point per configuration; curve.png)",
        "",
    ]
    lines += table(
        ["config", "set", "final med s", "final p90 s", "error rate of finals", "ratio to offline"],
        [
            [
                p["config"],
                p["set"],
                fmt(p["final_median"]),
                fmt(p["final_p90"]),
                pct(p["error_rate"]),
                fmt(p["ratio"], 3),
            ]
            for p in points
        ],
    )
    return lines


def _accuracy(configs: list[dict[str, Any]]) -> list[str]:
    """Streaming against offline error rates per accuracy set."""
    lines: list[str] = [
        "",
        "## Accuracy (fast replay; finals vs reference; offline = `WhisperModel.transcribe`, "
        "same model, beam 5)",
        "",
        "Both texts are normalised by streamer_bench/textnorm.py (Whisper's English normaliser for English, "
        "its basic normaliser otherwise); CER for Korean and Chinese. Rates are corpus rates (total "
        "errors / total reference words). Files whose offline error rate exceeds 100% are taken to have "
        "a reference that does not match the audio and are left out (listed). Tail insertions: words "
        "(characters for CER) after the last reference word, streaming / offline.",
        "",
    ]
    rows = []
    for c in configs:
        for st, a in (_get(c, "accuracy", "sets") or {}).items():
            rows.append(
                [
                    c["name"],
                    st,
                    a["metric"].upper(),
                    str(a["files"]),
                    pct(a["stream"]),
                    pct(a["offline"]),
                    fmt(a["ratio"], 3),
                    f"{fmt(a.get('stream_tail_insertions'))} / {fmt(a.get('offline_tail_insertions'))}",
                    ", ".join(a["excluded"]) or "–",
                ]
            )
    lines += table(
        ["config", "set", "metric", "files", "streaming", "offline", "ratio", "tail insertions", "excluded"],
        rows,
    )
    return lines


def _hallucinations(results: dict[str, Any], configs: list[dict[str, Any]]) -> list[str]:
    """Words in finals on non-speech files, with and without the filters."""
    rows = []
    for c in configs:
        h = c.get("hallucinations")
        if not h:
            continue
        off = _get(results, "offline", c["model"], "hallucinations", "total_words")
        rows.append(
            [
                c["name"],
                fmt(h["with_filters"]["total_words"]),
                fmt(_get(h, "without_filters", "total_words")),
                fmt(off),
                fmt(h["with_filters"]["seconds"], 0),
            ]
        )
    if not rows:
        return []
    lines = ["", "## Hallucinations (non-speech files: words in finals; offline = its whole output)", ""]
    lines += table(["config", "with filters", "without filters", "offline", "audio s"], rows)
    return lines


def _cost(results: dict[str, Any], configs: list[dict[str, Any]]) -> list[str]:
    """CPU, decode real-time factor, model load, the daemon's memory and start-up; offline models."""
    lines: list[str] = ["", "## Cost", ""]
    rows = []
    for c in configs:
        secs = sections(c)
        if not secs:
            continue
        rtf = _get(secs[0][2], "cost", "decode_rtf") or {}
        rtf_s = (
            "; ".join(
                f"{k} mean {fmt(v['mean'])} (p90 ≤ {fmt(v['p90_le'])}, n={v['count']})"
                for k, v in rtf.items()
            )
            or "–"
        )
        d = c.get("daemon") or _get(results, "offline", c["model"], "daemon") or {}
        rows.append(
            [
                c["name"],
                "; ".join(
                    f"{short} {fmt(sec['cost']['cpu_per_audio_second'], 3)}"
                    for key, short, sec in secs
                    if key != "overload"
                ),
                rtf_s,
                fmt(c.get("load_seconds")),
                fmt(d.get("peak_rss_mb"), 0),
                fmt(d.get("ready_s")),
                fmt(d.get("first_caption_s")),
                fmt(d.get("cpu_per_audio_second"), 3),
                fmt(sum(sec["cost"].get("dropped_seconds") or 0.0 for _, _, sec in secs)),
                "; ".join(
                    f"{short} "
                    + " ".join(f"L{k} {v}s" for k, v in sec["cost"].get("seconds_per_level", {}).items())
                    for key, short, sec in secs
                    if sec["cost"].get("seconds_per_level")
                )
                or "–",
            ]
        )
    lines += table(
        [
            "config",
            "CPU s / audio s (1x, in-process) per set",
            "decode RTF (first set)",
            "model load s",
            "daemon peak RSS MB",
            "daemon ready s",
            "daemon first caption s",
            "daemon CPU s / audio s (incl. startup)",
            "dropped s",
            "time per degradation level (audio s)",
        ],
        rows,
    )
    lines += [
        "",
        "CPU s / audio s (1x, in-process) is the bench process's CPU time over the latency replays "
        "(VAD, decoding, events). Daemon figures come from one `streamer run --jsonl --no-server` "
        "process per model replaying the first latency file at 1x: spawn → first JSONL line (ready), "
        "spawn → first caption (it cannot come before the first word is spoken: "
        + ", ".join(
            f"{k}: first word ends at {fmt(_get(v, 'daemon', 'first_word_end_s'))} s"
            for k, v in results.get("offline", {}).items()
        )
        + "), its peak RSS (VmHWM) and its CPU time from `wait4` (CPU includes model load).",
        "",
    ]
    offline = results.get("offline", {})
    if offline:
        lines += table(
            ["offline model", "load s", "CPU s / audio s"],
            [[k, fmt(v["load_seconds"]), fmt(v["cpu_per_audio_second"], 3)] for k, v in offline.items()],
        )
    return lines


def _capacity(cap: dict[str, Any] | None) -> list[str]:
    """Concurrent independent daemons: how many keep up."""
    if not cap:
        return []
    lines = [
        "",
        f"## Capacity ({cap['model']}, independent daemons at 1x on {Path(cap['file']).name}, "
        f"{fmt(cap['file_seconds'], 1)} s)",
        "",
        f"Largest number of concurrent streams with final p90 ≤ {cap['p90_limit']} s and no audio "
        f"dropped: **{cap['max_streams']}**; with final-after-end-of-speech p90 ≤ {cap['p90_limit']} s "
        f"instead: **{cap.get('max_streams_end_of_speech')}**",
        "",
    ]
    lines += table(
        [
            "streams",
            "final p90 s",
            "end-of-speech p90 s",
            "dropped s",
            "failed processes",
            "ok",
            "keeps up",
        ],
        [
            [
                str(lv["streams"]),
                fmt(lv["final_p90"]),
                fmt(lv.get("end_of_speech_p90")),
                fmt(lv["dropped_seconds"]),
                str(lv["failed_processes"]),
                fmt(lv["ok"]),
                fmt(lv.get("keeps_up")),
            ]
            for lv in cap["levels"]
        ],
    )
    return lines


def _fanout(fan: dict[str, Any] | None) -> list[str]:
    """The WebSocket fan-out figures as JSON."""
    if not fan:
        return []
    return ["", "## WebSocket fan-out", "", "```", json.dumps(_clean(fan), indent=2), "```"]


def _reference(ref: dict[str, Any]) -> list[str]:
    """How the reference words were timed, and the method's error estimate."""
    if not ref:
        return []
    lines = [
        "",
        "## Word timing reference",
        "",
        f"Offline faster-whisper `{ref.get('model')}` with word timestamps; the reference transcript "
        "is aligned to its words by minimal edit distance after normalisation; words it missed are "
        "spread evenly between timed neighbours "
        f"({pct(ref.get('interpolated_share'))} of {ref.get('words')} words). Files whose reference "
        "mostly disagrees with the timing pass (under half the words matched) are left out of latency: "
        f"{', '.join(ref.get('excluded_mismatched') or []) or 'none'}.",
    ]
    dis = ref.get("end_time_disagreement")
    if dis:
        lines += [
            f"Method error estimate: timing the same words with `{ref.get('disagreement_model')}` "
            f"instead moves word end times by median {fmt(dis['median'])} s, p90 {fmt(dis['p90'])} s."
        ]
    return lines


def _plots() -> list[str]:
    """Links to the figures write_plots draws."""
    return [
        "",
        "## Plots",
        "",
        "![latency](latency.png)",
        "",
        "![wer](wer.png)",
        "",
        "![curve](curve.png)",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    """report.md: one section after the other; a section without figures is left out or says so."""
    configs = results.get("configs", [])
    lines = _header(results)
    lines += _latency(configs)
    lines += _lag(configs)
    lines += _overload(configs)
    lines += _curve(results)
    lines += _accuracy(configs)
    lines += _hallucinations(results, configs)
    lines += _cost(results, configs)
    if results.get("many_streams"):
        lines += many_streams_markdown(results["many_streams"])
    lines += _capacity(results.get("capacity"))
    lines += _fanout(results.get("fanout"))
    lines += _reference(results.get("reference", {}))
    lines += _plots()
    return "\n".join(lines)


# Which accuracy set a latency set's error ratio comes from in the summary.
_SUMMARY_ACCURACY = {"en": "english", "ko": "ko", "long": "long", "ko-long": "ko", "overload": "ko"}


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configuration and latency set: the figures a tuning loop watches."""
    rows = []
    for c in results.get("configs", []):
        for key, short, sec in sections(c):
            o = sec["overall"]
            acc = _acc(c, _SUMMARY_ACCURACY[short])
            rows.append(
                {
                    "config": c["name"],
                    "set": short,
                    "first_p50": o["first"]["median"],
                    "final_p50": o["final"]["median"],
                    "final_p90": o["final"]["p90"],
                    "eos_p90": o["end_of_speech"]["p90"],
                    "revisions": o.get("revisions"),
                    "tail_flicker": o.get("tail_flicker"),
                    "metric": acc.get("metric"),
                    "ratio": acc.get("ratio"),
                    "error_rate": acc.get("stream"),
                    "cpu": None if key == "overload" else sec["cost"]["cpu_per_audio_second"],
                    "lag_growth": _lag_growth(c, key),
                }
            )
    return rows


def terminal_summary(results: dict[str, Any]) -> str:
    lines = ["", "streamer bench — summary", ""]
    lines.append(
        f"{'config':28} {'set':8} {'first p50':>9} {'final p50':>9} {'final p90':>9} {'EOS p90':>8} "
        f"{'revised':>7} {'flicker':>7} {'err/off':>11} {'CPU/s':>6} {'lag +s':>6}"
    )
    for r in summary_rows(results):
        if r["ratio"] is not None:
            err = f"{r['metric'].upper()} {r['ratio']:.3f}"
        elif r["error_rate"] is not None:  # offline made no error: a ratio is undefined
            err = f"{r['metric'].upper()} {pct(r['error_rate'])}"
        else:
            err = "–"
        lines.append(
            f"{r['config'][:28]:28} {r['set']:8} {fmt(r['first_p50']):>9} {fmt(r['final_p50']):>9} "
            f"{fmt(r['final_p90']):>9} {fmt(r['eos_p90']):>8} {fmt(r['revisions']):>7} "
            f"{pct(r['tail_flicker']):>7} {err:>11} {fmt(r['cpu'], 3):>6} {fmt(r['lag_growth']):>6}"
        )
    for c in results.get("configs", []):
        if c.get("latency") or c.get("latency_ko"):
            continue
        for st, a in (_get(c, "accuracy", "sets") or {}).items():
            lines.append(
                f"{c['name'][:28]:28} {st:8} accuracy only: {a['metric'].upper()} ratio {fmt(a['ratio'], 3)}"
            )
    cap = results.get("capacity")
    if cap:
        lines.append(
            f"\ncapacity ({cap['model']}): {cap['max_streams']} concurrent real-time streams "
            f"(final p90 <= 2 s); {cap.get('max_streams_end_of_speech')} by final-after-end-of-speech p90"
        )
    lines.append("")
    for t in results.get("targets", []):
        mark = {True: "ok  ", False: "MISS", None: "n/a "}[t["ok"]]
        lines.append(
            f"[{mark}] {t['model']:8} {t['target']:58} {t['op']} {t['limit']:<5} {t['unit']:8} "
            f"measured {fmt(t['value'])}"
        )
    return "\n".join(lines)


_COMPARED = ("first_p50", "final_p50", "final_p90", "eos_p90", "revisions", "ratio", "cpu")


def last_history(path: Path) -> dict[str, Any] | None:
    """The previous run's history line, if any (a damaged line is ignored)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def compare_rows(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """Change of each summary figure since an earlier run, per configuration and set present in both."""
    old = {(r["config"], r["set"]): r for r in before}
    out = []
    for r in after:
        p = old.get((r["config"], r["set"]))
        if p is None:
            continue
        parts = []
        for k in _COMPARED:
            a, b = p.get(k), r.get(k)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                parts.append(f"{k} {fmt(a)}→{fmt(b)} ({b - a:+.2f})")
        out.append(f"{r['config'][:28]:28} {r['set']:8} " + ", ".join(parts))
    return out


def append_history(results: dict[str, Any], path: Path) -> None:
    """One JSON line per run (when, which commit, the command, the summary rows), appended, so that
    repeated runs while tuning (`--core`) can be compared afterwards."""
    meta = results.get("meta", {})
    line = {
        "started": meta.get("started"),
        "commit": _get(meta, "machine", "commit"),
        "load_average": _get(meta, "machine", "load_average"),
        "command": meta.get("command"),
        "rows": summary_rows(results),
    }
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(_clean(line), ensure_ascii=False, allow_nan=False) + "\n")


def write_report(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results["targets"] = evaluate_targets(results)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "report.md"}
    write_json(results, paths["json"])
    for p in write_plots(results, out_dir):
        paths[p.stem] = p
    paths["markdown"].write_text(markdown(results), encoding="utf-8")
    return paths
