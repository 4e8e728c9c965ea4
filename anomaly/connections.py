"""Secrets come from Airflow connections, never from code or settings.

Inside a task, Airflow's Task SDK resolves them; outside (the ``anomaly`` CLI,
tests), the usual secrets backends apply, e.g. ``AIRFLOW_CONN_<ID>`` variables.
"""

from __future__ import annotations

import re
from typing import Any


def get_connection(conn_id: str) -> Any | None:
    """The Airflow connection ``conn_id``, or ``None`` when it is not defined."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def redact(text: str) -> str:
    """Drop anything that looks like a password from a driver or Airflow message."""
    text = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


def postgres_driver_errors() -> tuple[type[BaseException], ...]:
    """Base error classes of whichever PostgreSQL drivers are installed (the provider hands out
    psycopg 3 or psycopg2 connections)."""
    errors: list[type[BaseException]] = []
    try:
        import psycopg2

        errors.append(psycopg2.Error)
    except ImportError:
        pass
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errors)
