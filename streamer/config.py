"""The one configuration object.

Precedence (highest first): CLI flags, `STREAMER_*` environment variables (nested keys with `__`,
e.g. `STREAMER_VAD__END_SILENCE=0.4`), the TOML file (`--config` or `STREAMER_CONFIG`), defaults.
A wrong value raises ConfigError naming the key, the value and the expected form.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from streamer.layout import Layout

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration value is wrong; the message is meant for the user as it is."""


# Whisper's language codes (faster-whisper's tokenizer keeps the list; a private name, hence the
# fallback to "anything short and lower-case" should a release move it).
try:
    from faster_whisper.tokenizer import _LANGUAGE_CODES as _WHISPER_LANGUAGES
except ImportError:  # pragma: no cover
    _WHISPER_LANGUAGES = ()
LANGUAGES: frozenset[str] = frozenset(_WHISPER_LANGUAGES)


def _check_language(code: str) -> str:
    if LANGUAGES and code not in LANGUAGES:
        raise ValueError(
            f"unknown language code {code!r}; expected one of Whisper's codes "
            f"({', '.join(sorted(LANGUAGES))})"
        )
    if not LANGUAGES and not re.fullmatch(r"[a-z]{2,3}", code):
        raise ValueError(f"unknown language code {code!r}")
    return code


class _Section(BaseModel):
    # inf and nan pass every `gt=`/`le=` bound the wrong way (inf > 0): refuse them everywhere.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Section):
    name: str = Field("base", description="Model name (tiny.en, base, ...) or a CTranslate2 directory.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field("default", description="'default' = int8 on CPU, int8_float16 on CUDA.")
    cpu_threads: int = Field(0, ge=0, le=256, description="0 = CTranslate2's default.")
    cache_dir: Path | None = Field(None, description="Where joined model files are kept.")
    batch_size: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="Windows of different streams encoded in one call: 'auto' = 1 on CPU (measured: "
        "no gain there), 8 on CUDA.",
    )


class VadConfig(_Section):
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Speech onset probability.")
    neg_threshold: float | None = Field(None, gt=0.0, lt=1.0, description="Offset (default threshold-0.15).")
    min_speech: float = Field(
        0.1, ge=0.0, le=10.0, description="Seconds of speech before an utterance opens."
    )
    end_silence: float = Field(0.5, gt=0.0, le=30.0, description="Seconds of silence that end an utterance.")
    pad: float = Field(0.2, ge=0.0, le=5.0, description="Seconds of audio kept around speech.")
    max_utterance: float = Field(
        30.0, gt=2.0, le=3600.0, description="Split utterances longer than this (s)."
    )


class DecoderConfig(_Section):
    language: str | None = Field(None, description="Fixed language code, or None to detect.")
    languages: list[str] | None = Field(None, description="Allow-list for detection, e.g. ['ko', 'en'].")
    task: Literal["transcribe", "translate"] = "transcribe"
    step: float = Field(0.5, gt=0.0, le=30.0, description="Seconds of audio between step re-decodes.")
    partials: bool = Field(True, description="Emit partial events (the unsettled tail).")
    agreement: bool = Field(
        True,
        description="Commit words mid-sentence once two step decodes agree on them (False: finals "
        "only at end of speech).",
    )
    holdback: int = Field(0, ge=0, le=5, description="Last agreed words kept back from a commit.")
    commit_margin: float = Field(
        0.2, ge=0.0, le=3.0, description="Audio both agreeing decodes heard after a word (s)."
    )
    min_commit_audio: float = Field(
        4.0,
        ge=0.0,
        le=30.0,
        description="Audio of an utterance that starts cold (no speech just before) heard before its "
        "first mid-sentence commit (s).",
    )
    left_context: float = Field(
        2.0, ge=0.0, le=10.0, description="Audio before the first unsettled word in every window (s)."
    )
    beam_size: int = Field(5, ge=1, le=64, description="Beam size of the final decode.")
    partial_beam_size: int = Field(1, ge=1, le=64, description="Beam size of step decodes.")
    partial_context: float = Field(
        15.0,
        ge=5.0,
        le=30.0,
        description="Seconds of encoder context of every decode, at least (a longer window gets the "
        "window + 5 s; 30 = Whisper's full window).",
    )
    final_context: float = Field(
        30.0,
        ge=5.0,
        le=30.0,
        description="Seconds of encoder context of final decodes, at least (30 = Whisper's full window: "
        "measured more accurate than a shorter one; a final is decoded once, in one pass).",
    )
    max_window: float = Field(15.0, gt=2.0, le=30.0, description="Longest window decoded at once (s).")
    max_tokens_per_second: float = Field(
        12.0, gt=0.0, le=50.0, description="New tokens a decode may produce per second of audio."
    )
    fallback_min_seconds: float = Field(
        2.0, ge=0.0, le=30.0, description="Shortest final window that gets temperature fallback (s)."
    )
    initial_prompt: str | None = None
    hotwords: str | None = None
    # 0 by default: a prompt of what was just said makes Whisper skip a phrase that repeats its
    # end (the demo: "ask what you [can do for your] country" after "... your country can do for
    # you"); the window's left context already gives the decoder the audio before it.
    context_finals: int = Field(
        0,
        ge=0,
        le=100,
        description="Utterances (the open one included) whose settled words before the window are the "
        "prompt; 0 = no prompt from earlier speech.",
    )
    no_speech_threshold: float = Field(0.6, ge=0.0, le=1.0)
    log_prob_threshold: float = Field(-1.0, le=0.0)
    compression_ratio_threshold: float = Field(2.4, gt=0.0, le=100.0)
    temperatures: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: [0.0, 0.2, 0.4], min_length=1, max_length=10
    )

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return None if v is None else _check_language(v)

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_check_language(c) for c in v]


class FilterConfig(_Section):
    no_speech: bool = True
    compression: bool = True
    repetition: bool = True
    phrases: bool = True
    outside_speech: bool = True
    low_confidence: bool = True
    min_word_probability: float = Field(0.15, ge=0.0, le=1.0, description="Mean word probability floor.")


class SourceConfig(_Section):
    spec: str = Field(
        "mic",
        description="mic | mic:DEVICE | file:PATH | stdin | stdin:RATE | demo | rtp://HOST:PORT[?..] | "
        "sdp:PATH. The default 'mic' falls back to the demo when there is no usable microphone; an "
        "explicit value never does.",
    )
    realtime: bool = Field(True, description="Pace file sources at 1x (live-like).")
    # 600 s of 16 kHz float32 is 38 MB: more than that is a typo, not a buffer.
    ring_seconds: float = Field(30.0, gt=1.0, le=600.0, description="Ring buffer capacity in seconds.")
    retry_max: float = Field(
        30.0, gt=0.0, le=3600.0, description="Longest backoff between source retries (s)."
    )


class ServerConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: str | None = None
    allowed_origins: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("allowed_origins", "origins"),
        description="Browser origins allowed besides the daemon's own, e.g. https://x.org; '*' = any.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides IPs, localhost and the bound name; '*' = any.",
    )
    max_clients: int = Field(500, ge=1, le=100_000)
    # One address holds at most a tenth of the default slots: a runaway local script or one remote
    # host cannot lock out real viewers. A room of viewers behind one NAT, or a reverse proxy in
    # front of the daemon (every client then comes from its address), needs a higher value.
    max_clients_per_address: int = Field(
        50,
        ge=0,
        le=100_000,
        description="WebSocket clients one address may hold (an IPv6 /64 counts as one; loopback "
        "counts like any address); more: 429 / 1013. 0 = no limit.",
    )
    replay_finals: int = Field(20, ge=0, le=100_000, description="Finals replayed to a new client.")
    history_finals: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Finals kept in memory per stream for `since` and /transcript.",
    )
    history_seconds: float = Field(
        3600.0, gt=0.0, le=366 * 86400.0, description="Finals older than this (s) leave the memory window."
    )
    client_queue: int = Field(256, ge=4, le=1_000_000, description="Outgoing messages queued per client.")
    ping_interval: float = Field(20.0, gt=0.0, le=3600.0)
    stall_timeout: float = Field(
        10.0, gt=0.0, le=86400.0, description="Seconds without audio before /health is 503."
    )
    web_dir: Path | None = Field(None, description="Caption page files served on / (None = clients/web).")
    # SO_SNDBUF takes a C int and Linux doubles it: 2 GiB overflowed and closed every client (1011).
    send_buffer: int = Field(
        65536,
        ge=4096,
        le=64 * 2**20,
        description="Kernel send buffer per client (bytes): bounds memory held for slow clients.",
    )
    ingest_token: str | None = Field(
        None,
        description="Token for /ingest (browser microphone audio), separate from the read token; "
        "None = /ingest refused.",
    )
    ingest_max_frame: int = Field(
        32000, ge=320, le=1_048_576, description="Largest /ingest frame (bytes; 32000 = 1 s of audio)."
    )
    ingest_burst: float = Field(
        2.0, ge=0.1, le=60.0, description="Seconds of audio an /ingest client may send ahead of real time."
    )

    @field_validator("token", "ingest_token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        # An empty token used to mean "no token": a typo'd secret silently opened the server.
        if v is not None and not v.strip():
            raise ValueError(
                "an empty token would disable authentication; unset it (remove the key or the "
                "variable) to run without a token, or give a non-empty secret"
            )
        return v


class MqttConfig(_Section):
    url: str | None = Field(None, description="mqtt://host:1883 or mqtts://host:8883; None = off.")
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    prefix: str = "streamer"
    outbox: int = Field(
        10000, ge=1, le=10_000_000, description="Finals kept while the broker is unreachable."
    )
    partial_interval: float = Field(0.25, ge=0.0, le=3600.0, description="Minimum seconds between partials.")
    reconnect_min: float = Field(
        0.5, gt=0.0, le=3600.0, description="First reconnect delay (s), doubled per failure."
    )
    reconnect_max: float = Field(30.0, gt=0.0, le=86400.0, description="Longest reconnect delay (s).")
    drain_timeout: float = Field(
        10.0, ge=0.0, le=3600.0, description="Seconds to deliver the outbox at shutdown."
    )
    ca_file: Path | None = Field(None, description="CA certificates for mqtts:// (None = the system's).")


class TranscriptConfig(_Section):
    dir: Path | None = Field(Path("transcripts"), description="Directory for JSONL/SRT/VTT; '' = off.")

    @field_validator("dir", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        # `--transcripts ''`, STREAMER_TRANSCRIPTS__DIR=off: no transcript files.
        if isinstance(v, str) and v.strip().lower() in ("", "none", "off", "false"):
            return None
        return v

    rotate: Literal["none", "day", "size"] = "none"
    rotate_bytes: int = Field(50_000_000, ge=1024, le=2**40)


class ApiConfig(_Section):
    """The OpenAI-compatible file API on the server's port (/v1/audio/..., /v1/jobs)."""

    enabled: bool = Field(True, description="Serve /v1/audio/... and /v1/jobs (needs server.enabled).")
    max_upload_mb: float = Field(200.0, gt=0.0, le=10240.0, description="Largest upload (MB); larger: 413.")
    max_requests: int = Field(
        2, ge=1, le=64, description="Transcriptions answered at once (POST /v1/audio/...); more: 429."
    )
    max_jobs: int = Field(16, ge=1, le=10_000, description="Jobs queued or running at once; more: 429.")
    max_requests_per_address: int = Field(
        2,
        ge=0,
        le=10_000,
        description="File API POSTs one address may have in progress (uploading or transcribing; "
        "loopback counts like any address); more: 429. 0 = no limit.",
    )
    # 3 h: a long lecture, meeting or film still fits, while a few MB of FLAC silence can no longer
    # ask for a day of work (the job worker is one at a time). Decoded length, not file size, is
    # what a request costs.
    max_audio_seconds: float = Field(
        10800.0,
        gt=0.0,
        le=7 * 86400.0,
        description="Longest audio a request or job may hold once decoded (s); longer: 413.",
    )
    # 32 kB/s is 16 kHz PCM16 in real time: whoever can stream live audio can upload this fast.
    upload_min_rate: int = Field(
        32_000,
        ge=0,
        le=1_000_000_000,
        description="Slowest average upload (bytes/s) after a 10 s grace; slower: 408. 0 = no minimum.",
    )
    result_ttl: float = Field(
        86400.0, gt=0.0, le=366 * 86400.0, description="Seconds a finished job's result is kept."
    )
    state_dir: Path = Field(Path("state"), description="Jobs' uploads, state and results (survive restarts).")
    engine_cache: int = Field(
        2, ge=0, le=8, description="Extra models/tasks kept loaded for requests that need them (0 = none)."
    )
    node: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
        description="This daemon's name in job ids (job_NODE_...), for a proxy that routes jobs to it.",
    )


class LayoutConfig(_Section):
    """Caption layout (streamer/layout.py): SRT/WebVTT cues, the OBS bridge, the pages' wrapping."""

    max_chars: int = Field(
        42, ge=10, le=200, description="Columns per caption line (wide characters count 2)."
    )
    max_lines: int = Field(2, ge=1, le=4, description="Lines per caption.")
    max_cps: float = Field(
        17.0, gt=0.0, le=100.0, description="Reading rate (columns per second) that sets display time."
    )
    min_duration: float = Field(1.0, ge=0.0, le=60.0, description="Shortest time a caption stays up (s).")
    max_duration: float = Field(7.0, gt=0.0, le=600.0, description="Longest time a caption stays up (s).")

    @model_validator(mode="after")
    def _durations(self) -> LayoutConfig:
        if self.min_duration > self.max_duration:
            raise ValueError(
                f"min_duration ({self.min_duration}) must not exceed max_duration ({self.max_duration})"
            )
        return self

    def rules(self) -> Layout:
        return Layout(self.max_chars, self.max_lines, self.max_cps, self.min_duration, self.max_duration)


class ObsConfig(_Section):
    """`streamer obs`: follows a stream of the daemon and drives OBS Studio (obs-websocket v5)."""

    url: str = Field(
        "ws://127.0.0.1:4455", description="obs-websocket address (Tools > WebSocket Server Settings)."
    )
    password: str | None = Field(None, description="obs-websocket password (or STREAMER_OBS__PASSWORD).")
    daemon: str | None = Field(
        None, description="Daemon WebSocket URL; None = ws://server.host:server.port/ws."
    )
    source: str = Field("Captions", min_length=1, description="Name of the Text source the captions go to.")
    scene: str | None = Field(None, description="Scene to add a missing source to; None = the current scene.")
    create: bool = Field(True, description="Create the Text source when OBS has none of that name.")
    input_kind: str = Field(
        "auto", description="Text input kind to create; auto = GDI+ on Windows, else FreeType 2."
    )
    font: str | None = Field(
        None,
        description="Font of a created Text source (None = Sans Serif / Arial); Korean needs a CJK font.",
    )
    font_size: int = Field(48, ge=6, le=512, description="Font size of a created Text source.")
    stream_captions: bool = Field(True, description="Send finals as native CEA-608 captions while streaming.")
    reconnect_min: float = Field(
        0.5, gt=0.0, le=3600.0, description="First reconnect delay (s), doubled per failure."
    )
    reconnect_max: float = Field(30.0, gt=0.0, le=86400.0, description="Longest reconnect delay (s).")


class ServiceConfig(_Section):
    progress_timeout: float = Field(
        60.0,
        ge=1.0,
        le=3600.0,
        description="Seconds a decode may take, or a stream loop may pause, before the systemd watchdog "
        "is no longer fed (and systemd restarts the daemon).",
    )


_STREAM_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class StreamConfig(_Section):
    """One of several streams in a daemon; what it leaves unset comes from the top-level settings."""

    name: str = Field(
        pattern=_STREAM_NAME, description="Stream name (WebSocket stream=, MQTT topics, files)."
    )
    source: str = Field(description="Source spec, as source.spec.")
    model: str | None = Field(None, description="Model name; streams naming the same model share it.")
    language: str | None = Field(None, description="Fixed language code (default: decoder.language).")
    languages: list[str] | None = Field(
        None, description="Detection allow-list (default: decoder.languages)."
    )
    task: Literal["transcribe", "translate"] | None = Field(None, description="Default: decoder.task.")
    prompt: str | None = Field(None, description="Initial prompt (default: decoder.initial_prompt).")
    hotwords: str | None = Field(None, description="Default: decoder.hotwords.")

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        return None if v is None else _check_language(v)

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_check_language(c) for c in v]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMER_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    stream: str = Field("main", pattern=_STREAM_NAME, description="Stream name.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    trace: Path | None = Field(
        None, description="Write the decode trace here: one JSON line per decode (see docs/benchmarks.md)."
    )
    source: SourceConfig = Field(default_factory=SourceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    transcripts: TranscriptConfig = Field(default_factory=TranscriptConfig)
    layout: LayoutConfig = Field(default_factory=LayoutConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    obs: ObsConfig = Field(default_factory=ObsConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    #: Several streams in one daemon ([[streams]] tables); empty = the one stream `stream` + `source`.
    streams: list[StreamConfig] = Field(default_factory=list, max_length=64)

    @field_validator("streams")
    @classmethod
    def _unique_names(cls, v: list[StreamConfig]) -> list[StreamConfig]:
        seen: set[str] = set()
        for s in v:
            if s.name in seen:
                raise ValueError(f"stream name {s.name!r} is used twice; each stream needs its own")
            seen.add(s.name)
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        # `model = "tiny.en"` in TOML or STREAMER_MODEL=tiny.en is the common case.
        return {"name": v} if isinstance(v, str) else v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_data = _TOML_DATA.get()
        if toml_data:
            # Read and checked by load_settings (which names the file in its errors).
            sources.append(InitSettingsSource(settings_cls, init_kwargs=toml_data))
        return tuple(sources)


# The parsed TOML file of the load_settings call in progress (settings_customise_sources is a
# classmethod and cannot be handed it otherwise).
_TOML_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("_TOML_DATA", default=None)

_SECTIONS = {
    name
    for name, f in Settings.model_fields.items()
    if isinstance(f.annotation, type) and issubclass(f.annotation, _Section)
}
# Environment variables that are not settings keys.
_NOT_KEYS = {"STREAMER_CONFIG", "STREAMER_TOKEN", "STREAMER_AUDIO"}


def _describe_error(err: Mapping[str, Any]) -> str:
    key = ".".join(str(p) for p in err.get("loc", ()))
    value = err.get("input")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return f"unknown key '{key}'"
    shown = repr(value) if not isinstance(value, dict) else "(a table)"
    return f"key '{key}' = {shown}: {msg}"


def _set_nested(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file; every way it can be unusable is a one-line ConfigError."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file '{p}' is a directory, not a TOML file")
    try:
        # Not only regular files: `--config /dev/null` (an empty configuration) and
        # `--config <(...)` from a shell work too.
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file '{p}' not found") from None
    except PermissionError:
        raise ConfigError(f"config file '{p}' cannot be read: permission denied") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file '{p}' is not valid TOML: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
            f"{e.start}); is it a binary file?"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file '{p}' is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"config file '{p}' cannot be read: {e.strerror or e}") from None
    for key, value in data.items():
        if (
            key in _SECTIONS
            and not isinstance(value, dict)
            and not (key == "model" and isinstance(value, str))
        ):
            # pydantic-settings merges a flag's `{"server": {...}}` over `server = 5` and the 5 vanished.
            raise ConfigError(
                f"config file '{p}': key '{key}' = {value!r}: must be a table ([{key}] with its keys)"
            )
    return data


def _field_kind(dotted: list[str]) -> str | None:
    """'a JSON list' / 'a JSON object' for complex fields, None for scalars or unknown keys."""
    model: type[BaseModel] = Settings
    field = None
    for i, part in enumerate(dotted):
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if i == len(dotted) - 1:
                return "a JSON object (or use STREAMER_SECTION__KEY variables)"
            model = ann
        elif i < len(dotted) - 1:
            return None
    text = str(field.annotation) if field is not None else ""
    if "list" in text:
        return 'a JSON list, e.g. ["ko", "en"] or [0.0, 0.2]'
    return None


def _env_problems() -> list[str]:
    """Environment values pydantic-settings cannot even decode (it raises without naming the key)."""
    out = []
    for name, raw in os.environ.items():
        if not name.startswith("STREAMER_") or name in _NOT_KEYS or name.startswith("STREAMER__"):
            continue
        parts = name[len("STREAMER_") :].lower().split("__")
        kind = _field_kind(parts)
        if kind is None or raw.strip() == "":
            continue
        try:
            json.loads(raw)
        except ValueError:
            out.append(f"key '{'.'.join(parts)}' = {raw!r} (from {name}): expected {kind}")
    return out


def _env_section_problems() -> list[str]:
    out = []
    for section in _SECTIONS:
        name = f"STREAMER_{section.upper()}"
        raw = os.environ.get(name)
        if raw is None or (section == "model"):
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue  # reported by _env_problems
        if not isinstance(value, dict):
            out.append(f"key '{section}' = {raw!r} (from {name}): expected a JSON object")
    return out


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from file, environment and `overrides` (dotted keys from CLI flags)."""
    path = config_file or os.environ.get("STREAMER_CONFIG")
    init: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_nested(init, dotted, value)
    data = read_config_file(path) if path else None
    problems = _env_problems() + _env_section_problems()
    if os.environ.get("STREAMER_TOKEN") is not None and not os.environ["STREAMER_TOKEN"].strip():
        problems.append(
            "STREAMER_TOKEN is set but empty: an empty token would disable authentication; "
            "unset it to run without a token"
        )
    if problems:
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}")
    token = _TOML_DATA.set(data)
    # STREAMER_CONFIG is the file path, not a settings key; hide it from the env source.
    saved = os.environ.pop("STREAMER_CONFIG", None)
    try:
        return Settings(**init)
    except ValidationError as e:
        problems = [_describe_error(err) for err in e.errors(include_url=False)]
        raise ConfigError(f"invalid configuration: {'; '.join(problems)}") from None
    except SettingsError as e:  # a value the environment source could not decode
        raise ConfigError(f"invalid configuration: {e}") from None
    finally:
        _TOML_DATA.reset(token)
        if saved is not None:
            os.environ["STREAMER_CONFIG"] = saved


# Arguments of a command line that are the command's own, not settings (streamer/cli.py).
_COMMAND_ARGS = frozenset(
    {"command", "config", "paths", "format", "output", "no_progress", "jsonl", "models_command", "no_filters"}
)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings of a parsed command line: its flags (dest = a dotted key) over env, file, defaults.

    The daemon calls it again with the same flags on SIGHUP; it lives here, not in streamer/cli.py,
    so that the daemon need not import the CLI (which imports the daemon).
    """
    overrides = {
        k: v
        for k, v in vars(args).items()
        if ("." in k or k in {"stream", "log_level", "trace"}) and k not in _COMMAND_ARGS
    }
    return load_settings(getattr(args, "config", None), overrides)


def stream_settings(settings: Settings) -> list[Settings]:
    """The settings of each stream: the top-level ones with the stream's own keys applied.

    Without `[[streams]]` that is the settings themselves (the one-stream shortcut).
    """
    if not settings.streams:
        return [settings]
    out = []
    for sc in settings.streams:
        s = settings.model_copy(deep=True)
        s.streams = []
        s.stream = sc.name
        s.source.spec = sc.source
        if sc.model is not None:
            s.model.name = sc.model
        dec = s.decoder
        if sc.language is not None:
            dec.language = sc.language
        if sc.languages is not None:
            dec.languages = sc.languages
        if sc.task is not None:
            dec.task = sc.task
        if sc.prompt is not None:
            dec.initial_prompt = sc.prompt
        if sc.hotwords is not None:
            dec.hotwords = sc.hotwords
        out.append(s)
    return out
