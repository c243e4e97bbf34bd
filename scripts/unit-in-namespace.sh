#!/usr/bin/env bash
# Start the real unit under a real systemd on a machine (or container) that was not booted with
# systemd: a private systemd as PID 1 of new PID/mount/UTS/IPC/cgroup namespaces, which starts
# nothing but streamer.service (no sysinit.target, no journald, no network targets).
#
#   sudo make install-service              # /opt/streamer, /etc/systemd/system/streamer.service
#   sudo scripts/unit-in-namespace.sh      # prints the PID of the namespace's systemd
#   sudo nsenter -t PID -m -p systemctl status streamer
#   sudo nsenter -t PID -m -p systemctl reload streamer
#   sudo nsenter -t PID -m -p systemctl exit   # stops streamer, then this systemd
#
# The daemon's output goes to /run/streamer.log inside the namespace (/proc/PID/root/run/...).
# UNIT= names the installed unit (default /etc/systemd/system/streamer.service).
set -euo pipefail

UNIT="${UNIT:-/etc/systemd/system/streamer.service}"
if [ "$(id -u)" -ne 0 ]; then
    echo "unit-in-namespace: run as root" >&2
    exit 1
fi
if [ ! -f "$UNIT" ]; then
    echo "unit-in-namespace: $UNIT not found (sudo make install-service first)" >&2
    exit 1
fi

work="$(mktemp -d /tmp/streamer-ns.XXXXXX)"
# The unit as installed, minus what only a booted system provides: no default dependencies
# (sysinit.target would run the whole boot, tmpfiles included; only the stop at shutdown is kept),
# no network-online.target, and
# stdout to a file since there is no journald.
sed -e '/^After=network-online.target/d' -e '/^Wants=network-online.target/d' \
    -e 's/^\[Unit\]$/[Unit]\nDefaultDependencies=no\nConflicts=shutdown.target\nBefore=shutdown.target/' \
    -e 's/^\[Service\]$/[Service]\nStandardOutput=append:\/run\/streamer.log\nStandardError=inherit/' \
    "$UNIT" > "$work/streamer.service"
printf '[Unit]\nDescription=streamer only\nDefaultDependencies=no\nWants=streamer.service\n' \
    > "$work/streamer-only.target"

cat > "$work/init.sh" <<EOF
#!/bin/bash
set -e
# Mounts made from here on stay in this namespace.
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/system
cp "$work/streamer.service" "$work/streamer-only.target" /run/systemd/system/
export container=other
exec /lib/systemd/systemd --system --unit=streamer-only.target --show-status=no
EOF
chmod +x "$work/init.sh"

unshare --pid --fork --mount --uts --ipc --cgroup --mount-proc "$work/init.sh" > "$work/systemd.log" 2>&1 &
outer=$!
# The namespace's PID 1 is unshare's child; wait until it is systemd (after init.sh's exec).
pid=""
for _ in $(seq 1 100); do
    child="$(pgrep -P "$outer" || true)"
    if [ -n "$child" ] && [ "$(cat "/proc/$child/comm" 2>/dev/null)" = "systemd" ]; then
        pid="$child"
        break
    fi
    sleep 0.1
done
if [ -z "$pid" ]; then
    echo "unit-in-namespace: systemd did not start; see $work/systemd.log" >&2
    exit 1
fi
echo "$pid"
