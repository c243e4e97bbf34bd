"""The one configuration object.

Precedence (highest first): CLI flags, `STREAMER_*` environment variables (nested keys with `__`,
e.g. `STREAMER_VAD__END_SILENCE=0.4`), the TOML file (`--config` or `STREAMER_CONFIG`), defaults.
A wrong value raises ConfigError naming the key, the value and the expected form.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration value is wrong; the message is meant for the user as it is."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = Field("base", description="Model name (tiny.en, base, ...) or a CTranslate2 directory.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field("default", description="'default' = int8 on CPU, int8_float16 on CUDA.")
    cpu_threads: int = Field(0, ge=0, description="0 = CTranslate2's default.")
    cache_dir: Path | None = Field(None, description="Where joined model files are kept.")


class VadConfig(_Section):
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Speech onset probability.")
    neg_threshold: float | None = Field(None, gt=0.0, lt=1.0, description="Offset (default threshold-0.15).")
    min_speech: float = Field(0.1, ge=0.0, description="Seconds of speech before an utterance opens.")
    end_silence: float = Field(0.5, gt=0.0, description="Seconds of silence that end an utterance.")
    pad: float = Field(0.2, ge=0.0, description="Seconds of audio kept around speech.")
    max_utterance: float = Field(30.0, gt=2.0, description="Split utterances longer than this (s).")


class DecoderConfig(_Section):
    language: str | None = Field(None, description="Fixed language code, or None to detect.")
    languages: list[str] | None = Field(None, description="Allow-list for detection, e.g. ['ko', 'en'].")
    task: Literal["transcribe", "translate"] = "transcribe"
    step: float = Field(0.5, gt=0.0, description="Seconds between partial re-decodes.")
    partials: bool = True
    agreement: bool = Field(True, description="Mark the prefix two hypotheses agree on as stable.")
    holdback: int = Field(1, ge=0, le=5, description="Last words of a window never marked stable.")
    beam_size: int = Field(5, ge=1, description="Beam size of the final decode.")
    partial_beam_size: int = Field(1, ge=1)
    partial_context: float = Field(
        15.0, ge=5.0, le=30.0, description="Seconds of encoder context for partials (30 = full)."
    )
    max_window: float = Field(15.0, gt=2.0, le=30.0, description="Longest window decoded at once (s).")
    initial_prompt: str | None = None
    hotwords: str | None = None
    context_finals: int = Field(3, ge=0, description="Previous finals passed as the prompt.")
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    temperatures: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.4])


class FilterConfig(_Section):
    no_speech: bool = True
    compression: bool = True
    repetition: bool = True
    phrases: bool = True
    outside_speech: bool = True
    low_confidence: bool = True
    min_word_probability: float = Field(0.15, ge=0.0, le=1.0, description="Mean word probability floor.")


class SourceConfig(_Section):
    spec: str = Field("mic", description="mic | mic:DEVICE | file:PATH | stdin | stdin:RATE")
    realtime: bool = Field(True, description="Pace file sources at 1x (live-like).")
    ring_seconds: float = Field(30.0, gt=1.0, description="Ring buffer capacity in seconds.")
    retry_max: float = Field(30.0, gt=0.0, description="Longest backoff between source retries (s).")


class ServerConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    token: str | None = None
    origins: list[str] | None = Field(None, description="Allowed WebSocket Origin values (None = any).")
    max_clients: int = Field(500, ge=1)
    replay_finals: int = Field(20, ge=0, description="Finals replayed to a new client.")
    client_queue: int = Field(256, ge=4, description="Outgoing messages queued per client.")
    ping_interval: float = Field(20.0, gt=0.0)
    stall_timeout: float = Field(10.0, gt=0.0, description="Seconds without audio before /health is 503.")
    web_dir: Path | None = Field(None, description="Caption page files served on / (None = clients/web).")
    send_buffer: int = Field(
        65536,
        ge=4096,
        description="Kernel send buffer per client (bytes): bounds memory held for slow clients.",
    )


class MqttConfig(_Section):
    url: str | None = Field(None, description="mqtt://host:1883 or mqtts://host:8883; None = off.")
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    prefix: str = "streamer"
    outbox: int = Field(10000, ge=1, description="Finals kept while the broker is unreachable.")
    partial_interval: float = Field(0.25, ge=0.0, description="Minimum seconds between partials.")
    reconnect_min: float = Field(0.5, gt=0.0, description="First reconnect delay (s), doubled per failure.")
    reconnect_max: float = Field(30.0, gt=0.0, description="Longest reconnect delay (s).")
    drain_timeout: float = Field(10.0, ge=0.0, description="Seconds to deliver the outbox at shutdown.")
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
    rotate_bytes: int = Field(50_000_000, ge=1024)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMER_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    stream: str = Field("main", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Stream name.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    source: SourceConfig = Field(default_factory=SourceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    transcripts: TranscriptConfig = Field(default_factory=TranscriptConfig)

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
        toml_file = os.environ.get("_STREAMER_TOML_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _describe_error(err: Mapping[str, Any]) -> str:
    key = ".".join(str(p) for p in err.get("loc", ()))
    value = err.get("input")
    msg = err.get("msg", "invalid value")
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


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build the settings from file, environment and `overrides` (dotted keys from CLI flags)."""
    path = config_file or os.environ.get("STREAMER_CONFIG")
    init: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_nested(init, dotted, value)
    previous = os.environ.pop("_STREAMER_TOML_FILE", None)
    try:
        if path:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file '{p}' not found")
            try:
                with p.open("rb") as f:
                    tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file '{p}' is not valid TOML: {e}") from None
            os.environ["_STREAMER_TOML_FILE"] = str(p)
        # STREAMER_CONFIG is the file path, not a settings key; hide it from the env source.
        saved = os.environ.pop("STREAMER_CONFIG", None)
        try:
            return Settings(**init)
        except ValidationError as e:
            problems = "; ".join(_describe_error(err) for err in e.errors(include_url=False))
            raise ConfigError(f"invalid configuration: {problems}") from None
        finally:
            if saved is not None:
                os.environ["STREAMER_CONFIG"] = saved
    finally:
        os.environ.pop("_STREAMER_TOML_FILE", None)
        if previous is not None:
            os.environ["_STREAMER_TOML_FILE"] = previous
