"""The simulated fleet: determinism, the interval-split property, kinds and realism."""

from __future__ import annotations

import itertools
import re
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomaly.metrics import DEFAULT_METRIC_NAMES, DEFAULT_METRICS
from anomaly.simulate import ROLES, SimBlock, make_fleet, simulate, simulate_arrays, time_grid
from anomaly.sources.base import CANONICAL_COLUMNS

MONDAY = datetime(2025, 1, 6, tzinfo=UTC)
SEEDS = (0, 1, 2, 7, 42, 2024, 123456789, -3)


def _wide(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """host -> frame indexed by ts with one column per metric."""
    out = {}
    for host, g in df.groupby("host"):
        out[host] = g.pivot(index="ts", columns="metric", values="value")
    return out


def _assert_bitwise(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert np.array_equal(a["value"].to_numpy().view(np.uint64), b["value"].to_numpy().view(np.uint64))


# ------------------------------------------------------------------------- fleet


def test_fleet_is_deterministic_unique_and_prefix_stable() -> None:
    fleet = make_fleet(40, seed=11)
    assert fleet == make_fleet(40, seed=11)
    assert make_fleet(25, seed=11) == fleet[:25]  # growing the fleet keeps existing hosts
    assert make_fleet(40, seed=12) != fleet
    names = [h.name for h in fleet]
    assert len(set(names)) == len(names)
    for h in fleet:
        assert re.fullmatch(rf"{h.role}-{h.environment}-\d{{2,}}", h.name)
        assert h.cpus >= 1 and h.mem_bytes > 0 and h.disk_bytes > 0 and h.swap_bytes > 0
    assert {h.role for h in fleet[:4]} == set(ROLES)
    assert {h.environment for h in fleet} == {"dev", "staging", "prod"}


@pytest.mark.parametrize("seed", SEEDS)
def test_every_fleet_of_four_covers_all_roles(seed: int) -> None:
    assert {h.role for h in make_fleet(4, seed)} == set(ROLES)


# ------------------------------------------------------------- layout and determinism


def test_layout_grid_and_dtypes() -> None:
    fleet = make_fleet(3, 7)
    start = MONDAY + timedelta(seconds=17, microseconds=5)
    end = MONDAY + timedelta(minutes=30, seconds=1)
    df = simulate(fleet, start, end, step_seconds=60, seed=7)
    assert df.columns.tolist() == list(CANONICAL_COLUMNS)
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"
    assert df["value"].dtype == np.float64
    ts = df["ts"].drop_duplicates()
    assert len(ts) == 30  # 00:01 .. 00:30
    assert ((ts.astype("int64") // 1_000_000) % 60 == 0).all()
    assert ts.min() >= start and ts.max() < end
    assert len(df) == 30 * 3 * len(DEFAULT_METRIC_NAMES)
    assert set(df["metric"]) == set(DEFAULT_METRIC_NAMES)
    assert not df.duplicated(["ts", "host", "metric"]).any()
    assert df["ts"].is_monotonic_increasing


def test_interval_without_grid_points_is_empty() -> None:
    df = simulate(make_fleet(2, 7), MONDAY + timedelta(seconds=1), MONDAY + timedelta(seconds=59), 60, 7)
    assert df.empty and df.columns.tolist() == list(CANONICAL_COLUMNS)


def test_naive_or_inverted_bounds_are_rejected() -> None:
    with pytest.raises(ValueError):
        simulate(make_fleet(1, 7), datetime(2025, 1, 1), datetime(2025, 1, 2), 60, 7)
    with pytest.raises(ValueError):
        simulate(make_fleet(1, 7), MONDAY, MONDAY, 60, 7)


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    fleet = make_fleet(5, 3)
    end = MONDAY + timedelta(hours=2)
    a = simulate(fleet, MONDAY, end, 60, seed=3)
    _assert_bitwise(a, simulate(fleet, MONDAY, end, 60, seed=3))
    b = simulate(fleet, MONDAY, end, 60, seed=4)
    assert (a["value"] != b["value"]).mean() > 0.9


def test_values_do_not_depend_on_the_rest_of_the_fleet() -> None:
    fleet = make_fleet(6, 5)
    end = MONDAY + timedelta(hours=1)
    whole = simulate(fleet, MONDAY, end, 60, 5)
    alone = simulate(fleet[4:5], MONDAY, end, 60, 5)
    _assert_bitwise(whole[whole["host"] == fleet[4].name].reset_index(drop=True), alone)


def test_same_timestamp_same_value_across_step_sizes() -> None:
    fleet = make_fleet(3, 9)
    end = MONDAY + timedelta(hours=1)
    fine = simulate(fleet, MONDAY, end, 60, 9)
    coarse = simulate(fleet, MONDAY, end, 300, 9)
    merged = coarse.merge(fine, on=["ts", "host", "metric"], suffixes=("_c", "_f"))
    assert len(merged) == len(coarse)
    assert np.array_equal(merged["value_c"].to_numpy(), merged["value_f"].to_numpy())


# ---------------------------------------------------------------- interval splits

_FLEET = make_fleet(4, 21)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=-(2**40), max_value=2**63),
    start_s=st.integers(min_value=0, max_value=3 * 86_400),
    length_s=st.integers(min_value=601, max_value=12 * 3600),
    cuts=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=3),
    step=st.sampled_from([15, 60, 300]),
)
def test_split_intervals_concatenate_to_the_whole_bitwise(
    seed: int, start_s: int, length_s: int, cuts: list[float], step: int
) -> None:
    a = MONDAY + timedelta(seconds=start_s, microseconds=start_s % 7)
    c = a + timedelta(seconds=length_s)
    grid = time_grid(a, c, step)
    # Split points on the grid, strictly inside (a, c).
    inner = sorted({int(grid[int(x * (len(grid) - 1))]) for x in cuts} - {int(grid[0])})
    bounds = [a, *(datetime.fromtimestamp(b, UTC) for b in inner), c]
    parts = [simulate(_FLEET, lo, hi, step, seed) for lo, hi in itertools.pairwise(bounds)]
    whole = simulate(_FLEET, a, c, step, seed)
    _assert_bitwise(pd.concat([p for p in parts if len(p)], ignore_index=True), whole)


def test_split_at_every_hour_of_a_day() -> None:
    fleet = make_fleet(8, 77)
    whole = simulate(fleet, MONDAY, MONDAY + timedelta(days=1), 60, 77)
    hours = [
        simulate(fleet, MONDAY + timedelta(hours=h), MONDAY + timedelta(hours=h + 1), 60, 77)
        for h in range(24)
    ]
    _assert_bitwise(pd.concat(hours, ignore_index=True), whole)


# ----------------------------------------------------------------------- realism


@pytest.fixture(scope="module", params=SEEDS)
def day(request: pytest.FixtureRequest) -> tuple[list, dict[str, pd.DataFrame]]:
    """A full weekday of a 16-host fleet (every role and environment) for several seeds."""
    seed = request.param
    fleet = make_fleet(16, seed)
    return fleet, _wide(simulate(fleet, MONDAY + timedelta(days=2), MONDAY + timedelta(days=3), 60, seed))


def test_kinds_are_respected(day) -> None:
    _, wide = day
    kinds = {m.name: m.kind for m in DEFAULT_METRICS}
    for frame in wide.values():
        assert np.isfinite(frame.to_numpy()).all()
        assert (frame >= 0).all().all()
        for metric in frame.columns:
            if kinds[metric] == "ratio":
                assert frame[metric].max() <= 1.0
        for metric in ("tcp_established", "procs_running"):
            assert (frame[metric] == np.round(frame[metric])).all()  # counts are whole numbers


def test_load_follows_cpu_times_cores(day) -> None:
    fleet, wide = day
    for h in fleet:
        f = wide[h.name]
        assert f["cpu_util"].corr(f["load1"]) > 0.8, h
        # Below saturation load is the busy cores, within a few percent.
        calm = f["cpu_util"] < 0.7
        ratio = f.loc[calm, "load1"] / (h.cpus * f.loc[calm, "cpu_util"])
        assert ratio.between(0.85, 1.15).all(), h


def test_network_out_follows_in_and_packets_follow_bytes(day) -> None:
    fleet, wide = day
    for h in fleet:
        f = wide[h.name]
        assert f["net_in_bytes"].corr(f["net_out_bytes"]) > 0.7, h
        assert f["net_in_bytes"].corr(f["net_in_packets"]) > 0.9, h
        assert f["net_out_bytes"].corr(f["net_out_packets"]) > 0.9, h
        if h.role == "web":  # small requests, large responses
            assert (f["net_out_bytes"].mean()) > f["net_in_bytes"].mean(), h


def test_swap_moves_only_under_memory_pressure(day) -> None:
    fleet, wide = day
    for h in fleet:
        f = wide[h.name]
        low = f.loc[f["mem_util"] < 0.85, "swap_util"]
        if len(low):
            assert low.nunique() == 1, h  # flat: old swapped-out pages, nothing new
            assert (f["swap_util"] >= low.iloc[0]).all(), h


def test_procs_and_connections_follow_demand(day) -> None:
    fleet, wide = day
    for h in fleet:
        f = wide[h.name]
        assert (f["procs_running"] >= 1).all(), h
        if h.environment == "prod":
            # Runnable counts are Poisson-noisy samples; their hourly means track cpu.
            hourly = f[["cpu_util", "procs_running"]].groupby(f.index.floor("h")).mean()
            assert hourly["cpu_util"].corr(hourly["procs_running"]) > 0.6, h
        if h.role == "web" and h.environment == "prod":
            assert f["net_in_bytes"].corr(f["tcp_established"]) > 0.7, h


def _by_local_hour(h, series: pd.Series) -> pd.Series:
    local = series.index + pd.Timedelta(hours=h.utc_offset_hours)
    return series.groupby(local.hour).mean()


def test_daily_seasonality_web_by_day_batch_by_night(day) -> None:
    fleet, wide = day
    for h in fleet:
        hourly = _by_local_hour(h, wide[h.name]["cpu_util"])
        if h.role == "web":
            assert hourly.loc[13:15].mean() > 1.5 * hourly.loc[2:4].mean(), h
        if h.role == "batch":
            assert hourly.loc[2:4].mean() > 1.5 * hourly.loc[13:15].mean(), h


def test_disk_fills_through_the_local_day() -> None:
    for seed in SEEDS:
        fleet = make_fleet(8, seed)
        wide = _wide(simulate(fleet, MONDAY, MONDAY + timedelta(days=2), 300, seed))
        for h in fleet:
            disk = wide[h.name]["disk_util"]
            local = disk.index + pd.Timedelta(hours=h.utc_offset_hours)
            by_day_hour = disk.groupby([local.date, local.hour]).mean().unstack()
            complete = by_day_hour.dropna(subset=[1, 22])
            assert len(complete) >= 1
            assert (complete[22] > complete[1]).all(), h  # same local day: usage only grows


def test_weekend_is_quieter_for_web() -> None:
    fleet = [h for h in make_fleet(12, 5) if h.role == "web" and h.environment == "prod"]
    week = _wide(simulate(fleet, MONDAY, MONDAY + timedelta(days=7), 600, 5))
    for h in fleet:
        cpu = week[h.name]["cpu_util"]
        local = cpu.index + pd.Timedelta(hours=h.utc_offset_hours)
        weekday = cpu[(local.day_of_week == 2) & (local.hour >= 12) & (local.hour < 16)].mean()
        weekend = cpu[(local.day_of_week == 6) & (local.hour >= 12) & (local.hour < 16)].mean()
        assert weekend < weekday, h


# --------------------------------------------------------------------- modifiers


def test_modifiers_run_after_the_baseline_in_order() -> None:
    fleet = make_fleet(3, 7)
    end = MONDAY + timedelta(hours=1)
    seen: list[str] = []

    def spike(block: SimBlock) -> None:
        seen.append("spike")
        assert block.values["cpu_util"].shape == (3, block.t.size)
        block.values["cpu_util"][1, block.t % 600 == 0] = 5.0  # out of range on purpose

    def mark(block: SimBlock) -> None:
        seen.append("mark")

    base = simulate_arrays(fleet, MONDAY, end, 60, 7)
    out = simulate(fleet, MONDAY, end, 60, 7, modifiers=[spike, mark])
    assert seen == ["spike", "mark"]
    cpu = out[(out["host"] == fleet[1].name) & (out["metric"] == "cpu_util")]
    assert (cpu["value"] == 5.0).sum() == 6  # passed through unclipped for ingest checks to see
    other = out[out["host"] != fleet[1].name]
    assert np.isin(other["value"], np.concatenate([v.ravel() for v in base.values.values()])).all()


# -------------------------------------------------------------------------- speed


def test_hundred_hosts_one_day_is_fast() -> None:
    fleet = make_fleet(100, 7)
    simulate(fleet, MONDAY, MONDAY + timedelta(hours=1), 60, 7)  # warm up imports and SIMD paths
    t0 = time.perf_counter()
    df = simulate(fleet, MONDAY, MONDAY + timedelta(days=1), 60, 7)
    elapsed = time.perf_counter() - t0
    assert len(df) == 100 * 15 * 1440
    assert elapsed < 5.0, elapsed


# ------------------------------------------------------------------------ source


def test_simulation_source_wraps_simulate() -> None:
    from anomaly.settings import Settings
    from anomaly.sources import Source
    from anomaly.sources.simulation import SimulationSource

    src = SimulationSource.from_settings(Settings(sim_hosts=5, sim_seed=3, step_seconds=300))
    assert isinstance(src, Source) and src.name == "simulation"
    assert (src.n_hosts, src.seed, src.step_seconds) == (5, 3, 300)
    end = MONDAY + timedelta(hours=2)
    _assert_bitwise(src.fetch(MONDAY, end), simulate(make_fleet(5, 3), MONDAY, end, 300, 3))
    hosts = src.hosts()
    assert hosts.columns.tolist() == ["host", "role", "environment"]
    assert hosts["host"].tolist() == [h.name for h in make_fleet(5, 3)]
    assert set(hosts["role"]) == set(ROLES)
    with pytest.raises(ValueError):
        src.fetch(datetime(2025, 1, 1), datetime(2025, 1, 2))
