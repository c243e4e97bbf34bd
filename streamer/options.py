"""Settings to options, in one place.

Every option type that the deciding code reads (the segmenter's, the captioner's, the filters',
the decode engine's) is a frozen dataclass whose fields say which settings key they come from:

    step: float = setting("decoder.step", 0.5)

`from_settings(Options, settings)` builds one from validated Settings; `keys_of(Options, ...)`
lists the keys it reads. Nothing else copies settings into options by hand, so a key cannot be
read at start and forgotten on reload: the set of keys a reload applies live is derived from
these types (streamer/service/reload.py). Fields without a key are fixed by the code that builds
the options (for example the stream's name) or are constants that are not configurable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_KEY = "settings_key"
_CONVERT = "settings_convert"


def setting(key: str, default: Any, *, convert: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field read from the dotted settings `key` (`convert` maps the settings value)."""
    return dataclasses.field(default=default, metadata={_KEY: key, _CONVERT: convert})


def lookup(settings: Any, key: str) -> Any:
    value = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _frozen(value: Any) -> Any:
    # Options are immutable snapshots: a list in Settings becomes a tuple.
    return tuple(value) if isinstance(value, list) else value


def from_settings(cls: type[T], settings: Any, **fixed: Any) -> T:
    """An instance of the option dataclass `cls` with every keyed field read from `settings`."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f.metadata.get(_KEY)
        if key is None or f.name in fixed:
            continue
        value = lookup(settings, key)
        convert = f.metadata.get(_CONVERT)
        values[f.name] = convert(value) if convert is not None else _frozen(value)
    return cls(**values, **fixed)


def keys_of(*classes: type) -> frozenset[str]:
    """The settings keys the option types read."""
    return frozenset(
        f.metadata[_KEY]
        for cls in classes
        for f in dataclasses.fields(cls)
        if f.metadata.get(_KEY) is not None
    )


def field_for_key(classes: Iterable[type], key: str) -> tuple[type, str] | None:
    """Which option type and field a settings key feeds (None if none does)."""
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.metadata.get(_KEY) == key:
                return cls, f.name
    return None
