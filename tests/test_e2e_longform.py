"""A monologue with no pause long enough to end an utterance (espeak-ng, 35 s): the agreed prefix
is committed as finals while the speaker goes on, windows stay bounded, and no word is captioned
twice or lost at the boundaries."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path

import pytest

from streamer_bench.textnorm import error_rate

from .components import tool
from .e2e_util import streamer

TEXT = (
    "The history of printing is a long one and it begins in many places at once, in workshops where "
    "men carved letters into wood, and in cities where merchants wanted books for their trade, and in "
    "monasteries where monks copied texts by hand for years, and then a new way of casting metal type "
    "made it possible to print pages quickly and cheaply, and so the printed book spread from town to "
    "town along the rivers and the roads, and soon every city of any size had a press of its own, and "
    "the printers competed with each other for the best paper and the clearest letters and the finest "
    "designs"
)


@pytest.mark.model
@pytest.mark.component
def test_long_monologue_is_committed_in_bounded_windows(tmp_path: Path) -> None:
    wav = tmp_path / "monologue.wav"
    subprocess.run(
        [tool("espeak-ng", "espeak-ng"), "-v", "en-us", "-s", "165", "-w", str(wav), TEXT], check=True
    )
    res = streamer(
        "transcribe",
        str(wav),
        "--model",
        "tiny.en",
        "--language",
        "en",
        "--format",
        "jsonl",
        "--no-progress",
        env={"STREAMER_DECODER__MAX_WINDOW": "12"},
    )
    assert res.returncode == 0, res.stderr
    finals = [json.loads(line) for line in res.stdout.splitlines()]
    for f in finals:
        print(f["utterance"], f["seq"], f["start"], f["end"], f["text"])
    assert [f["seq"] for f in finals] == list(range(1, len(finals) + 1))
    first = [f for f in finals if f["utterance"] == finals[0]["utterance"]]
    assert len(first) >= 2, "nothing was committed before the utterance ended"
    for a, b in itertools.pairwise(finals):
        assert b["start"] >= a["end"] - 0.05, "two finals cover the same audio"
    for f in finals:
        assert f["end"] - f["start"] <= 12 + 2 * 0.5 + 0.5  # max_window plus a step or two
    assert error_rate(TEXT, " ".join(f["text"] for f in finals)) < 0.2
