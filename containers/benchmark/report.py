"""`smalgo benchmark-report RESULT.json ...`: benchmark results from several machines (or one
machine with several `--cpus`) as one Markdown table and PNG plots: records/s per instance type
and per vCPU, dollars per million records, latency, and the scaling with vCPUs when the results
hold several CPU counts of one machine. Results of `make bench` (kind "peers") add their tables
of ratios against the peers.

The plots need matplotlib, an optional extra: pip install 'smalgo[report]'. Without it the
Markdown is still written, and the command says how to get the plots (or pass --no-plots).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

from smalgo.algorithms.errors import UserError

from . import results
from .run import FORM_NAMES

DEFAULT_OUTPUT = "smalgo-benchmark-report"
REPORT_FILE = "report.md"
# The loads the plots show, of the four measured: the real-time case and the batch case.
SINGLE, BATCH = ("csv", 1), ("recordio", 1000)
LOADS = (("csv", 1), ("csv", 1000), ("recordio", 1), ("recordio", 1000))
PLOT_FILES = ("throughput.png", "per_vcpu.png", "cost.png", "latency.png", "scaling.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results", nargs="+", metavar="RESULT", help="result files (.json) of smalgo benchmark or make bench"
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        default=DEFAULT_OUTPUT,
        help=f"where to write {REPORT_FILE} and the PNGs (default ./{DEFAULT_OUTPUT})",
    )
    parser.add_argument("--no-plots", action="store_true", help="write the Markdown only (no matplotlib needed)")


def run(args: argparse.Namespace) -> int:
    try:
        loaded = [results.read_result(Path(path)) for path in args.results]
    except UserError as exc:
        print(f"smalgo benchmark-report: {exc}", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    benchmarks = sorted((r for r in loaded if r["kind"] == "benchmark"), key=_order)
    peers = [r for r in loaded if r["kind"] == "peers"]
    plots: list[Path] = []
    missing_matplotlib = False
    if benchmarks and not args.no_plots:
        try:
            plots = write_plots(benchmarks, output)
        except ImportError:
            missing_matplotlib = True
    text = markdown_report(benchmarks, peers, plots=[p.name for p in plots])
    (output / REPORT_FILE).write_text(text + "\n")
    print(text)
    written = ", ".join(str(p) for p in [output / REPORT_FILE, *plots])
    print(f"\nWritten: {written}", file=sys.stderr)
    if missing_matplotlib:
        print(
            "smalgo benchmark-report: the PNG plots need matplotlib: pip install 'smalgo[report]' "
            "(or pass --no-plots for the Markdown alone).",
            file=sys.stderr,
        )
        return 1
    return 0


def _order(result: dict) -> tuple:
    machine = result["machine"]
    return (machine.get("instance_type") or machine["name"], machine["vcpus"])


def _load_name(form: str, records: int) -> str:
    return f"{FORM_NAMES[form]}, {records:,} record{'s' if records > 1 else ''}"


def _load(entry: dict, form: str, records: int) -> dict | None:
    for item in entry["inference"]:
        if item["form"] == form and item["records_per_request"] == records:
            return item
    return None


def _trained(entry: dict, form: str) -> dict | None:
    for item in entry["training"]:
        if item["form"] == form and "records_per_s" in item:
            return item
    return None


def markdown_report(benchmarks: list[dict], peers: list[dict], *, plots: list[str]) -> str:
    lines: list[str] = []
    if benchmarks:
        lines += ["### Training (records/s of one pass, the whole job, File mode)", ""]
        rows = []
        for result in benchmarks:
            label = results.machine_label(result)
            for entry in result["algorithms"]:
                recordio, csv = _trained(entry, "recordio") or {}, _trained(entry, "csv") or {}
                rows.append(
                    [
                        label,
                        entry["name"],
                        results.figure(recordio.get("records_per_s")),
                        results.figure(csv.get("records_per_s")),
                        results.figure(recordio.get("records_per_s_per_vcpu")),
                        results.figure(recordio.get("usd_per_million")),
                    ]
                )
        lines.append(
            results.markdown_table(
                ["machine", "algorithm", "RecordIO", "CSV", "RecordIO per vCPU", "$ per million (RecordIO)"],
                rows,
                ["l", "l", "r", "r", "r", "r"],
            )
        )
        lines += [
            "",
            "### Inference (the server under load; each cell: records/s, and p50 / p99 latency in ms)",
            "",
        ]
        rows = []
        for result in benchmarks:
            label = results.machine_label(result)
            for entry in result["algorithms"]:
                cells = []
                for load in LOADS:
                    item = _load(entry, *load)
                    cells.append(
                        "-"
                        if item is None
                        else f"{results.figure(item['records_per_s'])} ({results.figure(item['p50_ms'])} / "
                        f"{results.figure(item['p99_ms'])})"
                    )
                batch = _load(entry, *BATCH) or {}
                rows.append([label, entry["name"], *cells, results.figure(batch.get("usd_per_million"))])
        lines.append(
            results.markdown_table(
                ["machine", "algorithm", *(_load_name(*load) for load in LOADS), "$ per million (RecordIO, 1,000)"],
                rows,
                ["l", "l", "r", "r", "r", "r", "r"],
            )
        )
        scaling = _scaling_rows(benchmarks)
        if scaling:
            lines += ["", "### Scaling with vCPUs (records/s, and the speed-up over the fewest vCPUs)", ""]
            lines.append(
                results.markdown_table(
                    [
                        "machine",
                        "algorithm",
                        "vCPUs",
                        "training (RecordIO)",
                        "speed-up",
                        "inference (1,000 RecordIO)",
                        "speed-up",
                    ],
                    scaling,
                    ["l", "l", "r", "r", "r", "r", "r"],
                )
            )
        lines += ["", _settings_note(benchmarks)]
        if plots:
            lines += [""] + [f"![{Path(name).stem}]({name})" for name in plots]
    for result in peers:
        if lines:
            lines.append("")
        lines += _peer_tables(result)
    return "\n".join(lines)


def _settings_note(benchmarks: list[dict]) -> str:
    notes = ["Runs:", ""]
    for result in benchmarks:
        s, m = result["settings"], result["machine"]
        price = result["price"]
        cost = f"${price['per_hour']:g}/hour ({price['source']})" if price["per_hour"] else "no price"
        workers = f"{s['workers']} worker{'s' if s['workers'] > 1 else ''}"
        notes.append(
            f"- {results.machine_label(result)}: {m['cpu_model']}; {s['rows']:,} x {s['features']} "
            f"{'sparse' if s['sparse'] else 'dense'}; {workers}, {s['load_generator']} with {s['connections']} "
            f"connections x {s['seconds_per_load']:g} s a load; {cost}; smalgo {result['smalgo']}, "
            f"{result['created'][:10]}"
        )
    return "\n".join(notes)


def _scaling_groups(benchmarks: list[dict]) -> dict[str, list[dict]]:
    """Results of one machine (by name), on the same data, at two or more vCPU counts, fewest
    vCPUs first; by the machine's name (and the data's shape, when a machine has several)."""
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for result in benchmarks:
        s = result["settings"]
        by_key[(result["machine"]["name"], s["rows"], s["features"], s["density"])].append(result)
    names = [key[0] for key in by_key]
    groups = {}
    for (name, rows, features, density), group in by_key.items():
        label = (
            name
            if names.count(name) == 1
            else f"{name}, {rows:,} x {features}" + (f" density {density:g}" if density < 1 else "")
        )
        groups[label] = group
    return {
        name: sorted(group, key=lambda r: r["machine"]["vcpus"])
        for name, group in groups.items()
        if len({r["machine"]["vcpus"] for r in group}) > 1
    }


def _scaling_rows(benchmarks: list[dict]) -> list[list[str]]:
    rows = []
    for name, group in _scaling_groups(benchmarks).items():
        algorithms = [e["name"] for e in group[0]["algorithms"]]
        for algorithm in algorithms:
            base_train = base_infer = None
            for result in group:
                entry = next((e for e in result["algorithms"] if e["name"] == algorithm), None)
                if entry is None:
                    continue
                trained, served = _trained(entry, "recordio"), _load(entry, *BATCH)
                train_rate = trained["records_per_s"] if trained else None
                infer_rate = served["records_per_s"] if served else None
                base_train = base_train or train_rate
                base_infer = base_infer or infer_rate
                rows.append(
                    [
                        name,
                        algorithm,
                        results.format_vcpus(result["machine"]["vcpus"]),
                        results.figure(train_rate),
                        f"{train_rate / base_train:.2f}x" if train_rate and base_train else "-",
                        results.figure(infer_rate),
                        f"{infer_rate / base_infer:.2f}x" if infer_rate and base_infer else "-",
                    ]
                )
    return rows


def _peer_tables(result: dict) -> list[str]:
    label = result["machine"].get("instance_type") or result["machine"]["name"]
    lines = [f"### smalgo against its peers on {label} ({result['machine']['cpu_model']})", ""]
    rows = []
    for name, benchmark in sorted(result["benchmarks"].items()):
        for c in benchmark["comparisons"]:
            better = "higher" if c["higher_is_better"] else "lower"
            unit = f"{c['unit']}, " if c["unit"] else ""
            rows.append(
                [
                    name,
                    c["case"],
                    f"{c['metric']} ({unit}{better} is better)",
                    results.figure(c["smalgo"]),
                    c["peer"],
                    results.figure(c["peer_value"]),
                    f"{c['ratio']:.2f}x" if c["ratio"] is not None else "-",
                ]
            )
    lines.append(
        results.markdown_table(
            ["benchmark", "case", "metric", "smalgo", "peer", "peer's", "smalgo's advantage"],
            rows,
            ["l", "l", "l", "r", "l", "r", "r"],
        )
    )
    lines += [
        "",
        "smalgo's advantage: how many times better smalgo's figure is (below 1: the peer's is better). "
        "Recorded by: "
        + "; ".join(
            f"`{benchmark['command']}` ({benchmark['recorded'][:10]})"
            for _, benchmark in sorted(result["benchmarks"].items())
        )
        + ".",
    ]
    return lines


def write_plots(benchmarks: list[dict], output: Path) -> list[Path]:
    """The PNGs (ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    labels = [results.machine_label(r) for r in benchmarks]
    algorithms = list(dict.fromkeys(e["name"] for r in benchmarks for e in r["algorithms"]))

    def grouped(ax, values: list[list[float | None]], title: str, *, ylabel: str) -> None:
        """Bars per algorithm, one per result (values[result][algorithm]); a logarithmic axis
        (from the power of ten below the smallest bar) when the bars span more than 50x."""
        width = 0.8 / max(1, len(values))
        for i, (label, row) in enumerate(zip(labels, values, strict=True)):
            xs = [a + i * width for a in range(len(algorithms)) if row[a] is not None]
            ax.bar(xs, [v for v in row if v is not None], width, label=label)
        ax.set_xticks([a + 0.4 - width / 2 for a in range(len(algorithms))])
        ax.set_xticklabels(algorithms, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        shown = [v for row in values for v in row if v]
        if shown and max(shown) / min(shown) > 50:
            ax.set_yscale("log")
            ax.set_ylim(bottom=10 ** math.floor(math.log10(min(shown))))
        ax.grid(axis="y", alpha=0.3)

    def per_result(pick) -> list[list[float | None]]:
        table = []
        for result in benchmarks:
            by_name = {e["name"]: e for e in result["algorithms"]}
            table.append([pick(by_name[a]) if a in by_name else None for a in algorithms])
        return table

    def train_rate(key: str):
        return lambda e: (_trained(e, "recordio") or {}).get(key)

    def load_value(form: str, records: int, key: str):
        return lambda e: (_load(e, form, records) or {}).get(key)

    def save(fig, name: str) -> None:
        handles, names = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=max(1, min(4, len(names))), fontsize=8)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        path = output / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    for name, key, unit in (
        ("throughput.png", "records_per_s", "records/s"),
        ("per_vcpu.png", "records_per_s_per_vcpu", "records/s per vCPU"),
    ):
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
        grouped(axes[0], per_result(train_rate(key)), "training (RecordIO, one pass)", ylabel=unit)
        grouped(axes[1], per_result(load_value(*SINGLE, key)), "inference, 1-record CSV requests", ylabel=unit)
        grouped(axes[2], per_result(load_value(*BATCH, key)), "inference, 1,000-record RecordIO requests", ylabel=unit)
        save(fig, name)

    if any(r["price"]["per_hour"] for r in benchmarks):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
        grouped(
            axes[0], per_result(train_rate("usd_per_million")), "training (RecordIO)", ylabel="$ per million records"
        )
        grouped(
            axes[1],
            per_result(load_value(*BATCH, "usd_per_million")),
            "inference (1,000-record RecordIO)",
            ylabel="$ per million records",
        )
        save(fig, "cost.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, (form, records) in zip(axes, (SINGLE, BATCH), strict=True):
        grouped(
            ax,
            per_result(load_value(form, records, "p99_ms")),
            f"p99 latency, {records:,}-record {FORM_NAMES[form]}",
            ylabel="ms",
        )
        p50 = per_result(load_value(form, records, "p50_ms"))
        width = 0.8 / max(1, len(p50))
        for i, row in enumerate(p50):
            xs = [a + i * width for a in range(len(algorithms)) if row[a] is not None]
            ax.scatter(xs, [v for v in row if v is not None], marker="_", s=200, color="black", zorder=3)
        ax.set_title(ax.get_title() + " (bars; p50: dashes)", fontsize=10)
    save(fig, "latency.png")

    groups = _scaling_groups(benchmarks)
    if groups:
        # Speed-up over each machine's fewest vCPUs, against the ideal (proportional to vCPUs).
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
        all_vcpus = sorted({r["machine"]["vcpus"] for group in groups.values() for r in group})
        for ax in axes:
            ax.plot(all_vcpus, [v / all_vcpus[0] for v in all_vcpus], "k--", linewidth=1, label="proportional to vCPUs")
        for machine_name, group in groups.items():
            for algorithm in algorithms:
                for ax, pick in (
                    (axes[0], train_rate("records_per_s")),
                    (axes[1], load_value(*BATCH, "records_per_s")),
                ):
                    points = []
                    for result in group:
                        entry = next((e for e in result["algorithms"] if e["name"] == algorithm), None)
                        rate = pick(entry) if entry else None
                        if rate:
                            points.append((result["machine"]["vcpus"], rate))
                    if len(points) > 1:
                        xs = [x for x, _ in points]
                        ys = [y / points[0][1] * xs[0] / all_vcpus[0] for _, y in points]
                        ax.plot(xs, ys, marker="o", label=f"{algorithm} ({machine_name})")
        for ax, title in zip(axes, ("training (RecordIO)", "inference (1,000-record RecordIO)"), strict=True):
            ax.set_title(f"{title}: speed-up by vCPUs", fontsize=10)
            ax.set_xlabel("vCPUs")
            ax.set_xticks(all_vcpus)
            ax.set_ylabel(f"records/s / records/s at {results.format_vcpus(all_vcpus[0])} vCPU")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        save(fig, "scaling.png")
    return written
