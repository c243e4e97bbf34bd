"""What every audio source is: something that, in its own thread, writes 16 kHz mono float32 audio
into a RingBuffer until it ends or is told to stop."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

from streamer.audio.ring import RingBuffer
from streamer.errors import SourceError

__all__ = ["Source", "SourceError"]


class Source(ABC):
    #: A live source (mic, stdin, network) is retried with backoff when it fails; a file is not.
    live: bool = False
    #: A network source that is ready when it listens, before any sender sends (RTP).
    listening: bool = False
    #: Set by the capture thread: a source reports changes of its own (an RTP sender that went
    #: quiet: "quiet", and back: "running") through it.
    on_state: Callable[[str, str], None] | None = None

    @property
    @abstractmethod
    def description(self) -> str:
        """Short human-readable name, e.g. 'file:talk.flac' or 'mic:USB Audio'."""

    @abstractmethod
    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        """Write audio into `ring` until the source ends (return) or `stop` is set (return soon).

        Raise SourceError on failure. Must not close the ring: the capture thread does that.
        """
