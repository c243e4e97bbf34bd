"""The OBS bridge's pure parts: obs-websocket v5 messages and authentication, caption state."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.events import Hello
from streamer.layout import last_lines
from streamer.obs import protocol
from streamer.obs.bridge import Backoff, follow_url
from streamer.obs.captions import CaptionState, Reconnect

from .sink_events import final, partial


def hello_event(session: str = "s1") -> Hello:
    return Hello(
        server="0.1.0", streams=["main"], model="tiny.en", language="en", task="transcribe", session=session
    )


# --- obs-websocket v5 ------------------------------------------------------------------------


def test_auth_response_follows_the_v5_recipe() -> None:
    # The steps of the obs-websocket protocol document, done by hand.
    password, salt, challenge = (
        "supersecretpassword",
        "lM1GncleQOaCu9lT1yeUZhFYnqhsLLP1G5lAGo3ixaI=",
        "+IxH4Cn",
    )
    step1 = base64.b64encode(hashlib.sha256(b"supersecretpassword" + salt.encode()).digest()).decode()
    step2 = base64.b64encode(hashlib.sha256((step1 + challenge).encode()).digest()).decode()
    assert protocol.auth_response(password, salt, challenge) == step2
    assert protocol.auth_response("other", salt, challenge) != step2


@settings(deadline=None)  # the machine is shared: wall time per example is not the point
@given(st.text(), st.text(min_size=1), st.text(min_size=1))
def test_auth_response_is_a_base64_sha256(password: str, salt: str, challenge: str) -> None:
    assert len(base64.b64decode(protocol.auth_response(password, salt, challenge), validate=True)) == 32


def test_hello_identify_and_password_required() -> None:
    raw = json.dumps(
        {
            "op": 0,
            "d": {
                "obsWebSocketVersion": "5.1.0",
                "rpcVersion": 1,
                "authentication": {"challenge": "ch", "salt": "sa"},
            },
        }
    )
    hello = protocol.parse(raw)
    assert hello == protocol.Hello("5.1.0", 1, salt="sa", challenge="ch")
    assert isinstance(hello, protocol.Hello)
    ident = json.loads(protocol.identify(hello, "pw"))
    assert ident == {
        "op": 1,
        "d": {
            "rpcVersion": 1,
            "eventSubscriptions": protocol.EVENT_SUBSCRIPTIONS,
            "authentication": protocol.auth_response("pw", "sa", "ch"),
        },
    }
    with pytest.raises(protocol.ObsAuthRequired, match="password"):
        protocol.identify(hello, None)
    open_hello = protocol.parse('{"op":0,"d":{"obsWebSocketVersion":"5.0.0","rpcVersion":1}}')
    assert isinstance(open_hello, protocol.Hello)
    assert "authentication" not in json.loads(protocol.identify(open_hello, None))["d"]


def test_parse_responses_events_and_garbage() -> None:
    resp = protocol.parse(
        '{"op":7,"d":{"requestType":"SendStreamCaption","requestId":"4",'
        '"requestStatus":{"result":false,"code":501}}}'
    )
    assert isinstance(resp, protocol.RequestResponse)
    assert not resp.ok and resp.code == protocol.STATUS_OUTPUT_NOT_RUNNING
    assert resp.error().code == 501 and "SendStreamCaption" in str(resp.error())
    ev = protocol.parse(
        '{"op":5,"d":{"eventType":"StreamStateChanged","eventIntent":64,"eventData":{"outputActive":true}}}'
    )
    assert ev == protocol.Event("StreamStateChanged", {"outputActive": True})
    assert protocol.parse('{"op":2,"d":{"negotiatedRpcVersion":1}}') == protocol.Identified(1)
    assert protocol.parse('{"op":9,"d":{"requestId":"b","results":[]}}') is None
    for bad in ("not json", "[]", '{"op":7}', '{"op":0,"d":[]}', '{"op":7,"d":{"requestType":"X"}}'):
        with pytest.raises(protocol.ObsProtocolError):
            protocol.parse(bad)


def test_request_keeps_unicode_and_close_reasons_are_readable() -> None:
    msg = json.loads(protocol.request("SetInputSettings", "7", {"inputSettings": {"text": "안녕하세요"}}))
    assert msg == {
        "op": 6,
        "d": {
            "requestType": "SetInputSettings",
            "requestId": "7",
            "requestData": {"inputSettings": {"text": "안녕하세요"}},
        },
    }
    assert protocol.close_reason(4009) == "wrong OBS WebSocket password"
    assert "4321" in protocol.close_reason(4321, "odd")
    assert protocol.CLOSE_AUTHENTICATION_FAILED in protocol.FATAL_CLOSE_CODES


def test_text_kind_choice() -> None:
    linux = ["image_source", "ffmpeg_source", "text_ft2_source_v2"]
    windows = ["text_ft2_source_v2", "text_gdiplus_v2", "image_source"]
    assert protocol.choose_text_kind(linux, windows=False) == "text_ft2_source_v2"
    assert protocol.choose_text_kind(windows, windows=True) == "text_gdiplus_v2"
    assert protocol.choose_text_kind(windows, windows=False) == "text_ft2_source_v2"
    assert protocol.choose_text_kind(["image_source"], windows=False) is None
    assert protocol.is_text_kind("text_gdiplus_v3") and not protocol.is_text_kind("image_source")


def test_new_text_source_settings_and_placement() -> None:
    ft2 = protocol.text_source_settings("text_ft2_source_v2", "hi", 48)
    assert ft2 == {
        "text": "hi",
        "font": {"face": "Sans Serif", "size": 48, "style": "", "flags": 0},
        "outline": True,
    }
    assert protocol.text_source_settings("text_gdiplus_v2", "", 30)["font"]["face"] == "Arial"
    assert (
        protocol.text_source_settings("text_ft2_source_v2", "", 30, "NanumGothic")["font"]["face"]
        == "NanumGothic"
    )
    assert protocol.bottom_center_transform(1920, 1080) == {
        "alignment": 8,
        "positionX": 960.0,
        "positionY": 1026.0,
    }


# --- following the daemon ------------------------------------------------------------------


def test_follow_url_sets_stream_since_and_token() -> None:
    url = follow_url("ws://127.0.0.1:8765/ws?partials=true&since=3", "room 2", 41, "t&k")
    assert url == "ws://127.0.0.1:8765/ws?partials=true&stream=room+2&since=41&token=t%26k"
    assert follow_url("ws://h:1/ws", None, None, None) == "ws://h:1/ws"


def test_backoff_doubles_up_to_the_limit_and_resets() -> None:
    b = Backoff(0.5, 4.0)
    delays = [b.next() for _ in range(6)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert b.current == 4.0
    b.reset()
    assert b.current == 0.5


def show(text: str) -> str:
    return "\n".join(last_lines(text, 42, 2))


def test_finals_append_and_partials_replace_the_tail() -> None:
    s = CaptionState()
    assert s.on_hello(hello_event()) is None
    assert s.query_since() == 0
    s.on_replay_done(0)
    assert s.on_event(partial(1, 0, "Hello there")) == (True, None)
    assert s.display() == "Hello there"
    assert s.on_event(partial(1, 1, "Hello there")) == (False, None)  # unchanged text
    changed, live = s.on_event(final(1, "Hello there, how are you"))
    assert changed and live is not None and live.seq == 1
    assert s.on_event(partial(1, 2, "stale preview of final 1")) == (False, None)
    s.on_event(partial(2, 3, "doing today"))
    assert s.display() == show("Hello there, how are you doing today")
    s.on_event(final(2, "doing today?"))  # the tail settles; no words twice
    assert s.running_text() == "Hello there, how are you doing today?"
    assert s.on_event(final(2, "doing today?")) == (False, None)  # a duplicate
    assert s.query_since() == 2


def test_replayed_finals_are_shown_but_not_captioned_again() -> None:
    s = CaptionState()
    s.on_hello(hello_event())
    assert s.on_event(final(1, "old one")) == (True, None)
    assert s.on_event(final(2, "old two"))[1] is None
    s.on_replay_done(2)
    assert s.display() == "old one old two"
    live = s.on_event(final(3, "new three"))[1]
    assert live is not None and live.seq == 3


def test_a_new_daemon_session_starts_over() -> None:
    s = CaptionState()
    s.on_hello(hello_event("first"))
    s.on_replay_done(0)
    for i in range(1, 6):
        s.on_event(final(i))
    assert s.query_since() == 5
    assert s.on_hello(hello_event("first")) is None  # a reconnect to the same daemon
    restart = s.on_hello(hello_event("second"))
    assert isinstance(restart, Reconnect) and "second" in restart.reason
    assert s.query_since() is None  # ask the new daemon for its recent finals
    assert s.on_hello(hello_event("second")) is None
    s.on_replay_done(0)
    assert s.on_event(final(1, "after the restart"))[1] is not None
    assert s.running_text().endswith("final number 5 after the restart")


def test_korean_captions_are_laid_out() -> None:
    s = CaptionState(max_chars=42, max_lines=2)
    s.on_hello(hello_event())
    s.on_replay_done(0)
    s.on_event(final(1, "안녕하세요. 오늘 회의를 시작하겠습니다."))
    s.on_event(partial(2, 0, "첫 번째 안건은 예산입니다"))
    text = s.display()
    assert text == show("안녕하세요. 오늘 회의를 시작하겠습니다. 첫 번째 안건은 예산입니다")
    assert text.endswith("예산입니다") and len(text.splitlines()) <= 2


words = st.sampled_from(["the", "quick", "brown", "fox", "회의를", "시작", "jumps,", "over."])
phrase = st.lists(words, min_size=0, max_size=6).map(" ".join)


@settings(deadline=None)
@given(st.lists(st.tuples(st.booleans(), phrase), max_size=30))
def test_display_is_finals_then_the_newest_tail(steps: list[tuple[bool, str]]) -> None:
    """Any protocol-2 sequence: the text is the finals in order, then the newest partial's tail."""
    s = CaptionState(max_chars=20, max_lines=3)
    s.on_hello(hello_event())
    s.on_replay_done(0)
    seq, finals, tail = 1, [], ""
    for rev, (is_final, text) in enumerate(steps):
        if is_final:
            s.on_event(final(seq, text))
            finals.append(text)
            seq, tail = seq + 1, ""
        else:
            s.on_event(partial(seq, rev, text))
            tail = text
    expected = " ".join(t for t in [*finals, tail] if t.strip())
    assert s.running_text() == expected
    assert s.display() == "\n".join(last_lines(expected, 20, 3))


cjk_words = st.sampled_from(
    ["the", "quick,", "brown", "회의를", "시작합니다.", "我们今天开会。", "「重要」", "and", "over"]
)


@settings(deadline=None)
@given(st.lists(st.lists(cjk_words, min_size=1, max_size=8).map(" ".join), max_size=40), phrase)
def test_forgetting_old_text_never_reflows_the_lines_shown(finals: list[str], tail: str) -> None:
    """With a tiny memory the shown lines are those of the whole text: cuts fall at line starts."""
    s = CaptionState(max_chars=20, max_lines=2, keep_chars=60)
    s.on_hello(hello_event())
    s.on_replay_done(0)
    for i, text in enumerate(finals, start=1):
        s.on_event(final(i, text))
    s.on_event(partial(len(finals) + 1, 0, tail))
    whole = " ".join([*finals, tail]).strip()
    assert s.display() == "\n".join(last_lines(whole, 20, 2))
    settled = s.running_text()[: len(s.running_text()) - len(tail)]
    assert len(settled) <= 60 + 80  # bounded: the memory limit plus at most one final's words
