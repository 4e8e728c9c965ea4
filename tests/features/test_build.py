"""The feature build: point-in-time correctness, incremental = all-at-once, bad input.

The values themselves are checked against an independent pandas reference in
``test_reference.py``; here the questions are which raw rows a feature may depend on and what a
build leaves in the lake.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly import features as F

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
SRC = "files"
METRICS = ("cpu_util", "load1", "net_in_bytes", "net_in_packets", "mem_util", "swap_util")
KEYS = ["source", "host", "ts"]


def raw_frame(start: datetime, end: datetime, seed: int = 1, hosts=("a", "b", "c")) -> pd.DataFrame:
    """Irregular samples: ~60 s step with jitter, dropped samples, a 20-minute gap on host b,
    and host c without net_in_packets at all."""
    rng = np.random.default_rng(seed)
    rows = []
    n = int((end - start).total_seconds() // 60)
    for h in hosts:
        for k, m in enumerate(METRICS):
            if h == "c" and m == "net_in_packets":
                continue
            base = 10.0 ** (k - 2) * (1 + hosts.index(h))
            for i in range(n):
                ts = start + timedelta(seconds=60 * i + int(rng.integers(0, 50)) * (i % 3 == 0))
                if rng.random() < 0.05 or (h == "b" and 100 <= i < 120):
                    continue
                rows.append((ts, h, m, base * (1 + 0.1 * np.sin(i / 9) + 0.05 * rng.random())))
    frame = pd.DataFrame(rows, columns=["ts", "host", "metric", "value"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[us, UTC]")
    return frame


def insert(lake, frame: pd.DataFrame, source: str = SRC) -> None:
    def work(con):
        con.register("incoming", frame)
        con.execute(
            "INSERT INTO raw_metrics SELECT ts, host, metric, value, $s, 'test', now() FROM incoming",
            {"s": source},
        )
        con.unregister("incoming")

    lake.write(work)


def replace_raw(lake, frame: pd.DataFrame) -> None:
    lake.write(lambda con: con.execute("DELETE FROM raw_metrics"))
    insert(lake, frame)


def stored(lake, start=None, end=None) -> pd.DataFrame:
    frame = lake.query("SELECT * FROM features ORDER BY source, host, ts")
    if start is not None:
        frame = frame[(frame["ts"] >= start) & (frame["ts"] < end)]
    return frame.reset_index(drop=True)


def assert_same_features(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 0.0) -> None:
    """Same rows and columns, NULLs in the same places; floats equal, or with ``rtol`` within
    ``rtol`` of the larger value or ``rtol / 100`` of the column's largest magnitude (a slope
    near 0 has no relative precision)."""
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b), f"{len(a)} rows vs {len(b)}"
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    bad = []
    for col in a.columns[3:]:
        x, y = a[col], b[col]
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            x, y = x.astype(float).to_numpy(), y.astype(float).to_numpy()
            same_null = np.isnan(x) == np.isnan(y)
            scale = np.nanmax(np.abs(x), initial=0.0)
            tol = rtol * np.maximum(np.abs(x), np.abs(y)) + rtol / 100 * scale
            close = np.isnan(x) | (np.abs(x - y) <= tol)
            ok = same_null & close
        else:
            ok = (x.isna() & y.isna()) | (x == y)
        if not ok.all():
            i = int(np.flatnonzero(~np.asarray(ok))[0])
            bad.append(f"{col} at {a['host'][i]} {a['ts'][i]}: {a[col][i]!r} vs {b[col][i]!r}")
    assert not bad, f"{len(bad)} column(s) differ: " + "; ".join(bad[:8])


# -- point-in-time correctness ------------------------------------------------------------------
@pytest.mark.parametrize("cut_minutes", [61, 95, 118])
def test_changing_rows_after_t_leaves_features_up_to_t_unchanged(lake, cut_minutes) -> None:
    """Everything after t is rewritten (values scaled, rows removed, new rows and a new host
    added): no feature at or before t moves."""
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    # a week and a day of history, so the seasonal columns hold values, not only NULL and TRUE
    raw = pd.concat([raw_frame(T0 - timedelta(days=8), T0 - timedelta(days=6), seed=5), raw_frame(T0, end)])
    insert(lake, raw)
    F.build_features(SRC, start, end, lake=lake)
    before = stored(lake)
    assert not before["cpu_util__missing_7d"].any() and before["cpu_util__missing_1d"].all()
    assert before["cpu_util__diff_7d"].notna().sum() > 100
    t = T0 + timedelta(minutes=cut_minutes, seconds=17)

    rng = np.random.default_rng(cut_minutes)
    later = raw["ts"] > t
    changed = raw.copy()
    changed.loc[later, "value"] *= rng.uniform(0.1, 10.0, later.sum())
    changed = changed.drop(changed[later].sample(frac=0.3, random_state=1).index)
    extra = raw_frame(t + timedelta(seconds=1), end, seed=9, hosts=("a", "b", "c", "d"))
    extra["ts"] = extra["ts"] + pd.Timedelta(seconds=7)  # new timestamps between the old ones
    changed = pd.concat([changed, extra[extra["ts"] < end].dropna(axis=1, how="all")])
    replace_raw(lake, changed)
    F.build_features(SRC, start, end, lake=lake)
    after = stored(lake)

    upto = lambda f: f[f["ts"] <= t].reset_index(drop=True)  # noqa: E731
    assert len(upto(before)) > 0 and len(before) > len(upto(before))
    assert_same_features(upto(before), upto(after))
    # and the rows after t did change, so the check above compared something that could move
    assert (
        not after[after["ts"] > t]["cpu_util__mean_5m"]
        .reset_index(drop=True)
        .equals(before[before["ts"] > t]["cpu_util__mean_5m"].reset_index(drop=True))
    )


# -- incremental = all at once ------------------------------------------------------------------
def test_day_by_day_equals_both_days_at_once(lake) -> None:
    """Two days built one after the other, and hour by hour, give the rows of one build of
    both days: the lookback before each interval is read, only the interval is written."""
    day = timedelta(days=1)
    raw = raw_frame(T0, T0 + 2 * day)
    # late rows: inserted in a second transaction, some just before a day boundary
    late = raw.sample(frac=0.1, random_state=3)
    boundary = pd.DataFrame(
        {
            "ts": [T0 + day - timedelta(microseconds=1), T0 + day],
            "host": ["a", "a"],
            "metric": ["swap_util", "swap_util"],
            "value": [0.25, 0.5],
        }
    ).astype({"ts": "datetime64[us, UTC]"})
    raw = raw.drop(late.index)
    raw = raw[~((raw["host"] == "a") & (raw["metric"] == "swap_util") & raw["ts"].isin(boundary["ts"]))]
    insert(lake, raw)
    insert(lake, pd.concat([late, boundary]))

    F.build_features(SRC, T0, T0 + 2 * day, lake=lake)
    at_once = stored(lake)
    lake.write(lambda con: con.execute("DELETE FROM features"))

    F.build_features(SRC, T0, T0 + day, lake=lake)
    F.build_features(SRC, T0 + day, T0 + 2 * day, lake=lake)
    by_day = stored(lake)
    # Same rows, same NULLs, same counts and flags; floats equal to rounding: DuckDB's window
    # aggregates add partial sums in a tree whose shape follows the length of what was read
    # (seen: 2e-16 relative), and slopes take time in seconds since the interval's start, which
    # differs between the two builds (seen: 7e-12 relative).
    assert_same_features(at_once, by_day, rtol=1e-10)

    lake.write(lambda con: con.execute("DELETE FROM features"))
    F.build_range(
        SRC, T0 + day - timedelta(hours=3), T0 + day + timedelta(hours=3), timedelta(hours=1), lake=lake
    )
    window = (T0 + day - timedelta(hours=3), T0 + day + timedelta(hours=3))
    expected = at_once[(at_once["ts"] >= window[0]) & (at_once["ts"] < window[1])].reset_index(drop=True)
    assert_same_features(stored(lake, *window), expected, rtol=1e-10)


def test_rebuild_is_idempotent_and_replaces_only_the_interval(lake) -> None:
    raw = raw_frame(T0, T0 + timedelta(hours=3))
    insert(lake, raw)
    first = F.build_features(SRC, T0 + timedelta(hours=1), T0 + timedelta(hours=2), lake=lake)
    F.build_features(SRC, T0 + timedelta(hours=2), T0 + timedelta(hours=3), lake=lake)
    both = stored(lake)
    again = F.build_features(SRC, T0 + timedelta(hours=1), T0 + timedelta(hours=2), lake=lake)
    assert again.rows == first.rows > 0
    assert_same_features(both, stored(lake))
    log = lake.query("SELECT count(*) AS n FROM feature_log").iloc[0]["n"]
    assert log == 3


# -- bad input -----------------------------------------------------------------------------------
def test_a_metric_missing_for_a_host_gives_null_features_and_count_zero(lake) -> None:
    insert(lake, raw_frame(T0, T0 + timedelta(hours=2)))
    F.build_features(SRC, T0 + timedelta(hours=1), T0 + timedelta(hours=2), lake=lake)
    c = lake.query("SELECT * FROM features WHERE host = 'c'")
    assert len(c) > 0
    assert (c["net_in_packets__count_1h"] == 0).all() and (c["net_in_packets__count_5m"] == 0).all()
    for col in (
        "net_in_packets",
        "net_in_packets__mean_1h",
        "net_in_packets__rate",
        "net_in_bytes_per_net_in_packets",
    ):
        assert c[col].isna().all(), col
    # a metric nobody reports (disk_util is in the default catalog) is all NULL, count 0
    assert (c["disk_util__count_15m"] == 0).all() and c["disk_util__max_15m"].isna().all()
    # while the metrics host c does report have values
    assert c["net_in_bytes__mean_1h"].notna().all()


def test_an_interval_without_raw_data_writes_no_rows_and_says_so(lake, caplog) -> None:
    insert(lake, raw_frame(T0, T0 + timedelta(hours=1)))
    with caplog.at_level(logging.INFO, logger="anomaly.features"):
        report = F.build_features(SRC, T0 + timedelta(hours=5), T0 + timedelta(hours=6), lake=lake)
    assert report.rows == 0
    assert lake.query("SELECT count(*) AS n FROM features").iloc[0]["n"] == 0
    assert any(
        "no raw data of source 'files'" in r.getMessage() and "05:00:00" in r.getMessage()
        for r in caplog.records
    )


def test_a_failing_feature_file_names_file_and_interval_and_keeps_previous_rows(lake, tmp_path) -> None:
    insert(lake, raw_frame(T0, T0 + timedelta(hours=2)))
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    F.build_features(SRC, start, end, lake=lake)
    before = stored(lake)

    broken = tmp_path / "features"
    shutil.copytree(F.features_dir(), broken)
    path = broken / "50_cross.sql"
    path.write_text(path.read_text().replace("FROM feat_base", "FROM feat_base WHERE no_such_column > 0"))
    files = F.feature_files(broken)
    with pytest.raises(F.FeatureError) as err:
        F.build_features(SRC, start, end, lake=lake, files=files)
    message = str(err.value)
    assert "50_cross.sql" in message and start.isoformat() in message and end.isoformat() in message
    assert "no_such_column" in message
    assert_same_features(before, stored(lake))


def test_a_file_whose_columns_differ_from_its_header_is_refused(lake, tmp_path) -> None:
    insert(lake, raw_frame(T0, T0 + timedelta(hours=1)))
    changed = tmp_path / "features"
    shutil.copytree(F.features_dir(), changed)
    path = changed / "60_time.sql"
    path.write_text(path.read_text().replace("AS is_weekend", "AS weekend"))
    with pytest.raises(F.FeatureError, match=r"60_time.sql.*undeclared.*weekend.*missing.*is_weekend"):
        F.build_features(SRC, T0, T0 + timedelta(hours=1), lake=lake, files=F.feature_files(changed))


def test_header_without_columns_is_refused(tmp_path) -> None:
    bad = tmp_path / "00_base.sql"
    bad.write_text("-- relation: feat_base\n-- family: base\n-- grain: x\nSELECT 1\n")
    with pytest.raises(F.FeatureError, match=r"00_base\.sql.*columns"):
        F.feature_files(tmp_path)


def test_catalog_lists_every_column_with_family_window_and_file(lake) -> None:
    insert(lake, raw_frame(T0, T0 + timedelta(hours=1)))
    F.build_features(SRC, T0, T0 + timedelta(hours=1), lake=lake)
    cat = lake.query("SELECT * FROM feature_catalog ORDER BY position")
    cols = [c for c in lake.query("SELECT * FROM features LIMIT 0").columns if c not in KEYS]
    assert list(cat["name"]) == cols
    assert len(cols) >= 40
    assert set(cat["family"]) == {"base", "rolling", "trend", "deviation", "seasonality", "cross", "time"}
    row = cat.set_index("name").loc["cpu_util__std_15m"]
    assert (row["family"], row["window"], row["source_file"], row["metric"]) == (
        "rolling",
        "15m",
        "10_rolling.sql",
        "cpu_util",
    )
    assert cat["description"].str.len().min() > 10
    assert (cat["source_file"].map(lambda f: (F.features_dir() / f).exists())).all()


def test_the_readme_example_of_adding_a_feature_works(lake, tmp_path) -> None:
    """The 'Add a feature' steps of the README, followed literally."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```sql\n(\s*-- relation: feat_spread\n.*?)```", readme, re.S)
    assert block, "README lost its 'Add a feature' example"
    example = "\n".join(line.removeprefix("   ") for line in block.group(1).splitlines()) + "\n"
    folder = tmp_path / "features"
    shutil.copytree(F.features_dir(), folder)
    (folder / "70_spread.sql").write_text(example)

    insert(lake, raw_frame(T0, T0 + timedelta(hours=2)))
    F.build_features(SRC, T0, T0 + timedelta(hours=1), lake=lake)  # the table exists without it
    F.build_features(
        SRC, T0 + timedelta(hours=1), T0 + timedelta(hours=2), lake=lake, files=F.feature_files(folder)
    )
    got = lake.query(
        "SELECT ts, cpu_util__range_15m, cpu_util__max_15m - cpu_util__min_15m AS expected FROM features "
        "WHERE host = 'a' ORDER BY ts"
    )
    new = got[got["ts"] >= T0 + timedelta(hours=1)]
    assert new["cpu_util__range_15m"].notna().all()
    assert np.allclose(new["cpu_util__range_15m"], new["expected"], rtol=0, atol=0)
    assert (
        got[got["ts"] < T0 + timedelta(hours=1)]["cpu_util__range_15m"].isna().all()
    )  # added column, old rows
    row = lake.query("SELECT * FROM feature_catalog WHERE name = 'cpu_util__range_15m'").iloc[0]
    assert (row["family"], row["window"], row["source_file"]) == ("spread", "15m", "70_spread.sql")


def test_a_failure_after_the_delete_rolls_the_interval_back(lake, monkeypatch) -> None:
    """The transaction has already deleted the interval's rows when the catalog write fails:
    features, feature_log and feature_catalog are as before."""
    insert(lake, raw_frame(T0, T0 + timedelta(hours=2)))
    start, end = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    F.build_features(SRC, start, end, lake=lake)
    before = stored(lake)
    tables = lambda: (  # noqa: E731
        lake.query("SELECT count(*) AS n FROM feature_log").iloc[0]["n"],
        lake.query("SELECT * FROM feature_catalog ORDER BY position"),
    )
    log_before, catalog_before = tables()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full while writing the catalog")

    monkeypatch.setattr(F, "_write_catalog", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        F.build_features(SRC, start, end, lake=lake)
    assert_same_features(before, stored(lake))
    log_after, catalog_after = tables()
    assert log_after == log_before
    pd.testing.assert_frame_equal(catalog_before, catalog_after)


def test_no_pairs_and_no_ratios_still_build(lake, monkeypatch) -> None:
    from anomaly.settings import get_settings

    monkeypatch.setenv("ANOMALY_FEATURE_PAIRS", "")
    monkeypatch.setenv("ANOMALY_FEATURE_RATIOS", "cpu_util/no_such_metric")
    get_settings.cache_clear()
    insert(lake, raw_frame(T0, T0 + timedelta(hours=1)))
    from anomaly.store import Lake

    report = F.build_features(SRC, T0, T0 + timedelta(hours=1), lake=Lake())
    assert report.rows > 0
    cols = lake.query("SELECT * FROM features LIMIT 0").columns
    assert not [c for c in cols if c.startswith("corr__") or "_per_" in c]


@pytest.mark.parametrize("name", ["ts", "HOST", "rows_5m", "cpu__util", "CPU_UTIL"])
def test_metric_names_that_would_break_the_sql_are_refused(name) -> None:
    kinds = {"cpu_util": "ratio", name: "gauge"}
    with pytest.raises(F.FeatureError, match=name):
        F.FeatureContext.from_catalog(kinds)


def test_a_new_metric_adds_columns_and_keeps_the_catalog_in_table_order(lake, caplog) -> None:
    insert(lake, raw_frame(T0, T0 + timedelta(hours=2)))
    F.build_features(SRC, T0, T0 + timedelta(hours=1), lake=lake)
    lake.write(
        lambda con: con.execute(
            "INSERT INTO metric_catalog VALUES ('gpu_util', 'ratio', 'ratio', 'GPU busy share', 'user')"
        )
    )
    with caplog.at_level(logging.WARNING, logger="anomaly.features"):
        F.build_features(SRC, T0 + timedelta(hours=1), T0 + timedelta(hours=2), lake=lake)
    assert any("gpu_util" in r.getMessage() and "rebuild" in r.getMessage() for r in caplog.records)
    cols = [c for c in lake.query("SELECT * FROM features LIMIT 0").columns if c not in KEYS]
    cat = lake.query("SELECT name, position FROM feature_catalog ORDER BY position")
    assert list(cat["name"]) == cols and list(cat["position"]) == list(range(len(cols)))
    assert "gpu_util__mean_1h" in cols
    # the metric has no samples: NULL features, count 0 in the new rows
    new = lake.query(
        "SELECT gpu_util__count_1h AS n, gpu_util__mean_1h AS m FROM features WHERE ts >= ?",
        [T0 + timedelta(hours=1)],
    )
    assert (new["n"] == 0).all() and new["m"].isna().all()


def test_feature_files_must_name_feat_relations(tmp_path) -> None:
    folder = tmp_path / "features"
    shutil.copytree(F.features_dir(), folder)
    (folder / "70_x.sql").write_text(
        "-- relation: raw_metrics\n-- family: x\n-- grain: x\n-- columns:\n--   x  y z\nSELECT 1\n"
    )
    with pytest.raises(F.FeatureError, match=r"70_x\.sql.*feat_"):
        F.feature_files(folder)


def test_cli_builds_queries_and_exports_a_hosts_features(lake, tmp_path) -> None:
    """`anomaly features build`, `anomaly sql ... from features`, and `anomaly features export`
    to Parquet and CSV give the lake's rows of that host and range."""
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from anomaly.cli import main

    insert(lake, raw_frame(T0, T0 + timedelta(hours=3)))
    runner = CliRunner()
    built = runner.invoke(
        main,
        ["features", "build", "--source", SRC, "--start", "2026-03-02T00:00Z", "--end", "2026-03-02T03:00Z"],
    )
    assert built.exit_code == 0, built.output
    assert "built 3 interval(s)" in built.output
    query = "select host, ts, cpu_util__mean_5m from features where host = 'a' order by ts desc limit 5"
    shown = runner.invoke(main, ["sql", "--format", "csv", query])
    assert shown.exit_code == 0, shown.output
    assert len(shown.output.strip().splitlines()) == 6

    expected = lake.query(
        "SELECT * FROM features WHERE host = 'a' AND ts >= ? AND ts < ? ORDER BY ts",
        [T0 + timedelta(hours=1), T0 + timedelta(hours=2)],
    )
    for name in ("a.parquet", "a.csv"):
        out = tmp_path / "exports" / name
        args = [
            "features",
            "export",
            "--host",
            "a",
            "--start",
            "2026-03-02T01:00Z",
            "--end",
            "2026-03-02T02:00Z",
        ]
        result = runner.invoke(main, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert f"wrote {len(expected)} rows" in result.output
        got = pq.read_table(out).to_pandas() if name.endswith(".parquet") else pd.read_csv(out)
        assert len(got) == len(expected) > 50 and list(got.columns) == list(expected.columns)
        assert np.allclose(got["cpu_util__std_15m"], expected["cpu_util__std_15m"], equal_nan=True)
    assert not list((tmp_path / "exports").glob("*.partial"))

    bad = runner.invoke(main, ["features", "export", "--out", str(tmp_path / "x.txt")])
    assert bad.exit_code == 1 and "export writes .parquet or .csv" in bad.output
    assert not (tmp_path / "x.txt").exists()
    step = runner.invoke(
        main,
        ["features", "build", "--start", "2026-03-02T00:00Z", "--end", "2026-03-02T01:00Z", "--step", "0.5m"],
    )
    assert step.exit_code == 1 and "at least one minute" in step.output
