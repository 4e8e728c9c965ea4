"""A simulated fleet whose metrics are pure functions of absolute time.

Every value is computed from ``(seed, host name, noise stream, epoch second)``
alone: seasonality from the local clock, smooth variation from a few seeded
sinusoids of absolute time, white noise from a counter-based hash (splitmix64
in numpy ``uint64`` arithmetic). Nothing is carried from one sample to the
next, so any interval can be generated on its own and still agree bitwise with
a longer run that covers it::

    simulate(fleet, a, c) == concat(simulate(fleet, a, b), simulate(fleet, b, c))

Generation has two stages: a clean *baseline* per host and metric (clipped to
the metric's kind), then a list of *modifiers* (see :data:`Modifier`), each a
callable that edits the :class:`SimBlock` in place. Fault injection plugs in
there; modifiers run after the clipping so that they may also produce values a
real source could deliver broken (negative, NaN) for the ingest checks to catch.

Example::

    >>> from datetime import UTC, datetime
    >>> fleet = make_fleet(4, seed=7)
    >>> [h.name for h in fleet]
    ['cache-prod-01', 'database-prod-01', 'batch-prod-01', 'web-prod-01']
    >>> df = simulate(fleet, datetime(2025, 1, 6, tzinfo=UTC),
    ...               datetime(2025, 1, 6, 1, tzinfo=UTC), step_seconds=60, seed=7)
    >>> len(df) == 60 * 4 * 15
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from anomaly.metrics import DEFAULT_METRIC_NAMES, DEFAULT_METRICS
from anomaly.sources.base import empty_frame, require_aware

ROLES: tuple[str, ...] = ("web", "database", "batch", "cache")
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")

_GIB = 1 << 30
_GB = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = 86_400
_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------- hosts


@dataclass(frozen=True)
class Host:
    """One simulated machine. Its ``name`` (with the seed) keys all of its random streams.

    Example::

        >>> Host("web-prod-01", "web", "prod", cpus=4, mem_bytes=8 << 30, disk_bytes=100 * 10**9,
        ...      swap_bytes=2 << 30).role
        'web'
    """

    name: str
    role: str
    environment: str
    cpus: int
    mem_bytes: int
    disk_bytes: int
    swap_bytes: int
    utc_offset_hours: int = 0  # the local clock its users (or cron jobs) live by
    uptime_s: int = 7 * _DAY  # uptime when a raw-series render starts: seeds counter values

    def __post_init__(self) -> None:
        if self.role not in (*ROLES, "unknown"):  # 'unknown': a real host from the store
            raise ValueError(f"host {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.environment not in (*ENVIRONMENTS, "unknown"):
            raise ValueError(
                f"host {self.name!r}: environment must be one of {ENVIRONMENTS}, got {self.environment!r}"
            )
        if self.cpus < 1 or self.mem_bytes <= 0 or self.disk_bytes <= 0 or self.swap_bytes <= 0:
            raise ValueError(f"host {self.name!r}: cpus, memory, disk and swap must be positive")

    @property
    def key(self) -> int:
        """A stable 64-bit key of the name (not Python's per-process ``hash``)."""
        return int.from_bytes(hashlib.blake2b(self.name.encode(), digest_size=8).digest(), "little")


# Fleet mix: web-heavy like most service fleets, mostly prod.
_ROLE_WEIGHTS = (0.4, 0.2, 0.2, 0.2)
_ENV_WEIGHTS = {"dev": 0.15, "staging": 0.25, "prod": 0.6}
_CPU_CHOICES = {"web": (4, 8), "database": (8, 16, 32), "batch": (8, 16, 32), "cache": (4, 8)}
_MEM_PER_CPU_GIB = {"web": (2, 4), "database": (8,), "batch": (4, 8), "cache": (8,)}
_DISK_GB = {"web": (50, 200), "database": (500, 2000), "batch": (200, 1000), "cache": (50, 200)}
_UTC_OFFSETS = ((0, 0.3), (1, 0.2), (-5, 0.3), (8, 0.2))


def make_fleet(n_hosts: int, seed: int) -> list[Host]:
    """``n_hosts`` hosts, deterministic for ``seed``; a prefix of a larger fleet of the same seed.

    The first four hosts are one prod host of each role (in a seed-dependent order), so
    every fleet of four or more covers all roles. Names are ``<role>-<env>-<nn>``.

    Example::

        >>> [h.name for h in make_fleet(8, seed=7)][4:]
        ['web-staging-01', 'web-prod-02', 'database-prod-02', 'web-dev-01']
    """
    if n_hosts < 0:
        raise ValueError(f"n_hosts must be >= 0, got {n_hosts}")
    seed_u = seed & _MASK64
    first_roles = np.random.default_rng(np.random.SeedSequence([seed_u, 0xF1EE7])).permutation(len(ROLES))
    counts: dict[tuple[str, str], int] = {}
    fleet: list[Host] = []
    for i in range(n_hosts):
        # One generator per host index: adding hosts never changes the existing ones.
        rng = np.random.default_rng(np.random.SeedSequence([seed_u, i]))
        role = ROLES[int(rng.choice(len(ROLES), p=_ROLE_WEIGHTS))]
        env = str(rng.choice(list(_ENV_WEIGHTS), p=list(_ENV_WEIGHTS.values())))
        if i < len(ROLES):
            role, env = ROLES[int(first_roles[i])], "prod"
        cpus = int(rng.choice(_CPU_CHOICES[role]))
        if env != "prod":  # pre-production runs on smaller instances
            cpus = max(2, cpus // (2 if env == "staging" else 4))
        mem = cpus * int(rng.choice(_MEM_PER_CPU_GIB[role])) * _GIB
        lo, hi = _DISK_GB[role]
        disk = int(rng.integers(lo, hi + 1)) * _GB
        swap = int(min(max(mem // 4, 1 * _GIB), 8 * _GIB))
        offsets, weights = zip(*_UTC_OFFSETS, strict=True)
        offset = int(rng.choice(offsets, p=weights))
        uptime = int(rng.integers(1 * _DAY, 120 * _DAY))
        counts[role, env] = counts.get((role, env), 0) + 1
        name = f"{role}-{env}-{counts[role, env]:02d}"
        fleet.append(Host(name, role, env, cpus, mem, disk, swap, offset, uptime))
    return fleet


# ------------------------------------------------------------------- the step grid


def _epoch_us(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def time_grid(start: datetime, end: datetime, step_seconds: int) -> np.ndarray:
    """Epoch seconds ``t`` with ``t % step_seconds == 0`` and ``start <= t < end`` (int64).

    Example::

        >>> time_grid(datetime(2025, 1, 1, 0, 0, 30, tzinfo=UTC),
        ...           datetime(2025, 1, 1, 0, 3, tzinfo=UTC), 60) % 86400
        array([ 60, 120])
    """
    require_aware(start, end)
    if step_seconds <= 0:
        raise ValueError(f"step_seconds must be positive, got {step_seconds}")
    step_us = int(step_seconds) * 1_000_000
    first = -(-_epoch_us(start) // step_us) * step_us
    return np.arange(first, _epoch_us(end), step_us, dtype=np.int64) // 1_000_000


# ---------------------------------------------------------- counter-based randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO53 = 2.0**-53


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic, element-wise)."""
    x = x ^ (x >> _S30)
    x = x * _C1
    x = x ^ (x >> _S27)
    x = x * _C2
    return x ^ (x >> _S31)


def _mix_int(x: int) -> int:
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class _Streams:
    """Independent random streams per (seed, host, stream id), as pure functions of a counter."""

    def __init__(self, seed: int, fleet: Sequence[Host]) -> None:
        self._seed = _mix_int((seed & _MASK64) + 0x9E3779B97F4A7C15)
        self._hosts = [_mix_int(self._seed ^ h.key) for h in fleet]

    def keys(self, stream: int) -> np.ndarray:
        """(H, 1) uint64 stream keys."""
        s = _mix_int(stream * 0xD1B54A32D192ED03 + 1)
        return np.array([[_mix_int(h ^ s)] for h in self._hosts], dtype=np.uint64)

    def uniform(self, stream: int, counter: int = 0) -> np.ndarray:
        """(H, 1) uniforms in [0, 1): one per host, for per-host parameters."""
        c = np.array([counter & _MASK64], dtype=np.uint64)
        return (mix64(self.keys(stream) + c * _GOLDEN) >> _S11) * _TWO53

    def normal(self, stream: int, t: np.ndarray) -> np.ndarray:
        """(H, T) standard normals keyed by epoch second (Box-Muller on two hashes)."""
        k = self.keys(stream)
        c = t.astype(np.uint64) * np.uint64(2)
        u1 = ((mix64(k + c * _GOLDEN) >> _S11) + np.uint64(1)) * _TWO53  # (0, 1]: log is finite
        u2 = (mix64(k + (c + np.uint64(1)) * _GOLDEN) >> _S11) * _TWO53
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)

    def smooth(self, stream: int, t: np.ndarray, pmin: int, pmax: int, terms: int = 3) -> np.ndarray:
        """(H, T) slow variation, unit variance: a sum of sinusoids of seeded integer periods.

        ``t`` is (T,) epoch seconds, or (H, T) per-host arguments (e.g. the local day's start).

        Phases are taken modulo the integer period in integer arithmetic, so the sine's
        argument stays small and exact whatever the epoch.
        """
        acc: np.ndarray | float = 0.0
        norm = 0.0
        for k in range(terms):
            period = (pmin + np.floor(self.uniform(stream, 3 * k) * (pmax - pmin))).astype(np.int64)
            offset = np.floor(self.uniform(stream, 3 * k + 1) * period).astype(np.int64)
            amp = 0.5 + self.uniform(stream, 3 * k + 2)
            acc += amp * np.sin((2.0 * np.pi) * (((t + offset) % period) / period))
            norm = norm + amp * amp / 2.0
        return np.broadcast_to(acc / np.sqrt(norm), (len(self._hosts), t.shape[-1]))


def runnable_tasks(cpus: float | np.ndarray, cpu: np.ndarray) -> np.ndarray:
    """The fleet's load model: busy cores, plus a run queue that builds beyond 80 % CPU.

    Faults that change CPU use it too, so load follows CPU the way the baseline does.
    """
    return cpus * cpu * (1.0 + np.maximum(cpu - 0.8, 0.0) / 0.2)


def _lognormal(sigma: float | np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mean-one multiplicative noise: positive, relative (proportional to the level)."""
    return np.exp(sigma * z - sigma * sigma / 2.0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ------------------------------------------------------------------ role parameters

# Per-role ranges (lo, hi); each host draws its own value uniformly in the range.
_ROLE_PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    # cpu_amp: CPU share per unit of activity; *_noise: relative white noise (lognormal sigma).
    "cpu_amp": {"web": (0.45, 0.65), "database": (0.35, 0.5), "batch": (0.6, 0.72), "cache": (0.15, 0.3)},
    "cpu_noise": {
        "web": (0.07, 0.09),
        "database": (0.05, 0.06),
        "batch": (0.12, 0.15),
        "cache": (0.06, 0.07),
    },
    # Bytes/s received at peak activity; out/in ratio: web answers small requests with large
    # responses, batch pulls data in and sends little.
    "net_peak": {"web": (1e6, 6e6), "database": (0.5e6, 3e6), "batch": (10e6, 60e6), "cache": (1e6, 5e6)},
    "out_ratio": {"web": (5.0, 10.0), "database": (2.0, 5.0), "batch": (0.1, 0.3), "cache": (3.0, 6.0)},
    "net_noise": {"web": (0.08, 0.1), "database": (0.07, 0.08), "batch": (0.15, 0.18), "cache": (0.07, 0.08)},
    # Mean packet sizes: requests and ACKs are small, responses and bulk transfers near the MTU.
    "pkt_in": {"web": (250, 400), "database": (300, 600), "batch": (1200, 1400), "cache": (150, 300)},
    "pkt_out": {"web": (1000, 1300), "database": (800, 1200), "batch": (150, 300), "cache": (500, 900)},
    # Connections: a standing base (pools, monitoring, ssh) plus a share that scales with
    # traffic (Little's law: concurrent connections = arrival rate x duration).
    "conn_base": {"web": (20, 60), "database": (40, 200), "batch": (5, 20), "cache": (50, 300)},
    "conn_peak": {"web": (300, 3000), "database": (20, 100), "batch": (10, 60), "cache": (100, 800)},
    "mem_base": {"web": (0.35, 0.55), "database": (0.70, 0.80), "batch": (0.25, 0.38), "cache": (0.60, 0.80)},
    "mem_amp": {"web": (0.08, 0.15), "database": (0.06, 0.12), "batch": (0.40, 0.55), "cache": (0.02, 0.05)},
    # Daily root-filesystem growth (logs, WAL, temp files), released by the midnight rotation.
    "disk_growth": {
        "web": (0.01, 0.03),
        "database": (0.005, 0.02),
        "batch": (0.02, 0.06),
        "cache": (0.001, 0.005),
    },
    "read_peak": {
        "web": (0.05e6, 0.5e6),
        "database": (5e6, 40e6),
        "batch": (20e6, 120e6),
        "cache": (0.01e6, 0.1e6),
    },
    "write_peak": {
        "web": (0.1e6, 0.6e6),
        "database": (2e6, 20e6),
        "batch": (10e6, 80e6),
        "cache": (0.2e6, 1e6),
    },
    "disk_noise": {"web": (0.2, 0.2), "database": (0.15, 0.15), "batch": (0.25, 0.25), "cache": (0.2, 0.2)},
    # Sustained read throughput the disk can do (SSD for databases).
    "disk_cap": {
        "web": (120e6, 400e6),
        "database": (300e6, 600e6),
        "batch": (120e6, 400e6),
        "cache": (120e6, 400e6),
    },
}
# Pre-production carries a fraction of the traffic on smaller boxes, and is noisier
# relative to its level (a handful of users and test runs instead of a smooth crowd).
_ENV_TRAFFIC = {"prod": 1.0, "staging": 0.2, "dev": 0.06}
_ENV_UTIL = {"prod": 1.0, "staging": 0.55, "dev": 0.35}
_ENV_NOISE = {"prod": 1.0, "staging": 1.25, "dev": 1.6}

# Stream ids: one per independent random quantity. Never renumber: it changes the data.
(
    _S_ACT,
    _S_CPU,
    _S_CPU_BASE,
    _S_LOAD,
    _S_PROCS,
    _S_NET_IN,
    _S_NET_OUT,
    _S_PKT_IN,
    _S_PKT_OUT,
    _S_RETRANS,
    _S_LOSS,
    _S_CONN,
    _S_MEM,
    _S_MEM_SMOOTH,
    _S_SWAP,
    _S_DISK,
    _S_DISK_SMOOTH,
    _S_READ,
    _S_WRITE,
    _S_IO,
    _S_BG,
    _S_EVENT,
) = range(1, 23)
_PARAM_STREAM = {name: 1000 + i for i, name in enumerate(_ROLE_PARAMS)}


def _role_param(streams: _Streams, fleet: Sequence[Host], name: str) -> np.ndarray:
    lo = np.array([[_ROLE_PARAMS[name][h.role][0]] for h in fleet])
    hi = np.array([[_ROLE_PARAMS[name][h.role][1]] for h in fleet])
    return lo + streams.uniform(_PARAM_STREAM[name]) * (hi - lo)


def _column(fleet: Sequence[Host], table: dict[str, float], attr: str) -> np.ndarray:
    return np.array([[table[getattr(h, attr)]] for h in fleet])


# --------------------------------------------------------------------- the baseline


def _activity(fleet: Sequence[Host], streams: _Streams, t: np.ndarray) -> np.ndarray:
    """(H, T) demand on each host, about 0..1, from its role's daily and weekly rhythm."""
    local = t[None, :] + np.array([[h.utc_offset_hours * 3600] for h in fleet], dtype=np.int64)
    hod = (local % _DAY) / _DAY  # fraction of the local day
    dow = ((local // _DAY) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    week = dow + hod
    # Users: a broad afternoon peak (14:00), a night trough, 35 % less on weekends.
    c = 0.5 + 0.5 * np.cos(2.0 * np.pi * (hod - 14.0 / 24.0))
    weekend = _smoothstep((week - 4.9) / 0.2) * _smoothstep((7.0 - week) / 0.2)
    web = (0.12 + 0.88 * c * np.sqrt(c)) * (1.0 - 0.35 * weekend)
    # Batch: the nightly run around 03:00 plus five-minute hourly cron jobs.
    dh = ((hod * 24.0 - 3.0 + 12.0) % 24.0) - 12.0
    night = np.exp(-0.5 * (dh / 1.3) ** 2)
    cron = ((local % 3600) < 300).astype(np.float64)
    batch = 0.06 + 0.86 * night + 0.12 * cron
    role = np.array([[h.role] for h in fleet])
    base = np.where(role == "batch", batch, np.where(role == "database", 0.3 + 0.7 * web, web))
    # Slow drift (campaigns, cache churn, data volume) from seeded sinusoids, 30 min to 2 days.
    drift = np.clip(1.0 + 0.12 * streams.smooth(_S_ACT, t, 1800, 2 * _DAY), 0.7, 1.3)
    return base * drift


def _baseline(fleet: Sequence[Host], t: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Canonical metric -> (H, T) float64 values, clipped to each metric's kind."""
    s = _Streams(seed, fleet)
    p = {name: _role_param(s, fleet, name) for name in _ROLE_PARAMS}
    cpus = np.array([[h.cpus] for h in fleet], dtype=np.float64)
    env_traffic = _column(fleet, _ENV_TRAFFIC, "environment")
    env_noise = _column(fleet, _ENV_NOISE, "environment")
    local = t[None, :] + np.array([[h.utc_offset_hours * 3600] for h in fleet], dtype=np.int64)
    hod = (local % _DAY) / _DAY
    role = np.array([[h.role] for h in fleet])
    act = _activity(fleet, s, t)
    v: dict[str, np.ndarray] = {}

    # CPU: an idle floor (daemons) plus work proportional to demand, with relative noise,
    # so that even a quiet host's utilisation varies in proportion to its level.
    cpu_floor = 0.02 + 0.04 * s.uniform(_S_CPU_BASE)
    cpu_mean = cpu_floor + p["cpu_amp"] * _column(fleet, _ENV_UTIL, "environment") * act
    cpu = np.clip(cpu_mean * _lognormal(p["cpu_noise"] * env_noise, s.normal(_S_CPU, t)), 0.001, 0.999)
    v["cpu_util"] = cpu
    # Load counts runnable tasks: busy cores, plus a run queue that builds once the host
    # saturates; its own noise (2 %) is far below cpu's (>= 5 %), so load tracks cpu closely.
    runnable = runnable_tasks(cpus, cpu)
    v["load1"] = runnable * _lognormal(0.02, s.normal(_S_LOAD, t))

    # Memory: demand = role base + working set that scales with activity + slow drift (caches,
    # GC). Demand beyond ~90 % is squeezed by the kernel, the excess over 85 % goes to swap:
    # swap moves only under memory pressure and is flat (old swapped-out pages) otherwise.
    mem_demand = (
        p["mem_base"]
        + p["mem_amp"] * act
        + 0.015 * s.smooth(_S_MEM_SMOOTH, t, 7200, 3 * _DAY)
        + 0.002 * s.normal(_S_MEM, t)
    )
    squeezed = 0.9 + 0.09 * (1.0 - np.exp(-(mem_demand - 0.9) / 0.09))
    v["mem_util"] = np.clip(np.where(mem_demand < 0.9, mem_demand, squeezed), 0.01, 0.995)
    swap_floor = 0.02 * s.uniform(_S_SWAP)
    v["swap_util"] = np.clip(swap_floor + 2.5 * np.maximum(mem_demand - 0.85, 0.0), 0.0, 1.0)

    # Root filesystem: logs/WAL/temp files grow through the local day and are rotated away at
    # local midnight. Data growth over weeks shifts the level left after rotation: the drift is
    # sampled at the local day's start, so within a day usage only rises.
    disk_level = 0.15 + 0.45 * s.uniform(_S_DISK)
    day_start = local - local % _DAY
    v["disk_util"] = np.clip(
        disk_level
        + p["disk_growth"] * hod
        + 0.02 * s.smooth(_S_DISK_SMOOTH, day_start, 5 * _DAY, 40 * _DAY)
        + 3e-5 * s.normal(_S_DISK, t),
        0.0,
        1.0,
    )

    # Disk throughput follows demand; scheduled events add bursts: the database's nightly
    # backup reads the data files 02:00-02:40, caches snapshot to disk at the top of each hour.
    io_scale = np.sqrt(env_traffic)
    dnoise = p["disk_noise"] * env_noise
    bg_read = 1e3 + 2e4 * s.uniform(_S_BG, 0)
    bg_write = 1e4 + 1e5 * s.uniform(_S_BG, 1)
    backup = (
        (role == "database")
        * ((hod >= 2.0 / 24.0) & (hod < 2.0 / 24.0 + 40.0 / 1440.0))
        * (60e6 + 90e6 * s.uniform(_S_EVENT, 0))
    )
    snapshot = (role == "cache") * ((local % 3600) < 120) * (20e6 + 60e6 * s.uniform(_S_EVENT, 1)) * io_scale
    read = bg_read + p["read_peak"] * io_scale * act * _lognormal(dnoise, s.normal(_S_READ, t)) + backup
    write = bg_write + p["write_peak"] * io_scale * act * _lognormal(dnoise, s.normal(_S_WRITE, t)) + snapshot
    v["disk_read_bytes"] = read
    v["disk_write_bytes"] = write
    # Busy time saturates with throughput relative to the device's capability (queueing).
    load_ratio = (read / p["disk_cap"] + write / (0.7 * p["disk_cap"])) * _lognormal(0.1, s.normal(_S_IO, t))
    v["disk_io_time"] = 1.0 - np.exp(-load_ratio)

    # Network: received bytes are the demand; sent bytes are the replies to it (role ratio)
    # with little noise of their own, so out tracks in. A constant background (scrapes, ssh,
    # DNS) sits under both.
    bg_in = 5e3 + 2.5e4 * s.uniform(_S_BG, 2)
    bg_out = 5e3 + 2.5e4 * s.uniform(_S_BG, 3)
    demand_in = (
        p["net_peak"] * env_traffic * act * _lognormal(p["net_noise"] * env_noise, s.normal(_S_NET_IN, t))
    )
    v["net_in_bytes"] = bg_in + demand_in
    v["net_out_bytes"] = bg_out + p["out_ratio"] * demand_in * _lognormal(0.03, s.normal(_S_NET_OUT, t))
    v["net_in_packets"] = v["net_in_bytes"] / p["pkt_in"] * _lognormal(0.02, s.normal(_S_PKT_IN, t))
    v["net_out_packets"] = v["net_out_bytes"] / p["pkt_out"] * _lognormal(0.02, s.normal(_S_PKT_OUT, t))
    # Retransmits: a host-specific loss rate on the packets sent, worse when the link is busy.
    loss = 10.0 ** (-4.0 + 1.3 * s.uniform(_S_LOSS))
    congestion = 1.0 + 4.0 * np.maximum(act - 0.85, 0.0)
    v["tcp_retransmits"] = (
        v["net_out_packets"] * loss * congestion * _lognormal(0.35, s.normal(_S_RETRANS, t))
    )
    v["tcp_established"] = np.rint(
        p["conn_base"] + p["conn_peak"] * env_traffic * act * _lognormal(0.05, s.normal(_S_CONN, t))
    )
    # Runnable processes: roughly Poisson around the busy cores, +1 for the reader itself.
    procs = 1.0 + runnable + np.sqrt(runnable) * s.normal(_S_PROCS, t)
    v["procs_running"] = np.maximum(np.rint(procs), 1.0)
    return clip_to_kinds({m: v[m] for m in DEFAULT_METRIC_NAMES})


_KIND_OF = {m.name: m.kind for m in DEFAULT_METRICS}


def clip_to_kinds(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Clip each metric to its kind's range: ratio [0, 1], percent [0, 100], others >= 0.

    Example::

        >>> clip_to_kinds({"cpu_util": np.array([1.5]), "load1": np.array([-1.0])})
        {'cpu_util': array([1.]), 'load1': array([0.])}
    """
    out = {}
    for name, x in values.items():
        kind = _KIND_OF.get(name)
        if kind == "ratio":
            out[name] = np.clip(x, 0.0, 1.0)
        elif kind == "percent":
            out[name] = np.clip(x, 0.0, 100.0)
        elif kind is None:
            out[name] = x
        else:
            out[name] = np.maximum(x, 0.0)
    return out


# --------------------------------------------------------------- block + modifiers


@dataclass
class SimBlock:
    """One generated interval, handed to each modifier in turn.

    ``values[metric]`` has shape ``(len(fleet), len(t))``; row ``i`` is ``fleet[i]``.
    A modifier must stay a pure function of absolute time (``t``, the host, the seed) for
    the interval-split property to survive it.
    """

    fleet: tuple[Host, ...]
    t: np.ndarray  # (T,) int64 epoch seconds on the step grid
    step_seconds: int
    seed: int
    values: dict[str, np.ndarray]
    # host name -> epoch seconds at which the host rebooted: raw counters restart from 0 there
    resets: dict[str, list[int]] = field(default_factory=dict)
    # fault-free values of a block of REAL series (injection into stored data); None when simulated
    original: dict[str, np.ndarray] | None = None


Modifier = Callable[[SimBlock], None]
"""Edits a :class:`SimBlock` in place after the baseline (e.g. injects a fault)."""


def simulate_arrays(
    fleet: Sequence[Host],
    start: datetime,
    end: datetime,
    step_seconds: int = 60,
    seed: int = 7,
    *,
    modifiers: Sequence[Modifier] = (),
) -> SimBlock:
    """The interval as arrays: baseline per host and metric, then ``modifiers`` in order.

    Example::

        >>> from datetime import UTC, datetime
        >>> b = simulate_arrays(make_fleet(2, 7), datetime(2025, 1, 1, tzinfo=UTC),
        ...                     datetime(2025, 1, 1, 1, tzinfo=UTC))
        >>> b.values["cpu_util"].shape
        (2, 60)
    """
    fleet = tuple(fleet)
    names = [h.name for h in fleet]
    if len(set(names)) != len(names):
        raise ValueError("host names in a fleet must be unique (they key the random streams)")
    t = time_grid(start, end, step_seconds)
    values = (
        _baseline(fleet, t, seed)
        if fleet and t.size
        else {m: np.empty((len(fleet), t.size)) for m in DEFAULT_METRIC_NAMES}
    )
    block = SimBlock(fleet, t, int(step_seconds), seed, values)
    for modify in modifiers:
        modify(block)
    return block


def baseline_at(host: Host, metric: str, t: np.ndarray, seed: int) -> np.ndarray:
    """Fault-free value of ``metric`` for ``host`` at arbitrary epoch seconds ``t`` (any order).

    Values are pure functions of absolute time, so this equals what any block covering ``t``
    holds before modifiers run.
    """
    t = np.asarray(t, dtype=np.int64)
    if t.size == 0:
        return np.empty(0)
    values = _baseline((host,), np.unique(t), seed)[metric][0]
    return values[np.searchsorted(np.unique(t), t)]


def simulate(
    fleet: Sequence[Host],
    start: datetime,
    end: datetime,
    step_seconds: int = 60,
    seed: int = 7,
    *,
    modifiers: Sequence[Modifier] = (),
) -> pd.DataFrame:
    """Canonical long rows (ts, host, metric, value) for ``[start, end)``, ordered ts, host, metric.

    Rows are time-major, so splitting an interval at any point and concatenating the
    parts reproduces the whole run exactly.

    Example::

        >>> from datetime import UTC, datetime
        >>> df = simulate(make_fleet(3, 7), datetime(2025, 1, 1, tzinfo=UTC),
        ...               datetime(2025, 1, 1, 0, 5, tzinfo=UTC), step_seconds=60, seed=7)
        >>> df.columns.tolist(), len(df)
        (['ts', 'host', 'metric', 'value'], 225)
    """
    block = simulate_arrays(fleet, start, end, step_seconds, seed, modifiers=modifiers)
    n_h, n_t = len(block.fleet), block.t.size
    if n_h == 0 or n_t == 0:
        return empty_frame()
    metrics = list(block.values)
    n_m = len(metrics)
    cube = np.stack([block.values[m] for m in metrics], axis=-1)  # (H, T, M)
    value = np.ascontiguousarray(cube.transpose(1, 0, 2)).reshape(-1).astype(np.float64, copy=False)
    ts_us = np.repeat(block.t * 1_000_000, n_h * n_m).view("datetime64[us]")
    hosts = np.array([h.name for h in block.fleet], dtype=object)
    frame = pd.DataFrame(
        {
            "ts": pd.Series(pd.DatetimeIndex(ts_us).tz_localize(UTC)),
            "host": pd.Series(np.tile(np.repeat(hosts, n_m), n_t), dtype=object),
            "metric": pd.Series(np.tile(np.array(metrics, dtype=object), n_t * n_h), dtype=object),
            "value": value,
        }
    )
    # NaN in a block means "no sample" (a missed scrape, a host down): such rows do not exist
    missing = np.isnan(value)
    if missing.any():
        frame = frame.loc[~missing].reset_index(drop=True)
    return frame


__all__ = [
    "ENVIRONMENTS",
    "ROLES",
    "Host",
    "Modifier",
    "SimBlock",
    "clip_to_kinds",
    "make_fleet",
    "simulate",
    "simulate_arrays",
    "time_grid",
]
