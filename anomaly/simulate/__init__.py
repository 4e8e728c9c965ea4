"""A simulated fleet for demos and tests: canonical metrics and raw node_exporter series.

Example::

    >>> from datetime import UTC, datetime
    >>> from anomaly.simulate import make_fleet, simulate
    >>> fleet = make_fleet(20, seed=7)
    >>> df = simulate(fleet, datetime(2025, 1, 1, tzinfo=UTC),
    ...               datetime(2025, 1, 2, tzinfo=UTC), step_seconds=60, seed=7)
    >>> df.columns.tolist()
    ['ts', 'host', 'metric', 'value']
"""

from anomaly.simulate.exporter import RawSeries, node_exporter_series
from anomaly.simulate.fleet import (
    ENVIRONMENTS,
    ROLES,
    Host,
    Modifier,
    SimBlock,
    clip_to_kinds,
    make_fleet,
    simulate,
    simulate_arrays,
    time_grid,
)

__all__ = [
    "ENVIRONMENTS",
    "ROLES",
    "Host",
    "Modifier",
    "RawSeries",
    "SimBlock",
    "clip_to_kinds",
    "make_fleet",
    "node_exporter_series",
    "simulate",
    "simulate_arrays",
    "time_grid",
]
