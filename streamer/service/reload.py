"""What a configuration reload (SIGHUP) can change in a running daemon: a pure plan.

`plan_reload(old, new)` compares two validated Settings and splits the changed keys into those
applied live and those that need a restart. Live keys are:

- every key an option type of the deciding code reads (the segmenter, the captioner, the filters,
  the decode engine; streamer/options.py): derived from those types, never listed by hand. A
  reload builds each stream a new immutable snapshot of them and each engine new DecodeOptions,
  swapped whole between two decisions;
- the keys the sinks read afresh on each use (the access token and client limits, checked per
  connection, so connected clients stay; MQTT partial pacing; the log level; the service's
  watchdog and status settings): `SINK_KEYS`, read on the event loop that applies the reload.

The rest (model, source, listening address, broker, transcript directory) is built once at start
and reported as needing a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from streamer.core import CaptionerOptions, FilterOptions, SegmenterOptions
from streamer.decode.engine import DecodeOptions
from streamer.options import keys_of

#: The option types a reload rebuilds (their keys are the live decoding keys).
OPTION_TYPES: tuple[type, ...] = (CaptionerOptions, SegmenterOptions, FilterOptions, DecodeOptions)

#: Keys (or whole sections, ending in '.') the sinks and the daemon read on each use.
SINK_KEYS: tuple[str, ...] = (
    "log_level",
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

_OPTION_KEYS = keys_of(*OPTION_TYPES)

#: Every key that applies to a running daemon.
LIVE_KEYS: tuple[str, ...] = tuple(sorted(_OPTION_KEYS)) + SINK_KEYS


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


def is_option_key(key: str) -> bool:
    """A key an option type of the deciding code reads (rebuilt as a snapshot on reload)."""
    return key in _OPTION_KEYS


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
