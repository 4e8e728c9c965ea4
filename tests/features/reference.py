"""A pandas/numpy reference implementation of every feature of the SQL feature store.

Written from the feature definitions (the header comments of ``sql/features/*.sql``), not from
the SQL: the test compares the two, and the benchmark times them. No import from ``anomaly``.

How it works (vectorised over all rows; the Python loops run per metric, window, pair, host and
window *offset*, never per row):

* the raw samples become numpy arrays sorted by (metric, host, ts); for every output row
  (host, t) a per-host ``np.searchsorted`` finds the last sample with ts <= t and the first with
  ts > t - w, so the window (t - w, t] is the contiguous block of samples between them. The same
  as-of lookup gives the previous sample (the rate) and the latest sample in
  (t - lag - 5m, t - lag] (the seasonal features). (``pd.merge_asof`` does the same, but
  re-factorises the host keys on every call: 3x slower on the benchmark's 5.76 M points.)
* window statistics are computed from those blocks with a corrected two-pass (centred)
  algorithm: pass 1 sums the k-th sample of every window for k = 0, 1, ... (one vectorised step
  per k), pass 2 sums the squared and cross deviations from the pass-1 means. pandas' rolling
  ``var``/``cov``/``corr`` are not used: their add/remove updates and the ``E[xy] - E[x]E[y]``
  form lose most digits on byte rates (~1e9) and on time in seconds, which would make a 1e-9
  comparison meaningless;
* a window whose samples are all equal is detected exactly (min == max): its mean is that value,
  its deviation and slope are exactly 0 and a correlation with it is undefined;
* time differences are taken in integer nanoseconds before they become float seconds, and the
  calendar features come from integer nanoseconds since the epoch (a UTC midnight, a Thursday).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ROLLING_WINDOWS: dict[str, pd.Timedelta] = {
    "5m": pd.Timedelta(minutes=5),
    "15m": pd.Timedelta(minutes=15),
    "1h": pd.Timedelta(hours=1),
}
SLOPE_WINDOWS = ("15m", "1h")
CORR_WINDOWS = ("15m", "1h")
DEVIATION_WINDOWS = ("1h",)
LAGS: dict[str, pd.Timedelta] = {"1d": pd.Timedelta(days=1), "7d": pd.Timedelta(days=7)}
SEASONAL_TOLERANCE = pd.Timedelta(minutes=5)
SEASONAL_WINDOW = "15m"  # the window compared with the same window one lag earlier
RATE_HORIZON = pd.Timedelta(hours=1)


# -- names ----------------------------------------------------------------------------------------
def usable_pairs(pairs: Iterable[tuple[str, str]], kinds: dict[str, str]) -> list[tuple[str, str]]:
    """The pairs (or ratios) whose two metrics are both in the catalog."""
    return [(a, b) for a, b in pairs if a in kinds and b in kinds]


def feature_names(
    kinds: dict[str, str], pairs: Sequence[tuple[str, str]], ratios: Sequence[tuple[str, str]]
) -> list[str]:
    """Every feature column the reference produces, in its (family, metric, window) order."""
    metrics = sorted(kinds)
    pairs, ratios = usable_pairs(pairs, kinds), usable_pairs(ratios, kinds)
    names = list(metrics) + [f"rows_{w}" for w in ROLLING_WINDOWS]
    for m in metrics:
        for w in ROLLING_WINDOWS:
            names += [f"{m}__{stat}_{w}" for stat in ("count", "mean", "std", "min", "max")]
    for m in metrics:
        names += [f"{m}__slope_{w}" for w in SLOPE_WINDOWS] + [f"{m}__rate"]
    for m in metrics:
        for w in DEVIATION_WINDOWS:
            names += [f"{m}__zscore_{w}", f"{m}__ratio_{w}"]
    for m in metrics:
        for lag in LAGS:
            names += [f"{m}__diff_{lag}", f"{m}__missing_{lag}"]
            names += [f"{m}__mean_{SEASONAL_WINDOW}_diff_{lag}", f"{m}__std_{SEASONAL_WINDOW}_ratio_{lag}"]
    for a, b in pairs:
        names += [f"corr__{a}__{b}_{w}" for w in CORR_WINDOWS]
    names += [f"{num}_per_{den}" for num, den in ratios]
    names += ["hour_sin", "hour_cos", "dow_sin", "dow_cos", "is_weekend"]
    return names


# -- data layout ----------------------------------------------------------------------------------
def _utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    if t.tzinfo is None:
        raise ValueError(f"{t} has no time zone: pass an aware timestamp")
    return t.tz_convert("UTC").as_unit("ns")


@dataclass
class _Series:
    """Samples (or output rows) sorted by (host code, ts); host h owns ``bounds[h]:bounds[h + 1]``."""

    hc: np.ndarray  # host code
    ts: np.ndarray  # int64 nanoseconds since the epoch
    values: list[np.ndarray]
    bounds: np.ndarray

    @classmethod
    def of(cls, hc: np.ndarray, ts: np.ndarray, values: list[np.ndarray], n_hosts: int) -> _Series:
        return cls(hc, ts, values, np.searchsorted(hc, np.arange(n_hosts + 1)))

    def __len__(self) -> int:
        return len(self.ts)


class _Raw:
    """The raw samples as arrays sorted by (metric, host, ts)."""

    def __init__(self, raw: pd.DataFrame) -> None:
        if not isinstance(raw["ts"].dtype, pd.DatetimeTZDtype):
            raise ValueError("raw.ts must hold tz-aware timestamps")
        hc, self.hosts = pd.factorize(raw["host"], sort=True)
        mc, metrics = pd.factorize(raw["metric"], sort=True)
        ts = pd.DatetimeIndex(raw["ts"]).tz_convert("UTC").as_unit("ns").asi8
        value = raw["value"].to_numpy(dtype="float64")
        order = np.lexsort((ts, hc, mc))
        self.hc, self.ts, self.value = hc[order], ts[order], value[order]
        self.n_hosts = len(self.hosts)
        self.metric_index = {name: i for i, name in enumerate(metrics)}
        self.metric_bounds = np.searchsorted(mc[order], np.arange(len(metrics) + 1))

    def series(self, metric: str, after: int, before: int) -> _Series:
        """The samples of ``metric`` with ``after < ts < before`` (nanoseconds)."""
        i = self.metric_index.get(metric)
        a, b = (0, 0) if i is None else (self.metric_bounds[i], self.metric_bounds[i + 1])
        ts = self.ts[a:b]
        keep = (ts > after) & (ts < before)
        return _Series.of(self.hc[a:b][keep], ts[keep], [self.value[a:b][keep]], self.n_hosts)

    def rows(self, start: int, end: int) -> _Series:
        """The (host, ts) pairs with ``start <= ts < end`` where the host has any sample."""
        keep = (self.ts >= start) & (self.ts < end)
        hc, ts = self.hc[keep], self.ts[keep]
        order = np.lexsort((ts, hc))
        hc, ts = hc[order], ts[order]
        new = np.ones(len(ts), dtype=bool)
        new[1:] = (hc[1:] != hc[:-1]) | (ts[1:] != ts[:-1])
        return _Series.of(hc[new], ts[new], [], self.n_hosts)


def _locate(rows: _Series, samples: _Series, shift: int, how: str) -> np.ndarray:
    """For each row (host, t), the position in ``samples`` of the same host's sample that is
    ``last<=`` (the last with ts <= t - shift), ``last<`` (the last with ts < t - shift) or
    ``first>`` (the first with ts > t - shift); -1 when there is none."""
    pos = np.full(len(rows), -1, dtype=np.int64)
    side = "left" if how == "last<" else "right"
    for h in range(len(rows.bounds) - 1):
        r0, r1 = rows.bounds[h], rows.bounds[h + 1]
        s0, s1 = samples.bounds[h], samples.bounds[h + 1]
        if r0 == r1 or s0 == s1:
            continue
        i = np.searchsorted(samples.ts[s0:s1], rows.ts[r0:r1] - shift, side=side)
        if how == "first>":
            ok = i < s1 - s0
        else:
            i -= 1
            ok = i >= 0
        pos[r0:r1] = np.where(ok, i + s0, -1)
    return pos


def _block(rows: _Series, samples: _Series, span: int, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first position, count) of each row's samples with ts in (t - span, t]; ``last`` is
    ``_locate(rows, samples, 0, "last<=")``."""
    first = _locate(rows, samples, span, "first>")
    ok = (last >= 0) & (first >= 0) & (first <= last)
    return np.where(ok, first, 0), np.where(ok, last - first + 1, 0)


def _at(values: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``values[pos]``, NaN where ``pos`` is -1 (no sample)."""
    out = np.full(len(pos), np.nan)
    ok = pos >= 0
    out[ok] = values[pos[ok]]
    return out


def _joint(a: _Series, b: _Series, n_hosts: int) -> _Series:
    """The timestamps where both series have a sample, with both values."""
    hc, ts, va, vb = [], [], [], []
    for h in range(n_hosts):
        sa, sb = slice(a.bounds[h], a.bounds[h + 1]), slice(b.bounds[h], b.bounds[h + 1])
        common, ia, ib = np.intersect1d(a.ts[sa], b.ts[sb], assume_unique=True, return_indices=True)
        hc.append(np.full(len(common), h, dtype=a.hc.dtype))
        ts.append(common)
        va.append(a.values[0][sa][ia])
        vb.append(b.values[0][sb][ib])

    def cat(parts: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    return _Series.of(cat(hc, np.int64), cat(ts, np.int64), [cat(va, float), cat(vb, float)], n_hosts)


def _window_moments(
    arrays: Sequence[np.ndarray], first: np.ndarray, count: np.ndarray, *, extremes: int | None = None
) -> dict:
    """Exact-as-possible statistics of each array over the blocks ``[first, first + count)``.

    Returns ``mean``, ``min``, ``max`` and ``constant`` (lists, one entry per array; min, max and
    constant only for the first ``extremes`` arrays) and ``S[(i, j)]``, the centred co-moment
    sum((x_i - mean_i)(x_j - mean_j)) for i <= j; NaN where a block is empty.
    """
    n, n_arrays = len(first), len(arrays)
    extremes = n_arrays if extremes is None else extremes
    # Rows in decreasing count order: the rows whose block has more than k samples are a prefix,
    # of length active[k].
    order = np.argsort(-count, kind="stable")
    first_o, count_o = first[order], count[order]
    kmax = int(count_o[0]) if n else 0
    active = np.searchsorted(-count_o, -np.arange(kmax), side="left")

    sums = [np.zeros(n) for _ in arrays]
    mins = [np.full(n, np.inf) for _ in range(extremes)]
    maxs = [np.full(n, -np.inf) for _ in range(extremes)]
    for k in range(kmax):
        m = active[k]
        idx = first_o[:m] + k
        for i, a in enumerate(arrays):
            v = a[idx]
            sums[i][:m] += v
            if i < extremes:
                np.minimum(mins[i][:m], v, out=mins[i][:m])
                np.maximum(maxs[i][:m], v, out=maxs[i][:m])
    cnt = count_o.astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = [s / cnt for s in sums]
    constant = [np.zeros(n, dtype=bool) for _ in arrays]
    for i in range(extremes):
        constant[i] = (count_o > 0) & (mins[i] == maxs[i])
        means[i][constant[i]] = mins[i][constant[i]]  # exact: every sample equals the minimum

    pairs = [(i, j) for i in range(n_arrays) for j in range(i, n_arrays)]
    dev_sum = [np.zeros(n) for _ in arrays]
    co = {p: np.zeros(n) for p in pairs}
    for k in range(kmax):
        m = active[k]
        idx = first_o[:m] + k
        devs = [a[idx] - means[i][:m] for i, a in enumerate(arrays)]
        for i, d in enumerate(devs):
            dev_sum[i][:m] += d
        for i, j in pairs:
            co[(i, j)][:m] += devs[i] * devs[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, j in pairs:
            # corrected two-pass: take out what the rounding of the mean left in the sums
            co[(i, j)] -= dev_sum[i] * dev_sum[j] / cnt
            if i == j:
                np.maximum(co[(i, j)], 0.0, out=co[(i, j)])
            co[(i, j)][constant[i] | constant[j]] = 0.0
    empty = count_o == 0
    for arr in [*means, *mins, *maxs, *co.values()]:
        arr[empty] = np.nan
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return {
        "mean": [a[inverse] for a in means],
        "min": [a[inverse] for a in mins],
        "max": [a[inverse] for a in maxs],
        "constant": [c[inverse] for c in constant],
        "S": {p: v[inverse] for p, v in co.items()},
    }


def _sample_std(mom: dict, count: np.ndarray) -> np.ndarray:
    """Sample standard deviation (n - 1) of the first array of :func:`_window_moments`; NaN below
    2 samples."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= 2, np.sqrt(mom["S"][(0, 0)] / (count - 1)), np.nan)


# -- the features ---------------------------------------------------------------------------------
def reference_features(
    raw: pd.DataFrame,
    kinds: dict[str, str],
    start,
    end,
    *,
    pairs: Sequence[tuple[str, str]],
    ratios: Sequence[tuple[str, str]],
) -> pd.DataFrame:
    """Every feature for the rows (host, ts) of ``[start, end)`` where the host has a sample.

    ``raw``: long format (host, metric, ts tz-aware, value) of one source, unique on
    (host, metric, ts), holding at least the hour before ``start`` and, for the seasonal
    features, the samples one and seven days earlier. Returns host, ts and the feature columns
    (:func:`feature_names`), sorted by host and ts; undefined values are NaN.
    """
    start, end = _utc(start), _utc(end)
    t0, t1 = start.value, end.value
    pairs, ratios = usable_pairs(pairs, kinds), usable_pairs(ratios, kinds)
    data = _Raw(raw)
    rows = data.rows(t0, t1)
    n = len(rows)
    lookback = max(ROLLING_WINDOWS.values()).value
    oldest_lag, newest_lag = max(LAGS.values()).value, min(LAGS.values()).value

    out: dict[str, np.ndarray] = {}
    # timestamps of the host with any sample in (t - w, t], the lookback included
    around = data.rows(t0 - lookback + 1, t1)
    at_or_before = _locate(rows, around, 0, "last<=")
    for w, span in ROLLING_WINDOWS.items():
        out[f"rows_{w}"] = _block(rows, around, span.value, at_or_before)[1].astype("int64")
    recent: dict[str, _Series] = {}
    current: dict[str, np.ndarray] = {}
    for m in sorted(kinds):
        samples = recent[m] = data.series(m, t0 - lookback, t1)
        y = samples.values[0]
        last = _locate(rows, samples, 0, "last<=")
        here = last >= 0
        here[here] = samples.ts[last[here]] == rows.ts[here]
        x = _at(y, np.where(here, last, -1))  # the value at t
        current[m] = out[m] = x

        # rolling statistics and slopes; time in seconds from start, from integer nanoseconds
        t_sec = (samples.ts - t0) / 1e9
        stats = {}
        for w, span in ROLLING_WINDOWS.items():
            first, count = _block(rows, samples, span.value, last)
            mom = _window_moments([y, t_sec] if w in SLOPE_WINDOWS else [y], first, count, extremes=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                std = _sample_std(mom, count)
                if w in SLOPE_WINDOWS:
                    slope = mom["S"][(0, 1)] / mom["S"][(1, 1)]
                    out[f"{m}__slope_{w}"] = np.where(count >= 2, slope, np.nan)
            stats[w] = (mom["mean"][0], std)
            out[f"{m}__count_{w}"] = count.astype("int64")
            out[f"{m}__mean_{w}"] = mom["mean"][0]
            out[f"{m}__std_{w}"] = std
            out[f"{m}__min_{w}"] = mom["min"][0]
            out[f"{m}__max_{w}"] = mom["max"][0]

        # rate from the previous sample, which must lie in (t - 1h, t)
        prev = _locate(rows, samples, 0, "last<")
        gap_ns = np.full(n, -1, dtype=np.int64)
        gap_ns[prev >= 0] = rows.ts[prev >= 0] - samples.ts[prev[prev >= 0]]
        prev[gap_ns >= RATE_HORIZON.value] = -1
        dt = np.where(prev >= 0, gap_ns / 1e9, np.nan)  # integer nanoseconds, then seconds
        prev_value = _at(y, prev)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = (x - prev_value) / dt
            if kinds[m] == "counter":
                rate = np.where(x < prev_value, x / dt, rate)  # a drop is a reset: count from 0
        out[f"{m}__rate"] = rate

        # deviation from the window
        for w in DEVIATION_WINDOWS:
            mean, std = stats[w]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{m}__zscore_{w}"] = np.where(std > 0, (x - mean) / std, np.nan)
                out[f"{m}__ratio_{w}"] = np.where(mean != 0, x / mean, np.nan)

        # the same time one lag earlier: the latest sample in (t - lag - 5m, t - lag], at time s;
        # and the window (s - 15m, s] ending at it, against the window (t - 15m, t]
        sw = ROLLING_WINDOWS[SEASONAL_WINDOW].value
        history = data.series(m, t0 - oldest_lag - SEASONAL_TOLERANCE.value - sw, t1 - newest_lag)
        own = np.arange(len(history))  # every history sample is the last one of its own window
        h_first, h_count = _block(history, history, sw, own)
        h_mom = _window_moments(history.values, h_first, h_count, extremes=1)
        h_std = _sample_std(h_mom, h_count)
        mean_now, std_now = stats[SEASONAL_WINDOW]
        for lag, span in LAGS.items():
            at = _locate(rows, history, span.value, "last<=")
            ok = at >= 0
            ok[ok] = history.ts[at[ok]] > rows.ts[ok] - span.value - SEASONAL_TOLERANCE.value
            at = np.where(ok, at, -1)
            out[f"{m}__diff_{lag}"] = x - _at(history.values[0], at)
            out[f"{m}__missing_{lag}"] = ~ok
            out[f"{m}__mean_{SEASONAL_WINDOW}_diff_{lag}"] = mean_now - _at(h_mom["mean"][0], at)
            std_then = _at(h_std, at)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{m}__std_{SEASONAL_WINDOW}_ratio_{lag}"] = np.where(
                    std_then > 0, std_now / std_then, np.nan
                )

    # correlations over the timestamps where both metrics have a sample
    for a, b in pairs:
        joint = _joint(recent[a], recent[b], data.n_hosts)
        last = _locate(rows, joint, 0, "last<=")
        for w in CORR_WINDOWS:
            first, count = _block(rows, joint, ROLLING_WINDOWS[w].value, last)
            mom = _window_moments(joint.values, first, count)
            undefined = (count < 2) | mom["constant"][0] | mom["constant"][1]
            with np.errstate(invalid="ignore", divide="ignore"):
                r = mom["S"][(0, 1)] / np.sqrt(mom["S"][(0, 0)] * mom["S"][(1, 1)])
            out[f"corr__{a}__{b}_{w}"] = np.where(undefined, np.nan, np.clip(r, -1.0, 1.0))

    for num, den in ratios:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{num}_per_{den}"] = np.where(current[den] != 0, current[num] / current[den], np.nan)

    # calendar, UTC; the epoch starts at a UTC midnight on a Thursday (Monday = 0 -> 3)
    day_ns = 86_400 * 1_000_000_000
    since_midnight = np.mod(rows.ts, day_ns) / 1e9
    dow = (np.floor_divide(rows.ts, day_ns) + 3) % 7
    out["hour_sin"] = np.sin(2 * np.pi * since_midnight / 86400)
    out["hour_cos"] = np.cos(2 * np.pi * since_midnight / 86400)
    out["dow_sin"] = np.sin(2 * np.pi * dow / 7)
    out["dow_cos"] = np.cos(2 * np.pi * dow / 7)
    out["is_weekend"] = dow >= 5

    names = feature_names(kinds, pairs, ratios)
    forgotten = sorted(set(names) ^ set(out))
    if forgotten:
        raise AssertionError(f"reference and feature_names() disagree on: {forgotten}")
    columns = {
        "host": np.asarray(data.hosts, dtype=object)[rows.hc] if n else np.empty(0, dtype=object),
        "ts": pd.to_datetime(rows.ts, utc=True),
    }
    return pd.DataFrame({**columns, **{name: out[name] for name in names}}, copy=False)
