"""Decode scheduler and result collection: pure scheduling rules, then the engine's worker with
scripted decodes (no model): results are delivered the moment they are done, never behind an
older request; obsolete requests are cancelled."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer.decode.engine import DecodeEngine, DecodeOptions, DecodeRequest
from streamer.decode.hypothesis import Hypothesis
from streamer.decode.scheduler import Pending, Scheduler


def _p(i: int, stream: str, kind: str, t: float, background: bool = False) -> Pending[int]:
    return Pending(id=i, stream=stream, kind=kind, audio_end=t, submitted=t, item=i, background=background)


def test_finals_before_steps_and_live_before_background() -> None:
    s: Scheduler[int] = Scheduler()
    s.add(_p(1, "a", "step", 1.0))
    s.add(_p(2, "a", "final", 2.0, background=True))
    s.add(_p(3, "b", "final", 3.0))
    s.add(_p(4, "b", "step", 0.5))
    order = []
    while (p := s.pop_next()) is not None:
        order.append(p.id)
    assert order == [3, 1, 4, 2]


def test_streams_take_turns_within_a_tier() -> None:
    s: Scheduler[int] = Scheduler()
    for i in range(3):
        s.add(_p(10 + i, "busy", "step", float(i)))
    s.add(_p(20, "quiet", "step", 5.0))
    first = s.pop_next()
    second = s.pop_next()
    assert first is not None and second is not None
    assert {first.stream, second.stream} == {"busy", "quiet"}  # the quiet stream is not starved


def test_pop_batch_takes_one_request_per_stream_of_the_first_tier() -> None:
    s: Scheduler[int] = Scheduler()
    s.add(_p(1, "a", "final", 1.0))
    s.add(_p(2, "a", "final", 1.5))  # same stream: waits for the next batch
    s.add(_p(3, "b", "step", 0.5))  # lower tier: never rides with finals
    s.add(_p(4, "c", "final", 2.0))
    s.add(_p(5, "d", "final", 3.0))
    assert [p.id for p in s.pop_batch(2)] == [1, 4]
    assert [p.id for p in s.pop_batch(8)] == [5, 2]  # d was never served: it goes first
    assert [p.id for p in s.pop_batch(8)] == [3]
    assert s.pop_batch(8) == []


def test_pop_batch_of_one_is_pop_next() -> None:
    a: Scheduler[int] = Scheduler()
    b: Scheduler[int] = Scheduler()
    for s in (a, b):
        for i, (stream, kind) in enumerate([("x", "step"), ("y", "final"), ("x", "final"), ("z", "step")]):
            s.add(_p(i, stream, kind, float(i)))
    order_a = [p.id for p in iter(a.pop_next, None)]
    order_b = [batch[0].id for batch in iter(lambda: b.pop_batch(1), [])]
    assert order_a == order_b


@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.sampled_from(["step", "final"]), st.booleans()),
        max_size=30,
    ),
    st.integers(1, 5),
)
def test_pop_batch_drains_everything_once_in_uniform_batches(
    reqs: list[tuple[str, str, bool]], limit: int
) -> None:
    s: Scheduler[int] = Scheduler()
    for i, (stream, kind, bg) in enumerate(reqs):
        s.add(_p(i, stream, kind, float(i), background=bg))
    seen: list[int] = []
    while batch := s.pop_batch(limit):
        assert 1 <= len(batch) <= limit
        assert len({p.tier for p in batch}) == 1
        assert len({p.stream for p in batch}) == len(batch)
        # Nothing more urgent was left behind: tiers never go back up.
        assert all(q.tier >= batch[0].tier for q in s.pending())
        seen += [p.id for p in batch]
    assert sorted(seen) == list(range(len(reqs)))


def test_cancelled_request_is_removed() -> None:
    s: Scheduler[int] = Scheduler()
    s.add(_p(1, "a", "step", 1.0))
    assert s.remove(1) is not None
    assert s.pop_next() is None
    assert s.remove(1) is None


def test_level_rises_with_final_waits_and_recovers_when_idle() -> None:
    s: Scheduler[int] = Scheduler(window=10.0)
    p = _p(1, "a", "final", 0.0)
    p.submitted = 0.0
    s.record(p, started=2.0, ended=3.0)  # a final waited 2 s
    assert s.level == 2
    p2 = _p(2, "a", "final", 0.0)
    p2.submitted = 3.0
    s.record(p2, started=6.5, ended=7.0)  # waited 3.5 s
    assert s.level == 3
    # Long idle: the level falls one step at a time, each after `dwell` seconds, never at once.
    assert s.tick(30.0) == 2
    assert s.tick(31.0) == 2
    assert s.tick(35.0) == 1
    assert s.tick(40.0) == 0


def test_busy_decoder_alone_degrades_nothing() -> None:
    """Steps space themselves by the last decode's time: a busy decoder is not an overload."""
    s: Scheduler[int] = Scheduler(window=10.0)
    t = 0.0
    for i in range(20):
        p = _p(i, "a", "step", t)
        p.submitted = t
        s.record(p, started=t, ended=t + 0.5)  # back to back: 100 % busy, no final waiting
        t += 0.5
    assert s.level == 0


class _ScriptedEngine(DecodeEngine):
    """DecodeEngine with its model call replaced: each decode blocks until the test releases it,
    so the order in which decodes finish is under the test's control."""

    def __init__(self) -> None:
        self.gates: dict[float, threading.Event] = {}
        self.started: list[float] = []
        self.lock = threading.Lock()
        model = type("M", (), {"model": type("CT2", (), {"is_multilingual": False})()})()
        super().__init__(model, "scripted", DecodeOptions())  # type: ignore[arg-type]

    def decode(self, req: DecodeRequest, encoded: Any = None) -> Hypothesis:
        key = float(req.audio[0])
        with self.lock:
            self.started.append(key)
            gate = self.gates.setdefault(key, threading.Event())
        gate.wait(10)
        return Hypothesis(kind=req.kind, window_start=req.offset, window_end=req.offset, segments=())


def _req(kind: str, key: float, stream: str = "s") -> DecodeRequest:
    return DecodeRequest(kind=kind, audio=np.full(1600, key, dtype=np.float32), offset=key, stream=stream)  # type: ignore[arg-type]


def _wait_started(model: _ScriptedEngine, n: int) -> None:
    for _ in range(1000):
        with model.lock:
            if len(model.started) >= n:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"{n} decodes never started: {model.started}")


def test_engine_delivers_each_result_when_done_and_cancels_queued() -> None:
    engine = model = _ScriptedEngine()
    try:
        step = engine.submit(_req("step", 1.0))
        _wait_started(model, 1)  # the step is running
        queued_step = engine.submit(_req("step", 2.0))
        final = engine.submit(_req("final", 3.0))
        # The queued step became obsolete: it is cancelled before it runs.
        assert engine.cancel(queued_step_id := _id_of(engine, queued_step, 2.0))
        assert queued_step.cancelled()
        model.gates.setdefault(1.0, threading.Event()).set()
        step.result(timeout=10)
        _wait_started(model, 2)
        assert model.started == [1.0, 3.0]  # the final ran next; the cancelled step never did
        model.gates.setdefault(3.0, threading.Event()).set()
        assert isinstance(final.result(timeout=10), Hypothesis)
        assert not engine.cancel(queued_step_id)
    finally:
        for g in list(model.gates.values()):
            g.set()
        engine.close()


def _id_of(engine: DecodeEngine, fut: Future[Hypothesis], key: float) -> int:
    for p in engine._scheduler.pending():
        if p.item[1] is fut:
            return p.id
    raise AssertionError("not queued")
