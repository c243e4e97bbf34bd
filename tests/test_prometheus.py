"""deploy/prometheus: the scrape configuration and alert rules, checked by Debian's promtool
(`check config`, `check rules`, `test rules` with alerts.test.yml), and every metric the rules
name is one the daemon really exports (streamer/metrics.py), so a renamed metric cannot leave an
alert that silently never fires.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer import metrics

from .components import tool

DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def promtool(*args: str) -> str:
    exe = tool("promtool", "prometheus")
    res = subprocess.run([exe, *args], cwd=DIR, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"promtool {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


@pytest.mark.component
def test_promtool_check_config_and_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    out = promtool("check", "rules", "alerts.yml")
    assert "SUCCESS: 7 rules found" in out, out


@pytest.mark.component
def test_promtool_unit_tests_of_the_alerts() -> None:
    out = promtool("test", "rules", "alerts.test.yml")
    assert "SUCCESS" in out and "FAILED" not in out, out


def test_every_alert_names_an_exported_metric() -> None:
    # Sample names as /metrics shows them (counters get `_total`), from the HELP/TYPE lines the
    # registry writes even for labelled metrics without samples yet.
    exported: set[str] = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        exported.add(family.name)
        if family.type == "counter":
            exported.add(family.name + "_total")
    used = set(re.findall(r"\bstreamer_[a-z_]+\b", (DIR / "alerts.yml").read_text()))
    assert used, "no streamer metric in alerts.yml"
    assert used <= exported, f"alerts.yml names metrics the daemon does not export: {used - exported}"
    # The ones the issue asks alerts for are all there.
    for name in (
        "streamer_degraded_level",
        "streamer_audio_captured_seconds_total",
        "streamer_audio_dropped_seconds_total",
        "streamer_decode_failures_total",
        "streamer_progress_age_seconds",
        "streamer_mqtt_connected",
    ):
        assert name in used, name
