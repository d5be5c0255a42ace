"""`make bench`: each benchmarks/*/run.py compares smalgo with the peer a user would otherwise
pick (scikit-learn, XGBoost itself, myfm, the SageMaker SDK, numpy, a bare Flask app) and records
its comparisons here, on the benchmark result schema (results.py, kind "peers"):

    benchmarks/results/<machine>.json   every benchmark's last comparisons on this machine class,
                                        by benchmark name (one run replaces only its own entry)
    benchmarks/results/<machine>.md     the same as Markdown tables with the ratios, rewritten
                                        on every record (benchmark-report's peer tables)

    from smalgo.containers.benchmark.peers import Comparison, record
    record("kmeans", [Comparison("500,000 x 50, k=20", "training time", "s", ours, "scikit-learn
           MiniBatchKMeans", theirs, higher_is_better=False)], results_dir=Path("benchmarks/results"))
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import machine, prices, report, results


@dataclass(frozen=True)
class Comparison:
    """One figure of smalgo's against the same figure of a peer, in the same run."""

    case: str  # what was measured on what data, e.g. "500,000 x 50, k=20"
    metric: str  # e.g. "training time", "throughput", "test msd"
    unit: str  # e.g. "s", "MB/s", "requests/s"
    smalgo: float
    peer: str
    peer_value: float
    higher_is_better: bool

    @property
    def ratio(self) -> float | None:
        """How many times better smalgo's figure is than the peer's (below 1: worse)."""
        if not self.smalgo or not self.peer_value:
            return None
        return self.smalgo / self.peer_value if self.higher_is_better else self.peer_value / self.smalgo

    def as_dict(self) -> dict:
        return {
            "case": self.case,
            "metric": self.metric,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "smalgo": self.smalgo,
            "peer": self.peer,
            "peer_value": self.peer_value,
            "ratio": self.ratio,
        }


def record(benchmark: str, comparisons: list[Comparison], *, results_dir: Path) -> Path:
    """Put `benchmark`'s comparisons into this machine's results file (replacing its earlier
    ones) and rewrite the Markdown beside it; returns the JSON's path."""
    described = machine.describe_machine(machine.resolve_instance_type(None))
    path = results_dir / f"{described['name']}.json"
    if path.exists():
        result = results.read_result(path)
        if result["kind"] != "peers":
            raise ValueError(f"{path} holds a {result['kind']} result, not the peers' comparisons")
        result.update(machine=described, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        result = results.header("peers", described, prices.resolve_price(described["instance_type"], None))
        result["benchmarks"] = {}
    result["benchmarks"][benchmark] = {
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "comparisons": [c.as_dict() for c in comparisons],
    }
    results.write_json(result, path)
    markdown = path.with_suffix(".md")
    markdown.write_text(report.markdown_report([], [result], plots=[]) + "\n")
    print(f"\nRecorded in {path} and {markdown}")
    return path
