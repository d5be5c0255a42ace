"""ContentType strings as SageMaker channels and SDKs write them."""

import pytest

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats.content_types import CSV, RECORDIO_PROTOBUF, ContentType, parse_content_type

BOTH = (RECORDIO_PROTOBUF, CSV)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("text/csv", ContentType(CSV, label_size=1)),  # the docs: label in the first column
        ("text/csv;label_size=0", ContentType(CSV, label_size=0)),
        ("text/csv; label_size=1; charset=utf-8", ContentType(CSV, label_size=1)),
        ("text/CSV; label_size=0", ContentType(CSV, label_size=0)),  # as the inference docs print it
        ("TEXT/CSV;LABEL_SIZE=0", ContentType(CSV, label_size=0)),
        ('text/csv; label_size="0"', ContentType(CSV, label_size=0)),
        ("text/csv;", ContentType(CSV, label_size=1)),
        ("csv", ContentType(CSV, label_size=1)),
        ("csv;label_size=0", ContentType(CSV, label_size=0)),
        ("application/x-recordio-protobuf", ContentType(RECORDIO_PROTOBUF)),
        ("Application/X-RecordIO-Protobuf", ContentType(RECORDIO_PROTOBUF)),
        ("recordio-protobuf", ContentType(RECORDIO_PROTOBUF)),
        ("  text/csv ; charset=us-ascii ", ContentType(CSV, label_size=1)),
    ],
)
def test_accepted_spellings(raw, expected):
    assert parse_content_type(raw, BOTH, RECORDIO_PROTOBUF, channel="train") == expected


@pytest.mark.parametrize("missing", [None, "", "   "])
def test_missing_content_type_is_the_algorithms_default(missing):
    assert parse_content_type(missing, BOTH, RECORDIO_PROTOBUF, channel="train") == ContentType(RECORDIO_PROTOBUF)
    assert parse_content_type(missing, BOTH, CSV, channel="train") == ContentType(CSV, label_size=1)


def test_str_is_a_canonical_content_type():
    assert str(parse_content_type("csv", BOTH, CSV)) == "text/csv;label_size=1"
    assert str(parse_content_type("recordio-protobuf", BOTH, CSV)) == RECORDIO_PROTOBUF


@pytest.mark.parametrize("raw", ["text/plain", "application/json", "text/libsvm", "application/x-parquet"])
def test_unsupported_type_names_the_channel_and_the_accepted_types(raw):
    with pytest.raises(UserError) as error:
        parse_content_type(raw, BOTH, RECORDIO_PROTOBUF, channel="train")
    message = str(error.value)
    assert message.startswith(f"Channel train: ContentType '{raw}' is not accepted")
    assert "application/x-recordio-protobuf (or recordio-protobuf)" in message
    assert "text/csv (or csv)" in message


def test_a_type_the_algorithm_does_not_take_is_refused_even_if_known():
    with pytest.raises(
        UserError, match=r"ContentType 'text/csv' is not accepted; accepted: application/x-recordio-protobuf"
    ):
        parse_content_type("text/csv", (RECORDIO_PROTOBUF,), RECORDIO_PROTOBUF, channel="train")


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (
            "text/csv;label_size=5",
            "label_size must be 0 (no label column) or 1 (the label is the first column), not '5'",
        ),
        ("text/csv;label_size=-1", "label_size must be 0"),
        ("text/csv;label_size=one", "label_size must be 0"),
        ("text/csv;label_size=1=1", "malformed parameter 'label_size=1=1'"),
        ("text/csv;label_size", "malformed parameter 'label_size'"),
        ("text/csv;label_size=", "malformed parameter 'label_size='"),
        ("text/csv;label_size=1;label_size=1", "parameter label_size is given more than once"),
        (
            "text/csv;header=present",
            "unknown parameter 'header' for text/csv; accepted parameters: label_size, charset",
        ),
        ("text/csv;charset=utf-16", "charset 'utf-16' is not supported"),
        (
            "application/x-recordio-protobuf;label_size=1",
            "unknown parameter 'label_size' for application/x-recordio-protobuf; accepted parameters: none",
        ),
    ],
)
def test_bad_parameters_name_the_channel_and_the_problem(raw, fragment):
    with pytest.raises(UserError) as error:
        parse_content_type(raw, BOTH, RECORDIO_PROTOBUF, channel="test")
    assert str(error.value).startswith(f"Channel test: ContentType {raw!r}")
    assert fragment in str(error.value)


def test_parameters_before_the_media_type_are_refused():
    # AWS's XGBoost container rejects this ordering too.
    with pytest.raises(UserError, match="is not accepted"):
        parse_content_type("label_size=1; text/csv", BOTH, CSV, channel="train")


def test_without_a_channel_the_message_starts_with_the_content_type():
    with pytest.raises(UserError) as error:
        parse_content_type("text/plain", BOTH, CSV)
    assert str(error.value).startswith("ContentType 'text/plain' is not accepted")
