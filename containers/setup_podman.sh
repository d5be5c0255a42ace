#!/usr/bin/env bash
# Podman on a Debian machine without a Docker engine, as `make test-images` needs it (root):
# the packages, and the settings that work inside these machines' sandbox (runc as the runtime,
# cgroupfs, explicit ulimits). An existing containers.conf is left alone.
set -euo pipefail
packages=(podman runc debootstrap)
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${packages[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${packages[@]}"; }
fi
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ]; then
    mkdir -p "$(dirname "$conf")"
    cat > "$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
fi
podman --version
