"""How the hosts of one training job talk: the collective that the training driver and XGBoost
reduce through.

`SingleHost` is a one-host job's: it exchanges nothing. `Hosts` is a job of several hosts, on
XGBoost's collective communicator (`xgboost.collective`, Rabit), the engine the SageMaker XGBoost
image uses, so no protocol of ours goes over the network:

* the hosts are the job's host names, sorted (SageMaker's resourceconfig.json sorts them); a
  host's rank is its index in that order, and the first host runs the tracker
  (`xgboost.tracker.RabitTracker`) that the others join. Each worker joins with the task id
  `<rank, 5 digits>-<host name>` and the tracker sorts by task id, so the ranks it hands out are
  the indices (checked after joining) and its log lines (`Task 00001-algo-2 got rank 1`) name
  the hosts that joined;
* host names are resolved to addresses by the caller's map first (the local runner's loopback
  addresses), else by DNS, retried until the start-up deadline (SageMaker's names may resolve
  late, spec 1.5); a name that never resolves fails the job naming it;
* start-up is bounded: every host must have joined within `connect_timeout` seconds, or every
  host that is up fails naming the hosts and the tracker's address (the tracker's own timeout
  and a retried join, since a host may start before the tracker listens);
* once joined, a host that dies closes its sockets: the next exchange of a host connected to it
  fails at once (XGBoost's "the other end is likely closed"), and every host learns of it within
  seconds through the watch (watch.py: a TCP connection from each host to the first host, on the
  tracker's port + 1), even one blocked in an exchange with a host that is alive; a host that
  hangs or vanishes without closing its sockets (a lost network) fails the others after
  `timeout` seconds (dmlc_timeout), which must therefore exceed the longest time one host may
  compute between two exchanges.

Exchanges are of numpy arrays only: `all_reduce_sum`, `broadcast` (the root's bytes OR-ed with the
others' zeros) and `all_gather` (each host's rows in its own slot of a zeroed buffer, summed).
Nothing is pickled (xgboost.collective.broadcast pickles; it is not used).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from smalgo.algorithms.errors import UserError

from .watch import WATCH_PORT_OFFSET, HostWatch

logger = logging.getLogger("smalgo.hosts")

# The port the SageMaker XGBoost image's tracker listens on (spec 4.5.6).
DEFAULT_TRACKER_PORT = 9099
DEFAULT_CONNECT_TIMEOUT = 300.0
DEFAULT_TIMEOUT = 3600.0
# Retries of one join attempt (XGBoost waits 2, 4, ... seconds between them); joins are repeated
# until the start-up deadline.
_JOIN_RETRIES = 2


class HostsError(UserError):
    """The hosts of a job could not form their group, or lost one another: a fault of the
    cluster, not of smalgo; the message names the hosts."""


class SingleHost:
    """The collective of a one-host job: nothing to exchange."""

    hosts = 1
    rank = 0
    is_first = True

    def all_reduce_sum(self, array: np.ndarray) -> np.ndarray:
        return np.array(array, copy=True)

    def broadcast(self, array: np.ndarray | None, *, root: int = 0) -> np.ndarray:
        assert array is not None
        return np.array(array, copy=True)

    def all_gather(self, rows: np.ndarray) -> list[np.ndarray]:
        return [np.array(rows, copy=True)]

    # Built on the three above, so the same on one host and several.

    def average_in_place(self, arrays: Sequence[np.ndarray], share: float | np.floating) -> None:
        """Make `arrays` (the same shapes on every host) the hosts' average, each host's weighted
        by its `share` (its rows over every host's; a host without rows gives 0 and adopts the
        others'): one exchange for all of them, written back into the arrays."""
        average = self.all_reduce_sum(np.concatenate([array.ravel() * share for array in arrays]))
        offset = 0
        for array in arrays:
            array[...] = average[offset : offset + array.size].reshape(array.shape)
            offset += array.size

    def gather_rows(self, parts: Sequence[np.ndarray], trailing: tuple[int, ...] = ()) -> np.ndarray:
        """This host's `parts` (rows x `trailing`, float32) and every other host's, in host order,
        as one array (a host without parts adds no rows): what a scorer needs for job-wide
        metrics that are no sums (AUC, calibration)."""
        local = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, *trailing), np.float32)
        return np.concatenate(self.all_gather(local.reshape(-1, *trailing)))


Collective = SingleHost  # the interface; Hosts implements it over the network


class Hosts(SingleHost):
    """A job of several hosts, joined through XGBoost's collective. A context manager: entering
    forms the group (and starts the tracker on the first host), leaving takes this host out."""

    def __init__(
        self,
        hosts: Sequence[str],
        current_host: str,
        *,
        addresses: Mapping[str, str] | None = None,
        port: int = DEFAULT_TRACKER_PORT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_TIMEOUT,
        on_lost: Callable[[str], object] | None = None,
    ) -> None:
        """on_lost(message): what ends this process when the watch learns that another host is
        gone while this one waits (watch.py); by default, the message logged and exit 1."""
        self.names = tuple(sorted(hosts))
        if current_host not in self.names:
            raise UserError(f"The current host {current_host!r} is not among the job's hosts {list(self.names)}.")
        self.current_host = current_host
        self.hosts = len(self.names)
        self.rank = self.names.index(current_host)
        self.is_first = self.rank == 0
        self.addresses = dict(addresses or {})
        self.port = port
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._tracker: Any = None
        self._joined = False
        self._watch = HostWatch(self.names, current_host, on_lost or _end_the_process)
        # What this host's exchanges cost (XGBoost's own, inside xgboost.train, are not counted):
        # logged when it leaves the group.
        self.exchanges = 0
        self.bytes_exchanged = 0
        self.seconds_exchanging = 0.0

    # ------------------------------------------------------------------ joining and leaving

    def __enter__(self) -> Hosts:
        from xgboost import collective
        from xgboost.tracker import RabitTracker

        deadline = time.monotonic() + self.connect_timeout
        tracker_host = self.names[0]
        tracker_address = self.resolve(tracker_host, deadline)
        for name in self.names[1:]:
            if name != self.current_host:
                self.resolve(name, deadline)  # a name that never resolves is named now
        logger.info(
            "Training on %d hosts (%s); this is %s, rank %d; tracker on %s (%s:%d).",
            self.hosts,
            ", ".join(self.names),
            self.current_host,
            self.rank,
            tracker_host,
            tracker_address,
            self.port,
        )
        watch_port = self.port + WATCH_PORT_OFFSET
        if self.is_first:
            try:
                self._watch.listen(tracker_address, watch_port, deadline)
            except OSError as exc:
                raise HostsError(
                    f"Host {self.current_host} cannot listen for the other hosts on {tracker_address}:{watch_port} "
                    f"(the tracker's port + {WATCH_PORT_OFFSET}, SMALGO_TRACKER_PORT): {exc.strerror or exc}."
                ) from None
            try:
                self._tracker = RabitTracker(
                    n_workers=self.hosts,
                    host_ip=tracker_address,
                    port=self.port,
                    sortby="task",
                    timeout=max(1, int(self.connect_timeout)),
                )
                self._tracker.start()
            except Exception as exc:
                self._watch.close(finished=False)
                raise HostsError(
                    f"Host {self.current_host} cannot start the tracker of the {self.hosts} hosts on "
                    f"{tracker_address}:{self.port}: {_first_line(exc)}"
                ) from None
        args: dict[str, int | str] = {
            "dmlc_communicator": "rabit",
            "dmlc_tracker_uri": tracker_address,
            "dmlc_tracker_port": self.port,
            "dmlc_task_id": f"{self.rank:05d}-{self.current_host}",
            "dmlc_retry": _JOIN_RETRIES,
            "dmlc_timeout": max(1, int(self.timeout)),
        }
        refused = 0
        while True:
            try:
                with warnings.catch_warnings():
                    # XGBoost warns of every refused connection while the tracker starts.
                    warnings.simplefilter("ignore")
                    collective.init(**args)
                break
            except Exception as exc:
                # Before the tracker listens a join is refused: try again until the deadline.
                if time.monotonic() >= deadline or self.is_first:
                    self._stop_tracker()
                    self._watch.close(finished=False)
                    raise HostsError(
                        f"Host {self.current_host} could not form the group of {self.hosts} hosts "
                        f"({', '.join(self.names)}) within {self.connect_timeout:g} s: the tracker on "
                        f"{tracker_host} ({tracker_address}:{self.port}) "
                        + (
                            "did not hear from every host (the hosts that joined are logged as "
                            "'Task <rank>-<host> got rank'); a host that did not join failed to start or "
                            "cannot reach it."
                            if self.is_first
                            else "could not be reached or did not complete the group (another host did "
                            "not join in time, or this host cannot reach the tracker)."
                        )
                        + f" ({_first_line(exc)})"
                    ) from None
                if not refused:
                    logger.info(
                        "Joining the tracker on %s failed (%s); retrying until every host has joined or %g s "
                        "have passed.",
                        tracker_host,
                        _first_line(exc),
                        self.connect_timeout,
                    )
                refused += 1
                time.sleep(1.0)
        self._joined = True
        rank, size = collective.get_rank(), collective.get_world_size()
        if (rank, size) != (self.rank, self.hosts):
            self.__exit__(HostsError, None, None)
            raise HostsError(
                f"Host {self.current_host} expected rank {self.rank} of {self.hosts}, the tracker gave "
                f"rank {rank} of {size}."
            )
        if not self.is_first:
            try:
                self._watch.connect(tracker_address, watch_port, deadline)
            except OSError as exc:
                self.__exit__(HostsError, None, None)
                raise HostsError(
                    f"Host {self.current_host} joined the group but cannot reach the first host's watch on "
                    f"{tracker_host} ({tracker_address}:{watch_port}): {exc.strerror or exc}."
                ) from None
        logger.info("Joined the %d hosts as rank %d.", self.hosts, self.rank)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # First: a host failing by itself must not be failed again by the watch meanwhile.
        self._watch.close(finished=exc_type is None)
        if self._joined:
            self._joined = False
            logger.info(
                "Exchanges with the other hosts: %d all-reduces of %.6g MB in all, %.3f s.",
                self.exchanges,
                self.bytes_exchanged / 1e6,
                self.seconds_exchanging,
            )
            from xgboost import collective

            # Also after a failure: a process that exits with the communicator still up dies of
            # a segmentation fault in XGBoost's clean-up (measured with xgboost 3.2). Finalizing
            # a broken group fails after a few seconds of retries to reach a lost tracker.
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    collective.finalize()
            except Exception as error:
                log = logger.warning if exc_type is None else logger.debug
                log("Leaving the group of hosts: %s", _first_line(error))
        self._stop_tracker(wait=exc_type is None)

    def _stop_tracker(self, *, wait: bool = False) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return
        try:
            if wait:
                tracker.wait_for(max(1, int(self.connect_timeout)))
            tracker.free()
        except Exception as exc:
            logger.debug("Stopping the tracker: %s", _first_line(exc))
        # A tracker that could not shut down cleanly is left to the process's exit.

    def resolve(self, name: str, deadline: float) -> str:
        """The address of host `name`: the caller's map, else DNS, retried until `deadline`."""
        if name in self.addresses:
            return self.addresses[name]
        while True:
            try:
                return str(socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0])
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise HostsError(
                        f"Host {self.current_host} cannot resolve the address of host {name} "
                        f"(tried for {self.connect_timeout:g} s): {exc}."
                    ) from None
                time.sleep(1.0)

    # ------------------------------------------------------------------ exchanges

    def _all_reduce(self, array: np.ndarray, op: Any) -> np.ndarray:
        from xgboost import collective

        started = time.perf_counter()
        try:
            result = collective.allreduce(np.ascontiguousarray(array), op)
            self.exchanges += 1
            self.bytes_exchanged += array.nbytes
            self.seconds_exchanging += time.perf_counter() - started
            return result
        except Exception as exc:
            raise self.lost_contact(exc) from None

    def lost_contact(self, exc: BaseException) -> HostsError:
        """The error of an exchange that failed, ours or one inside xgboost.train (`exc`, XGBoost's)."""
        return HostsError(
            f"Host {self.current_host} lost contact with the other hosts ({', '.join(self.names)}): "
            f"another host failed or stopped (its output/failure says why), or the network failed. "
            f"({_first_line(exc)})"
        )

    def all_reduce_sum(self, array: np.ndarray) -> np.ndarray:
        """The element-wise sum of every host's `array` (same shape and dtype on every host)."""
        from xgboost import collective

        array = np.asarray(array)
        return self._all_reduce(array, collective.Op.SUM).reshape(array.shape)

    def broadcast(self, array: np.ndarray | None, *, root: int = 0) -> np.ndarray:
        """The root's array on every host (the others pass anything, None included); its dtype
        and shape travel with it."""
        from xgboost import collective

        header = np.zeros(34, dtype=np.int64)  # ndim, shape (up to 32 dimensions), dtype code
        payload = b""
        if self.rank == root:
            assert array is not None
            array = np.ascontiguousarray(array)
            header[0] = array.ndim
            header[1 : 1 + array.ndim] = array.shape
            payload = array.dtype.str.encode("ascii")
            header[33] = len(payload)
        header = self._all_reduce(header, collective.Op.SUM)
        dtype_bytes = np.zeros(int(header[33]), dtype=np.uint8)
        if self.rank == root:
            dtype_bytes[:] = np.frombuffer(payload, dtype=np.uint8)
        dtype = np.dtype(bytes(self._all_reduce(dtype_bytes, collective.Op.BITWISE_OR)).decode("ascii"))
        shape = tuple(int(n) for n in header[1 : 1 + int(header[0])])
        data = np.zeros(int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
        if self.rank == root:
            assert array is not None
            data[:] = array.reshape(-1).view(np.uint8)
        if data.size:
            data = self._all_reduce(data, collective.Op.BITWISE_OR)
        return data.view(dtype).reshape(shape).copy()

    def all_gather(self, rows: np.ndarray) -> list[np.ndarray]:
        """Every host's `rows` (the same dtype and trailing shape everywhere, any number of rows,
        none included), in rank order."""
        from xgboost import collective

        rows = np.ascontiguousarray(rows)
        counts = np.zeros(self.hosts, dtype=np.int64)
        counts[self.rank] = rows.shape[0]
        counts = self._all_reduce(counts, collective.Op.SUM)
        row_bytes = int(np.prod(rows.shape[1:], dtype=np.int64)) * rows.dtype.itemsize
        offsets = np.concatenate([[0], np.cumsum(counts)]) * row_bytes
        buffer = np.zeros(int(offsets[-1]), dtype=np.uint8)
        buffer[offsets[self.rank] : offsets[self.rank + 1]] = rows.reshape(-1).view(np.uint8)
        if buffer.size:
            buffer = self._all_reduce(buffer, collective.Op.BITWISE_OR)
        return [
            buffer[offsets[r] : offsets[r + 1]].view(rows.dtype).reshape((int(counts[r]), *rows.shape[1:])).copy()
            for r in range(self.hosts)
        ]


def _end_the_process(message: str) -> None:
    """Hosts' default on_lost: the main thread may be blocked inside XGBoost, so the process ends
    from the watch's thread."""
    logger.error("%s", message)
    sys.stderr.flush()
    os._exit(1)


def _first_line(exc: BaseException) -> str:
    """XGBoost's errors carry a stack trace: keep the lines that say what went wrong."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    lines = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- [")]
    return "; ".join(lines[-3:]) if lines else text.splitlines()[0]
