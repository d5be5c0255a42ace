"""One logging set-up for training jobs and servers: smalgo's lines on stderr in the built-in
algorithms' format (`[11/23/2025 17:24:01 INFO 140211] ...`), which CloudWatch users and metric
regexes know. Jobs show the thread, servers the process (gunicorn's workers are processes)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

PACKAGE_LOGGER = "smalgo"
DATE_FORMAT = "%m/%d/%Y %H:%M:%S"


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler that writes to whatever sys.stderr is at the time of the record (the
    test runner and the CLI may replace it after logging is configured)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(*, per_process: bool = False, level: int = logging.INFO) -> None:
    """Log smalgo's lines to stderr, once per process; `per_process` tags each line with the
    process id instead of the thread id."""
    package_logger = logging.getLogger(PACKAGE_LOGGER)
    package_logger.setLevel(level)
    tag = "%(process)d" if per_process else "%(thread)d"
    formatter = logging.Formatter(f"[%(asctime)s %(levelname)s {tag}] %(message)s", datefmt=DATE_FORMAT)
    for handler in package_logger.handlers:
        if isinstance(handler, _StderrHandler):
            handler.setFormatter(formatter)
            return
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    package_logger.addHandler(handler)
