"""`streamer bench`: flags and the command itself.

The runtime CLI (streamer/cli.py) hands every argument after `bench` to `main` here, so the
benchmarks and their dependencies load only for that command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from streamer.audio.decode import load_audio
from streamer.config import ConfigError, load_settings
from streamer.decode import trace
from streamer.errors import UserError
from streamer_bench import soak
from streamer_bench.dataset import NONSPEECH_SET, SPEECH_SETS, AudioItem, default_audio_dir, load_all
from streamer_bench.fanout import run_fanout_bench
from streamer_bench.offline import OfflineModel
from streamer_bench.reference import reference_words
from streamer_bench.report import (
    append_history,
    compare_rows,
    last_history,
    machine,
    summary_rows,
    terminal_summary,
    write_report,
)
from streamer_bench.runner import MODES, BenchConfig, Runner, make_plan, parse_config, parse_overrides
from streamer_bench.streams import many_streams, markdown

# Named sets of configurations for --configs.
PRESETS: dict[str, list[str]] = {
    "sweep": [
        "tiny.en,step=0.3",
        "tiny.en,step=1.0",
        "tiny.en,end_silence=0.3",
        "tiny.en,end_silence=0.8",
        "tiny.en,beam=1",
        "tiny.en,agreement=off",
    ],
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--audio",
        metavar="DIR",
        type=Path,
        default=None,
        help="audio directory with en/ long/ ko/ multi/ nonspeech/ "
        "(default: $STREAMER_TEST_AUDIO or ../shared/audio)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=Path("bench-out"),
        help="output directory for report.md, results.json and plots (default bench-out/)",
    )
    p.add_argument(
        "--quick", action="store_true", help="about two minutes of audio, tiny.en only, for a fast look"
    )
    p.add_argument(
        "--core",
        action="store_true",
        help="the core check (< ~8 min): tiny.en live on ~6 English files + the 26 s long clip, base live "
        "on 8 Korean files, accuracy in fast mode on English/Korean subsets; one table",
    )
    p.add_argument(
        "--models",
        metavar="LIST",
        default=None,
        help="comma-separated models, each run with its defaults (default tiny.en,base; --quick: tiny.en)",
    )
    p.add_argument(
        "--configs",
        metavar="SPEC",
        action="append",
        default=[],
        help="extra configuration '[NAME=]MODEL[,key=value...]' (keys: step, end_silence, beam, "
        "agreement, partial_beam, or a dotted settings key); repeat, separate with ';', or "
        f"name a preset ({', '.join(PRESETS)})",
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="settings override applied to every configuration (a dotted key, e.g. decoder.beam_size=1); "
        "repeatable",
    )
    p.add_argument(
        "--reference-model",
        metavar="NAME",
        default=None,
        help="model timing the reference words (default: the largest model benchmarked, at least base)",
    )
    p.add_argument(
        "--sets",
        metavar="LIST",
        default=None,
        help=f"run only these sets and modes ({', '.join((*SPEECH_SETS, NONSPEECH_SET, *MODES))}); "
        "ko-long: the 10-minute Korean concatenation live, overload: base starved of CPU",
    )
    p.add_argument(
        "--long-ko",
        metavar="S",
        type=float,
        nargs="?",
        const=600.0,
        default=None,
        help="run the Korean concatenation live (default 600 s), alone or with --sets",
    )
    p.add_argument(
        "--overload",
        metavar="S",
        type=float,
        nargs="?",
        const=300.0,
        default=None,
        help="run the overload benchmark (default 300 s of Korean, 1 decode thread, one core burned), "
        "alone or with --sets",
    )
    p.add_argument(
        "--ko-seconds",
        metavar="S",
        type=float,
        default=None,
        help="Korean audio replayed at 1x per multilingual configuration (default 120)",
    )
    p.add_argument(
        "--latency-seconds",
        metavar="S",
        type=float,
        default=None,
        help="English audio replayed at 1x per configuration for latency (default 45 quick, 60 full)",
    )
    p.add_argument(
        "--capacity",
        metavar="LIST",
        default="1,2,4,8",
        help="concurrent stream counts to try (default 1,2,4,8)",
    )
    p.add_argument(
        "--many-streams",
        metavar="LIST",
        default=None,
        help="run only the many-streams benchmark: N streams in one daemon (with and without "
        "batching) vs N daemons, for these N (e.g. 1,2,3,4,5; each mode stops at its first failing N)",
    )
    p.add_argument(
        "--many-streams-models", metavar="LIST", default="tiny.en,base", help="models (default tiny.en,base)"
    )
    p.add_argument(
        "--many-streams-seconds", metavar="S", type=float, default=30.0, help="speech per stream (default 30)"
    )
    p.add_argument("--no-capacity", action="store_true", help="skip the capacity test")
    p.add_argument("--capacity-model", metavar="NAME", default="tiny.en")
    p.add_argument("--no-fanout", action="store_true", help="skip the WebSocket fan-out benchmark")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--config", metavar="FILE", help="TOML configuration the configurations start from")
    p.add_argument(
        "--trace",
        metavar="FILE",
        help="decode trace: one JSON line per decode of every run (STREAMER_TRACE); its summary per kind "
        "is printed at the end",
    )


def _configs(args: argparse.Namespace) -> list[BenchConfig]:
    models = [
        m.strip()
        for m in (args.models or ("tiny.en" if args.quick else "tiny.en,base")).split(",")
        if m.strip()
    ]
    configs = [BenchConfig(m, m) for m in models]
    for value in args.configs:
        for spec in (s.strip() for s in value.split(";")):
            if not spec:
                continue
            for expanded in PRESETS.get(spec, [spec]):
                configs.append(parse_config(expanded))
    common = parse_overrides(args.set, "--set")
    if common:
        configs = [BenchConfig(c.name, c.model, {**common, **c.overrides}) for c in configs]
    for c in configs:
        # A wrong key or value fails now, not after minutes of measuring (ConfigError is a ValueError).
        load_settings(args.config, {"model.name": c.model, **c.overrides})
    names = [c.name for c in configs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"configuration names must differ: {', '.join(sorted(dupes))}")
    return configs


def _reference_model(args: argparse.Namespace, configs: list[BenchConfig]) -> str:
    if args.reference_model:
        return str(args.reference_model)
    # "At least as large as the one under test": base covers tiny.en and base.
    order = ["tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium", "large-v3"]
    ranked = [c.model for c in configs if c.model in order]
    largest = max(ranked, key=order.index, default="base")
    return largest if order.index(largest) >= order.index("base") else "base"


def _fanout() -> dict[str, Any]:
    return run_fanout_bench(clients=200)


def _many_streams(args: argparse.Namespace, sets: dict[str, list[AudioItem]]) -> int:
    """`--many-streams`: the one benchmark alone; its table goes to OUT/many-streams.md and stdout."""
    try:
        levels = sorted({int(x) for x in args.many_streams.split(",") if x.strip()})
        if not levels or levels[0] < 1:
            raise ValueError
    except ValueError:
        print("streamer bench: --many-streams takes positive integers, e.g. 1,2,3,4", file=sys.stderr)
        return 2
    longest = max(sets.get("long", []), key=lambda i: i.seconds, default=None)
    if longest is None:
        print("streamer bench: --many-streams needs the long/ set", file=sys.stderr)
        return 2
    out: Path = args.out
    ref = reference_words(
        longest,
        OfflineModel("base", load_settings(args.config, {"model.name": "base"})),
        out / "cache" / "reference",
    )
    load = os.getloadavg()
    res = many_streams(
        load_audio(longest.path),
        ref,
        [m.strip() for m in args.many_streams_models.split(",") if m.strip()],
        levels,
        args.many_streams_seconds,
        out / "work" / "many-streams",
        on_level=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    res["file"] = longest.name
    res["load_before"] = " ".join(f"{x:.2f}" for x in load)
    res["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out.mkdir(parents=True, exist_ok=True)
    (out / "many-streams.json").write_text(json.dumps(res, indent=1, default=str))
    text = "\n".join(markdown(res)) + f"\n\nLoad average after: {res['load_after']}.\n"
    (out / "many-streams.md").write_text(text)
    print(text)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        configs = _configs(args)
        levels = [int(x) for x in str(args.capacity).split(",") if x.strip()]
        if any(n < 1 for n in levels):
            raise ValueError("--capacity counts must be positive integers")
    except ValueError as e:
        print(f"streamer bench: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    root = (args.audio or default_audio_dir()).resolve()
    sets = load_all(root)
    if args.many_streams is not None:
        return _many_streams(args, sets)
    selected: set[str] | None = None
    if args.sets:
        selected = {s.strip() for s in args.sets.split(",") if s.strip()}
        unknown = selected - {*SPEECH_SETS, NONSPEECH_SET, *MODES}
        if unknown:
            print(f"streamer bench: unknown set(s) {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
    for flag, mode in ((args.long_ko, "ko-long"), (args.overload, "overload")):
        if flag is not None:
            selected = {*(selected or set()), mode}
    partial = selected is not None
    plan = make_plan(
        sets,
        args.quick,
        levels,
        args.latency_seconds,
        core=args.core,
        selected=selected,
        ko_seconds=args.ko_seconds,
        ko_long_seconds=args.long_ko or 600.0,
        overload_seconds=args.overload or 300.0,
    )
    if not (plan.latency or plan.ko_latency or plan.long_latency or plan.accuracy or plan.nonspeech) and not (
        plan.ko_long_seconds or plan.overload_seconds
    ):
        print(f"streamer bench: nothing to measure in '{root}' with these sets", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    wall0 = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "command": "streamer bench "
            + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
            "started": started.isoformat(timespec="seconds"),
            "machine": machine(),
            "audio_dir": str(root),
            "quick": bool(args.quick),
            "plan": {
                "latency_files": [i.name for i in plan.latency],
                "latency_seconds": sum(i.seconds for i in plan.latency),
                "accuracy_sets": {k: len(v) for k, v in plan.accuracy.items()},
                "accuracy_seconds": sum(i.seconds for v in plan.accuracy.values() for i in v),
                "nonspeech_files": len(plan.nonspeech),
                "nonspeech_seconds": sum(i.seconds for i in plan.nonspeech),
                "capacity_file": plan.capacity_file.name if plan.capacity_file else None,
            },
        }
    }
    runner = Runner(
        plan,
        configs,
        out,
        _reference_model(args, configs),
        config_file=args.config,
        # Capacity and fan-out belong to full runs (and --quick), not to partial or core runs.
        do_capacity=not (args.no_capacity or partial or args.core),
        capacity_model=args.capacity_model,
    )
    bar = tqdm(
        total=round(runner.total_seconds()),
        unit="audio-s",
        file=sys.stderr,
        disable=args.no_progress,
        dynamic_ncols=True,
    )

    def tick(seconds: float, what: str) -> None:
        bar.set_description(what[:60])
        bar.update(round(seconds))

    runner.tick = tick
    try:
        results.update(runner.run())
        if not (args.no_fanout or partial or args.core):
            bar.set_description("WebSocket fan-out")
            results["fanout"] = _fanout()
    finally:
        bar.close()
    results["meta"]["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["meta"]["wall_seconds"] = time.perf_counter() - wall0
    paths = write_report(results, out)
    previous = last_history(out / "history.jsonl")
    append_history(results, out / "history.jsonl")
    print(terminal_summary(results))
    if previous is not None:
        changes = compare_rows(previous.get("rows", []), summary_rows(results))
        if changes:
            when, commit = previous.get("started"), previous.get("commit")
            print(f"\nsince the previous run in {out} ({when}, commit {commit}):")
            print("\n".join(changes))
    print(f"\nreport: {paths['markdown']}  figures: {paths['json']}  plots: {out}/*.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer bench")
    add_arguments(parser)
    soak.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`streamer bench ARGS`: exit status 2 for bad flags or settings, 1 for a user-facing failure."""
    args = build_parser().parse_args(argv)
    if args.trace:
        # Every configuration of the run reads its Settings from the environment as well.
        os.environ["STREAMER_TRACE"] = str(Path(args.trace).resolve())
    try:
        status = soak.run(args) if args.soak else run(args)
        if args.trace and Path(args.trace).exists():
            print(trace.markdown(trace.summarize(trace.read(Path(args.trace)))))
        return status
    except ConfigError as e:
        print(f"streamer: {e}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"streamer: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
