"""Scenarios: a fleet, a time range and a planned set of typed faults with their labels.

A :class:`Scenario` is the whole recipe (hosts, days, anomaly share, fault types, hold-out
types, seed); :func:`plan_faults` turns it into concrete :class:`~anomaly.simulate.faults.Fault`
windows until the requested share of (host, timestamp) points lies inside a labelled window,
with every requested type present at least once.

Example::

    >>> from anomaly.simulate.scenario import Scenario, plan_faults
    >>> sc = Scenario(hosts=10, days=2, anomaly_share=0.2, seed=7)
    >>> faults = plan_faults(sc)
    >>> round(labelled_share(sc, faults), 2) >= 0.2
    True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np

from anomaly.simulate.faults import REGISTRY, Fault
from anomaly.simulate.fleet import Host, make_fleet

# The default start keeps scenarios reproducible: same arguments, same timestamps.
DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday

# Typical duration (minutes) and ramp of each fault, from how such incidents unfold in practice.
_DURATION: dict[str, tuple[int, int]] = {
    "memory_leak": (120, 480),
    "disk_fill": (90, 360),
    "connection_leak": (90, 360),
    "oom_sawtooth": (60, 240),
    "seasonal_break": (240, 480),
    "scrape_gap": (10, 60),
    "host_reboot": (20, 60),
    "clock_skew": (30, 120),
    "level_shift": (120, 480),
}
_DEFAULT_DURATION = (30, 180)
_RAMPS: dict[str, tuple[str, ...]] = {
    "memory_leak": ("linear",),
    "disk_fill": ("linear",),
    "connection_leak": ("linear",),
    "runaway_process": ("linear", "exp"),
    "swap_thrashing": ("sigmoid", "step"),
}
_DEFAULT_RAMPS = ("step", "sigmoid", "linear")


@dataclass(frozen=True)
class Scenario:
    """What to simulate: ``anomaly simulate --hosts 50 --days 14 --anomaly-share 0.2 --seed 7``."""

    hosts: int = 20
    days: float = 2.0
    anomaly_share: float = 0.2
    types: tuple[str, ...] | None = None  # None: every registered type
    exclude: tuple[str, ...] = ()  # hold-out: types never injected
    seed: int = 7
    step_seconds: int = 60
    start: datetime = DEFAULT_START
    name: str = "sim"
    cascade_hosts: int = 3
    every_type: bool = True  # place each requested type at least once (False: stop at the share)

    def __post_init__(self) -> None:
        if self.hosts < 1:
            raise ValueError(f"hosts must be >= 1, got {self.hosts}")
        if self.days <= 0:
            raise ValueError(f"days must be > 0, got {self.days}")
        if not 0.0 <= self.anomaly_share < 0.9:
            raise ValueError(f"anomaly_share must be in [0, 0.9), got {self.anomaly_share}")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if not re.fullmatch(r"[a-z0-9_-]{1,40}", self.name):
            raise ValueError(
                f"name {self.name!r}: use 1-40 of a-z, 0-9, _ and - (it names files and a source)"
            )
        if self.types is not None and not self.types:
            raise ValueError("types is empty: name at least one fault type, or None for all")
        unknown = (
            sorted(set(self.types or ()) | set(self.exclude))
            if self.types is not None
            else sorted(set(self.exclude))
        )
        unknown = [t for t in unknown if t not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown fault type(s) {unknown}; known: {', '.join(sorted(REGISTRY))}")
        if not self.fault_types and self.anomaly_share > 0:
            raise ValueError("no fault types left after --exclude")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def fault_types(self) -> tuple[str, ...]:
        chosen = self.types if self.types is not None else tuple(sorted(REGISTRY))
        return tuple(t for t in chosen if t not in self.exclude)

    @cached_property
    def fleet(self) -> tuple[Host, ...]:
        return tuple(make_fleet(self.hosts, self.seed))

    @property
    def source_name(self) -> str:
        """The ``raw_metrics.source`` the scenario's rows land under."""
        return f"simulation:{self.name}"


def _steps(sc: Scenario) -> np.ndarray:
    from anomaly.simulate.fleet import time_grid

    return time_grid(sc.start, sc.end, sc.step_seconds)


def labelled_share(sc: Scenario, faults: Sequence[Fault], fleet: Sequence[Host] | None = None) -> float:
    """Share of (host, timestamp) points of the scenario inside at least one fault window."""
    t = _steps(sc)
    rows = {h.name: i for i, h in enumerate(fleet or sc.fleet)}
    covered = np.zeros((len(rows), t.size), dtype=bool)
    for f in faults:
        covered[rows[f.host]] |= (t >= f.start.timestamp()) & (t < f.end.timestamp())
    return float(covered.mean()) if covered.size else 0.0


def plan_faults(
    sc: Scenario, fleet: Sequence[Host] | None = None, blocked: np.ndarray | None = None
) -> list[Fault]:
    """Faults for ``sc``: every requested type at least once, until ``anomaly_share`` is reached.

    Windows on one host never overlap (a label means one cause). Deterministic for the seed.
    ``fleet`` replaces the scenario's simulated fleet (to plan faults for stored hosts);
    ``blocked`` (hosts x steps) marks points where no fault may go (e.g. no data there).
    """
    if sc.anomaly_share == 0:
        return []
    rng = np.random.default_rng([sc.seed, 0xFA17])
    t = _steps(sc)
    step = sc.step_seconds
    hosts = list(fleet or sc.fleet)
    busy = np.zeros((len(hosts), t.size), dtype=bool)
    target = sc.anomaly_share * busy.size
    taken = busy.copy() if blocked is None else blocked[:, : t.size].copy()  # where windows may not go
    faults: list[Fault] = []
    types = list(sc.fault_types)
    order: list[str] = []
    attempts = 0
    placed: set[str] = set()
    while (busy.sum() < target or (sc.every_type and placed != set(types))) and attempts < 20_000:
        if not order:
            order = list(rng.permutation(types))
        kind = order.pop()
        attempts += 1
        lo, hi = _DURATION.get(kind, _DEFAULT_DURATION)
        minutes = int(rng.integers(lo, hi + 1))
        n = max(1, minutes * 60 // step)
        if n >= t.size:
            n = max(1, t.size // 2)
        planned = _place(sc, rng, kind, n, hosts, busy | taken, t)
        if planned is None:
            order.append(kind)  # try this type again later: the calendar may be crowded now
            continue
        for f, row, i0, i1 in planned:
            busy[row, i0:i1] = True
            faults.append(f)
        placed.add(kind)
    if busy.sum() < target:
        raise ValueError(
            f"could reach only an anomaly share of {busy.mean():.3f} of the requested {sc.anomaly_share} in "
            f"{sc.days:g} days x {len(hosts)} hosts (windows on one host never overlap); lower the share or "
            "add hosts or days"
        )
    missing = set(types) - placed
    if missing and sc.every_type:
        raise ValueError(
            f"could not place fault types {sorted(missing)} in {sc.days:g} days x {sc.hosts} hosts at "
            f"share {sc.anomaly_share}; add hosts or days"
        )
    return sorted(faults, key=lambda f: (f.start, f.host, f.type))


def _place(
    sc: Scenario,
    rng: np.random.Generator,
    kind: str,
    n: int,
    hosts: list[Host],
    busy: np.ndarray,
    t: np.ndarray,
) -> list[tuple[Fault, int, int, int]] | None:
    """One fault of ``kind`` (several for a cascade) on free calendar slots, or None."""
    step = sc.step_seconds
    severity = float(np.round(rng.uniform(0.5, 1.0), 2))
    ramps = _RAMPS.get(kind, _DEFAULT_RAMPS)
    ramp = str(ramps[int(rng.integers(len(ramps)))])
    if kind == "cascade":
        roles: dict[str, list[int]] = {}
        for i, h in enumerate(hosts):
            roles.setdefault(h.role, []).append(i)
        candidates = [rows for rows in roles.values() if len(rows) >= 2]
        if not candidates:
            return None
        rows = candidates[int(rng.integers(len(candidates)))]
        rows = list(rng.permutation(rows))[: max(2, sc.cascade_hosts)]
        lag = max(1, n // (2 * len(rows)))  # the overload reaches the next host a little later
        span = n + lag * (len(rows) - 1)
        if span >= t.size:
            return None
        for _ in range(50):
            i0 = int(rng.integers(0, t.size - span))
            if not any(busy[r, i0 + k * lag : i0 + k * lag + n].any() for k, r in enumerate(rows)):
                group = f"cascade-{sc.seed}-{i0}-{rows[0]}"
                out = []
                for k, r in enumerate(rows):
                    a = i0 + k * lag
                    out.append(
                        (_fault(kind, hosts[r], t, a, a + n, step, severity, ramp, group), r, a, a + n)
                    )
                return out
        return None
    for _ in range(50):
        row = int(rng.integers(len(hosts)))
        i0 = _start_index(sc, rng, kind, hosts[row], n, t)
        if i0 is None or busy[row, i0 : i0 + n].any():
            continue
        return [(_fault(kind, hosts[row], t, i0, i0 + n, step, severity, ramp, None), row, i0, i0 + n)]
    return None


def _start_index(
    sc: Scenario, rng: np.random.Generator, kind: str, host: Host, n: int, t: np.ndarray
) -> int | None:
    if kind != "seasonal_break":
        return int(rng.integers(0, t.size - n)) if t.size > n else None
    # the daily peak must fall inside the window for its absence to mean anything: centre the
    # window on the host's local peak hour (users: afternoon; batch jobs: the night) of a random day
    peak_hour = 3 if host.role == "batch" else 14
    offset = host.utc_offset_hours * 3600
    local_midnight = (int(t[0]) + offset) // 86400 * 86400 - offset  # at or before the first step
    days = list(range(int(np.ceil(sc.days)) + 1))
    rng.shuffle(days)
    for d in days:
        i_peak = int((local_midnight + d * 86400 + peak_hour * 3600 - t[0]) // sc.step_seconds)
        i0 = i_peak - n // 2
        if i0 >= 0 and i0 + n <= t.size:
            return i0
    return None


def _fault(
    kind: str,
    host: Host,
    t: np.ndarray,
    i0: int,
    i1: int,
    step: int,
    severity: float,
    ramp: str,
    group: str | None,
) -> Fault:
    start = datetime.fromtimestamp(int(t[i0]), UTC)
    end = datetime.fromtimestamp(int(t[i1 - 1]) + step, UTC)
    return Fault(kind, host.name, start, end, severity=severity, ramp=ramp, group=group)
