"""Resource faults (CPU, memory, disk space, disk IO): declared effects, isolation, kinds, the
interval-split property, and each type's own shape (saturation levels, sawtooth, fill to full...)."""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly.metrics import DEFAULT_METRIC_NAMES, DEFAULT_METRICS
from anomaly.simulate import SimBlock, make_fleet, simulate, simulate_arrays
from anomaly.simulate.faults import RAMPS, REGISTRY, Fault, inject

RESOURCE_TYPES = (
    "cpu_saturation",
    "runaway_process",
    "noisy_neighbour",
    "memory_leak",
    "oom_sawtooth",
    "swap_thrashing",
    "disk_fill",
    "disk_jump",
    "io_latency_spike",
    "io_saturation",
)
SEEDS = (0, 1, 7)
MONDAY = datetime(2025, 1, 6, tzinfo=UTC)
A = MONDAY + timedelta(hours=9)
C = MONDAY + timedelta(hours=15)
# Off the step grid on purpose: the window's first sample is the first grid point after the start.
START = MONDAY + timedelta(hours=10, seconds=17)
END = START + timedelta(hours=2)
ROLE_ROWS = (0, 1, 2, 3)  # make_fleet: the first four hosts are one prod host of each role
KIND = {m.name: m.kind for m in DEFAULT_METRICS}

# Metrics whose shift must be far beyond the baseline's noise (>= 3 sigma) at severity 0.8; the
# others must move by at least 1 sigma (they are secondary couplings, e.g. load on a noisy batch
# host), except the few whose effect is brief by design and is checked by a dedicated test.
PRIMARY = {
    "cpu_saturation": ("cpu_util", "load1"),
    "runaway_process": ("load1",),
    "noisy_neighbour": ("load1", "disk_io_time"),
    "memory_leak": ("mem_util",),
    "oom_sawtooth": ("mem_util",),
    "swap_thrashing": ("swap_util", "disk_io_time", "load1"),
    "disk_fill": ("disk_util",),
    "disk_jump": ("disk_util",),
    "io_latency_spike": ("disk_io_time", "load1"),
    "io_saturation": ("disk_io_time", "load1"),
}
PINNED = {("cpu_saturation", "cpu_util"), ("io_saturation", "disk_io_time")}
# Brief by design: the OOM kills' dips (declared "changed") and the jump's write burst.
BRIEF = {("oom_sawtooth", "procs_running"), ("disk_jump", "disk_write_bytes")}


@functools.cache
def _fleet(seed: int) -> tuple:
    return tuple(make_fleet(8, seed))


@functools.cache
def _base(seed: int) -> SimBlock:
    return simulate_arrays(_fleet(seed), A, C, seed=seed)


def _fault(kind: str, seed: int, row: int, severity: float = 0.8, **kw) -> Fault:
    return Fault(kind, _fleet(seed)[row].name, kw.pop("start", START), kw.pop("end", END), severity, **kw)


def _run(seed: int, *faults: Fault) -> SimBlock:
    return simulate_arrays(_fleet(seed), A, C, seed=seed, modifiers=[inject(faults)])


def _inside(t: np.ndarray, start: datetime = START, end: datetime = END) -> np.ndarray:
    return (t >= start.timestamp()) & (t < end.timestamp())


def _noise(x: np.ndarray) -> float:
    """Per-sample noise of a baseline: robust spread of first differences (seasonality-free)."""
    d = np.diff(x)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint64)


def _pair(kind: str, seed: int, row: int, metric: str, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(baseline, faulted, elapsed seconds) of ``metric`` on ``row`` inside the window."""
    f = _fault(kind, seed, row, **kw)
    base, out = _base(seed), _run(seed, f)
    ins = _inside(base.t, f.start, f.end)
    return base.values[metric][row, ins], out.values[metric][row, ins], base.t[ins] - f.start.timestamp()


# ---------------------------------------------------------------------------- registry


def test_family_registers_exactly_the_resource_types() -> None:
    mine = sorted(name for name, ft in REGISTRY.items() if ft.family == "resources")
    assert mine == sorted(RESOURCE_TYPES)
    for name in RESOURCE_TYPES:
        ft = REGISTRY[name]
        assert set(ft.effects) == set(ft.metrics)
        assert "Params" in ft.description and len(ft.description) > 200  # physical meaning + params
        assert set(PRIMARY[name]) <= set(ft.metrics)


# ------------------------------------------------- declared effects, isolation and kinds


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", RESOURCE_TYPES)
def test_declared_effects_hold_and_nothing_else_changes(kind: str, seed: int) -> None:
    base = _base(seed)
    ins = _inside(base.t)
    effects = REGISTRY[kind].effects
    for row in ROLE_ROWS:
        out = _run(seed, _fault(kind, seed, row))
        others = np.arange(len(_fleet(seed))) != row
        for metric in DEFAULT_METRIC_NAMES:
            b, o = base.values[metric], out.values[metric]
            # (2) bitwise identical on other hosts, outside the window, and in undeclared metrics
            assert np.array_equal(_bits(b[others]), _bits(o[others])), (kind, metric)
            assert np.array_equal(_bits(b[:, ~ins]), _bits(o[:, ~ins])), (kind, metric)
            if metric not in effects:
                assert np.array_equal(_bits(b), _bits(o)), (kind, metric)
                continue
            # (3) kinds respected, no missing samples
            y0, y1 = b[row, ins], o[row, ins]
            assert not np.isnan(y1).any()
            if KIND[metric] == "ratio":
                assert ((y1 >= 0.0) & (y1 <= 1.0)).all(), (kind, metric)
            else:
                assert (y1 >= 0.0).all(), (kind, metric)
            # (1) the declared direction, sample by sample, and far enough from the noise
            host = _fleet(seed)[row].name
            shift = float(np.mean(y1 - y0))
            if effects[metric] == "changed":  # oom_sawtooth's brief dips: see its own test
                continue
            if effects[metric] == "up":
                assert (y1 >= y0).all(), (kind, metric, host)
            else:
                assert effects[metric] == "down"
                assert (y1 <= y0).all(), (kind, metric, host)
                shift = -shift
            if (kind, metric) in BRIEF:
                continue
            margin = 3.0 if metric in PRIMARY[kind] else 1.0
            assert shift > margin * _noise(y0), (kind, metric, host, shift, _noise(y0))


@pytest.mark.parametrize("kind", RESOURCE_TYPES)
def test_effects_hold_for_every_ramp_and_grow_with_severity(kind: str) -> None:
    seed, row = 7, 3
    base = _base(seed)
    ins = _inside(base.t)
    effects = REGISTRY[kind].effects
    for ramp in RAMPS:
        out = _run(seed, _fault(kind, seed, row, ramp=ramp))
        for metric, effect in effects.items():
            y0, y1 = base.values[metric][row, ins], out.values[metric][row, ins]
            # "down", or "changed": oom_sawtooth's procs_running, which only ever dips
            assert ((y1 >= y0) if effect == "up" else (y1 <= y0)).all(), (kind, ramp, metric)
            assert not np.array_equal(y0, y1) or (kind, metric) in BRIEF, (kind, ramp, metric)
    for metric in PRIMARY[kind]:
        low, high = (
            np.mean(np.abs(y1 - y0))
            for y0, y1, _ in (_pair(kind, seed, row, metric, severity=s) for s in (0.3, 1.0))
        )
        if (kind, metric) in PINNED:
            assert high >= 0.99 * low  # pinned near 100 % either way
        else:
            assert high > 1.1 * low, (kind, metric, low, high)


@pytest.mark.parametrize("kind", RESOURCE_TYPES)
def test_only_the_faults_chosen_metrics_are_written(kind: str) -> None:
    seed, row = 1, 3
    declared = REGISTRY[kind].metrics
    chosen = declared[-1]
    base = _base(seed)
    out = _run(seed, _fault(kind, seed, row, metrics=(chosen,)))
    full = _run(seed, _fault(kind, seed, row))
    for metric in DEFAULT_METRIC_NAMES:
        if metric == chosen:
            # the same values as with every declared metric written (coupled metrics are computed anyway)
            assert np.array_equal(_bits(out.values[metric]), _bits(full.values[metric]))
        else:
            assert np.array_equal(_bits(out.values[metric]), _bits(base.values[metric])), (kind, metric)


@pytest.mark.parametrize("kind", RESOURCE_TYPES)
def test_missing_samples_stay_missing(kind: str) -> None:
    seed, row = 0, 2
    fault = _fault(kind, seed, row)
    gap = _inside(_base(seed).t, START + timedelta(minutes=10), START + timedelta(minutes=20))

    def scrape_gap(block: SimBlock) -> None:
        for metric in DEFAULT_METRIC_NAMES:
            block.values[metric][row, gap] = np.nan

    out = simulate_arrays(_fleet(seed), A, C, seed=seed, modifiers=[scrape_gap, inject([fault])])
    for metric in DEFAULT_METRIC_NAMES:
        assert np.isnan(out.values[metric][row, gap]).all(), (kind, metric)
        assert not np.isnan(np.delete(out.values[metric][row], np.flatnonzero(gap))).any()


# ----------------------------------------------------------------------- interval split


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", RESOURCE_TYPES)
def test_split_anywhere_in_the_window_is_bitwise_identical(kind: str, seed: int) -> None:
    fleet = _fleet(seed)
    faults = [_fault(kind, seed, row, ramp=ramp) for row, ramp in ((1, "step"), (3, "sigmoid"))]
    # cuts inside the onset burst, mid-window off the grid, and just past an OOM kill
    cuts = [
        A,
        START + timedelta(minutes=2),
        START + timedelta(minutes=41, seconds=30),
        START + timedelta(minutes=81),
        C,
    ]
    whole = simulate(fleet, A, C, seed=seed, modifiers=[inject(faults)])
    parts = pd.concat(
        [simulate(fleet, a, b, seed=seed, modifiers=[inject(faults)]) for a, b in itertools.pairwise(cuts)],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(whole, parts, check_exact=True)
    assert np.array_equal(_bits(whole["value"].to_numpy()), _bits(parts["value"].to_numpy()))
    again = simulate(fleet, A, C, seed=seed, modifiers=[inject(faults)])
    pd.testing.assert_frame_equal(whole, again, check_exact=True)


# ------------------------------------------------------------------- CPU, per type


@pytest.mark.parametrize("seed", SEEDS)
def test_cpu_saturation_pins_cpu_and_adds_its_threads_to_load_and_run_queue(seed: int) -> None:
    for row in ROLE_ROWS:
        cpus = _fleet(seed)[row].cpus
        for severity in (0.5, 1.0):
            _, cpu, _ = _pair("cpu_saturation", seed, row, "cpu_util", severity=severity)
            assert cpu.min() >= 0.95 and cpu.max() < 1.0
            threads = (0.6 + 0.9 * severity) * cpus
            l0, l1, _ = _pair("cpu_saturation", seed, row, "load1", severity=severity)
            assert np.mean(l1 - l0) == pytest.approx(threads, rel=0.05)
            p0, p1, _ = _pair("cpu_saturation", seed, row, "procs_running", severity=severity)
            assert np.mean(p1 - p0) == pytest.approx(threads, rel=0.2)
            assert np.array_equal(p1, np.rint(p1))  # a count


@pytest.mark.parametrize("seed", SEEDS)
def test_runaway_process_count_climbs_to_its_cap_and_cpu_follows(seed: int) -> None:
    row = 2  # web host, 4+ cores
    cpus = _fleet(seed)[row].cpus
    cap = (0.5 + 2.5 * 0.8) * cpus
    l0, l1, el = _pair("runaway_process", seed, row, "load1", params={"climb_minutes": 40})
    extra = l1 - l0
    climbing = el < 40 * 60
    # one process at a time: the added load steps up with elapsed time, then plateaus at the cap
    assert np.corrcoef(el[climbing], extra[climbing])[0, 1] > 0.97
    assert np.mean(extra[~climbing]) == pytest.approx(np.floor(cap), rel=0.05)
    assert extra[0] == 0.0  # nothing forked yet at onset
    _, cpu, _ = _pair("runaway_process", seed, row, "cpu_util", params={"climb_minutes": 40})
    assert cpu[~climbing].min() >= 0.95
    p0, p1, _ = _pair("runaway_process", seed, row, "procs_running", params={"climb_minutes": 40})
    assert np.mean(p1[~climbing] - p0[~climbing]) > 0.8 * cap > np.mean(p1[el < 600] - p0[el < 600])


@pytest.mark.parametrize("seed", SEEDS)
def test_noisy_neighbour_steal_explains_both_cpu_and_load(seed: int) -> None:
    for row in ROLE_ROWS:
        c0, c1, _ = _pair("noisy_neighbour", seed, row, "cpu_util")
        l0, l1, _ = _pair("noisy_neighbour", seed, row, "load1")
        # one steal share per sample: idle shrinks by (1 - steal), load grows by 1 / (1 - steal)
        kept = (1.0 - c1) / (1.0 - c0)
        np.testing.assert_allclose(kept, l0 / l1, rtol=1e-9)
        steal = 1.0 - kept
        assert steal.min() > 0.0 and steal.max() <= 0.75 + 1e-12
        assert np.mean(steal) == pytest.approx(0.3 + 0.4 * 0.8, abs=0.08)
        assert np.std(steal) > 0.05  # jittery: the neighbour's bursts
        io0, io1, _ = _pair("noisy_neighbour", seed, row, "disk_io_time")
        assert np.mean(io1 - io0) > 0.2


# ---------------------------------------------------------------- memory, per type


@pytest.mark.parametrize("seed", SEEDS)
def test_memory_leak_ramps_to_near_full_then_spills_to_swap(seed: int) -> None:
    for row in ROLE_ROWS:
        m0, m1, el = _pair("memory_leak", seed, row, "mem_util", severity=0.6, ramp="linear")
        s0, s1, _ = _pair("memory_leak", seed, row, "swap_util", severity=0.6, ramp="linear")
        leak = m1 - m0
        assert np.corrcoef(el, leak)[0, 1] > 0.9  # a slow, steady ramp
        assert leak[0] < 0.01 and m1[-10:].min() > 0.94
        # swap moves only once memory is past ~0.9 (the kernel reclaims first)
        assert np.array_equal(s1[m1 < 0.89], s0[m1 < 0.89])
        assert s1[-1] > s0[-1] + 0.05
        # a step ramp is read as linear: a leak never arrives at once
        _, m_step, _ = _pair("memory_leak", seed, row, "mem_util", severity=0.6)
        assert np.array_equal(m_step, m1)
    # severity scales the leak: at 0.2 a low-memory web host stays well below full
    m0, m1, _ = _pair("memory_leak", 0, 2, "mem_util", severity=0.2, ramp="linear")
    assert np.max(m1 - m0) > 0.0 and m1.max() < 0.93


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("period", [20, 30])
def test_oom_sawtooth_ramps_to_the_limit_and_drops_at_each_kill(seed: int, period: int) -> None:
    row = 3  # database host: busy cores, so the kill's missing processes show
    params = {"period_minutes": period}
    m0, m1, el = _pair("oom_sawtooth", seed, row, "mem_util", params=params)
    p0, p1, _ = _pair("oom_sawtooth", seed, row, "procs_running", params=params)
    step, period_s = 60, period * 60
    kills = np.arange(period_s, 2 * 3600, period_s)
    assert len(kills) >= 3
    dips = 0
    for k in kills:
        before = np.flatnonzero((el < k) & (el >= k - step))[0]
        after = np.flatnonzero((el >= k) & (el < k + step))[0]
        assert m1[before] >= 0.96  # up to the limit...
        assert m1[before] - m1[after] > 0.05  # ...then a sharp drop when the OOM killer strikes
        assert m1[after] - m0[after] < 0.03
        restarting = (el >= k) & (el < k + 120)
        assert (p1[restarting] <= p0[restarting]).all()
        dips += int((p1[restarting] < p0[restarting]).any())
    assert dips >= len(kills) - 1  # the run queue empties while the service restarts
    calm = np.ones_like(el, dtype=bool)
    for k in kills:
        calm &= ~((el >= k) & (el < k + 120))
    assert np.array_equal(p1[calm], p0[calm])
    # a function of the time since the last restart: the added memory rises through each cycle
    phase = np.mod(el, period_s)
    for k in (0, *kills):
        cycle = (el >= k) & (el < k + period_s)
        assert np.all(np.diff(m1[cycle]) > -0.01)
        assert np.corrcoef(phase[cycle], (m1 - m0)[cycle])[0, 1] > 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_swap_thrashing_pages_through_the_disk(seed: int) -> None:
    for row in ROLE_ROWS:
        _, swap, _ = _pair("swap_thrashing", seed, row, "swap_util")
        assert swap.min() > 0.8
        _, io, _ = _pair("swap_thrashing", seed, row, "disk_io_time")
        assert io.mean() > 0.85
        r0, r1, _ = _pair("swap_thrashing", seed, row, "disk_read_bytes")
        w0, w1, _ = _pair("swap_thrashing", seed, row, "disk_write_bytes")
        # page-in (60 %) and page-out (40 %) of the same paging traffic
        assert np.mean(r1 - r0) / np.mean(w1 - w0) == pytest.approx(1.5, rel=0.15)
        paging = 0.8 * min(max(0.002 * _fleet(seed)[row].mem_bytes, 8e6), 200e6)
        assert np.mean(r1 - r0) == pytest.approx(0.6 * paging, rel=0.15)
        c0, c1, _ = _pair("swap_thrashing", seed, row, "cpu_util")
        assert np.mean(c1 - c0) > 0.1  # iowait and kswapd


# ------------------------------------------------------------------- disk, per type


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("severity", [0.4, 0.8, 1.0])
def test_disk_fill_reaches_full_and_stays_pinned(seed: int, severity: float) -> None:
    full_at = min(max(1.5 - severity, 0.5), 1.0) * 7200
    step = 60
    for row in ROLE_ROWS:
        host = _fleet(seed)[row]
        d0, d1, el = _pair("disk_fill", seed, row, "disk_util", severity=severity, ramp="linear")
        w0, w1, _ = _pair("disk_fill", seed, row, "disk_write_bytes", severity=severity, ramp="linear")
        assert np.all(np.diff(d1) >= -1e-3)  # climbing (the baseline's rotation is tiny)
        assert d1[-1] >= 0.99
        pinned = el >= full_at
        assert (d1[pinned] == 1.0).all()
        assert (d1[el < full_at - step] < 1.0).all()
        # writes: the fill rate while it fills, back to normal once the filesystem is full (ENOSPC)
        assert np.array_equal(w1[el >= full_at + step], w0[el >= full_at + step])
        filling = el < full_at - step
        assert (w1[filling] > w0[filling]).all()
        written = np.sum(w1 - w0) * step / host.disk_bytes
        assert written == pytest.approx(1.0 - d0[0], rel=0.15)


@pytest.mark.parametrize("seed", SEEDS)
def test_disk_jump_steps_at_onset_with_a_short_write_burst(seed: int) -> None:
    severity, ceiling, step = 0.6, 500e6, 60
    jump = 0.3 * severity
    for row in ROLE_ROWS:
        host = _fleet(seed)[row]
        d0, d1, el = _pair("disk_jump", seed, row, "disk_util", severity=severity)
        w0, w1, _ = _pair("disk_jump", seed, row, "disk_write_bytes", severity=severity)
        burst = max(step, jump * host.disk_bytes / ceiling)
        assert burst < 20 * 60  # the first minutes
        n = np.arange(1, el.size + 1) * step  # seconds of writing seen by each sample of the window
        assert d1[0] - d0[0] == pytest.approx(jump * min(step / burst, 1.0))  # visible at once
        settled = n >= burst
        np.testing.assert_allclose(d1[settled] - d0[settled], jump, atol=1e-9)  # and it stays
        spike = w1 - w0
        rate = jump * host.disk_bytes / burst  # the device's write ceiling, unless the slab is smaller
        assert rate <= ceiling * (1 + 1e-12)
        assert (spike[n <= burst] >= 0.7 * rate).all()
        assert spike.max() <= 1.1 * rate * (1 + 1e-12)
        assert (spike[n - step >= burst] == 0.0).all()  # then back to normal
        assert np.sum(spike) * step / host.disk_bytes == pytest.approx(jump, rel=0.12)


@pytest.mark.parametrize("seed", SEEDS)
def test_io_latency_spike_bursts_saturate_the_disk_and_cut_throughput(seed: int) -> None:
    severity = 0.8
    for row in ROLE_ROWS:
        _, io1, el = _pair("io_latency_spike", seed, row, "disk_io_time", severity=severity)
        r0, r1, _ = _pair("io_latency_spike", seed, row, "disk_read_bytes", severity=severity)
        w0, w1, _ = _pair("io_latency_spike", seed, row, "disk_write_bytes", severity=severity)
        l0, l1, _ = _pair("io_latency_spike", seed, row, "load1", severity=severity)
        assert io1[el < 300].min() > 0.85  # the first burst starts at onset
        burst = io1 > 0.85
        assert 0.35 < burst.mean() < 0.9  # bursts on a share of the slots (duty 0.62)
        assert not burst.all()
        # reads and writes lose the same share: the device completes fewer requests
        np.testing.assert_allclose(r1 / r0, w1 / w0, rtol=1e-9)
        kept = r1 / r0
        assert kept[burst].max() < 1.0 - (0.6 + 0.35 * severity) + 0.05
        assert kept[~burst].min() > 0.7
        # D-state tasks: load is up most during the bursts
        assert np.mean((l1 - l0)[burst]) > 2.0 * np.mean((l1 - l0)[~burst]) > 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_io_saturation_pins_busy_time_and_throughput_at_the_ceiling(seed: int) -> None:
    for row in ROLE_ROWS:
        _, io, _ = _pair("io_saturation", seed, row, "disk_io_time", severity=0.5)
        assert io.min() >= 0.95
        for metric, share in (("disk_read_bytes", 0.6), ("disk_write_bytes", 0.4)):
            b0, b1, _ = _pair("io_saturation", seed, row, metric, severity=0.5)
            assert (b1 >= 1.1 * b0).all()
            assert np.median(b1) > 0.6 * share * 250e6
            assert b1.max() < 1.2 * max(share * 250e6, 1.5 * b0.max())
        l0, l1, _ = _pair("io_saturation", seed, row, "load1", severity=0.5)
        assert np.mean(l1 - l0) > 1.0
