"""Typed infrastructure faults, injected into a simulated (or real) block of metrics, with labels.

A :class:`Fault` says *what* (a registered type), *where* (a host), *when* (``[start, end)``),
*how hard* (``severity`` in (0, 1]) and *how it arrives* (``ramp``). Each fault type is a small
function registered with :func:`fault_type`; it edits the host's rows of a
:class:`~anomaly.simulate.fleet.SimBlock` inside the window only, as a pure function of absolute
time (so an interval split anywhere gives the same values). Every fault also yields one row for
the ``labels`` table.

Conventions for fault functions:

* ``ctx.envelope`` is 0 outside the window and rises from 0 to 1 inside it following ``ramp``
  (``step`` is 1 from the first sample); scale effects by ``ctx.envelope * ctx.severity``.
* ``NaN`` in a block means "no sample" (a missed scrape): such rows are not emitted.
* Keep values physically possible (ratios in [0, 1], rates >= 0) unless the fault is about
  broken telemetry; touch only ``ctx.metrics`` (the fault's affected metrics).
* Randomness comes from ``ctx.noise(stream)``: standard normals keyed by (seed, host, fault, t).

Example::

    >>> from datetime import UTC, datetime
from pathlib import Path
    >>> from anomaly.simulate import make_fleet, simulate
    >>> fleet = make_fleet(4, seed=7)
    >>> f = Fault("cpu_saturation", fleet[0].name, datetime(2025, 1, 6, 10, tzinfo=UTC),
    ...           datetime(2025, 1, 6, 11, tzinfo=UTC), severity=0.9)
    >>> df = simulate(fleet, datetime(2025, 1, 6, 9, tzinfo=UTC), datetime(2025, 1, 6, 12, tzinfo=UTC),
    ...               modifiers=[inject([f])])
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from anomaly.metrics import DEFAULT_METRIC_NAMES
from anomaly.simulate.fleet import mix64

if TYPE_CHECKING:
    import pandas as pd

    from anomaly.simulate.fleet import Host, SimBlock

RAMPS = ("step", "linear", "exp", "sigmoid")


@dataclass(frozen=True)
class Fault:
    """One injected fault: a window of one host, with a type, a severity and a ramp shape."""

    type: str
    host: str
    start: datetime
    end: datetime
    severity: float = 0.7
    ramp: str = "step"
    metrics: tuple[str, ...] = ()  # () = the type's default affected metrics
    params: Mapping[str, float] = field(default_factory=dict)
    group: str | None = None  # faults planned together (a cascade) share a group id

    def __post_init__(self) -> None:
        if self.type not in REGISTRY:
            raise ValueError(f"unknown fault type {self.type!r}; known: {', '.join(sorted(REGISTRY))}")
        if self.start.tzinfo is None or self.end.tzinfo is None or self.end <= self.start:
            raise ValueError(f"fault window must be aware and non-empty: [{self.start}, {self.end})")
        if not 0.0 < self.severity <= 1.0:
            raise ValueError(f"severity must be in (0, 1], got {self.severity}")
        if self.ramp not in RAMPS:
            raise ValueError(f"ramp must be one of {RAMPS}, got {self.ramp!r}")
        unknown = [m for m in self.metrics if m not in DEFAULT_METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown affected metrics {unknown}")

    @property
    def affected_metrics(self) -> tuple[str, ...]:
        return self.metrics or REGISTRY[self.type].metrics

    @property
    def fault_id(self) -> str:
        """Stable id: the same fault always gets the same id (labels stay idempotent)."""
        # metrics, params and group are left out on purpose: they do not change the fault's noise
        key = f"{self.type}|{self.host}|{self.start.isoformat()}|{self.end.isoformat()}|{self.severity}|{self.ramp}"
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()

    @property
    def severity_label(self) -> str:
        return "high" if self.severity >= 0.7 else "medium" if self.severity >= 0.4 else "low"


@dataclass
class FaultContext:
    """What a fault function sees: the host's rows of the block and the fault's window."""

    block: SimBlock
    row: int
    fault: Fault
    inside: np.ndarray  # (T,) bool: start <= t < end
    envelope: np.ndarray  # (T,) in [0, 1]: 0 outside, the ramp inside
    elapsed: np.ndarray  # (T,) seconds since the fault's start (negative before it)

    @property
    def t(self) -> np.ndarray:
        return self.block.t

    @property
    def severity(self) -> float:
        return self.fault.severity

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.fault.affected_metrics

    @property
    def host(self) -> Host:
        return self.block.fleet[self.row]

    @property
    def duration(self) -> float:
        return (self.fault.end - self.fault.start).total_seconds()

    def series(self, metric: str) -> np.ndarray:
        """The host's row of ``metric`` (a view: edit it in place)."""
        return self.block.values[metric][self.row]

    def baseline(self, metric: str, t: np.ndarray) -> np.ndarray:
        """The host's fault-free value of ``metric`` at epoch seconds ``t`` (on the step grid).

        For a simulated block the baseline is re-simulated, so the answer does not depend on
        which interval the block covers; for a block of real series (``block.original`` set)
        it is looked up there (NaN outside the block). Faults that need values from other
        times (a frozen value, a delayed copy) use this instead of reading the block.
        """
        t = np.asarray(t, dtype=np.int64)
        original = getattr(self.block, "original", None)
        if original is not None:
            if metric not in original:
                return np.full(t.shape, np.nan)
            series = original[metric][self.row]
            pos = (t - int(self.block.t[0])) // self.block.step_seconds if self.block.t.size else t
            ok = (pos >= 0) & (pos < series.size)
            out = np.full(t.shape, np.nan)
            out[ok] = series[pos[ok]]
            return out
        from anomaly.simulate.fleet import baseline_at

        return baseline_at(self.host, metric, t, self.block.seed)

    def param(self, name: str, default: float) -> float:
        return float(self.fault.params.get(name, default))

    def noise(self, stream: int = 0) -> np.ndarray:
        """(T,) standard normals keyed by (seed, host, fault id, stream, t): same t, same value."""
        digest = hashlib.blake2b(f"{self.block.seed}|{self.fault.fault_id}|{stream}".encode(), digest_size=8)
        key = np.uint64(int.from_bytes(digest.digest(), "little"))
        golden = np.uint64(0x9E3779B97F4A7C15)
        c = self.t.astype(np.uint64) * np.uint64(2)
        u1 = ((mix64(key + c * golden) >> np.uint64(11)) + np.uint64(1)) * 2.0**-53
        u2 = (mix64(key + (c + np.uint64(1)) * golden) >> np.uint64(11)) * 2.0**-53
        return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


FaultFunction = Callable[[FaultContext], None]


@dataclass(frozen=True)
class FaultType:
    """A registered fault: its function, default affected metrics and physical meaning."""

    name: str
    function: FaultFunction
    metrics: tuple[str, ...]
    description: str
    family: str
    # metric -> what the fault does to it inside the window, compared with the baseline:
    # "up", "down", "missing" (no samples), "flat" (constant), "noisier", "changed" (any)
    effects: Mapping[str, str] = field(default_factory=dict)


REGISTRY: dict[str, FaultType] = {}


EFFECTS = ("up", "down", "missing", "flat", "noisier", "changed")


def fault_type(
    name: str, *, metrics: Sequence[str], family: str, effects: Mapping[str, str]
) -> Callable[[FaultFunction], FaultFunction]:
    """Register a fault function; its docstring is the fault's documented physical meaning.

    ``effects`` declares, per affected metric, what the fault does inside its window (tests hold
    every type to its declaration).
    """

    def register(function: FaultFunction) -> FaultFunction:
        if name in REGISTRY:
            raise ValueError(f"fault type {name!r} registered twice")
        unknown = [m for m in metrics if m not in DEFAULT_METRIC_NAMES]
        if unknown:
            raise ValueError(f"fault type {name!r}: unknown metrics {unknown}")
        bad = {m: e for m, e in effects.items() if m not in metrics or e not in EFFECTS}
        if bad or set(effects) != set(metrics):
            raise ValueError(f"fault type {name!r}: effects must give one of {EFFECTS} for each metric")
        doc = " ".join((function.__doc__ or "").split())
        if not doc:
            raise ValueError(f"fault type {name!r} needs a docstring stating its physical meaning")
        REGISTRY[name] = FaultType(name, function, tuple(metrics), doc, family, dict(effects))
        return function

    return register


def envelope(t: np.ndarray, start_s: int, end_s: int, ramp: str) -> np.ndarray:
    """0 outside ``[start_s, end_s)``; inside, ``step`` = 1, else rising over the window to 1."""
    inside = (t >= start_s) & (t < end_s)
    x = np.clip((t - start_s) / max(end_s - start_s, 1), 0.0, 1.0)
    if ramp == "step":
        shape = np.ones_like(x)
    elif ramp == "linear":
        shape = x
    elif ramp == "exp":
        shape = np.expm1(4.0 * x) / np.expm1(4.0)
    elif ramp == "sigmoid":
        shape = 1.0 / (1.0 + np.exp(-12.0 * (x - 0.35)))
    else:
        raise ValueError(f"unknown ramp {ramp!r}")
    return np.where(inside, shape, 0.0)


def _epoch(ts: datetime) -> int:
    return int(ts.astimezone(UTC).timestamp())


def inject(faults: Iterable[Fault]) -> Callable[[SimBlock], None]:
    """A modifier for :func:`anomaly.simulate.fleet.simulate` that applies ``faults`` in order."""
    planned = tuple(faults)

    def modify(block: SimBlock) -> None:
        if block.t.size == 0:
            return
        rows = {h.name: i for i, h in enumerate(block.fleet)}
        t0, t1 = int(block.t[0]), int(block.t[-1])
        for fault in planned:
            row = rows.get(fault.host)
            start_s, end_s = _epoch(fault.start), _epoch(fault.end)
            if row is None or end_s <= t0 or start_s > t1:
                continue
            ctx = FaultContext(
                block=block,
                row=row,
                fault=fault,
                inside=(block.t >= start_s) & (block.t < end_s),
                envelope=envelope(block.t, start_s, end_s, fault.ramp),
                elapsed=(block.t - start_s).astype(np.float64),
            )
            # Stored real series may lack some metrics a fault touches: give the fault scratch rows
            # for them (its effect on a metric the host does not report is simply not emitted).
            scratch = [m for m in REGISTRY[fault.type].metrics if m not in block.values]
            for m in scratch:
                block.values[m] = np.full((len(block.fleet), block.t.size), np.nan)
            try:
                REGISTRY[fault.type].function(ctx)
            finally:
                for m in scratch:
                    del block.values[m]

    return modify


def labels_frame(faults: Iterable[Fault], source: str = "simulation") -> pd.DataFrame:
    """Rows for the ``labels`` table, one per fault."""
    import pandas as pd

    rows = [
        {
            "label_id": f.fault_id,
            "host": f.host,
            "start_ts": pd.Timestamp(f.start).tz_convert("UTC"),
            "end_ts": pd.Timestamp(f.end).tz_convert("UTC"),
            "type": f.type,
            "severity": f.severity_label,
            "affected_metrics": list(f.affected_metrics),
            "source": source,
            "description": REGISTRY[f.type].description.split(". ")[0],
        }
        for f in faults
    ]
    columns = [
        "label_id",
        "host",
        "start_ts",
        "end_ts",
        "type",
        "severity",
        "affected_metrics",
        "source",
        "description",
    ]
    return pd.DataFrame(rows, columns=columns)


def save_faults(faults: Iterable[Fault], path: str | Path) -> Path:
    """Write planned faults as JSON (a reproducible scenario file for the simulation source)."""
    import json

    rows = [
        {
            "type": f.type,
            "host": f.host,
            "start": f.start.isoformat(),
            "end": f.end.isoformat(),
            "severity": f.severity,
            "ramp": f.ramp,
            "metrics": list(f.metrics),
            "params": dict(f.params),
            "group": f.group,
        }
        for f in faults
    ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return out


def load_faults(path: str | Path) -> list[Fault]:
    """Read a file written by :func:`save_faults`; a bad file names the entry and the problem."""
    import json

    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read fault file {path}: {exc}") from exc
    faults = []
    for i, r in enumerate(rows):
        try:
            faults.append(
                Fault(
                    r["type"],
                    r["host"],
                    datetime.fromisoformat(r["start"]),
                    datetime.fromisoformat(r["end"]),
                    severity=float(r.get("severity", 0.7)),
                    ramp=r.get("ramp", "step"),
                    metrics=tuple(r.get("metrics", ())),
                    params=dict(r.get("params", {})),
                    group=r.get("group"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"fault file {path}, entry {i}: {exc}") from exc
    return faults


def _load_families() -> None:
    # Importing a family module registers its fault types.
    from anomaly.simulate.faults import network, resources, telemetry  # noqa: F401


_load_families()

__all__ = [
    "EFFECTS",
    "RAMPS",
    "REGISTRY",
    "Fault",
    "FaultContext",
    "FaultType",
    "envelope",
    "fault_type",
    "inject",
    "labels_frame",
    "load_faults",
    "save_faults",
]
