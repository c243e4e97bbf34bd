"""The web pages (clients/web) in real headless Chromium against the real caption server.

Most tests drive the pages from the real `streamer.sinks` server on a Bus that the test publishes
scripted protocol-2 events to (fast, deterministic). The end-to-end test runs the real daemon
(`streamer run`, tiny.en, recorded speech at 1x), kills it and starts it again.

Screenshots go to $STREAMER_SCREENSHOTS (docs/img to refresh the README's) or the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamer.layout import roll_lines, wrap

from .helpers_mosquitto import free_port
from .web_harness import Script, ScriptedServer, chromium, screenshot_dir

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.component]

TIMEOUT = 10_000  # ms, for waits on DOM content


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, errors


def wait_live(pg: Any) -> None:
    pg.wait_for_selector("#state.live", timeout=TIMEOUT)


def finals_in_dom(pg: Any, selector: str = ".final") -> list[dict[str, str]]:
    return pg.eval_on_selector_all(
        selector,
        "els => els.map(e => ({seq: e.dataset.seq, session: e.dataset.session, text: e.textContent}))",
    )


# --- caption page ----------------------------------------------------------------------------------


def test_caption_page_joins_finals_of_an_utterance_and_shows_the_live_tail(
    server: ScriptedServer, page: Any, tmp_path: Path
) -> None:
    s = Script()
    page.goto(server.url + "/")
    wait_live(page)
    server.publish(s.partial("Good evening and wel", "Good evening"))
    page.wait_for_selector(".live .tail:text-is(' and wel')", timeout=TIMEOUT)
    assert page.text_content(".live .stable") == "Good evening"
    # The settled part and the changing tail look different.
    stable_style = page.eval_on_selector(".live .stable", "e => getComputedStyle(e).fontStyle")
    tail_style = page.eval_on_selector(".live .tail", "e => getComputedStyle(e).fontStyle")
    assert (stable_style, tail_style) == ("normal", "italic")

    server.publish(
        s.final("Good evening and welcome", last=False),
        s.partial("to the council", "to the"),
        s.final("to the council meeting.", last=True),
        s.partial("Tonight we", ""),
    )
    page.wait_for_selector("#finals .live:has-text('Tonight we')", timeout=TIMEOUT)
    paras = page.eval_on_selector_all(".para:not(.pending)", "els => els.map(e => e.textContent)")
    assert len(paras) == 1 and paras[0].endswith("Good evening and welcome to the council meeting.")
    assert page.text_content(".para .lang") == "en"
    assert page.text_content(".para time") == "0:01"

    k = Script(lang="ko")
    k.seq, k.utterance, k.t = s.seq, s.utterance, s.t
    server.publish(k.final("오늘은 날씨가 정말 좋습니다.", last=True))
    page.wait_for_selector(".final:text-is('오늘은 날씨가 정말 좋습니다.')", timeout=TIMEOUT)
    assert page.eval_on_selector_all(".para .lang", "els => els.map(e => e.textContent)") == ["en", "ko"]
    assert [f["seq"] for f in finals_in_dom(page)] == ["1", "2", "3"]
    assert (
        page.eval_on_selector_all("#finals .live", "els => els.length") == 0
    )  # the tail went with its final
    page.screenshot(path=str(screenshot_dir(tmp_path) / "caption-page.png"))


def test_caption_page_resumes_with_since_after_a_dropped_connection(
    server: ScriptedServer, page: Any
) -> None:
    s = Script()
    page.goto(server.url + "/")
    wait_live(page)
    server.publish(*(s.final(f"Sentence number {i}.") for i in range(1, 4)))
    page.wait_for_selector(".final:text-is('Sentence number 3.')", timeout=TIMEOUT)
    # Drop the connection from the page side; finals 4-6 are published while it is away.
    page.evaluate("captionClient.attempt = 2; captionClient.ws.close()")
    page.wait_for_selector("#state:not(.live)", timeout=TIMEOUT)
    server.publish(*(s.final(f"Sentence number {i}.") for i in range(4, 7)))
    page.wait_for_selector(".final:text-is('Sentence number 6.')", timeout=TIMEOUT)
    wait_live(page)
    server.publish(s.final("Sentence number 7."))
    page.wait_for_selector(".final:text-is('Sentence number 7.')", timeout=TIMEOUT)
    texts = [f["text"] for f in finals_in_dom(page)]
    assert texts == [f"Sentence number {i}." for i in range(1, 8)]  # none missed, none twice
    assert page.evaluate("captionClient.connections") == 2


def test_caption_page_says_when_finals_left_the_history_window(browser: Any) -> None:
    srv = ScriptedServer(history_finals=2)
    context = browser.new_context()
    try:
        page = context.new_page()
        s = Script()
        page.goto(srv.url + "/")
        wait_live(page)
        srv.publish(s.final("One."))
        page.wait_for_selector(".final:text-is('One.')", timeout=TIMEOUT)
        page.evaluate("captionClient.attempt = 2; captionClient.ws.close()")
        page.wait_for_selector("#state:not(.live)", timeout=TIMEOUT)
        srv.publish(*(s.final(t) for t in ("Two.", "Three.", "Four.", "Five.")))
        page.wait_for_selector(".final:text-is('Five.')", timeout=TIMEOUT)
        # The server kept only the last 2 finals: the page says which ones it could not show.
        assert page.is_visible("#gap")
        assert page.text_content("#gap").startswith("Finals 2–3 are no longer kept")
        assert [f["text"] for f in finals_in_dom(page)] == ["One.", "Four.", "Five."]
    finally:
        context.close()
        srv.close()


def test_caption_state_rules_in_the_browser(server: ScriptedServer, page: Any) -> None:
    """captions.js CaptionState (no DOM, no socket): dedupe, stale partials, paragraphs, sessions."""
    page.goto(server.url + "/overlay")
    got = page.evaluate(
        """async () => {
            const { CaptionState, paragraphText } = await import('/captions.js');
            const st = new CaptionState();
            const f = (seq, utterance, text, last) => ({type: 'final', stream: 'main', seq, utterance, text,
                                                        last, start: seq, end: seq + 1, lang: 'en'});
            const p = (seq, utterance, text, stable) => ({type: 'partial', stream: 'main', seq, utterance,
                                                          rev: 1, text, stable, start: seq, end: seq + 1});
            const out = {};
            out.partialOk = st.partial('A', p(1, 0, 'hello wor', 'hello'));
            st.final('A', f(1, 0, 'hello world,', false));
            out.liveAfterFinal = st.live;
            out.stalePartial = st.partial('A', p(1, 0, 'hello world, and', ''));
            out.tailPartial = st.partial('A', p(2, 0, 'and more', 'and'));
            st.final('A', f(2, 0, 'and more.', true));
            out.duplicate = st.final('A', f(2, 0, 'and more.', true));
            st.final('A', f(3, 1, 'Next one.', true));
            out.sameSeqNewSession = st.final('B', f(1, 0, 'After restart.', true)) !== null;
            out.paragraphs = st.paragraphs.map(paragraphText);
            out.closed = st.paragraphs.map(x => x.closed);
            out.duplicates = st.duplicates;
            st.forgetSessions('B');
            out.keys = [...st.lastSeq.keys()];
            out.trimmed = st.trim(2).map(paragraphText);
            return out;
        }"""
    )
    assert got["partialOk"] is True and got["liveAfterFinal"] is None
    assert got["stalePartial"] is False and got["tailPartial"] is True
    assert got["duplicate"] is None and got["duplicates"] == 1
    assert got["sameSeqNewSession"] is True
    assert got["paragraphs"] == ["hello world, and more.", "Next one.", "After restart."]
    assert got["closed"] == [True, True, True]
    assert got["keys"] == ["B|main"]
    assert got["trimmed"] == ["hello world, and more."]


def test_caption_page_search_copy_download_and_scroll(
    server: ScriptedServer, browser: Any, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 500})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    s = Script()
    page.goto(server.url + "/")
    wait_live(page)
    lines = [
        f"Item {i} of the agenda is about {'the budget' if i == 7 else 'parking'}." for i in range(1, 31)
    ]
    server.publish(*(s.final(t) for t in lines))
    page.wait_for_selector(".final:text-is('Item 30 of the agenda is about parking.')", timeout=TIMEOUT)

    # Auto-scroll followed the live end; scrolling up pauses it and offers a way back.
    page.wait_for_function(
        "window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40"
    )
    assert page.is_hidden("#jump")
    page.mouse.wheel(0, -2000)
    page.wait_for_selector("#jump", state="visible", timeout=TIMEOUT)
    y = page.evaluate("window.scrollY")
    server.publish(s.final("Item 31 arrives while the reader looks back."))
    page.wait_for_selector(".final:text-is('Item 31 arrives while the reader looks back.')", timeout=TIMEOUT)
    assert page.evaluate("window.scrollY") == y  # did not jump away from what the user reads
    page.click("#jump")
    page.wait_for_function(
        "window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40"
    )
    assert page.is_hidden("#jump")

    page.fill("#search", "budget")
    page.wait_for_selector("#matches:text-is('1 match')", timeout=TIMEOUT)
    visible = page.eval_on_selector_all(".para:not(.nomatch)", "els => els.map(e => e.textContent)")
    assert len(visible) == 1 and "Item 7 of the agenda is about the budget." in visible[0]
    page.fill("#search", "")
    assert page.eval_on_selector_all(".para.nomatch", "els => els.length") == 0

    page.click("#copy")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.splitlines()[0].endswith("Item 1 of the agenda is about parking.")
    assert len(copied.splitlines()) == 31

    # Downloads come from the daemon's /transcript route (SRT/VTT laid out by streamer/layout.py).
    hrefs = {ext: page.get_attribute(f"#dl-{ext}", "href") for ext in ("txt", "srt", "vtt")}
    assert hrefs == {ext: f"/transcript/main.{ext}" for ext in ("txt", "srt", "vtt")}
    with page.expect_download() as dl:
        page.click("#dl-srt")
    srt = Path(dl.value.path()).read_text(encoding="utf-8")
    assert srt.startswith("1\n00:00:01,000 --> ") and "\nItem 1 of the agenda is about parking.\n" in srt
    vtt = page.evaluate("fetch('/transcript/main.vtt').then(r => r.text())")
    assert vtt.startswith("WEBVTT\n\n1\n00:00:01.000 --> ")
    context.close()


def test_stream_picker_token_and_refusal(browser: Any) -> None:
    srv = ScriptedServer(streams=("hall", "room2"), token="s3cret")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(srv.url + "/")  # no token
        page.wait_for_selector("#state.refused", timeout=TIMEOUT)
        assert "access refused: check the token" in page.text_content("#state")

        page.goto(srv.url + "/?token=s3cret&stream=room2")
        wait_live(page)
        assert page.is_visible("#picker")
        options = page.eval_on_selector_all("#streams option", "els => els.map(e => [e.value, e.selected])")
        assert options == [["hall", False], ["room2", True]]
        assert page.get_attribute("#dl-vtt", "href") == "/transcript/room2.vtt?token=s3cret"
        srv.publish(Script("hall").final("Only in the hall."), Script("room2").final("Only in room two."))
        page.wait_for_selector(".final:text-is('Only in room two.')", timeout=TIMEOUT)
        assert [f["text"] for f in finals_in_dom(page)] == ["Only in room two."]
        page.select_option("#streams", "hall")  # the picker reloads the page on the other stream
        page.wait_for_selector(".final:text-is('Only in the hall.')", timeout=TIMEOUT)
        assert "token=s3cret" in page.url and "stream=hall" in page.url
    finally:
        context.close()
        srv.close()


# --- layout.js mirrors layout.py ----------------------------------------------------------------

SAMPLES = [
    "I went to the store yesterday and bought some apples and pears for dinner.",
    "Hello everyone, and welcome to the show. Today we are going to talk about the history of the "
    "printing press in Europe and how it changed the world.",
    "Mr. Smith went to Washington, where he met the senator who had written to him.",
    "오늘은 날씨가 정말 좋아서 친구들과 함께 공원에 가서 산책을 하고 맛있는 점심을 먹었습니다.",
    "我们今天要讨论的是印刷术在欧洲的历史，以及它如何改变了世界。这是一个非常有趣的话题。",
    "The word Supercalifragilisticexpialidociousandevenlongerwords does not fit.",
]


def test_layout_js_gives_the_same_lines_as_layout_py(server: ScriptedServer, page: Any) -> None:
    page.goto(server.url + "/overlay")
    got = page.evaluate(
        """async (samples) => {
            const m = await import('/layout.js');
            return samples.map(t => ({wrap: m.wrap(t), wrap30: m.wrap(t, 30, 3), roll: m.rollLines(t),
                                      roll20: m.rollLines(t, 20), width: m.textWidth(t)}));
        }""",
        SAMPLES,
    )
    from streamer.layout import text_width

    for text, js in zip(SAMPLES, got, strict=True):
        assert js["wrap"] == wrap(text), text
        assert js["wrap30"] == wrap(text, 30, 3), text
        assert js["roll"] == roll_lines(text), text
        assert js["roll20"] == roll_lines(text, 20), text
        assert js["width"] == text_width(text), text


# --- overlay ----------------------------------------------------------------------------------------


def test_overlay_is_transparent_and_takes_its_style_from_the_url(
    server: ScriptedServer, page: Any, tmp_path: Path
) -> None:
    s = Script()
    query = (
        "font=DejaVu%20Serif&size=50&color=ff0000&outline=2&outlinecolor=000000&bg=0000ff&bgopacity=0.5"
        "&position=top&align=left&lines=3&chars=30&margin=20&fade=2"
    )
    page.goto(server.url + "/overlay?" + query)
    page.wait_for_function("document.documentElement.dataset.state === 'live'", timeout=TIMEOUT)
    server.publish(
        s.final("Good evening and welcome to the city council meeting.", last=True),
        s.final("Tonight we will discuss the budget for the new community centre,", last=False),
        s.partial("and the plans", "and"),
    )
    page.wait_for_selector(".line:has-text('and the plans')", timeout=TIMEOUT)
    lines = page.eval_on_selector_all(".line", "els => els.map(e => e.textContent)")
    assert (
        lines
        == roll_lines(
            "Good evening and welcome to the city council meeting. Tonight we will discuss the budget "
            "for the new community centre, and the plans",
            30,
        )[-3:]
    )
    assert all(len(line) <= 30 for line in lines)

    # The partial updates the last line in place (same element, new text).
    page.evaluate("window.lastLine = document.querySelector('.line:last-child span')")
    server.publish(s.partial("and the plans for parking", "and the plans"))
    page.wait_for_function(
        "window.lastLine.isConnected && window.lastLine.textContent.endsWith('plans for parking')",
        timeout=TIMEOUT,
    )

    style = page.evaluate(
        """() => {
            const box = document.getElementById('captions');
            const span = document.querySelector('.line span');
            const cs = getComputedStyle(box), ss = getComputedStyle(span);
            return {html: getComputedStyle(document.documentElement).backgroundColor,
                    body: getComputedStyle(document.body).backgroundColor,
                    font: cs.fontFamily, size: cs.fontSize, color: cs.color, shadow: cs.textShadow,
                    align: cs.textAlign, top: box.getBoundingClientRect().top, bg: ss.backgroundColor};
        }"""
    )
    assert style["html"] == "rgba(0, 0, 0, 0)" and style["body"] == "rgba(0, 0, 0, 0)"
    assert style["font"].startswith('"DejaVu Serif"') or style["font"].startswith("DejaVu Serif")
    assert style["size"] == "50px" and style["color"] == "rgb(255, 0, 0)"
    assert "rgb(0, 0, 0)" in style["shadow"]
    assert style["align"] == "left" and style["top"] == 20
    assert style["bg"] in ("rgba(0, 0, 255, 0.5)", "color(srgb 0 0 1 / 0.5)")

    # A real pixel check: outside the text the rendered page is fully transparent.
    png = tmp_path / "overlay-style.png"
    page.screenshot(path=str(png), omit_background=True)
    from PIL import Image

    with Image.open(png) as img:
        rgba = img.convert("RGBA")
        assert rgba.getpixel((5, rgba.height - 5))[3] == 0
        assert rgba.getpixel((rgba.width // 2, rgba.height // 2))[3] == 0
        assert any(rgba.getpixel((x, 45))[3] > 0 for x in range(20, 400))  # the caption itself is drawn

    # Old lines fade after `fade` seconds without new words.
    page.wait_for_function(
        """() => {
            const lines = [...document.querySelectorAll('.line')];
            return lines.length > 0 && lines.every(l => l.classList.contains('faded')
                                                     && getComputedStyle(l).opacity === '0');
        }""",
        timeout=TIMEOUT,
    )


PRESET_TEXT = [
    ("Good evening and welcome to the city council meeting.", True),
    ("Tonight we will discuss the budget for the new community centre,", False),
]


@pytest.mark.parametrize("preset", ["classic", "broadcast", "minimal", "boxed"])
def test_overlay_presets(server: ScriptedServer, page: Any, tmp_path: Path, preset: str) -> None:
    s = Script()
    page.goto(server.url + f"/overlay?preset={preset}&fade=0")
    page.wait_for_function("document.documentElement.dataset.state === 'live'", timeout=TIMEOUT)
    server.publish(*(s.final(t, last=last) for t, last in PRESET_TEXT), s.partial("and the plans for", "and"))
    page.wait_for_selector(".line:has-text('and the plans for')", timeout=TIMEOUT)
    opts = page.evaluate("window.overlayOptions")
    assert opts["preset"] == preset
    # Shown over a stand-in for the video so the README screenshot shows what a viewer sees.
    page.add_style_tag(content="html { background: linear-gradient(160deg, #3d5a73, #8a6d4f 60%, #2d3b2a) }")
    page.screenshot(path=str(screenshot_dir(tmp_path) / f"overlay-{preset}.png"))


# --- display ------------------------------------------------------------------------------------


def test_display_shows_last_lines_bounded_and_pauses_calmly(browser: Any, tmp_path: Path) -> None:
    srv = ScriptedServer()
    port = srv.port
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    s = Script()
    try:
        page.goto(srv.url + "/display?room=Council%20Chamber&keep=5")
        page.wait_for_selector("#room:text-is('Council Chamber')", timeout=TIMEOUT)
        assert page.text_content("#clock")
        texts = [f"This is sentence number {i} of the meeting." for i in range(1, 13)]
        srv.publish(*(s.final(t) for t in texts), s.partial("And now the next", "And now"))
        page.wait_for_selector("#captions .live:text-is('And now the next')", timeout=TIMEOUT)
        paras = page.eval_on_selector_all("#captions p", "els => els.map(e => e.textContent)")
        assert len(paras) == 6 and paras[:5] == texts[-5:]  # only the newest `keep` stay in the DOM
        size = page.eval_on_selector("#captions", "e => parseFloat(getComputedStyle(e).fontSize)")
        assert size >= 0.06 * 720  # very large: 7% of the screen height by default
        colours = page.evaluate(
            "[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]"
        )
        assert colours == ["rgb(0, 0, 0)", "rgb(255, 255, 255)"]
        assert not page.evaluate("document.body.classList.contains('paused')")
        page.screenshot(path=str(screenshot_dir(tmp_path) / "display-dark.png"))

        srv.close()  # the daemon goes away: calm "paused" state, text dimmed, not removed
        page.wait_for_selector("body.paused", timeout=TIMEOUT)
        page.wait_for_function("getComputedStyle(document.getElementById('paused')).opacity === '1'")
        assert "paused" in page.text_content("#paused")
        assert len(page.eval_on_selector_all("#captions .final", "els => els")) == 5
        page.screenshot(path=str(screenshot_dir(tmp_path) / "display-paused.png"))

        srv = ScriptedServer(port=port)  # back on the same port (the same session goes on)
        page.wait_for_selector("body:not(.paused)", timeout=30_000)
        srv.publish(s.final("We are back after the interruption."))
        page.wait_for_selector(".final:text-is('We are back after the interruption.')", timeout=TIMEOUT)

        light = context.new_page()
        light.goto(srv.url + "/display?theme=light&room=Room%20204")
        light.wait_for_selector("#room:text-is('Room 204')", timeout=TIMEOUT)
        srv.publish(s.final("The light theme is for bright rooms."), s.partial("with daylight", "with"))
        light.wait_for_selector("#captions .live:text-is('with daylight')", timeout=TIMEOUT)
        colours = light.evaluate(
            "[getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]"
        )
        assert colours == ["rgb(255, 255, 255)", "rgb(0, 0, 0)"]
        light.screenshot(path=str(screenshot_dir(tmp_path) / "display-light.png"))
    finally:
        context.close()
        srv.close()


# --- end to end: the real daemon, killed and started again ------------------------------------------

CLIP = "en/librispeech_2412-153948-0000.flac"  # 11.7 s, three sentences


class Daemon:
    """`streamer run` on a recorded file at 1x, with transcript files (the finals it sent)."""

    def __init__(self, clip: Path, port: int, tx: Path, log: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("STREAMER_CONFIG", None)
        self.tx = tx
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "run", "--source", f"file:{clip}", "--model", "tiny.en",
             "--language", "en", "--port", str(port), "--transcripts", str(tx)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip

    def finals(self) -> list[dict[str, Any]]:
        """Every final this daemon run sent, from its JSONL transcript (flushed per final)."""
        files = sorted(self.tx.glob("*.jsonl"))
        return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.log.close()


@pytest.mark.model
def test_pages_follow_the_real_daemon_across_a_restart(browser: Any, audio_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    first = Daemon(audio_dir / CLIP, port, tmp_path / "tx1", log)
    second: Daemon | None = None
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        page = context.new_page()
        display = context.new_page()
        # Record, in the page itself, every live partial the DOM showed (they come and go).
        page.add_init_script(
            """new MutationObserver(() => {
                 const live = document.querySelector('#finals .live');
                 if (!live || !live.textContent.trim()) return;
                 (window.partialsSeen ||= new Set()).add(live.textContent);
               }).observe(document, {subtree: true, childList: true, characterData: true});"""
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:  # the model loads before the port opens
            try:
                page.goto(url + "/", timeout=2000)
                break
            except Exception:
                if first.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("daemon did not start: " + log.read_text()) from None
                time.sleep(0.3)
        display.goto(url + "/display")
        page.wait_for_selector("#finals .final", timeout=60_000)  # a partial first, then this final
        partials = page.evaluate("[...(window.partialsSeen || [])]")
        assert partials, "no partial was shown before the first final"
        first_text = page.text_content("#finals .final")
        assert first_text and "reader" in first_text.lower()
        display.wait_for_selector(f"#captions .final:text-is({json.dumps(first_text)})", timeout=TIMEOUT)

        first.stop()  # kill -9 mid-stream
        page.wait_for_selector("#state.reconnecting, #state.connecting", timeout=TIMEOUT)
        display.wait_for_selector("body.paused", timeout=TIMEOUT)
        sent_before = first.finals()
        shown_before = finals_in_dom(page)

        second = Daemon(audio_dir / CLIP, port, tmp_path / "tx2", log)
        assert second.proc.wait(120) == 0, log.read_text()  # the whole file, then a clean exit
        sent_after = second.finals()
        assert sent_after, log.read_text()
        last_text = sent_after[-1]["text"].strip()
        page.wait_for_selector(f"#finals .final:text-is({json.dumps(last_text)})", timeout=TIMEOUT)
        display.wait_for_selector(f"#captions .final:text-is({json.dumps(last_text)})", timeout=TIMEOUT)

        shown = finals_in_dom(page)
        sessions = list(dict.fromkeys(f["session"] for f in shown))
        assert len(sessions) == 2, shown  # the page saw both daemon runs
        keys = [(f["session"], f["seq"]) for f in shown]
        assert len(keys) == len(set(keys)), "a final was shown twice"
        before = [f for f in shown if f["session"] == sessions[0]]
        after = [f for f in shown if f["session"] == sessions[1]]
        assert before == shown_before
        # Everything the killed daemon sent while the page was connected, in order, from seq 1.
        assert [f["text"] for f in before] == [f["text"].strip() for f in sent_before[: len(before)]]
        assert [int(f["seq"]) for f in before] == list(range(1, len(before) + 1))
        # After the restart: exactly the finals the new daemon sent, none missed, none doubled.
        assert [(int(f["seq"]), f["text"]) for f in after] == [
            (f["seq"], f["text"].strip()) for f in sent_after if f["text"].strip()
        ]
        assert page.locator("hr.break").count() == 1  # the restart is marked between the sessions
        # The display shows the last lines of the new session.
        assert last_text in display.text_content("#captions")
        page.screenshot(path=str(screenshot_dir(tmp_path) / "caption-page-daemon.png"))
    finally:
        context.close()
        first.stop()
        if second is not None:
            second.stop()
