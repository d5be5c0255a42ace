"""`make test-images`: the registry round trip a user makes on the way to SageMaker, against a
real registry server on loopback:

    .venv/bin/python tests/images/check_registry.py --engine podman --tag cpu --tag gpu [ALGORITHM ...]

1. starts the CNCF Distribution registry (Debian's `docker-registry`, as ECR speaks the same
   Registry API) on a free 127.0.0.1 port with storage in a temporary folder;
2. `make push REGISTRY=127.0.0.1:PORT` pushes every image named (podman: --tls-verify=false, the
   registry has no TLS): each must then be listed under both its <version>-<flavour> and its
   moving <flavour> tag, with the manifest digest `make push` printed;
3. removes the first image from the engine's storage (every tag of it), pulls it back by digest
   alone (REGISTRY/smalgo-<algorithm>@sha256:...), checks that the same image came back (the same
   image ID, i.e. the same config and layers), and trains a job laid out by the SDK v2's
   local-mode code with the pulled image (check_images.check_train: exit 0, a model, no failure,
   nothing compiled); then tags it as it was.

Exits 1 on the first failed check, with what the engine or the registry said.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from check_images import REPO, CheckFailed, Engine, check, check_train, image_arguments, sdk_job
from test_serve_support import free_port

from smalgo.algorithms.registry import ALGORITHMS

REGISTRY_COMMAND = "docker-registry"
# The manifest types a pull by digest may meet: OCI (podman's push) and Docker's v2 schema 2.
MANIFEST_TYPES = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
PUSHED_LINE = re.compile(r"^pushed (\S+)  \((\S+)@(sha256:[0-9a-f]{64})\)$")


def start_registry(storage: Path) -> tuple[subprocess.Popen, str]:
    """The registry serving `storage` on a free loopback port; returns it and its host:port."""
    port = free_port()
    config = storage.parent / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(storage.parent / "registry.log", "w")
    process = subprocess.Popen([REGISTRY_COMMAND, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        check(process.poll() is None, f"{REGISTRY_COMMAND} exited:\n{(storage.parent / 'registry.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as answer:
                if answer.status == 200:
                    return process, address
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    process.kill()
    raise CheckFailed(f"{REGISTRY_COMMAND} did not answer on {address}/v2/ within 20 s")


def registry_tags(address: str, repository: str) -> list[str]:
    with urllib.request.urlopen(f"http://{address}/v2/{repository}/tags/list", timeout=10) as answer:
        return json.load(answer)["tags"] or []


def registry_digest(address: str, repository: str, reference: str) -> str:
    request = urllib.request.Request(
        f"http://{address}/v2/{repository}/manifests/{reference}", method="HEAD", headers={"Accept": MANIFEST_TYPES}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers["Docker-Content-Digest"]


def push(engine: Engine, address: str, algorithms: list[str], flavours: list[str]) -> dict[str, str]:
    """`make push` to the registry; returns each pushed name's digest, as make push printed it."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "push",
            f"REGISTRY={address}",
            f"CONTAINER_ENGINE={engine.command}",
            f"IMAGE_ALGORITHMS={' '.join(algorithms)}",
            f"FLAVOURS={' '.join(flavours)}",
            f"PUSH_FLAGS={'--tls-verify=false' if engine.command == 'podman' else ''}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout[-2000:] + result.stderr[-3000:]
    check(result.returncode == 0, f"make push exited {result.returncode}:\n{output}")
    digests = {}
    for line in result.stdout.splitlines():
        match = PUSHED_LINE.match(line)
        if match:
            digests[match[1]] = match[3]
    expected = {
        f"{address}/smalgo-{algorithm}:{tag}"
        for algorithm in algorithms
        for flavour in flavours
        for tag in (f"{version()}-{flavour}", flavour)
    }
    check(set(digests) == expected, f"make push reported {sorted(digests)}, not {sorted(expected)}:\n{result.stdout}")
    print(f"    make push: {len(digests)} names pushed in {time.perf_counter() - started:.1f} s")
    return digests


def version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    assert match, "pyproject.toml has no version"
    return match[1]


def check_listed(address: str, digests: dict[str, str]) -> None:
    for name, digest in digests.items():
        repository, tag = name.removeprefix(address + "/").rsplit(":", 1)
        check(tag in registry_tags(address, repository), f"the registry does not list {name}")
        served = registry_digest(address, repository, tag)
        check(served == digest, f"{name}: the registry serves manifest {served}, make push printed {digest}")
    print("    every name is listed by the registry, with the digest make push printed")


def check_pull_by_digest(
    engine: Engine, address: str, algorithm: str, flavour: str, digest: str, workdir: Path
) -> None:
    local = f"smalgo-{algorithm}:{flavour}"
    image_id = engine.run("image", "inspect", "--format", "{{.Id}}", local, check_ok=True).stdout.strip()
    engine.run("rmi", "--force", image_id, check_ok=True)
    # By ID: a short name may also match another registry's copy (podman resolves it to any).
    gone = engine.run("image", "inspect", image_id).returncode != 0
    check(gone, f"{local} ({image_id[:12]}) is still there after rmi")
    by_digest = f"{address}/smalgo-{algorithm}@{digest}"
    tls = ["--tls-verify=false"] if engine.command == "podman" else []
    started = time.perf_counter()
    engine.run("pull", *tls, by_digest, check_ok=True)
    pulled_id = engine.run("image", "inspect", "--format", "{{.Id}}", by_digest, check_ok=True).stdout.strip()
    engine.run("tag", pulled_id, local, check_ok=True)
    check(pulled_id == image_id, f"{by_digest} pulled as image {pulled_id[:12]}, pushed as {image_id[:12]}")
    print(
        f"    {local} removed, pulled back as {by_digest[: len(address) + 40]}... in "
        f"{time.perf_counter() - started:.1f} s: the same image ({image_id[:12]})"
    )
    host_dir, _ = sdk_job(workdir, algorithm)
    seconds = check_train(engine, by_digest, host_dir, algorithm)
    print(f"    the pulled image trained an SDK v2 local-mode job in {seconds:.1f} s: a model, output/success")
    # The image keeps only its local name, as before the check (the digest reference would
    # outlive the registry).
    if engine.command == "podman":
        engine.run("untag", pulled_id, check_ok=True)
        engine.run("tag", pulled_id, local, check_ok=True)
    else:
        engine.run("rmi", by_digest, check_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = image_arguments(__doc__.splitlines()[0], argv)
    if shutil.which(REGISTRY_COMMAND) is None:
        print(
            f"check_registry: {REGISTRY_COMMAND} is missing (Debian: apt-get install docker-registry; "
            "containers/setup_podman.sh installs it)",
            file=sys.stderr,
        )
        return 1
    engine = Engine(args.engine)
    algorithms = args.algorithms or list(ALGORITHMS)
    flavours = args.tag or ["cpu"]
    print(f"registry round trip ({engine.command}, {', '.join(flavours)} images of {', '.join(algorithms)}):")
    with tempfile.TemporaryDirectory(prefix="smalgo-registry-check-", dir="/var/tmp") as workdir:
        storage = Path(workdir) / "storage"
        storage.mkdir()
        registry, address = start_registry(storage)
        try:
            digests = push(engine, address, algorithms, flavours)
            check_listed(address, digests)
            first = f"{address}/smalgo-{algorithms[0]}:{flavours[0]}"
            check_pull_by_digest(engine, address, algorithms[0], flavours[0], digests[first], Path(workdir))
        except CheckFailed as exc:
            print(f"check_registry: FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            registry.terminate()
            registry.wait(timeout=30)
            for name in engine.run("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
                if name.startswith(address + "/"):
                    engine.run("rmi", name)
    print("check_registry: all checks passed")
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
