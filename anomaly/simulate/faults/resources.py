"""Fault types: resources (CPU, memory, disk space and disk IO running out or being contended).

Every function below edits one host's rows inside the fault's window only, as a pure function of
absolute time: it reads the baseline values at each sample, the envelope, the elapsed time and
counter-based noise (:meth:`FaultContext.noise`), never anything carried from another sample. The
couplings follow the fleet's own baseline model (:mod:`anomaly.simulate.fleet`):

* ``load1`` counts runnable and uninterruptible (D-state) tasks: busy cores plus a run queue once
  the host saturates, so a CPU fault adds its busy threads to load and an IO fault adds the tasks
  blocked on the disk.
* ``mem_util`` is memory *demand* squeezed by the kernel beyond 0.9 (reclaim keeps it below 0.99);
  demand that no longer fits in RAM goes to swap.
* ``disk_io_time`` is the busy share of the disk, saturating with the offered load.

A metric the fault declares but the :class:`~anomaly.simulate.faults.Fault` left out of its
``metrics`` is computed (other metrics may depend on it) but not written.

Example::

    >>> from datetime import UTC, datetime
    >>> from anomaly.simulate import make_fleet, simulate_arrays
    >>> from anomaly.simulate.faults import Fault, inject
    >>> fleet = make_fleet(4, seed=7)
    >>> f = Fault("disk_fill", fleet[0].name, datetime(2025, 1, 6, 10, tzinfo=UTC),
    ...           datetime(2025, 1, 6, 12, tzinfo=UTC), severity=0.8, ramp="linear")
    >>> b = simulate_arrays(fleet, datetime(2025, 1, 6, 9, tzinfo=UTC),
    ...                     datetime(2025, 1, 6, 13, tzinfo=UTC), modifiers=[inject([f])])
    >>> float(b.values["disk_util"][0, 60 + 110])  # full before the end of the window
    1.0
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from anomaly.simulate.faults import FaultContext, envelope, fault_type
from anomaly.simulate.fleet import mix64, runnable_tasks

FAMILY = "resources"

# Noise streams (per fault): one per independent random quantity.
_N_CPU, _N_LOAD, _N_PROCS, _N_IO, _N_READ, _N_WRITE, _N_SWAP, _N_STEAL, _N_STORAGE = range(1, 10)


# ------------------------------------------------------------------------- helpers


def _write(ctx: FaultContext, metric: str, new: np.ndarray) -> None:
    """Write ``new`` into the host's row inside the window, if the fault affects ``metric``.

    Missing samples (NaN, e.g. from an earlier telemetry fault) stay missing.
    """
    if metric not in ctx.metrics:
        return
    row = ctx.series(metric)
    mask = ctx.inside & ~np.isnan(row)
    row[mask] = new[mask]


def _get(ctx: FaultContext, metric: str) -> np.ndarray:
    """A copy of the host's current row of ``metric`` (the baseline, or earlier faults' output)."""
    return ctx.series(metric).copy()


def _jitter(ctx: FaultContext, stream: int, sigma: float) -> np.ndarray:
    """Mean-one, positive multiplicative noise (lognormal) keyed by absolute time."""
    return np.exp(sigma * ctx.noise(stream) - sigma * sigma / 2.0)


def _idle_floor(ctx: FaultContext) -> np.ndarray:
    """What a saturated host still shows as idle: 0.3-3 % (interrupts, scheduler gaps)."""
    return np.clip(0.01 * _jitter(ctx, _N_CPU, 0.5), 0.003, 0.03)


def _demand(mem: np.ndarray) -> np.ndarray:
    """Invert the kernel's squeeze: the memory demand behind an observed ``mem_util``."""
    over = np.clip(1.0 - (mem - 0.9) / 0.09, 1e-4, 1.0)
    return np.where(mem < 0.9, mem, 0.9 - 0.09 * np.log(over))


def _squeeze(demand: np.ndarray) -> np.ndarray:
    """Observed ``mem_util`` for a demand: beyond 0.9, reclaim keeps usage just below 0.99."""
    squeezed = 0.9 + 0.09 * (1.0 - np.exp(-np.maximum(demand - 0.9, 0.0) / 0.09))
    return np.clip(np.where(demand < 0.9, demand, squeezed), 0.01, 0.995)


def _cum(elapsed: np.ndarray, span: float, ramp: str) -> np.ndarray:
    """Progress in [0, 1] along ``ramp`` over ``span`` seconds: 0 before 0, 1 from ``span`` on."""
    span = max(float(span), 1.0)
    shape = envelope(elapsed, 0, span, ramp)  # float bounds work as well as epoch seconds
    return np.where(elapsed >= span, 1.0, shape)


def _growth_ramp(ctx: FaultContext) -> str:
    """The fault's ramp for faults that grow by nature: a ``step`` growth is read as linear."""
    return "linear" if ctx.fault.ramp == "step" else ctx.fault.ramp


def _slot_uniform(ctx: FaultContext, slot_seconds: float, stream: int) -> np.ndarray:
    """One uniform in [0, 1) per ``slot_seconds`` slot of the window (slot 0 starts at onset)."""
    digest = hashlib.blake2b(f"{ctx.block.seed}|{ctx.fault.fault_id}|slot|{stream}".encode(), digest_size=8)
    key = int.from_bytes(digest.digest(), "little")
    slot = np.floor(np.maximum(ctx.elapsed, 0.0) / slot_seconds).astype(np.uint64)
    x = mix64(np.uint64(key) + slot * np.uint64(0x9E3779B97F4A7C15))
    return (x >> np.uint64(11)) * 2.0**-53


def _add_busy_threads(ctx: FaultContext, threads: np.ndarray) -> None:
    """``threads`` extra CPU-bound tasks (a real-valued count): CPU, load and run queue follow."""
    cpus = ctx.host.cpus
    cpu = _get(ctx, "cpu_util")
    busy = np.minimum(cpu + threads / cpus, 1.0 - _idle_floor(ctx))
    _write(ctx, "cpu_util", np.maximum(cpu, busy))
    # Every spinning thread is a runnable task: load1 counts it whether it is on a core or queued.
    _write(ctx, "load1", _get(ctx, "load1") + threads * _jitter(ctx, _N_LOAD, 0.03))
    procs = _get(ctx, "procs_running")
    extra = np.maximum(np.rint(threads + 0.5 * np.sqrt(threads) * ctx.noise(_N_PROCS)), 0.0)
    _write(ctx, "procs_running", np.maximum(procs + extra, 1.0))


# ---------------------------------------------------------------------- CPU faults


@fault_type(
    "cpu_saturation",
    metrics=("cpu_util", "load1", "procs_running"),
    family=FAMILY,
    effects={"cpu_util": "up", "load1": "up", "procs_running": "up"},
)
def cpu_saturation(ctx: FaultContext) -> None:
    """CPU saturation: a CPU-bound workload (a hot loop, a regex gone quadratic, a crypto or
    compression job, a GC storm) keeps about as many threads busy as the host has cores, so the
    CPU is pinned near 100 % (cpu_util 0.97-0.99 once the threads outnumber the cores, a small
    idle share remaining from interrupts and scheduling gaps). Every busy thread is a runnable
    task, so load1 rises by the thread count (beyond the core count the surplus waits in the run
    queue) and procs_running by about the same number.

    Params: ``threads_per_cpu`` (default ``0.6 + 0.9 * severity``: 1.05 threads per core at
    severity 0.5, 1.5 at severity 1), the busy threads per core at full envelope.
    """
    per_cpu = ctx.param("threads_per_cpu", 0.6 + 0.9 * ctx.severity)
    _add_busy_threads(ctx, ctx.envelope * per_cpu * ctx.host.cpus)


@fault_type(
    "runaway_process",
    metrics=("cpu_util", "load1", "procs_running"),
    family=FAMILY,
    effects={"cpu_util": "up", "load1": "up", "procs_running": "up"},
)
def runaway_process(ctx: FaultContext) -> None:
    """Runaway process: a supervisor or script forks workers in a loop (a crash-respawn loop, a
    fork bomb held back by a pids limit, a cron job started every minute that never finishes),
    each child spinning on a core. The number of extra processes climbs one by one until the
    pids/ulimit cap; procs_running and load1 rise by that count, and cpu_util climbs with it
    until every core is busy.

    The count grows linearly over ``climb_minutes`` with the default ``step`` ramp (a runaway
    grows by nature); with another ramp it follows that ramp over the whole window.

    Params: ``max_procs_per_cpu`` (default ``0.5 + 2.5 * severity``), the extra processes per core
    at the cap; ``climb_minutes`` (default the window, at most 60), the time to reach the cap.
    """
    cpus = ctx.host.cpus
    cap = ctx.param("max_procs_per_cpu", 0.5 + 2.5 * ctx.severity) * cpus
    if ctx.fault.ramp == "step":
        climb_s = 60.0 * ctx.param("climb_minutes", min(ctx.duration / 60.0, 60.0))
        growth = _cum(ctx.elapsed, climb_s, "linear") * ctx.envelope
    else:
        growth = ctx.envelope
    # Processes are forked one at a time: the count is an integer that steps up.
    _add_busy_threads(ctx, np.floor(cap * growth))


@fault_type(
    "noisy_neighbour",
    metrics=("cpu_util", "load1", "disk_io_time"),
    family=FAMILY,
    effects={"cpu_util": "up", "load1": "up", "disk_io_time": "up"},
)
def noisy_neighbour(ctx: FaultContext) -> None:
    """Noisy neighbour: another tenant on the same hypervisor and storage backend is busy. The
    hypervisor deschedules this VM's vCPUs, which the guest sees as steal time: cpu_util
    (1 - idle) rises and jitters from minute to minute with the neighbour's bursts (steal at
    most 0.75). The guest's own work gets fewer real cycles, so tasks stay runnable longer and
    load1 inflates by 1 / (1 - steal). The shared disks queue the neighbour's IO too, so the
    same workload keeps the disk busy longer (disk_io_time up: IO latency).

    Params: ``steal`` (default ``0.3 + 0.4 * severity``), the mean share of CPU time stolen;
    ``storage`` (default ``0.5 * severity``), the share of idle disk time taken by the
    neighbour's IO.
    """
    e = ctx.envelope
    steal = (
        e * ctx.param("steal", 0.3 + 0.4 * ctx.severity) * np.clip(1.0 + 0.3 * ctx.noise(_N_STEAL), 0.4, 1.6)
    )
    steal = np.clip(steal, 0.0, 0.75)
    cpu = _get(ctx, "cpu_util")
    _write(ctx, "cpu_util", np.clip(1.0 - (1.0 - cpu) * (1.0 - steal), 0.0, 1.0))
    _write(ctx, "load1", _get(ctx, "load1") / (1.0 - steal))
    storage = (
        e * ctx.param("storage", 0.5 * ctx.severity) * np.clip(1.0 + 0.25 * ctx.noise(_N_STORAGE), 0.4, 1.6)
    )
    io = _get(ctx, "disk_io_time")
    _write(ctx, "disk_io_time", np.clip(1.0 - (1.0 - io) * (1.0 - np.clip(storage, 0.0, 0.95)), 0.0, 1.0))


# ------------------------------------------------------------------- memory faults


@fault_type(
    "memory_leak",
    metrics=("mem_util", "swap_util"),
    family=FAMILY,
    effects={"mem_util": "up", "swap_util": "up"},
)
def memory_leak(ctx: FaultContext) -> None:
    """Memory leak: a process allocates and never frees (an unbounded cache, listeners never
    removed, a growing queue), so its resident memory grows steadily through the window. mem_util
    climbs from its normal level towards the leak's peak demand; near 90 % the kernel reclaims
    page cache and keeps usage just below 99 %, and the demand that no longer fits (the leaked
    pages are cold, the first to go) is pushed to swap, so swap_util starts rising once memory
    passes about 0.9. The leak's memory is released only at the window's end (a restart).

    The leak grows linearly with the default ``step`` ramp (a leak is never a step), otherwise
    along the fault's ramp over the window.

    Params: ``peak`` (default ``0.85 + 0.3 * severity``), the memory demand (share of RAM) reached
    at the end of the window: 1.0 at severity 0.5, 1.15 at severity 1 (deep into swap).
    """
    peak = ctx.param("peak", 0.85 + 0.3 * ctx.severity)
    growth = _cum(ctx.elapsed, ctx.duration, _growth_ramp(ctx)) * ctx.inside
    demand = _demand(_get(ctx, "mem_util"))
    leaked = demand + growth * np.maximum(peak - demand, 0.0)
    _write(ctx, "mem_util", np.maximum(_squeeze(leaked), _get(ctx, "mem_util")))
    host = ctx.host
    # Demand beyond 0.9 of RAM (and beyond what the baseline already swapped) lands in swap.
    spilled = np.maximum(leaked - np.maximum(demand, 0.9), 0.0) * (host.mem_bytes / host.swap_bytes)
    _write(ctx, "swap_util", np.clip(_get(ctx, "swap_util") + 0.8 * spilled, 0.0, 1.0))


@fault_type(
    "oom_sawtooth",
    metrics=("mem_util", "procs_running"),
    family=FAMILY,
    # procs_running only dips for a minute or two per period: "changed" rather than a sustained "down"
    effects={"mem_util": "up", "procs_running": "changed"},
)
def oom_sawtooth(ctx: FaultContext) -> None:
    """OOM sawtooth: a leaking service under a supervisor (systemd, Kubernetes) grows until the
    kernel's OOM killer (or its cgroup limit) kills it, is restarted, and leaks again. mem_util
    ramps up to about 0.98 over each period, then drops sharply back to its normal level at the
    kill; repeated, it draws a sawtooth. At each kill the service's runnable workers vanish while
    it restarts, so procs_running dips for ``restart_seconds`` (the first kill comes one period
    after onset). Each sample depends only on the elapsed time modulo the period.

    Params: ``period_minutes`` (default 20), the time from restart to the next kill;
    ``restart_seconds`` (default 120), how long the service is down; ``peak`` (default
    ``0.95 + 0.2 * severity``), the memory demand reached just before the kill (observed
    mem_util about 0.97-0.99 after the kernel's reclaim); ``dip`` (default
    ``0.5 + 0.5 * severity``), the share of runnable processes gone during the restart.
    """
    period = 60.0 * ctx.param("period_minutes", 20.0)
    restart = ctx.param("restart_seconds", 120.0)
    peak = ctx.param("peak", 0.95 + 0.2 * ctx.severity)
    dip = np.clip(ctx.param("dip", 0.5 + 0.5 * ctx.severity), 0.0, 1.0)
    e = ctx.envelope
    since_restart = np.mod(np.maximum(ctx.elapsed, 0.0), period)
    phase = since_restart / period
    mem = _get(ctx, "mem_util")
    demand = _demand(mem)
    grown = demand + e * phase * np.maximum(peak - demand, 0.0)
    _write(ctx, "mem_util", np.maximum(_squeeze(grown), mem))
    restarting = (ctx.elapsed >= period) & (since_restart < restart)
    procs = _get(ctx, "procs_running")
    # The reader itself (1) stays runnable; the service's share of the rest is gone.
    dipped = np.maximum(np.rint(1.0 + (procs - 1.0) * (1.0 - dip * e)), 1.0)
    _write(ctx, "procs_running", np.where(restarting, np.minimum(dipped, procs), procs))


@fault_type(
    "swap_thrashing",
    metrics=("swap_util", "disk_io_time", "disk_read_bytes", "disk_write_bytes", "cpu_util", "load1"),
    family=FAMILY,
    effects={
        "swap_util": "up",
        "disk_io_time": "up",
        "disk_read_bytes": "up",
        "disk_write_bytes": "up",
        "cpu_util": "up",
        "load1": "up",
    },
)
def swap_thrashing(ctx: FaultContext) -> None:
    """Swap thrashing: the working set no longer fits in RAM, so pages are evicted to swap and
    faulted back in continuously. swap_util is high; the paging shows up as disk reads (page-in)
    and writes (page-out) and keeps the disk busy (disk_io_time near saturation, small random
    IO). cpu_util rises from iowait and kswapd's reclaim work, and load1 rises with the busier
    CPU plus the tasks blocked in uninterruptible sleep on page faults (D state).

    Params: ``swap`` (default ``0.5 + 0.45 * severity``), the swap usage reached;
    ``paging_bytes`` (default 0.2 % of RAM per second, between 8 and 200 MB/s, times severity),
    the paging traffic, 60 % reads and 40 % writes.
    """
    sev, e = ctx.severity, ctx.envelope
    host = ctx.host
    swap = _get(ctx, "swap_util")
    target = ctx.param("swap", 0.5 + 0.45 * sev)
    churn = 0.01 * e * ctx.noise(_N_SWAP)
    _write(
        ctx,
        "swap_util",
        np.clip(np.maximum(swap + np.maximum(target - swap, 0.0) * e + churn, swap), 0.0, 1.0),
    )
    paging = e * ctx.param("paging_bytes", sev * np.clip(0.002 * host.mem_bytes, 8e6, 200e6))
    _write(ctx, "disk_read_bytes", _get(ctx, "disk_read_bytes") + 0.6 * paging * _jitter(ctx, _N_READ, 0.3))
    _write(
        ctx, "disk_write_bytes", _get(ctx, "disk_write_bytes") + 0.4 * paging * _jitter(ctx, _N_WRITE, 0.3)
    )
    busy = e * (0.6 + 0.38 * sev) * np.clip(1.0 + 0.1 * ctx.noise(_N_IO), 0.5, 1.05)
    io = _get(ctx, "disk_io_time")
    _write(ctx, "disk_io_time", np.clip(1.0 - (1.0 - io) * (1.0 - busy), 0.0, 1.0))
    cpu = _get(ctx, "cpu_util")
    wait = e * (0.2 + 0.4 * sev) * np.clip(_jitter(ctx, _N_CPU, 0.2), 0.0, 1.5)
    cpu_new = np.clip(1.0 - (1.0 - cpu) * (1.0 - wait), 0.0, 1.0)
    _write(ctx, "cpu_util", cpu_new)
    blocked = e * (1.0 + sev * host.cpus) * _jitter(ctx, _N_LOAD, 0.2)
    load = _get(ctx, "load1")
    _write(
        ctx,
        "load1",
        np.maximum(load + runnable_tasks(host.cpus, cpu_new) - runnable_tasks(host.cpus, cpu), load)
        + blocked,
    )


# --------------------------------------------------------------------- disk space


def _write_burst(ctx: FaultContext, progress: Callable[[np.ndarray], np.ndarray], share: np.ndarray) -> None:
    """disk_write_bytes rises by the bytes that moved ``progress`` (a function of elapsed) since the
    previous sample: a rate, like ``rate(node_disk_written_bytes_total)``, of ``share`` of the disk."""
    step = float(ctx.block.step_seconds)
    written = share * ctx.host.disk_bytes * (progress(ctx.elapsed) - progress(ctx.elapsed - step)) / step
    _write(
        ctx,
        "disk_write_bytes",
        _get(ctx, "disk_write_bytes") + written * np.clip(_jitter(ctx, _N_WRITE, 0.1), 0.7, 1.1),
    )


@fault_type(
    "disk_fill",
    metrics=("disk_util", "disk_write_bytes"),
    family=FAMILY,
    effects={"disk_util": "up", "disk_write_bytes": "up"},
)
def disk_fill(ctx: FaultContext) -> None:
    """Disk fill: something writes to the root filesystem without bound (logs at debug level with
    rotation broken, a runaway temp file, a core dump loop, a stuck upload spool), so disk_util
    climbs to 100 % and stays pinned there: once the filesystem is full, writes fail (ENOSPC)
    and disk_write_bytes falls back to its normal rate. While it fills, disk_write_bytes rises by
    the fill rate (the space gained per second).

    The fill follows the fault's ramp (``step`` is read as linear) and completes at ``full_at``.

    Params: ``full_at`` (default ``clip(1.5 - severity, 0.5, 1)``), the share of the window after
    which the disk is full: the window's end up to severity 0.5, half-way at severity 1.
    """
    full_at = float(np.clip(ctx.param("full_at", np.clip(1.5 - ctx.severity, 0.5, 1.0)), 0.01, 1.0))
    span = full_at * ctx.duration
    ramp = _growth_ramp(ctx)

    def progress(elapsed: np.ndarray) -> np.ndarray:
        return _cum(elapsed, span, ramp)

    disk = _get(ctx, "disk_util")
    filled = progress(ctx.elapsed)
    _write(ctx, "disk_util", np.where(filled >= 1.0, 1.0, np.clip(disk + (1.0 - disk) * filled, 0.0, 1.0)))
    _write_burst(ctx, progress, 1.0 - disk)


@fault_type(
    "disk_jump",
    metrics=("disk_util", "disk_write_bytes"),
    family=FAMILY,
    effects={"disk_util": "up", "disk_write_bytes": "up"},
)
def disk_jump(ctx: FaultContext) -> None:
    """Sudden disk usage jump: a one-off burst of writes (a core dump, a heap dump, a log storm
    from an error loop, an unrotated archive) takes a slab of the root filesystem at once.
    disk_util steps up at onset and stays up for the window (nobody has cleaned up yet);
    disk_write_bytes spikes for the first minutes, as long as the device needs to write the slab
    at its write ceiling, then returns to normal.

    With the default ``step`` ramp the slab lands as fast as the disk can write it; with another
    ramp it accumulates along that ramp over the window.

    Params: ``jump`` (default 0.3; times severity), the share of the disk taken;
    ``write_ceiling`` (default 500e6 bytes/s), the device's sequential write throughput.
    """
    jump = ctx.param("jump", 0.3) * ctx.severity
    step = float(ctx.block.step_seconds)
    if ctx.fault.ramp == "step":
        burst = max(step, jump * ctx.host.disk_bytes / ctx.param("write_ceiling", 500e6))
        # The slab starts landing one step before the window's first sample (the first grid point
        # at or after the start), so that sample already shows it and its write rate covers it.
        lead = float(-int(ctx.fault.start.timestamp()) % ctx.block.step_seconds)

        def progress(elapsed: np.ndarray) -> np.ndarray:
            return np.clip((elapsed - lead + step) / burst, 0.0, 1.0)

    else:
        ramp, duration = ctx.fault.ramp, ctx.duration

        def progress(elapsed: np.ndarray) -> np.ndarray:
            return _cum(elapsed, duration, ramp)

    disk = _get(ctx, "disk_util")
    _write(ctx, "disk_util", np.clip(disk + jump * progress(ctx.elapsed), 0.0, 1.0))
    _write_burst(ctx, progress, np.full_like(disk, jump))


# ------------------------------------------------------------------------ disk IO


@fault_type(
    "io_latency_spike",
    metrics=("disk_io_time", "disk_read_bytes", "disk_write_bytes", "load1"),
    family=FAMILY,
    effects={"disk_io_time": "up", "disk_read_bytes": "down", "disk_write_bytes": "down", "load1": "up"},
)
def io_latency_spike(ctx: FaultContext) -> None:
    """IO latency spike: the disk turns slow in bursts (a degraded RAID member retrying, an SSD's
    garbage collection, a throttled cloud volume out of burst credits, a SAN path failover). Each
    IO takes far longer, so the disk is busy almost all the time (disk_io_time near 1 during a
    burst) while it completes fewer requests: read and write throughput fall. Tasks waiting on
    the disk sleep uninterruptibly (D state) and count in load1. Bursts last ``burst_minutes``;
    the first starts at onset, the others hit a random ``duty`` share of the later slots, and
    between bursts latency stays somewhat raised.

    Params: ``burst_minutes`` (default 5); ``duty`` (default ``0.3 + 0.4 * severity``), the share
    of slots in a burst; ``throughput_loss`` (default ``0.6 + 0.35 * severity``), the share of
    throughput lost during a burst.
    """
    sev, e = ctx.severity, ctx.envelope
    host = ctx.host
    slot_s = 60.0 * ctx.param("burst_minutes", 5.0)
    duty = ctx.param("duty", 0.3 + 0.4 * sev)
    in_burst = (ctx.elapsed < slot_s) | (_slot_uniform(ctx, slot_s, 0) < duty)
    level = e * np.where(in_burst, 1.0, 0.3 * sev)
    io = _get(ctx, "disk_io_time")
    target = np.clip((0.9 + 0.09 * sev) * (1.0 + 0.02 * ctx.noise(_N_IO)), 0.0, 1.0)
    _write(ctx, "disk_io_time", io + np.maximum(target - io, 0.0) * level)
    loss = np.clip(ctx.param("throughput_loss", 0.6 + 0.35 * sev), 0.0, 0.99)
    kept = 1.0 - loss * level
    _write(ctx, "disk_read_bytes", _get(ctx, "disk_read_bytes") * kept)
    _write(ctx, "disk_write_bytes", _get(ctx, "disk_write_bytes") * kept)
    blocked = level * (1.0 + 0.75 * sev * host.cpus) * _jitter(ctx, _N_LOAD, 0.2)
    _write(ctx, "load1", _get(ctx, "load1") + blocked)


@fault_type(
    "io_saturation",
    metrics=("disk_io_time", "disk_read_bytes", "disk_write_bytes", "load1"),
    family=FAMILY,
    effects={"disk_io_time": "up", "disk_read_bytes": "up", "disk_write_bytes": "up", "load1": "up"},
)
def io_saturation(ctx: FaultContext) -> None:
    """IO saturation: a bulk job (a backup or restore, a reindex, an LSM compaction, a large
    copy, a full table scan) issues IO as fast as the device serves it. The disk is busy all the
    time (disk_io_time pinned near 1.0) and read and write throughput climb to the device's
    ceiling (at least 1.5 times their normal level); every other task that needs the disk
    queues behind the job in uninterruptible sleep, which raises load1.

    Params: ``ceiling_bytes`` (default 250e6 bytes/s), the device's throughput ceiling, 60 %
    reads and 40 % writes; the throughput moves ``0.5 + 0.5 * severity`` of the way there.
    """
    sev, e = ctx.severity, ctx.envelope
    host = ctx.host
    io = _get(ctx, "disk_io_time")
    target = np.clip(0.995 - 0.02 * (1.0 - sev) - 0.01 * np.minimum(np.abs(ctx.noise(_N_IO)), 2.0), 0.0, 1.0)
    _write(ctx, "disk_io_time", io + np.maximum(target - io, 0.0) * e)
    ceiling = ctx.param("ceiling_bytes", 250e6)
    share = e * (0.5 + 0.5 * sev)
    for metric, part, stream in (("disk_read_bytes", 0.6, _N_READ), ("disk_write_bytes", 0.4, _N_WRITE)):
        now = _get(ctx, metric)
        top = np.maximum(part * ceiling, 1.5 * now) * _jitter(ctx, stream, 0.05)
        _write(ctx, metric, now + np.maximum(top - now, 0.0) * share)
    blocked = e * (1.0 + 0.5 * sev * host.cpus) * _jitter(ctx, _N_LOAD, 0.2)
    _write(ctx, "load1", _get(ctx, "load1") + blocked)


__all__ = [
    "cpu_saturation",
    "disk_fill",
    "disk_jump",
    "io_latency_spike",
    "io_saturation",
    "memory_leak",
    "noisy_neighbour",
    "oom_sawtooth",
    "runaway_process",
    "swap_thrashing",
]
