"""The CSV decoder: bit-identical to numpy.loadtxt(..., delimiter=",", dtype=float32), streamed,
with errors that name the file, line and column."""

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smalgo.algorithms.errors import UserError
from smalgo.algorithms.formats import csv as csv_module
from smalgo.algorithms.formats.csv import decode_csv, iter_csv_batches, iter_csv_blocks, read_csv

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
TRANSFORM_INPUT = TESTDATA / "sagemaker-python-sdk" / "transform_input.csv"


def loadtxt_bits(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2).view(np.uint32)


def assert_same_bits(ours: np.ndarray, path: Path) -> None:
    expected = loadtxt_bits(path)
    assert ours.shape == expected.shape
    mismatches = np.argwhere(ours.view(np.uint32) != expected)
    assert not len(mismatches), f"first differing cell (row, column): {mismatches[0]}"


# Cells that exercise every path of the number parser, and what loadtxt makes of them.
TRICKY_CELLS = [
    "0",
    "-0",
    "+0",
    "-0.0",
    "0.000",
    "1",
    "+1.5",
    "-1.5",
    " 2.25 ",
    "\t-3\t",
    "1.",
    ".5",
    "-.5",
    "1e5",
    "1E+05",
    "-2.5e-3",
    "6.02214076e23",
    "1.6e-19",
    "9.99999e-01",
    "nan",
    "NaN",
    "-nan",
    "+nan",
    "inf",
    "-Inf",
    "INFINITY",
    "-infinity",
    "3.4028235e38",
    "3.4028236e38",
    "-3.40282357e38",  # float32 max, and just past its rounding edge
    "1e39",
    "1e400",
    "-1e400",
    "1e-400",
    "1.4e-45",
    "7e-46",
    "7.1e-46",
    "1.1754942e-38",  # range edges
    "0.1",
    "0.2",
    "0.30000000000000004",
    "123456789012345678901234567890",
    "0.000000000000000000000000000000000000000000001401298464324817",  # the smallest subnormal
    "1.00000005960464477539062500",  # exactly between two float32: ties to even
    "1.000000059604644775390625000000001",  # a hair above the midpoint: rounds up
    "16777217",
    "16777217.0000000001",  # 2**24 + 1: float32 ties, then just above
    "9007199254740993",  # 2**53 + 1: not an exact double
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "4.9e-324",
    "00001.5000",
    "1234567890123456789",
    "12345678901234567890.5",
]


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_tricky_cells_are_bit_identical_to_loadtxt(tmp_path, line_end):
    rows = [TRICKY_CELLS[i : i + 4] for i in range(0, len(TRICKY_CELLS) - 3, 4)]
    text = line_end.join(",".join(row) for row in rows) + line_end
    path = tmp_path / "tricky.csv"
    path.write_bytes(text.encode())
    X, y = read_csv(path)
    assert y is None
    assert_same_bits(X, path)


def test_sdk_transform_input_is_bit_identical_to_loadtxt():
    # 10 x 784 values in scientific notation, written by the SageMaker Python SDK's tests.
    X, _ = read_csv(TRANSFORM_INPUT)
    assert X.shape == (10, 784)
    assert_same_bits(X, TRANSFORM_INPUT)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=40),
    style=st.sampled_from(["repr", "%.9g", "%.17g", "%.6e", "%.4f", "%.25g", "float32", "%.40f"]),
    columns=st.integers(1, 5),
)
def test_random_values_are_bit_identical_to_loadtxt(tmp_path, values, style, columns):
    while len(values) % columns:
        values.append(0.5)
    if style == "repr":
        cells = [repr(v) for v in values]
    elif style == "float32":
        with np.errstate(over="ignore"):
            cells = [repr(float(np.float32(v))) for v in values]
    else:
        cells = [style % v for v in values]
    text = "\n".join(",".join(cells[i : i + columns]) for i in range(0, len(cells), columns))
    path = tmp_path / "random.csv"
    path.write_text(text)
    X, _ = read_csv(path)
    assert_same_bits(X, path)


def test_empty_and_blank_lines_are_skipped_and_the_last_line_needs_no_end(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_bytes(b"\n1,2\r\n\r\n   \n3,4\n\n5,6")
    X, _ = read_csv(path)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4], [5, 6]])


def test_label_size_one_takes_the_first_column_as_the_label():
    X, y = decode_csv(b"1,10,11\n0,20,21\n", label_size=1)
    np.testing.assert_array_equal(y, [1, 0])
    np.testing.assert_array_equal(X, [[10, 11], [20, 21]])
    assert X.flags.c_contiguous and X.dtype == np.float32 and y.dtype == np.float32


def test_payload_decoding_for_inference_requests():
    X, y = decode_csv(b"1.5,16.0,14,23.0\n", feature_dim=4)
    assert y is None
    np.testing.assert_array_equal(X, [[1.5, 16.0, 14.0, 23.0]])
    X, y = decode_csv(b"\n\n")
    assert X.shape == (0, 0) and y is None
    X, y = decode_csv(b"", label_size=1, feature_dim=3)
    assert X.shape == (0, 3) and y.shape == (0,)


@pytest.mark.parametrize("as_stream", [False, True], ids=["mapped-file", "stream"])
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, 1 << 20])
def test_streaming_in_small_chunks_gives_the_same_rows(tmp_path, chunk_bytes, as_stream):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(57, 3)).astype(np.float32)
    path = tmp_path / "stream.csv"
    # Mixed line ends, so that chunk boundaries fall between a '\r' and its '\n' too.
    lines = [",".join(repr(float(v)) for v in row) for row in data]
    path.write_bytes("".join(line + ("\r\n" if i % 2 else "\n") for i, line in enumerate(lines)).encode())
    if as_stream:  # a file object is read, not mapped
        with open(path, "rb") as stream:
            batches = list(iter_csv_batches(stream, 10, chunk_bytes=chunk_bytes))
    else:
        batches = list(iter_csv_batches(path, 10, chunk_bytes=chunk_bytes))
    assert [len(X) for X, _ in batches] == [10, 10, 10, 10, 10, 7]
    np.testing.assert_array_equal(np.concatenate([X for X, _ in batches]), data)


def test_a_line_longer_than_the_chunk_grows_the_buffer(tmp_path):
    row = np.arange(5000, dtype=np.float32)
    path = tmp_path / "wide.csv"
    path.write_text((",".join(repr(float(v)) for v in row) + "\n") * 3)
    X = np.concatenate([block for block, _ in iter_csv_blocks(path, chunk_bytes=100)])
    np.testing.assert_array_equal(X, np.tile(row, (3, 1)))
    with open(path, "rb") as stream:
        X = np.concatenate([block for block, _ in iter_csv_blocks(stream, chunk_bytes=100)])
    np.testing.assert_array_equal(X, np.tile(row, (3, 1)))


def test_reads_from_a_pipe(tmp_path):
    data = np.arange(3000, dtype=np.float32).reshape(1000, 3)
    read_end, write_end = os.pipe()

    def writer():
        with os.fdopen(write_end, "wb") as stream:
            for row in data:
                stream.write((",".join(repr(float(v)) for v in row) + "\n").encode())

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(read_end, "rb", buffering=0) as stream:
        batches = list(iter_csv_batches(stream, 128, name="train_0"))
    thread.join()
    np.testing.assert_array_equal(np.concatenate([X for X, _ in batches]), data)


def test_cells_left_for_python_beyond_one_buffer_of_them(tmp_path):
    # Every cell here needs the exact fallback (out of the double range, or a signed NaN), far
    # more of them than the kernel records per call.
    path = tmp_path / "slow.csv"
    path.write_text("1e-400,-nan,1e400,2.5\n" * 3000)
    X, _ = read_csv(path)
    assert_same_bits(X, path)


def test_threads_split_a_chunk_at_line_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_module, "_MIN_SEGMENT_BYTES", 64)
    monkeypatch.setenv("SMALGO_CSV_THREADS", "4")
    rng = np.random.default_rng(2)
    data = rng.normal(size=(500, 4)).astype(np.float32)
    path = tmp_path / "split.csv"
    path.write_text("".join(",".join(repr(float(v)) for v in row) + "\n\n" for row in data))
    blocks = list(iter_csv_blocks(path, chunk_bytes=4096))
    assert len(blocks) > 4  # several chunks, each split between threads
    np.testing.assert_array_equal(np.concatenate([X for X, _ in blocks]), data)

    # An error in a later chunk and a later segment still names its own line.
    lines = path.read_text().split("\n")
    lines[801] = "1,2,oops,4"  # line 802: the data rows are on odd lines
    path.write_text("\n".join(lines))
    with pytest.raises(UserError, match=r"split.csv, line 802, column 3: 'oops' is not a number\."):
        list(iter_csv_blocks(path, chunk_bytes=4096))


# Errors: the file, the 1-based line and column, the cell.


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode())
    return path


def test_a_non_numeric_cell_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "1,2,3\n\n4,5,6\r\n7,eight,9\n")
    with pytest.raises(UserError) as error:
        read_csv(path)
    assert str(error.value) == f"{path}, line 4, column 2: 'eight' is not a number."


def test_a_header_row_is_reported_as_such(tmp_path):
    path = write(tmp_path, "sepal_length,sepal_width\n5.1,3.5\n")
    with pytest.raises(
        UserError,
        match=r"line 1, column 1: 'sepal_length' is not a number "
        r"\(CSV data has no header row: the first line must hold numbers\)",
    ):
        read_csv(path)


def test_a_byte_order_mark_is_reported_as_such(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("5.1,3.5\n4.9,3.0\n".encode("utf-8-sig"))
    with pytest.raises(UserError) as error:
        read_csv(path)
    assert str(error.value) == (
        f"{path}, line 1, column 1: '\\ufeff5.1' is not a number (it begins with a "
        f"UTF-8 byte order mark: save the file as CSV without one)."
    )


@pytest.mark.parametrize(
    "cell", ["1_000", "0x10", "1e", "1e+", ".", "-", "1.2.3", "nan(1)", "infinit", '"1"', "# 1", "1 2", "١"]
)
def test_what_loadtxt_refuses_we_refuse(tmp_path, cell):
    path = write(tmp_path, f"1,{cell}\n")
    with pytest.raises(ValueError):
        np.loadtxt(path, delimiter=",", dtype=np.float32)
    with pytest.raises(UserError, match=r"line 1, column 2: .* is not a number"):
        read_csv(path)


@pytest.mark.parametrize("text, column", [("1,,3\n", 2), ("1,2,\n", 3), (",2,3\n", 1), ("1, ,3\n", 2)])
def test_an_empty_cell_is_reported(tmp_path, text, column):
    path = write(tmp_path, "7,8,9\n" + text)
    with pytest.raises(UserError) as error:
        read_csv(path)
    assert str(error.value) == (f"{path}, line 2, column {column}: empty cell; every cell must hold a number.")
    assert "nan" not in str(error.value)  # k-means and PCA refuse NaN: no hint to write it


@pytest.mark.parametrize("bad_row, found", [("1,2", 2), ("1,2,3,4", 4)])
def test_rows_of_different_widths_are_reported(tmp_path, bad_row, found):
    path = write(tmp_path, f"\n1,2,3\n4,5,6\n{bad_row}\n")
    with pytest.raises(UserError) as error:
        read_csv(path)
    assert str(error.value) == f"{path}, line 4: {found} columns, expected 3 as on line 2."


def test_feature_dim_that_disagrees_explains_the_label_column(tmp_path):
    path = write(tmp_path, "1,2,3\n")
    with pytest.raises(UserError) as error:
        read_csv(path, label_size=1, feature_dim=3)
    assert str(error.value) == (
        f"{path}, line 1: 3 columns, expected 4: 3 features (hyperparameter feature_dim=3) plus 1 "
        f"label column first, because ContentType text/csv means label_size=1 unless it says "
        f"text/csv;label_size=0."
    )
    with pytest.raises(
        UserError, match=r"line 1: 3 columns, expected 2: 2 features \(hyperparameter feature_dim=2\)\.$"
    ):
        read_csv(path, label_size=0, feature_dim=2)


def test_a_label_without_features_is_reported(tmp_path):
    path = write(tmp_path, "1\n2\n")
    with pytest.raises(UserError, match=r"line 1: 1 column, which is the label .* leaving no features"):
        read_csv(path, label_size=1)


def test_error_line_numbers_count_across_chunks(tmp_path):
    path = write(tmp_path, "1,2\n" * 999 + "1,x\n")
    with pytest.raises(UserError, match=r"line 1000, column 2: 'x'"):
        list(iter_csv_batches(path, 100, chunk_bytes=50))


def test_payload_errors_name_the_payload():
    with pytest.raises(UserError, match=r"^request body, line 2, column 1: 'abc' is not a number\.$"):
        decode_csv(b"1\nabc\n", name="request body")


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        list(iter_csv_batches(io.BytesIO(b"1\n"), 0))
