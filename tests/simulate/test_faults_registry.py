"""Every registered fault type does what it declares, only where and when it says, and is labelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly.metrics import DEFAULT_METRICS
from anomaly.simulate import make_fleet, simulate_arrays
from anomaly.simulate.faults import REGISTRY, Fault, inject, labels_frame

KIND = {m.name: m.kind for m in DEFAULT_METRICS}
DAY = datetime(2026, 1, 7, tzinfo=UTC)  # a Wednesday
SEEDS = (3, 7, 11)
TYPES = sorted(REGISTRY)

REQUIRED = {
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
    "network_saturation",
    "packet_loss",
    "connection_storm",
    "connection_leak",
    "upstream_failure",
    "traffic_spike",
    "traffic_drop",
    "host_reboot",
    "scrape_gap",
    "stuck_metric",
    "clock_skew",
    "level_shift",
    "variance_change",
    "seasonal_break",
    "cascade",
}


def test_registry_has_every_required_type_with_documented_meaning() -> None:
    assert set(REGISTRY) >= REQUIRED, sorted(REQUIRED - set(REGISTRY))
    assert len(REGISTRY) >= 24
    for ft in REGISTRY.values():
        assert len(ft.description) > 60, f"{ft.name}: describe the physical meaning"
        assert ft.metrics and set(ft.effects) == set(ft.metrics)


def _window(host, seed: int) -> tuple[datetime, datetime]:
    # local 11:00-17:00: covers the daytime peak that seasonal faults need
    start = DAY + timedelta(hours=11 - host.utc_offset_hours)
    return start, start + timedelta(hours=6)


def _run(kind: str, seed: int, severity: float = 0.9):
    fleet = make_fleet(8, seed)
    host = next(h for h in fleet if h.role == "web")
    start, end = _window(host, seed)
    fault = Fault(kind, host.name, start, end, severity=severity, ramp="step")
    a, b = start - timedelta(hours=2), end + timedelta(hours=2)
    base = simulate_arrays(fleet, a, b, 60, seed)
    mod = simulate_arrays(fleet, a, b, 60, seed, modifiers=[inject([fault])])
    row = [h.name for h in fleet].index(host.name)
    return fleet, fault, base, mod, row


def _inside(fault: Fault, t: np.ndarray) -> np.ndarray:
    return (t >= fault.start.timestamp()) & (t < fault.end.timestamp())


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_fault_changes_only_its_metrics_host_and_window(kind: str, seed: int) -> None:
    _, fault, base, mod, row = _run(kind, seed)
    inside = _inside(fault, base.t)
    for metric, before in base.values.items():
        after = mod.values[metric]
        other_rows = np.arange(before.shape[0]) != row
        np.testing.assert_array_equal(
            after[other_rows], before[other_rows], err_msg=f"{kind} touched another host"
        )
        np.testing.assert_array_equal(
            after[row][~inside], before[row][~inside], err_msg=f"{kind} changed {metric} outside its window"
        )
        if metric not in fault.affected_metrics:
            np.testing.assert_array_equal(
                after[row], before[row], err_msg=f"{kind} changed undeclared {metric}"
            )


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_fault_does_what_it_declares(kind: str, seed: int) -> None:
    _, fault, base, mod, row = _run(kind, seed)
    inside = _inside(fault, base.t)
    for metric, effect in REGISTRY[kind].effects.items():
        before, after = base.values[metric][row][inside], mod.values[metric][row][inside]
        scale = np.std(base.values[metric][row]) + 1e-12
        msg = f"{kind}: {metric} should be {effect}"
        if effect == "missing":
            assert np.isnan(after).any(), msg
        elif effect == "flat":
            assert np.nanmax(after) == np.nanmin(after), msg
        elif effect == "noisier":
            assert np.nanstd(np.diff(after)) > 1.5 * np.nanstd(np.diff(before)), msg
        elif effect == "changed":
            assert not np.array_equal(after, before, equal_nan=True), msg
        elif effect in ("up", "down"):
            delta = np.nanmean(after) - np.nanmean(before)
            sign = 1 if effect == "up" else -1
            # a visible move: at least half the metric's whole-day spread (seasonality included)
            assert sign * delta > 0.5 * scale, f"{msg}: moved {delta:+.4g}, spread {scale:.4g}"


@pytest.mark.parametrize("kind", TYPES)
def test_fault_keeps_values_physical(kind: str) -> None:
    _, _, _, mod, row = _run(kind, 7)
    for metric, values in mod.values.items():
        v = values[row][~np.isnan(values[row])]
        assert (v >= 0).all(), f"{kind}: {metric} negative"
        if KIND[metric] == "ratio":
            assert (v <= 1).all(), f"{kind}: {metric} above 1"


@pytest.mark.parametrize("kind", TYPES)
def test_fault_is_a_pure_function_of_time(kind: str) -> None:
    """Simulating in two pieces split inside the fault gives bitwise the same values."""
    fleet = make_fleet(6, 5)
    host = next(h for h in fleet if h.role == "web")
    start, end = _window(host, 5)
    fault = Fault(kind, host.name, start, end, severity=0.8, ramp="linear")
    a, c = start - timedelta(hours=1), end + timedelta(hours=1)
    b = start + timedelta(hours=2, minutes=17)
    whole = simulate_arrays(fleet, a, c, 60, 5, modifiers=[inject([fault])])
    left = simulate_arrays(fleet, a, b, 60, 5, modifiers=[inject([fault])])
    right = simulate_arrays(fleet, b, c, 60, 5, modifiers=[inject([fault])])
    for metric in whole.values:
        joined = np.concatenate([left.values[metric], right.values[metric]], axis=1)
        np.testing.assert_array_equal(joined, whole.values[metric], err_msg=f"{kind}: {metric}")


def test_labels_match_the_fault_windows_exactly() -> None:
    fleet = make_fleet(4, 7)
    faults = [
        Fault(
            kind,
            fleet[i % 4].name,
            DAY + timedelta(hours=i),
            DAY + timedelta(hours=i, minutes=45),
            severity=0.6,
        )
        for i, kind in enumerate(TYPES)
    ]
    labels = labels_frame(faults)
    assert len(labels) == len(faults) and labels["label_id"].is_unique
    for f, row in zip(faults, labels.itertuples(), strict=True):
        assert (row.host, row.type, row.source) == (f.host, f.type, "simulation")
        assert row.start_ts == pd.Timestamp(f.start) and row.end_ts == pd.Timestamp(f.end)
        assert list(row.affected_metrics) == list(f.affected_metrics)
        assert row.severity == "medium"
    assert labels_frame(faults)["label_id"].tolist() == labels["label_id"].tolist()  # stable ids


def test_bad_faults_are_rejected_with_reasons() -> None:
    with pytest.raises(ValueError, match="unknown fault type 'cpu_melt'"):
        Fault("cpu_melt", "h", DAY, DAY + timedelta(hours=1))
    with pytest.raises(ValueError, match="non-empty"):
        Fault(TYPES[0], "h", DAY, DAY)
    with pytest.raises(ValueError, match="severity"):
        Fault(TYPES[0], "h", DAY, DAY + timedelta(hours=1), severity=1.5)
