#!/usr/bin/env bash
# Podman on a Debian machine without a Docker engine, as `make test-images` needs it (root):
# the packages, and the settings that work inside these machines' sandbox (runc as the runtime,
# cgroupfs, explicit ulimits). An existing containers.conf is left alone. Also the tools the
# image checks drive podman with: docker-registry (the registry `make push` is tested against),
# docker-compose (what the SageMaker SDK's local mode runs containers with) and, where no docker
# command exists, podman-docker (the SDK calls `docker info`).
set -euo pipefail
packages=(podman runc debootstrap docker-registry docker-compose)
command -v docker >/dev/null || packages+=(podman-docker)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" \
        || { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
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
