#!/usr/bin/env bash
# `make push`: tags the built images for a registry and pushes them with the engine that built
# them. For each ALGORITHM and each FLAVOUR (cpu, gpu):
#
#     smalgo-<algorithm>:<flavour>  ->  REGISTRY/smalgo-<algorithm>:<version>-<flavour>  (fixed)
#                                       REGISTRY/smalgo-<algorithm>:<flavour>            (moving)
#
# and prints each pushed name with its manifest digest (REGISTRY/smalgo-<algorithm>@sha256:...),
# the reference to give SageMaker when a tag must never move under a running job.
#
#     containers/push_images.sh ENGINE REGISTRY VERSION "FLAVOURS" ALGORITHM...
#
# PUSH_FLAGS (environment) goes to every push, e.g. --tls-verify=false for podman and a registry
# without TLS. Every image must exist before anything is pushed: a half-pushed set is worse than
# none.
set -euo pipefail
if [ $# -lt 5 ]; then
    sed -n '2,15p' "$0" >&2
    exit 2
fi
engine=$1 registry=${2%/} version=$3 flavours=$4
shift 4
if [ -z "$registry" ]; then
    echo "make push: REGISTRY is empty; e.g. make push REGISTRY=123456789012.dkr.ecr.us-east-1.amazonaws.com" >&2
    exit 2
fi
missing=()
for algorithm in "$@"; do
    for flavour in $flavours; do
        "$engine" image inspect "smalgo-$algorithm:$flavour" >/dev/null 2>&1 || missing+=("smalgo-$algorithm:$flavour")
    done
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "make push: not built: ${missing[*]} (make images, or FLAVOURS=cpu to push only those)" >&2
    exit 1
fi
digest_file=$(mktemp)
trap 'rm -f "$digest_file"' EXIT
for algorithm in "$@"; do
    for flavour in $flavours; do
        for target in "$registry/smalgo-$algorithm:$version-$flavour" "$registry/smalgo-$algorithm:$flavour"; do
            "$engine" tag "smalgo-$algorithm:$flavour" "$target"
            if [ "$engine" = podman ]; then
                # shellcheck disable=SC2086  # PUSH_FLAGS is a list of flags
                podman push --quiet ${PUSH_FLAGS:-} --digestfile "$digest_file" "$target"
                digest=$(cat "$digest_file")
            else
                # shellcheck disable=SC2086
                "$engine" push --quiet ${PUSH_FLAGS:-} "$target" >/dev/null
                digest=$("$engine" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$target" \
                    | sed -n "s|^$registry/smalgo-$algorithm@||p" | head -n 1)
            fi
            echo "pushed $target  ($registry/smalgo-$algorithm@$digest)"
        done
    done
done
