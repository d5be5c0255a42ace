"""Content-Type and Accept headers: which decoder reads a request body and which encoder writes
the response.

Media types and parameter names match case-insensitively (`text/CSV; label_size=0`, as the
SageMaker docs print it, is text/csv). Parsed headers are cached: a client sends the same few
header values millions of times, and parsing them again is pure per-request overhead.
"""

from __future__ import annotations

from functools import lru_cache

from smalgo.algorithms.formats.content_types import CSV, JSON, JSONLINES, LIBSVM, RECORDIO_PROTOBUF, parse_media_type

from .errors import NOT_ACCEPTABLE, UNSUPPORTED_MEDIA_TYPE, RequestError

REQUEST_MEDIA_TYPES = (CSV, JSON, JSONLINES, RECORDIO_PROTOBUF, LIBSVM)
ACCEPTABLE_MEDIA_TYPES = (JSON, JSONLINES, RECORDIO_PROTOBUF, CSV)
# Text bodies are numbers and JSON punctuation: ASCII, which these charsets all read the same.
_TEXT_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")
_HEADER_CACHE_SIZE = 256


@lru_cache(maxsize=_HEADER_CACHE_SIZE)
def request_media_type(content_type: str | None) -> str:
    """The canonical media type of a request's Content-Type; RequestError 415 when the server
    cannot read it (an unknown type, `label_size` other than 0, a charset other than UTF-8)."""
    if content_type is None or not content_type.strip():
        raise RequestError(
            UNSUPPORTED_MEDIA_TYPE,
            f"The request has no Content-Type header; send one of {_listing(REQUEST_MEDIA_TYPES)}.",
        )
    parsed = parse_media_type(content_type)
    if parsed.media_type not in REQUEST_MEDIA_TYPES:
        raise RequestError(
            UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {content_type!r} is not supported; send one of {_listing(REQUEST_MEDIA_TYPES)}.",
        )
    label_size = parsed.parameters.get("label_size")
    if parsed.media_type == CSV and label_size is not None and label_size != "0":
        raise RequestError(
            UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {content_type!r}: inference CSV has no label column, so "
            f"label_size must be 0 (or left out), not {label_size!r}.",
        )
    charset = parsed.parameters.get("charset")
    if charset is not None and parsed.media_type != RECORDIO_PROTOBUF and charset.lower() not in _TEXT_CHARSETS:
        raise RequestError(
            UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {content_type!r}: charset {charset!r} is not supported; send UTF-8 (or US-ASCII).",
        )
    return parsed.media_type


@lru_cache(maxsize=_HEADER_CACHE_SIZE)
def response_media_type(accept: str | None, default: str) -> str:
    """The media type to answer in: the Accept header's most preferred type that the server
    writes (`*/*` and a missing header mean `default`); RequestError 406 when there is none."""
    if accept is None or not accept.strip():
        return default
    ranges = []
    for position, item in enumerate(accept.split(",")):
        if not item.strip():
            continue
        parsed = parse_media_type(item)
        try:
            quality = float(parsed.parameters.get("q", "1"))
        except ValueError:
            quality = 0.0  # an unreadable weight: as if the type were not offered
        if quality > 0:
            ranges.append((-quality, position, parsed.media_type))
    for _, _, media in sorted(ranges):
        chosen = _match(media, default)
        if chosen is not None:
            return chosen
    raise RequestError(
        NOT_ACCEPTABLE,
        f"Accept {accept!r} names no type this server writes; accept one of "
        f"{_listing(ACCEPTABLE_MEDIA_TYPES)} (or */* for {default}).",
    )


def _match(media_range: str, default: str) -> str | None:
    if media_range in ACCEPTABLE_MEDIA_TYPES:
        return media_range
    if media_range == "*/*":
        return default
    if media_range.endswith("/*"):
        prefix = media_range[:-1]
        if default.startswith(prefix):
            return default
        return next((m for m in ACCEPTABLE_MEDIA_TYPES if m.startswith(prefix)), None)
    return None


def _listing(media_types: tuple[str, ...]) -> str:
    return ", ".join(media_types)
