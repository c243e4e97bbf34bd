"""What a configuration reload (SIGHUP) can change in a running daemon: a pure plan.

`plan_reload(old, new)` compares two validated Settings and splits the changed keys into those
applied live and those that need a restart. Live keys are the ones read afresh on each use: the
access token and client limits (checked per connection, so connected clients stay), the
decoder's per-utterance options and prompt, the hallucination filters, MQTT partial pacing and
the log level. The rest (model, source, VAD, listening address, broker, transcript directory)
is built once at start and reported as needing a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

#: Dotted keys (or whole sections, ending in '.') that apply to a running daemon.
LIVE_KEYS: tuple[str, ...] = (
    "log_level",
    "decoder.",
    "filters.",
    "server.token",
    "server.allowed_origins",
    "server.allowed_hosts",
    "server.max_clients",
    "server.replay_finals",
    "server.client_queue",
    "server.stall_timeout",
    "mqtt.partial_interval",
    "mqtt.drain_timeout",
    "service.",
)

#: Decoder keys the decode engine holds (DecodeOptions), besides those the stream reads per request.
ENGINE_KEYS: frozenset[str] = frozenset(
    {
        "decoder.task",
        "decoder.temperatures",
        "decoder.no_speech_threshold",
        "decoder.log_prob_threshold",
        "decoder.compression_ratio_threshold",
        "decoder.hotwords",
    }
)


@dataclass(frozen=True)
class ReloadPlan:
    live: dict[str, Any]  # dotted key -> new value
    restart: dict[str, Any]

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)


def flatten(settings: BaseModel) -> dict[str, Any]:
    """{'server.token': ..., 'decoder.step': ...}: one entry per leaf key."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = value

    walk("", settings.model_dump())
    return out


def is_live(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in LIVE_KEYS)


def plan_reload(old: BaseModel, new: BaseModel) -> ReloadPlan:
    before, after = flatten(old), flatten(new)
    live: dict[str, Any] = {}
    restart: dict[str, Any] = {}
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            (live if is_live(key) else restart)[key] = after.get(key)
    return ReloadPlan(live=live, restart=restart)
