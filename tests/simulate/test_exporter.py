"""Raw node_exporter series: well-formed labels, monotonic counters, rates that match."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from anomaly.metrics import DEFAULT_METRIC_NAMES
from anomaly.simulate import Host, RawSeries, SimBlock, make_fleet, node_exporter_series, simulate_arrays

START = datetime(2025, 1, 8, 1, 30, 10, tzinfo=UTC)  # off-grid on purpose
END = START + timedelta(hours=3)
STEP = 60
SEED = 13
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

EXPECTED_EXTRA_LABELS = {
    "node_cpu_seconds_total": {"cpu", "mode"},
    "node_filesystem_avail_bytes": {"device", "fstype", "mountpoint"},
    "node_filesystem_size_bytes": {"device", "fstype", "mountpoint"},
    "node_disk_read_bytes_total": {"device"},
    "node_disk_written_bytes_total": {"device"},
    "node_disk_io_time_seconds_total": {"device"},
    "node_network_receive_bytes_total": {"device"},
    "node_network_transmit_bytes_total": {"device"},
    "node_network_receive_packets_total": {"device"},
    "node_network_transmit_packets_total": {"device"},
}
COUNTERS = {
    "node_disk_read_bytes_total": "disk_read_bytes",
    "node_disk_written_bytes_total": "disk_write_bytes",
    "node_disk_io_time_seconds_total": "disk_io_time",
    "node_network_receive_bytes_total": "net_in_bytes",
    "node_network_transmit_bytes_total": "net_out_bytes",
    "node_network_receive_packets_total": "net_in_packets",
    "node_network_transmit_packets_total": "net_out_packets",
    "node_netstat_Tcp_RetransSegs": "tcp_retransmits",
}
GAUGES = {
    "node_load1": "load1",
    "node_netstat_Tcp_CurrEstab": "tcp_established",
    "node_procs_running": "procs_running",
}


@pytest.fixture(scope="module")
def fleet() -> list[Host]:
    hosts = make_fleet(10, SEED)
    assert any(h.cpus > 4 for h in hosts) and any(h.cpus <= 4 for h in hosts)
    return hosts


@pytest.fixture(scope="module")
def series(fleet: list[Host]) -> list[RawSeries]:
    return list(node_exporter_series(fleet, START, END, STEP, SEED))


@pytest.fixture(scope="module")
def canonical(fleet: list[Host]) -> dict[str, np.ndarray]:
    return simulate_arrays(fleet, START, END, STEP, SEED).values


def _index(series: list[RawSeries]) -> dict[tuple[str, str], list[RawSeries]]:
    """(metric name, host) -> its series."""
    out: dict[tuple[str, str], list[RawSeries]] = defaultdict(list)
    for s in series:
        out[s.name, s.labels["instance"].removesuffix(":9100")].append(s)
    return out


def test_tuple_shape_and_types(series: list[RawSeries]) -> None:
    grid = simulate_arrays([], START, END, STEP, SEED).t
    assert grid.size == 180  # 01:31 .. 04:30
    for s in series:
        name, _labels, kind, ts, values = s  # consumed as a plain 5-tuple
        assert isinstance(name, str) and _NAME.fullmatch(name)
        assert kind in {"gauge", "counter"}
        assert ts.dtype == np.int64 and values.dtype == np.float64
        assert np.array_equal(ts, grid)
        assert np.isfinite(values).all() and (values >= 0).all()


def test_labels_are_well_formed(fleet: list[Host], series: list[RawSeries]) -> None:
    hosts = {h.name for h in fleet}
    seen = set()
    for s in series:
        assert all(isinstance(k, str) and _LABEL.fullmatch(k) and not k.startswith("__") for k in s.labels)
        assert all(isinstance(v, str) and v for v in s.labels.values())
        assert s.labels["job"] == "node"
        assert s.labels["instance"].endswith(":9100")
        assert s.labels["instance"].removesuffix(":9100") in hosts
        assert set(s.labels) - {"instance", "job"} == EXPECTED_EXTRA_LABELS.get(s.name, set()), s.name
        key = (s.name, tuple(sorted(s.labels.items())))
        assert key not in seen, key
        seen.add(key)
        if "mountpoint" in s.labels:
            assert s.labels["mountpoint"] == "/"
    names = {s.name for s in series}
    for needed in (
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        "node_memory_SwapFree_bytes",
        "node_memory_SwapTotal_bytes",
        *COUNTERS,
        *GAUGES,
        *EXPECTED_EXTRA_LABELS,
    ):
        assert needed in names


def test_families_are_contiguous_and_types_consistent(series: list[RawSeries]) -> None:
    order = [s.name for s in series]
    families = [n for i, n in enumerate(order) if i == 0 or order[i - 1] != n]
    assert len(families) == len(set(families))  # no interleaving, as OpenMetrics requires
    types = defaultdict(set)
    for s in series:
        types[s.name].add(s.metric_type)
    assert all(len(t) == 1 for t in types.values())
    for name in [*COUNTERS, "node_cpu_seconds_total"]:
        # untyped in node_exporter and without the _total suffix OpenMetrics demands of counters
        want = {"gauge"} if name == "node_netstat_Tcp_RetransSegs" else {"counter"}
        assert types[name] == want, name
    for name in GAUGES:
        assert types[name] == {"gauge"}


def test_counters_are_monotonic(series: list[RawSeries]) -> None:
    counters = [s for s in series if s.metric_type == "counter" or s.name in COUNTERS]
    assert counters
    for s in counters:
        assert (np.diff(s.values) >= 0).all(), s.name


def test_cpu_cores_capped_and_modes_sum_to_wall_time(fleet: list[Host], series: list[RawSeries]) -> None:
    idx = _index(series)
    for h in fleet:
        cpu = idx["node_cpu_seconds_total", h.name]
        assert len(cpu) == 3 * min(h.cpus, 4)
        by_core = defaultdict(list)
        for s in cpu:
            by_core[s.labels["cpu"]].append(np.diff(s.values) / STEP)
        assert sorted(by_core) == [str(c) for c in range(min(h.cpus, 4))]
        for rates in by_core.values():
            np.testing.assert_allclose(np.sum(rates, axis=0), 1.0, rtol=1e-6)  # one second per second


def test_counter_rates_recover_the_canonical_rates(
    fleet: list[Host], series: list[RawSeries], canonical: dict[str, np.ndarray]
) -> None:
    idx = _index(series)
    for i, h in enumerate(fleet):
        idle = [s for s in idx["node_cpu_seconds_total", h.name] if s.labels["mode"] == "idle"]
        cpu = 1.0 - np.mean([np.diff(s.values) / STEP for s in idle], axis=0)
        np.testing.assert_allclose(cpu, canonical["cpu_util"][i, 1:], rtol=1e-6)
        for name, metric in COUNTERS.items():
            (s,) = idx[name, h.name]
            np.testing.assert_allclose(
                np.diff(s.values) / STEP,
                canonical[metric][i, 1:],
                rtol=1e-6,
                atol=1e-12,
                err_msg=f"{h.name} {name}",
            )


def test_gauges_recover_the_canonical_values(
    fleet: list[Host], series: list[RawSeries], canonical: dict[str, np.ndarray]
) -> None:
    idx = _index(series)

    def one(name: str, host: str) -> np.ndarray:
        (s,) = idx[name, host]
        return s.values

    for i, h in enumerate(fleet):
        for name, metric in GAUGES.items():
            np.testing.assert_allclose(one(name, h.name), canonical[metric][i], rtol=1e-12)
        ratios = {
            "mem_util": ("node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes"),
            "swap_util": ("node_memory_SwapFree_bytes", "node_memory_SwapTotal_bytes"),
            "disk_util": ("node_filesystem_avail_bytes", "node_filesystem_size_bytes"),
        }
        for metric, (free, total) in ratios.items():
            used = 1.0 - one(free, h.name) / one(total, h.name)
            np.testing.assert_allclose(used, canonical[metric][i], rtol=1e-9, atol=1e-12)
        assert (one("node_memory_MemTotal_bytes", h.name) == h.mem_bytes).all()
        assert (one("node_memory_SwapTotal_bytes", h.name) > 0).all()  # PromQL's clamp_min stays moot


def test_every_canonical_metric_is_rendered() -> None:
    covered = {"cpu_util", "mem_util", "swap_util", "disk_util", *COUNTERS.values(), *GAUGES.values()}
    assert covered == set(DEFAULT_METRIC_NAMES)


def test_empty_interval_renders_nothing(fleet: list[Host]) -> None:
    start = datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert list(node_exporter_series(fleet, start, start + timedelta(seconds=30), STEP, SEED)) == []


# ------------------------------------------------------------------ reboots and missed scrapes

REBOOT = datetime(2025, 1, 8, 2, 40, tzinfo=UTC)  # on the grid, inside [START, END)


def _host_series(series: list[RawSeries], host: Host) -> dict[tuple[str, tuple], RawSeries]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s
        for s in series
        if s.labels["instance"] == f"{host.name}:9100"
    }


def test_counters_restart_from_zero_at_a_reboot_and_other_hosts_are_untouched(
    fleet: list[Host], series: list[RawSeries]
) -> None:
    from anomaly.simulate.faults import Fault, inject

    host = fleet[3]
    fault = Fault("host_reboot", host.name, REBOOT, REBOOT + timedelta(hours=1), params={"outage_minutes": 5})
    modifiers = [inject([fault])]
    rebooted = list(node_exporter_series(fleet, START, END, STEP, SEED, modifiers=modifiers))
    canonical = simulate_arrays(fleet, START, END, STEP, SEED, modifiers=modifiers)
    boot = int(REBOOT.timestamp()) + 300
    assert canonical.resets == {host.name: [boot]}

    clean, dirty = _host_series(series, host), _host_series(rebooted, host)
    assert clean.keys() == dirty.keys()
    outage = (int(REBOOT.timestamp()), boot)
    for key, s in dirty.items():
        name = key[0]
        # the host is down: no sample of any series during the outage, every other one is there
        assert not ((s.timestamps >= outage[0]) & (s.timestamps < outage[1])).any(), name
        assert s.timestamps.size == clean[key].timestamps.size - 5, name
        if s.metric_type != "counter" and name not in COUNTERS:
            continue
        before, after = s.timestamps < boot, s.timestamps >= boot
        assert (np.diff(s.values[before]) >= 0).all() and (np.diff(s.values[after]) >= 0).all(), name
        assert s.timestamps[after][0] == boot and s.values[after][0] == 0.0, name  # restarts from 0 at boot
        assert s.values[after][-1] < s.values[before][-1], name  # a reset, not a slowdown
        np.testing.assert_array_equal(s.values[before], clean[key].values[clean[key].timestamps < outage[0]])
    # uptime: node_boot_time_seconds jumps to the boot, so time - boot_time restarts from 0
    (boot_time,) = [s for key, s in dirty.items() if key[0] == "node_boot_time_seconds"]
    after_boot = boot_time.timestamps >= boot
    assert (boot_time.values[after_boot] == boot).all()
    assert (boot_time.values[~after_boot] < int(START.timestamp())).all()
    # after the boot, rates come from the rebooted host's canonical values
    row = fleet.index(host)
    for name, metric in COUNTERS.items():
        (s,) = [x for k, x in dirty.items() if k[0] == name]
        after = s.timestamps >= boot
        expected = canonical.values[metric][row, canonical.t > boot]
        np.testing.assert_allclose(np.diff(s.values[after]) / STEP, expected, rtol=1e-6, atol=1e-9)
    # every other host renders exactly as without the fault
    for other in fleet:
        if other != host:
            a, b = _host_series(series, other), _host_series(rebooted, other)
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key].values, b[key].values)


def test_a_reboot_before_the_render_sets_the_counters_start(fleet: list[Host]) -> None:
    host = fleet[0]
    t0 = int(simulate_arrays([], START, END, STEP, SEED).t[0])

    def rebooted_ten_minutes_before(block: SimBlock) -> None:
        block.resets[host.name] = [t0 - 600]

    out = node_exporter_series([host], START, END, STEP, SEED, modifiers=[rebooted_ten_minutes_before])
    canonical = simulate_arrays([host], START, END, STEP, SEED).values
    for s in out:
        if s.name in COUNTERS:
            rate = canonical[COUNTERS[s.name]][0, 0]
            assert s.values[0] == pytest.approx(rate * 600, rel=1e-12), s.name
            assert (np.diff(s.values) >= 0).all()


def test_a_missed_scrape_drops_samples_but_the_counter_keeps_counting(fleet: list[Host]) -> None:
    host = fleet[1]
    gap = (START + timedelta(hours=1), START + timedelta(hours=1, minutes=10))

    def missed(block: SimBlock) -> None:
        inside = (block.t >= gap[0].timestamp()) & (block.t < gap[1].timestamp())
        for x in block.values.values():
            x[0, inside] = np.nan

    out = list(node_exporter_series([host], START, END, STEP, SEED, modifiers=[missed]))
    assert out and all(s.timestamps.size == 170 for s in out)  # 10 of 180 scrapes missing, in every series
    canonical = simulate_arrays([host], START, END, STEP, SEED).values
    for s in out:
        if s.name in COUNTERS:
            assert (np.diff(s.values) >= 0).all()
            jump = np.flatnonzero(np.diff(s.timestamps) > STEP)
            assert jump.size == 1
            k = jump[0]
            held = canonical[COUNTERS[s.name]][0, k]  # the last rate seen before the gap, held through it
            assert s.values[k + 1] - s.values[k] == pytest.approx(
                10 * STEP * held + STEP * canonical[COUNTERS[s.name]][0, k + 11], rel=1e-9
            )
