"""Metric log lines in the form SageMaker's metric regexes and tuner read.

`#quality_metric: host=algo-1, epoch=0, train msd <loss>=0.0640`
`#progress_metric: host=algo-1, completed 50 % of epochs`
`#throughput_metric: host=algo-1, train throughput=123456.7 records/second`
(spec/sagemaker-contract.md section 1.11). The job makes one `MetricWriter` for the host named in
resourceconfig.json and hands it to the algorithm; every algorithm reports through it, whether the
shared driver runs its loop or it runs its own.

The regexes that read these lines back are made here too, beside the writer (`MetricDefinition`
and the `*_definition` functions): each algorithm declares, with them, the metrics SageMaker can
read from its jobs (`Algorithm.metric_definitions`), which `smalgo metric-definitions` and
`smalgo.sagemaker` publish for CloudWatch and Automatic Model Tuning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger("smalgo.metrics")

DEFAULT_HOST = "algo-1"
KINDS = ("loss", "score")


@dataclass(frozen=True)
class Metric:
    """One metric value; `kind` is "loss" (lower is better) or "score" (higher is better)."""

    name: str
    value: float
    kind: str = "loss"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric kind must be loss or score, not {self.kind!r}")


class MetricWriter:
    """Writes metric lines for one host to the `smalgo.metrics` logger; returns each line."""

    def __init__(self, host: str = DEFAULT_HOST) -> None:
        self.host = host

    def quality(self, channel: str, metric: Metric, epoch: int | None = None) -> str:
        where = f"host={self.host}, " + (f"epoch={epoch}, " if epoch is not None else "")
        return _emit(f"#quality_metric: {where}{channel} {metric.name} <{metric.kind}>={float(metric.value)!r}")

    def progress(self, percent_of_epochs: float) -> str:
        return _emit(f"#progress_metric: host={self.host}, completed {percent_of_epochs:g} % of epochs")

    def evaluation(self, iteration: int, evals_log: Mapping[str, Mapping[str, Sequence[float]]]) -> str:
        """XGBoost's evaluation line, as AWS's XGBoost image prints it (spec section 4.5.5):
        `[3]\ttrain-rmse:1.23456\tvalidation-rmse:1.34567`, the latest value of each metric of
        each data set; CloudWatch shows the tab as #011, which the tuner's regex expects."""
        return _emit(
            f"[{iteration}]"
            + "".join(
                f"\t{data}-{metric}:{float(values[-1]):.5f}"
                for data, metrics in evals_log.items()
                for metric, values in metrics.items()
            )
        )

    def line(self, text: str) -> str:
        """A metric line in a form of an algorithm's own (XGBoost's cross-validation summary)."""
        return _emit(text)

    def throughput(self, channel: str, records_per_second: float) -> str:
        return _emit(
            f"#throughput_metric: host={self.host}, {channel} throughput={records_per_second:.6g} records/second"
        )


def _emit(line: str) -> str:
    logger.info(line)
    return line


# --------------------------------------------------------------------------- reading them back

# What every regex below captures: a value as the writer prints it (a Python float's repr, or
# XGBoost's %.5f), up to the next blank. SageMaker takes the one capture group as the value.
_VALUE = r"(\S+)"
_HOST = r"host=\S+, "
_EPOCH = r"epoch=\S+, "


@dataclass(frozen=True)
class MetricDefinition:
    """A metric SageMaker reads from a job's log, as the console, boto3 (MetricDefinitions) and
    the SDKs take it: the name a tuning job's objective uses ("test:msd") and a regex with one
    capture group, the value."""

    name: str
    regex: str

    def as_dict(self) -> dict[str, str]:
        return {"Name": self.name, "Regex": self.regex}


def quality_definition(
    channel: str,
    metric: str,
    kind: str,
    *,
    printed: str | None = None,
    per_epoch: bool = False,
    name: str | None = None,
) -> MetricDefinition:
    """`<channel>:<metric>`, read from `MetricWriter.quality`'s lines: the line after training
    (no `epoch=`), or with `per_epoch` the line of each pass. `printed` is a regex for the name
    as the line spells it where that differs from `metric` (linear learner's `binary_f_\\S+`:
    the line carries the beta, binary_f_1.000); `name` replaces the metric's name (":final")."""
    if kind not in KINDS:
        raise ValueError(f"metric kind must be loss or score, not {kind!r}")
    where = _HOST + (_EPOCH if per_epoch else "")
    word = printed if printed is not None else re.escape(metric)
    return MetricDefinition(
        name or f"{channel}:{metric}", f"#quality_metric: {where}{channel} {word} <{kind}>={_VALUE}"
    )


def progress_definition() -> MetricDefinition:
    """`train:progress`, the percent of epochs done (`MetricWriter.progress`)."""
    return MetricDefinition("train:progress", f"#progress_metric: {_HOST}completed {_VALUE} %")


def throughput_definition(channel: str = "train") -> MetricDefinition:
    """`<channel>:throughput`, records per second (`MetricWriter.throughput`)."""
    return MetricDefinition(
        f"{channel}:throughput", f"#throughput_metric: {_HOST}{channel} throughput={_VALUE} records/second"
    )


def evaluation_definition(data: str, metric: str) -> MetricDefinition:
    """`<data>:<metric>` from `MetricWriter.evaluation`'s line, `[3]\\ttrain-auc:0.9\\tvalidation-auc:0.8`.

    AWS's XGBoost image defines `.*\\[[0-9]+\\].*#011validation-auc:(\\S+)`: CloudWatch shows the
    tab as #011, and SageMaker reads the log as CloudWatch has it. This regex leaves the separator
    out, so that it reads the line both ways (as printed and as CloudWatch stores it), and stops
    the value at a #, so that a metric that is not the line's last one is read alone
    (`0.80000`, not `0.80000#011validation-logloss:0.3`)."""
    return MetricDefinition(f"{data}:{metric}", rf".*\[[0-9]+\].*{re.escape(data)}-{re.escape(metric)}:([^\s#]+)")
