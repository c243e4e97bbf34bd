"""Model names -> CTranslate2 model directories.

Resolution order for a name:

1. an existing directory that holds `model.bin` (a model you converted or downloaded yourself);
2. a model shipped as PyPI packages and listed in `models/manifest.toml` (`tiny.en`, `base`),
   found with importlib wherever pip put them; a model split over several packages is joined once
   into the cache directory and verified against the manifest's size and SHA-256;
3. faster-whisper's own download from the Hugging Face hub, for the sizes it knows, when
   downloading is allowed (and `HF_HUB_OFFLINE` is not set).

Anything else raises ModelNotFoundError with a one-line message saying what would provide it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import ctranslate2
from faster_whisper.utils import available_models, download_model

from streamer.errors import ModelNotFoundError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from streamer.config import Settings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
# models/manifest.toml in a checkout; streamer/data/models.toml (a symlink to it, which setuptools
# copies into wheels as a file) in an installed package.
MANIFEST = next(
    (
        p
        for p in (REPO / "models" / "manifest.toml", Path(__file__).parent / "data" / "models.toml")
        if p.is_file()
    ),
    REPO / "models" / "manifest.toml",
)
MARKER = ".verified.json"
_COPY_BLOCK = 1 << 20

Origin = Literal["path", "package", "hub"]


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: Path | str  # a directory; a hub id only if faster-whisper is to fetch it itself
    origin: Origin


# --- manifest ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileCheck:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Part:
    distribution: str
    module: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelEntry:
    name: str
    languages: tuple[str, ...]
    description: str
    extra: str
    hub: str | None
    # A complete directory inside one package ...
    package_module: str | None = None
    package_distribution: str | None = None
    package_dir: str = ""
    files: tuple[FileCheck, ...] = ()
    # ... or model.bin split over packages plus the small files from one of them.
    parts: tuple[Part, ...] = ()
    joined: FileCheck | None = None
    support_module: str | None = None
    support_dir: str = ""
    support_files: tuple[str, ...] = ()

    @property
    def distributions(self) -> tuple[str, ...]:
        if self.parts:
            return tuple(p.distribution for p in self.parts)
        return (self.package_distribution,) if self.package_distribution else ()

    @property
    def model_size(self) -> int:
        if self.joined is not None:
            return self.joined.size
        return sum(f.size for f in self.files)

    def install_hint(self) -> str:
        return f"pip install 'streamer[{self.extra}]' (extra '{self.extra}')"


def load_manifest(path: Path | None = None) -> dict[str, ModelEntry]:
    path = path or MANIFEST
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        log.warning("model manifest %s not found; only directories and hub models resolve", path)
        return {}
    entries: dict[str, ModelEntry] = {}
    for name, m in raw.get("models", {}).items():
        pkg = m.get("package") or {}
        support = m.get("support") or {}
        joined = m.get("joined")
        entries[name] = ModelEntry(
            name=name,
            languages=tuple(m.get("languages", ())),
            description=m.get("description", ""),
            extra=m["extra"],
            hub=m.get("hub"),
            package_module=pkg.get("module"),
            package_distribution=pkg.get("distribution"),
            package_dir=pkg.get("dir", ""),
            files=tuple(FileCheck(f["path"], int(f["size"]), f["sha256"]) for f in m.get("files", ())),
            parts=tuple(
                Part(p["distribution"], p["module"], p["path"], int(p["size"]), p["sha256"])
                for p in m.get("parts", ())
            ),
            joined=FileCheck(joined["path"], int(joined["size"]), joined["sha256"]) if joined else None,
            support_module=support.get("module"),
            support_dir=support.get("dir", ""),
            support_files=tuple(support.get("files", ())),
        )
    return entries


def hub_names() -> tuple[str, ...]:
    """faster-whisper's download names (tiny.en ... large-v3-turbo)."""
    return tuple(available_models())


# --- locating things --------------------------------------------------------------------------


def module_dir(module: str) -> Path | None:
    """Where an installed top-level package lives, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_cache_dir(configured: Path | None = None) -> Path:
    """settings.model.cache_dir, else models/store/ in a writable checkout, else the XDG cache."""
    if configured is not None:
        return Path(configured).expanduser()
    models_dir = REPO / "models"
    if (models_dir / "manifest.toml").is_file():
        store = models_dir / "store"
        target = store if store.is_dir() else models_dir
        if os.access(target, os.W_OK | os.X_OK):
            return store
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "streamer" / "models"


def _hub_enabled(allow_download: bool) -> bool:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return allow_download and not offline


def _looks_like_path(name: str) -> bool:
    return os.sep in name or (os.altsep is not None and os.altsep in name) or name.startswith(("~", "."))


# --- resolution -------------------------------------------------------------------------------


def resolve_model(name: str, cache_dir: Path | None = None, allow_download: bool = True) -> ResolvedModel:
    """Find the CTranslate2 directory for `name`; ModelNotFoundError (one line) if there is none."""
    name = name.strip()
    if not name:
        raise ModelNotFoundError("no model name given; known names: " + ", ".join(load_manifest()))
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        if (candidate / "model.bin").is_file():
            if not (candidate / "tokenizer.json").is_file():
                log.warning("%s has no tokenizer.json; faster-whisper will try to download one", candidate)
            return ResolvedModel(name, candidate.resolve(), "path")
        if _looks_like_path(name):
            raise ModelNotFoundError(
                f"model directory '{name}' has no model.bin: not a CTranslate2 Whisper model "
                "(convert one with ct2-transformers-converter)"
            )
    elif _looks_like_path(name):
        raise ModelNotFoundError(f"model directory '{name}' does not exist")

    manifest = load_manifest()
    entry = manifest.get(name)
    if entry is not None:
        missing = [d for d, m in _package_modules(entry) if module_dir(m) is None]
        if not missing:
            if entry.parts:
                return ResolvedModel(name, ensure_joined(entry, default_cache_dir(cache_dir)), "package")
            return ResolvedModel(name, _package_model_dir(entry), "package")
        hub_failure = ""
        if entry.hub and _hub_enabled(allow_download):
            try:
                return _from_hub(entry.hub, name)
            except ModelNotFoundError as e:
                hub_failure = f" (the hub download failed too: {e})"
        raise ModelNotFoundError(
            f"model '{name}' is not installed (missing {', '.join(missing)}): {entry.install_hint()}, "
            f"or pass a CTranslate2 model directory{hub_failure}"
        )

    hub = hub_names()
    if name in hub:
        if _hub_enabled(allow_download):
            return _from_hub(name, name)
        cached = _hub_cached(name)
        if cached is not None:
            return ResolvedModel(name, cached, "hub")
        raise ModelNotFoundError(
            f"model '{name}' would come from the Hugging Face hub, but downloading is off; "
            f"install one of {', '.join(manifest) or 'the packaged models'} "
            "or pass a CTranslate2 model directory"
        )
    raise ModelNotFoundError(
        f"unknown model '{name}': known names are {', '.join(manifest)} (installable packages), "
        f"{', '.join(n for n in hub if n not in manifest)} (downloaded from the Hugging Face hub), "
        "or a CTranslate2 model directory"
    )


def _package_modules(entry: ModelEntry) -> list[tuple[str, str]]:
    if entry.parts:
        pairs = [(p.distribution, p.module) for p in entry.parts]
        if entry.support_module and entry.support_module not in {m for _, m in pairs}:
            pairs.append((entry.support_module, entry.support_module))
        return pairs
    assert entry.package_module is not None
    return [(entry.package_distribution or entry.package_module, entry.package_module)]


def _reinstall(entry: ModelEntry) -> str:
    return f"reinstall it: pip install --force-reinstall 'streamer[{entry.extra}]'"


def _package_model_dir(entry: ModelEntry) -> Path:
    assert entry.package_module is not None
    root = module_dir(entry.package_module)
    assert root is not None
    model_dir = root / entry.package_dir
    for f in entry.files:
        p = model_dir / f.path
        try:
            size = p.stat().st_size
        except OSError:
            raise ModelNotFoundError(
                f"model '{entry.name}': {p} is missing from package {entry.package_distribution}; "
                + _reinstall(entry)
            ) from None
        # A size check is free; hashing 75 MB on every start is not (the SHA-256 is in the manifest).
        if size != f.size:
            raise ModelNotFoundError(
                f"model '{entry.name}': {p} is {size} bytes, the manifest says {f.size}; " + _reinstall(entry)
            )
    return model_dir


def _hub_cached(size: str) -> Path | None:
    try:
        return Path(download_model(size, local_files_only=True))
    except Exception:
        return None


def _from_hub(size: str, name: str) -> ResolvedModel:
    cached = _hub_cached(size)
    if cached is not None:
        return ResolvedModel(name, cached, "hub")
    log.info("downloading model '%s' from the Hugging Face hub", size)
    try:
        return ResolvedModel(name, Path(download_model(size)), "hub")
    except Exception as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelNotFoundError(f"model '{name}' could not be downloaded: {reason}") from None


# --- joining split packages -------------------------------------------------------------------


def joined_dir(entry: ModelEntry, cache_dir: Path) -> Path:
    assert entry.joined is not None
    # The hash in the name keeps a newer manifest's model from being mistaken for an older join.
    return cache_dir / f"{entry.name}-{entry.joined.sha256[:12]}"


def _part_paths(entry: ModelEntry) -> list[Path]:
    paths = []
    for p in entry.parts:
        root = module_dir(p.module)
        assert root is not None
        paths.append(root / p.path)
    return paths


def _support_paths(entry: ModelEntry) -> list[Path]:
    if not entry.support_module:
        return []
    root = module_dir(entry.support_module)
    assert root is not None
    return [root / entry.support_dir / f for f in entry.support_files]


def _stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_is_valid(entry: ModelEntry, target: Path) -> bool:
    """True if `target` holds a verified join of exactly the installed parts (no hashing)."""
    assert entry.joined is not None
    try:
        record = json.loads((target / MARKER).read_text())
        st = (target / entry.joined.path).stat()
        parts = [_stamp(p) for p in _part_paths(entry)]
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    model = record.get("model", {})
    return (
        record.get("sha256") == entry.joined.sha256
        and record.get("parts") == parts
        and st.st_size == entry.joined.size
        and model.get("size") == st.st_size
        and model.get("mtime_ns") == st.st_mtime_ns
        and model.get("ino") == st.st_ino
        and all((target / src.name).is_file() for src in _support_paths(entry))
    )


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    # Two daemons starting at once must not both join into the same directory.
    with (target / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_joined(entry: ModelEntry, cache_dir: Path) -> Path:
    """The cache directory holding the joined model, joining and verifying it first if needed."""
    target = joined_dir(entry, cache_dir)
    if cache_is_valid(entry, target):
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelNotFoundError(
            f"model '{entry.name}': cannot create cache directory {target}: {e.strerror or e} "
            "(set model.cache_dir)"
        ) from None
    with _locked(target):
        if cache_is_valid(entry, target):  # another process finished it while we waited
            return target
        _join(entry, target)
    return target


def _join(entry: ModelEntry, target: Path) -> None:
    assert entry.joined is not None
    parts = _part_paths(entry)
    for part, spec in zip(parts, entry.parts, strict=True):
        size = part.stat().st_size if part.is_file() else -1
        if size != spec.size:
            got = "missing" if size < 0 else f"{size} bytes"
            raise ModelNotFoundError(
                f"model '{entry.name}': {part} is {got}, the manifest says {spec.size} bytes; "
                + _reinstall(entry)
            )
    (target / MARKER).unlink(missing_ok=True)
    for stale in target.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    log.info("joining model '%s' from %d package parts into %s", entry.name, len(parts), target)
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=f".{entry.joined.path}.", suffix=".tmp")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o644)  # mkstemp makes it private; the model is not a secret
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(_COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        size = tmp.stat().st_size
        if size != entry.joined.size or digest.hexdigest() != entry.joined.sha256:
            raise ModelNotFoundError(
                f"model '{entry.name}': the joined parts ({size} bytes, "
                f"SHA-256 {digest.hexdigest()[:12]}...) "
                f"do not match the manifest ({entry.joined.size} bytes, {entry.joined.sha256[:12]}...); "
                + _reinstall(entry)
            )
        final = target / entry.joined.path
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for support in _support_paths(entry):
        _place(support, target / support.name)
    st = final.stat()
    record = {
        "sha256": entry.joined.sha256,
        "parts": [_stamp(p) for p in parts],
        "model": {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino},
    }
    _write_atomic(target / MARKER, json.dumps(record, indent=1).encode())


def _place(src: Path, dest: Path) -> None:
    """Make `dest` a symlink to `src` (a copy where symlinks are not allowed), atomically."""
    if dest.is_symlink() and dest.resolve() == src.resolve():
        return
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(src)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- device and compute type ------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when CTranslate2 sees a GPU, else 'cpu'; other values pass through."""
    if device != "auto":
        return device
    try:
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # no CUDA runtime at all
        return "cpu"


def compute_type_for(device: str, requested: str) -> str:
    """'default' means INT8 weights: int8 on CPU, int8_float16 on CUDA."""
    if requested != "default":
        return requested
    return "int8_float16" if resolve_device(device) == "cuda" else "int8"


# --- `streamer models list` -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    name: str
    languages: str
    size: str
    origin: str  # path | package | hub | missing
    present: bool
    note: str
    default: bool


def _human(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def describe_models(settings: Settings) -> list[ModelRow]:
    """Where each known model (and the configured one) would resolve from, without joining."""
    configured = settings.model.name
    cache_dir = default_cache_dir(settings.model.cache_dir)
    manifest = load_manifest()
    rows: list[ModelRow] = []
    as_path = Path(configured).expanduser()
    if configured not in manifest and (_looks_like_path(configured) or as_path.is_dir()):
        ok = (as_path / "model.bin").is_file()
        size = _human((as_path / "model.bin").stat().st_size) if ok else "-"
        rows.append(ModelRow(configured, "?", size, "path", ok, "" if ok else "no model.bin there", True))
    for entry in manifest.values():
        missing = [d for d, m in _package_modules(entry) if module_dir(m) is None]
        if not missing:
            note = ""
            if entry.parts:
                target = joined_dir(entry, cache_dir)
                done = cache_is_valid(entry, target)
                note = f"joined in {target}" if done else f"joins on first use into {target}"
            rows.append(
                ModelRow(
                    entry.name,
                    ",".join(entry.languages),
                    _human(entry.model_size),
                    "package",
                    True,
                    note,
                    entry.name == configured,
                )
            )
        else:
            cached = _hub_cached(entry.hub) if entry.hub else None
            rows.append(
                ModelRow(
                    entry.name,
                    ",".join(entry.languages),
                    _human(entry.model_size),
                    "hub" if cached else "missing",
                    cached is not None,
                    entry.install_hint(),
                    entry.name == configured,
                )
            )
    for size in hub_names():
        if size in manifest:
            continue
        cached = _hub_cached(size)
        langs = "en" if size.endswith(".en") else "multilingual"
        bin_path = cached / "model.bin" if cached else None
        disk = _human(bin_path.stat().st_size) if bin_path and bin_path.is_file() else "-"
        rows.append(
            ModelRow(
                size,
                langs,
                disk,
                "hub",
                cached is not None,
                "cached" if cached else "downloaded on first use",
                size == configured,
            )
        )
    return rows


def format_table(rows: list[ModelRow]) -> str:
    table = [("", "MODEL", "LANGUAGES", "SIZE", "FROM", "PRESENT", "NOTE")]
    for r in rows:
        table.append(
            (
                "*" if r.default else "",
                r.name,
                r.languages,
                r.size,
                r.origin,
                "yes" if r.present else "no",
                r.note,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.append("")
    lines.append("* = configured model (model.name); any CTranslate2 model directory also works")
    return "\n".join(lines)


def cli_main(settings: Settings) -> int:
    print(format_table(describe_models(settings)))
    return 0
