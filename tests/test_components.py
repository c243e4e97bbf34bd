"""The policy for missing components: skip locally, fail under CI."""

from __future__ import annotations

import pytest

from .components import in_ci, require, tool


@pytest.mark.parametrize(
    ("value", "ci"), [("", False), ("0", False), ("false", False), ("true", True), ("1", True)]
)
def test_ci_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str, ci: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_a_missing_component_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    require("anything", True)  # present: nothing happens
    with pytest.raises(pytest.skip.Exception, match=r"OBS Studio is not available \(apt-get install obs"):
        require("OBS Studio", False, "apt-get install obs-studio")
    monkeypatch.setenv("CI", "true")
    require("anything", True)
    with pytest.raises(pytest.fail.Exception, match=r"OBS Studio is not available.*CI is set"):
        require("OBS Studio", False, "apt-get install obs-studio")
    with pytest.raises(
        pytest.fail.Exception, match=r"no-such-program-here is not available.*apt-get install x"
    ):
        tool("no-such-program-here", "x")
