"""The gunicorn worker: gthread, except that a request is gathered whole in the worker's event loop
before its thread takes it.

Why: each worker has one thread (server.py says why), and gthread's thread reads the request
itself, so one client trickling its body a byte a second held the worker's only thread, and
/ping (SageMaker's health check, which takes an endpoint out of service after a few seconds
without an answer) waited behind it. The event loop already waits, without a thread, for kept-alive
connections to become readable; it now also reads each request's bytes as they come (non-blocking
reads), and the thread is given the connection once the request is complete, or once it cannot be
(malformed framing, a client that left in the middle, a body past the payload limit), for the
parser and the app to refuse as before (400, 413). A fast client's request comes in one read, so
the fast path costs one non-blocking recv() and a scan of the head. A request still incomplete
after the request timeout (SAGEMAKER_MODEL_SERVER_TIMEOUT) is answered 408 and its connection
closed; a connection that sends nothing is closed after the keep-alive timeout, as gthread does.

Expect: 100-continue is answered from the loop when the head has come and the body has not (the
client would otherwise wait a second before sending it); gunicorn's thread sends its own
100 Continue later, which clients skip as HTTP allows any number of 1xx answers.

A body larger than SPILL_BYTES (batch transform and asynchronous inference send up to 100 MB and
1 GB) is not gathered in memory: the loop writes it, de-chunked, to an unlinked temporary file as
it arrives (`SpilledBody`, on disk: `spill_directory`), and that file is the request's wsgi.input,
which the app decodes in pieces (app.read_body). A body past the payload limit is read and dropped
up to DRAIN_FACTOR times the limit, as the app does, so that its connection survives the 413;
one that says with its head that it is larger is handed over at once, and its connection closed.
"""

from __future__ import annotations

import errno
import io
import json
import os
import selectors
import tempfile
import time
from functools import cache, partial
from typing import ClassVar

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import ThreadWorker

# One non-blocking read takes at most this much (a 6 MB body comes in a few dozen reads).
RECV_BYTES = 256 * 1024
# Room for the request line and headers beside the payload limit before a request is handed over
# unfinished (the parser refuses heads longer than gunicorn's limits anyway).
HEAD_BYTES = 64 * 1024
# The longest chunk-size line scanned; a longer one is malformed, for the parser to refuse.
CHUNK_LINE_BYTES = 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Bodies up to this size are gathered in memory, so that real-time requests (SageMaker caps them
# at 6 MB) never touch the disk. A larger one is written to a temporary file as it arrives: in
# memory it would be held whole as gathered bytes, then again as the app's copy, beside the rows
# decoded from it (two copies of a 1 GB asynchronous request, and a third of its size in rows);
# from the file the decoders read it a few MB at a time. Writing it costs a copy into the page
# cache, which is small beside parsing it.
SPILL_BYTES = 8 << 20
# A body over the payload limit but within this many times it is read and dropped before the 413,
# so that the client's connection survives (and the client reads the answer rather than a reset);
# a larger one is left unread and its connection closed. The app applies the same rule.
DRAIN_FACTOR = 2
# Filesystems that keep files in memory: a body spilled there would still take memory.
_MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


@cache
def spill_directory() -> str:
    """Where bodies are spilled: tempfile's directory when TMPDIR (or TEMP, TMP) names one, the
    user's choice; otherwise the first of /tmp and /var/tmp that is writable and on a disk rather
    than in memory (/tmp is a tmpfs on some systems), else tempfile's choice."""
    default = tempfile.gettempdir()
    if any(os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")):
        return default
    for directory in dict.fromkeys((default, "/var/tmp")):
        if os.access(directory, os.W_OK | os.X_OK) and _filesystem_type(directory) not in _MEMORY_FILESYSTEMS:
            return directory
    return default


def _filesystem_type(path: str) -> str | None:
    """The type of the filesystem `path` is on (/proc/self/mounts: the longest mount point above
    it); None where that cannot be told."""
    path = os.path.realpath(path)
    found, found_type = "", None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                # Spaces and other odd bytes in mount points are written as octal escapes.
                mount_point = fields[1].encode().decode("unicode_escape")
                inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(found):
                    found, found_type = mount_point, fields[2]
    except OSError:
        return None
    return found_type


class SpilledBody:
    """A request body that the loop wrote to an unlinked temporary file as it arrived (one over
    SPILL_BYTES), and the request's wsgi.input. `file` holds the body's bytes (de-chunked), `size`
    of them; `complete` says whether the body came whole (its Content-Length, or its last chunk);
    `framing_error` says what broke its chunked framing, if anything. The app reads `file`
    itself; read() and readline() serve any other WSGI reader. Closed once the request is
    answered (then it reads as empty)."""

    def __init__(self, directory: str | None = None, keep_bytes: int | None = None) -> None:
        self.file = tempfile.TemporaryFile(dir=directory)
        self.size = 0
        self.keep_bytes = keep_bytes  # bytes past this many are counted, not kept: over the limit
        self.complete = False
        self.framing_error: str | None = None

    def write(self, data) -> None:
        if self.keep_bytes is None or self.size + len(data) <= self.keep_bytes:
            self.file.write(data)
        else:
            self.keep_bytes = -1  # and nothing after it
        self.size += len(data)

    def rewind(self) -> None:
        self.file.flush()
        self.file.seek(0)

    def read(self, size: int | None = -1) -> bytes:
        return b"" if self.file.closed else self.file.read(-1 if size is None else size)

    def readline(self, size: int | None = -1) -> bytes:
        return b"" if self.file.closed else self.file.readline(-1 if size is None else size)

    def __iter__(self):
        return iter(self.readline, b"")

    def close(self) -> None:
        self.file.close()


# Where a spilled chunked body's framing is (PendingRequest.chunk_left, when not a byte count).
_SIZE_LINE, _CHUNK_END, _TRAILER = -1, -2, -3


class PendingRequest:
    """The bytes of a request gathered so far, and whether they make a whole HTTP/1.x request.

    Only the framing is read (the end of the head, Content-Length, chunked encoding, Expect);
    anything it cannot frame is `handed over` as it is: the parser gives it the answer it gives
    any malformed request. A body over `spill_bytes` goes to `spill` (a SpilledBody) instead of
    `data`, which then holds the head alone (and, once the body is whole, whatever followed it: a
    pipelined request); a spilled body whose framing breaks, or that grows past the limit, is
    handed over with `spill` saying so, for the app to answer."""

    __slots__ = (
        "body_left",
        "chunk_at",
        "chunk_left",
        "chunked",
        "continue_sent",
        "data",
        "ended",
        "expects_continue",
        "head_end",
        "spill",
        "spill_bytes",
        "spill_dir",
        "unframed",
        "verdict",
    )

    INCOMPLETE, COMPLETE, HAND_OVER = 0, 1, 2

    def __init__(self, spill_bytes: int = SPILL_BYTES, spill_dir: str | None = None) -> None:
        self.spill_bytes = spill_bytes
        self.spill_dir = spill_dir
        self.spill: SpilledBody | None = None
        self.reset()

    def reset(self) -> None:
        self.data = bytearray()
        self.head_end = -1  # offset of the body, once the head's blank line has come
        self.chunked = False
        self.chunk_at = 0  # chunked: offset of the next chunk-size line; else: the body's end
        self.expects_continue = False
        self.continue_sent = False
        self.ended = False  # the client closed its side
        self.verdict = self.INCOMPLETE
        self.spill = None  # the body's file, once it is past spill_bytes
        self.body_left = 0  # a spilled body with a Content-Length: its bytes still to come
        self.chunk_left = _SIZE_LINE  # a spilled chunked body: the current chunk's bytes still to come
        self.unframed = bytearray()  # a spilled chunked body: bytes received, not yet de-chunked

    def add(self, data: bytes, limit: int) -> None:
        """Take more bytes; `limit`: the most a request's body may hold (the payload limit)."""
        if self.spill is not None:
            self._spill_more(data, limit)
            return
        scanned = len(self.data)
        self.data += data
        if self.head_end < 0:
            self._read_head(max(0, scanned - 3), limit)
        if self.head_end >= 0 and self.verdict == self.INCOMPLETE:
            # A body's declared length, or the chunked body's bytes so far.
            body_bytes = (len(self.data) if self.chunked else self.chunk_at) - self.head_end
            if body_bytes > self.spill_bytes:
                self._start_spill(limit)
                return
            self._read_body()
        if self.verdict == self.INCOMPLETE and len(self.data) > DRAIN_FACTOR * limit + HEAD_BYTES:
            self.verdict = self.HAND_OVER

    def take(self) -> tuple[bytearray, int, SpilledBody | None]:
        """(the bytes gathered, where the body starts or 0, the spilled body or None); the next
        request starts afresh."""
        data, head_end, spill = self.data, max(self.head_end, 0), self.spill
        if spill is not None:
            spill.rewind()
        self.reset()
        return data, head_end, spill

    def discard(self) -> None:
        """Forget the request (its connection is closing), and its spilled body's file."""
        if self.spill is not None:
            self.spill.close()
        self.reset()

    def _read_head(self, start: int, limit: int) -> None:
        end = self.data.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self.data) > HEAD_BYTES:
                self.verdict = self.HAND_OVER
            return
        self.head_end = end + 4
        length = 0
        for line in bytes(self.data[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self.verdict = self.HAND_OVER
                    return
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"expect":
                self.expects_continue = value.strip().lower() == b"100-continue"
        # Too large to be dropped for the connection's sake: the app refuses it (413) at once.
        if length < 0 or (length and self.chunked) or length > DRAIN_FACTOR * limit:
            self.verdict = self.HAND_OVER
        self.chunk_at = self.head_end if self.chunked else self.head_end + length

    def _read_body(self) -> None:
        if not self.chunked:
            if len(self.data) >= self.chunk_at:
                self.verdict = self.COMPLETE
            return
        data = self.data
        while True:
            line_end = data.find(b"\r\n", self.chunk_at)
            if line_end < 0:
                if len(data) - self.chunk_at > CHUNK_LINE_BYTES:
                    self.verdict = self.HAND_OVER
                return
            size = _chunk_size(data[self.chunk_at : line_end])
            if size is None:
                self.verdict = self.HAND_OVER
                return
            if size == 0:
                # The last chunk, then trailer lines, if any, up to a blank line.
                if data[line_end + 2 : line_end + 4] == b"\r\n" or data.find(b"\r\n\r\n", line_end) >= 0:
                    self.verdict = self.COMPLETE
                return
            chunk_end = line_end + 2 + size + 2
            if len(data) < chunk_end:
                return
            if data[chunk_end - 2 : chunk_end] != b"\r\n":
                self.verdict = self.HAND_OVER
                return
            self.chunk_at = chunk_end

    # --- spilled bodies

    def _start_spill(self, limit: int) -> None:
        """Move the body's bytes gathered so far into a new SpilledBody; the rest follows there."""
        body = bytes(self.data[self.head_end :])
        del self.data[self.head_end :]
        if self.chunked:
            self.chunk_left = _SIZE_LINE
        else:
            self.body_left = self.chunk_at - self.head_end
        # Of a body over the limit, only the size matters (the app refuses it): the file keeps
        # none of one whose Content-Length says so, and no more than the limit of a chunked one.
        self.spill = SpilledBody(self.spill_dir, keep_bytes=0 if self.body_left > limit else limit)
        self._spill_more(body, limit)

    def _spill_more(self, data: bytes, limit: int) -> None:
        spill = self.spill
        assert spill is not None
        if not self.chunked:
            taken = min(self.body_left, len(data))
            spill.write(data[:taken] if taken < len(data) else data)
            self.body_left -= taken
            if not self.body_left:
                self.data += data[taken:]  # a pipelined request
                spill.complete = True
                self.verdict = self.COMPLETE
            return
        self.unframed += data
        end = self._dechunk()
        if spill.complete:
            self.data += self.unframed[end:]  # a pipelined request
            self.unframed = bytearray()
            self.verdict = self.COMPLETE
            return
        del self.unframed[:end]
        if spill.framing_error is not None:
            self.verdict = self.HAND_OVER
        elif spill.size > DRAIN_FACTOR * limit:
            # The rest is left on the socket: the app answers 413 and the connection closes.
            self.verdict = self.HAND_OVER

    def _dechunk(self) -> int:
        """Write the chunks' data in `unframed` to the spill, up to where the framing is
        incomplete (returned), the last chunk and its trailer (then the spill is complete), or
        broken framing (then the spill's framing_error says how)."""
        spill = self.spill
        assert spill is not None
        data = self.unframed
        at = 0
        while at < len(data):
            if self.chunk_left > 0:
                taken = min(self.chunk_left, len(data) - at)
                with memoryview(data)[at : at + taken] as piece:
                    spill.write(piece)
                at += taken
                self.chunk_left -= taken
                if not self.chunk_left:
                    self.chunk_left = _CHUNK_END
            elif self.chunk_left == _CHUNK_END:
                if len(data) - at < 2:
                    break
                if data[at : at + 2] != b"\r\n":
                    spill.framing_error = "Invalid chunk terminator"
                    break
                at += 2
                self.chunk_left = _SIZE_LINE
            elif self.chunk_left == _SIZE_LINE:
                line_end = data.find(b"\r\n", at, at + CHUNK_LINE_BYTES + 2)
                if line_end < 0:
                    if len(data) - at > CHUNK_LINE_BYTES:
                        spill.framing_error = f"Invalid chunk size: a line longer than {CHUNK_LINE_BYTES} bytes"
                    break
                size = _chunk_size(data[at:line_end])
                if size is None:
                    spill.framing_error = f"Invalid chunk size: {bytes(data[at:line_end])[:40]!r}"
                    break
                at = line_end + 2
                self.chunk_left = size or _TRAILER
            else:  # the trailer after the last chunk: lines up to a blank one
                if data[at : at + 2] == b"\r\n":
                    spill.complete = True
                    return at + 2
                trailer_end = data.find(b"\r\n\r\n", at)
                if trailer_end >= 0:
                    spill.complete = True
                    return trailer_end + 4
                if len(data) - at > HEAD_BYTES:
                    spill.framing_error = f"Invalid chunk trailer: longer than {HEAD_BYTES} bytes"
                break
        return at


def _chunk_size(line) -> int | None:
    """The size on a chunk-size line (extensions after ';' ignored); None when it is not one."""
    try:
        size = int(bytes(line).split(b";")[0].strip(), 16)
    except ValueError:
        return None
    return size if size >= 0 else None


class GatheredUnreader(SocketUnreader):
    """The parser's source: the bytes the loop gathered, then the socket. The head comes alone
    and the body in the pieces the parser asks for, as they would from the socket: handing the
    parser everything at once would have it copy the body back and forth (it keeps what follows
    the head in a BytesIO), which cost a 500 KB request about a tenth more CPU time."""

    def __init__(self, sock) -> None:
        super().__init__(sock)
        self.gathered = memoryview(b"")
        self.head_end = 0

    def feed(self, data: bytearray, head_end: int) -> None:
        self.gathered, self.head_end = memoryview(data), head_end

    def chunk(self, size_hint=None) -> bytes:
        if not self.gathered:
            return super().chunk(size_hint)
        size = self.head_end or size_hint or len(self.gathered)
        self.head_end = 0
        piece = self.gathered[:size].tobytes()
        self.gathered = self.gathered[size:]
        return piece

    def keep_the_rest(self) -> None:
        """Bytes gathered past the request (a pipelined next one) go where gthread looks for
        read-ahead, so that the next request starts from them."""
        if self.gathered:
            # After what the parser already holds (it may have read ahead of the request's end).
            self.buf.seek(0, io.SEEK_END)
            self.buf.write(self.gathered)
            self.gathered = memoryview(b"")


class BufferingThreadWorker(ThreadWorker):
    """gunicorn's ThreadWorker whose event loop gathers each request before a thread takes it."""

    # The server's settings (`configured`): the payload limit and the request timeout.
    body_limit_bytes: ClassVar[int] = 6 * 2**20
    request_timeout_seconds: ClassVar[float] = 60.0

    @classmethod
    def configured(cls, *, body_limit_bytes: int, request_timeout_seconds: float) -> type[BufferingThreadWorker]:
        """The worker class for a server's settings (gunicorn takes a class and makes the workers)."""
        return type(
            cls.__name__,
            (cls,),
            {"body_limit_bytes": body_limit_bytes, "request_timeout_seconds": request_timeout_seconds},
        )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Connections whose request is being gathered: connection -> deadline.
        self.gathering: dict = {}
        self.next_deadline = float("inf")

    def enqueue_req(self, conn) -> None:
        # Bytes the parser already read ahead (pipelined requests) stay on gthread's own path.
        if conn.initialized and conn.parser.unreader.buf.getbuffer().nbytes:
            super().enqueue_req(conn)
            return
        if not hasattr(conn, "pending"):
            conn.pending = PendingRequest(SPILL_BYTES, spill_directory())
        self.gather(conn)

    def gather(self, conn) -> None:
        """Read what the connection has (it is non-blocking here), then hand the request to the
        thread pool, keep waiting for more, or close the connection."""
        pending: PendingRequest = conn.pending
        while pending.verdict == PendingRequest.INCOMPLETE:
            try:
                data = conn.sock.recv(RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.drop(conn)
                return
            if not data:
                pending.ended = True
                break
            pending.add(data, self.body_limit_bytes)
        if pending.verdict != PendingRequest.INCOMPLETE or (pending.ended and pending.data):
            self.stop_waiting(conn)
            super().enqueue_req(conn)
        elif pending.ended:
            self.drop(conn)
        else:
            if pending.expects_continue and not pending.continue_sent and pending.head_end >= 0:
                pending.continue_sent = True
                self.send_now(conn, CONTINUE)
            self.wait_for_more(conn)

    def handle(self, conn):
        """Runs in the thread: the gathered bytes go to the parser first (blocking reads after
        them, as gthread does, for whatever the loop handed over unfinished)."""
        data, head_end, spill = conn.pending.take() if hasattr(conn, "pending") else (b"", 0, None)
        if not data:
            return super().handle(conn)
        conn.data_ready = True
        conn.sock.setblocking(True)
        conn.init()
        unreader = conn.parser.unreader
        if not isinstance(unreader, GatheredUnreader):
            unreader = conn.parser.unreader = GatheredUnreader(conn.sock)
        unreader.feed(data, head_end)
        conn.spilled_body = spill
        try:
            return super().handle(conn)
        finally:
            unreader.keep_the_rest()
            conn.spilled_body = None
            if spill is not None:
                spill.close()

    def handle_request(self, req, conn):
        """A spilled body is the request's body (wsgi.input), in place of the parser's reader,
        which would look for it on the socket."""
        spill = getattr(conn, "spilled_body", None)
        if spill is None:
            return super().handle_request(req, conn)
        req.body = spill
        if not spill.complete:
            # The rest of the body, or its broken framing, is still on the socket.
            req.force_close()
        try:
            return super().handle_request(req, conn)
        finally:
            spill.close()  # read as empty from now on: gthread's drain before keep-alive finds nothing

    def wait_for_more(self, conn) -> None:
        if conn in self.gathering:
            return
        now = time.monotonic()
        # A connection that has sent nothing yet is an idle one (kept-alive rules); one that has
        # started a request must finish it within the request timeout.
        wait = self.request_timeout_seconds if conn.pending.data else self.cfg.keepalive
        deadline = now + wait
        self.gathering[conn] = deadline
        self.next_deadline = min(self.next_deadline, deadline)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_gathering_readable, conn))

    def on_gathering_readable(self, conn, _client) -> None:
        # An idle connection that starts a request gets the request timeout from now.
        if not conn.pending.data and conn in self.gathering:
            deadline = time.monotonic() + self.request_timeout_seconds
            self.gathering[conn] = deadline
            self.next_deadline = min(self.next_deadline, deadline)
        self.gather(conn)

    def stop_waiting(self, conn) -> None:
        if self.gathering.pop(conn, None) is not None:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass

    def drop(self, conn) -> None:
        self.stop_waiting(conn)
        if hasattr(conn, "pending"):
            conn.pending.discard()
        self.nr_conns -= 1
        conn.close()

    def send_now(self, conn, data: bytes) -> None:
        """Best effort from the loop: a client that does not read is not waited for."""
        try:
            conn.sock.send(data)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EPIPE, errno.ECONNRESET):
                raise

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if now < self.next_deadline and self.alive:
            return
        self.next_deadline = float("inf")
        for conn, deadline in list(self.gathering.items()):
            if deadline <= now or (not self.alive and not conn.pending.data):
                if conn.pending.data:
                    self.send_now(conn, timeout_response(self.request_timeout_seconds))
                self.drop(conn)
            else:
                self.next_deadline = min(self.next_deadline, deadline)


def timeout_response(seconds: float) -> bytes:
    """408, in the JSON error form of every other refusal (serve/errors.py)."""
    message = f"The request did not arrive whole within {seconds:g} s (SAGEMAKER_MODEL_SERVER_TIMEOUT)."
    body = json.dumps({"error": message, "status": 408}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
