"""The machine a benchmark runs on: its instance type and what it has (vCPUs, memory, CPU, GPUs).

The instance type is, in this order: `--instance-type`; $SMALGO_INSTANCE_TYPE;
`current_instance_type` in resourceconfig.json (what SageMaker writes into a training job's
/opt/ml/input/config); EC2's instance metadata service, IMDSv2 (a PUT for a session token, then
a GET of /latest/meta-data/instance-type with it), given at most a second in all, since off EC2
nothing answers at 169.254.169.254; else unknown.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from smalgo.algorithms.errors import UserError
from smalgo.recordio.parallel import available_cpus

from ..paths import JobPaths

INSTANCE_TYPE_VARIABLE = "SMALGO_INSTANCE_TYPE"
IMDS_URL = "http://169.254.169.254"
# The whole lookup (token and instance type) gets this long before the benchmark goes on without it.
IMDS_BUDGET_SECONDS = 1.0
IMDS_TOKEN_TTL_SECONDS = 60
TOKEN_PATH = "/latest/api/token"
INSTANCE_TYPE_PATH = "/latest/meta-data/instance-type"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
# An instance type as AWS spells them: ml.m5.xlarge, m5.xlarge, c7i.metal-24xl, g5.12xlarge.
INSTANCE_TYPE_PATTERN = re.compile(r"^(ml\.)?[a-z][a-z0-9-]*\.[a-z0-9-]+$")


@dataclass(frozen=True)
class InstanceType:
    name: str | None  # None: unknown
    source: str  # where it came from, said in the result


def check_instance_type(name: str, what: str) -> str:
    """`name` stripped, or a UserError naming `what` (the option or variable it came from)."""
    name = name.strip()
    if not INSTANCE_TYPE_PATTERN.match(name):
        raise UserError(f"{what} {name!r} is not an instance type (e.g. ml.m5.xlarge or m5.xlarge).")
    return name


def resolve_instance_type(
    option: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    resourceconfig: Path | None = None,
    imds_url: str = IMDS_URL,
    imds_budget: float = IMDS_BUDGET_SECONDS,
) -> InstanceType:
    """The instance type and its source (see the module's docstring for the order)."""
    env = os.environ if environ is None else environ
    if option:
        return InstanceType(check_instance_type(option, "--instance-type"), "--instance-type")
    if env.get(INSTANCE_TYPE_VARIABLE, "").strip():
        value = check_instance_type(env[INSTANCE_TYPE_VARIABLE], INSTANCE_TYPE_VARIABLE)
        return InstanceType(value, INSTANCE_TYPE_VARIABLE)
    if resourceconfig is None:
        try:
            resourceconfig = JobPaths.from_environment(env).resourceconfig_file
        except UserError:
            resourceconfig = None
    from_job = _resourceconfig_instance_type(resourceconfig) if resourceconfig else None
    if from_job:
        return InstanceType(from_job, f"{resourceconfig} (current_instance_type)")
    from_ec2 = imds_instance_type(imds_url, budget_seconds=imds_budget)
    if from_ec2:
        return InstanceType(from_ec2, "EC2 instance metadata (IMDSv2)")
    return InstanceType(
        None, f"none found: no --instance-type, no ${INSTANCE_TYPE_VARIABLE}, no resourceconfig.json, not on EC2"
    )


def _resourceconfig_instance_type(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get("current_instance_type")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(value, str) and INSTANCE_TYPE_PATTERN.match(value.strip()):
        return value.strip()
    return None


def imds_instance_type(base_url: str = IMDS_URL, *, budget_seconds: float = IMDS_BUDGET_SECONDS) -> str | None:
    """The instance type EC2's IMDSv2 at `base_url` gives, or None when nothing answers as it
    does within `budget_seconds` (a refused connection, a timeout, an error status, a body that
    is not an instance type). Direct connections: a proxy must never see this."""
    deadline = time.monotonic() + budget_seconds
    parts = urlsplit(base_url)
    host, port = parts.hostname or "", parts.port or 80
    try:
        token = _imds_request(
            host,
            port,
            "PUT",
            path=TOKEN_PATH,
            headers={TOKEN_TTL_HEADER: str(IMDS_TOKEN_TTL_SECONDS)},
            deadline=deadline,
        )
        if not token:
            return None
        answer = _imds_request(
            host, port, "GET", path=INSTANCE_TYPE_PATH, headers={TOKEN_HEADER: token}, deadline=deadline
        )
    except (OSError, http.client.HTTPException, UnicodeDecodeError):
        return None
    if answer and INSTANCE_TYPE_PATTERN.match(answer):
        return answer
    return None


def _imds_request(
    host: str, port: int, method: str, *, path: str, headers: dict[str, str], deadline: float
) -> str | None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the instance metadata lookup ran out of time")
    connection = http.client.HTTPConnection(host, port, timeout=remaining)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read(256).decode("ascii").strip()
    finally:
        connection.close()
    return body if response.status == 200 else None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model name", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup v2 quota allows (`docker run --cpus`), or None without a quota."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def memory_gib(meminfo: Path = Path("/proc/meminfo"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The machine's memory, or the container's limit when that is lower."""
    total = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit_text = (cgroup_root / "memory.max").read_text().strip()
        limit = None if limit_text == "max" else int(limit_text)
    except (OSError, ValueError):
        limit = None
    if limit is not None and (total is None or limit < total):
        total = limit
    return None if total is None else round(total / 2**30, 1)


def gpus() -> list[str]:
    """The NVIDIA GPUs the driver shows (nvidia-smi, or the driver's /proc files), without
    opening them: a CUDA context in this process would be inherited by nothing and cost seconds."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listed = subprocess.run(
                [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if listed.returncode == 0 and listed.stdout.strip():
                return [line.strip() for line in listed.stdout.splitlines() if line.strip()]
        except (OSError, subprocess.TimeoutExpired):
            pass
    names = []
    for information in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            for line in Path(information).read_text().splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return names


def describe_machine(instance: InstanceType) -> dict:
    """What the result says about the machine. `vcpus` is what this process may use (its CPU
    affinity: `--cpus`, a container's --cpuset-cpus), lowered to a cgroup quota (--cpus of docker)."""
    affinity = available_cpus()
    quota = cpu_quota()
    vcpus: float = affinity if quota is None else min(affinity, quota)
    model = cpu_model()
    host_vcpus = os.cpu_count() or affinity
    return {
        "name": machine_name(instance.name, model, host_vcpus),
        "instance_type": instance.name,
        "instance_type_source": instance.source,
        "vcpus": vcpus,
        "host_vcpus": host_vcpus,
        "cpu_quota": quota,
        "cpu_model": model,
        "architecture": platform.machine(),
        "memory_gib": memory_gib(),
        "gpus": gpus(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def machine_name(instance_type: str | None, model: str, host_vcpus: int) -> str:
    """A file-name-safe name of the machine class: its instance type when known, else its CPU
    model and CPU count (e.g. amd-epyc-2cpu)."""
    if instance_type:
        return re.sub(r"[^a-z0-9.-]+", "-", instance_type.lower()).strip("-")
    words = re.sub(r"\((r|tm)\)|cpu|processor|@.*$|\bwith\b.*$", " ", model.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", words).strip("-")[:40].strip("-") or "machine"
    return f"{slug}-{host_vcpus}cpu"
