"""One config object: TOML file < STREAMER_ environment < CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.cli import build_parser, settings_from_args
from streamer.config import ConfigError, load_settings


def test_defaults() -> None:
    s = load_settings()
    assert s.model.name == "base" and s.decoder.step == 0.5 and s.vad.end_silence == 0.5
    assert s.server.host == "127.0.0.1"


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('model = "tiny.en"\n[decoder]\nstep = 0.8\nbeam_size = 3\n[vad]\nend_silence = 0.7\n')
    monkeypatch.setenv("STREAMER_DECODER__STEP", "0.6")
    monkeypatch.setenv("STREAMER_VAD__END_SILENCE", "0.4")
    args = build_parser().parse_args(["transcribe", "x.flac", "--config", str(cfg), "--end-silence", "0.3"])
    s = settings_from_args(args)
    assert s.model.name == "tiny.en"  # file
    assert s.decoder.beam_size == 3  # file
    assert s.decoder.step == 0.6  # env beats file
    assert s.vad.end_silence == 0.3  # flag beats env


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[decoder]\nlanguages = ["ko", "en"]\ntask = "translate"\n')
    monkeypatch.setenv("STREAMER_CONFIG", str(cfg))
    s = load_settings()
    assert s.decoder.languages == ["ko", "en"] and s.decoder.task == "translate"


def test_error_names_key_value_and_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMER_SERVER__PORT", "eighty")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "server.port" in str(e.value) and "'eighty'" in str(e.value) and "integer" in str(e.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_example_config_is_valid_and_shows_the_defaults() -> None:
    from streamer.config import Settings

    example = Path(__file__).resolve().parent.parent / "systemd" / "streamer.toml"
    assert load_settings(example) == Settings()


def test_dev_null_is_an_empty_configuration() -> None:
    from streamer.config import Settings

    assert load_settings("/dev/null") == Settings()


def test_flag_does_not_hide_a_wrong_section(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text("server = 5\n")
    with pytest.raises(ConfigError, match="key 'server' = 5: must be a table"):
        load_settings(cfg, {"server.port": 9000})


def test_language_codes_are_whisper_codes() -> None:
    assert load_settings(overrides={"decoder.language": "yue"}).decoder.language == "yue"
    with pytest.raises(ConfigError, match=r"decoder\.language"):
        load_settings(overrides={"decoder.language": "english"})


def test_every_numeric_key_has_bounds() -> None:
    """A number without an upper bound was how 1e308 reached an allocation (issue 11)."""
    import annotated_types
    from pydantic import BaseModel

    from streamer.config import Settings

    unbounded = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
            elif ann in (int, float, int | None, float | None):
                kinds = {type(m) for m in f.metadata}
                lower = kinds & {annotated_types.Ge, annotated_types.Gt}
                upper = kinds & {annotated_types.Le, annotated_types.Lt}
                if not (lower and upper):
                    unbounded.append(f"{prefix}{name}")

    walk(Settings, "")
    # log_prob_threshold is an average log probability: <= 0 by nature, any negative value works.
    assert unbounded == ["decoder.log_prob_threshold"]


def test_model_batch_size_is_auto_or_a_bounded_integer() -> None:
    from streamer.decode.batch import resolve_batch_size

    assert load_settings(overrides={"model.batch_size": 4}).model.batch_size == 4
    auto = load_settings().model.batch_size
    assert (resolve_batch_size(auto, "cpu"), resolve_batch_size(auto, "cuda")) == (1, 8)
    for bad in (0, 65, "many"):
        with pytest.raises(ConfigError, match=r"model\.batch_size"):
            load_settings(overrides={"model.batch_size": bad})
