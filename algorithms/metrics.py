"""Metric log lines in the form SageMaker's metric regexes and tuner read.

`#quality_metric: host=algo-1, epoch=0, train msd <loss>=0.0640`
`#progress_metric: host=algo-1, completed 50 % of epochs`
`#throughput_metric: host=algo-1, train throughput=123456.7 records/second`
(spec/sagemaker-contract.md section 1.11). The host name comes from resourceconfig.json; the
job layer sets it with `set_host` before training starts.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("smalgo.metrics")

_host = "algo-1"


def set_host(host: str) -> None:
    global _host
    _host = host


def host() -> str:
    return _host


def _emit(line: str) -> str:
    logger.info(line)
    return line


def quality_metric(channel: str, name: str, value: float, kind: str = "loss", epoch: int | None = None) -> str:
    """Log one quality metric; `kind` is "loss" (minimise) or "score" (maximise)."""
    if kind not in ("loss", "score"):
        raise ValueError(f"metric kind must be loss or score, not {kind!r}")
    where = f"host={_host}, " + (f"epoch={epoch}, " if epoch is not None else "")
    return _emit(f"#quality_metric: {where}{channel} {name} <{kind}>={float(value)!r}")


def progress_metric(percent_of_epochs: float) -> str:
    return _emit(f"#progress_metric: host={_host}, completed {percent_of_epochs:g} % of epochs")


def throughput_metric(channel: str, records_per_second: float) -> str:
    return _emit(f"#throughput_metric: host={_host}, {channel} throughput={records_per_second:.6g} records/second")
