"""The console: a transcript, one line per utterance (finals only into a pipe, the partial tail
redrawn in place on a terminal), and a sink that never stalls captioning: a stdout nobody reads
blocks only its writer thread."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.audio.decode import load_audio
from streamer.audio.demo import demo_path, demo_text
from streamer.audio.ring import SAMPLE_RATE
from streamer.bus import Bus
from streamer.events import Final, Partial, Status, Word
from streamer.sinks.console import ConsoleQueue, ConsoleSink, Piece, TranscriptFormatter

from .e2e_util import REPO
from .helpers_daemon import Daemon, wait_until
from .sink_events import final, partial

F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity (a page is the minimum)


def status(n: int) -> Status:
    return Status(stream="main", state="retrying", detail=f"try {n}", emitted_at=float(n))


# --- the transcript's text (TranscriptFormatter) -----------------------------------------------


def fin(utt: int, seq: int, text: str, last: bool, stream: str = "main") -> Final:
    return Final(
        stream=stream, utterance=utt, rev=1, seq=seq, text=text, stable=text, start=float(utt),
        end=float(utt) + 0.5, emitted_at=float(utt) + 1, last=last,
        words=[Word(word=" " + w, start=float(utt), end=float(utt), probability=1.0) for w in text.split()],
    )  # fmt: skip


def part(utt: int, seq: int, text: str, rev: int = 0, stream: str = "main") -> Partial:
    return Partial(
        stream=stream, utterance=utt, rev=rev, seq=seq, text=text, stable="", start=float(utt),
        end=float(utt) + 0.5, emitted_at=float(utt) + 1,
    )  # fmt: skip


def written(fmt: TranscriptFormatter, events: list[Final | Partial | Status], width: int = 80) -> str:
    pieces = [p for e in events for p in fmt.feed(e, width)]
    assert all(not p.stderr for p in pieces)
    return "".join(p.text for p in pieces)


def test_pipe_gets_one_line_per_utterance_and_no_partials() -> None:
    fmt = TranscriptFormatter(tty=False)
    events: list[Final | Partial | Status] = [
        part(1, 1, "a"), part(1, 1, "a short", 1),
        fin(1, 1, "a short", last=False), part(1, 2, "recording"),
        fin(1, 2, "recording of", last=False), part(1, 3, "speech that"),
        fin(1, 3, "speech that loops.", last=True),
        part(2, 4, "Speak"), fin(2, 4, "Speak now.", last=True),
    ]  # fmt: skip
    assert written(fmt, events) == "a short recording of speech that loops.\nSpeak now.\n"
    assert not fmt.line_open
    assert fmt.close() == []


def test_pipe_line_grows_piece_by_piece_as_finals_settle() -> None:
    # A reader of the pipe sees the words as soon as they are final, and the newline only at the end.
    fmt = TranscriptFormatter(tty=False)
    assert fmt.feed(fin(1, 1, "Ask not", last=False)) == [Piece("Ask not")]
    assert fmt.feed(part(1, 2, "what your")) == []
    assert fmt.feed(fin(1, 2, " what your country ", last=False)) == [Piece(" what your country")]
    assert fmt.feed(fin(1, 3, "can do.", last=True)) == [Piece(" can do.\n")]


def test_empty_finals_add_no_stray_spaces_or_lines() -> None:
    fmt = TranscriptFormatter(tty=False)
    assert fmt.feed(fin(1, 1, "", last=True)) == []  # nothing was said: no empty line
    assert written(fmt, [fin(2, 2, "Hello", last=False), fin(2, 3, " ", last=True)]) == "Hello\n"


def test_a_lost_closing_final_ends_its_line_before_the_next_utterance_and_at_close() -> None:
    # A full console queue drops the oldest finals: the `last` one may never arrive.
    fmt = TranscriptFormatter(tty=False)
    events: list[Final | Partial | Status] = [
        fin(1, 1, "one two", last=False),
        fin(2, 3, "three", last=False),
    ]
    assert written(fmt, events) == "one two\nthree"
    assert fmt.close() == [Piece("\n")]
    assert fmt.close() == []


def test_status_goes_to_stderr_and_leaves_the_pipes_line_whole() -> None:
    fmt = TranscriptFormatter(tty=False)
    fmt.feed(fin(1, 1, "half", last=False))
    assert fmt.feed(status(1)) == [Piece("streamer: main: retrying: try 1\n", stderr=True)]
    assert fmt.feed(fin(1, 2, "way", last=True)) == [Piece(" way\n")]


def test_terminal_redraws_the_tail_in_place_after_the_settled_words() -> None:
    fmt = TranscriptFormatter(tty=True)
    assert written(fmt, [part(1, 1, "And so")]) == "And so"
    assert written(fmt, [part(1, 1, "And so my", 1)]) == "\r\x1b[KAnd so my"
    # The final replaces the tail; the next tail starts after it, one space apart.
    assert written(fmt, [fin(1, 1, "And so", last=False)]) == "\r\x1b[KAnd so"
    assert written(fmt, [part(1, 2, "my fellow")]) == " my fellow"
    assert written(fmt, [part(1, 2, "my fellow Americans", 1)]) == "\r\x1b[6C\x1b[K my fellow Americans"
    assert written(fmt, [part(1, 2, "", 2)]) == "\r\x1b[6C\x1b[K"  # an empty tail: just erased
    assert written(fmt, [fin(1, 2, "my fellow Americans.", last=True)]) == " my fellow Americans.\n"
    assert not fmt.line_open


def test_terminal_tail_keeps_its_newest_words_within_the_row() -> None:
    fmt = TranscriptFormatter(tty=True)
    fmt.feed(fin(1, 1, "0123456789", last=False), 20)
    # 10 columns settled, 20 wide: the tail gets 8 (a space before it, the last column stays free);
    # "…" and its newest whole words fit.
    assert written(fmt, [part(1, 2, "what your country can do")], 20) == " …can do"
    assert written(fmt, [part(1, 2, "what", 1)], 20) == "\r\x1b[10C\x1b[K what"
    # One word longer than the room: its end, so the newest letters still show.
    assert written(fmt, [part(1, 2, "extraordinarily", 2)], 20) == "\r\x1b[10C\x1b[K …inarily"
    # No room at all on this row: nothing, until a final moves the line on.
    fmt.feed(fin(1, 2, "abcdefgh", last=False), 20)  # 19 columns
    assert written(fmt, [part(1, 3, "more")], 20) == ""


def test_status_on_a_terminal_ends_the_line_first() -> None:
    fmt = TranscriptFormatter(tty=True)
    fmt.feed(fin(1, 1, "half", last=False))
    fmt.feed(part(1, 2, "way"))
    assert fmt.feed(status(2)) == [
        Piece("\r\x1b[4C\x1b[K\n"),
        Piece("streamer: main: retrying: try 2\n", stderr=True),
    ]
    assert written(fmt, [fin(1, 2, "way", last=True)]) == "way\n"


def test_another_streams_tail_never_lands_inside_an_open_line() -> None:
    fmt = TranscriptFormatter(tty=True)
    fmt.feed(fin(1, 1, "main speaks", last=False, stream="main"))
    assert fmt.feed(part(7, 1, "room two", stream="room2")) == []
    # Its final does: it ends the open line first, so no line mixes two streams.
    assert written(fmt, [fin(7, 1, "room two.", last=True, stream="room2")]) == "\nroom two.\n"


class Screen:
    """The part of a VT100/xterm that the transcript uses: printable ASCII with automatic wrap
    (the cursor waits in the last column until the next character), CR, LF, CUF and EL."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows: list[list[str]] = [[]]
        self.wrapped: list[bool] = [False]  # row i continues row i - 1
        self.col = 0
        self.pending = False

    def _row(self) -> list[str]:
        return self.rows[-1]

    def _newline(self, wrap: bool) -> None:
        self.rows.append([])
        self.wrapped.append(wrap)
        self.col, self.pending = 0, False

    def write(self, text: str) -> None:
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                end = text.index(next(c for c in text[i + 2 :] if c.isalpha()), i + 2)
                arg, op = text[i + 2 : end], text[end]
                if op == "C":
                    self.col, self.pending = min(self.col + int(arg or 1), self.width - 1), False
                elif op == "K":
                    del self._row()[self.col :]
                i = end + 1
                continue
            if ch == "\r":
                self.col, self.pending = 0, False
            elif ch == "\n":
                self._newline(False)  # the tty's ONLCR: LF moves to the next row's start
            else:
                if self.pending:
                    self._newline(True)
                row = self._row()
                row.extend(" " * (self.col - len(row)))
                row[self.col : self.col + 1] = [ch]
                if self.col == self.width - 1:
                    self.pending = True
                else:
                    self.col += 1
            i += 1

    def lines(self) -> list[str]:
        """Logical lines: rows joined where the terminal wrapped them."""
        out: list[str] = []
        for row, wrapped in zip(self.rows, self.wrapped, strict=True):
            text = "".join(row)
            if wrapped:
                out[-1] = out[-1].ljust(self.width) + text
            else:
                out.append(text)
        return out


words = st.sampled_from(["ask", "not", "what", "your", "country", "can", "do", "you,", "a", "longer-word"])
phrases = st.lists(words, min_size=1, max_size=6).map(" ".join)


@given(
    st.lists(st.lists(st.tuples(phrases, st.lists(phrases, max_size=3)), min_size=1, max_size=5), max_size=5),
    st.integers(12, 60),
)
def test_terminal_and_pipe_show_exactly_the_transcript(
    utterances: list[list[tuple[str, list[str]]]], width: int
) -> None:
    """Any utterances cut into finals, each preceded by partials: the pipe gets one line per
    utterance; the terminal, after every event, shows the finals so far plus at most the newest
    tail (after "…" when cut), and in the end exactly the transcript, with no tail left over."""
    events: list[Final | Partial] = []
    seq = 0
    for utt, finals in enumerate(utterances, start=1):
        for i, (text, tails) in enumerate(finals):
            seq += 1
            events += [part(utt, seq, t, rev) for rev, t in enumerate(tails)]
            events.append(fin(utt, seq, text, last=i == len(finals) - 1))
    expected = [" ".join(text for text, _ in finals) for finals in utterances]

    pipe = TranscriptFormatter(tty=False)
    assert written(pipe, list(events)) == "".join(line + "\n" for line in expected)

    tty = TranscriptFormatter(tty=True)
    screen = Screen(width)
    done: list[str] = []
    settled = ""
    for e in events:
        screen.write(written(tty, [e], width))
        if isinstance(e, Final):
            settled = f"{settled} {e.text}".strip()
            if e.last:
                done.append(settled)
                settled = ""
        shown = screen.lines()
        assert shown[: len(done)] == done
        current = shown[len(done)] if len(shown) > len(done) else ""
        assert current.startswith(settled), (current, settled)
        rest = current[len(settled) :].rstrip()
        if isinstance(e, Partial) and rest:
            tail = e.text.strip()
            whole = rest == (" " if settled else "") + tail
            assert whole or (rest.lstrip(" ").startswith("…") and tail.endswith(rest.lstrip(" …"))), rest
        elif not isinstance(e, Partial):
            assert rest == ""
    assert screen.lines() == [*expected, ""]


@given(st.lists(st.sampled_from(["p", "f", "s"]), max_size=80), st.integers(1, 10))
def test_queue_drops_partials_first_and_counts_everything(kinds: list[str], capacity: int) -> None:
    q = ConsoleQueue(capacity)
    pushed = {"p": 0, "f": 0, "s": 0}
    for i, k in enumerate(kinds, start=1):
        pushed[k] += 1
        q.push(partial(i, 0) if k == "p" else final(i) if k == "f" else status(i))
        assert len(q) <= capacity
    kept = []
    while (e := q.pop()) is not None:
        kept.append(e)
    n_f = sum(isinstance(e, Final) for e in kept)
    n_p = sum(isinstance(e, Partial) for e in kept)
    n_s = sum(isinstance(e, Status) for e in kept)
    assert n_f + q.dropped.finals == pushed["f"]
    assert n_p + q.dropped.partials == pushed["p"]
    assert n_s + q.dropped.other == pushed["s"]
    # Order is kept, and a final or status is only ever dropped when no partial was left to drop.
    seqs = [e.seq if not isinstance(e, Status) else int(e.emitted_at) for e in kept]
    assert seqs == sorted(seqs)
    if q.dropped.finals or q.dropped.other:
        assert pushed["f"] + pushed["s"] > capacity


def test_publisher_is_not_held_by_a_pipe_nobody_reads() -> None:
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    out = os.fdopen(w, "w", encoding="utf-8")
    sink = ConsoleSink(jsonl=True, out=out, capacity=50)
    bus = Bus()
    bus.subscribe(sink)
    delivered: list[int] = []
    bus.subscribe(lambda e: delivered.append(e.seq) if isinstance(e, Final) else None)
    events = [ev for i in range(1, 201) for ev in (partial(i, 0), partial(i, 1), final(i))]
    done = threading.Event()

    def publish() -> None:
        for ev in events:
            bus.publish(ev)
        done.set()

    threading.Thread(target=publish, daemon=True).start()
    # 200 finals of ~400 bytes cannot fit a 4 KiB pipe and a 50-event queue: if the console
    # write happened on the publishing thread, this would never be set.
    assert done.wait(60), "the publisher is stuck behind stdout"
    assert delivered == list(range(1, 201))
    d = sink.dropped
    assert d.partials == 400 and d.finals > 0  # partials went first; then finals, counted
    # Now read the pipe: what reaches stdout is the newest finals, in order, never a partial twice.
    sink.close(timeout=0.2)  # the writer is still stuck: close gives up after the timeout
    os.set_blocking(r, False)
    chunks = []
    while True:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    lines = [json.loads(x) for x in b"".join(chunks).decode().splitlines() if x.endswith("}")]
    written = [x["seq"] for x in lines if x["type"] == "final"]
    assert written == sorted(written)
    os.close(r)


@pytest.mark.model
@pytest.mark.slow
def test_daemon_with_a_paused_stdout_still_delivers_every_final(audio_dir: Path, tmp_path: Path) -> None:
    """`streamer run --jsonl` into a pipe nobody reads: captioning goes on, transcripts get every final."""
    wav = audio_dir / "long" / "en_pocketsphinx_sense_and_sensibility_01_0870-0930_concat.flac"  # 26 s
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    tx = tmp_path / "tx"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamer",
            "run",
            "--jsonl",
            "--no-server",
            "--fast",
            "--model",
            "tiny.en",
            "--language",
            "en",
            "--source",
            f"file:{wav}",
            "--transcripts",
            str(tx),
        ],
        cwd=REPO,
        stdout=w,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    os.close(w)
    try:
        # The end marker: the daemon exits by itself at the end of the file once every sink
        # (transcript files included) has the last final. Nothing ever reads `r`.
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    os.close(r)
    stderr = err.decode()
    assert proc.returncode == 0, stderr[-2000:]
    finals = [json.loads(x) for p in tx.glob("*.jsonl") for x in p.read_text().splitlines()]
    assert len(finals) >= 3
    assert [f["seq"] for f in finals] == list(range(1, len(finals) + 1))
    assert finals[-1]["last"] is True
    assert "console output was blocked" in stderr, stderr[-2000:]


# --- the real daemon -------------------------------------------------------------------------


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length, on lowercase words without punctuation."""
    ref, hyp = (re.sub(r"[^\w\s']", " ", s.lower()).split() for s in (reference, hypothesis))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def test_word_error_rate() -> None:
    assert word_error_rate("Ask not, what", "ask not what") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert word_error_rate("a b", "a b c d") == 1.0  # two insertions


@pytest.mark.model
@pytest.mark.slow
def test_piped_demo_run_prints_one_line_per_utterance_with_the_demos_words(tmp_path: Path) -> None:
    """`streamer run --source demo` with stdout piped: each line is one whole utterance (the finals
    the transcript file has for it, joined by spaces), no partials or terminal codes, and the first
    pass of the recording is JFK's sentence as tiny.en hears it."""
    tx = tmp_path / "tx"
    args = [
        "--source",
        "demo",
        "--model",
        "tiny.en",
        "--language",
        "en",
        "--no-server",
        "--transcripts",
        str(tx),
    ]
    d = Daemon(tmp_path, args)
    try:
        # One pass is 11 s of speech in four or so utterances, then a pause: five lines reach into
        # the second pass, so the first is complete.
        wait_until(lambda: len(d.stdout_lines) >= 5, "five transcript lines", timeout=180)
        d.signal(signal.SIGTERM)
        assert d.wait(60) == 0, d.log()[-3000:]
    finally:
        d.stop()
    out = "".join(d.stdout_lines)
    assert "\r" not in out and "\x1b" not in out
    finals = [json.loads(x) for p in sorted(tx.glob("*.jsonl")) for x in p.read_text().splitlines()]
    utterances: dict[int, list[dict[str, Any]]] = {}
    for f in finals:
        utterances.setdefault(f["utterance"], []).append(f)
    lines = [" ".join(t for f in fs if (t := f["text"].strip())) for fs in utterances.values()]
    expected = [line + "\n" for line in lines if line]  # an utterance that said nothing prints nothing
    assert d.stdout_lines == expected
    assert any(len(fs) > 1 for fs in utterances.values()), "no utterance had several finals to join"
    speech_end = load_audio(demo_path()).size / SAMPLE_RATE
    first_pass = " ".join(f["text"] for f in finals if f["start"] < speech_end)
    wer = word_error_rate(demo_text(), first_pass)
    print(f"tiny.en on the demo: {first_pass!r} (WER {wer:.2f})")
    assert "can do for your country" in first_pass.lower() and wer <= 0.3, (first_pass, wer)
