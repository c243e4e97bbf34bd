"""What a caption follower knows, without I/O: the text to show and which finals are new.

Protocol 2 (docs/protocol.md): each final is appended, each partial replaces the live tail (the
unsettled words after the utterance's last final). `seq` numbers finals per daemon session
without gaps; a new `session` in hello means the daemon restarted and `seq` starts again at 1.

The Text source shows the last `max_lines` caption lines of the running text, broken by the
caption layout (`streamer.layout.last_lines`: the lines roll up without re-flowing, at most
`max_chars` columns a line, wide characters counted double). Native
stream captions get each final once, and only finals that are live: the finals a daemon replays
to a newly connected follower are older than the connection and are shown, not captioned again.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.events import Final, Hello, Partial, Status
from streamer.layout import last_lines, roll_lines

# Settled text kept for display: far more than the last lines need at any sensible line length.
KEEP_CHARS = 1000


@dataclass(frozen=True)
class Reconnect:
    """The follower must reconnect without `since`: the daemon restarted (new session)."""

    reason: str


class CaptionState:
    def __init__(self, max_chars: int = 42, max_lines: int = 2, keep_chars: int = KEEP_CHARS) -> None:
        self.max_chars = max_chars
        self.max_lines = max_lines
        self.keep_chars = keep_chars
        self.session: str | None = None
        self.since = 0  # seq of the last final received in this session
        self._settled = ""  # whitespace-normalised, so that layout lines are substrings of it
        self._tail = ""
        self._replaying = False
        self._replay_until = 0

    # --- connection ------------------------------------------------------------------------
    def query_since(self) -> int | None:
        """`since` for the next connection: None asks the daemon for its recent finals."""
        return self.since if self.session is not None else None

    def on_hello(self, hello: Hello) -> Reconnect | None:
        """A new connection's hello. Until `on_replay_done`, finals are a replay (not live)."""
        self._replaying = True
        if self.session is not None and hello.session and hello.session != self.session:
            # The `since` we sent belongs to the previous daemon run: what the daemon replays
            # for it is meaningless. Start over in the new session.
            self.session = None
            self.since = 0
            self._tail = ""
            return Reconnect(f"daemon restarted (session {hello.session})")
        self.session = hello.session
        return None

    def on_replay_done(self, last_seq: int) -> None:
        """The daemon's answer to our first ping: finals up to `last_seq` are not live for us."""
        self._replaying = False
        self._replay_until = last_seq

    # --- events ----------------------------------------------------------------------------
    def on_event(self, event: Hello | Partial | Final | Status) -> tuple[bool, Final | None]:
        """Apply a caption event: (display text changed, final to send as a live caption)."""
        if isinstance(event, Final):
            return self._on_final(event)
        if isinstance(event, Partial):
            return self._on_partial(event), None
        return False, None

    def _on_final(self, f: Final) -> tuple[bool, Final | None]:
        if f.seq <= self.since:
            return False, None  # already have it (replay overlap)
        self.since = f.seq
        self._tail = ""  # the daemon follows a non-last final with the remaining tail
        text = " ".join(f.text.split())
        if text:
            self._settled = f"{self._settled} {text}" if self._settled else text
            if len(self._settled) > self.keep_chars:
                self._trim()
        live = not self._replaying and f.seq > self._replay_until
        return True, (f if live and text else None)

    def _on_partial(self, p: Partial) -> bool:
        if p.seq <= self.since:
            return False  # previews a final we already have
        tail = " ".join(p.text.split())
        if tail == self._tail:
            return False
        self._tail = tail
        return True

    def _trim(self) -> None:
        """Forget the oldest settled text, cutting at the start of a caption line.

        A rolled line depends only on where it starts and the words after it, so the lines
        after the cut come out exactly as before: trimming never re-flows what is on screen.
        """
        lines = roll_lines(self._settled, self.max_chars)
        pos, cut = 0, 0
        for line in lines[: -(self.max_lines + 1)]:
            if not self._settled.startswith(line, pos):
                break  # not laid out as expected: keep the text rather than guess
            pos += len(line)
            if self._settled.startswith(" ", pos):
                pos += 1
            if len(self._settled) - pos < self.keep_chars // 2:
                break
            cut = pos
        self._settled = self._settled[cut:]

    # --- display ---------------------------------------------------------------------------
    def running_text(self) -> str:
        return (
            f"{self._settled} {self._tail}" if self._settled and self._tail else self._settled or self._tail
        )

    def display(self) -> str:
        """The Text source's text: the last caption lines, newline-separated."""
        return "\n".join(last_lines(self.running_text(), self.max_chars, self.max_lines))
