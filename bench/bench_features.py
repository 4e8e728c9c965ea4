"""Benchmark the SQL feature store against a pandas reference and a polars implementation.

    python -m bench.bench_features [--quick] [--repeat N] [--datasets day,fleet] [--impls sql,pandas,polars]

Two synthetic datasets, generated deterministically (numpy, seeded), 10 metrics at a 15 s step:

* ``day``: 100 hosts x 1 day (5.76 M points in the interval),
* ``fleet``: 1,000 hosts x 1 hour (2.4 M points in the interval),

each with the lookback hour before the interval and the history slices the seasonal features
read, ``(start - lag - 20m, end - lag)`` for the 1d and 7d lags (the sample one lag back, up to 5
minutes old, and the 15-minute window ending at it; nothing else). About 2% of the
host x timestamp rows and 0.5% of single samples are dropped; 30% of the hosts have no swap
(``swap_util`` constantly 0) and the network is idle (all four network metrics 0) for 0.5% of
the samples. ``--quick`` makes both 10x smaller (10 and 100 hosts).

Every implementation runs in its own child process on the same Parquet input: loading it (into
an in-memory DuckDB ``raw_metrics`` table, a pandas or a polars frame) is not timed, only the
feature computation is (for SQL: ``anomaly.features.compute``, which leaves ``feat_out``). The
child reports wall seconds and memory: the peak RSS of the timed part (the kernel's high-water
mark, reset just before it) minus the RSS right before it, and that absolute peak.

The outputs are cross-checked against the SQL's: row count, column set, per-column non-null
counts and sums over all rows, and every value on a sample of rows (two whole hosts and 3,000
random rows) within 1e-6 relative. With ``--repeat N`` each implementation runs N times (each in
a fresh process) and its fastest run is reported. The table is printed and saved to
``$ANOMALY_HOME/bench/features.json`` (``var/bench/features.json`` by default; ``--quick`` writes
``features-quick.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from bench.measure import code_state as _code_state
from bench.measure import cpu_s as _cpu_s
from bench.measure import hwm_mb as _hwm_mb
from bench.measure import reset_hwm as _reset_hwm
from bench.measure import rss_mb as _rss_mb

REPO = Path(__file__).resolve().parents[1]

METRICS = (
    "cpu_util",
    "load1",
    "mem_util",
    "swap_util",
    "disk_read_bytes",
    "disk_write_bytes",
    "net_in_bytes",
    "net_out_bytes",
    "net_in_packets",
    "net_out_packets",
)
STEP = timedelta(seconds=15)
LOOKBACK = timedelta(hours=1)
LAGS = (timedelta(days=1), timedelta(days=7))
TOLERANCE = timedelta(minutes=5)
SEASONAL_WINDOW = timedelta(minutes=15)  # the window compared one lag back ends at that sample
SOURCE = "bench"
IMPLS = ("sql", "pandas", "polars")
EXTRA_IMPLS = ("polars-over",)  # the textbook .over("host") form of the polars implementation
REL_TOL = 1e-6
SAMPLE_ROWS = 3000
SAMPLE_HOSTS = 2
TARGET_SQL_OVER_POLARS = 1.5  # SQL wall time at most 1.5x polars'
TARGET_PANDAS_OVER_SQL = 3.0  # SQL at least 3x faster than pandas


@dataclass(frozen=True)
class Dataset:
    name: str
    hosts: int
    start: datetime
    end: datetime
    seed: int

    @property
    def description(self) -> str:
        hours = (self.end - self.start) / timedelta(hours=1)
        span = f"{hours / 24:g} day" if hours >= 24 else f"{hours:g} hour"
        return f"{self.hosts} hosts x {len(METRICS)} metrics x {span} at {STEP.seconds} s"


def datasets(quick: bool) -> list[Dataset]:
    scale = 10 if quick else 1
    day_start = datetime(2024, 6, 7, 12, tzinfo=UTC)  # Friday noon to Saturday noon
    fleet_start = datetime(2024, 6, 8, 23, 30, tzinfo=UTC)  # across midnight, Saturday to Sunday
    return [
        Dataset("day", 100 // scale, day_start, day_start + timedelta(days=1), seed=20240607),
        Dataset("fleet", 1000 // scale, fleet_start, fleet_start + timedelta(hours=1), seed=20240608),
    ]


def out_dir() -> Path:
    from anomaly.settings import get_settings

    return get_settings().home / "bench"


# -- data -----------------------------------------------------------------------------------
def spans(ds: Dataset) -> list[tuple[datetime, datetime]]:
    """The time ranges the features read: the lookback plus the interval, and one history slice
    per lag; overlapping ranges merged."""
    wanted = [(ds.start - LOOKBACK, ds.end)] + [
        (ds.start - lag - TOLERANCE - SEASONAL_WINDOW, ds.end - lag) for lag in LAGS
    ]
    merged: list[list[datetime]] = []
    for lo, hi in sorted(wanted):
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def generate(ds: Dataset) -> pl.DataFrame:
    """Long raw rows (ts, host, metric, value) of ``ds``: realistic magnitudes, daily cycles,
    noise, dropped rows and samples. Deterministic in ``ds.seed``."""
    import numpy as np

    rng = np.random.default_rng(ds.seed)
    step_us = STEP // timedelta(microseconds=1)
    grid = []
    for lo, hi in spans(ds):
        # the 15 s grid inside (lo, hi); each host is then shifted by its scrape phase (< 15 s)
        first = (int(lo.timestamp() * 1e6) // step_us + 1) * step_us
        grid.append(np.arange(first, int(hi.timestamp() * 1e6), step_us, dtype=np.int64))
    t_us = np.concatenate(grid)
    n_hosts, n_t = ds.hosts, len(t_us)
    phase_us = rng.integers(0, 15, n_hosts).astype(np.int64) * 1_000_000
    ts_us = t_us[None, :] + phase_us[:, None]  # (hosts, times)
    secs = ts_us / 1e6
    shape = (n_hosts, n_t)

    def per_host(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, n_hosts)[:, None]

    def noise(scale: float | np.ndarray = 1.0) -> np.ndarray:
        return rng.normal(0.0, 1.0, shape) * scale

    def lognormal(sigma: float) -> np.ndarray:
        return np.exp(rng.normal(-sigma * sigma / 2, sigma, shape))

    peak = per_host(10, 16) * 3600  # busiest time of day (UTC), per host
    day = 0.5 * (1 + np.cos(2 * np.pi * ((secs % 86400) - peak) / 86400))  # 1 at the peak
    slow = np.sin(2 * np.pi * secs / per_host(7200, 21600) + per_host(0, 2 * np.pi))

    cpu = np.clip(per_host(0.02, 0.3) + per_host(0.05, 0.5) * day + 0.05 * slow + noise(0.03), 0, 1)
    cores = rng.choice([2, 4, 8, 16, 32], n_hosts)[:, None]
    load1 = np.round(np.maximum(cores * cpu * per_host(0.8, 1.3) + noise(0.1 * np.sqrt(cores)), 0), 2)
    mem = np.clip(per_host(0.25, 0.85) + 0.03 * slow + 0.02 * day + noise(0.005), 0, 1)
    has_swap = rng.random(n_hosts)[:, None] < 0.7
    swap = np.where(has_swap, np.clip(per_host(0.0, 0.2) + 0.01 * slow + noise(0.001), 0, 1), 0.0)
    busy = 0.3 + day
    disk_read = 10 ** per_host(4, 7) * busy * lognormal(0.6)
    disk_write = 10 ** per_host(4.5, 7) * busy * lognormal(0.5)
    net_in = 10 ** per_host(4, 8) * (0.2 + day) * lognormal(0.3)
    net_out = net_in * per_host(0.2, 3) * lognormal(0.2)
    pkts_in = net_in / per_host(300, 1400) * lognormal(0.05)
    pkts_out = net_out / per_host(300, 1400) * lognormal(0.05)
    idle = rng.random(shape) < 0.005
    values = {
        "cpu_util": cpu,
        "load1": load1,
        "mem_util": mem,
        "swap_util": swap,
        "disk_read_bytes": disk_read,
        "disk_write_bytes": disk_write,
        "net_in_bytes": np.where(idle, 0.0, net_in),
        "net_out_bytes": np.where(idle, 0.0, net_out),
        "net_in_packets": np.where(idle, 0.0, pkts_in),
        "net_out_packets": np.where(idle, 0.0, pkts_out),
    }
    row_kept = rng.random(shape) >= 0.02  # ~2% of host x timestamp rows missing entirely
    hosts = np.array([f"host-{i:04d}" for i in range(n_hosts)])
    frames = []
    for m in METRICS:
        keep = row_kept & (rng.random(shape) >= 0.005)  # and ~0.5% of single samples
        h_idx, t_idx = np.nonzero(keep)
        frames.append(
            pl.DataFrame(
                {
                    "ts": ts_us[h_idx, t_idx],
                    "host": hosts[h_idx],
                    "metric": np.full(len(h_idx), m),
                    "value": values[m][h_idx, t_idx],
                }
            )
        )
    raw = pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    # in the order a lake receives them: by time
    return raw.sort("ts", "host", "metric")


def prepare(ds: Dataset, root: Path) -> Path:
    """Write the dataset, its sample keys and meta to ``root/<name>`` (reused when unchanged)."""
    from anomaly.features import FeatureContext
    from anomaly.metrics import DEFAULT_METRICS

    kinds = {m.name: m.kind for m in DEFAULT_METRICS if m.name in METRICS}
    ctx = FeatureContext.from_catalog(kinds)
    meta = {
        "dataset": asdict(ds) | {"start": ds.start.isoformat(), "end": ds.end.isoformat()},
        "kinds": kinds,
        "pairs": [[p.a, p.b] for p in ctx.pairs],
        "ratios": [[r.num, r.den] for r in ctx.ratios],
        "generator": 2,  # 2: history slices 15 minutes longer (the seasonal windows)
    }
    path = root / ds.name
    meta_file = path / "meta.json"
    if meta_file.exists() and (path / "raw.parquet").exists() and (path / "keys.parquet").exists():
        old = json.loads(meta_file.read_text())
        if {k: old.get(k) for k in meta} == meta:
            return path
    path.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    raw = generate(ds)
    rows = raw.filter(pl.col("ts") >= ds.start, pl.col("ts") < ds.end).select("host", "ts").unique()
    hosts = rows.get_column("host").unique().sort()
    whole = [hosts[0], hosts[len(hosts) - 1]][:SAMPLE_HOSTS]
    keys = pl.concat(
        [
            rows.filter(pl.col("host").is_in(whole)),
            rows.filter(~pl.col("host").is_in(whole)).sample(min(SAMPLE_ROWS, rows.height), seed=ds.seed),
        ]
    ).sort("host", "ts")
    raw.write_parquet(path / "raw.parquet", row_group_size=1_000_000)
    keys.write_parquet(path / "keys.parquet")
    meta |= {"raw_rows": raw.height, "interval_points": raw.filter(pl.col("ts") >= ds.start).height}
    meta_file.write_text(json.dumps(meta, indent=2))
    print(
        f"  generated {ds.name}: {raw.height:,} raw rows ({meta['interval_points']:,} in the interval) "
        f"in {time.perf_counter() - t:.1f}s",
        flush=True,
    )
    return path


# -- one implementation in a child process --------------------------------------------------
def child(impl: str, path: Path) -> dict[str, Any]:
    meta = json.loads((path / "meta.json").read_text())
    start, end = (
        datetime.fromisoformat(meta["dataset"]["start"]),
        datetime.fromisoformat(meta["dataset"]["end"]),
    )
    kinds = meta["kinds"]
    pairs = [tuple(p) for p in meta["pairs"]]
    ratios = [tuple(r) for r in meta["ratios"]]
    raw_file = str(path / "raw.parquet")
    extra: dict[str, Any] = {}

    # -- load (not timed) --
    if impl == "sql":
        import duckdb

        from anomaly.features import FeatureContext, compute

        con = duckdb.connect()
        con.execute("SET TimeZone='UTC'")
        con.execute("SET threads=2")
        con.execute(
            "CREATE TABLE raw_metrics (ts TIMESTAMPTZ NOT NULL, host VARCHAR NOT NULL, metric VARCHAR NOT NULL, "
            "value DOUBLE NOT NULL, source VARCHAR NOT NULL, run_id VARCHAR, ingested_at TIMESTAMPTZ NOT NULL)"
        )
        con.execute(
            "INSERT INTO raw_metrics SELECT ts, host, metric, value, $s, 'bench', now() FROM read_parquet($f)",
            {"s": SOURCE, "f": raw_file},
        )
        ctx = FeatureContext.from_catalog(kinds)
        used = ([[p.a, p.b] for p in ctx.pairs], [[r.num, r.den] for r in ctx.ratios])
        if used != (meta["pairs"], meta["ratios"]):
            raise RuntimeError(
                f"the SQL would use pairs and ratios {used}, the dataset was prepared for others"
            )

        def run() -> Any:
            return compute(con, SOURCE, start, end, ctx)
    elif impl == "pandas":
        import pandas as pd

        from tests.features.reference import reference_features  # the child runs in the repository

        raw_pd = pd.read_parquet(raw_file)

        def run() -> Any:
            return reference_features(raw_pd, kinds, start, end, pairs=pairs, ratios=ratios)
    elif impl in ("polars", "polars-over"):
        from anomaly.features import FeatureContext, catalog
        from bench.features_polars import polars_features

        raw_pl = pl.read_parquet(raw_file)
        partition = "over" if impl == "polars-over" else "key"
        # the SQL's base relation may declare its window row counts as features: follow it
        row_counts = any(s.name == "rows_5m" for s in catalog(FeatureContext.from_catalog(kinds)))

        def run() -> Any:
            return polars_features(
                raw_pl,
                kinds,
                start,
                end,
                pairs=pairs,
                ratios=ratios,
                row_counts=row_counts,
                partition=partition,
            )
    else:
        raise ValueError(f"unknown implementation {impl!r}")

    # -- the timed part --
    gc.collect()
    rss_before = _rss_mb()
    reset = _reset_hwm()
    load = os.getloadavg()[0]
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    result = run()
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    peak_abs = _hwm_mb() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # -- normalise the output (not timed) --
    if impl == "sql":
        extra["sql_timings"] = {k: round(v, 3) for k, v in result.timings.items()}
        out = con.execute("SELECT * EXCLUDE (source) FROM feat_out").pl()
    elif impl == "pandas":
        out = pl.from_pandas(result)
    else:
        out = result
    out = normalise(out)
    keys = pl.read_parquet(path / "keys.parquet")
    out.join(keys, on=["host", "ts"], how="semi").sort("host", "ts").write_parquet(
        path / f"sample_{impl}.parquet"
    )
    return {
        "impl": impl,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 2),
        "load_before": round(load, 2),
        "rss_before_mb": round(rss_before, 1),
        "peak_mb": round(peak_abs - rss_before, 1),
        "peak_abs_mb": round(peak_abs, 1),
        "peak_reset": reset,
        "rows": out.height,
        "hosts": out.get_column("host").n_unique(),
        "features": out.width - 2,
        "columns": out.columns[2:],
        "stats": column_stats(out),
        **extra,
    }


def normalise(frame: pl.DataFrame) -> pl.DataFrame:
    """host (String), ts (UTC, us) and the features as Float64/Int64/Boolean, NaN as null."""
    ts_type = frame.schema["ts"]
    ts = pl.col("ts")
    ts = ts.dt.replace_time_zone("UTC") if ts_type.time_zone is None else ts.dt.convert_time_zone("UTC")
    feats = []
    for name, dtype in frame.schema.items():
        if name in ("host", "ts"):
            continue
        if dtype.is_float():
            feats.append(pl.col(name).cast(pl.Float64).fill_nan(None))
        elif dtype.is_integer():
            feats.append(pl.col(name).cast(pl.Int64))
        else:
            feats.append(pl.col(name))
    return frame.select(pl.col("host").cast(pl.String), ts.cast(pl.Datetime("us", "UTC")), *feats)


def column_stats(frame: pl.DataFrame) -> dict[str, list[float]]:
    """Per feature column over all rows: [non-null count, sum, sum of absolute values]."""
    cols = frame.columns[2:]
    num = [pl.col(c).cast(pl.Float64) for c in cols]
    row = frame.select(
        *(e.count().alias(f"n{i}") for i, e in enumerate(num)),
        *(e.sum().alias(f"s{i}") for i, e in enumerate(num)),
        *(e.abs().sum().alias(f"a{i}") for i, e in enumerate(num)),
    ).row(0)
    k = len(cols)
    return {c: [row[i], row[k + i], row[2 * k + i]] for i, c in enumerate(cols)}


def run_child(impl: str, path: Path, timeout: float) -> dict[str, Any]:
    result_file = path / f"result_{impl}.json"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.bench_features", "--child", impl, "--data", str(path)]
    env = dict(os.environ, POLARS_MAX_THREADS=os.environ.get("POLARS_MAX_THREADS", "2"))
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"impl": impl, "error": f"timed out after {timeout:.0f}s"}
    if proc.returncode != 0 or not result_file.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return {"impl": impl, "error": "\n".join(tail) or f"exit code {proc.returncode}"}
    result = json.loads(result_file.read_text())
    result["child_s"] = round(time.perf_counter() - t, 1)
    return result


# -- cross-check ----------------------------------------------------------------------------
def compare(path: Path, ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """How far ``other``'s output is from ``ref``'s (the SQL's)."""
    a_cols, b_cols = set(ref["columns"]), set(other["columns"])
    report: dict[str, Any] = {
        "rows_equal": ref["rows"] == other["rows"],
        "rows": [ref["rows"], other["rows"]],
        "missing_columns": sorted(a_cols - b_cols),
        "extra_columns": sorted(b_cols - a_cols),
    }
    common = [c for c in ref["columns"] if c in b_cols]
    # over all rows: non-null counts and sums
    count_diffs, sum_worst = {}, (0.0, None)
    for c in common:
        (na, sa, aa), (nb, sb, ab) = ref["stats"][c], other["stats"][c]
        if na != nb:
            count_diffs[c] = [na, nb]
        scale = max(aa or 0.0, ab or 0.0)
        if scale > 0 and sa is not None and sb is not None:
            rel = abs(sa - sb) / scale
            if rel > sum_worst[0]:
                sum_worst = (rel, c)
    report["nonnull_count_diffs"] = count_diffs
    report["worst_sum_rel"] = {"rel": sum_worst[0], "column": sum_worst[1]}

    # on the sample rows: every value
    a = pl.read_parquet(path / f"sample_{ref['impl']}.parquet")
    b = pl.read_parquet(path / f"sample_{other['impl']}.parquet")
    joined = a.select("host", "ts", *common).join(
        b.select("host", "ts", *common), on=["host", "ts"], how="full", suffix="__b", coalesce=True
    )
    report["sample_rows"] = [a.height, b.height, joined.height]
    per_column: dict[str, dict[str, Any]] = {}
    worst: dict[str, Any] = {"rel": 0.0}
    for c in common:
        x, y = pl.col(c).cast(pl.Float64), pl.col(f"{c}__b").cast(pl.Float64)
        scale = joined.select(pl.max_horizontal(x.abs().max(), y.abs().max())).item() or 0.0
        diff = (x - y).abs()
        rel = (
            pl.when(diff <= 1e-12 * scale)  # both zero, or a rounding residue far below the column's scale
            .then(0.0)
            .otherwise(diff / pl.max_horizontal(x.abs(), y.abs()))
        )
        s = joined.select(
            null_mismatch=(x.is_null() != y.is_null()).sum(),
            bad=(rel > REL_TOL).sum(),
            worst=rel.max(),
            at=rel.arg_max(),
            first_null_mismatch=(x.is_null() != y.is_null()).arg_max(),
        ).row(0, named=True)
        if s["null_mismatch"] or s["bad"]:
            i = s["at"] if s["bad"] else s["first_null_mismatch"]
            row = joined.row(i, named=True)
            per_column[c] = {
                "null_mismatch": s["null_mismatch"],
                "beyond_tol": s["bad"],
                "worst_rel": s["worst"],
                "example": {
                    "host": row["host"],
                    "ts": str(row["ts"]),
                    "sql": row[c],
                    "other": row[f"{c}__b"],
                },
            }
        if s["worst"] is not None and s["worst"] > worst["rel"]:
            row = joined.row(s["at"], named=True)
            worst = {"rel": s["worst"], "column": c, "host": row["host"], "ts": str(row["ts"])}
            worst |= {"sql": row[c], "other": row[f"{c}__b"]}
    report["worst_value"] = worst
    report["disagreements"] = per_column
    report["agree"] = (
        report["rows_equal"]
        and not report["missing_columns"]
        and not report["extra_columns"]
        and not count_diffs
        and not per_column
    )
    return report


# -- the benchmark --------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller datasets (a smoke run)")
    parser.add_argument("--datasets", default="day,fleet", help="comma-separated: day, fleet")
    parser.add_argument(
        "--impls", default=",".join(IMPLS), help=f"comma-separated: {', '.join(IMPLS + EXTRA_IMPLS)}"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per implementation; the fastest is reported"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per implementation run")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON file (default $ANOMALY_HOME/bench/features.json)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        result = child(args.child, args.data)  # a failure exits non-zero with its traceback
        (args.data / f"result_{args.child}.json").write_text(json.dumps(result))
        return 0

    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = set(impls) - set(IMPLS + EXTRA_IMPLS)
    if unknown:
        parser.error(f"unknown implementations: {sorted(unknown)}")
    if "sql" in impls:  # the reference of the cross-check runs first
        impls.remove("sql")
        impls.insert(0, "sql")
    wanted = {d.strip() for d in args.datasets.split(",")}
    root = out_dir()
    data_root = root / ("data-quick" if args.quick else "data")
    print(f"feature benchmark ({'quick' if args.quick else 'full'}), data under {data_root}", flush=True)
    code_before = code_state()

    results, checks, sets = [], [], []
    for ds in datasets(args.quick):
        if ds.name not in wanted:
            continue
        path = prepare(ds, data_root)
        meta = json.loads((path / "meta.json").read_text())
        sets.append(
            {"name": ds.name, "description": ds.description}
            | {k: meta[k] for k in ("raw_rows", "interval_points")}
        )
        by_impl = {}
        for impl in impls:
            print(f"  {ds.name}: running {impl}...", flush=True)
            runs = []
            for _ in range(args.repeat):
                r = run_child(impl, path, args.timeout) | {"dataset": ds.name}
                runs.append(r)
                if "error" in r:
                    print(f"    FAILED: {r['error']}", flush=True)
                    break
                print(
                    f"    {r['wall_s']:.2f}s (cpu {r['cpu_s']:.1f}s, load {r['load_before']:.1f}), "
                    f"peak +{r['peak_mb']:.0f} MB, {r['rows']:,} rows",
                    flush=True,
                )
            ok = [r for r in runs if "error" not in r]
            # the fastest run stands for the implementation (the machine may be shared)
            by_impl[impl] = min(ok, key=lambda r: r["wall_s"]) if ok else runs[-1]
            by_impl[impl]["all_wall_s"] = [r["wall_s"] for r in ok]
        for impl, r in by_impl.items():
            if impl != "sql" and "error" not in r and "error" not in by_impl.get("sql", {"error": 1}):
                checks.append({"dataset": ds.name, "impl": impl} | compare(path, by_impl["sql"], r))
        results.extend(by_impl.values())

    summary = summarise(results)
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "code": code_before | {"changed_during_run": code_state() != code_before},
        "datasets": sets,
        "results": [{k: v for k, v in r.items() if k not in ("stats", "columns")} for r in results],
        "ratios": summary,
        "cross_check": checks,
    }
    print_report(report)
    output = args.output or root / ("features-quick.json" if args.quick else "features.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nsaved {output}")
    return 0


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name in dict.fromkeys(r["dataset"] for r in results):
        wall = {r["impl"]: r["wall_s"] for r in results if r["dataset"] == name and "error" not in r}
        row: dict[str, Any] = {"dataset": name}
        sql = wall.get("sql")
        if sql and wall.get("pandas"):
            row["sql_over_pandas"] = round(sql / wall["pandas"], 3)
            row["target_sql_3x_faster_than_pandas"] = wall["pandas"] / sql >= TARGET_PANDAS_OVER_SQL
        if sql and wall.get("polars"):
            row["sql_over_polars"] = round(sql / wall["polars"], 3)
            row["target_sql_within_1_5x_polars"] = sql / wall["polars"] <= TARGET_SQL_OVER_POLARS
        out.append(row)
    return out


def code_state() -> dict[str, Any]:
    """Which SQL was measured: the commit, and the feature files changed since it."""
    return _code_state(
        [
            *sorted((REPO / "sql" / "features").glob("*.sql")),
            REPO / "anomaly" / "features.py",
            REPO / "tests" / "features" / "reference.py",
        ]
    )


def machine() -> dict[str, Any]:
    import duckdb
    import numpy as np
    import pandas as pd

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "polars": pl.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "duckdb_threads": 2,
        "polars_threads": int(os.environ.get("POLARS_MAX_THREADS", "2")),
    }


def _fmt_rel(x: float | None) -> str:
    return "-" if x is None else ("0" if x == 0 else f"{x:.1e}")


def print_report(report: dict[str, Any]) -> None:
    code = report["code"]
    dirty = (
        f", uncommitted: {', '.join(x.split()[-1] for x in code['uncommitted'])}"
        if code["uncommitted"]
        else ""
    )
    print(f"\nSQL and reference at commit {code['commit'] or '?'}{dirty}")
    if code["changed_during_run"]:
        print("WARNING: the SQL or the reference changed while the benchmark ran: rerun for clean numbers")
    for ds in report["datasets"]:
        print(
            f"{ds['name']}: {ds['description']}; {ds['raw_rows']:,} raw rows, {ds['interval_points']:,} in the interval"
        )
    header = f"{'dataset':<8} {'impl':<12} {'wall s':>8} {'cpu s':>7} {'peak MB':>8} {'abs MB':>8} {'rows':>9} {'features':>8}  agreement with SQL"
    print("\n" + header + "\n" + "-" * len(header))
    checks = {(c["dataset"], c["impl"]): c for c in report["cross_check"]}
    for r in report["results"]:
        if "error" in r:
            print(f"{r['dataset']:<8} {r['impl']:<12} FAILED: {r['error'].splitlines()[-1]}")
            continue
        c = checks.get((r["dataset"], r["impl"]))
        if r["impl"] == "sql":
            agree = "(reference)"
        elif c is None:
            agree = "not checked"
        else:
            w = c["worst_value"]
            n_cols = len(set(c["disagreements"]) | set(c["nonnull_count_diffs"]))
            agree = "agrees" if c["agree"] else f"DIFFERS in {n_cols} column{'s' if n_cols != 1 else ''}"
            agree += f"; worst rel {_fmt_rel(w['rel'])}" + (f" ({w['column']})" if w.get("column") else "")
        print(
            f"{r['dataset']:<8} {r['impl']:<12} {r['wall_s']:>8.2f} {r['cpu_s']:>7.1f} {r['peak_mb']:>8.0f} {r['peak_abs_mb']:>8.0f} "
            f"{r['rows']:>9,} {r['features']:>8}  {agree}"
        )
    print()
    for s in report["ratios"]:
        parts = [f"{s['dataset']}:"]
        if "sql_over_pandas" in s:
            met = "met" if s["target_sql_3x_faster_than_pandas"] else "NOT met"
            parts.append(
                f"SQL/pandas = {s['sql_over_pandas']:.3f} (target SQL >= 3x faster, i.e. <= 0.333: {met})"
            )
        if "sql_over_polars" in s:
            met = "met" if s["target_sql_within_1_5x_polars"] else "NOT met"
            parts.append(f"SQL/polars = {s['sql_over_polars']:.2f} (target <= 1.5: {met})")
        print("  ".join(parts))
    for r in report["results"]:
        if r["impl"] == "sql" and "sql_timings" in r:
            t = r["sql_timings"]
            total = sum(t.values()) or 1.0
            top = ", ".join(
                f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in sorted(t.items(), key=lambda kv: -kv[1])
            )
            print(f"SQL time by file, {r['dataset']}: {top}")
    for c in report["cross_check"]:
        if c["agree"]:
            continue
        print(f"\ndisagreements, {c['dataset']}: SQL vs {c['impl']}")
        if not c["rows_equal"]:
            print(f"  rows: SQL {c['rows'][0]:,}, {c['impl']} {c['rows'][1]:,}")
        for key in ("missing_columns", "extra_columns"):
            if c[key]:
                print(f"  {key.replace('_', ' ')}: {c[key][:8]}{' ...' if len(c[key]) > 8 else ''}")
        for col, (na, nb) in list(c["nonnull_count_diffs"].items())[:12]:
            print(f"  {col}: non-null rows SQL {na:,}, {c['impl']} {nb:,} (all rows)")
        for col, d in list(c["disagreements"].items())[:12]:
            e = d["example"]
            print(
                f"  {col}: {d['null_mismatch']} NULL mismatches, {d['beyond_tol']} beyond {REL_TOL:g} (sample rows); "
                f"e.g. {e['host']} {e['ts']}: SQL {e['sql']!r} vs {e['other']!r}"
            )


if __name__ == "__main__":
    sys.exit(main())
