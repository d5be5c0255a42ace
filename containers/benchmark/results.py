"""The benchmark's result file: one JSON object, its schema named and versioned.

    {
      "schema": "smalgo-benchmark", "schema_version": 1,
      "kind": "benchmark"              (`smalgo benchmark`) or "peers" (`make bench`, peers.py),
      "created": ISO time, "smalgo": version,
      "machine": {name, instance_type, instance_type_source, vcpus, host_vcpus, cpu_quota,
                  cpu_model, architecture, memory_gib, gpus, os, python},
      "price": {per_hour, currency, source, priced_as},
      kind "benchmark":
        "settings": {rows, features, density, cpus, workers, load_generator, connections,
                     seconds_per_load, quick},
        "algorithms": [{name, title, hyperparameters,
                        "training":  [{form, content_type, bytes, records, seconds, records_per_s,
                                       records_per_s_per_vcpu, usd_per_million} | {form, skipped}],
                        "inference": [{form, content_type, accept, records_per_request,
                                       request_bytes, generator, connections, seconds, requests,
                                       errors, requests_per_s, records_per_s, p50_ms, p99_ms,
                                       records_per_s_per_vcpu, usd_per_million}]}],
        "wall_seconds": the whole run
      kind "peers":
        "benchmarks": {name: {"recorded": ISO time, "command": ..., "comparisons": [{case,
                       metric, unit, higher_is_better, smalgo, peer, peer_value, ratio}]}}
    }

A reader refuses a file of another schema or a newer version, naming the file.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path

from smalgo.algorithms.errors import UserError

SCHEMA = "smalgo-benchmark"
SCHEMA_VERSION = 1
KINDS = ("benchmark", "peers")


def header(kind: str, machine: dict, price: dict) -> dict:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "smalgo": smalgo_version(),
        "machine": machine,
        "price": price,
    }


def smalgo_version() -> str:
    try:
        return metadata.version("smalgo")
    except metadata.PackageNotFoundError:
        return "unknown"


def read_result(path: Path) -> dict:
    """A result file, checked to be one this version reads; UserError naming the file if not."""
    try:
        result = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc}).") from None
    except ValueError as exc:
        raise UserError(f"{path}: not JSON ({exc}).") from None
    if not isinstance(result, dict) or result.get("schema") != SCHEMA:
        raise UserError(f'{path}: not a smalgo benchmark result (no "schema": "{SCHEMA}").')
    version = result.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UserError(
            f"{path}: schema_version {version!r}; this smalgo reads results up to version {SCHEMA_VERSION} "
            f"(a newer smalgo wrote it)."
        )
    if result.get("kind") not in KINDS:
        raise UserError(f"{path}: kind {result.get('kind')!r} is none of {', '.join(KINDS)}.")
    return result


def write_json(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path


def machine_label(result: dict) -> str:
    """How tables and plots name a result's machine: its instance type (or machine name) and the
    vCPUs the run used."""
    machine = result["machine"]
    name = machine.get("instance_type") or machine["name"]
    return f"{name}, {format_vcpus(machine['vcpus'])} vCPU"


def format_vcpus(vcpus: float) -> str:
    return f"{vcpus:g}"


def figure(value: float | None, digits: int = 3) -> str:
    """A number for a table: 3 significant digits, thousands separated; '-' for none."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    decimals = digits - 1 - int(f"{magnitude:e}".split("e")[1])
    return f"{value:,.{max(0, decimals)}f}"


def markdown_table(header_row: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A GitHub Markdown table; `align` holds 'l' or 'r' per column."""
    lines = ["| " + " | ".join(header_row) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
