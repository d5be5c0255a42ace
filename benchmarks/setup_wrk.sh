#!/usr/bin/env bash
# wrk (https://github.com/wg/wrk), the HTTP load generator of `make bench-serve` and of
# `smalgo benchmark` outside the images (which fall back to a built-in generator without it):
# installed from the system's packages when it is missing (`make bench-setup`, which the
# benchmark targets that need it run first). Debian/Ubuntu: apt-get; Fedora/RHEL (EPEL): dnf;
# macOS: Homebrew. Needs root (or sudo) for apt-get and dnf.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
    echo "wrk: $(command -v wrk)"
    exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    elif ! command -v brew >/dev/null 2>&1; then
        echo "setup_wrk.sh: wrk is missing and installing it needs root (or sudo)" >&2
        exit 1
    fi
fi
if command -v apt-get >/dev/null 2>&1; then
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq wrk
elif command -v dnf >/dev/null 2>&1; then
    "${as_root[@]}" dnf install -y wrk
elif command -v brew >/dev/null 2>&1; then
    brew install wrk
else
    echo "setup_wrk.sh: no apt-get, dnf or brew here; install wrk (https://github.com/wg/wrk) by hand" >&2
    exit 1
fi
echo "wrk: $(command -v wrk)"
