# Developer entry points. `make test` works from a fresh clone: it creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall only when a dependency list changes. The venv holds the runtime with its test tools and
# the benchmarks, a separate distribution (bench/, see bench/README.md), both editable.
STAMP := $(VENV)/.installed

.PHONY: venv run test check lint clean-venv install-service

venv: $(STAMP)

$(STAMP): pyproject.toml bench/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]' -e ./bench
	touch $@

run: venv
	$(BIN)/streamer run

# The whole suite: what CI runs.
test: venv
	$(BIN)/python -m pytest -q

# The fast tier for the edit loop: pure and unit tests, no model, no real component (OBS, Chromium,
# mosquitto, PulseAudio, systemd, ffmpeg, ...), nothing marked slow. The markers are in pyproject.toml.
check: venv
	$(BIN)/python -m pytest -q -m "not slow and not model and not component"

lint: venv
	$(BIN)/ruff check streamer tests bench
	$(BIN)/mypy

clean-venv:
	rm -rf $(VENV)

# As root: a virtual environment in /opt/streamer, the systemd unit and /etc/streamer/streamer.toml.
install-service:
	scripts/install-service.sh
