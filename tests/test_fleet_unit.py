"""Fast checks of the pieces several daemons rely on: job ids that name their daemon (what
HAProxy routes on), the setting behind them, and the credential refusals the MQTT sink treats as
fatal at start-up.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from streamer.api.jobs import JobStore, _valid_id, new_id
from streamer.config import ConfigError, load_settings
from streamer.sinks.mqtt import refused_credentials


def test_job_ids_carry_the_node_name() -> None:
    plain, named = new_id(), new_id("hall-2")
    assert plain.startswith("job_") and len(plain) == 28
    assert named.startswith("job_hall-2_") and len(named) == len("job_hall-2_") + 24
    assert _valid_id(plain) and _valid_id(named)
    for bad in (
        "job_" + "0" * 23,
        "job_a_" + "0" * 25,
        "job_A_" + "0" * 24,
        "job__" + "0" * 24,
        "job_-a_" + "0" * 24,
        "job_../x_" + "0" * 24,
        "job_" + "a" * 33 + "_" + "0" * 24,
        "file_" + "0" * 24,
    ):
        assert not _valid_id(bad), bad


def test_job_store_refuses_ids_that_are_not_job_ids(tmp_path: Any) -> None:
    store = JobStore(tmp_path)
    assert store.dir(new_id("a")).parent == tmp_path / "jobs"
    with pytest.raises(KeyError):
        store.dir("job_../../etc_" + "0" * 24)


def test_api_node_setting() -> None:
    assert load_settings(overrides={"api.node": "room-1"}).api.node == "room-1"
    assert load_settings().api.node is None
    for bad in ("Room", "a_b", "-a", "a" * 33, ""):
        with pytest.raises(ConfigError, match=r"api\.node"):
            load_settings(overrides={"api.node": bad})


def test_refused_credentials_are_told_apart_from_outages() -> None:
    assert refused_credentials(MqttConnectError(5))  # MQTT 3.1.1: not authorised
    assert refused_credentials(MqttConnectError(4))  # bad user name or password
    assert refused_credentials(MqttConnectError(ReasonCode(2, identifier=135)))  # MQTT 5
    assert not refused_credentials(MqttConnectError(3))  # server unavailable: retry
    assert not refused_credentials(OSError("connection refused"))
