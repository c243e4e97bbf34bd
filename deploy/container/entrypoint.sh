#!/bin/sh
# Container entry point: refuse to start without the /data volume, then become `streamer`.
#
# Without a volume the transcripts and jobs would go to the container's own layer and vanish with
# it (or, on a read-only root, every write would fail while captions seem to run), so a missing
# mount is one line on stderr and exit status 1, before the model loads.
set -eu

DATA=${STREAMER_DATA:-/data}
if [ "${STREAMER_ALLOW_NO_VOLUME:-}" != "1" ]; then
    # A mount point is listed in field 5 of /proc/self/mountinfo.
    if ! cut -d' ' -f5 /proc/self/mountinfo | grep -qx "$DATA"; then
        echo "streamer: $DATA is not a mounted volume: transcripts and jobs need one (podman/docker run -v streamer-data:$DATA ...; STREAMER_ALLOW_NO_VOLUME=1 to run without)" >&2
        exit 1
    fi
    probe="$DATA/.streamer-write-test.$$"
    if ! (: >"$probe") 2>/dev/null; then
        echo "streamer: the volume at $DATA is not writable by uid $(id -u) (give it to uid 10001, or run with --user matching its owner)" >&2
        exit 1
    fi
    rm -f "$probe"
fi
# A TOML file mounted at the documented place is used without naming it; STREAMER_CONFIG (or
# --config) still picks another. STREAMER_* variables win over the file, as everywhere.
if [ -z "${STREAMER_CONFIG:-}" ] && [ -f /etc/streamer/streamer.toml ]; then
    export STREAMER_CONFIG=/etc/streamer/streamer.toml
fi
# exec: the daemon becomes PID 1 itself, so SIGTERM from `podman stop` reaches its handler
# (close the open sentence with a final, flush every sink, exit 0).
exec /opt/streamer/bin/streamer "$@"
