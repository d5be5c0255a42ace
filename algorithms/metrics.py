"""Metric log lines in the form SageMaker's metric regexes and tuner read.

`#quality_metric: host=algo-1, epoch=0, train msd <loss>=0.0640`
`#progress_metric: host=algo-1, completed 50 % of epochs`
`#throughput_metric: host=algo-1, train throughput=123456.7 records/second`
(spec/sagemaker-contract.md section 1.11). The job makes one `MetricWriter` for the host named in
resourceconfig.json and hands it to the algorithm; every algorithm reports through it, whether the
shared driver runs its loop or it runs its own.
"""

from __future__ import annotations

import logging
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
