"""Network fault types: each moves its declared metrics the way its physics says, and nothing else.

Every test runs on all eight hosts of ``make_fleet(8, seed)`` (all roles, prod and pre-prod) for
several seeds, and compares a run with the fault against the same run without it: the baseline
noise is identical in both, so differences are the fault's doing alone.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly.metrics import DEFAULT_METRIC_NAMES, DEFAULT_METRICS
from anomaly.simulate import SimBlock, make_fleet, simulate, simulate_arrays
from anomaly.simulate.faults import REGISTRY, Fault, inject

A = datetime(2025, 1, 6, 8, tzinfo=UTC)  # a Monday: business hours on most hosts
START = datetime(2025, 1, 6, 10, tzinfo=UTC)
END = datetime(2025, 1, 6, 12, tzinfo=UTC)
D = datetime(2025, 1, 6, 14, tzinfo=UTC)
SEEDS = (13, 99, 2024)
N_HOSTS = 8
SEVERITY = 0.6

TYPES = (
    "network_saturation",
    "packet_loss",
    "connection_storm",
    "connection_leak",
    "upstream_failure",
    "traffic_spike",
    "traffic_drop",
)
TRAFFIC = ("net_in_bytes", "net_out_bytes", "net_in_packets", "net_out_packets")
# Effects the physics makes small on some hosts (softirq CPU on 32 cores, ACK bytes next to a batch
# host's bulk inbound data, leaked-socket memory on a 256 GiB database): checked for direction and
# exact size below, not for visibility against the noise.
SECONDARY = {
    ("network_saturation", "cpu_util"),
    ("network_saturation", "net_in_bytes"),
    ("connection_leak", "mem_util"),
}
KIND = {m.name: m.kind for m in DEFAULT_METRICS}


@functools.cache
def _baseline(seed: int) -> SimBlock:
    return simulate_arrays(make_fleet(N_HOSTS, seed), A, D, seed=seed)


def _faulted(seed: int, *faults: Fault) -> SimBlock:
    return simulate_arrays(make_fleet(N_HOSTS, seed), A, D, seed=seed, modifiers=[inject(faults)])


def _on_every_host(seed: int, kind: str, severity: float = SEVERITY, **kw: object) -> SimBlock:
    """One run with the fault on every host (each host's fault only edits its own rows)."""
    return _faulted(seed, *(_fault(kind, h.name, severity, **kw) for h in make_fleet(N_HOSTS, seed)))


def _fault(kind: str, host: str, severity: float = SEVERITY, **kw: object) -> Fault:
    return Fault(kind, host, START, END, severity=severity, **kw)


def _inside(block: SimBlock) -> np.ndarray:
    return (block.t >= START.timestamp()) & (block.t < END.timestamp())


def _noise_sd(x: np.ndarray) -> float:
    """Robust per-sample noise of a series: MAD of first differences (ignores steps like cron jobs)."""
    d = np.diff(x)
    sd = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)
    return max(sd, 1e-6 * abs(float(np.mean(x))), 1e-9)


def _check_kinds(block: SimBlock) -> None:
    for metric, values in block.values.items():
        assert not np.isnan(values).any(), metric
        assert (values >= 0.0).all(), metric
        if KIND[metric] == "ratio":
            assert (values <= 1.0).all(), metric


# ------------------------------------------------------------------------ the registry


def test_registered_with_family_and_documented_params() -> None:
    for name in TYPES:
        ft = REGISTRY[name]
        assert ft.family == "network"
        assert set(ft.effects) == set(ft.metrics)
        assert "Params:" in ft.description and len(ft.description) > 200


# --------------------------------------------------- declared effects, and nothing else


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", TYPES)
def test_declared_effects_inside_and_nothing_else(kind: str, seed: int) -> None:
    base = _baseline(seed)
    inside = _inside(base)
    ft = REGISTRY[kind]
    for i, host in enumerate(base.fleet):
        block = _faulted(seed, _fault(kind, host.name))
        _check_kinds(block)
        for metric in DEFAULT_METRIC_NAMES:
            b, x = base.values[metric], block.values[metric]
            others = np.ones(N_HOSTS, dtype=bool)
            others[i] = False
            assert np.array_equal(x[others], b[others]), (kind, metric, "another host changed")
            assert np.array_equal(x[i, ~inside], b[i, ~inside]), (kind, host.name, metric, "outside")
            if metric not in ft.effects:
                assert np.array_equal(x[i], b[i]), (kind, host.name, metric, "undeclared metric changed")
                continue
            bi, xi = b[i, inside], x[i, inside]
            effect = ft.effects[metric]
            assert effect in ("up", "down"), effect
            # Point by point the fault only pushes one way; on average, well clear of the noise.
            assert (xi >= bi).all() if effect == "up" else (xi <= bi).all(), (kind, host.name, metric)
            shift = (xi.mean() - bi.mean()) * (1.0 if effect == "up" else -1.0)
            assert shift > 0.0, (kind, host.name, metric)
            if (kind, metric) not in SECONDARY:
                assert shift > 1.5 * _noise_sd(bi), (kind, host.name, metric, shift, _noise_sd(bi))


@pytest.mark.parametrize("kind", TYPES)
def test_interval_split_is_bitwise(kind: str) -> None:
    for seed in SEEDS:
        fleet = make_fleet(N_HOSTS, seed)
        faults = [_fault(kind, fleet[0].name), _fault(kind, fleet[5].name, severity=1.0, ramp="sigmoid")]
        mods = [inject(faults)]
        whole = simulate(fleet, A, D, seed=seed, modifiers=mods)
        for cut in (START + timedelta(minutes=37), END - timedelta(minutes=1)):
            parts = pd.concat(
                [
                    simulate(fleet, A, cut, seed=seed, modifiers=mods),
                    simulate(fleet, cut, D, seed=seed, modifiers=mods),
                ],
                ignore_index=True,
            )
            pd.testing.assert_frame_equal(whole, parts, check_exact=True)
            assert np.array_equal(
                whole["value"].to_numpy().view(np.uint64), parts["value"].to_numpy().view(np.uint64)
            )


@pytest.mark.parametrize("kind", TYPES)
def test_narrowed_metrics_are_the_only_ones_touched(kind: str) -> None:
    seed = SEEDS[0]
    base = _baseline(seed)
    keep = REGISTRY[kind].metrics[-1]
    block = _faulted(seed, _fault(kind, base.fleet[0].name, metrics=(keep,)))
    for metric in DEFAULT_METRIC_NAMES:
        same = np.array_equal(block.values[metric], base.values[metric])
        assert same == (metric != keep), (kind, metric)


@pytest.mark.parametrize("kind", TYPES)
def test_stronger_severity_moves_the_main_metric_further(kind: str) -> None:
    main = {
        "network_saturation": "tcp_retransmits",
        "packet_loss": "net_out_bytes",
        "connection_storm": "tcp_established",
        "connection_leak": "tcp_established",
        "upstream_failure": "net_in_bytes",
        "traffic_spike": "net_in_bytes",
        "traffic_drop": "net_in_bytes",
    }[kind]
    for seed in SEEDS:
        base = _baseline(seed)
        inside = _inside(base)
        b = base.values[main][:, inside]
        runs = [_on_every_host(seed, kind, severity=s).values[main][:, inside] for s in (0.2, 0.5, 1.0)]
        shifts = [np.abs(x.mean(axis=1) - b.mean(axis=1)) for x in runs]
        assert ((shifts[0] < shifts[1]) & (shifts[1] < shifts[2])).all(), (kind, seed, shifts)


@pytest.mark.parametrize("kind", TYPES)
def test_missing_samples_stay_missing(kind: str) -> None:
    """A scrape gap before the fault (NaN) stays a gap; the fault does not spread it."""
    seed = SEEDS[1]
    fleet = make_fleet(N_HOSTS, seed)
    gap_t = int((START + timedelta(minutes=30)).timestamp())

    def gap(block: SimBlock) -> None:
        for values in block.values.values():
            values[0, block.t == gap_t] = np.nan

    block = simulate_arrays(fleet, A, D, seed=seed, modifiers=[gap, inject([_fault(kind, fleet[0].name)])])
    for metric, values in block.values.items():
        assert np.array_equal(np.isnan(values[0]), block.t == gap_t), (kind, metric)


# ----------------------------------------------------------------- type-specific physics


@pytest.mark.parametrize("seed", SEEDS)
def test_saturation_pins_the_uplink_and_drops_segments(seed: int) -> None:
    base = _baseline(seed)
    inside = _inside(base)
    block = _on_every_host(seed, "network_saturation", severity=1.0)
    for i, host in enumerate(base.fleet):
        out = block.values["net_out_bytes"][i, inside]
        # Pinned at 95 % of a 1 Gbit/s link with almost no variance.
        assert np.allclose(out, 0.95 * 125e6, rtol=0.02)
        assert out.std() / out.mean() < 0.01
        extra_out = block.values["net_out_packets"][i, inside] - base.values["net_out_packets"][i, inside]
        extra_in = block.values["net_in_packets"][i, inside] - base.values["net_in_packets"][i, inside]
        extra_in_bytes = block.values["net_in_bytes"][i, inside] - base.values["net_in_bytes"][i, inside]
        assert np.allclose(extra_out * 1514.0, out - base.values["net_out_bytes"][i, inside])  # full frames
        assert np.allclose(extra_in, extra_out / 2.0)  # delayed ACKs
        assert np.allclose(extra_in_bytes, extra_in * 66.0)  # ACK-sized
        retrans_rate = block.values["tcp_retransmits"][i, inside] / block.values["net_out_packets"][i, inside]
        assert np.median(retrans_rate) > 0.005  # tail drops at the full queue (1 % at severity 1)
        # Softirq work: more CPU, more on small hosts, never more than the packets' cost.
        dcpu = block.values["cpu_util"][i, inside] - base.values["cpu_util"][i, inside]
        assert (dcpu > 0.0).all()
        assert np.allclose(dcpu, (extra_out + extra_in) * 8e-6 / host.cpus)
        if host.cpus <= 8:
            assert dcpu.mean() > 1.5 * _noise_sd(base.values["cpu_util"][i, inside])
    # A faster link: a higher ceiling.
    fast = _faulted(
        seed, _fault("network_saturation", base.fleet[0].name, severity=1.0, params={"link_gbps": 10})
    )
    assert np.allclose(fast.values["net_out_bytes"][0, inside], 0.95 * 1.25e9, rtol=0.02)


@pytest.mark.parametrize("seed", SEEDS)
def test_packet_loss_raises_retransmits_and_lowers_throughput(seed: int) -> None:
    base = _baseline(seed)
    inside = _inside(base)
    block = _on_every_host(seed, "packet_loss")
    for i, host in enumerate(base.fleet):
        keep = block.values["net_out_bytes"][i, inside] / base.values["net_out_bytes"][i, inside]
        # All traffic metrics shrink by the same factor (congestion control backs off, packet sizes
        # stay), by roughly half at this severity.
        for metric in TRAFFIC:
            ratio = block.values[metric][i, inside] / base.values[metric][i, inside]
            assert np.allclose(ratio, keep), metric
        assert 0.25 < np.median(keep) < 0.6, (host.name, np.median(keep))
        # Retransmitted share of sent segments: several times normal, in absolute terms up too.
        rate_base = base.values["tcp_retransmits"][i, inside] / base.values["net_out_packets"][i, inside]
        rate = block.values["tcp_retransmits"][i, inside] / block.values["net_out_packets"][i, inside]
        assert np.median(rate) > 5.0 * np.median(rate_base) and np.median(rate) > 0.01
        assert (block.values["tcp_retransmits"][i, inside] > base.values["tcp_retransmits"][i, inside]).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_connection_storm_piles_up_connections_and_busy_workers(seed: int) -> None:
    base = _baseline(seed)
    inside = _inside(base)
    block = _on_every_host(seed, "connection_storm")
    for i, host in enumerate(base.fleet):
        est_b = base.values["tcp_established"][i, inside]
        est = block.values["tcp_established"][i, inside]
        assert np.median(est / est_b) > 3.0 and np.median(est - est_b) > 0.6 * 2000 * 0.6
        # Little's law: arrivals = extra / 2 s, 5 small packets each.
        extra_pk = block.values["net_in_packets"][i, inside] - base.values["net_in_packets"][i, inside]
        assert np.allclose(extra_pk, (est - est_b) / 2.0 * 5.0, rtol=0.01, atol=2.5)
        cpu = block.values["cpu_util"][i, inside]
        assert np.median(cpu) > 0.8  # heads for 0.7 + 0.28 * severity
        extra_procs = block.values["procs_running"][i, inside] - base.values["procs_running"][i, inside]
        assert np.median(extra_procs) >= SEVERITY * (2 + host.cpus / 2) - 1
        assert (block.values["load1"][i, inside] > base.values["load1"][i, inside] + SEVERITY * 2).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_connection_leak_climbs_steadily(seed: int) -> None:
    base = _baseline(seed)
    inside = _inside(base)
    minutes = np.arange(inside.sum())  # 60 s steps from the fault's start
    block = _on_every_host(seed, "connection_leak")
    for i, host in enumerate(base.fleet):
        leaked = block.values["tcp_established"][i, inside] - base.values["tcp_established"][i, inside]
        # A straight line at 40 * severity per minute, even with the default step ramp.
        assert np.array_equal(leaked, np.floor(40.0 * SEVERITY * minutes))
        assert (np.diff(leaked) > 0).all()
        held = block.values["mem_util"][i, inside] - base.values["mem_util"][i, inside]
        assert np.allclose(held, leaked * 256 * 1024 / host.mem_bytes)
    # Another ramp bends the climb: exponential is slow first, the total stays the same.
    block = _faulted(seed, _fault("connection_leak", base.fleet[0].name, ramp="exp"))
    leaked = block.values["tcp_established"][0, inside] - base.values["tcp_established"][0, inside]
    linear = np.floor(40.0 * SEVERITY * minutes)
    assert (np.diff(leaked) >= 0).all()
    assert leaked[len(leaked) // 2] < 0.5 * linear[len(linear) // 2]
    assert leaked[-1] > 0.9 * linear[-1]


@pytest.mark.parametrize("seed", SEEDS)
def test_upstream_failure_leaves_a_trickle(seed: int) -> None:
    base = _baseline(seed)
    inside = _inside(base)
    for severity, lo, hi in ((1.0, 0.015, 0.025), (SEVERITY, 0.025, 0.04), (0.1, 0.04, 0.055)):
        block = _on_every_host(seed, "upstream_failure", severity=severity)
        for metric in TRAFFIC:
            ratio = block.values[metric][:, inside] / base.values[metric][:, inside]
            assert ((lo < np.median(ratio, axis=1)) & (np.median(ratio, axis=1) < hi)).all(), (
                metric,
                severity,
            )
            assert ratio.max() < 0.15
    block = _on_every_host(seed, "upstream_failure")
    for i in range(N_HOSTS):
        cpu_ratio = block.values["cpu_util"][i, inside] / base.values["cpu_util"][i, inside]
        assert np.allclose(cpu_ratio, 1.0 - (0.5 + 0.4 * SEVERITY))
        est_b = base.values["tcp_established"][i, inside]
        assert (block.values["tcp_established"][i, inside] <= np.rint(est_b * 0.2) + 1).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_traffic_spike_scales_traffic_together_and_loads_the_cpu(seed: int) -> None:
    base = _baseline(seed)
    inside = _inside(base)
    block = _on_every_host(seed, "traffic_spike")
    for i, host in enumerate(base.fleet):
        mult = block.values["net_in_bytes"][i, inside] / base.values["net_in_bytes"][i, inside]
        assert 4.0 < np.median(mult) < 6.0  # 2.5 + 4 * severity
        for metric in TRAFFIC:  # same request mix: every traffic metric by the same factor
            assert np.allclose(block.values[metric][i, inside] / base.values[metric][i, inside], mult)
        est_b = base.values["tcp_established"][i, inside]
        assert np.allclose(
            block.values["tcp_established"][i, inside], est_b * (1 + 0.8 * (mult - 1)), atol=0.5
        )
        cpu_b, cpu = base.values["cpu_util"][i, inside], block.values["cpu_util"][i, inside]
        assert np.allclose(cpu, 1.0 - (1.0 - cpu_b) ** mult)
        # load follows the run-queue model of the CPU change
        runnable = host.cpus * cpu * (1 + np.maximum(cpu - 0.8, 0) / 0.2)
        runnable_b = host.cpus * cpu_b * (1 + np.maximum(cpu_b - 0.8, 0) / 0.2)
        load_ratio = block.values["load1"][i, inside] / base.values["load1"][i, inside]
        assert np.allclose(load_ratio, runnable / runnable_b)


@pytest.mark.parametrize("seed", SEEDS)
def test_traffic_drop_loses_a_share_and_ramps(seed: int) -> None:
    base = _baseline(seed)
    inside = _inside(base)
    for severity in (0.1, SEVERITY, 1.0):
        block = _on_every_host(seed, "traffic_drop", severity=severity)
        for i in range(N_HOSTS):
            drop = 0.4 + 0.4 * severity  # 40-80 %
            for metric in TRAFFIC:
                assert np.allclose(
                    block.values[metric][i, inside], base.values[metric][i, inside] * (1 - drop)
                )
            assert np.allclose(
                block.values["cpu_util"][i, inside], base.values["cpu_util"][i, inside] * (1 - 0.7 * drop)
            )
            est = block.values["tcp_established"][i, inside]
            assert np.allclose(est, base.values["tcp_established"][i, inside] * (1 - 0.8 * drop), atol=0.5)
    # A linear ramp: the host is drained gradually, the loss grows through the window.
    block = _faulted(seed, _fault("traffic_drop", base.fleet[0].name, ramp="linear"))
    ratio = block.values["net_out_bytes"][0, inside] / base.values["net_out_bytes"][0, inside]
    assert ratio[0] == 1.0 and (np.diff(ratio) < 0).all() and ratio[-1] < 1 - 0.95 * (0.4 + 0.4 * SEVERITY)
