"""The watch over a job's hosts: every host learns within seconds that another one is gone.

XGBoost's collective notices a dead host only on a socket to that host. In a ring of three, with
one host killed, the two others were seen waiting on each other, each polling the socket of a
host that was alive, until dmlc_timeout (SMALGO_HOSTS_TIMEOUT, an hour by default): about one
kill in three on a loaded 2-core machine (tests/test_several_hosts.py). So the hosts also keep
a star of plain TCP connections, one from each host to the first host's watch (the tracker's
port + 1), on which nothing is sent until the end:

* a host whose process ends, however it ends, has its connection closed by its kernel; the
  first host's watch sees it at once, and a first host that ends closes every connection, so
  every host sees any loss within a second;
* a host that leaves normally (Hosts.__exit__ after its last exchange) first sends `done`;
* a host that sees a connection end without `done` gives its main thread WATCH_GRACE_SECONDS to
  fail by itself (an exchange that fails at once, with XGBoost's reason), then calls `on_lost`
  with a message naming the lost host: the job writes output/failure and exits, since its main
  thread may be blocked inside XGBoost, where no Python exception reaches it.

A host that hangs with its connections open (a lost network, a stopped process) is still only
caught by dmlc_timeout. Nothing is pickled; the only bytes are a host's name and `done`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence

logger = logging.getLogger("smalgo.hosts")

# The first host's watch listens on the tracker's port plus this.
WATCH_PORT_OFFSET = 1
# How long a host that learnt of a lost host leaves its main thread to fail by itself.
WATCH_GRACE_SECONDS = 3.0
_DONE = b"done\n"
_NAME_BYTES = 256


class HostWatch:
    """One host's end of the watch. `on_lost(message)` is called once, from a watch thread, when
    another host is gone and this host has not failed by itself (it should end the process)."""

    def __init__(self, names: Sequence[str], current_host: str, on_lost: Callable[[str], object]) -> None:
        self.names = tuple(names)
        self.current_host = current_host
        self.on_lost = on_lost
        self._closing = threading.Event()
        self._fired = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    # ------------------------------------------------------------------ the first host

    def listen(self, address: str, port: int, deadline: float) -> None:
        """Listen for the other hosts, until `deadline` (the start-up's) for the last of them:
        started before the tracker, so that it listens by the time they have joined. OSError
        when the port cannot be bound."""
        self._listener = socket.create_server((address, port))
        threading.Thread(target=self._accept, args=(deadline,), name="smalgo-host-watch", daemon=True).start()

    def _accept(self, deadline: float) -> None:
        listener = self._listener
        assert listener is not None
        waiting = set(self.names[1:])
        while waiting and not self._closing.is_set():
            listener.settimeout(1.0)  # to see the deadline and this host's leaving
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                if time.monotonic() >= deadline:
                    self._lost(
                        f"{', '.join(sorted(waiting))} joined the group but did not connect to the first host's "
                        "watch in time",
                    )
                    return
                continue
            except OSError:
                return  # closed: this host is leaving
            connection.settimeout(10.0)
            try:
                name = connection.recv(_NAME_BYTES).decode("utf-8", "replace").strip()
            except OSError:
                name = ""
            if name not in waiting:
                connection.close()  # not one of the hosts still awaited: not ours
                continue
            waiting.discard(name)
            connection.settimeout(None)
            self._watch(connection, name)
        listener.close()

    # ------------------------------------------------------------------ the other hosts

    def connect(self, address: str, port: int, deadline: float) -> None:
        """Connect to the first host's watch (retried until `deadline`); OSError past it."""
        while True:
            try:
                connection = socket.create_connection((address, port), timeout=5.0)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        connection.sendall(f"{self.current_host}\n".encode())
        connection.settimeout(None)
        self._watch(connection, self.names[0])

    # ------------------------------------------------------------------ both

    def _watch(self, connection: socket.socket, name: str) -> None:
        self._sockets.append(connection)
        threading.Thread(target=self._wait_on, args=(connection, name), name="smalgo-host-watch", daemon=True).start()

    def _wait_on(self, connection: socket.socket, name: str) -> None:
        try:
            said = connection.recv(len(_DONE))  # nothing comes before the end
        except OSError:
            said = b""
        if said.startswith(_DONE[:4]) or self._closing.is_set():
            return
        self._lost(f"{name} is gone without leaving the group (its process ended or its machine was lost)")

    def _lost(self, what: str) -> None:
        if self._closing.wait(WATCH_GRACE_SECONDS):  # this host failed by itself meanwhile
            return
        if not self._fired.acquire(blocking=False):
            return
        self.on_lost(
            f"Host {self.current_host} lost contact with the other hosts ({', '.join(self.names)}): {what}; "
            "this host was waiting on it, and stops (the lost host's output/failure, if it wrote one, says why)."
        )

    def close(self, *, finished: bool) -> None:
        """Stop watching; `finished`: this host leaves normally, and tells the others so."""
        self._closing.set()
        for connection in self._sockets:
            try:
                if finished:
                    connection.sendall(_DONE)
                # shutdown, not close alone: this host's own watch thread is in recv on it, and
                # the connection would stay open (no FIN to the other end) until that returns.
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
