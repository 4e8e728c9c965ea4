"""The SQL feature store agrees with an independent pandas reference, feature by feature.

The data set is built to hit the edges of every definition: three hosts on different scrape
offsets, timestamps jittered by whole seconds and by milliseconds, gaps of a few minutes, single
samples dropped per metric, a host that never reports one metric and reports another partly at
its own timestamps, a counter with resets, a whole day missing out of nine (so the 1d and 7d history is
present for some rows and missing for others), values from ~1e-3 to ~1e9, stretches of constant
values and zero denominators. Builds run over an interval that crosses a midnight (and a
weekend), one right after the missing day, and one whose 7-day history runs into the missing day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly.features import FeatureContext, build_features, catalog
from anomaly.metrics import DEFAULT_METRICS
from anomaly.settings import Settings
from tests.features.reference import feature_names, reference_features

SOURCE = "files"
COUNTER = "requests_total"
DAY0 = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
MISSING_DAY = DAY0 + timedelta(days=2)  # 2024-03-06: no sample of any host or metric
DATA_END = DAY0 + timedelta(days=9, hours=2)
INTERVALS = [
    # Sunday 22:00 -> Monday 02:00: crosses midnight and the end of the weekend; 7d history
    # starts two hours before the data does.
    (DAY0 + timedelta(days=6, hours=22), DAY0 + timedelta(days=7, hours=2)),
    # right after the missing day: empty lookback, no 1d (nor 7d) history
    (DAY0 + timedelta(days=3), DAY0 + timedelta(days=3, hours=3)),
    # 7d history runs from the last hours of day 1 into the missing day 2
    (DAY0 + timedelta(days=8, hours=22, minutes=30), DAY0 + timedelta(days=9, hours=1, minutes=30)),
]
HOSTS = {
    # host: (offset of its scrape grid in seconds, share of jittered timestamps, jitter unit in s)
    "web-1": (0.0, 0.05, 1.0),  # exact minute grid (window edges hit exactly), whole-second jitter
    "db-1": (17.25, 0.2, 0.001),  # millisecond jitter
    "cache-1": (41.0, 0.1, 0.001),
}
# Floats must agree to RTOL relative: |a - b| <= RTOL * max(|a|, |b|), or both be NULL.
# The absolute floor is for values that are mathematically 0 and nothing else: there a relative
# test cannot pass, since each side's rounding leaves its own residue (a least-squares slope of
# small integers that is exactly 0 comes out as -5e-20 from DuckDB, the deviation of a constant
# window as ~1e-17, sin(pi) as 1.2e-16). Two values both within ZERO_FLOOR of 0 count as equal;
# every real feature value in this data set is far above it (the smallest slopes are ~1e-12).
RTOL = 1e-9
ZERO_FLOOR = 1e-12


# -- the data set --------------------------------------------------------------------------------
def _timestamps(rng: np.random.Generator, host: str) -> pd.DatetimeIndex:
    base_offset, jitter_share, unit = HOSTS[host]
    grid = pd.date_range(DAY0, DATA_END, freq="60s", inclusive="left")
    seconds = np.full(len(grid), base_offset)
    jittered = rng.random(len(grid)) < jitter_share
    # up to +-4 s (whole seconds or milliseconds): never reorders samples 60 s apart
    seconds[jittered] += np.round(rng.uniform(-4, 4, jittered.sum()) / unit) * unit
    return grid + pd.to_timedelta(np.round(seconds * 1e6).astype(np.int64), unit="us")


def _gaps(rng: np.random.Generator, ts: pd.DatetimeIndex, fixed: list[tuple[datetime, int]]) -> np.ndarray:
    """Mask of kept timestamps: random 3-8 minute gaps, the fixed ones, and the missing day."""
    keep = np.ones(len(ts), dtype=bool)
    gaps = [(ts[i], int(rng.integers(3, 9))) for i in rng.choice(len(ts), 40, replace=False)]
    for begin, minutes in [*gaps, *[(pd.Timestamp(b), m) for b, m in fixed]]:
        keep &= ~((ts >= begin) & (ts < begin + pd.Timedelta(minutes=minutes)))
    keep &= ~((ts >= MISSING_DAY) & (ts < MISSING_DAY + timedelta(days=1)))
    return keep


def _series(rng: np.random.Generator, host: str, metric: str, ts: pd.DatetimeIndex) -> np.ndarray:
    n = len(ts)
    hours = (ts - pd.Timestamp(DAY0)).total_seconds().to_numpy() / 3600
    daily = np.sin(2 * np.pi * hours / 24)
    noise = rng.standard_normal(n)
    small = host == "cache-1"
    if metric == "cpu_util":
        return (
            np.abs(0.002 + 0.0005 * daily + 0.0002 * noise)
            if small
            else np.clip(0.3 + 0.15 * daily + 0.03 * noise, 0, 1)
        )
    if metric == "load1":
        return np.abs(2 + 1.5 * daily + 0.4 * noise)
    if metric == "mem_util":
        return np.clip(0.6 + np.cumsum(0.002 * noise), 0.05, 0.95)
    if metric == "swap_util":
        if host == "web-1":
            return np.zeros(n)  # no swap: a constant zero (mean 0, deviation 0, correlation undefined)
        return np.abs(1e-3 + 2e-4 * noise)
    if metric in ("disk_util", "disk_io_time"):
        scale = 0.4 if metric == "disk_util" else 1e-3
        return scale * (1 + 0.1 * np.sin(hours / 7) + 0.01 * noise)
    if metric in ("disk_read_bytes", "disk_write_bytes", "net_in_bytes", "net_out_bytes"):
        return 1e9 * np.exp(0.3 * daily + 0.25 * noise)
    if metric in ("net_in_packets", "net_out_packets"):
        packets = np.round(1e6 * np.exp(0.3 * daily + 0.25 * noise))
        packets[rng.random(n) < 0.03] = 0.0  # a zero denominator for the bytes-per-packet ratio
        return packets
    if metric == "tcp_retransmits":
        return rng.poisson(0.3, n).astype(float)  # mostly 0: windows of zeros
    if metric == "tcp_established":
        return rng.integers(100, 141, n).astype(float)
    if metric == "procs_running":
        return rng.integers(1, 9, n).astype(float)
    if metric == COUNTER:
        return np.cumsum(rng.poisson(500.0, n)).astype(float) + 1e6
    raise AssertionError(metric)


def _at(ts: pd.DatetimeIndex, when: datetime, minutes: float) -> np.ndarray:
    return (ts >= when) & (ts < pd.Timestamp(when) + pd.Timedelta(minutes=minutes))


def make_raw(seed: int = 20240304) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    metrics = [m.name for m in DEFAULT_METRICS] + [COUNTER]
    fixed_gaps = {
        "web-1": [(DAY0 + timedelta(days=5, hours=23, minutes=10), 7)],  # 1d history of interval 1
        "db-1": [(DAY0 + timedelta(days=7, minutes=20), 6)],  # inside interval 1
        "cache-1": [(DAY0 + timedelta(days=3, minutes=30), 5), (DAY0 + timedelta(days=1, hours=23), 6)],
    }
    resets = {
        "web-1": [DAY0 + timedelta(days=7, minutes=40), DAY0 + timedelta(days=6, hours=22, minutes=3)],
        "db-1": [DAY0 + timedelta(days=3, hours=1, minutes=10)],
        "cache-1": [
            DAY0 + timedelta(days=8, hours=23, minutes=50),
            DAY0 + timedelta(days=9, hours=0, minutes=5),
        ],
    }
    frames = []
    for host in HOSTS:
        ts_all = _timestamps(rng, host)
        keep = _gaps(rng, ts_all, fixed_gaps[host])
        for metric in metrics:
            if host == "cache-1" and metric == "net_out_bytes":
                continue  # a host that never reports a metric (and so lacks a pair and a ratio)
            ts = ts_all
            if host == "cache-1" and metric == "load1":
                # 30% of its samples 30 s off the host's scrape: rows with load1 alone, and fewer
                # timestamps where cpu_util and load1 are both present for their correlation
                ts = ts_all + pd.to_timedelta(np.where(rng.random(len(ts_all)) < 0.3, 30, 0), unit="s")
            values = _series(rng, host, metric, ts)
            if metric == COUNTER:
                random_resets = ts[rng.choice(len(ts), 6, replace=False)]
                for when in sorted([*map(pd.Timestamp, resets[host]), *random_resets]):
                    after = ts >= when
                    values[after] -= values[after][0] - rng.integers(0, 400)  # restart near 0
            if host == "web-1" and metric == "disk_util":
                values[_at(ts, DAY0 + timedelta(days=6, hours=23), 150)] = 0.5  # constant stretch
            if host == "db-1" and metric == "tcp_established":
                values[_at(ts, DAY0 + timedelta(days=8, hours=21), 150)] = 120.0
            if host == "web-1" and metric in ("cpu_util", "load1"):
                # both constant for 40 minutes: correlation undefined, slopes and deviations 0
                values[_at(ts, DAY0 + timedelta(days=7, hours=0, minutes=50), 40)] = (
                    0.25 if metric == "cpu_util" else 3.0
                )
            kept = keep & (rng.random(len(ts)) >= 0.02)  # single samples dropped per metric
            frames.append(
                pd.DataFrame({"host": host, "metric": metric, "ts": ts[kept], "value": values[kept]})
            )
    raw = pd.concat(frames, ignore_index=True)
    raw["ts"] = raw["ts"].dt.as_unit("us")
    assert not raw.duplicated(["host", "metric", "ts"]).any()
    return raw


# -- comparison ----------------------------------------------------------------------------------
def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    both_null = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        rel = np.abs(a - b) <= RTOL * np.maximum(np.abs(a), np.abs(b))
        zero = (np.abs(a) <= ZERO_FLOOR) & (np.abs(b) <= ZERO_FLOOR)
    return both_null | rel | zero


def compare(sql: pd.DataFrame, ref: pd.DataFrame, label: str) -> list[str]:
    """One line per feature that differs, with its worst row."""
    keys = ["host", "ts"]
    got_keys = list(zip(sql["host"], pd.to_datetime(sql["ts"], utc=True), strict=True))
    want_keys = list(zip(ref["host"], pd.to_datetime(ref["ts"], utc=True), strict=True))
    if got_keys != want_keys:
        extra, missing = set(got_keys) - set(want_keys), set(want_keys) - set(got_keys)
        return [
            f"{label}: rows differ: {len(extra)} only in SQL (e.g. {sorted(extra)[:3]}), "
            f"{len(missing)} only in the reference (e.g. {sorted(missing)[:3]})"
        ]
    problems = []
    for col in ref.columns.drop(keys):
        want = ref[col]
        got = sql[col]
        if want.dtype.kind in "biu":  # booleans and counts: exactly, and of the same kind
            if got.dtype.kind != want.dtype.kind:
                problems.append(f"{label} {col}: SQL type {got.dtype}, expected the kind of {want.dtype}")
            ok = (got.notna() & (got.to_numpy() == want.to_numpy())).to_numpy()
            badness = (~ok).astype(float)
        else:
            a, b = got.to_numpy(dtype="float64"), want.to_numpy(dtype="float64")
            ok = _close(a, b)
            with np.errstate(invalid="ignore", divide="ignore"):
                badness = np.where(
                    np.isnan(a) != np.isnan(b), np.inf, np.abs(a - b) / np.maximum(np.abs(a), np.abs(b))
                )
            badness = np.where(ok, 0.0, np.nan_to_num(badness, nan=np.inf))
        if not ok.all():
            i = int(np.argmax(badness))
            problems.append(
                f"{label} {col}: {int((~ok).sum())}/{len(ok)} rows differ; worst host={ref['host'][i]} "
                f"ts={pd.Timestamp(ref['ts'][i]).isoformat()} sql={got.iloc[i]!r} ref={want.iloc[i]!r}"
            )
    return problems


def _no_nan_or_inf(lake) -> list[str]:
    """NULL, never NaN or infinity, marks an undefined value (pandas would show both as NaN)."""
    types = lake.query("DESCRIBE features")
    doubles = types.loc[types["column_type"] == "DOUBLE", "column_name"].tolist()
    counts = ", ".join(f'count(*) FILTER (WHERE isnan("{c}") OR isinf("{c}")) AS "{c}"' for c in doubles)
    row = lake.query(f"SELECT {counts} FROM features").iloc[0]
    return [f"{c}: {int(n)} NaN/inf values" for c, n in row.items() if n]


# -- the tests -----------------------------------------------------------------------------------
def load_dataset(lake) -> None:
    """Add the counter metric to the catalog and write :func:`make_raw` into ``raw_metrics``."""
    raw = make_raw()

    def load(con) -> None:
        con.execute(
            "INSERT INTO metric_catalog (name, unit, kind, description, origin) "
            "VALUES (?, 'requests', 'counter', 'Requests served since start (resets on restart)', 'user')",
            [COUNTER],
        )
        con.register("raw_frame", raw)
        con.execute(
            "INSERT INTO raw_metrics SELECT ts, host, metric, value, $source, 'test', now() FROM raw_frame",
            {"source": SOURCE},
        )

    lake.write(load)


def _assert_same_names(catalog_names: list[str], reference_names: list[str]) -> None:
    assert len(set(catalog_names)) == len(catalog_names), "feature_catalog repeats a name"
    only_catalog = sorted(set(catalog_names) - set(reference_names))
    only_reference = sorted(set(reference_names) - set(catalog_names))
    assert not only_catalog and not only_reference, (
        f"feature_catalog has {only_catalog} that the spec does not; it lacks {only_reference}"
    )


def _pairs(text: str, sep: str) -> list[tuple[str, str]]:
    return [tuple(p.strip().split(sep)) for p in text.split(",") if p.strip()]


def build_and_compare(lake) -> list[str]:
    """Build every interval with the SQL and compare it with the reference; the problems found."""
    kinds = lake.metric_kinds()
    assert kinds[COUNTER] == "counter"
    pairs = _pairs(lake.settings.feature_pairs, ":")
    ratios = _pairs(lake.settings.feature_ratios, "/")
    raw = lake.query("SELECT host, metric, ts, value FROM raw_metrics WHERE source = $s", {"s": SOURCE})

    problems: list[str] = []
    for start, end in INTERVALS:
        report = build_features(SOURCE, start, end, lake=lake)
        assert report.rows > 0
    for start, end in INTERVALS:
        label = f"[{start:%m-%d %H:%M}, {end:%m-%d %H:%M})"
        sql = lake.query(
            "SELECT * EXCLUDE (source) FROM features WHERE source = $s AND ts >= $a AND ts < $b ORDER BY host, ts",
            {"s": SOURCE, "a": start, "b": end},
        )
        ref = reference_features(raw, kinds, start, end, pairs=pairs, ratios=ratios)
        assert len(ref) > 100
        only_sql, only_ref = (
            sorted(set(sql.columns) - set(ref.columns)),
            sorted(set(ref.columns) - set(sql.columns)),
        )
        if only_sql or only_ref:
            problems.append(f"{label}: columns only in SQL {only_sql}, only in the reference {only_ref}")
        problems += compare(sql, ref.drop(columns=only_ref), label)
    return problems + _no_nan_or_inf(lake)


def test_sql_features_equal_the_pandas_reference(lake) -> None:
    load_dataset(lake)
    problems = build_and_compare(lake)
    assert not problems, f"{len(problems)} feature mismatches:\n" + "\n".join(problems)

    # the catalog lists exactly the columns of the table, and the reference agrees on the names
    names = lake.query("SELECT name FROM feature_catalog ORDER BY position")["name"].tolist()
    columns = lake.query("SELECT * FROM features LIMIT 0").columns.tolist()
    assert columns[:3] == ["source", "host", "ts"]
    assert names == columns[3:]
    kinds = lake.metric_kinds()
    pairs, ratios = _pairs(lake.settings.feature_pairs, ":"), _pairs(lake.settings.feature_ratios, "/")
    _assert_same_names(names, feature_names(kinds, pairs, ratios))


def test_default_metric_set_has_at_least_forty_features(anomaly_home) -> None:
    kinds = {m.name: m.kind for m in DEFAULT_METRICS}
    settings = Settings()
    ctx = FeatureContext.from_catalog(kinds, settings)
    pairs, ratios = _pairs(settings.feature_pairs, ":"), _pairs(settings.feature_ratios, "/")
    names = [s.name for s in catalog(ctx)]
    assert len(names) >= 40
    _assert_same_names(names, feature_names(kinds, pairs, ratios))


def test_reference_on_a_hand_computed_example() -> None:
    """The reference itself, on numbers worked out by hand (the window edge t - 5m is excluded,
    a counter drop is a reset, the 1d lookup takes the sample in (t - 1d - 5m, t - 1d])."""
    t = pd.Timestamp("2024-03-04 12:00", tz="UTC")  # a Monday noon
    minute = pd.Timedelta(minutes=1)
    raw = pd.DataFrame(
        [
            ("h", "cpu_util", t, 1.0),
            ("h", "cpu_util", t + 2 * minute, 3.0),
            ("h", "cpu_util", t + 5 * minute, 2.0),
            ("h", "cpu_util", t + 5 * minute - pd.Timedelta(days=1, seconds=30), 1.5),
            ("h", COUNTER, t, 100.0),
            ("h", COUNTER, t + 2 * minute, 160.0),
            ("h", COUNTER, t + 5 * minute, 30.0),
            ("h", "load1", t + 2 * minute, 5.0),
        ],
        columns=["host", "metric", "ts", "value"],
    )
    kinds = {"cpu_util": "ratio", "load1": "gauge", COUNTER: "counter"}
    ref = reference_features(raw, kinds, t, t + 6 * minute, pairs=[("cpu_util", "load1")], ratios=[])
    assert ref["ts"].tolist() == [t, t + 2 * minute, t + 5 * minute]
    last = ref.iloc[2]
    assert last["cpu_util__count_5m"] == 2  # 12:02 and 12:05; 12:00 is on the open edge
    assert last["cpu_util__mean_5m"] == 2.5
    assert last["cpu_util__std_5m"] == pytest.approx(np.sqrt(0.5), rel=1e-15)
    assert (last["cpu_util__count_15m"], last["cpu_util__mean_15m"], last["cpu_util__std_15m"]) == (
        3,
        2.0,
        1.0,
    )
    assert last["cpu_util__slope_15m"] == pytest.approx(120 / 45600, rel=1e-15)  # t = 0, 120, 300 s
    assert last["cpu_util__rate"] == pytest.approx(-1 / 180, rel=1e-15)
    assert ref[f"{COUNTER}__rate"].tolist()[1:] == pytest.approx([60 / 120, 30 / 180], rel=1e-15)
    assert (last["cpu_util__zscore_1h"], last["cpu_util__ratio_1h"]) == (0.0, 1.0)
    assert ref["cpu_util__missing_1d"].tolist() == [True, True, False]
    assert last["cpu_util__diff_1d"] == 0.5
    assert ref["cpu_util__missing_7d"].all() and ref["cpu_util__diff_7d"].isna().all()
    assert ref["corr__cpu_util__load1_15m"].isna().all()  # one joint sample only
    assert ref["load1__count_5m"].tolist() == [0, 1, 1]
    assert ref["hour_cos"][0] == -1.0 and abs(ref["hour_sin"][0]) < 1e-15
    assert (ref["dow_sin"][0], ref["dow_cos"][0], bool(ref["is_weekend"][0])) == (0.0, 1.0, False)
    assert sorted(ref.columns[2:]) == sorted(feature_names(kinds, [("cpu_util", "load1")], []))
