#!/usr/bin/env bash
# Build the local base image for the container test: Debian 12 (bookworm) minbase with Python 3.
#
# The published Containerfile defaults to the official slim Python image; this machine and CI have
# no container registry, so the test builds an equivalent base from Debian's own packages
# (debootstrap reaches the Debian mirror like apt does) and imports it into podman.
#
# Idempotent and cached: nothing is done when the image exists; otherwise the root filesystem
# tarball kept in $CACHE (default /var/cache/streamer-ci) is imported again, and only when that is
# missing too does debootstrap run (2-4 minutes).
#
# Usage: scripts/container-base.sh [IMAGE]     (default localhost/streamer-base:bookworm)
set -euo pipefail

IMAGE=${1:-localhost/streamer-base:bookworm}
CACHE=${CACHE:-/var/cache/streamer-ci}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TARBALL="$CACHE/bookworm-minbase-python3.tar"
PODMAN=(podman --runtime runc)

if "${PODMAN[@]}" image exists "$IMAGE"; then
    echo "container-base: $IMAGE exists"
    exit 0
fi

if [ ! -s "$TARBALL" ]; then
    mkdir -p "$CACHE"
    root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "container-base: debootstrap bookworm into $root"
    # python3-venv brings ensurepip (the Containerfile makes a venv); ca-certificates for users who
    # point pip at an index. libstdc++6 and libgomp1: onnxruntime and CTranslate2 link them.
    nice debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates,libstdc++6,libgomp1 \
        bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
        tail -20 "$CACHE/debootstrap.log" >&2
        echo "container-base: debootstrap failed (log: $CACHE/debootstrap.log)" >&2
        exit 1
    }
    # What an image does not need (as Debian's own slim images leave out): package caches and
    # lists, documentation, man pages and message translations (33 MB).
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
fi

echo "container-base: importing $TARBALL as $IMAGE"
"${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$TARBALL" "$IMAGE" >/dev/null
echo "container-base: $IMAGE ready"
