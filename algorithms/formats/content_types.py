"""Media types: the one parser of `type/subtype; name=value` strings, and the content types of
training channels on top of it (the server adds its request and Accept rules in smalgo.serve.media).

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

from dataclasses import dataclass, field

from smalgo.algorithms.errors import UserError

CSV = "text/csv"
RECORDIO_PROTOBUF = "application/x-recordio-protobuf"
JSON = "application/json"
JSONLINES = "application/jsonlines"
# XGBoost's own formats (spec section 4.5.2): LIBSVM text and Parquet files.
LIBSVM = "text/libsvm"
PARQUET = "application/x-parquet"

# Other spellings of the canonical media types (compared lower-cased).
ALIASES = {
    "csv": CSV,
    "recordio-protobuf": RECORDIO_PROTOBUF,
    "libsvm": LIBSVM,
    "text/x-libsvm": LIBSVM,
    "parquet": PARQUET,
    "application/x-jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
}


@dataclass(frozen=True)
class Parameter:
    """One `;name=value` part as written (`text`), its lower-case name and its value (blanks
    and quotes stripped); `assigned` is False for a part without '='."""

    text: str
    name: str
    value: str
    assigned: bool


@dataclass(frozen=True)
class MediaType:
    """A parsed `type/subtype; name=value; ...` string.

    media_type: lower-case type/subtype, aliases resolved to the canonical type.
    parameter_list: every non-empty parameter part, in order, as written.
    parameters: name -> value of the parts with a name and '=' (the last wins on repeats).
    """

    media_type: str
    parameter_list: tuple[Parameter, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)


def parse_media_type(raw: str) -> MediaType:
    """The one media-type parser: lenient, it only splits and normalises; what it refuses (a
    malformed, repeated or unknown parameter) is each caller's rule on top."""
    media_part, *parts = raw.split(";")
    media = media_part.strip().lower()
    parameter_list = []
    for part in parts:
        if not part.strip():
            continue  # a trailing ';' as in "text/csv;" says nothing
        name, sep, value = part.partition("=")
        parameter_list.append(Parameter(part.strip(), name.strip().lower(), value.strip().strip('"'), bool(sep)))
    parameters = {p.name: p.value for p in parameter_list if p.assigned and p.name}
    return MediaType(ALIASES.get(media, media), tuple(parameter_list), parameters)


# The parameters each media type accepts; anything else is refused rather than silently ignored.
_PARAMETERS = {
    CSV: ("label_size", "charset"),
    RECORDIO_PROTOBUF: (),
    LIBSVM: ("charset",),
    PARQUET: (),
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

    @property
    def is_libsvm(self) -> bool:
        return self.media_type == LIBSVM

    @property
    def is_parquet(self) -> bool:
        return self.media_type == PARQUET

    def __str__(self) -> str:
        if self.is_csv:
            return f"{self.media_type};label_size={self.label_size}"
        return self.media_type


def parse_content_type(
    raw: str | None,
    accepted: tuple[str, ...] | list[str],
    default: str,
    *,
    channel: str | None = None,
    why: str = "",
) -> ContentType:
    """Parse `raw` (a ContentType header value, or None when the channel set none) into a
    ContentType whose media type is one of `accepted` (canonical media types).

    `channel` names where the value came from, for the error message (e.g. "train").
    Raises UserError naming the channel, the value and the accepted types, and then `why` (a
    sentence on why those alone, when the algorithm gives one).
    """
    where = f"Channel {channel}: " if channel else ""
    if raw is None or not raw.strip():
        raw = default
    parsed = parse_media_type(raw)
    media = parsed.media_type
    if media not in accepted:
        raise UserError(
            f"{where}ContentType {raw!r} is not accepted; {_accepted_list(accepted)}." + (f" {why}" if why else "")
        )

    params: dict[str, str] = {}
    for parameter in parsed.parameter_list:
        key, value = parameter.name, parameter.value
        if not parameter.assigned or not key or not value or "=" in value:
            raise UserError(
                f"{where}ContentType {raw!r}: malformed parameter {parameter.text!r}; "
                f"parameters are written as ';name=value' after the media type."
            )
        if key in params:
            raise UserError(f"{where}ContentType {raw!r}: parameter {key} is given more than once.")
        if key not in _PARAMETERS[media]:
            allowed = ", ".join(_PARAMETERS[media]) or "none"
            raise UserError(
                f"{where}ContentType {raw!r}: unknown parameter {key!r} for {media}; accepted parameters: {allowed}."
            )
        params[key] = value

    charset = params.get("charset", "utf-8").lower()
    if charset not in _CHARSETS:
        raise UserError(f"{where}ContentType {raw!r}: charset {charset!r} is not supported; use utf-8 or us-ascii.")
    if media != CSV:
        return ContentType(media)
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
