"""Command line: `streamer run | transcribe | obs | models | devices | bench`.

Flags map onto dotted config keys and win over the environment and the TOML file. Every
user-facing failure (bad config, missing model, unreadable audio) ends with a one-line message on
stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from streamer import __version__, daemon, models, transcribe
from streamer.audio import devices
from streamer.config import ConfigError, settings_from_args
from streamer.errors import UserError
from streamer.obs import bridge

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (or STREAMER_CONFIG)")
    p.add_argument("--model", dest="model.name", metavar="NAME", help="model name or CTranslate2 directory")
    p.add_argument("--language", dest="decoder.language", metavar="L", help="language code; default: detect")
    p.add_argument("--task", dest="decoder.task", choices=["transcribe", "translate"])
    p.add_argument("--device", dest="model.device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--compute-type", dest="model.compute_type", metavar="TYPE")
    p.add_argument("--beam-size", dest="decoder.beam_size", type=int, metavar="N")
    p.add_argument("--step", dest="decoder.step", type=float, metavar="S", help="seconds between partials")
    p.add_argument("--end-silence", dest="vad.end_silence", type=float, metavar="S")
    p.add_argument("--no-agreement", dest="decoder.agreement", action="store_const", const=False)
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Real-time captioning daemon.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="start the captioning daemon")
    _add_common(run)
    run.add_argument(
        "--source",
        dest="source.spec",
        metavar="SPEC",
        help="mic | mic:DEVICE | file:PATH | stdin[:RATE] | demo",
    )
    run.add_argument("--stream", dest="stream", metavar="NAME", help="stream name (default 'main')")
    run.add_argument("--jsonl", action="store_true", help="write every event as one JSON line to stdout")
    run.add_argument("--trace", dest="trace", metavar="FILE", help="decode trace: one JSON line per decode")
    run.add_argument("--host", dest="server.host")
    run.add_argument("--port", dest="server.port", type=int)
    run.add_argument("--token", dest="server.token", help="access token for /ws, /transcript, /metrics")
    run.add_argument("--no-server", dest="server.enabled", action="store_const", const=False)
    run.add_argument("--mqtt", dest="mqtt.url", metavar="URL", help="mqtt://host:1883 or mqtts://host:8883")
    run.add_argument("--mqtt-prefix", dest="mqtt.prefix", metavar="PREFIX")
    run.add_argument("--transcripts", dest="transcripts.dir", metavar="DIR", help="transcript directory")
    run.add_argument(
        "--fast",
        dest="source.realtime",
        action="store_const",
        const=False,
        help="replay file sources as fast as possible instead of at 1x",
    )

    tr = sub.add_parser("transcribe", help="run the streaming pipeline over files as fast as possible")
    _add_common(tr)
    tr.add_argument("paths", nargs="+", metavar="PATH")
    tr.add_argument("--format", choices=["txt", "srt", "vtt", "json", "jsonl"], default="txt")
    tr.add_argument(
        "-o", "--output", metavar="OUT", help="output file (one path) or directory; default stdout"
    )
    tr.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    tr.add_argument("--no-filters", action="store_true", help="disable hallucination suppression")
    tr.add_argument("--trace", dest="trace", metavar="FILE", help="decode trace: one JSON line per decode")

    models = sub.add_parser("models", help="list known models and where they resolve from")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    models_sub.add_parser("list", help="show every known model")
    models.add_argument("--config", metavar="FILE")

    sub.add_parser("devices", help="list audio input devices")

    obs = sub.add_parser("obs", help="drive an OBS Text source and native stream captions from a stream")
    obs.add_argument("--config", metavar="FILE", help="TOML configuration file (or STREAMER_CONFIG)")
    obs.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    obs.add_argument(
        "--daemon", dest="obs.daemon", metavar="URL", help="daemon WebSocket (ws://127.0.0.1:8765/ws)"
    )
    obs.add_argument("--stream", dest="stream", metavar="NAME", help="stream to follow (default 'main')")
    obs.add_argument("--token", dest="server.token", help="the daemon's access token")
    obs.add_argument(
        "--obs", dest="obs.url", metavar="URL", help="obs-websocket address (ws://127.0.0.1:4455)"
    )
    obs.add_argument(
        "--obs-password",
        dest="obs.password",
        metavar="PW",
        help="obs-websocket password (or STREAMER_OBS__PASSWORD)",
    )
    obs.add_argument(
        "--source", dest="obs.source", metavar="NAME", help="Text source name (default 'Captions')"
    )
    obs.add_argument(
        "--scene", dest="obs.scene", metavar="NAME", help="scene for a new source (default: current)"
    )
    obs.add_argument(
        "--kind", dest="obs.input_kind", metavar="KIND", help="input kind to create (default auto)"
    )
    obs.add_argument(
        "--no-create",
        dest="obs.create",
        action="store_const",
        const=False,
        help="fail instead of creating a missing Text source",
    )
    obs.add_argument(
        "--font", dest="obs.font", metavar="FACE", help="font of a created source (CJK: a CJK font)"
    )
    obs.add_argument("--font-size", dest="obs.font_size", type=int, metavar="PT")
    obs.add_argument(
        "--max-chars", dest="layout.max_chars", type=int, metavar="N", help="characters per line (42)"
    )
    obs.add_argument("--max-lines", dest="layout.max_lines", type=int, metavar="N", help="lines shown (2)")
    obs.add_argument(
        "--no-stream-captions",
        dest="obs.stream_captions",
        action="store_const",
        const=False,
        help="do not send native CEA-608 captions while streaming",
    )

    # Listed for `streamer --help` only: main() hands everything after `bench` to streamer_bench,
    # which owns the flags, so the runtime never imports the benchmarks to build its parser.
    sub.add_parser(
        "bench", help="measure latency, accuracy, hallucinations, cost and capacity (needs streamer-bench)"
    )
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # faster-whisper logs every window it decodes; ours are several a second.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLogger().level))


def _bench(argv: list[str]) -> int:
    """`streamer bench ...`: the benchmarks are a separate distribution (streamer-bench, ./bench)."""
    try:
        # lazy: streamer_bench is a separate, optional distribution that only this command needs
        from streamer_bench.cli import main as bench_main
    except ModuleNotFoundError as e:  # not installed, or one of its dependencies is not
        missing = e.name or str(e)
        if missing.split(".")[0] == "streamer_bench":
            print(
                "streamer: `streamer bench` needs the streamer-bench package: pip install ./bench "
                "(the bench/ folder of the streamer source)",
                file=sys.stderr,
            )
        else:
            print(f"streamer: `streamer bench` needs {missing}: pip install ./bench", file=sys.stderr)
        return EXIT_FAILURE
    return bench_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "devices":
            return devices.main(args)
        settings = settings_from_args(args)
        _setup_logging(settings.log_level)
        if args.command == "models":
            return models.cli_main(settings)
        if args.command == "transcribe":
            return transcribe.main(settings, args)
        if args.command == "run":
            return daemon.main(settings, args)
        if args.command == "obs":
            return bridge.main(settings)
    except ConfigError as e:
        print(f"streamer: {e}", file=sys.stderr)
        return EXIT_USAGE
    except UserError as e:
        print(f"streamer: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE
