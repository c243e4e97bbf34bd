"""Which DecodeEngine serves a file request.

The daemon's own engine serves every request it can: the daemon's model, its task and its
temperature ladder (OpenAI clients send `whisper-1`, which means that model). A request for
another installed model, for translation, or for a sampling temperature needs engine options
that are fixed per engine (DecodeOptions), so it gets an engine of its own, loaded through the
one resolver (streamer/models.py, never downloading and never taking a path from a request)
with the same DecodeEngine class, and kept in a small LRU cache (`api.engine_cache`); with a
cache of 0 such requests are refused. A name the resolver does not know, or a model that is
not installed, is 404 `model_not_found`. Engines never share a model object: the engine sets
per-decode state on it (the encoder context length).

What a model cannot do is refused before anything is loaded: translation or another language
on an English-only model (the daemon's own, or a Whisper `.en` checkpoint) is 400 at once, not
after a second copy of the model (130 MB for base) was read into memory only to be refused.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from streamer.api.openai_compat import DEFAULT_MODEL_ALIASES, ApiError, TranscribeOptions
from streamer.config import Settings
from streamer.decode.engine import DecodeEngine
from streamer.errors import ModelNotFoundError, UserError
from streamer.models import describe_models, resolve_model

log = logging.getLogger(__name__)

Key = tuple[str, str, tuple[float, ...]]


@dataclass
class _Entry:
    engine: DecodeEngine
    users: int = 0


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.startswith((".", "~")) or len(name) > 64


class EnginePool:
    def __init__(self, settings: Settings, default: DecodeEngine, capacity: int) -> None:
        self.settings = settings
        self.default = default
        self.capacity = capacity
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # one model load at a time
        self._cache: OrderedDict[Key, _Entry] = OrderedDict()

    def model_name(self, requested: str) -> str:
        return self.default.model_name if requested in DEFAULT_MODEL_ALIASES else requested

    def key(self, opts: TranscribeOptions) -> Key:
        temps = self.default.options.temperatures
        if opts.temperature:  # 0 (or none) = the ladder, as in OpenAI's API
            temps = tuple(t for t in temps if t >= opts.temperature) or (opts.temperature,)
        return (self.model_name(opts.model), opts.task, temps)

    def available(self) -> list[str]:
        """Model names a request may use: the daemon's own, then installed ones."""
        names = [self.default.model_name]
        # describe_models looks without joining or downloading anything.
        names += [r.name for r in describe_models(self.settings) if r.present and r.name not in names]
        return names

    def acquire(self, opts: TranscribeOptions) -> DecodeEngine:
        """The engine for `opts` (blocking: may load a model). Pair with release()."""
        key = self.key(opts)
        name = key[0]
        default_key: Key = (
            self.default.model_name,
            self.default.options.task,
            self.default.options.temperatures,
        )
        if key == default_key:
            self._check(self.default, opts)
            return self.default
        if _looks_like_path(name):
            raise ApiError(
                404, f"The model '{name[:64]}' does not exist.", param="model", code="model_not_found"
            )
        if self.english_only(name):
            self._refuse_english_only(name, opts)
        if self.capacity < 1:
            raise ApiError(
                400,
                f"This server only runs its own model ({self.default.model_name}) with its own task and "
                "temperatures (api.engine_cache = 0).",
                param="model",
            )
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._check(entry.engine, opts)
                self._cache.move_to_end(key)
                entry.users += 1
                return entry.engine
        with self._loading:
            with self._lock:  # loaded by another request while we waited
                entry = self._cache.get(key)
                if entry is not None:
                    entry.users += 1
                    return entry.engine
            engine = self._load(name, opts.task, key[2])
            self._check(engine, opts, close_on_error=True)
            with self._lock:
                self._cache[key] = _Entry(engine, users=1)
                self._evict()
        return engine

    def release(self, engine: DecodeEngine) -> None:
        if engine is self.default:
            return
        with self._lock:
            for entry in self._cache.values():
                if entry.engine is engine:
                    entry.users -= 1
            self._evict()

    def close(self) -> None:
        with self._lock:
            entries = list(self._cache.values())
            self._cache.clear()
        for e in entries:
            e.engine.close()

    def _evict(self) -> None:
        # Called with the lock held: drop idle engines beyond the capacity, oldest first.
        while len(self._cache) > self.capacity:
            for k, e in self._cache.items():
                if e.users <= 0:
                    del self._cache[k]
                    threading.Thread(target=e.engine.close, daemon=True).start()
                    break
            else:
                return

    def _load(self, name: str, task: str, temps: tuple[float, ...]) -> DecodeEngine:
        try:
            resolve_model(name, self.settings.model.cache_dir, allow_download=False)
        except ModelNotFoundError as e:
            raise ApiError(
                404, f"The model '{name}' does not exist: {e}", param="model", code="model_not_found"
            ) from None
        cfg = self.settings.model_copy(deep=True)
        cfg.model.name = name
        cfg.decoder.task = task  # type: ignore[assignment]
        cfg.decoder.temperatures = list(temps)
        cfg.decoder.language = None  # checked per request
        log.info("file API: loading model %s for task %s", name, task)
        try:
            return DecodeEngine.from_settings(cfg)
        except UserError as e:
            raise ApiError(
                404, f"The model '{name}' cannot be loaded: {e}", param="model", code="model_not_found"
            ) from None

    def english_only(self, name: str) -> bool:
        """Known without loading it: the daemon's own model says; Whisper names its English-only
        checkpoints `*.en` (tiny.en ... medium.en, distil-*.en)."""
        if name == self.default.model_name:
            return not self.default.multilingual
        return name.lower().endswith(".en")

    @staticmethod
    def _refuse_english_only(name: str, opts: TranscribeOptions) -> None:
        problem = None
        if opts.task == "translate":
            problem = f"model '{name}' is English-only: it cannot translate; use a multilingual model"
        elif opts.language not in (None, "en"):
            problem = f"model '{name}' is English-only: it cannot do language '{opts.language}'"
        if problem:
            raise ApiError(400, problem + ".", param="model" if opts.task == "translate" else "language")

    @classmethod
    def _check(cls, engine: DecodeEngine, opts: TranscribeOptions, close_on_error: bool = False) -> None:
        if engine.multilingual:
            return
        try:
            cls._refuse_english_only(engine.model_name, opts)
        except ApiError:
            if close_on_error:
                engine.close()
            raise
