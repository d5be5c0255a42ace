"""Content types of training channels (and request bodies): parsing a ContentType string.

SageMaker passes a channel's ContentType through unchanged, so the same media type arrives in the
spellings users and SDKs write: `text/csv`, `text/CSV; label_size=0`, `csv` (the XGBoost image's
alias, and what users try with the other built-ins), `application/x-recordio-protobuf`,
`recordio-protobuf`. A channel without a ContentType gets the algorithm's default.

For CSV, `label_size` says how many leading columns are labels. The SageMaker docs put the label
in the first column, so it defaults to 1; unsupervised algorithms are given data without a label as
`text/csv;label_size=0`. We accept 0 and 1 (AWS's XGBoost image accepts only 1, which broke users
who followed the docs' `label_size=0`: sagemaker-xgboost-container#74).
"""

from __future__ import annotations

from dataclasses import dataclass

from smalgo.algorithms.errors import UserError

CSV = "text/csv"
RECORDIO_PROTOBUF = "application/x-recordio-protobuf"

# Other spellings of the canonical media types (compared lower-cased).
ALIASES = {
    "csv": CSV,
    "recordio-protobuf": RECORDIO_PROTOBUF,
}

# The parameters each media type accepts; anything else is refused rather than silently ignored.
_PARAMETERS = {
    CSV: ("label_size", "charset"),
    RECORDIO_PROTOBUF: (),
}
_LABEL_SIZES = (0, 1)
# CSV training data is numeric ASCII; these charsets all read it byte for byte the same.
_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")
DEFAULT_CSV_LABEL_SIZE = 1


@dataclass(frozen=True)
class ContentType:
    """A parsed content type: the canonical media type and, for CSV, the number of label columns."""

    media_type: str
    label_size: int | None = None

    @property
    def is_csv(self) -> bool:
        return self.media_type == CSV

    @property
    def is_recordio_protobuf(self) -> bool:
        return self.media_type == RECORDIO_PROTOBUF

    def __str__(self) -> str:
        if self.is_csv:
            return f"{self.media_type};label_size={self.label_size}"
        return self.media_type


def parse_content_type(
    raw: str | None,
    accepted: tuple[str, ...] | list[str],
    default: str,
    channel: str | None = None,
) -> ContentType:
    """Parse `raw` (a ContentType header value, or None when the channel set none) into a
    ContentType whose media type is one of `accepted` (canonical media types).

    `channel` names where the value came from, for the error message (e.g. "train").
    Raises UserError naming the channel, the value and the accepted types.
    """
    where = f"Channel {channel}: " if channel else ""
    if raw is None or not raw.strip():
        raw = default
    media_part, *param_parts = raw.split(";")
    media = media_part.strip().lower()
    media = ALIASES.get(media, media)
    if media not in accepted:
        raise UserError(f"{where}ContentType {raw!r} is not accepted; {_accepted_list(accepted)}.")

    params: dict[str, str] = {}
    for part in param_parts:
        if not part.strip():
            continue  # a trailing ';' as in "text/csv;" says nothing
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"')
        if not sep or not key or not value or "=" in value:
            raise UserError(
                f"{where}ContentType {raw!r}: malformed parameter {part.strip()!r}; "
                f"parameters are written as ';name=value' after the media type."
            )
        if key in params:
            raise UserError(f"{where}ContentType {raw!r}: parameter {key} is given more than once.")
        if key not in _PARAMETERS[media]:
            allowed = ", ".join(_PARAMETERS[media]) or "none"
            raise UserError(
                f"{where}ContentType {raw!r}: unknown parameter {key!r} for {media}; "
                f"accepted parameters: {allowed}."
            )
        params[key] = value

    if media != CSV:
        return ContentType(media)
    charset = params.get("charset", "utf-8").lower()
    if charset not in _CHARSETS:
        raise UserError(
            f"{where}ContentType {raw!r}: charset {charset!r} is not supported; use utf-8 or us-ascii."
        )
    label_size = DEFAULT_CSV_LABEL_SIZE
    if "label_size" in params:
        text = params["label_size"]
        if not (text.isdigit() and int(text) in _LABEL_SIZES):
            raise UserError(
                f"{where}ContentType {raw!r}: label_size must be 0 (no label column) or "
                f"1 (the label is the first column), not {text!r}."
            )
        label_size = int(text)
    return ContentType(CSV, label_size=label_size)


def _accepted_list(accepted: tuple[str, ...] | list[str]) -> str:
    spellings = []
    for media in accepted:
        aliases = [alias for alias, target in ALIASES.items() if target == media]
        spellings.append(media + (f" (or {', '.join(aliases)})" if aliases else ""))
    return "accepted: " + ", ".join(spellings)
