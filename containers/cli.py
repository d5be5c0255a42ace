"""The `smalgo` command (and `python -m smalgo.containers`), the images' entrypoint.

    smalgo train                      # in an image: the job under /opt/ml ($SAGEMAKER_BASE_DIR)
    smalgo train --algorithm kmeans --train data.csv --content-type 'text/csv;label_size=0' \\
        --hyperparameters k=10 feature_dim=50 --output job/
                                      # locally: lays out job/ as SageMaker would, then runs
                                      # the same job on it
    smalgo train --hosts 2 --distribution train=ShardedByS3Key ... --output job/
                                      # locally, a job of several hosts: one process per host
                                      # (job/algo-1, job/algo-2, ...) on loopback addresses
    smalgo serve [--model-dir DIR]    # the inference server (gunicorn on $SAGEMAKER_BIND_TO_PORT, 8080)
    smalgo import-aws AWS_MODEL OUT   # a model AWS's built-in image trained (model_algo-1 or
                                      # model.tar.gz) as a smalgo model directory
    smalgo export-aws MODEL_DIR OUT   # a smalgo model as AWS's image saves it (model_algo-1, model.tar.gz)
    smalgo metric-definitions ALGORITHM
                                      # the metrics SageMaker reads from its jobs' logs, as JSON
                                      # MetricDefinitions ([{"Name": ..., "Regex": ...}])
    smalgo benchmark [--algorithm NAME|all] [--cpus N] [--quick] ...
                                      # training and inference throughput, latency and cost here
    smalgo benchmark-report RESULT.json ... [--output DIR]
                                      # several benchmark results as one table and PNG plots
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from smalgo.algorithms.errors import UserError

from .job import ALGORITHM_VARIABLE, EXIT_FAILURE, run_training
from .local_job import DISTRIBUTIONS, lay_out_hosts_job, lay_out_job, run_hosts
from .paths import JobPaths

EXIT_USAGE = 2
LOCAL_CHANNELS = ("train", "validation", "test")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from smalgo.serve.server import run_server  # Flask and gunicorn only when serving

        return run_server(args.model_dir)
    if args.command in ("import-aws", "export-aws"):
        return _convert_aws(args)
    if args.command == "metric-definitions":
        return _print_metric_definitions(args.algorithm)
    if args.command == "benchmark":
        from .benchmark.run import run as run_benchmark

        return run_benchmark(args)
    if args.command == "benchmark-report":
        from .benchmark.report import run as run_report

        return run_report(args)
    return _train(parser, args)


def _convert_aws(args: argparse.Namespace) -> int:
    """import-aws / export-aws: one line saying what was written, or what is wrong (exit 1)."""
    from smalgo.algorithms.aws_models import load_aws_model, save_aws_model
    from smalgo.algorithms.model_files import ModelFiles
    from smalgo.algorithms.registry import get_algorithm

    out = Path(args.out)
    try:
        if args.command == "import-aws":
            algorithm, model = load_aws_model(Path(args.aws_model), args.algorithm)
            model.save(out)
        else:
            files = ModelFiles.read(Path(args.model_dir))
            algorithm = get_algorithm(files.algorithm)
            save_aws_model(algorithm, algorithm.load_model(files), out)
    except UserError as exc:
        print(f"smalgo {args.command}: " + " ".join(str(exc).splitlines()), file=sys.stderr)
        return EXIT_FAILURE
    written = ", ".join(sorted(p.name for p in out.iterdir()))
    print(f"{algorithm.title} model written to {out}: {written}", flush=True)
    return 0


def _print_metric_definitions(name: str) -> int:
    """metric-definitions: the algorithm's MetricDefinitions as JSON on stdout, as the console,
    boto3 and the SDKs take them; an unknown name is a usage error naming the known ones."""
    from smalgo.algorithms.registry import get_algorithm

    try:
        algorithm = get_algorithm(name)
    except UserError as exc:
        print(f"smalgo metric-definitions: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps([definition.as_dict() for definition in algorithm.metric_definitions], indent=2), flush=True)
    return 0


def _train(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    channels = {name: Path(getattr(args, name)) for name in LOCAL_CHANNELS if getattr(args, name)}
    local_options = (
        channels or args.output or args.hyperparameters or args.content_type or args.hosts or args.distribution
    )
    if not local_options:
        # Inside an image: the job SageMaker (or `docker run -v ...:/opt/ml`) laid out.
        try:
            paths = JobPaths.from_environment()
        except UserError as exc:  # no job directory to write output/failure in: say it here
            print(f"smalgo train: {exc}", file=sys.stderr, flush=True)
            return EXIT_FAILURE
        return run_training(paths, args.algorithm)

    if "train" not in channels or not args.output:
        parser.error(
            "a local run needs --train PATH and --output DIR "
            "(without any of the local options, train runs the job under /opt/ml)"
        )
    algorithm = args.algorithm or os.environ.get(ALGORITHM_VARIABLE)
    if not algorithm:
        parser.error(f"a local run needs --algorithm NAME (or ${ALGORITHM_VARIABLE})")
    hyperparameters = {}
    for item in args.hyperparameters or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--hyperparameters takes NAME=VALUE pairs, got {item!r}")
        hyperparameters[name] = value
    distributions = {}
    for item in args.distribution or []:
        name, sep, value = item.partition("=")
        if not sep or name not in channels or value not in DISTRIBUTIONS:
            parser.error(
                f"--distribution takes CHANNEL=TYPE for a channel given (TYPE: {' or '.join(DISTRIBUTIONS)}), "
                f"got {item!r}"
            )
        distributions[name] = value
    if args.hosts is not None and args.hosts < 1:
        parser.error(f"--hosts takes a number of hosts >= 1, got {args.hosts}")
    if (args.hosts or 1) > 1:
        return _train_hosts(
            args.hosts,
            algorithm,
            hyperparameters=hyperparameters,
            channels=channels,
            distributions=distributions,
            args=args,
        )
    try:
        paths = lay_out_job(
            Path(args.output), hyperparameters=hyperparameters, channels=channels, content_type=args.content_type
        )
    except UserError as exc:
        print(f"smalgo train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"Job laid out under {paths.base} (as /opt/ml in an image)", flush=True)
    exit_code = run_training(paths, algorithm)
    if exit_code == 0:
        files = sorted(p.name for p in paths.model_dir.iterdir())
        print(f"Model written to {paths.model_dir}: {', '.join(files)}", flush=True)
    else:
        print(
            f"Training failed (exit code {exit_code}); the reason is in {paths.failure_file}:\n"
            f"{paths.failure_file.read_text().strip()}",
            file=sys.stderr,
            flush=True,
        )
    return exit_code


def _train_hosts(
    hosts: int,
    algorithm: str,
    *,
    hyperparameters: dict[str, str],
    channels: dict[str, Path],
    distributions: dict[str, str],
    args: argparse.Namespace,
) -> int:
    """A local job of several hosts: one process per host; the first host's model is the job's.
    Exit status: 0 when every host succeeded, else the first failed host's."""
    try:
        jobs = lay_out_hosts_job(
            Path(args.output),
            hosts=hosts,
            hyperparameters=hyperparameters,
            channels=channels,
            content_type=args.content_type,
            distributions=distributions,
        )
    except UserError as exc:
        print(f"smalgo train: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"Job of {hosts} hosts laid out under {jobs[0].base.parent} (algo-1 ... algo-{hosts})", flush=True)
    codes = run_hosts(jobs, algorithm)
    failed = [(job, code) for job, code in zip(jobs, codes, strict=True) if code != 0]
    if not failed:
        files = sorted(p.name for p in jobs[0].model_dir.iterdir())
        print(f"Model written to {jobs[0].model_dir}: {', '.join(files)}", flush=True)
        return 0
    for job, code in failed:
        reason = job.failure_file.read_text().strip() if job.failure_file.exists() else "(no output/failure written)"
        print(f"Host {job.base.name} failed (exit code {code}): {reason}", file=sys.stderr, flush=True)
    return failed[0][1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smalgo", description="SageMaker-compatible built-in algorithms.")
    commands = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="{train,serve,import-aws,export-aws,metric-definitions,benchmark,benchmark-report}",
    )
    train = commands.add_parser(
        "train",
        help="run a training job",
        description="Run a training job: the one under /opt/ml ($SAGEMAKER_BASE_DIR) as SageMaker laid "
        "it out, or, with --train and --output, one laid out locally from your files.",
    )
    train.add_argument("--algorithm", help=f"algorithm name, e.g. kmeans or pca (default ${ALGORITHM_VARIABLE})")
    for name in LOCAL_CHANNELS:
        train.add_argument(f"--{name}", metavar="PATH", help=f"local run: file or directory for the {name} channel")
    train.add_argument(
        "--content-type",
        metavar="TYPE",
        help="local run: ContentType of every channel, e.g. 'text/csv;label_size=0' or "
        "application/x-recordio-protobuf (default: the algorithm's)",
    )
    train.add_argument(
        "--hyperparameters",
        nargs="+",
        metavar="NAME=VALUE",
        help="local run: hyperparameters, e.g. k=10 feature_dim=50",
    )
    train.add_argument("--output", metavar="DIR", help="local run: directory to lay the job out in")
    train.add_argument(
        "--hosts",
        type=int,
        metavar="N",
        help="local run: a job of N hosts, one process each on loopback addresses 127.0.0.1 ... (default 1)",
    )
    train.add_argument(
        "--distribution",
        nargs="+",
        metavar="CHANNEL=TYPE",
        help="local run: a channel's S3DistributionType, ShardedByS3Key (each host every N-th file) or "
        "FullyReplicated (the default)",
    )
    serve = commands.add_parser(
        "serve",
        help="run the inference server",
        description="Serve the model in /opt/ml/model ($SAGEMAKER_BASE_DIR/model) with gunicorn on "
        "0.0.0.0:${SAGEMAKER_BIND_TO_PORT:-8080}: GET /ping, POST /invocations, "
        "GET /execution-parameters.",
    )
    serve.add_argument("--model-dir", metavar="DIR", help="model directory (default: /opt/ml/model)")
    import_aws = commands.add_parser(
        "import-aws",
        help="turn a model AWS's built-in image trained into a smalgo model directory",
        description="Read model_algo-1 (or the model.tar.gz holding it, or a directory with either) "
        "that AWS's k-means, PCA, linear learner or factorization machines image wrote, and write it as "
        "a smalgo model directory (model.json and .npy arrays, readable with numpy).",
    )
    import_aws.add_argument("aws_model", metavar="AWS_MODEL", help="model_algo-1, model.tar.gz, or a directory")
    import_aws.add_argument("out", metavar="OUT", help="directory to write the smalgo model in")
    import_aws.add_argument("--algorithm", help="only read it as this algorithm's (default: whichever fits)")
    export_aws = commands.add_parser(
        "export-aws",
        help="write a smalgo model as AWS's built-in image saves it",
        description="Write the smalgo model in MODEL_DIR as model_algo-1 and model.tar.gz, the form "
        "AWS's built-in image of its algorithm reads (k-means, PCA, linear learner, factorization machines).",
    )
    export_aws.add_argument("model_dir", metavar="MODEL_DIR", help="a smalgo model directory")
    export_aws.add_argument("out", metavar="OUT", help="directory to write model_algo-1 and model.tar.gz in")
    metric_definitions = commands.add_parser(
        "metric-definitions",
        help="print the metrics SageMaker reads from an algorithm's training jobs, as JSON",
        description="Print the algorithm's metric definitions (name and regex of each metric its "
        'training jobs print) as JSON, [{"Name": ..., "Regex": ...}], the form of the console\'s '
        "metric definitions and of boto3's MetricDefinitions (CreateTrainingJob, "
        "CreateHyperParameterTuningJob).",
    )
    metric_definitions.add_argument("algorithm", metavar="ALGORITHM", help="algorithm name, e.g. kmeans or xgboost")
    _add_benchmark_parsers(commands)
    return parser


def _add_benchmark_parsers(commands) -> None:
    from .benchmark import report, run

    benchmark = commands.add_parser(
        "benchmark",
        help="measure training and inference throughput, latency and cost on this machine",
        description=run.__doc__.split("\n\n")[0].replace("\n", " "),
    )
    run.add_arguments(benchmark)
    benchmark_report = commands.add_parser(
        "benchmark-report",
        help="merge benchmark results into one Markdown table and PNG plots",
        description=report.__doc__.split("\n\n")[0].replace("\n", " "),
    )
    report.add_arguments(benchmark_report)


if __name__ == "__main__":
    sys.exit(main())
