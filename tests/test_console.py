"""The console sink never stalls captioning: a stdout nobody reads blocks only its writer thread."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.bus import Bus
from streamer.events import Final, Partial, Status
from streamer.sinks.console import ConsoleQueue, ConsoleSink

from .e2e_util import REPO
from .sink_events import final, partial

F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity (a page is the minimum)


def status(n: int) -> Status:
    return Status(stream="main", state="retrying", detail=f"try {n}", emitted_at=float(n))


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
