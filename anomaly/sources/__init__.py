"""Metric sources behind one interface: ``fetch(start, end) -> canonical long rows``.

Example::

    >>> from anomaly.sources import get_source
    >>> src = get_source("simulation")          # doctest: +SKIP
    >>> src.fetch(start, end).columns.tolist()  # doctest: +SKIP
    ['ts', 'host', 'metric', 'value']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomaly.sources.base import CANONICAL_COLUMNS, Source, SourceError

if TYPE_CHECKING:
    from anomaly.settings import Settings

SOURCE_NAMES = ("simulation", "prometheus", "postgres", "files")

__all__ = ["CANONICAL_COLUMNS", "SOURCE_NAMES", "Source", "SourceError", "get_source"]


def get_source(name: str, settings: Settings | None = None) -> Source:
    """Build the named source from settings (imports only that source's module)."""
    from anomaly.settings import get_settings

    settings = settings or get_settings()
    if name == "simulation":
        from anomaly.sources.simulation import SimulationSource

        return SimulationSource.from_settings(settings)
    if name == "prometheus":
        from anomaly.sources.prometheus import PrometheusSource

        return PrometheusSource.from_settings(settings)
    if name == "postgres":
        from anomaly.sources.postgres import PostgresSource

        return PostgresSource.from_settings(settings)
    if name == "files":
        from anomaly.sources.files import FilesSource

        return FilesSource.from_settings(settings)
    raise ValueError(f"unknown source {name!r}; choose one of {', '.join(SOURCE_NAMES)}")
