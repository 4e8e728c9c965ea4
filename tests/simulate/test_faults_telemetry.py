"""Telemetry and behaviour faults: reboots, gaps, flatlines, skewed clocks, shifts, flapping, breaks, cascades."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from anomaly.metrics import DEFAULT_METRIC_NAMES, DEFAULT_METRICS
from anomaly.simulate import Host, SimBlock, make_fleet, simulate, simulate_arrays
from anomaly.simulate.faults import REGISTRY, Fault, inject

KIND = {m.name: m.kind for m in DEFAULT_METRICS}
DAY = datetime(2025, 3, 5, tzinfo=UTC)  # a Wednesday
SEEDS = (1, 8, 21)
STEP = 60
OURS = {
    "telemetry": ("host_reboot", "scrape_gap", "stuck_metric", "clock_skew"),
    "behaviour": ("level_shift", "variance_change", "seasonal_break", "cascade"),
}
TYPES = [*OURS["telemetry"], *OURS["behaviour"]]
ROLES = ("web", "database", "batch", "cache")


def _peak_window(host: Host, hours: float = 5.0) -> tuple[datetime, datetime]:
    """A window over the host's daily peak: 14:00 local for users, 03:00 local for batch runs."""
    peak = 3 if host.role == "batch" else 14
    start = DAY + timedelta(hours=peak - hours / 2 - host.utc_offset_hours)
    return start, start + timedelta(hours=hours)


def _run(
    kind: str,
    seed: int,
    role: str = "web",
    *,
    severity: float = 0.5,
    ramp: str = "step",
    params: dict[str, float] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> tuple[list[Host], Fault, SimBlock, SimBlock, int, np.ndarray]:
    fleet = make_fleet(8, seed)
    row = next(i for i, h in enumerate(fleet) if h.role == role)
    start, end = window or _peak_window(fleet[row])
    fault = Fault(kind, fleet[row].name, start, end, severity=severity, ramp=ramp, params=params or {})
    a, b = start - timedelta(hours=1), end + timedelta(hours=1)
    base = simulate_arrays(fleet, a, b, STEP, seed)
    mod = simulate_arrays(fleet, a, b, STEP, seed, modifiers=[inject([fault])])
    inside = (base.t >= start.timestamp()) & (base.t < end.timestamp())
    return fleet, fault, base, mod, row, inside


# ------------------------------------------------------------------- generic, per type


def test_types_are_registered_in_their_families() -> None:
    for family, kinds in OURS.items():
        for kind in kinds:
            assert REGISTRY[kind].family == family
            assert len(REGISTRY[kind].description) > 200, f"{kind}: describe the physical meaning"
            assert "Params" in REGISTRY[kind].description


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", TYPES)
def test_declared_effects_hold_at_medium_severity_on_every_role(kind: str, role: str) -> None:
    for seed in SEEDS:
        _, _, base, mod, row, inside = _run(kind, seed, role, severity=0.5)
        for metric, effect in REGISTRY[kind].effects.items():
            before, after = base.values[metric][row], mod.values[metric][row]
            b, a = before[inside], after[inside]
            msg = f"{kind} on {role} (seed {seed}): {metric} should be {effect}"
            if effect == "missing":
                assert np.isnan(a).all(), msg
            elif effect == "flat":
                assert np.nanmax(a) == np.nanmin(a), msg
            elif effect == "noisier":
                assert np.std(np.diff(a)) > 1.5 * np.std(np.diff(b)), msg
            elif effect == "changed":
                assert not np.array_equal(a, b, equal_nan=True), msg
            else:
                sign = 1.0 if effect == "up" else -1.0
                delta = sign * (np.nanmean(a) - np.nanmean(b))
                # beyond one sample's noise (from differences: seasonality excluded), sustained over
                # hours, and beyond a third of the whole span's spread (seasonality included)
                noise = np.std(np.diff(before)) / np.sqrt(2.0) + 1e-12
                assert delta > 1.2 * noise and delta > 0.3 * np.std(before), f"{msg}: moved {delta:+.4g}"


@pytest.mark.parametrize("kind", TYPES)
def test_only_declared_metrics_of_the_host_change_inside_the_window(kind: str) -> None:
    for seed in SEEDS:
        _, fault, base, mod, row, inside = _run(kind, seed, ROLES[seed % 4], severity=0.8, ramp="linear")
        for metric in DEFAULT_METRIC_NAMES:
            before, after = base.values[metric], mod.values[metric]
            others = np.arange(before.shape[0]) != row
            assert np.array_equal(after[others], before[others]), f"{kind}: another host's {metric}"
            assert np.array_equal(after[row, ~inside], before[row, ~inside]), f"{kind}: {metric} outside"
            if metric not in fault.affected_metrics:
                assert np.array_equal(after[row], before[row]), f"{kind}: undeclared {metric}"


@pytest.mark.parametrize("kind", TYPES)
def test_values_stay_physical(kind: str) -> None:
    for seed in SEEDS:
        for severity in (0.3, 1.0):
            _, _, _, mod, row, _ = _run(kind, seed, ROLES[seed % 4], severity=severity)
            for metric, values in mod.values.items():
                v = values[row][~np.isnan(values[row])]
                assert np.isfinite(v).all() and (v >= 0).all(), f"{kind}: {metric}"
                if KIND[metric] == "ratio":
                    assert (v <= 1).all(), f"{kind}: {metric} above 1"
                if metric in ("tcp_established", "procs_running"):
                    assert np.array_equal(v, np.rint(v)), f"{kind}: {metric} not a count"


@pytest.mark.parametrize("kind", TYPES)
def test_split_anywhere_in_the_window_is_bitwise_identical(kind: str) -> None:
    for seed in SEEDS:
        fleet = make_fleet(8, seed)
        host = next(h for h in fleet if h.role == ROLES[(seed + 1) % 4])
        start, end = _peak_window(host)
        # an off-grid start, so the first step of the window is not the fault's start second
        fault = Fault(kind, host.name, start + timedelta(seconds=20), end, severity=0.7, ramp="sigmoid")
        a, c = start - timedelta(minutes=50), end + timedelta(minutes=40)
        whole = simulate_arrays(fleet, a, c, STEP, seed, modifiers=[inject([fault])])
        for b in (start + timedelta(minutes=3, seconds=5), start + timedelta(hours=2, minutes=41)):
            left = simulate_arrays(fleet, a, b, STEP, seed, modifiers=[inject([fault])])
            right = simulate_arrays(fleet, b, c, STEP, seed, modifiers=[inject([fault])])
            for metric, x in whole.values.items():
                joined = np.concatenate([left.values[metric], right.values[metric]], axis=1)
                assert np.array_equal(joined.view(np.uint64), x.view(np.uint64)), f"{kind}: {metric} at {b}"
            assert sorted({*left.resets.get(host.name, []), *right.resets.get(host.name, [])}) == sorted(
                whole.resets.get(host.name, [])
            )


# ----------------------------------------------------------------------------- telemetry


@pytest.mark.parametrize("seed", SEEDS)
def test_host_reboot_gap_then_cold_start(seed: int) -> None:
    fleet, fault, base, mod, row, inside = _run("host_reboot", seed, "database", severity=0.8)
    host = fleet[row]
    t, start = base.t, int(fault.start.timestamp())
    boot = start + 5 * 60
    down = inside & (t < boot)
    assert down.sum() == 5
    for metric in DEFAULT_METRIC_NAMES:
        assert np.isnan(mod.values[metric][row, down]).all(), metric
        assert not np.isnan(mod.values[metric][row, inside & ~down]).any(), metric
    assert mod.resets == {host.name: [boot]}
    assert base.resets == {}

    first = int(np.flatnonzero(t == boot)[0])
    v, b = mod.values, base.values
    # caches and heaps start empty and refill: low at boot, the deficit shrinks toward the end
    deficit = b["mem_util"][row] - v["mem_util"][row]
    assert deficit[first] > 0.5 * 0.8 * (b["mem_util"][row, first] - 0.08)
    assert deficit[first] > 4 * deficit[inside][-1] >= 0
    assert np.all(np.diff(deficit[first : first + 30]) < 0.01)
    # clients reconnect: few connections at boot, most back within the hour
    assert v["tcp_established"][row, first] <= 0.3 * b["tcp_established"][row, first]
    assert v["tcp_established"][row, first + 60] >= 0.95 * b["tcp_established"][row, first + 60]
    assert v["net_in_bytes"][row, first] < 0.3 * b["net_in_bytes"][row, first]
    # the init storm: runnable processes and CPU spike at boot, then settle
    assert v["procs_running"][row, first] >= b["procs_running"][row, first] + host.cpus
    assert v["cpu_util"][row, first] > 0.7
    assert v["load1"][row, first] > b["load1"][row, first] + host.cpus
    assert v["procs_running"][row, first + 30] == b["procs_running"][row, first + 30]
    assert v["disk_read_bytes"][row, first] > b["disk_read_bytes"][row, first] + 10e6
    assert v["swap_util"][row, first] < b["swap_util"][row, first] or b["swap_util"][row, first] == 0


def test_host_reboot_records_one_reset_per_block_and_clamps_the_outage() -> None:
    fleet = make_fleet(8, 3)
    host = fleet[2]
    start = DAY + timedelta(hours=10)
    fault = Fault("host_reboot", host.name, start, start + timedelta(hours=1), params={"outage_minutes": 90})
    block = simulate_arrays(fleet, DAY + timedelta(hours=9), DAY + timedelta(hours=12), STEP, 3)
    modify = inject([fault])
    modify(block)
    modify(block)  # applied again (e.g. listed twice): still one reboot
    end_s = int((start + timedelta(hours=1)).timestamp())
    assert block.resets == {host.name: [end_s]}  # down for the whole window: it boots at its end
    inside = (block.t >= start.timestamp()) & (block.t < end_s)
    assert np.isnan(block.values["cpu_util"][2, inside]).all()
    assert not np.isnan(block.values["cpu_util"][2, ~inside]).any()

    # a second reboot of the same host later on is a second reset, kept in order
    later = Fault("host_reboot", host.name, start - timedelta(minutes=40), start - timedelta(minutes=10))
    inject([later])(block)
    assert block.resets[host.name] == [int(later.start.timestamp()) + 300, end_s]


def test_scrape_gap_drops_every_row_of_the_host_in_the_window() -> None:
    fleet = make_fleet(8, 8)
    host = fleet[5]
    start = DAY + timedelta(hours=6, minutes=30)
    fault = Fault("scrape_gap", host.name, start, start + timedelta(minutes=45), severity=0.2)
    a, b = DAY + timedelta(hours=6), DAY + timedelta(hours=8)
    df = simulate(fleet, a, b, STEP, 8, modifiers=[inject([fault])])
    clean = simulate(fleet, a, b, STEP, 8)
    gap = (df["host"] == host.name) & (df["ts"] >= start) & (df["ts"] < fault.end)
    assert not gap.any()
    assert len(clean) - len(df) == 45 * len(DEFAULT_METRIC_NAMES)
    # only some metrics: the others keep their samples
    partial = Fault("scrape_gap", host.name, start, fault.end, metrics=("disk_util", "swap_util"))
    df = simulate(fleet, a, b, STEP, 8, modifiers=[inject([partial])])
    assert len(clean) - len(df) == 45 * 2
    assert set(df.loc[(df["host"] == host.name) & (df["ts"] == start), "metric"]) == set(
        DEFAULT_METRIC_NAMES
    ) - {
        "disk_util",
        "swap_util",
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_stuck_metric_holds_the_value_of_the_first_sample(seed: int) -> None:
    fleet = make_fleet(8, seed)
    row = 1
    start = DAY + timedelta(hours=13, minutes=7, seconds=30)  # off-grid: the first sample is 13:08
    fault = Fault("stuck_metric", fleet[row].name, start, start + timedelta(hours=2))
    base = simulate_arrays(fleet, DAY + timedelta(hours=12), DAY + timedelta(hours=16), STEP, seed)
    # the freeze starts in the middle of this block: its first sample is not in it
    late = simulate_arrays(
        fleet,
        start + timedelta(minutes=20),
        DAY + timedelta(hours=16),
        STEP,
        seed,
        modifiers=[inject([fault])],
    )
    first = int(np.flatnonzero(base.t >= start.timestamp())[0])
    assert base.t[first] == int((DAY + timedelta(hours=13, minutes=8)).timestamp())
    inside = (late.t >= start.timestamp()) & (late.t < fault.end.timestamp())
    for metric in ("cpu_util", "mem_util"):
        stuck = late.values[metric][row, inside]
        assert (stuck == base.values[metric][row, first]).all(), metric
        assert np.std(base.values[metric][row, first : first + inside.sum()]) > 0  # the real one moves


@pytest.mark.parametrize("seed", SEEDS)
def test_clock_skew_replays_the_host_lag_seconds_late(seed: int) -> None:
    _, fault, base, mod, row, inside = _run("clock_skew", seed, "cache", params={"lag_seconds": 900})
    idx = np.flatnonzero(inside)
    for metric in fault.affected_metrics:
        np.testing.assert_array_equal(
            mod.values[metric][row, idx], base.values[metric][row, idx - 15], metric
        )
    # a lag that is not a multiple of the step, and a clock drifting away (linear ramp)
    fleet, fault, base, mod, row, inside = _run(
        "clock_skew", seed, "web", ramp="linear", params={"lag_seconds": 90}, severity=0.3
    )
    idx = np.flatnonzero(inside)
    x = (base.t[idx] - int(fault.start.timestamp())) / (fault.end - fault.start).total_seconds()
    lag = np.rint(90 * x).astype(np.int64)
    assert lag[0] == 0 and lag[-1] == 90 and len(set(lag % 60)) > 10
    fine = simulate_arrays([fleet[row]], fault.start - timedelta(minutes=5), fault.end, 1, seed)
    pos = np.searchsorted(fine.t, base.t[idx] - lag)
    for metric in ("cpu_util", "net_in_bytes", "procs_running"):
        np.testing.assert_array_equal(mod.values[metric][row, idx], fine.values[metric][0, pos], metric)


# ----------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("seed", SEEDS)
def test_level_shift_moves_the_level_not_the_noise(seed: int) -> None:
    _, _, base, mod, row, inside = _run("level_shift", seed, "web", severity=0.5)
    cpu0, cpu1 = base.values["cpu_util"][row, inside], mod.values["cpu_util"][row, inside]
    free = cpu0 + 0.15 < 0.999
    np.testing.assert_allclose((cpu1 - cpu0)[free], 0.15, atol=1e-12)  # shift 0.3 at severity 1
    mem0, mem1 = base.values["mem_util"][row, inside], mod.values["mem_util"][row, inside]
    assert np.allclose(mem1 - mem0, 0.15) or (mem1 == 0.995).any()
    assert np.std(np.diff(cpu1[free])) < 1.1 * np.std(np.diff(cpu0[free]))  # same noise, higher level
    load0, load1 = base.values["load1"][row, inside], mod.values["load1"][row, inside]
    assert np.corrcoef(load1 - load0, cpu1 - cpu0)[0, 1] > 0.9 or np.ptp(cpu1 - cpu0) < 1e-9
    # a linear ramp: the shift grows through the window
    _, _, base, mod, row, inside = _run("level_shift", seed, "database", severity=1.0, ramp="linear")
    shift = (mod.values["cpu_util"] - base.values["cpu_util"])[row, inside]
    assert shift[0] == 0 and shift[-1] > 0.25 and np.all(np.diff(shift) >= -1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_variance_change_flaps_cpu_and_load_together_around_the_level(seed: int) -> None:
    _, _, base, mod, row, inside = _run("variance_change", seed, "database", severity=0.5)
    cpu0, cpu1 = base.values["cpu_util"][row, inside], mod.values["cpu_util"][row, inside]
    assert np.std(np.diff(cpu1)) > 3 * np.std(np.diff(cpu0))
    assert abs(np.mean(cpu1) - np.mean(cpu0)) < 0.03  # noisier, not higher
    d_load = (mod.values["load1"] - base.values["load1"])[row, inside]
    assert np.corrcoef(d_load, cpu1 - cpu0)[0, 1] > 0.85
    # severity scales the jitter
    _, _, base, mod, row, inside = _run("variance_change", seed, "database", severity=1.0)
    strong = np.std((mod.values["cpu_util"] - base.values["cpu_util"])[row, inside])
    assert strong > 1.6 * np.std(cpu1 - cpu0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("role", ("web", "batch"))
def test_seasonal_break_flattens_the_peak_to_the_trough(seed: int, role: str) -> None:
    fleet, _, base, mod, row, inside = _run("seasonal_break", seed, role, severity=1.0)
    host = fleet[row]
    # the host's quietest hourly level of that local day (the window is near its middle or start)
    midnight = DAY - timedelta(hours=host.utc_offset_hours)
    day = simulate_arrays([host], midnight, midnight + timedelta(days=1), 60, seed)
    for metric in ("cpu_util", "net_in_bytes", "tcp_established"):
        peak = base.values[metric][row, inside].mean()
        broken = mod.values[metric][row, inside].mean()
        trough = day.values[metric][0].reshape(-1, 60).mean(axis=1).min()
        assert broken < peak - 0.6 * (peak - trough), metric
        assert broken < 1.5 * trough, metric
    # the relative noise is the host's own: the ratio to the clean series is smooth
    ratio = mod.values["net_in_bytes"][row, inside] / base.values["net_in_bytes"][row, inside]
    assert np.std(np.diff(ratio)) < 0.05 * np.mean(ratio)


def test_seasonal_break_over_the_trough_changes_little() -> None:
    fleet = make_fleet(8, 1)
    row = next(i for i, h in enumerate(fleet) if h.role == "web")
    quiet = DAY + timedelta(hours=1 - fleet[row].utc_offset_hours)  # 01:00-03:00 local
    _, _, base, mod, row, inside = _run(
        "seasonal_break", 1, "web", severity=1.0, window=(quiet, quiet + timedelta(hours=2))
    )
    before, after = base.values["cpu_util"][row, inside], mod.values["cpu_util"][row, inside]
    assert abs(after.mean() / before.mean() - 1.0) < 0.15


@pytest.mark.parametrize("seed", SEEDS)
def test_cascade_spreads_over_a_role_with_staggered_starts(seed: int) -> None:
    fleet = make_fleet(8, seed)
    roles = [h.role for h in fleet]
    role = max(ROLES, key=roles.count)
    web = [i for i, h in enumerate(fleet) if h.role == role]
    assert len(web) >= 2
    start = DAY + timedelta(hours=14)
    faults = [
        Fault(
            "cascade",
            fleet[i].name,
            start + timedelta(minutes=20 * k),
            start + timedelta(hours=2),
            0.6,
            "sigmoid",
            group="cascade-1",
        )
        for k, i in enumerate(web)
    ]
    a, b = start - timedelta(minutes=30), start + timedelta(hours=2, minutes=30)
    base = simulate_arrays(fleet, a, b, STEP, seed)
    mod = simulate_arrays(fleet, a, b, STEP, seed, modifiers=[inject(faults)])
    onsets = []
    for f, i in zip(faults, web, strict=True):
        inside = (base.t >= f.start.timestamp()) & (base.t < f.end.timestamp())
        d = {m: mod.values[m][i] - base.values[m][i] for m in DEFAULT_METRIC_NAMES}
        assert np.all(d["cpu_util"][~inside] == 0)
        late = inside & (base.t >= f.start.timestamp() + 0.5 * (f.end - f.start).total_seconds())
        assert d["cpu_util"][late].mean() > 0.3 * (0.97 - base.values["cpu_util"][i, late].mean())
        assert (d["load1"][late] >= 0).all() and d["load1"][late].mean() > 0.2 * fleet[i].cpus * d[
            "cpu_util"
        ][late].mean()
        assert (d["tcp_established"][late] > 0).mean() > 0.9
        assert (
            mod.values["tcp_retransmits"][i, late].mean() > 2 * base.values["tcp_retransmits"][i, late].mean()
        )
        out = mod.values["net_out_bytes"][i, late] / base.values["net_out_bytes"][i, late]
        pk = mod.values["net_out_packets"][i, late] / base.values["net_out_packets"][i, late]
        assert 0.6 < out.mean() < 0.9 and np.allclose(out, pk)
        assert np.array_equal(mod.values["net_in_bytes"][i], base.values["net_in_bytes"][i])
        onsets.append(int(np.flatnonzero(d["cpu_util"] > 0.02)[0]))
    assert onsets == sorted(onsets) and len(set(onsets)) == len(onsets)  # spreads host after host
    untouched = [i for i in range(len(fleet)) if i not in web]
    for m in DEFAULT_METRIC_NAMES:
        assert np.array_equal(mod.values[m][untouched], base.values[m][untouched])


def test_replace_metrics_limits_the_fault() -> None:
    fleet = make_fleet(8, 8)
    start, end = _peak_window(fleet[0])
    base = simulate_arrays(fleet, start, end, STEP, 8)
    for kind in TYPES:
        fault = Fault(kind, fleet[0].name, start, end, severity=0.9)
        only = replace(fault, metrics=("cpu_util",))
        mod = simulate_arrays(fleet, start, end, STEP, 8, modifiers=[inject([only])])
        for m in DEFAULT_METRIC_NAMES:
            if m != "cpu_util":
                assert np.array_equal(mod.values[m], base.values[m]), f"{kind}: {m}"


@pytest.mark.parametrize("kind", TYPES)
def test_works_on_a_block_of_stored_real_series(kind: str) -> None:
    """Injection into real data: no re-simulation, values come from the block's original series."""
    sim = simulate_arrays(make_fleet(2, 4), DAY + timedelta(hours=8), DAY + timedelta(hours=20), STEP, 4)
    real = Host(
        "db-1", "unknown", "unknown", cpus=4, mem_bytes=16 << 30, disk_bytes=500 * 10**9, swap_bytes=4 << 30
    )
    rng = np.random.default_rng(0)
    values = {m: x[:1].copy() for m, x in sim.values.items() if m != "disk_io_time"}  # a metric it lacks
    values["cpu_util"][0, rng.random(sim.t.size) < 0.05] = np.nan  # and a few missed scrapes
    block = SimBlock((real,), sim.t, STEP, 4, values, original={m: v.copy() for m, v in values.items()})
    start = DAY + timedelta(hours=11)
    fault = Fault(
        kind, real.name, start, start + timedelta(hours=5), severity=0.8, params={"lag_seconds": 1800}
    )
    inject([fault])(block)
    inside = (block.t >= start.timestamp()) & (block.t < fault.end.timestamp())
    assert set(block.values) == set(values)
    changed = False
    for m, x in block.values.items():
        assert np.array_equal(x[0, ~inside], block.original[m][0, ~inside], equal_nan=True), m
        changed |= not np.array_equal(x[0, inside], block.original[m][0, inside], equal_nan=True)
        v = x[~np.isnan(x)]
        assert (v >= 0).all() and (KIND[m] != "ratio" or (v <= 1).all()), m
    assert changed
    if kind == "stuck_metric":
        assert np.unique(block.values["cpu_util"][0, inside]).size == 1
        assert np.isfinite(block.values["cpu_util"][0, inside]).all()
    if kind == "clock_skew":  # the lag reaches before the block only for samples it has
        lagged = block.values["mem_util"][0, inside]
        np.testing.assert_array_equal(lagged, block.original["mem_util"][0, np.flatnonzero(inside) - 30])
