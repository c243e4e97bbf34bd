"""The benchmark's output: JSON with every figure, a Markdown report, PNG plots, a terminal summary.

`evaluate_targets` (pure) compares the figures with the project's targets from issue 4.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


TARGETS: list[Target] = [
    (
        "median final latency",
        "tiny.en",
        lambda c, r: _get(c, "latency", "overall", "final", "median"),
        "<=",
        1.0,
        "s",
    ),
    (
        "p90 final latency",
        "tiny.en",
        lambda c, r: _get(c, "latency", "overall", "final", "p90"),
        "<=",
        1.6,
        "s",
    ),
    (
        "median first-appearance latency",
        "tiny.en",
        lambda c, r: _get(c, "latency", "overall", "first", "median"),
        "<=",
        0.6,
        "s",
    ),
    (
        "final after end of speech (median)",
        "tiny.en",
        lambda c, r: _get(c, "latency", "overall", "end_of_speech", "median"),
        "<=",
        0.8,
        "s",
    ),
    (
        "English WER / offline WER",
        "tiny.en",
        lambda c, r: _get(c, "accuracy", "sets", "english", "ratio"),
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
        "median final latency",
        "base",
        lambda c, r: _get(c, "latency", "overall", "final", "median"),
        "<=",
        1.5,
        "s",
    ),
    ("p90 final latency", "base", lambda c, r: _get(c, "latency", "overall", "final", "p90"), "<=", 2.5, "s"),
    (
        "English WER / offline WER",
        "base",
        lambda c, r: _get(c, "accuracy", "sets", "english", "ratio"),
        "<=",
        1.03,
        "x",
    ),
    (
        "concurrent real-time streams (final p90 <= 2 s)",
        "tiny.en",
        lambda c, r: _get(r, "capacity", "max_streams"),
        ">=",
        6,
        "streams",
    ),
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
    import subprocess

    import streamer

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
    from importlib import metadata

    for pkg in ("streamer", "faster-whisper", "ctranslate2", "onnxruntime", "numpy", "av"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    if versions["streamer"] == "not installed":
        from streamer import __version__

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
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except (ImportError, OSError):
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


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    configs = results.get("configs", [])
    if configs:
        fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(configs) + 4), 4.5), sharey=True)
        for ax, key, title in ((axes[0], "first", "first appearance"), (axes[1], "final", "final")):
            data = [c["latency"]["samples"][key] or [math.nan] for c in configs]
            ax.boxplot(data, whis=(10, 90), showfliers=True)
            ax.set_xticks(
                range(1, len(configs) + 1), [c["name"] for c in configs], rotation=20, ha="right", fontsize=8
            )
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

        fig, axes_arr = plt.subplots(
            1, len(configs), figsize=(max(6.0, 4.2 * len(configs)), 4.6), squeeze=False
        )
        for ax, c in zip(axes_arr[0], configs, strict=True):
            rows = c["accuracy"]["files"]
            sets = sorted({r["set"] for r in rows})
            top = 0.05
            for s in sets:
                xs = [r["offline"] for r in rows if r["set"] == s and not r["excluded"]]
                ys = [r["stream"] for r in rows if r["set"] == s and not r["excluded"]]
                ax.scatter(xs, ys, s=14, label=s, alpha=0.7)
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
    return written


# --------------------------------------------------------------------------- text


def _f(v: Any, digits: int = 2, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v}{unit}"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return str(v)


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    mach = meta.get("machine", {})
    lines = [
        "# streamer bench report",
        "",
        f"Command: `{meta.get('command', '')}`  ",
        f"Run: {meta.get('started', '')} – {meta.get('finished', '')} "
        f"({_f(meta.get('wall_seconds'), 0)} s)  ",
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
    lines += _table(
        ["model", "target", "limit", "measured", "met"],
        [
            [
                t["model"],
                t["target"],
                f"{t['op']} {t['limit']} {t['unit']}",
                _f(t["value"]),
                {True: "yes", False: "**no**", None: "not measured"}[t["ok"]],
            ]
            for t in results.get("targets", [])
        ],
    )
    configs = results.get("configs", [])
    lines += [
        "",
        "## Latency (1x replay, audio clock, per reference word)",
        "",
        "Latency = event `emitted_at` − the word's end in the reference timing. First = the word first "
        "shown correctly (partial or final); final = the first final holding the word (finals aligned "
        "with the reference as for WER). End of speech → last final = the final closing an utterance − "
        "the end of the utterance's last word its finals got right. Revisions = settled words (in a "
        "final or a partial's `stable`) that later changed in the utterance's display (finals so far + "
        "the latest partial's tail); must be 0 (as displayed / words only). Tail flicker = unsettled "
        "displayed words later changed / unsettled words shown (as displayed; 'words only' compares "
        "normalised words). Tail insertions = words in finals after the last reference word of a file.",
        "",
    ]
    rows = []
    for c in configs:
        o = c["latency"]["overall"]
        rows.append(
            [
                c["name"],
                _f(o["first"]["median"]),
                _f(o["first"]["p90"]),
                _f(o["first"]["p99"]),
                _f(o["final"]["median"]),
                _f(o["final"]["p90"]),
                _f(o["final"]["p99"]),
                _f(o["end_of_speech"]["median"]),
                _f(o["end_of_speech"]["p90"]),
                f"{_f(o.get('revisions'))} / {_f(o.get('revisions_normalized'))}",
                f"{_pct(o.get('tail_flicker'))} / {_pct(o.get('tail_flicker_normalized'))}",
                _f(o.get("tail_insertions")),
                f"{o['missed_final']}/{o['words']}",
            ]
        )
    lines += _table(
        [
            "config",
            "first med",
            "first p90",
            "first p99",
            "final med",
            "final p90",
            "final p99",
            "EOS → last final med",
            "EOS → last final p90",
            "revisions",
            "tail flicker (words only)",
            "tail insertions",
            "missed words",
        ],
        rows,
    )
    for c in configs:
        lines += ["", f"<details><summary>{c['name']}: per file</summary>", ""]
        lines += _table(
            ["file", "s", "first med/p90/p99", "final med/p90/p99", "revisions", "tail flicker", "missed"],
            [
                [
                    name,
                    _f(f["seconds"], 1),
                    "/".join(_f(f["first"][k]) for k in ("median", "p90", "p99")),
                    "/".join(_f(f["final"][k]) for k in ("median", "p90", "p99")),
                    _f(f.get("revisions")),
                    _pct(f.get("tail_flicker")),
                    f"{f['missed_final']}/{f['words']}",
                ]
                for name, f in c["latency"]["files"].items()
            ],
        )
        lines += ["", "</details>"]
    lines += [
        "",
        "## Accuracy (fast replay; finals vs reference; offline = `WhisperModel.transcribe`, "
        "same model, beam 5)",
        "",
        "Both texts are normalised by streamer/textnorm.py (Whisper's English normaliser for English, "
        "its basic normaliser otherwise); CER for Korean and Chinese. Rates are corpus rates (total "
        "errors / total reference words). Files whose offline error rate exceeds 100% are taken to have "
        "a reference that does not match the audio and are left out (listed).",
        "",
    ]
    rows = []
    for c in configs:
        for s, a in c["accuracy"]["sets"].items():
            rows.append(
                [
                    c["name"],
                    s,
                    a["metric"].upper(),
                    str(a["files"]),
                    _pct(a["stream"]),
                    _pct(a["offline"]),
                    _f(a["ratio"], 3),
                    ", ".join(a["excluded"]) or "–",
                ]
            )
    lines += _table(["config", "set", "metric", "files", "streaming", "offline", "ratio", "excluded"], rows)
    lines += ["", "## Hallucinations (non-speech files: words in finals; offline = its whole output)", ""]
    rows = []
    for c in configs:
        h = c["hallucinations"]
        off = _get(results, "offline", c["model"], "hallucinations", "total_words")
        rows.append(
            [
                c["name"],
                _f(h["with_filters"]["total_words"]),
                _f(_get(h, "without_filters", "total_words")),
                _f(off),
                _f(h["with_filters"]["seconds"], 0),
            ]
        )
    lines += _table(["config", "with filters", "without filters", "offline", "audio s"], rows)
    lines += ["", "## Cost", ""]
    rows = []
    for c in configs:
        cost = c["latency"]["cost"]
        rtf = cost.get("decode_rtf", {})
        rtf_s = (
            "; ".join(
                f"{k} mean {_f(v['mean'])} (p90 ≤ {_f(v['p90_le'])}, n={v['count']})" for k, v in rtf.items()
            )
            or "–"
        )
        d = _get(results, "offline", c["model"], "daemon") or {}
        rows.append(
            [
                c["name"],
                _f(cost["cpu_per_audio_second"], 3),
                rtf_s,
                _f(c.get("load_seconds")),
                _f(d.get("peak_rss_mb"), 0),
                _f(d.get("ready_s")),
                _f(d.get("first_caption_s")),
                _f(d.get("cpu_per_audio_second"), 3),
                _f(cost.get("dropped_seconds")),
            ]
        )
    lines += _table(
        [
            "config",
            "CPU s / audio s (1x, in-process)",
            "decode RTF",
            "model load s",
            "daemon peak RSS MB",
            "daemon ready s",
            "daemon first caption s",
            "daemon CPU s / audio s (incl. startup)",
            "dropped s",
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
            f"{k}: first word ends at {_f(_get(v, 'daemon', 'first_word_end_s'))} s"
            for k, v in results.get("offline", {}).items()
        )
        + "), its peak RSS (VmHWM) and its CPU time from `wait4` (CPU includes model load).",
        "",
    ]
    offline = results.get("offline", {})
    if offline:
        lines += _table(
            ["offline model", "load s", "CPU s / audio s"],
            [[k, _f(v["load_seconds"]), _f(v["cpu_per_audio_second"], 3)] for k, v in offline.items()],
        )
    cap = results.get("capacity")
    if cap:
        lines += [
            "",
            f"## Capacity ({cap['model']}, independent daemons at 1x on {Path(cap['file']).name}, "
            f"{_f(cap['file_seconds'], 1)} s)",
            "",
            f"Largest number of concurrent streams with final p90 ≤ {cap['p90_limit']} s and no audio "
            f"dropped: **{cap['max_streams']}**; with final-after-end-of-speech p90 ≤ {cap['p90_limit']} s "
            f"instead: **{cap.get('max_streams_end_of_speech')}**",
            "",
        ]
        lines += _table(
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
                    _f(lv["final_p90"]),
                    _f(lv.get("end_of_speech_p90")),
                    _f(lv["dropped_seconds"]),
                    str(lv["failed_processes"]),
                    _f(lv["ok"]),
                    _f(lv.get("keeps_up")),
                ]
                for lv in cap["levels"]
            ],
        )
    fan = results.get("fanout")
    if fan:
        lines += ["", "## WebSocket fan-out", "", "```", json.dumps(_clean(fan), indent=2), "```"]
    ref = results.get("reference", {})
    if ref:
        lines += [
            "",
            "## Word timing reference",
            "",
            f"Offline faster-whisper `{ref.get('model')}` with word timestamps; the reference transcript "
            "is aligned to its words by minimal edit distance after normalisation; words it missed are "
            "spread evenly between timed neighbours "
            f"({_pct(ref.get('interpolated_share'))} of {ref.get('words')} words). Files whose reference "
            "mostly disagrees with the timing pass (under half the words matched) are left out of latency: "
            f"{', '.join(ref.get('excluded_mismatched') or []) or 'none'}.",
        ]
        dis = ref.get("end_time_disagreement")
        if dis:
            lines += [
                f"Method error estimate: timing the same words with `{ref.get('disagreement_model')}` "
                f"instead moves word end times by median {_f(dis['median'])} s, p90 {_f(dis['p90'])} s."
            ]
    lines += ["", "## Plots", "", "![latency](latency.png)", "", "![wer](wer.png)", ""]
    return "\n".join(lines)


def terminal_summary(results: dict[str, Any]) -> str:
    lines = ["", "streamer bench — summary", ""]
    lines.append(
        f"{'config':28} {'first med':>9} {'final med':>9} {'final p90':>9} {'flicker':>8} "
        f"{'WER en':>7} {'offline':>7} {'ratio':>6} {'halluc':>6} {'CPU/s':>6}"
    )
    for c in results.get("configs", []):
        o = c["latency"]["overall"]
        en = c["accuracy"]["sets"].get("english", {})
        lines.append(
            f"{c['name'][:28]:28} {_f(o['first']['median']):>9} {_f(o['final']['median']):>9} "
            f"{_f(o['final']['p90']):>9} {_pct(o['flicker']):>8} {_pct(en.get('stream')):>7} "
            f"{_pct(en.get('offline')):>7} {_f(en.get('ratio'), 3):>6} "
            f"{_f(c['hallucinations']['with_filters']['total_words']):>6} "
            f"{_f(c['latency']['cost']['cpu_per_audio_second'], 3):>6}"
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
            f"[{mark}] {t['model']:8} {t['target']:48} {t['op']} {t['limit']:<5} {t['unit']:8} "
            f"measured {_f(t['value'])}"
        )
    return "\n".join(lines)


def write_report(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results["targets"] = evaluate_targets(results)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "report.md"}
    write_json(results, paths["json"])
    for p in write_plots(results, out_dir):
        paths[p.stem] = p
    paths["markdown"].write_text(markdown(results), encoding="utf-8")
    return paths
