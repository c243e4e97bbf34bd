"""obs-websocket v5 (built into OBS Studio 28+) without I/O: messages in, messages out.

The wire format is JSON text frames `{"op": N, "d": {...}}` on the `obswebsocket.json`
subprotocol. A session is: server Hello (op 0, with an authentication challenge when a password
is set) -> client Identify (op 1) -> server Identified (op 2); then Requests (op 6) answered by
RequestResponses (op 7) with the same `requestId`, and Events (op 5) for the subscribed categories.
A failed authentication is a close with code 4009. Reference: obs-websocket's docs/generated/protocol.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

SUBPROTOCOL = "obswebsocket.json"
RPC_VERSION = 1

OP_HELLO = 0
OP_IDENTIFY = 1
OP_IDENTIFIED = 2
OP_EVENT = 5
OP_REQUEST = 6
OP_REQUEST_RESPONSE = 7

# EventSubscription bits we listen to: General (ExitStarted), Inputs (InputRemoved,
# InputNameChanged) and Outputs (StreamStateChanged).
EVENTS_GENERAL = 1 << 0
EVENTS_INPUTS = 1 << 3
EVENTS_OUTPUTS = 1 << 6
EVENT_SUBSCRIPTIONS = EVENTS_GENERAL | EVENTS_INPUTS | EVENTS_OUTPUTS

# RequestStatus codes the bridge acts on.
STATUS_SUCCESS = 100
STATUS_NOT_READY = 207
STATUS_OUTPUT_NOT_RUNNING = 501
STATUS_RESOURCE_NOT_FOUND = 600
STATUS_RESOURCE_ALREADY_EXISTS = 601

# WebSocketCloseCode values with a meaning for the user.
CLOSE_AUTHENTICATION_FAILED = 4009
CLOSE_UNSUPPORTED_RPC_VERSION = 4010
CLOSE_SESSION_INVALIDATED = 4011

_CLOSE_REASONS = {
    4002: "obs-websocket could not decode a message from the bridge",
    4003: "obs-websocket expected Identify first",
    4007: "obs-websocket says the bridge is not identified",
    CLOSE_AUTHENTICATION_FAILED: "wrong OBS WebSocket password",
    CLOSE_UNSUPPORTED_RPC_VERSION: "this obs-websocket does not speak RPC version 1 (OBS 28 or newer needed)",
    CLOSE_SESSION_INVALIDATED: "OBS ended the session (WebSocket server settings changed)",
}

# Close codes after which reconnecting cannot help: the user must change something.
FATAL_CLOSE_CODES = frozenset({CLOSE_AUTHENTICATION_FAILED, CLOSE_UNSUPPORTED_RPC_VERSION})


class ObsProtocolError(Exception):
    """A message that is not obs-websocket v5 (bad JSON, unknown shape)."""


class ObsAuthRequired(Exception):
    """OBS asks for a password and none was given."""


class ObsRequestError(Exception):
    """A request answered with a failure status (`code`, OBS's `comment`)."""

    def __init__(self, request_type: str, code: int, comment: str | None) -> None:
        self.request_type = request_type
        self.code = code
        self.comment = comment or ""
        super().__init__(f"{request_type} failed with status {code}" + (f": {comment}" if comment else ""))


def close_reason(code: int | None, reason: str = "") -> str:
    """The user-facing meaning of an obs-websocket close code."""
    known = _CLOSE_REASONS.get(code or 0)
    if known:
        return known
    return f"OBS closed the connection (code {code}{': ' + reason if reason else ''})"


def auth_response(password: str, salt: str, challenge: str) -> str:
    """base64(sha256(base64(sha256(password + salt)) + challenge)), as obs-websocket v5 defines it."""
    secret = base64.b64encode(hashlib.sha256((password + salt).encode("utf-8")).digest())
    return base64.b64encode(hashlib.sha256(secret + challenge.encode("utf-8")).digest()).decode("ascii")


@dataclass(frozen=True)
class Hello:
    obs_websocket_version: str
    rpc_version: int
    salt: str | None = None
    challenge: str | None = None


@dataclass(frozen=True)
class Identified:
    rpc_version: int


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestResponse:
    request_type: str
    request_id: str
    code: int
    comment: str | None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == STATUS_SUCCESS

    def error(self) -> ObsRequestError:
        return ObsRequestError(self.request_type, self.code, self.comment)


Message = Hello | Identified | Event | RequestResponse


def parse(text: str | bytes) -> Message | None:
    """One server message; None for op codes the bridge does not use (batch responses)."""
    try:
        doc = json.loads(text)
        op = doc["op"]
        d = doc["d"]
        if not isinstance(d, dict):
            raise TypeError("d is not an object")
        if op == OP_HELLO:
            auth = d.get("authentication") or {}
            return Hello(
                obs_websocket_version=str(d.get("obsWebSocketVersion", "")),
                rpc_version=int(d["rpcVersion"]),
                salt=auth.get("salt"),
                challenge=auth.get("challenge"),
            )
        if op == OP_IDENTIFIED:
            return Identified(rpc_version=int(d["negotiatedRpcVersion"]))
        if op == OP_EVENT:
            return Event(type=str(d["eventType"]), data=d.get("eventData") or {})
        if op == OP_REQUEST_RESPONSE:
            status = d["requestStatus"]
            return RequestResponse(
                request_type=str(d["requestType"]),
                request_id=str(d["requestId"]),
                code=int(status["code"]),
                comment=status.get("comment"),
                data=d.get("responseData") or {},
            )
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise ObsProtocolError(f"not an obs-websocket v5 message ({e}): {str(text)[:120]!r}") from None


def identify(hello: Hello, password: str | None, events: int = EVENT_SUBSCRIPTIONS) -> str:
    """The Identify message answering `hello` (raises ObsAuthRequired when a password is needed)."""
    d: dict[str, Any] = {"rpcVersion": RPC_VERSION, "eventSubscriptions": events}
    if hello.challenge is not None and hello.salt is not None:
        if not password:
            raise ObsAuthRequired(
                "OBS WebSocket asks for a password: pass --obs-password or set obs.password"
            )
        d["authentication"] = auth_response(password, hello.salt, hello.challenge)
    return json.dumps({"op": OP_IDENTIFY, "d": d})


def request(request_type: str, request_id: str, data: dict[str, Any] | None = None) -> str:
    d: dict[str, Any] = {"requestType": request_type, "requestId": request_id}
    if data is not None:
        d["requestData"] = data
    return json.dumps({"op": OP_REQUEST, "d": d}, ensure_ascii=False)


# Text input kinds, preferred first. GDI+ is the native text source on Windows; FreeType 2 is
# the one on Linux and macOS (and also exists on Windows).
TEXT_KINDS_WINDOWS = (
    "text_gdiplus_v3",
    "text_gdiplus_v2",
    "text_gdiplus",
    "text_ft2_source_v2",
    "text_ft2_source",
)
TEXT_KINDS_OTHER = ("text_ft2_source_v2", "text_ft2_source", "text_gdiplus_v3", "text_gdiplus_v2")


def choose_text_kind(available: list[str], windows: bool) -> str | None:
    """The text input kind to create among those OBS offers (GetInputKindList), or None."""
    for kind in TEXT_KINDS_WINDOWS if windows else TEXT_KINDS_OTHER:
        if kind in available:
            return kind
    return None


def is_text_kind(kind: str) -> bool:
    return kind.startswith(("text_ft2_source", "text_gdiplus"))


def text_source_settings(kind: str, text: str, font_size: int, face: str | None = None) -> dict[str, Any]:
    """Settings of a new caption Text source: white outlined text of `font_size` points.

    OBS's text sources do no font fallback: Korean or Chinese captions need a `face` that has
    those glyphs (e.g. "Noto Sans CJK KR", "NanumGothic", "Malgun Gothic").
    """
    default_face = "Sans Serif" if kind.startswith("text_ft2") else "Arial"
    font = {"face": face or default_face, "size": font_size, "style": "", "flags": 0}
    return {"text": text, "font": font, "outline": True}


# obs_align bits: centre is 0, then LEFT 1, RIGHT 2, TOP 4, BOTTOM 8.
ALIGN_BOTTOM_CENTER = 8


def bottom_center_transform(canvas_width: int, canvas_height: int, margin: float = 0.05) -> dict[str, Any]:
    """Scene item transform placing a new caption source at the bottom centre of the canvas."""
    return {
        "alignment": ALIGN_BOTTOM_CENTER,
        "positionX": canvas_width / 2,
        "positionY": canvas_height * (1 - margin),
    }
