"""Benchmark the ``raw_metrics`` validation suite (Great Expectations) against a numpy/pandas reference.

    python -m bench.bench_validation [--quick] [--repeat N] [--shapes small,mid,1m,fleet] [--no-breakdown]

Target (issue): at least 1 million rows per second of raw metrics validated on 2 cores for the raw
suite. Measured here, not in a test.

Synthetic staged batches (columns ts ``datetime64[us, UTC]``, host and metric ``object`` strings,
value ``float64``; one row per host, metric and 15 s step of one hourly interval, in the staged
order ``host, metric, ts``), with the 15 metrics of :data:`anomaly.metrics.DEFAULT_METRICS` and
realistic values per kind (ratios in [0, 1] with exact 0s and 1s, non-negative rates, gauges):

* ``small``: 10 hosts x 15 metrics x 1 hour (36,000 rows; the only one with ``--quick``): what a
  call costs whatever the size,
* ``mid``: 100 hosts x 15 metrics x 1 hour (360,000 rows: one interval of a mid-sized fleet),
* ``1m``: 278 hosts x 15 metrics x 1 hour (1,000,800 rows),
* ``fleet``: 1,000 hosts x 15 metrics x 1 hour (3,600,000 rows).

Per shape, timed in this process, best of ``--repeat`` runs (default 3):

* ``GE``: exactly the product's call, ``engine.run("raw_metrics", frame, raw_suite(...),
  text_columns=("host", "metric"), index_columns=("host", "metric", "ts"))`` with known_hosts
  the batch's hosts, kinds the default catalog and tolerance 0.01: dictionary encoding, suite
  build, GE batch, validation and reading the results. It must pass on the clean batch;
* ``reference``: the same checks written directly with numpy/pandas (vectorised), on the same
  frame; its verdicts and unexpected counts are cross-checked against GE's.

Then a corrupted copy (``--corrupt`` share of values set to NaN, 5% by default) is validated
once by both: ``raw.value_not_nan`` must fail (the suite really checks). Its time is shown too: a
failing batch costs GE more, as it looks up the (host, metric, ts) of every unexpected row.

The first GE call of a process pays Great Expectations' warm-up (context, datasource, expectation
classes): two runs on a tiny batch (900 rows) come first, reported on their own and kept out of
the table. On that batch with one fault of every kind the reference must reach GE's verdicts
and unexpected-row counts on every expectation (so the reference is the same checks).

Memory: the peak RSS of each timed part (the kernel's high-water mark, reset just before it)
above the RSS right before it, and that absolute peak. With ``--breakdown`` (default on) every
expectation of the suite also runs alone on the ``1m`` shape (``small`` with ``--quick``), as
``engine.run`` with a one-element list, next to an empty suite (the fixed cost of a call): what
each one costs. The tables are printed and saved to ``$ANOMALY_HOME/bench/validation.json``
(``var/bench/validation.json`` by default; ``--quick`` writes ``validation-quick.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.measure import code_state as _code_state
from bench.measure import cpu_s as _cpu_s
from bench.measure import hwm_mb as _hwm_mb
from bench.measure import reset_hwm as _reset_hwm
from bench.measure import rss_mb as _rss_mb

REPO = Path(__file__).resolve().parents[1]

STEP = timedelta(seconds=15)
SUITE = "raw_metrics"
TEXT_COLUMNS = ("host", "metric")
INDEX_COLUMNS = ("host", "metric", "ts")
TOLERANCE = 0.01  # ANOMALY_MAX_REJECT_SHARE
CORRUPT_SHARE = 0.05
TARGET_ROWS_PER_S = 1_000_000
INTERVAL_START = datetime(2024, 6, 8, 23, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    name: str
    hosts: int
    hours: float
    seed: int

    @property
    def start(self) -> datetime:
        return INTERVAL_START

    @property
    def end(self) -> datetime:
        return INTERVAL_START + timedelta(hours=self.hours)

    @property
    def steps(self) -> int:
        return int(timedelta(hours=self.hours) / STEP)

    def rows(self, metrics: int) -> int:
        return self.hosts * metrics * self.steps

    def description(self, metrics: int) -> str:
        span = f"{self.hours:g} hour" if self.hours >= 1 else f"{self.hours * 60:g} min"
        return f"{self.hosts:,} hosts x {metrics} metrics x {span} at {STEP.seconds} s"


QUICK_SHAPE = Shape("small", 10, 1, seed=36)
SHAPES = {
    "small": QUICK_SHAPE,  # shows the fixed cost of a call: rows hardly matter at this size
    "mid": Shape("mid", 100, 1, seed=360),
    "1m": Shape("1m", 278, 1, seed=1000),
    "fleet": Shape("fleet", 1000, 1, seed=3600),
}
WARMUP_SHAPE = Shape("warmup", 3, 5 / 60, seed=1)
BREAKDOWN_SHAPE = "1m"


def out_dir() -> Path:
    from anomaly.settings import get_settings

    return get_settings().home / "bench"


def catalog() -> dict[str, str]:
    from anomaly.metrics import DEFAULT_METRICS

    return {m.name: m.kind for m in DEFAULT_METRICS}


# -- data -----------------------------------------------------------------------------------
def generate(shape: Shape) -> Any:
    """A clean staged batch of ``shape``: every (host, metric, ts) of the interval once, ordered by
    host, metric, ts like the staged rows the gate reads. Deterministic in ``shape.seed``."""
    import numpy as np
    import pandas as pd

    kinds = catalog()
    metrics = list(kinds)
    rng = np.random.default_rng(shape.seed)
    n_h, n_t = shape.hosts, shape.steps
    start_us = int(shape.start.timestamp() * 1_000_000)
    t_us = start_us + np.arange(n_t, dtype=np.int64) * (STEP // timedelta(microseconds=1))
    secs = t_us / 1e6
    grid = (n_h, n_t)

    def per_host(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, n_h)[:, None]

    def noise(scale: float | np.ndarray) -> np.ndarray:
        return rng.normal(0.0, 1.0, grid) * scale

    def lognormal(sigma: float) -> np.ndarray:
        return np.exp(rng.normal(-sigma * sigma / 2, sigma, grid))

    day = 0.5 * (1 + np.cos(2 * np.pi * ((secs % 86400) - per_host(10, 16) * 3600) / 86400))
    slow = np.sin(2 * np.pi * secs / per_host(1800, 7200) + per_host(0, 2 * np.pi))
    cores = rng.choice([2, 4, 8, 16, 32], n_h)[:, None]
    # ratios: clipped to [0, 1], so the bounds themselves occur (idle hosts at 0, full disks at 1)
    cpu = np.clip(per_host(-0.05, 0.3) + per_host(0.05, 0.6) * day + 0.05 * slow + noise(0.04), 0, 1)
    has_swap = rng.random(n_h)[:, None] < 0.7
    busy = 0.3 + day
    net_in = 10 ** per_host(4, 8) * (0.2 + day) * lognormal(0.3)
    net_out = net_in * per_host(0.2, 3) * lognormal(0.2)
    idle = rng.random(grid) < 0.005  # network idle: exact zeros
    values = {
        "cpu_util": cpu,
        "load1": np.round(np.maximum(cores * cpu * per_host(0.8, 1.3) + noise(0.1 * np.sqrt(cores)), 0), 2),
        "mem_util": np.clip(per_host(0.25, 1.05) + 0.03 * slow + 0.02 * day + noise(0.005), 0, 1),
        "swap_util": np.where(has_swap, np.clip(per_host(0, 0.2) + 0.01 * slow + noise(0.001), 0, 1), 0.0),
        "disk_util": np.clip(per_host(0.05, 1.02) + 1e-5 * (secs - secs[0]) + noise(1e-4), 0, 1),
        "disk_io_time": np.clip(per_host(0, 0.2) * busy * lognormal(0.8), 0, 1),
        "disk_read_bytes": 10 ** per_host(4, 7) * busy * lognormal(0.6),
        "disk_write_bytes": 10 ** per_host(4.5, 7) * busy * lognormal(0.5),
        "net_in_bytes": np.where(idle, 0.0, net_in),
        "net_out_bytes": np.where(idle, 0.0, net_out),
        "net_in_packets": np.where(idle, 0.0, net_in / per_host(300, 1400) * lognormal(0.05)),
        "net_out_packets": np.where(idle, 0.0, net_out / per_host(300, 1400) * lognormal(0.05)),
        "tcp_retransmits": rng.poisson(per_host(0, 3) * busy * 15, grid) / 15.0,
        "tcp_established": np.round(per_host(10, 3000) * (0.5 + day) + noise(5)).clip(0),
        "procs_running": rng.poisson(cores * cpu + 1, grid).astype(np.float64),
    }
    missing = set(metrics) - set(values)
    if missing:  # the catalog grew: a metric of unknown shape gets a plausible value of its kind
        for m in sorted(missing):
            scale = 1.0 if kinds[m] == "ratio" else 100.0 if kinds[m] == "percent" else 1e4
            values[m] = np.clip(rng.random(grid), 0, 1) * scale
    n_m = len(metrics)
    value = np.stack([values[m] for m in metrics], axis=1)  # (hosts, metrics, times)
    hosts = np.array([f"host-{i:04d}.dc1.example.net" for i in range(n_h)], dtype=object)
    names = np.array(metrics, dtype=object)
    frame = pd.DataFrame(
        {
            "ts": pd.DatetimeIndex(np.tile(t_us, n_h * n_m).view("datetime64[us]")).tz_localize(UTC),
            "host": np.repeat(hosts, n_m * n_t),
            "metric": np.tile(np.repeat(names, n_t), n_h),
            "value": value.reshape(-1).astype(np.float64),
        }
    )
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]", frame["ts"].dtype
    return frame


def corrupt(frame: Any, share: float, seed: int) -> Any:
    """A copy of ``frame`` with ``share`` of the values (random rows) set to NaN."""
    import numpy as np

    out = frame.copy()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(out), round(share * len(out)), replace=False)
    value = out["value"].to_numpy(copy=True)
    value[rows] = np.nan
    out["value"] = value
    return out


def faulty(frame: Any) -> Any:
    """A copy of a small ``frame`` (hundreds of rows) with one fault of every kind the raw suite
    knows: to cross-check the reference against GE on every expectation (a few rows each, so the
    row checks count them and stay under the tolerance)."""
    import numpy as np
    import pandas as pd

    out = frame.copy()
    value = out["value"].to_numpy(copy=True)
    ts = out["ts"].copy()
    host = out["host"].to_numpy(copy=True)
    metric = out["metric"].to_numpy(copy=True)
    first = {m: int(np.flatnonzero(metric == m)[0]) for m in ("cpu_util", "net_in_bytes", "load1")}
    value[[3, 7]] = np.nan
    value[11] = np.inf
    value[first["cpu_util"] + 1] = 1.5  # ratio above 1
    value[first["net_in_bytes"] + 1] = -1.0  # rate below 0
    value[first["load1"] + 1] = -3.0  # gauge: unbounded, not a fault
    ts.iloc[20] = pd.Timestamp(INTERVAL_START + timedelta(hours=WARMUP_SHAPE.hours))  # == end: outside
    ts.iloc[31] = ts.iloc[30]  # a duplicate key (two rows)
    ts.iloc[40] = pd.NaT
    host[50] = "host-new.dc2.example.net"  # not known
    host[60] = None
    metric[70] = "gpu_util"  # not in the catalog
    return out.assign(ts=ts, host=host, metric=metric, value=value)


# -- the reference: the raw suite in numpy/pandas ---------------------------------------------
def reference(
    frame: Any, start: datetime, end: datetime, kinds: dict[str, str], known_hosts: Any, tolerance: float
) -> dict[str, tuple[bool, int | None]]:
    """Every expectation of ``raw_suite`` computed directly: name -> (success, unexpected rows).

    Same semantics as GE's: the row checks of ``value`` skip nulls (NaN) and pass when at most
    ``tolerance`` of the rows they look at fail; range checks look at the rows of their kind; type
    checks look at every non-null value (an object column of strings is text).
    """
    import numpy as np
    import pandas as pd

    from anomaly.validation.suites import KIND_BOUNDS

    mostly = 1.0 - tolerance if tolerance > 0 else 1.0
    out: dict[str, tuple[bool, int | None]] = {}

    def row_check(name: str, bad: int, looked_at: int, allow: bool = True) -> None:
        share_ok = looked_at == 0 or (looked_at - bad) / looked_at >= (mostly if allow else 1.0)
        out[name] = (bool(share_ok), int(bad))

    out["raw.columns"] = (set(frame.columns) == {"ts", "host", "metric", "value"}, None)
    ts, host, metric, value = (frame[c] for c in ("ts", "host", "metric", "value"))
    out["raw.ts_type"] = (isinstance(ts.dtype, pd.DatetimeTZDtype), None)
    # factorize once: codes for nulls, membership, ranges and uniqueness; types from the uniques
    h_codes, h_uniques = pd.factorize(host, use_na_sentinel=True)
    m_codes, m_uniques = pd.factorize(metric, use_na_sentinel=True)
    h_uniques, m_uniques = np.asarray(h_uniques, dtype=object), np.asarray(m_uniques, dtype=object)
    out["raw.host_type"] = (
        host.dtype == object and all(isinstance(x, str) for x in h_uniques),
        None,
    )
    out["raw.metric_type"] = (
        metric.dtype == object and all(isinstance(x, str) for x in m_uniques),
        None,
    )
    out["raw.value_type"] = (value.dtype == np.float64, None)
    n = len(frame)
    v = value.to_numpy()
    ts_i = ts.array.asi8 if isinstance(ts.dtype, pd.DatetimeTZDtype) else None  # no copy
    ts_null = int(ts.isna().sum())
    row_check("raw.ts_not_null", ts_null, n, allow=False)
    row_check("raw.host_not_null", int((h_codes < 0).sum()), n, allow=False)
    row_check("raw.metric_not_null", int((m_codes < 0).sum()), n, allow=False)
    nan = np.isnan(v)
    n_nan = int(nan.sum())
    row_check("raw.value_not_nan", n_nan, n)
    non_null = n - n_nan
    row_check("raw.value_finite", int(np.isinf(v).sum()), non_null)
    if ts_i is not None:
        lo, hi = (int(pd.Timestamp(t).as_unit(ts.dtype.unit).asm8.view(np.int64)) for t in (start, end))
        valid = ts_i != np.iinfo(np.int64).min  # NaT
        row_check("raw.ts_in_interval", int((valid & ((ts_i < lo) | (ts_i >= hi))).sum()), n - ts_null)
    else:
        out["raw.ts_in_interval"] = (False, None)
    # (host, metric, ts) unique: one int64 per (host, metric) and the ts, every copy counted
    pair = h_codes.astype(np.int64) * (len(m_uniques) + 1) + m_codes
    dup = pd.DataFrame({"k": pair, "t": ts_i if ts_i is not None else ts}).duplicated(keep=False)
    row_check("raw.key_unique", int(dup.sum()), n)
    # ranges: the kind of each distinct metric, then per row through the codes
    kind_names = list(KIND_BOUNDS)
    kind_of = np.array([kind_names.index(kinds[m]) if kinds.get(m) in KIND_BOUNDS else -1 for m in m_uniques])
    row_kind = np.where(m_codes >= 0, kind_of[m_codes] if len(kind_of) else -1, -1)
    present = {kinds[m] for m in kinds}
    for k, (low, high) in KIND_BOUNDS.items():
        if k not in present:
            continue
        rows = (row_kind == kind_names.index(k)) & ~nan
        bad = rows & ((v < low) | (v > high if high is not None else False))
        row_check(f"raw.range_{k}", int(bad.sum()), int(rows.sum()))
    known_m = np.isin(m_uniques, np.asarray(sorted(kinds), dtype=object))
    known_h = np.isin(h_uniques, np.asarray(sorted(known_hosts), dtype=object))
    row_check(
        "raw.known_metrics",
        int(((m_codes >= 0) & ~known_m[m_codes]).sum()),
        n - int((m_codes < 0).sum()),
        False,
    )
    row_check(
        "raw.known_hosts",
        int(((h_codes >= 0) & ~known_h[h_codes]).sum()),
        n - int((h_codes < 0).sum()),
        False,
    )
    return out


# -- measurement ----------------------------------------------------------------------------
def measure(fn: Callable[[], Any], repeat: int) -> tuple[Any, dict[str, Any]]:
    """Run ``fn`` ``repeat`` times: its last result, and the fastest run's wall and CPU seconds,
    every run's wall seconds, the largest peak RSS above the RSS before a run, and that peak."""
    walls, cpus, peaks, peaks_abs, loads = [], [], [], [], []
    result, reset = None, False
    for _ in range(repeat):
        result = None
        gc.collect()
        loads.append(os.getloadavg()[0])
        before = _rss_mb()
        reset = _reset_hwm()
        c0, t0 = _cpu_s(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu_s() - c0)
        peak = _hwm_mb() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peaks.append(peak - before)
        peaks_abs.append(peak)
    best = min(range(repeat), key=walls.__getitem__)
    return result, {
        "wall_s": round(walls[best], 4),
        "cpu_s": round(cpus[best], 3),
        "all_wall_s": [round(w, 4) for w in walls],
        "peak_mb": round(max(peaks), 1),
        "peak_abs_mb": round(max(peaks_abs), 1),
        "peak_reset": reset,
        "load_before": round(max(loads), 2),
    }


def ge_vs_reference(run: Any, ref: dict[str, tuple[bool, int | None]]) -> list[str]:
    """Where GE's verdicts or unexpected counts differ from the reference's."""
    diffs = []
    ge = {o.name: o for o in run.outcomes}
    for name in sorted(set(ge) | set(ref)):
        if name not in ge or name not in ref:
            diffs.append(f"{name}: only in {'GE' if name in ge else 'the reference'}")
            continue
        o, (ok, bad) = ge[name], ref[name]
        if o.success != ok:
            diffs.append(f"{name}: GE {'passed' if o.success else 'failed'} ({o.observed}), reference {ok}")
        elif bad is not None and o.unexpected_count is not None and bad != o.unexpected_count:
            diffs.append(f"{name}: GE {o.unexpected_count} unexpected rows, reference {bad}")
    return diffs


def bench_shape(shape: Shape, repeat: int, corrupt_share: float, engine: Any, suites: Any) -> dict[str, Any]:
    kinds = catalog()
    t = time.perf_counter()
    frame = generate(shape)
    known = sorted(frame["host"].unique())
    print(
        f"  {shape.name}: {shape.description(len(kinds))}: {len(frame):,} rows generated in "
        f"{time.perf_counter() - t:.1f}s",
        flush=True,
    )
    checks = suites.raw_suite(shape.start, shape.end, kinds, known, TOLERANCE)

    def ge(batch: Any) -> Callable[[], Any]:
        return lambda: engine.run(
            SUITE, batch, checks, text_columns=TEXT_COLUMNS, index_columns=INDEX_COLUMNS
        )

    def ref(batch: Any) -> Callable[[], Any]:
        return lambda: reference(batch, shape.start, shape.end, kinds, known, TOLERANCE)

    row: dict[str, Any] = {"shape": shape.name, "description": shape.description(len(kinds))}
    row |= {"rows": len(frame), "hosts": shape.hosts, "metrics": len(kinds), "expectations": len(checks)}
    print(f"    GE suite ({len(checks)} expectations), best of {repeat}...", flush=True)
    run, ge_m = measure(ge(frame), repeat)
    print(_progress(ge_m, len(frame)) + f", status {run.status}", flush=True)
    if run.status != "passed":
        bad = "; ".join(f"{o.name}: {o.observed}" for o in run.outcomes if not o.success)
        raise AssertionError(f"{shape.name}: the clean batch did not pass the raw suite: {bad}")
    if len(run.outcomes) != len(checks):
        raise AssertionError(f"{shape.name}: {len(run.outcomes)} outcomes for {len(checks)} expectations")
    print(f"    numpy/pandas reference, best of {repeat}...", flush=True)
    ref_out, ref_m = measure(ref(frame), repeat)
    print(_progress(ref_m, len(frame)), flush=True)
    diffs = ge_vs_reference(run, ref_out)

    bad_frame = corrupt(frame, corrupt_share, shape.seed)
    print(f"    corrupted copy ({corrupt_share:.0%} of values NaN), once each...", flush=True)
    bad_run, bad_ge_m = measure(ge(bad_frame), 1)
    bad_ref, bad_ref_m = measure(ref(bad_frame), 1)
    nan_outcome = next(o for o in bad_run.outcomes if o.name == "raw.value_not_nan")
    if nan_outcome.success or bad_run.status != "failed":
        raise AssertionError(
            f"{shape.name}: {corrupt_share:.0%} NaN values did not fail raw.value_not_nan "
            f"({nan_outcome.observed}, status {bad_run.status})"
        )
    bad_diffs = ge_vs_reference(bad_run, bad_ref)
    if bad_ref["raw.value_not_nan"][0]:
        bad_diffs.append("the reference passed raw.value_not_nan on the corrupted copy")
    failed = [o.name for o in bad_run.outcomes if not o.success]
    print(
        f"      GE {bad_ge_m['wall_s']:.3f}s: status {bad_run.status}, failed {', '.join(failed)} "
        f"({nan_outcome.observed}); reference {bad_ref_m['wall_s']:.3f}s",
        flush=True,
    )
    for d in diffs + bad_diffs:
        print(f"      GE and reference DIFFER: {d}", flush=True)
    del bad_frame, frame
    gc.collect()
    rows = row["rows"]
    row |= {
        "ge": ge_m | {"rows_per_s": round(rows / ge_m["wall_s"]), "engine_seconds": round(run.seconds, 4)},
        "reference": ref_m | {"rows_per_s": round(rows / ref_m["wall_s"])},
        "ge_over_reference": round(ge_m["wall_s"] / ref_m["wall_s"], 2),
        "target_rows_per_s": TARGET_ROWS_PER_S,
        "target_met": rows / ge_m["wall_s"] >= TARGET_ROWS_PER_S,
        "status_clean": run.status,
        "corrupted": {
            "nan_share": corrupt_share,
            "status": bad_run.status,
            "failed": failed,
            "value_not_nan": nan_outcome.observed,
            "ge_wall_s": bad_ge_m["wall_s"],
            "reference_wall_s": bad_ref_m["wall_s"],
        },
        "ge_reference_differences": diffs + bad_diffs,
    }
    return row


def _progress(m: dict[str, Any], rows: int) -> str:
    walls = ", ".join(f"{w:.3f}" for w in m["all_wall_s"])
    return (
        f"      best {m['wall_s']:.3f}s ({rows / m['wall_s'] / 1e6:.2f} M rows/s; runs {walls}; "
        f"cpu {m['cpu_s']:.2f}s, load {m['load_before']:.1f}), peak +{m['peak_mb']:.0f} MB"
    )


def breakdown(shape: Shape, repeat: int, engine: Any, suites: Any) -> dict[str, Any]:
    """Every expectation alone (``engine.run`` with a one-element list), and an empty suite."""
    kinds = catalog()
    frame = generate(shape)
    known = sorted(frame["host"].unique())
    checks = suites.raw_suite(shape.start, shape.end, kinds, known, TOLERANCE)
    print(
        f"  breakdown on {shape.name} ({len(frame):,} rows): {len(checks)} expectations alone, "
        f"best of {repeat} each...",
        flush=True,
    )

    def one(cs: list[Any]) -> Callable[[], Any]:
        return lambda: engine.run(SUITE, frame, cs, text_columns=TEXT_COLUMNS, index_columns=INDEX_COLUMNS)

    _, encode = measure(lambda: engine.prepare(frame, TEXT_COLUMNS), repeat)
    _, base = measure(one([]), repeat)
    print(
        f"    (empty suite: encoding, batch, no expectation) {base['wall_s']:.3f}s, of which the "
        f"dictionary encoding (engine.prepare) {encode['wall_s']:.3f}s",
        flush=True,
    )
    items = []
    for check in checks:
        run, m = measure(one([check]), repeat)
        (outcome,) = run.outcomes
        if not outcome.success:
            raise AssertionError(f"{check.name} alone failed on the clean batch: {outcome.observed}")
        items.append(
            {
                "name": check.name,
                "expectation": check.expectation,
                "wall_s": m["wall_s"],
                "over_empty_s": round(max(m["wall_s"] - base["wall_s"], 0.0), 4),
                "rows_per_s": round(len(frame) / m["wall_s"]),
                "peak_mb": m["peak_mb"],
            }
        )
        print(f"    {check.name:<20} {m['wall_s']:.3f}s", flush=True)
    items.sort(key=lambda x: -x["wall_s"])
    return {
        "shape": shape.name,
        "rows": len(frame),
        "empty_suite": base,
        "encoding": encode,
        "expectations": items,
        "sum_over_empty_s": round(sum(x["over_empty_s"] for x in items), 4),
    }


# -- the benchmark --------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small batch (36,000 rows): a smoke run")
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help=f"comma-separated: {', '.join(SHAPES)} (ignored with --quick)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per measurement; the fastest is reported"
    )
    parser.add_argument(
        "--corrupt",
        type=float,
        default=CORRUPT_SHARE,
        help="share of values set to NaN in the corrupted copy",
    )
    parser.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"time every expectation alone on the {BREAKDOWN_SHAPE} shape (small with --quick)",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON file (default $ANOMALY_HOME/bench/validation.json)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not 0 < args.corrupt < 1 or args.corrupt <= TOLERANCE:
        parser.error(f"--corrupt must lie in ({TOLERANCE}, 1): above the tolerance, so the suite fails")
    if args.quick:
        shapes = [QUICK_SHAPE]
    else:
        wanted = [s.strip() for s in args.shapes.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(SHAPES))
        if unknown:
            parser.error(f"unknown shapes: {unknown}")
        shapes = [SHAPES[s] for s in wanted]

    print(
        f"validation benchmark ({'quick' if args.quick else 'full'}): raw suite, GE vs numpy/pandas, "
        f"best of {args.repeat}, target {TARGET_ROWS_PER_S / 1e6:g} M rows/s",
        flush=True,
    )
    code_before = code_state()
    t = time.perf_counter()
    from anomaly.validation import engine, suites  # imports Great Expectations

    import_s = time.perf_counter() - t
    print(f"  imported Great Expectations in {import_s:.1f}s", flush=True)
    # The first validation of a process builds GE's context, datasource and expectation classes.
    # One run on a tiny batch pays it here, outside the table; everything after runs warm.
    warm = generate(WARMUP_SHAPE)
    warm_checks = suites.raw_suite(
        WARMUP_SHAPE.start, WARMUP_SHAPE.end, catalog(), warm["host"].unique(), TOLERANCE
    )
    warm_runs = []
    for _ in range(2):
        t = time.perf_counter()
        run = engine.run(SUITE, warm, warm_checks, text_columns=TEXT_COLUMNS, index_columns=INDEX_COLUMNS)
        warm_runs.append(round(time.perf_counter() - t, 3))
        assert run.status == "passed", [(o.name, o.observed) for o in run.outcomes if not o.success]
    print(
        f"  warm-up on {len(warm):,} rows (not in the table): first GE call {warm_runs[0]:.2f}s, "
        f"second {warm_runs[1]:.2f}s",
        flush=True,
    )
    # the reference must reach GE's verdicts: one fault of every kind on the warm-up batch
    bad = faulty(warm)
    bad_run = engine.run(SUITE, bad, warm_checks, text_columns=TEXT_COLUMNS, index_columns=INDEX_COLUMNS)
    bad_ref = reference(
        bad, WARMUP_SHAPE.start, WARMUP_SHAPE.end, catalog(), warm["host"].unique(), TOLERANCE
    )
    fault_diffs = ge_vs_reference(bad_run, bad_ref)
    fault_counts = {o.name: o.unexpected_count for o in bad_run.outcomes if o.unexpected_count}
    fault_failed = [o.name for o in bad_run.outcomes if not o.success]
    print(
        f"  reference vs GE on the warm-up batch with one fault of every kind: "
        f"{'agree' if not fault_diffs else 'DIFFER'} on {len(bad_run.outcomes)} expectations "
        f"(unexpected rows {fault_counts}; failed {', '.join(fault_failed)})",
        flush=True,
    )
    for d in fault_diffs:
        print(f"    GE and reference DIFFER: {d}", flush=True)

    results = [bench_shape(s, args.repeat, args.corrupt, engine, suites) for s in shapes]
    detail = None
    if args.breakdown:
        target = QUICK_SHAPE if args.quick else SHAPES[BREAKDOWN_SHAPE]
        detail = breakdown(target, args.repeat, engine, suites)

    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "code": code_before | {"changed_during_run": code_state() != code_before},
        "call": (
            f'engine.run("{SUITE}", frame, raw_suite(start, end, kinds, known_hosts, {TOLERANCE}), '
            f"text_columns={TEXT_COLUMNS}, index_columns={INDEX_COLUMNS})"
        ),
        "target_rows_per_s": TARGET_ROWS_PER_S,
        "warmup": {
            "rows": len(warm),
            "import_s": round(import_s, 2),
            "first_call_s": warm_runs[0],
            "second_call_s": warm_runs[1],
        },
        "fault_cross_check": {
            "rows": len(bad),
            "ge_failed": fault_failed,
            "ge_unexpected": fault_counts,
            "differences": fault_diffs,
        },
        "results": results,
        "breakdown": detail,
    }
    print_report(report)
    root = out_dir()
    output = args.output or root / ("validation-quick.json" if args.quick else "validation.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nsaved {output}")
    failures = [r["shape"] for r in results if r["ge_reference_differences"]]
    failures += ["the faulty warm-up batch"] if fault_diffs else []
    if failures:
        print(f"GE and the reference disagree on {', '.join(failures)}: see above")
        return 1
    return 0


def code_state() -> dict[str, Any]:
    """Which suite and engine were measured: the commit, and the validation files changed since."""
    return _code_state(
        [
            REPO / "anomaly" / "validation" / "engine.py",
            REPO / "anomaly" / "validation" / "suites.py",
            REPO / "anomaly" / "metrics.py",
        ]
    )


def machine() -> dict[str, Any]:
    import great_expectations as gx
    import numpy as np
    import pandas as pd

    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "great_expectations": gx.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
    }


def print_report(report: dict[str, Any]) -> None:
    code = report["code"]
    dirty = (
        f", uncommitted: {', '.join(x.split()[-1] for x in code['uncommitted'])}"
        if code["uncommitted"]
        else ""
    )
    m = report["machine"]
    print(
        f"\nraw suite at commit {code['commit'] or '?'}{dirty}; GE {m['great_expectations']}, pandas {m['pandas']}, "
        f"numpy {m['numpy']}, {m['cpus']} CPUs"
    )
    if code["changed_during_run"]:
        print("WARNING: the suite or the engine changed while the benchmark ran: rerun for clean numbers")
    w = report["warmup"]
    print(
        f"warm-up (excluded): import GE {w['import_s']:.1f}s, first call {w['first_call_s']:.2f}s, "
        f"second {w['second_call_s']:.2f}s on {w['rows']:,} rows"
    )
    for r in report["results"]:
        print(f"{r['shape']}: {r['description']}; {r['rows']:,} rows, {r['expectations']} expectations")
    header = (
        f"{'shape':<6} {'rows':>10} {'exp':>4} {'GE s':>7} {'GE Mrow/s':>9} {'GE cpu':>7} {'GE MB':>6} "
        f"{'ref s':>7} {'ref Mrow/s':>10} {'ref MB':>6} {'GE/ref':>7} {'bad GE s':>8}  target 1 M rows/s"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in report["results"]:
        ge, ref = r["ge"], r["reference"]
        print(
            f"{r['shape']:<6} {r['rows']:>10,} {r['expectations']:>4} {ge['wall_s']:>7.3f} "
            f"{ge['rows_per_s'] / 1e6:>9.2f} {ge['cpu_s'] / ge['wall_s']:>6.2f}x {ge['peak_mb']:>6.0f} "
            f"{ref['wall_s']:>7.3f} {ref['rows_per_s'] / 1e6:>10.2f} {ref['peak_mb']:>6.0f} "
            f"{r['ge_over_reference']:>7.1f} {r['corrupted']['ge_wall_s']:>8.3f}  "
            f"{'PASS' if r['target_met'] else 'FAIL'}"
        )
    print(
        "GE/ref: GE's wall time over the reference's; GE cpu: CPU seconds per wall second (2 = both cores); "
        "MB: peak RSS above the RSS before the call; bad GE s: GE on the corrupted copy (once)."
    )
    loads = [r["ge"]["load_before"] for r in report["results"]]
    if loads and max(loads) > (m["cpus"] or 1):
        print(
            f"note: load average up to {max(loads):.1f} on {m['cpus']} CPUs before timed runs: the machine "
            "was shared, figures are pessimistic"
        )
    for r in report["results"]:
        c = r["corrupted"]
        print(
            f"{r['shape']}: corrupted copy ({c['nan_share']:.0%} NaN) -> {c['status']}: "
            f"{', '.join(c['failed'])}; raw.value_not_nan: {c['value_not_nan']}"
        )
        for d in r["ge_reference_differences"]:
            print(f"  GE and reference DIFFER: {d}")
    b = report["breakdown"]
    if not b:
        return
    total = sum(x["over_empty_s"] for x in b["expectations"]) or 1.0
    empty, encode = b["empty_suite"]["wall_s"], b["encoding"]["wall_s"]
    print(
        f"\nper expectation, alone on {b['shape']} ({b['rows']:,} rows: engine.run with a one-element list), "
        f"best of its runs; '+ s' is over the empty suite, {empty:.3f}s: the dictionary encoding "
        f"{encode:.3f}s, GE's batch (it hashes the whole frame) and result {empty - encode:.3f}s"
    )
    header = f"{'expectation':<20} {'GE class':<34} {'alone s':>8} {'+ s':>7} {'share':>6} {'Mrow/s':>7}"
    print(header + "\n" + "-" * len(header))
    for x in b["expectations"]:
        print(
            f"{x['name']:<20} {x['expectation']:<34} {x['wall_s']:>8.3f} {x['over_empty_s']:>7.3f} "
            f"{100 * x['over_empty_s'] / total:>5.0f}% {x['rows_per_s'] / 1e6:>7.2f}"
        )
    print(f"{'sum of + s':<63} {b['sum_over_empty_s']:>7.3f}")
    whole = next((r for r in report["results"] if r["shape"] == b["shape"]), None)
    if whole:
        over = whole["ge"]["wall_s"] - empty
        ratio = b["sum_over_empty_s"] / over if over > 0 else float("inf")
        if ratio > 1.15:
            why = (
                f"the costs alone add up to {ratio:.2f}x that: GE resolves metrics several expectations "
                "need (row count, null masks) once per suite, or the machine was busier during the breakdown"
            )
        elif ratio < 0.85:
            why = (
                f"the costs alone add up to {ratio:.2f}x that: at this size GE's per-expectation work "
                "(configurations, metric graph, results) outweighs what the parts show"
            )
        else:
            why = f"the costs alone add up to {ratio:.2f}x that: each expectation pays for its own metrics"
        print(
            f"the whole suite on {b['shape']}: {whole['ge']['wall_s']:.3f}s, {over:.3f}s over the empty suite: {why}"
        )


if __name__ == "__main__":
    sys.exit(main())
