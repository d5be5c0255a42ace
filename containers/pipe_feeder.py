"""Playing SageMaker's side of Pipe mode on one machine: for each pass over a channel, a FIFO
`<channel>_<k>` appears in the data directory, the data is written into it as a stream, and the
next FIFO is made once the job has read the previous one to the end.

Used to warm the images' compiled-code cache (warm_cache.py) and by the tests.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

# The data goes in pieces of this size, as a stream arrives, so that readers see partial reads.
PIECE_BYTES = 1000


class PipeFeeder:
    """A context manager: a thread feeds `payload` through up to `max_passes` FIFOs under
    `data_dir` until the block exits. `passes_written` counts the passes read to the end."""

    def __init__(self, data_dir: Path, channel: str, payload: bytes, *, max_passes: int = 10):
        self.data_dir, self.channel, self.payload, self.max_passes = Path(data_dir), channel, payload, max_passes
        self.passes_written = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"pipe-feeder-{channel}")

    def __enter__(self) -> PipeFeeder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        for epoch in range(self.max_passes):
            fifo = self.data_dir / f"{self.channel}_{epoch}"
            os.mkfifo(fifo)
            # Open without blocking forever: poll until the job opens the read end.
            while not self.stopped.is_set():
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError:  # ENXIO: no reader yet
                    time.sleep(0.01)
            else:
                return
            os.set_blocking(fd, True)
            with os.fdopen(fd, "wb") as stream:
                for start in range(0, len(self.payload), PIECE_BYTES):
                    stream.write(self.payload[start : start + PIECE_BYTES])
            self.passes_written += 1
