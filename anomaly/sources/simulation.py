"""The simulated fleet as a metric source (the default, needs nothing running).

Example::

    >>> from datetime import UTC, datetime
    >>> src = SimulationSource(n_hosts=3, seed=7)
    >>> df = src.fetch(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, 1, tzinfo=UTC))
    >>> df.columns.tolist(), df["host"].nunique()
    (['ts', 'host', 'metric', 'value'], 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from anomaly.simulate.fleet import Host, Modifier, make_fleet, simulate
from anomaly.sources.base import require_aware

if TYPE_CHECKING:
    from anomaly.settings import Settings


class SimulationSource:
    """``fetch(start, end)`` returns the simulated fleet's canonical rows for the interval.

    Values depend only on (seed, host, metric, timestamp), so re-fetching or splitting an
    interval differently always yields the same rows.
    """

    name = "simulation"

    def __init__(
        self,
        n_hosts: int = 20,
        seed: int = 7,
        step_seconds: int = 60,
        *,
        modifiers: Sequence[Modifier] = (),
    ) -> None:
        if n_hosts <= 0:
            raise ValueError(f"n_hosts must be positive, got {n_hosts}")
        if step_seconds <= 0:
            raise ValueError(f"step_seconds must be positive, got {step_seconds}")
        self.n_hosts = n_hosts
        self.seed = seed
        self.step_seconds = step_seconds
        self.modifiers: tuple[Modifier, ...] = tuple(modifiers)
        self.fleet: list[Host] = make_fleet(n_hosts, seed)

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulationSource:
        """Build from ``sim_hosts``, ``sim_seed`` and ``step_seconds``.

        Example::

            >>> from anomaly.settings import Settings
            >>> SimulationSource.from_settings(Settings(sim_hosts=5)).n_hosts
            5
        """
        modifiers = ()
        if settings.sim_faults_file is not None:
            # faults planned once (anomaly simulate, the demo) and applied to every interval fetched
            from anomaly.simulate.faults import inject, load_faults

            modifiers = (inject(load_faults(settings.sim_faults_file)),)
        return cls(
            n_hosts=settings.sim_hosts,
            seed=settings.sim_seed,
            step_seconds=settings.step_seconds,
            modifiers=modifiers,
        )

    def fetch(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Canonical rows (ts, host, metric, value) on the step grid within ``[start, end)``."""
        require_aware(start, end)
        return simulate(self.fleet, start, end, self.step_seconds, self.seed, modifiers=self.modifiers)

    def hosts(self) -> pd.DataFrame:
        """One row per host: host, role, environment (for the hosts table).

        Example::

            >>> SimulationSource(n_hosts=2, seed=7).hosts().columns.tolist()
            ['host', 'role', 'environment']
        """
        return pd.DataFrame(
            {
                "host": pd.Series([h.name for h in self.fleet], dtype=object),
                "role": pd.Series([h.role for h in self.fleet], dtype=object),
                "environment": pd.Series([h.environment for h in self.fleet], dtype=object),
            }
        )

    def __repr__(self) -> str:
        return f"SimulationSource(n_hosts={self.n_hosts}, seed={self.seed}, step_seconds={self.step_seconds})"
