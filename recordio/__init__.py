"""smalgo.recordio: RecordIO-protobuf, the format of Amazon SageMaker's built-in algorithms.

    from smalgo.recordio import read, iter_batches, write_dense, write_sparse
    write_dense("train.pbr", X, labels=y)      # one aialgs.data.Record per row
    X, y = read("train.pbr")                    # float32 ndarray (or CSR when sparse), labels

Reads and writes exactly what SageMaker and its Python SDK read and write. A numba fast path
handles the common shapes; the protobuf runtime (`smalgo.recordio.reference`) handles the rest
and is the reference the fast path is tested against. Bad input raises `RecordIOError` (a
ValueError) naming the record, its byte offset and the reason.
"""

from .arrays import iter_batches, read, write_dense, write_sparse
from .errors import RecordIOError
from .framing import MAGIC, iter_record_spans
from .responses import decode_response, encode_response

__all__ = [
    "MAGIC",
    "RecordIOError",
    "decode_response",
    "encode_response",
    "iter_batches",
    "iter_record_spans",
    "read",
    "write_dense",
    "write_sparse",
]
