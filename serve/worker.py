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
"""

from __future__ import annotations

import errno
import io
import json
import selectors
import time
from functools import partial
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


class PendingRequest:
    """The bytes of a request gathered so far, and whether they make a whole HTTP/1.x request.

    Only the framing is read (the end of the head, Content-Length, chunked encoding, Expect);
    anything it cannot frame is `handed over` as it is: the parser gives it the answer it gives
    any malformed request."""

    __slots__ = ("chunk_at", "chunked", "continue_sent", "data", "ended", "expects_continue", "head_end", "verdict")

    INCOMPLETE, COMPLETE, HAND_OVER = 0, 1, 2

    def __init__(self) -> None:
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

    def add(self, data: bytes, limit: int) -> None:
        """Take more bytes; `limit`: the most a request may hold before it is handed over."""
        scanned = len(self.data)
        self.data += data
        if self.head_end < 0:
            self._read_head(max(0, scanned - 3))
        if self.head_end >= 0 and self.verdict == self.INCOMPLETE:
            self._read_body()
        if self.verdict == self.INCOMPLETE and len(self.data) > limit:
            self.verdict = self.HAND_OVER

    def take(self) -> tuple[bytearray, int]:
        """(the bytes gathered, where the body starts or 0); the next request starts afresh."""
        data, head_end = self.data, max(self.head_end, 0)
        self.reset()
        return data, head_end

    def _read_head(self, start: int) -> None:
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
        if length < 0 or (length and self.chunked):
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
            size_text = bytes(data[self.chunk_at : line_end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self.verdict = self.HAND_OVER
                return
            if size < 0:
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

    # The server's settings (`configured`).
    request_limit_bytes: ClassVar[int] = 6 * 2**20 + HEAD_BYTES
    request_timeout_seconds: ClassVar[float] = 60.0

    @classmethod
    def configured(cls, *, request_limit_bytes: int, request_timeout_seconds: float) -> type[BufferingThreadWorker]:
        """The worker class for a server's settings (gunicorn takes a class and makes the workers)."""
        return type(
            cls.__name__,
            (cls,),
            {"request_limit_bytes": request_limit_bytes, "request_timeout_seconds": request_timeout_seconds},
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
            conn.pending = PendingRequest()
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
            pending.add(data, self.request_limit_bytes)
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
        data, head_end = conn.pending.take() if hasattr(conn, "pending") else (b"", 0)
        if not data:
            return super().handle(conn)
        conn.data_ready = True
        conn.sock.setblocking(True)
        conn.init()
        unreader = conn.parser.unreader
        if not isinstance(unreader, GatheredUnreader):
            unreader = conn.parser.unreader = GatheredUnreader(conn.sock)
        unreader.feed(data, head_end)
        try:
            return super().handle(conn)
        finally:
            unreader.keep_the_rest()

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
