"""FilesSource: CSV and Parquet, long and wide, written into tmp_path and read back."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anomaly.settings import Settings
from anomaly.sources.base import CANONICAL_COLUMNS, SourceError
from anomaly.sources.files import FilesSource

T0 = datetime(2025, 1, 1, tzinfo=UTC)
START, END = T0, T0 + timedelta(minutes=3)  # rows at minutes 0, 1, 2 are in; minute 3 is out


def _long_rows() -> pd.DataFrame:
    """Four minutes x two hosts x two metrics; minute 3 sits exactly on END."""
    rows = []
    for minute in range(4):
        for host in ("web-1", "web-2"):
            for metric, base in (("cpu_util", 0.25), ("load1", 1.5)):
                rows.append((T0 + timedelta(minutes=minute), host, metric, base + minute / 8))
    frame = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS))
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    return frame


def _wide(long: pd.DataFrame) -> pd.DataFrame:
    wide = long.pivot(index=["ts", "host"], columns="metric", values="value").reset_index()
    wide.columns.name = None
    return wide[["ts", "host", "cpu_util", "load1"]]


def _expected(long: pd.DataFrame) -> pd.DataFrame:
    keep = (long["ts"] >= START) & (long["ts"] < END)
    return long[keep].reset_index(drop=True)


def _iso(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def _assert_canonical(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert actual.columns.tolist() == list(CANONICAL_COLUMNS)
    assert str(actual["ts"].dtype) == "datetime64[us, UTC]"
    assert actual["host"].dtype == object and actual["metric"].dtype == object
    assert actual["value"].dtype == np.float64
    pd.testing.assert_frame_equal(actual, expected.astype({"host": object, "metric": object}))


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
@pytest.mark.parametrize("layout", ["long", "auto"])
def test_long_round_trip(tmp_path: Path, fmt: str, layout: str) -> None:
    long = _long_rows()
    path = tmp_path / f"m.{fmt}"
    if fmt == "parquet":
        long.to_parquet(path, index=False)
    else:
        _iso(long).to_csv(path, index=False)  # pandas compresses .gz by suffix
    got = FilesSource(str(path), layout=layout).fetch(START, END)  # type: ignore[arg-type]
    _assert_canonical(got, _expected(long))


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_wide_round_trip(tmp_path: Path, fmt: str) -> None:
    long = _long_rows()
    wide = _wide(long)
    path = tmp_path / f"w.{fmt}"
    if fmt == "parquet":
        wide.to_parquet(path, index=False)
    else:
        _iso(wide).to_csv(path, index=False)
    # Wide rows unpivot in row order, metrics in column order: the same order as _long_rows().
    for layout in ("wide", "auto"):
        got = FilesSource(str(path), layout=layout).fetch(START, END)  # type: ignore[arg-type]
        _assert_canonical(got, _expected(long))


def test_wide_explicit_metric_columns(tmp_path: Path) -> None:
    wide = _wide(_long_rows())
    wide["note"] = "ignore me"
    path = tmp_path / "w.parquet"
    wide.to_parquet(path, index=False)
    got = FilesSource(str(path), metric_columns=["load1"]).fetch(START, END)
    assert set(got["metric"]) == {"load1"}
    assert len(got) == 3 * 2


def test_interval_filtering_boundaries_and_offsets(tmp_path: Path) -> None:
    text = (
        "ts,host,metric,value\n"
        "2024-12-31T23:59:59.999999Z,a,m,1\n"  # just before start: out
        "2025-01-01T00:00:00Z,a,m,2\n"  # == start: in
        "2025-01-01T01:00:00+01:00,a,m,3\n"  # == start written with an offset: in
        "2025-01-01T00:02:59.999999+00:00,a,m,4\n"  # just before end: in
        "2025-01-01T00:03:00Z,a,m,5\n"  # == end: out
        "2024-12-31T19:03:00-05:00,a,m,6\n"  # == end with an offset: out
    )
    path = tmp_path / "m.csv"
    path.write_text(text)
    got = FilesSource(str(path)).fetch(START, END)
    assert got["value"].tolist() == [2.0, 3.0, 4.0]
    assert got["ts"].tolist() == [
        pd.Timestamp("2025-01-01T00:00:00Z"),
        pd.Timestamp("2025-01-01T00:00:00Z"),
        pd.Timestamp("2025-01-01T00:02:59.999999Z"),
    ]
    # Bounds in another zone mean the same instants.
    plus2 = timezone(timedelta(hours=2))
    again = FilesSource(str(path)).fetch(START.astimezone(plus2), END.astimezone(plus2))
    pd.testing.assert_frame_equal(again, got)


def test_parquet_filter_pushdown_across_row_groups(tmp_path: Path) -> None:
    """A file with many row groups: only the interval comes back, from the right groups."""
    ts = pd.date_range(T0 - timedelta(days=1), periods=3 * 24 * 60, freq="min", tz="UTC", unit="us")
    frame = pd.DataFrame({"ts": ts, "host": "h", "metric": "m", "value": np.arange(len(ts), dtype=float)})
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=500)
    got = FilesSource(str(path)).fetch(START, END)
    assert got["ts"].tolist() == list(ts[(ts >= START) & (ts < END)])
    assert got["value"].tolist() == [1440.0, 1441.0, 1442.0]


def test_parquet_timestamp_with_other_zone_is_converted_to_utc(tmp_path: Path) -> None:
    long = _long_rows()
    shifted = long.assign(ts=long["ts"].dt.tz_convert("Europe/Berlin"))
    path = tmp_path / "m.parquet"
    shifted.to_parquet(path, index=False)
    _assert_canonical(FilesSource(str(path)).fetch(START, END), _expected(long))


def test_non_numeric_text_passes_through_as_text(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "ts,host,metric,value\n"
        "2025-01-01T00:00:00Z,a,m,n/a\n"
        '2025-01-01T00:00:00Z,b,m,"12,5"\n'  # a decimal comma, quoted
        "2025-01-01T00:00:00Z,c,m,\n"
        "2025-01-01T00:00:00Z,d,m,NULL\n"
        "2025-01-01T00:00:00Z,e,m,1e3\n"
        "2025-01-01T00:00:00Z,f,m,inf\n"
        "2025-01-01T00:00:00Z,g,m,1_000\n"
    )
    got = FilesSource(str(path)).fetch(START, END)
    assert got["value"].dtype == object
    values = got["value"].tolist()
    assert values[0] == "n/a" and values[1] == "12,5" and values[3] == "NULL" and values[6] == "1_000"
    assert values[2] is None  # an empty cell is a missing value (null_value), not NaN
    assert values[4] == 1000.0 and values[5] == float("inf")


def test_non_numeric_text_in_parquet_wide(tmp_path: Path) -> None:
    table = pa.table(
        {
            "ts": pa.array([datetime(2025, 1, 1), datetime(2025, 1, 1, 0, 1)], pa.timestamp("us", tz="UTC")),
            "host": ["a", "a"],
            "cpu_util": ["0.5", "broken"],  # text column, one number and one not
            "load1": pa.array([1.0, float("nan")]),  # a real NaN, not a null: it is a value
        }
    )
    path = tmp_path / "w.parquet"
    pq.write_table(table, path)
    got = FilesSource(str(path)).fetch(START, END)
    assert got["metric"].tolist() == ["cpu_util", "load1", "cpu_util", "load1"]
    assert got["value"].tolist()[:3] == [0.5, 1.0, "broken"]
    assert np.isnan(got["value"].iloc[3])


def test_naive_timestamps_pass_through_naive(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "ts,host,metric,value\n"
        "2025-01-01T00:00:00,a,m,1\n"
        "2025-01-01 00:02:30,a,m,2\n"
        "2025-01-01T00:03:00,a,m,3\n"  # == end compared as UTC wall clock: out
    )
    got = FilesSource(str(path)).fetch(START, END)
    assert str(got["ts"].dtype) == "datetime64[us]"  # naive, not assumed UTC
    assert got["ts"].tolist() == [pd.Timestamp("2025-01-01 00:00:00"), pd.Timestamp("2025-01-01 00:02:30")]

    naive_pq = tmp_path / "n.parquet"
    pq.write_table(
        pa.table(
            {
                "ts": pa.array([datetime(2025, 1, 1, 0, 1)], pa.timestamp("us")),
                "host": ["a"],
                "metric": ["m"],
                "value": [1.0],
            }
        ),
        naive_pq,
    )
    got = FilesSource(str(naive_pq)).fetch(START, END)
    assert str(got["ts"].dtype) == "datetime64[us]" and got["ts"].tolist() == [
        pd.Timestamp("2025-01-01 00:01")
    ]


def test_mixed_aware_and_naive_keeps_each_as_it_came(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("ts,host,metric,value\n2025-01-01T00:00:00Z,a,m,1\n2025-01-01T00:01:00,a,m,2\n")
    got = FilesSource(str(path)).fetch(START, END)
    assert got["ts"].dtype == object
    assert got["ts"].tolist() == [pd.Timestamp("2025-01-01T00:00:00Z"), pd.Timestamp("2025-01-01T00:01:00")]


def test_unparseable_timestamp_names_file_row_and_text(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("ts,host,metric,value\n2025-01-01T00:00:00Z,a,m,1\nyesterday,a,m,2\n")
    with pytest.raises(SourceError) as err:
        FilesSource(str(path)).fetch(START, END)
    message = str(err.value)
    assert str(path) in message and "data row 2" in message and "'yesterday'" in message


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("ts,host,value\n2025-01-01T00:00:00Z,a,1\n")
    with pytest.raises(SourceError) as err:
        FilesSource(str(path)).fetch(START, END)
    message = str(err.value)
    assert (
        str(path) in message and "missing column(s) metric" in message and "long layout (detected)" in message
    )

    path = tmp_path / "w.parquet"
    pd.DataFrame({"ts": pd.to_datetime(["2025-01-01T00:00:00Z"]), "cpu_util": [0.1]}).to_parquet(path)
    with pytest.raises(SourceError, match=r"missing column\(s\) host for the wide layout \(detected\)"):
        FilesSource(str(path)).fetch(START, END)
    with pytest.raises(SourceError, match=r"missing column\(s\) host, metric, value for the long layout"):
        FilesSource(str(path), layout="long").fetch(START, END)


def test_no_matching_files_names_the_glob(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing" / "*.parquet")
    with pytest.raises(SourceError, match="no files match") as err:
        FilesSource(pattern).fetch(START, END)
    assert pattern in str(err.value)


def test_unsupported_file_in_glob_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError, match="not a supported file"):
        FilesSource(str(tmp_path / "*")).fetch(START, END)


def test_multiple_files_via_globs_sorted(tmp_path: Path) -> None:
    long = _long_rows()
    first, second = long.iloc[:8], long.iloc[8:]  # minutes 0-1 and minutes 2-3
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # Named so that sorted order differs from creation order.
    second.to_parquet(tmp_path / "b" / "part-2.parquet", index=False)
    with gzip.open(tmp_path / "a" / "part-1.csv.gz", "wt") as fh:
        _iso(first).to_csv(fh, index=False)
    src = FilesSource([str(tmp_path / "b" / "*.parquet"), str(tmp_path / "**" / "*.csv.gz")])
    assert [p.name for p in src.files()] == ["part-1.csv.gz", "part-2.parquet"]
    _assert_canonical(src.fetch(START, END), _expected(long))
    # The same file matched by two patterns is read once.
    twice = FilesSource([str(tmp_path / "a" / "*"), str(tmp_path / "a" / "part-1.csv.gz")])
    assert len(twice.files()) == 1


def test_empty_interval_gives_empty_canonical_frame(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    _long_rows().to_parquet(path, index=False)
    got = FilesSource(str(path)).fetch(T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert got.empty and got.columns.tolist() == list(CANONICAL_COLUMNS)


def test_naive_bounds_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FilesSource(str(tmp_path / "*.csv")).fetch(datetime(2025, 1, 1), datetime(2025, 1, 2))


def test_from_settings() -> None:
    src = FilesSource.from_settings(Settings(files_glob="/data/*.csv"))
    assert src.patterns == ("/data/*.csv",) and src.name == "files"


def test_row_with_extra_fields_is_an_error_not_a_silent_shift(tmp_path: Path) -> None:
    """An unquoted decimal comma splits a field; pandas would silently drop or shift data."""
    path = tmp_path / "m.csv"
    path.write_text("ts,host,metric,value\n2025-01-01T00:00:00Z,a,m,12,5\n")
    with pytest.raises(SourceError, match=r"cannot parse the CSV.*Expected 4 columns, got 5") as err:
        FilesSource(str(path)).fetch(START, END)
    assert str(path) in str(err.value)


def test_quoted_fields_and_nanoseconds_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('ts,host,metric,value\n2025-01-01T00:00:00.123456789Z,"web\n1",m,"12,5"\n')
    got = FilesSource(str(path)).fetch(START, END)
    assert got["ts"].tolist() == [pd.Timestamp("2025-01-01T00:00:00.123456789Z")]  # not truncated
    assert got["host"].tolist() == ["web\n1"] and got["value"].tolist() == ["12,5"]


def test_saved_index_columns_are_not_metrics(tmp_path: Path) -> None:
    wide = _wide(_long_rows())
    wide.index = wide.index * 10  # a non-range index is stored as a column by Parquet
    wide.to_parquet(tmp_path / "w.parquet")
    _iso(wide).to_csv(tmp_path / "w.csv")  # first header cell is empty
    for name in ("w.parquet", "w.csv"):
        got = FilesSource(str(tmp_path / name)).fetch(START, END)
        assert set(got["metric"]) == {"cpu_util", "load1"}, name


def test_parquet_text_timestamps_are_parsed_like_csv(tmp_path: Path) -> None:
    table = pa.table(
        {
            "ts": ["2025-01-01T00:00:00Z", "2025-01-01T00:03:00Z", "2025-01-01T02:00:00+02:00"],
            "host": ["a", "a", "b"],
            "metric": ["m", "m", "m"],
            "value": ["1", "2", "x"],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    got = FilesSource(str(tmp_path / "t.parquet")).fetch(START, END)
    assert got["ts"].tolist() == [pd.Timestamp("2025-01-01T00:00:00Z")] * 2
    assert got["value"].tolist() == [1.0, "x"]


# ---------------------------------------------------------------------- decimal and bool columns
def _typed_table(value: pa.Array, layout: str) -> pa.Table:
    ts = pa.array([datetime(2025, 1, 1), datetime(2025, 1, 1, 0, 1)], pa.timestamp("us", tz="UTC"))
    if layout == "long":
        return pa.table({"ts": ts, "host": ["a", "a"], "metric": ["m", "m"], "value": value})
    return pa.table({"ts": ts, "host": ["a", "a"], "m": value, "load1": pa.array([0.5, 1.5])})


@pytest.mark.parametrize("layout", ["long", "wide"])
def test_parquet_decimal_values_become_float64(tmp_path: Path, layout: str) -> None:
    from decimal import Decimal

    value = pa.array([Decimal("1.25"), Decimal("-3.50")], pa.decimal128(10, 2))
    pq.write_table(_typed_table(value, layout), tmp_path / "d.parquet")
    got = FilesSource(str(tmp_path / "d.parquet")).fetch(START, END)
    assert got["value"].dtype == np.float64
    assert got.loc[got["metric"] == "m", "value"].tolist() == [1.25, -3.5]


def test_parquet_decimal_null_in_long_layout_is_missing(tmp_path: Path) -> None:
    from decimal import Decimal

    value = pa.array([Decimal("1.25"), None], pa.decimal128(10, 2))
    pq.write_table(_typed_table(value, "long"), tmp_path / "d.parquet")
    assert FilesSource(str(tmp_path / "d.parquet")).fetch(START, END)["value"].tolist() == [1.25, None]


def test_parquet_bool_values_pass_through_as_bool(tmp_path: Path) -> None:
    pq.write_table(_typed_table(pa.array([True, False]), "long"), tmp_path / "long.parquet")
    got = FilesSource(str(tmp_path / "long.parquet")).fetch(START, END)
    assert got["value"].dtype == bool and got["value"].tolist() == [True, False]

    # A null in a long bool column: pandas' nullable boolean, still a bool dtype.
    pq.write_table(_typed_table(pa.array([True, None]), "long"), tmp_path / "null.parquet")
    got = FilesSource(str(tmp_path / "null.parquet")).fetch(START, END)
    assert pd.api.types.is_bool_dtype(got["value"].dtype)
    assert got["value"].iloc[0] is np.True_ and got["value"].iloc[1] is pd.NA

    # Wide, only bool metric columns: bool dtype; mixed with numbers: the bools stay bools (object).
    table = _typed_table(pa.array([True, False]), "wide").drop_columns(["load1"])
    pq.write_table(table, tmp_path / "wide_bool.parquet")
    got = FilesSource(str(tmp_path / "wide_bool.parquet")).fetch(START, END)
    assert got["value"].dtype == bool and got["value"].tolist() == [True, False]
    pq.write_table(_typed_table(pa.array([True, None]), "wide"), tmp_path / "wide.parquet")
    got = FilesSource(str(tmp_path / "wide.parquet")).fetch(START, END)
    assert got["metric"].tolist() == ["m", "load1", "load1"]  # the null bool cell is absent
    assert got["value"].tolist() == [True, 0.5, 1.5] and got["value"].iloc[0] is True


# ---------------------------------------------------------------------- missing timestamps
def test_csv_empty_timestamp_is_read_as_none(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "ts,host,metric,value\n"
        "2025-01-01T00:00:00Z,a,m,1\n"
        ",a,m,2\n"  # no timestamp: belongs to no interval, read with every one
        "2025-01-01T05:00:00Z,a,m,3\n"  # outside: dropped
    )
    got = FilesSource(str(path)).fetch(START, END)
    assert got["ts"].dtype == object
    assert got["ts"].tolist() == [pd.Timestamp("2025-01-01T00:00:00Z"), None]
    assert got["value"].tolist() == [1.0, 2.0]
    # Naive timestamps with a missing one: still naive Timestamps, the missing one None.
    path.write_text("ts,host,metric,value\n2025-01-01T00:00:00,a,m,1\n  ,a,m,2\n")
    assert FilesSource(str(path)).fetch(START, END)["ts"].tolist() == [pd.Timestamp("2025-01-01"), None]


def test_parquet_null_timestamp_is_read_as_none(tmp_path: Path) -> None:
    ts = [datetime(2025, 1, 1), None, datetime(2025, 1, 2)]  # in, missing, out
    for name, ts_type in (("aware", pa.timestamp("us", tz="UTC")), ("naive", pa.timestamp("us"))):
        table = pa.table(
            {"ts": pa.array(ts, ts_type), "host": ["a"] * 3, "metric": ["m"] * 3, "value": [1.0, 2.0, 3.0]}
        )
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=1)  # pushdown per group
        got = FilesSource(str(tmp_path / f"{name}.parquet")).fetch(START, END)
        assert got["ts"].tolist()[1] is None and got["value"].tolist() == [1.0, 2.0], name
    text = pa.table(
        {"ts": ["2025-01-01T00:00:00Z", None], "host": ["a", "a"], "metric": ["m", "m"], "value": [1, 2]}
    )
    pq.write_table(text, tmp_path / "text.parquet")
    got = FilesSource(str(tmp_path / "text.parquet")).fetch(START, END)
    assert got["ts"].tolist() == [pd.Timestamp("2025-01-01T00:00:00Z"), None]


def test_null_timestamp_row_is_quarantined_as_bad_timestamp(tmp_path: Path, lake) -> None:
    """End to end: a row without a timestamp reaches the quarantine with its reason, never vanishes."""
    from anomaly.ingest import ingest_interval

    start = T0
    end = T0 + timedelta(hours=4)
    good = pd.date_range(start, end, freq="min", inclusive="left", tz="UTC", unit="us")  # 240 rows
    rows = [(t.isoformat(), "web-1", "cpu_util", "0.5") for t in good]
    rows.insert(10, ("", "web-1", "cpu_util", "0.75"))
    for fmt in ("csv", "parquet"):
        frame = pd.DataFrame(rows, columns=list(CANONICAL_COLUMNS))
        path = tmp_path / fmt / f"m.{fmt}"
        path.parent.mkdir()
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame["ts"] = pd.to_datetime(frame["ts"].replace("", None), utc=True).astype(
                "datetime64[us, UTC]"
            )
            frame["value"] = frame["value"].astype(float)
            frame.to_parquet(path, index=False)
        report = ingest_interval("files", start, end, f"run-{fmt}", source=FilesSource(str(path)), lake=lake)
        assert report.rows_fetched == 241 and report.rows_loaded == 240, fmt
        assert report.rejects == {"bad_timestamp": 1}, fmt
        q = lake.query(
            "SELECT ts, host, metric, value_raw, reason FROM quarantine WHERE run_id = ?", [f"run-{fmt}"]
        )
        assert q["reason"].tolist() == ["bad_timestamp"] and q["value_raw"].tolist() == ["0.75"], fmt
        assert q["ts"].isna().all() and q["host"].tolist() == ["web-1"], fmt


# ---------------------------------------------------------------------- null values
def test_wide_null_cells_are_absent_samples(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text(
        "ts,host,cpu_util,load1\n2025-01-01T00:00:00Z,a,0.5,\n2025-01-01T00:01:00Z,a, ,nan\n"
    )
    got = FilesSource(str(tmp_path / "w.csv")).fetch(START, END)
    assert got["metric"].tolist() == ["cpu_util", "load1"]  # the empty and blank cells give no row
    assert got["value"].dtype == np.float64 and got["value"].iloc[0] == 0.5 and np.isnan(got["value"].iloc[1])

    table = pa.table(
        {
            "ts": pa.array([datetime(2025, 1, 1), datetime(2025, 1, 1, 0, 1)], pa.timestamp("us", tz="UTC")),
            "host": ["a", "a"],
            "cpu_util": pa.array([None, float("nan")], pa.float64()),  # null: absent; NaN: a value
            "load1": pa.array([1, None], pa.int64()),
            "note": pa.array([None, "x"]),  # text metric column with a null
        }
    )
    pq.write_table(table, tmp_path / "w.parquet")
    got = FilesSource(str(tmp_path / "w.parquet")).fetch(START, END)
    assert got["metric"].tolist() == ["load1", "cpu_util", "note"]
    assert (
        got["ts"].tolist()
        == [pd.Timestamp("2025-01-01T00:00:00Z")] + [pd.Timestamp("2025-01-01T00:01:00Z")] * 2
    )
    values = got["value"].tolist()
    assert values[0] == 1.0 and np.isnan(values[1]) and values[2] == "x"


def test_long_null_values_stay_missing(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "ts,host,metric,value\n"
        "2025-01-01T00:00:00Z,a,m,1.5\n"
        "2025-01-01T00:00:00Z,b,m,\n"
        "2025-01-01T00:00:00Z,c,m,nan\n"
        '2025-01-01T00:00:00Z,d,m," "\n'
    )
    got = FilesSource(str(tmp_path / "m.csv")).fetch(START, END)
    values = got["value"].tolist()
    assert values[0] == 1.5 and values[1] is None and np.isnan(values[2]) and values[3] is None

    table = pa.table(
        {
            "ts": pa.array([datetime(2025, 1, 1)] * 3, pa.timestamp("us", tz="UTC")),
            "host": ["a", "b", "c"],
            "metric": ["m"] * 3,
            "value": pa.array([1.5, None, float("nan")]),
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    values = FilesSource(str(tmp_path / "m.parquet")).fetch(START, END)["value"].tolist()
    assert values[0] == 1.5 and values[1] is None and np.isnan(values[2])


def test_missing_values_reach_the_ingest_with_their_reasons(tmp_path: Path, lake) -> None:
    from anomaly.checks import check_batch

    (tmp_path / "m.csv").write_text(
        "ts,host,metric,value\n"
        "2025-01-01T00:00:00Z,a,cpu_util,\n"
        "2025-01-01T00:00:00Z,b,cpu_util,nan\n"
        "2025-01-01T00:00:00Z,c,cpu_util,n/a\n"
        "2025-01-01T00:00:00Z,d,cpu_util,0.5\n"
    )
    batch = FilesSource(str(tmp_path / "m.csv")).fetch(START, END)
    result = check_batch(batch, START, END, {"cpu_util"})
    assert result.rejected.set_index("host")["reason"].to_dict() == {
        "a": "null_value",
        "b": "nan_value",
        "c": "non_numeric",
    }
    pq.write_table(_typed_table(pa.array([True, False]), "long"), tmp_path / "b.parquet")
    batch = FilesSource(str(tmp_path / "b.parquet")).fetch(START, END)
    assert check_batch(batch, START, END, {"m"}).counts == {"non_numeric": 2}
