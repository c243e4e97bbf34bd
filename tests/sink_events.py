"""Hand-made caption events for sink tests (the pipeline is not needed to test delivery)."""

from __future__ import annotations

from streamer.events import Final, Partial, Word


def final(seq: int, text: str | None = None, *, stream: str = "main", start: float | None = None) -> Final:
    t0 = float(seq * 2) if start is None else start
    body = text if text is not None else f"final number {seq}"
    return Final(
        stream=stream,
        utterance=seq - 1,
        rev=3,
        seq=seq,
        text=body,
        stable=body,
        start=t0,
        end=t0 + 1.5,
        lang="en",
        emitted_at=t0 + 2.0,
        words=[Word(word=" " + w, start=t0, end=t0 + 0.1, probability=0.9) for w in body.split()[:3]],
    )


def partial(seq: int, rev: int, text: str | None = None, *, stream: str = "main") -> Partial:
    body = text if text is not None else f"partial {seq}.{rev}"
    t0 = float(seq * 2)
    return Partial(
        stream=stream,
        utterance=seq - 1,
        rev=rev,
        seq=seq,
        text=body,
        stable="",
        start=t0,
        end=t0 + 0.5 + rev * 0.1,
        lang="en",
        emitted_at=t0 + 0.7 + rev * 0.1,
    )
