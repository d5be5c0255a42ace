"""The one exception smalgo.recordio raises for bad input."""

from __future__ import annotations


class RecordIOError(ValueError):
    """Input that is not valid RecordIO-protobuf, or that cannot be turned into the arrays asked for.

    `record_index` (0-based, counting logical records) and `byte_offset` (of the record's first
    frame header in the stream) say where; `reason` says what. Either may be None when the
    problem is not tied to one record (an unsupported dtype given to a writer, say).
    """

    def __init__(
        self, reason: str, record_index: int | None = None, *, byte_offset: int | None = None, source: str | None = None
    ):
        self.reason = reason
        self.record_index = record_index
        self.byte_offset = byte_offset
        self.source = source
        where = []
        if source:
            where.append(source)
        if record_index is not None:
            where.append(
                f"record {record_index}" + (f" at byte offset {byte_offset}" if byte_offset is not None else "")
            )
        elif byte_offset is not None:
            where.append(f"byte offset {byte_offset}")
        super().__init__(": ".join(where + [reason]))
