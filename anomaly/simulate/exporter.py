"""The simulated fleet as raw node_exporter series, as Prometheus would have scraped them.

Evaluating the PromQL of :mod:`anomaly.metrics` over these series recovers the
canonical values of :func:`anomaly.simulate.fleet.simulate` (approximately: ``rate()``
averages over its window). Counters integrate the canonical rate sample by sample,
``c[k] = c[k-1] + rate[k] * step``, from a start value set by the host's uptime, so
``(c[k] - c[k-1]) / step`` gives back the canonical rate at ``t[k]``.

Reboots: a modifier (the ``host_reboot`` fault) records boot instants in
``SimBlock.resets``; every counter of that host restarts from 0 at each boot (its first
sample after the boot holds only what accrued since) and is monotonic between boots. A
missing canonical sample (NaN) is a missed scrape: no raw sample is emitted for it, while the
counter keeps counting underneath at the last known rate.

Series come family by family (all hosts of one metric name together), as the
OpenMetrics text format requires. Counter exactness across separate renders is
not a goal: each render integrates from its own start.

Example::

    >>> from datetime import UTC, datetime
    >>> from anomaly.simulate import make_fleet
    >>> series = list(node_exporter_series(make_fleet(1, 7), datetime(2025, 1, 1, tzinfo=UTC),
    ...                                    datetime(2025, 1, 1, 1, tzinfo=UTC), 60, 7))
    >>> name, labels, kind, ts, values = series[0]
    >>> name, labels["mode"], kind, ts.dtype, values.dtype
    ('node_cpu_seconds_total', 'idle', 'counter', dtype('int64'), dtype('float64'))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np

from anomaly.simulate.fleet import Host, Modifier, clip_to_kinds, simulate_arrays

# Share of busy CPU time spent in user space (the rest in the kernel): network-heavy
# caches live in syscalls, batch number-crunching in user code.
_USER_SHARE = {"web": 0.75, "database": 0.6, "batch": 0.85, "cache": 0.5}
_CPU_MODES = ("idle", "system", "user")


class RawSeries(NamedTuple):
    """One scraped series: ``(name, labels, metric_type, timestamps_seconds, values)``."""

    name: str
    labels: dict[str, str]
    metric_type: str  # "gauge" | "counter"
    timestamps: np.ndarray  # int64 epoch seconds
    values: np.ndarray  # float64


def _labels(host: Host, **extra: str) -> dict[str, str]:
    return {"instance": f"{host.name}:9100", "job": "node", **extra}


def _core_spread(host: Host, cores: int) -> np.ndarray:
    """(cores, 1) deviations in [-1, 1] summing to zero: core 0 takes the interrupts and is busiest.

    Applied as ``u + 0.3 * d * min(u, 1 - u)``, each core stays in [0, 1] and the average over
    cores is exactly the host's utilisation, which is what the cpu_util PromQL averages back.
    """
    if cores == 1:
        return np.zeros((1, 1))
    w = np.linspace(1.0, -1.0, cores) + 0.25 * np.sin(np.arange(cores) + (host.key % 997))
    d = w - w.mean()
    return (d / np.abs(d).max())[:, None]


def _hold_missing(rate: np.ndarray) -> np.ndarray:
    """``rate`` clipped at 0 with non-finite samples replaced by the last finite one before them
    (the first finite one for a leading run; 0 if there is none): the counter keeps counting."""
    ok = np.isfinite(rate)
    clean = np.where(ok, np.maximum(rate, 0.0), 0.0)
    if ok.all():
        return clean
    n = rate.shape[-1]
    last = np.maximum.accumulate(np.where(ok, np.arange(n), -1), axis=-1)
    first = np.argmax(ok, axis=-1)[..., None]
    return np.take_along_axis(clean, np.where(last < 0, first, last), axis=-1)


def _counter(host: Host, rate: np.ndarray, step: int, t: np.ndarray, boots: Sequence[int] = ()) -> np.ndarray:
    """Cumulative counter whose per-step increase is ``rate * step``; NaN where ``rate`` is missing.

    Before the render's first boot it starts as if the host had been up ``uptime_s``; from each
    boot ``b`` in ``boots`` (epoch seconds) it restarts: the first sample at ``t >= b`` holds
    ``rate * (t - b)``. A boot before ``t[0]`` sets the starting value the same way.
    """
    r = _hold_missing(rate)  # a counter never goes down
    cum = np.cumsum(r * step, axis=-1)
    b = np.asarray(sorted(boots), dtype=np.int64)
    segment = np.searchsorted(b, t, side="right")  # boots at or before each sample
    if not segment.any():
        c = host.uptime_s * r[..., :1] + cum
    else:
        first = np.searchsorted(segment, segment, side="left")  # each sample's segment start
        since_boot = t[first] - b[np.maximum(segment - 1, 0)]
        restarted = cum - cum[..., first] + r[..., first] * since_boot
        c = np.where(segment > 0, restarted, host.uptime_s * r[..., :1] + cum)
    return np.where(np.isfinite(rate), c, np.nan)  # a missing sample stays missing


def _boot_time(host: Host, t: np.ndarray, boots: Sequence[int], companion: np.ndarray) -> np.ndarray:
    """node_boot_time_seconds: the epoch of the last boot at or before each sample (uptime = t - it)."""
    initial = float(t[0] - host.uptime_s) if t.size else 0.0
    b = np.asarray(sorted(boots), dtype=np.int64)
    if b.size == 0:
        value = np.full(t.shape, initial)
    else:
        seg = np.searchsorted(b, t, side="right")
        value = np.where(seg > 0, b[np.maximum(seg - 1, 0)].astype(float), initial)
    return np.where(np.isfinite(companion), value, np.nan)  # not scraped while the host is down


def _scraped(companion: np.ndarray, constant: float) -> np.ndarray:
    """A constant gauge (a total) sampled when its collector was: missing where ``companion`` is."""
    return np.where(np.isfinite(companion), float(constant), np.nan)


def _series(name: str, labels: dict[str, str], kind: str, t: np.ndarray, x: np.ndarray) -> RawSeries:
    ok = np.isfinite(x)  # a sample a modifier made non-finite is a missed scrape
    if ok.all():
        return RawSeries(name, labels, kind, t, x.astype(np.float64, copy=False))
    return RawSeries(name, labels, kind, t[ok], x[ok].astype(np.float64, copy=False))


def node_exporter_series(
    fleet: Sequence[Host],
    start: datetime,
    end: datetime,
    step_seconds: int = 60,
    seed: int = 7,
    *,
    max_cpus: int = 4,
    modifiers: Sequence[Modifier] = (),
) -> Iterator[RawSeries]:
    """Raw node_exporter series of ``fleet`` over ``[start, end)``, one scrape per step.

    At most ``max_cpus`` cores per host are rendered (series count stays sane); they average
    to the host's cpu_util. ``node_load1`` still reflects all of the host's cores.

    Example::

        >>> from datetime import UTC, datetime
        >>> from anomaly.simulate import make_fleet
        >>> s = node_exporter_series(make_fleet(2, 7), datetime(2025, 1, 1, tzinfo=UTC),
        ...                          datetime(2025, 1, 1, 0, 10, tzinfo=UTC))
        >>> sorted({x.name for x in s})[:2]
        ['node_cpu_seconds_total', 'node_disk_io_time_seconds_total']
    """
    if max_cpus < 1:
        raise ValueError(f"max_cpus must be >= 1, got {max_cpus}")
    block = simulate_arrays(fleet, start, end, step_seconds, seed, modifiers=modifiers)
    t, step, hosts = block.t, block.step_seconds, block.fleet
    if t.size == 0 or not hosts:
        return
    v = clip_to_kinds(block.values)  # raw series are physical: modifiers' out-of-range values clip

    for i, h in enumerate(hosts):
        u = v["cpu_util"][i]
        cores = min(h.cpus, max_cpus)
        u_core = u + 0.3 * _core_spread(h, cores) * np.minimum(u, 1.0 - u)  # (cores, T)
        share = _USER_SHARE[h.role]
        rates = {"idle": 1.0 - u_core, "system": u_core * (1.0 - share), "user": u_core * share}
        for c in range(cores):
            for mode in _CPU_MODES:
                yield _series(
                    "node_cpu_seconds_total",
                    _labels(h, cpu=str(c), mode=mode),
                    "counter",
                    t,
                    _counter(h, rates[mode][c], step, t, block.resets.get(h.name, ())),
                )

    def gauges(name: str, per_host: Callable[[int, Host], tuple[Any, dict[str, str]]]) -> Iterator[RawSeries]:
        for i, h in enumerate(hosts):
            x, extra = per_host(i, h)
            yield _series(name, _labels(h, **extra), "gauge", t, np.broadcast_to(x, t.shape).astype(float))

    def counters(name: str, metric: str, extra: dict[str, str], kind: str = "counter") -> Iterator[RawSeries]:
        for i, h in enumerate(hosts):
            boots = block.resets.get(h.name, ())
            yield _series(name, _labels(h, **extra), kind, t, _counter(h, v[metric][i], step, t, boots))

    fs = {"device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/"}
    yield from gauges("node_load1", lambda i, h: (v["load1"][i], {}))
    yield from gauges(
        "node_memory_MemAvailable_bytes", lambda i, h: (h.mem_bytes * (1.0 - v["mem_util"][i]), {})
    )
    yield from gauges(
        "node_memory_MemTotal_bytes", lambda i, h: (_scraped(v["mem_util"][i], h.mem_bytes), {})
    )
    yield from gauges(
        "node_memory_SwapFree_bytes", lambda i, h: (h.swap_bytes * (1.0 - v["swap_util"][i]), {})
    )
    yield from gauges(
        "node_memory_SwapTotal_bytes", lambda i, h: (_scraped(v["swap_util"][i], h.swap_bytes), {})
    )
    yield from gauges(
        "node_filesystem_avail_bytes", lambda i, h: (h.disk_bytes * (1.0 - v["disk_util"][i]), fs)
    )
    yield from gauges(
        "node_filesystem_size_bytes", lambda i, h: (_scraped(v["disk_util"][i], h.disk_bytes), fs)
    )
    sda, eth0 = {"device": "sda"}, {"device": "eth0"}
    yield from counters("node_disk_read_bytes_total", "disk_read_bytes", sda)
    yield from counters("node_disk_written_bytes_total", "disk_write_bytes", sda)
    yield from counters("node_disk_io_time_seconds_total", "disk_io_time", sda)
    yield from counters("node_network_receive_bytes_total", "net_in_bytes", eth0)
    yield from counters("node_network_transmit_bytes_total", "net_out_bytes", eth0)
    yield from counters("node_network_receive_packets_total", "net_in_packets", eth0)
    yield from counters("node_network_transmit_packets_total", "net_out_packets", eth0)
    # node_exporter exposes netstat fields untyped: the values grow like a counter's, but the name
    # has no _total suffix, which OpenMetrics requires of counters. Typed as a gauge here so the
    # name survives the OpenMetrics round trip; rate() does not look at the type.
    yield from counters("node_netstat_Tcp_RetransSegs", "tcp_retransmits", {}, kind="gauge")
    yield from gauges("node_netstat_Tcp_CurrEstab", lambda i, h: (v["tcp_established"][i], {}))
    yield from gauges("node_procs_running", lambda i, h: (v["procs_running"][i], {}))
    yield from gauges(
        "node_boot_time_seconds",
        lambda i, h: (_boot_time(h, t, block.resets.get(h.name, ()), v["procs_running"][i]), {}),
    )


__all__ = ["RawSeries", "node_exporter_series"]
