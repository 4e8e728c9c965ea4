"""Secrets come from Airflow connections, never from code or settings.

Inside a task, Airflow's Task SDK resolves them; outside (the ``anomaly`` CLI,
tests), the usual secrets backends apply, e.g. ``AIRFLOW_CONN_<ID>`` variables.
"""

from __future__ import annotations

from typing import Any


def get_connection(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id``, or ``None`` when it is not defined."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
