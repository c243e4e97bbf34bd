"""What every sink is started with: the settings, the bus, the streams, the model.

A module of its own so that the sinks (server, ingest) and the code that starts them can import it
without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import streamer
from streamer.bus import Bus
from streamer.config import Settings


@dataclass
class SinkContext:
    settings: Settings
    bus: Bus
    streams: Mapping[str, Any]  # name -> object with .health() -> dict and .name
    model: str  # resolved model name, for `hello`
    version: str = field(default=streamer.__version__)
    engine: Any = None  # the daemon's DecodeEngine: enables the file API (api.enabled)
