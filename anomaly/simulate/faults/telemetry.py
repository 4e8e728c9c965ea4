"""Fault types: broken telemetry (reboots, gaps, flatlines, skewed clocks) and behaviour changes.

Two families live here:

* ``telemetry``: what the monitoring pipeline sees goes wrong, whether or not the machine does:
  a host reboot (gap, cold caches, counters restarting from zero), a scrape gap, a frozen
  exporter value, a skewed clock.
* ``behaviour``: the workload changes character without anything "breaking": a level shift after
  a deployment, a metric that starts flapping, a daily peak that never comes, an overload that
  cascades across the hosts of a role.

Some faults need the host's values at other instants (the start of a flatline, the lagged
instant of a skewed clock, the quiet hours of the day): they ask ``ctx.baseline``, which
re-simulates the host's fault-free baseline (or, for stored real series, looks it up in the
block's original values). That keeps every fault a pure function of absolute time however the
interval is split; it also means those values ignore other faults injected on the same host.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from anomaly.metrics import DEFAULT_METRIC_NAMES, DEFAULT_METRICS
from anomaly.simulate.faults import FaultContext, fault_type
from anomaly.simulate.fleet import runnable_tasks

_KIND = {m.name: m.kind for m in DEFAULT_METRICS}
_ALL = DEFAULT_METRIC_NAMES
_DAY = 86_400
_REF_STEP = 60  # finest resolution of the reference day of seasonal_break


# ------------------------------------------------------------------------------- helpers


def _epoch(ts: datetime) -> int:
    return int(ts.astimezone(UTC).timestamp())  # as the core computes the window


def _clip(metric: str, x: np.ndarray) -> np.ndarray:
    """Physically valid values for the metric's kind (NaN stays NaN)."""
    kind = _KIND.get(metric)
    if kind == "ratio":
        return np.clip(x, 0.0, 1.0)
    if kind == "percent":
        return np.clip(x, 0.0, 100.0)
    return np.maximum(x, 0.0)


def _put(ctx: FaultContext, metric: str, new: np.ndarray, *, rint: bool = False) -> None:
    """Write ``new`` into the host's row of ``metric``, inside the window only, clipped to the kind."""
    if metric not in ctx.metrics:
        return
    x = ctx.series(metric)
    value = _clip(metric, np.rint(new) if rint else new)
    x[ctx.inside] = value[ctx.inside]


def _baseline(ctx: FaultContext, metrics: tuple[str, ...], times: np.ndarray) -> dict[str, np.ndarray]:
    """The host's fault-free values at epoch seconds ``times``, per metric (NaN where unknown).

    Re-simulated for a simulated block, so the answer does not depend on the interval the block
    covers; looked up in ``block.original`` for stored real series (NaN outside the block).
    """
    return {m: ctx.baseline(m, times) for m in metrics}


def _recovery(ctx: FaultContext, since: np.ndarray, tau: float) -> np.ndarray:
    """exp(-since / tau) after ``since >= 0`` (1 at the instant, fading), 0 before it and outside."""
    ok = ctx.inside & (since >= 0)
    return np.where(ok, np.exp(-np.where(ok, since, 0.0) / max(tau, 1.0)), 0.0)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold excursions beyond a bound back inside it (a swing that cannot go up goes down)."""
    x = np.where(x > hi, 2.0 * hi - x, x)
    return np.clip(np.where(x < lo, 2.0 * lo - x, x), lo, hi)


# ------------------------------------------------------------------------------ telemetry


@fault_type("host_reboot", metrics=_ALL, family="telemetry", effects=dict.fromkeys(_ALL, "changed"))
def host_reboot(ctx: FaultContext) -> None:
    """Host reboot: the machine goes down, boots again and comes back with cold caches.

    On a real machine (kernel upgrade, hardware watchdog, an operator's ``reboot``) node_exporter
    stops answering, so Prometheus has no samples for a few minutes (every metric missing). At
    boot the init system starts every service at once: a burst of runnable processes, CPU and
    disk reads (binaries, libraries, then data files into a cold page cache). Application heaps,
    database buffer pools and in-memory caches start empty, so ``mem_util`` is low and recovers
    as they refill, swap is empty; the load balancer and clients reconnect gradually, so
    ``tcp_established`` and the traffic it carries (bytes, packets, retransmits) start low and
    recover. Every cumulative counter (CPU seconds, bytes, packets, retransmits) restarts from
    zero at boot: the boot time is recorded in ``block.resets`` so the raw node_exporter render
    resets them. The window should cover the outage plus a few recovery times; the recovery is
    cut at the window's end.

    Params: ``outage_minutes`` (5): how long the host is down from the fault's start (the boot
    instant is start + outage, at most the window's end); ``recovery_minutes`` (20): time
    constant of the memory/cache refill (connections come back 4 times faster);
    ``boot_minutes`` (3): time constant of the boot burst. Severity scales how cold the host
    comes back (1 = empty caches, no connections at boot). The ramp is not used: a reboot is
    abrupt.
    """
    start_s, end_s = _epoch(ctx.fault.start), _epoch(ctx.fault.end)
    boot_s = min(start_s + round(max(ctx.param("outage_minutes", 5.0), 0.0) * 60.0), end_s)
    resets = ctx.block.resets.setdefault(ctx.host.name, [])
    if boot_s not in resets:  # the same fault applied twice to one block records one reboot
        resets.append(boot_s)
        resets.sort()

    s, cpus = ctx.severity, float(ctx.host.cpus)
    tau = max(ctx.param("recovery_minutes", 20.0), 0.1) * 60.0
    since = (ctx.t - boot_s).astype(np.float64)
    cold = _recovery(ctx, since, tau)  # caches and heaps refilling
    reconnect = _recovery(ctx, since, tau / 4.0)  # clients and the load balancer coming back
    burst = _recovery(ctx, since, max(ctx.param("boot_minutes", 3.0), 0.1) * 60.0)  # init storm

    v = {m: ctx.series(m).copy() for m in _ALL}  # the values before the reboot's effects
    floor = 0.08  # kernel, system daemons and agents right after boot
    mem_gap = np.maximum(v["mem_util"] - floor, 0.0)
    _put(ctx, "mem_util", v["mem_util"] - s * cold * mem_gap)
    _put(ctx, "swap_util", v["swap_util"] * (1.0 - s * cold))
    cpu = v["cpu_util"] + s * burst * np.maximum(0.9 - v["cpu_util"], 0.0)
    _put(ctx, "cpu_util", cpu)
    extra_procs = np.rint(s * burst * 2.0 * cpus)
    _put(ctx, "procs_running", v["procs_running"] + extra_procs, rint=True)
    _put(ctx, "load1", v["load1"] + cpus * np.maximum(cpu - v["cpu_util"], 0.0) + extra_procs)
    # Half of the memory refilled after boot comes back from disk (data files, mmap'd indexes),
    # on top of the init storm reading binaries and libraries.
    refill = 0.5 * s * cold * mem_gap * ctx.host.mem_bytes / tau
    extra_read = refill + s * burst * 20e6
    _put(ctx, "disk_read_bytes", v["disk_read_bytes"] + extra_read)
    _put(ctx, "disk_io_time", 1.0 - (1.0 - v["disk_io_time"]) * np.exp(-extra_read / 150e6))
    traffic = 1.0 - s * reconnect
    _put(ctx, "tcp_established", v["tcp_established"] * traffic, rint=True)
    for m in ("net_in_bytes", "net_out_bytes", "net_in_packets", "net_out_packets", "tcp_retransmits"):
        _put(ctx, m, v[m] * traffic)

    down = ctx.inside & (ctx.t < boot_s)  # no exporter, no samples
    for m in ctx.metrics:
        ctx.series(m)[down] = np.nan


@fault_type("scrape_gap", metrics=_ALL, family="telemetry", effects=dict.fromkeys(_ALL, "missing"))
def scrape_gap(ctx: FaultContext) -> None:
    """Scrape gap: Prometheus got nothing from the host for the whole window.

    The host itself is fine, but the scrape failed: a network partition between Prometheus and
    the node, node_exporter crashed or was being redeployed, a scrape timeout on an overloaded
    collector, Prometheus itself restarting. No sample exists for any affected metric (all of them
    by default) inside the window; raw counters keep counting underneath, so the first ``rate()``
    after the gap covers it.

    Params: none. Neither severity nor the ramp changes a gap (a sample is there or not).
    """
    for m in ctx.metrics:
        ctx.series(m)[ctx.inside] = np.nan


@fault_type(
    "stuck_metric",
    metrics=("cpu_util", "mem_util"),
    family="telemetry",
    effects={"cpu_util": "flat", "mem_util": "flat"},
)
def stuck_metric(ctx: FaultContext) -> None:
    """Stuck metric: an exporter bug freezes a value, which flatlines while the host keeps working.

    Typical causes: a collector that caches its last reading after an error (a hung ``/proc``
    or NFS read, a textfile collector whose cron job died and left its file behind), a
    metrics agent whose read loop deadlocked while its HTTP endpoint still serves the last
    values. Each affected metric (by default ``cpu_util`` and ``mem_util``) reports, for the
    whole window, the value it had at the fault's first sample (the first step at or after
    the start, taken from the host's fault-free values). A perfectly constant series is itself
    the anomaly: real utilisation always has noise.

    Params: none. Neither severity nor the ramp changes a flatline.
    """
    step = ctx.block.step_seconds
    first = -(-_epoch(ctx.fault.start) // step) * step  # the first sample of the window
    frozen = _baseline(ctx, ctx.metrics, np.array([first]))
    for m in ctx.metrics:
        x = ctx.series(m)
        value = frozen[m][0]
        if not np.isfinite(value):  # real series without that sample: the first one the block has
            known = np.flatnonzero(ctx.inside & np.isfinite(x))
            value = x[known[0]] if known.size else np.nan
        x[ctx.inside] = value


# swap_util is constant on a host without memory pressure: a lag cannot show on it.
_SKEWED = tuple(m for m in _ALL if m != "swap_util")


@fault_type("clock_skew", metrics=_SKEWED, family="telemetry", effects=dict.fromkeys(_SKEWED, "changed"))
def clock_skew(ctx: FaultContext) -> None:
    """Clock skew / delayed samples: the host's values arrive stamped ``lag`` seconds too late.

    When a host's clock is wrong (NTP unreachable and the clock drifting, a VM restored from a
    snapshot, a bad NTP source) and its agent stamps its own samples (remote-write agents, push
    gateways, ``honor_timestamps``), or when a buffering pipeline delivers samples late and
    re-stamps them, the value stored at time ``t`` is what the host measured at ``t - lag``.
    Inside the window every affected metric (all but ``swap_util`` by default: it is constant
    without memory pressure, so a lag does not show on it) shows the host's own series shifted
    by the lag: the daily rhythm runs late, samples from before the window are
    repeated at its start and the ones the lag skips are never seen. The ramp shapes the lag:
    ``step`` is a clock that jumped, ``linear`` one that drifts away from true time.

    Params: ``lag_seconds`` (600): the lag at full envelope, in whole seconds; a negative lag
    is a clock running ahead. Severity does not scale the lag: give ``lag_seconds`` for a larger
    skew. On stored real series the lagged value is the last stored sample at or before
    ``t - lag``, and missing (no sample) when that instant is before the stored block.
    """
    lag = ctx.param("lag_seconds", 600.0)
    idx = np.flatnonzero(ctx.inside)
    if idx.size == 0:
        return
    shift = np.rint(lag * ctx.envelope[idx]).astype(np.int64)
    lagged = _baseline(ctx, ctx.metrics, ctx.t[idx] - shift)
    for m in ctx.metrics:
        ctx.series(m)[idx] = lagged[m]


# ------------------------------------------------------------------------------ behaviour


@fault_type(
    "level_shift",
    metrics=("cpu_util", "load1", "mem_util"),
    family="behaviour",
    effects={"cpu_util": "up", "load1": "up", "mem_util": "up"},
)
def level_shift(ctx: FaultContext) -> None:
    """Level shift: a deployment or configuration change moves the host's working level for good.

    A new release with a more expensive code path, a disabled cache, a bigger heap or a larger
    connection pool: the host does the same work as before at a higher cost, so the affected
    metrics keep their daily rhythm and noise but sit higher. CPU and memory (the defaults)
    move up by a fixed number of ratio points; load follows the extra CPU (more busy cores,
    and a run queue once the host passes 80 %). Any other metric given in ``metrics`` moves up
    in proportion to its level. Ratios saturate below 1 (0.999 CPU, 0.995 memory: the kernel
    reclaims before it runs out).

    Params: ``shift`` (0.3): ratio points added at severity 1 (scaled by severity and the ramp);
    ``relative_shift`` (1.0): relative increase at severity 1 for non-ratio metrics.
    """
    s = ctx.severity * ctx.envelope
    delta = ctx.param("shift", 0.3) * s
    factor = 1.0 + ctx.param("relative_shift", 1.0) * s
    cpu0 = ctx.series("cpu_util").copy()
    caps = {"cpu_util": 0.999, "mem_util": 0.995}
    for m in ctx.metrics:
        x = ctx.series(m)
        if m == "load1" and "cpu_util" in ctx.metrics:
            cpu1 = np.maximum(cpu0, np.minimum(cpu0 + delta, caps["cpu_util"]))
            extra = runnable_tasks(ctx.host.cpus, cpu1) - runnable_tasks(ctx.host.cpus, cpu0)
            _put(ctx, m, x + extra)
        elif _KIND[m] == "ratio":
            _put(ctx, m, np.maximum(x, np.minimum(x + delta, caps.get(m, 1.0))))
        else:
            _put(ctx, m, x * factor, rint=m in ("tcp_established", "procs_running"))


@fault_type(
    "variance_change",
    metrics=("cpu_util", "load1"),
    family="behaviour",
    effects={"cpu_util": "noisier", "load1": "noisier"},
)
def variance_change(ctx: FaultContext) -> None:
    """Variance change: a metric starts flapping, much noisier around its usual level.

    A process crash-looping under its supervisor, a job that keeps starting and aborting, a
    health check flapping a node in and out of a pool, an autoscaler oscillating, or GC
    thrash: the host alternates between busy and idle from one scrape to the next. CPU (the
    default) gets an additive jitter of ``std`` ratio points; load follows the same jitter on
    all cores (same draws, so the two stay correlated). Other metrics given in ``metrics`` get
    a multiplicative jitter. Near 0 and 1 a swing folds back from the bound (a saturated host
    can only dip), so there the level creeps away from the bound.

    Params: ``std`` (0.3): CPU jitter (ratio points) at severity 1; ``sigma`` (0.6): relative
    (lognormal) jitter of non-ratio metrics at severity 1. Both scale with severity and the ramp.
    """
    s = ctx.severity * ctx.envelope
    z = ctx.noise(0)
    cpu0 = ctx.series("cpu_util").copy()
    cpu1 = _reflect(cpu0 + ctx.param("std", 0.3) * s * z, 0.001, 0.999)
    sigma = ctx.param("sigma", 0.6) * s
    for i, m in enumerate(ctx.metrics):
        x = ctx.series(m)
        if m == "cpu_util":
            _put(ctx, m, cpu1)
        elif m == "load1" and "cpu_util" in ctx.metrics:
            _put(ctx, m, x + runnable_tasks(ctx.host.cpus, cpu1) - runnable_tasks(ctx.host.cpus, cpu0))
        elif _KIND[m] == "ratio":
            _put(ctx, m, _reflect(x + ctx.param("std", 0.3) * s * ctx.noise(1 + i), 0.0, 1.0))
        else:
            jitter = np.exp(sigma * ctx.noise(1 + i) - sigma * sigma / 2.0)
            _put(ctx, m, x * jitter, rint=m in ("tcp_established", "procs_running"))


_SEASONAL = (
    "cpu_util",
    "load1",
    "net_in_bytes",
    "net_out_bytes",
    "net_in_packets",
    "net_out_packets",
    "tcp_established",
)


@fault_type("seasonal_break", metrics=_SEASONAL, family="behaviour", effects=dict.fromkeys(_SEASONAL, "down"))
def seasonal_break(ctx: FaultContext) -> None:
    """Seasonal break: the daily peak fails to appear; the host stays at its night-time level.

    Users never arrive: an upstream (DNS, CDN, load balancer, a mobile app release) routes the
    day's traffic elsewhere, a holiday nobody planned for, a batch host whose nightly run was
    not scheduled. The host is healthy and its metrics look plausible one by one, but where the
    daily rhythm should rise it stays at the day's trough: CPU, load, traffic in and out
    (bytes and packets together) and the connections that carry it. Each value is scaled by
    (trough / usual level at that hour), so the noise stays realistic; the trough and the usual
    hourly levels are the hourly means of the host's fault-free values over the same local day
    (sampled every minute, or every step if longer; for stored real series, the part of the day
    the block holds). Declared "down": plan the window over the daily peak (afternoon
    for users, around 03:00 local for batch runs); over the trough itself nothing changes.

    Params: none. Severity (with the ramp) is the share of the peak that goes missing: 1 flattens
    the day to its trough, 0.5 halves the rise above it.
    """
    idx = np.flatnonzero(ctx.inside)
    if idx.size == 0:
        return
    depth = (ctx.severity * ctx.envelope)[idx]
    offset = ctx.host.utc_offset_hours * 3600
    t = ctx.t[idx]
    days = (t + offset) // _DAY
    step = ctx.block.step_seconds * -(-_REF_STEP // ctx.block.step_seconds)  # on the block's grid
    scale = {m: np.ones(idx.size) for m in ctx.metrics}
    for day in np.unique(days):
        day_start = int(day) * _DAY - offset
        ref_t = np.arange(day_start, day_start + _DAY, step, dtype=np.int64)
        hour = (ref_t - day_start) // 3600
        ref = _baseline(ctx, ctx.metrics, ref_t)
        centres = day_start + 1800 + 3600 * np.arange(24)
        sel = days == day
        for m in ctx.metrics:
            ok = np.isfinite(ref[m])
            count = np.bincount(hour[ok], minlength=24)
            known = count > 0
            if known.sum() < 2:  # stored series covering too little of the day: nothing to compare
                continue
            hourly = np.bincount(hour[ok], ref[m][ok], minlength=24)[known] / count[known]
            usual = np.interp(t[sel], centres[known], hourly)
            trough = hourly.min()
            ratio = np.where(usual > 0, trough / np.where(usual > 0, usual, 1.0), 1.0)
            scale[m][sel] = 1.0 - depth[sel] * (1.0 - np.clip(ratio, 0.0, 1.0))
    for m in ctx.metrics:
        x = ctx.series(m)
        new = x.copy()
        new[idx] = x[idx] * scale[m]
        _put(ctx, m, new, rint=m in ("tcp_established", "procs_running"))


_CASCADE = (
    "cpu_util",
    "load1",
    "procs_running",
    "tcp_established",
    "tcp_retransmits",
    "net_out_bytes",
    "net_out_packets",
)


@fault_type(
    "cascade",
    metrics=_CASCADE,
    family="behaviour",
    effects={
        "cpu_util": "up",
        "load1": "up",
        "procs_running": "up",
        "tcp_established": "up",
        "tcp_retransmits": "up",
        "net_out_bytes": "down",
        "net_out_packets": "down",
    },
)
def cascade(ctx: FaultContext) -> None:
    """Cascade: an overload that spreads across the hosts of a role, one host after another.

    One host of a pool slows down (a hot shard, a bad request pattern, a failed peer whose
    share it took over); the load balancer and client retries shift its work onto its peers,
    which saturate in turn. The scenario planner creates one fault per host with staggered
    starts and a shared ``group``; on each host the effect is the same overload: CPU driven
    toward saturation, load and runnable processes up with a growing run queue, connections
    piling up (slow responses hold them longer and clients retry: Little's law), TCP
    retransmits up (full accept and socket queues drop segments), and fewer bytes and packets
    sent as responses slow down and time out.

    Params: ``target_cpu`` (0.97): CPU utilisation reached at severity 1; ``queue_per_cpu``
    (1.5): tasks waiting for a CPU per core at severity 1, on top of the busy cores (load and
    runnable processes). Severity and the ramp scale every effect (at 0.5: CPU halfway to the
    target, connections +75 %, retransmits several times their usual rate, sent traffic -25 %).
    """
    s = ctx.severity * ctx.envelope
    cpus = float(ctx.host.cpus)
    cpu0 = ctx.series("cpu_util").copy()
    target = np.clip(ctx.param("target_cpu", 0.97) + 0.01 * ctx.noise(0), 0.0, 0.999)
    cpu1 = cpu0 + s * np.maximum(target - cpu0, 0.0)
    # busy cores, plus request workers queueing for a CPU: up to 1.5 waiting tasks per core
    extra_run = (
        runnable_tasks(cpus, cpu1) - runnable_tasks(cpus, cpu0) + ctx.param("queue_per_cpu", 1.5) * s * cpus
    )
    _put(ctx, "cpu_util", cpu1)
    _put(ctx, "load1", ctx.series("load1") + extra_run)
    _put(ctx, "procs_running", ctx.series("procs_running") + extra_run, rint=True)
    _put(ctx, "tcp_established", ctx.series("tcp_established") * (1.0 + 1.5 * s), rint=True)
    out_packets = ctx.series("net_out_packets").copy()
    retrans = ctx.series("tcp_retransmits") * (1.0 + 4.0 * s) + 0.01 * s * out_packets
    _put(ctx, "tcp_retransmits", retrans)
    _put(ctx, "net_out_bytes", ctx.series("net_out_bytes") * (1.0 - 0.5 * s))
    _put(ctx, "net_out_packets", out_packets * (1.0 - 0.5 * s))
