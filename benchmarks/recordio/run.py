"""RecordIO-protobuf read/write throughput: smalgo vs. its protobuf reference vs. SageMaker SDK v2.

    .venv/bin/python benchmarks/recordio/run.py            # full size (a few minutes); or: make bench-recordio
    .venv/bin/python benchmarks/recordio/run.py --quick    # small sizes, smoke test

Run it with the project's interpreter (smalgo installed). The SageMaker Python SDK v2 side runs
in its own venv (benchmarks/.venv-sdk, created on first use by setup_sdk_env.sh) as a
subprocess, sdk_side.py, which times only its own work. See README.md for what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
BENCH_DIR = HERE.parent
DEFAULT_SDK_PYTHON = BENCH_DIR / ".venv-sdk" / "bin" / "python"
IMPLS = ("smalgo", "reference", "sdk")
LABELS = {"smalgo": "smalgo (fast)", "reference": "smalgo reference", "sdk": "SageMaker SDK v2"}


# ---------------------------------------------------------------------------------------------
# Implementations run in this process.


def load_smalgo():
    """{'smalgo': (write_dense, write_sparse, read), 'reference': (...)} from smalgo.recordio."""
    import smalgo.recordio as rio

    try:
        from smalgo.recordio import reference as ref
    except ImportError as e:
        raise SystemExit(
            f"smalgo.recordio.reference is missing ({e}); run.py expects "
            "smalgo.recordio.reference.{write_dense, write_sparse, read}"
        ) from None
    impls = {}
    for name, mod in (("smalgo", rio), ("reference", ref)):
        missing = [f for f in ("write_dense", "write_sparse", "read") if not hasattr(mod, f)]
        if missing:
            raise SystemExit(
                f"{mod.__name__} lacks {missing}; run.py expects write_dense(dest, X, "
                "labels=None), write_sparse(dest, X, labels=None), read(source) -> (X, y)"
            )
        impls[name] = (mod.write_dense, mod.write_sparse, mod.read)
    return impls


def make_data(kind, n, d, density, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n).astype(np.float32)
    if kind == "dense":
        X = rng.standard_normal((n, d), dtype=np.float32)
        return X, y
    X = sp.random(
        n,
        d,
        density=density,
        format="csr",
        dtype=np.float32,
        rng=rng,
        data_rvs=lambda k: rng.standard_normal(k, dtype=np.float32),
    )
    X.sort_indices()
    return X, y


def n_values(X):
    return int(X.nnz) if sp.issparse(X) else int(X.size)


def median_mbps(payload_bytes, seconds):
    return payload_bytes / statistics.median(seconds) / 1e6


def bench_local(impl, kind, X, y, path, repeats_write, repeats_read):
    write_dense, write_sparse, read = impl
    write = write_dense if kind == "dense" else write_sparse
    # Untimed warm-up on a small slice: numba compilation / first-call costs are not throughput.
    warm = str(path) + ".warmup"
    write(warm, X[:200], y[:200])
    read(warm)
    os.remove(warm)
    res = {"write_s": [], "read_s": []}
    for _ in range(repeats_write):
        t0 = time.perf_counter()
        write(str(path), X, y)
        res["write_s"].append(time.perf_counter() - t0)
    for _ in range(repeats_read):
        t0 = time.perf_counter()
        Xr, yr = read(str(path))
        res["read_s"].append(time.perf_counter() - t0)
        del Xr, yr
    res["file_bytes"] = os.path.getsize(path)
    return res


# ---------------------------------------------------------------------------------------------
# Correctness.


def same_arrays(kind, X, y, Xr, yr):
    """Exact equality (float32 survives the format bit for bit); returns '' or a reason."""
    if yr is None or not np.array_equal(np.asarray(yr, np.float32), y):
        return "labels differ"
    if kind == "dense":
        if sp.issparse(Xr):
            return f"expected a dense array, got {type(Xr).__name__}"
        Xr = np.asarray(Xr)
        if Xr.shape != X.shape or Xr.dtype != np.float32:
            return f"shape/dtype {Xr.shape}/{Xr.dtype} != {X.shape}/float32"
        return "" if np.array_equal(Xr, X) else "values differ"
    if not sp.issparse(Xr):
        return f"expected a sparse matrix, got {type(Xr).__name__}"
    Xr = sp.csr_matrix(Xr)
    Xr.sort_indices()
    if Xr.shape != X.shape or Xr.dtype != np.float32:
        return f"shape/dtype {Xr.shape}/{Xr.dtype} != {X.shape}/float32"
    if not (
        np.array_equal(Xr.indptr, X.indptr)
        and np.array_equal(Xr.indices, X.indices)
        and np.array_equal(Xr.data, X.data)
    ):
        return "values or sparsity pattern differ"
    return ""


def load_sdk_decoded(kind, path):
    z = np.load(path)
    if kind == "dense":
        return z["X"], z["y"]
    X = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    return X, z["y"]


# ---------------------------------------------------------------------------------------------
# SDK side.


def ensure_sdk_python(sdk_python: Path) -> Path:
    if sdk_python.exists():
        return sdk_python
    if sdk_python != DEFAULT_SDK_PYTHON:
        raise SystemExit(f"--sdk-python {sdk_python} does not exist")
    print(f"creating the SDK venv: {HERE / 'setup_sdk_env.sh'}", file=sys.stderr, flush=True)
    subprocess.run(["bash", str(HERE / "setup_sdk_env.sh")], check=True)
    return sdk_python


def run_sdk_side(sdk_python, spec, workdir):
    spec_path = Path(workdir) / "sdk_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    env = dict(os.environ, SAGEMAKER_SUPPRESS_V2_WARNING="1")
    env.pop("PYTHONPATH", None)  # keep the project's packages out of the SDK venv
    subprocess.run([str(sdk_python), str(HERE / "sdk_side.py"), str(spec_path)], check=True, env=env)
    return json.loads(Path(spec["result"]).read_text())


# ---------------------------------------------------------------------------------------------


def fmt_ratio(a, b):
    return f"{a / b:.1f}x" if a and b else "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and 2 repeats (smoke test)")
    p.add_argument("--rows", type=int, help="rows of both cases (default 100000; --quick 2000)")
    p.add_argument(
        "--repeats-fast",
        type=int,
        help="repeats for smalgo's fast path (default 11: each takes tens of milliseconds, and a shared machine "
        "adds outliers)",
    )
    p.add_argument("--repeats-slow", type=int, help="repeats for reference and SDK (default 3)")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma list from smalgo,reference,sdk")
    p.add_argument(
        "--sdk-python",
        type=Path,
        default=DEFAULT_SDK_PYTHON,
        help="interpreter of the SDK venv (default benchmarks/.venv-sdk/bin/python)",
    )
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the files go (default: the system temp dir); /dev/shm (tmpfs) keeps the "
        "disk's writeback stalls out of every side's timings",
    )
    args = p.parse_args(argv)

    impls = [s for s in args.impls.split(",") if s]
    if unknown := set(impls) - set(IMPLS):
        p.error(f"unknown --impls {sorted(unknown)}")
    rows = args.rows or (2000 if args.quick else 100_000)
    rep_fast = args.repeats_fast or (2 if args.quick else 11)
    rep_slow = args.repeats_slow or (2 if args.quick else 3)
    cases = {
        "dense": dict(kind="dense", n=rows, d=100, density=1.0),
        "sparse": dict(kind="sparse", n=rows, d=10_000, density=0.01),
    }

    local = load_smalgo() if {"smalgo", "reference"} & set(impls) else {}
    sdk_python = ensure_sdk_python(args.sdk_python) if "sdk" in impls else None

    results = {
        "config": {
            "rows": rows,
            "repeats_fast": rep_fast,
            "repeats_slow": rep_slow,
            "impls": impls,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg()[0],
        },
        "cases": {},
    }
    try:
        from google.protobuf import __version__ as pb_version
        from google.protobuf.internal import api_implementation

        results["config"]["protobuf"] = f"{pb_version} ({api_implementation.Type()})"
    except ImportError:
        pass
    failures = []

    with tempfile.TemporaryDirectory(prefix="smalgo-recordio-bench-", dir=args.dir) as workdir:
        wd = Path(workdir)
        data = {}
        sdk_spec = {
            "workdir": workdir,
            "repeats_write": rep_slow,
            "repeats_read": rep_slow,
            "result": str(wd / "sdk_result.json"),
            "cases": {},
        }
        for name, c in cases.items():
            X, y = make_data(c["kind"], c["n"], c["d"], c["density"], args.seed)
            data[name] = (X, y)
            payload = n_values(X) * 4
            results["cases"][name] = {**c, "n_values": n_values(X), "payload_bytes": payload, "impls": {}}
            print(
                f"[{name}] {c['n']} x {c['d']}, {n_values(X)} float32 values, payload {payload / 1e6:.1f} MB",
                file=sys.stderr,
                flush=True,
            )

            # smalgo fast path and reference, in this process.
            for impl in ("smalgo", "reference"):
                if impl not in impls:
                    continue
                reps = rep_fast if impl == "smalgo" else rep_slow
                res = bench_local(local[impl], c["kind"], X, y, wd / f"{impl}_{name}.rec", reps, reps)
                results["cases"][name]["impls"][impl] = res
                print(
                    f"[{name}] {impl}: write {sorted(round(t, 3) for t in res['write_s'])} s, "
                    f"read {sorted(round(t, 3) for t in res['read_s'])} s",
                    file=sys.stderr,
                    flush=True,
                )

            # Inputs for the SDK side (untimed there): the same arrays, as .npy/.npz.
            if "sdk" in impls:
                if c["kind"] == "dense":
                    np.save(wd / f"{name}_X.npy", X)
                    x_path = str(wd / f"{name}_X.npy")
                else:
                    x_path = str(wd / f"{name}_X.npz")
                    np.savez(x_path, data=X.data, indices=X.indices, indptr=X.indptr, shape=np.array(X.shape))
                np.save(wd / f"{name}_y.npy", y)
                sdk_spec["cases"][name] = {
                    "kind": c["kind"],
                    "X": x_path,
                    "labels": str(wd / f"{name}_y.npy"),
                    "sdk_file": str(wd / f"sdk_{name}.rec"),
                    "decode": {
                        impl: str(wd / f"{impl}_{name}.rec") for impl in ("smalgo", "reference") if impl in impls
                    },
                }

        if "sdk" in impls:
            sdk = run_sdk_side(sdk_python, sdk_spec, workdir)
            results["sdk_info"] = sdk["info"]
            for name, res in sdk["cases"].items():
                results["cases"][name]["impls"]["sdk"] = {
                    k: res[k] for k in ("write_s", "read_s", "read_records_s", "file_bytes")
                }
                X, y = data[name]
                kind = cases[name]["kind"]
                # The SDK decoded what smalgo (and the reference) wrote ...
                for impl, path in res["decoded"].items():
                    why = same_arrays(kind, X, y, *load_sdk_decoded(kind, path))
                    check = f"{name}: SDK reads {impl}'s file"
                    results.setdefault("checks", {})[check] = why or "ok"
                    if why:
                        failures.append(f"{check}: {why}")
                # ... and smalgo (and the reference) read what the SDK wrote.
                for impl in ("smalgo", "reference"):
                    if impl in impls:
                        why = same_arrays(kind, X, y, *local[impl][2](sdk_spec["cases"][name]["sdk_file"]))
                        check = f"{name}: {impl} reads the SDK's file"
                        results["checks"][check] = why or "ok"
                        if why:
                            failures.append(f"{check}: {why}")
                        other = wd / f"{impl}_{name}.rec"
                        same = Path(other).read_bytes() == Path(sdk_spec["cases"][name]["sdk_file"]).read_bytes()
                        results["checks"][f"{name}: {impl} file byte-identical to the SDK's"] = (
                            "yes" if same else "no (informational)"
                        )
        # Each local implementation reads its own file back exactly.
        for name, (X, y) in data.items():
            for impl in ("smalgo", "reference"):
                if impl in impls:
                    why = same_arrays(cases[name]["kind"], X, y, *local[impl][2](str(wd / f"{impl}_{name}.rec")))
                    check = f"{name}: {impl} round trip"
                    results.setdefault("checks", {})[check] = why or "ok"
                    if why:
                        failures.append(f"{check}: {why}")

    # Table.
    for _name, r in results["cases"].items():
        for _impl, res in r["impls"].items():
            res["write_MBps"] = median_mbps(r["payload_bytes"], res["write_s"])
            res["read_MBps"] = median_mbps(r["payload_bytes"], res["read_s"])
            if "read_records_s" in res:
                res["read_records_only_MBps"] = median_mbps(r["payload_bytes"], res["read_records_s"])

    cfg = results["config"]
    print()
    print(
        f"RecordIO-protobuf throughput, MB/s of float32 feature payload (feature values x 4 bytes, "
        f"labels/keys/framing excluded; MB = 1e6 bytes); median of {rep_fast} (smalgo) / "
        f"{rep_slow} (reference, SDK) repeats; files in a temp dir, page cache warm."
    )
    sdk_v = results.get("sdk_info", {})
    print(
        f"python {cfg['python']}, {cfg['cpus']} CPUs (1-min load {cfg['loadavg_at_start']:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end), project protobuf {cfg.get('protobuf', '?')}"
        + (
            f"; sagemaker {sdk_v['sagemaker']} with protobuf {sdk_v['protobuf']} ({sdk_v['protobuf_backend']})"
            if sdk_v
            else ""
        )
    )
    print()
    header = f"{'case':<28} {'implementation':<18} {'write MB/s':>11} {'read MB/s':>10} {'file MB':>8}"
    print(header)
    print("-" * len(header))
    for name, r in results["cases"].items():
        c = cases[name]
        label = f"{name} {c['n']}x{c['d']}" + (f" @{c['density']:.0%}" if c["kind"] == "sparse" else "")
        for impl in IMPLS:
            if impl in r["impls"]:
                res = r["impls"][impl]
                print(
                    f"{label:<28} {LABELS[impl]:<18} {res['write_MBps']:>11.1f} {res['read_MBps']:>10.1f} "
                    f"{res['file_bytes'] / 1e6:>8.1f}"
                )
                label = ""
    print()
    ratio_rows = [
        ("smalgo / SDK v2", "smalgo", "sdk"),
        ("smalgo / reference", "smalgo", "reference"),
        ("reference / SDK v2", "reference", "sdk"),
    ]
    lines = []
    for title, a, b in ratio_rows:
        cells = []
        for _name, r in results["cases"].items():
            for op in ("write", "read"):
                ra, rb = r["impls"].get(a), r["impls"].get(b)
                cells.append(fmt_ratio(ra and ra[f"{op}_MBps"], rb and rb[f"{op}_MBps"]))
        if any(c != "-" for c in cells):
            lines.append(f"{title:<20} " + " ".join(f"{c:>14}" for c in cells))
    if lines:
        header = f"{'ratio':<20} " + " ".join(
            f"{n + ' ' + op:>14}" for n in results["cases"] for op in ("write", "read")
        )
        print(header)
        print("-" * len(header))
        print("\n".join(lines))
    if any("sdk" in r["impls"] for r in results["cases"].values()):
        print()
        print(
            "SDK read = read_records(f) (parse into Record objects) + Records -> numpy/CSR arrays; "
            "read_records alone: "
            + ", ".join(
                f"{n} {r['impls']['sdk']['read_records_only_MBps']:.1f} MB/s"
                for n, r in results["cases"].items()
                if "sdk" in r["impls"]
            )
        )
    print()
    for check, outcome in results.get("checks", {}).items():
        print(f"check  {check}: {outcome}")

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    record_peers(results, cases)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def record_peers(results: dict, cases: dict) -> None:
    """smalgo's write and read MB/s against the SDK v2's, into benchmarks/results/ (when both ran)."""
    from smalgo.containers.benchmark import peers

    comparisons = []
    for name, r in results["cases"].items():
        ours, sdk = r["impls"].get("smalgo"), r["impls"].get("sdk")
        if not ours or not sdk:
            continue
        c = cases[name]
        case = f"{name}, {c['n']:,} x {c['d']:,}" + (f" at {c['density']:.0%}" if c["kind"] == "sparse" else "")
        for op in ("write", "read"):
            comparisons.append(
                peers.Comparison(
                    case, f"{op} throughput", "MB/s", ours[f"{op}_MBps"], LABELS["sdk"], sdk[f"{op}_MBps"], True
                )
            )
    if comparisons:
        peers.record("recordio", comparisons, results_dir=BENCH_DIR / "results")


if __name__ == "__main__":
    sys.exit(main())
