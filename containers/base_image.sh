#!/usr/bin/env bash
# Prints the base image for the test builds (make test-images), making it first if need be:
#
#   python:3.11-slim-bookworm      when the engine has it or can pull it (a registry is reachable);
#   localhost/smalgo-base:bookworm otherwise: Debian bookworm with Python 3.11, made here with
#                                  debootstrap from Debian's package mirror, and kept.
#
# Usage: containers/base_image.sh ENGINE     (docker or podman); progress goes to stderr.
set -euo pipefail
ENGINE=${1:?usage: $0 docker|podman}
REGISTRY_BASE=python:3.11-slim-bookworm
LOCAL_BASE=localhost/smalgo-base:bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if "$ENGINE" image inspect "$REGISTRY_BASE" >/dev/null 2>&1 \
        || timeout 120 "$ENGINE" pull --quiet "docker.io/library/$REGISTRY_BASE" >/dev/null 2>&1; then
    echo "$REGISTRY_BASE"
    exit 0
fi
if "$ENGINE" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    echo "$LOCAL_BASE"
    exit 0
fi

echo "base_image: no registry reachable; building $LOCAL_BASE with debootstrap" >&2
command -v debootstrap >/dev/null || { echo "base_image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
root=$(mktemp -d /var/tmp/smalgo-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" >&2
# What an image never uses: package lists, documentation, translations.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*
tar -C "$root" -c . | "$ENGINE" import --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >&2
echo "$LOCAL_BASE"
