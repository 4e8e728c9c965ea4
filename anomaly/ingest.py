"""Ingest one data interval of one source into ``raw_metrics``, idempotently.

``ingest_interval`` fetches ``[start, end)``, checks every row, and in ONE
lake transaction deletes that source's rows in the interval and inserts the
accepted ones, so a re-run or an overlapping backfill leaves the same rows
and a failure leaves the interval as it was. Rejected rows go to
``quarantine`` with their reason; when more than ``max_reject_share`` of a
batch is rejected, nothing is loaded, the whole batch is quarantined and
:class:`IngestRejected` names every problem.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from anomaly import registry
from anomaly.checks import REASONS, CheckResult, check_batch
from anomaly.settings import Settings, get_settings
from anomaly.sources.base import require_aware, to_utc

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from anomaly.sources.base import Source
    from anomaly.store import Lake

log = logging.getLogger(__name__)


class IngestRejected(RuntimeError):
    """The batch failed its checks; it was quarantined and the interval left unchanged."""


@dataclass
class IngestReport:
    """What one ingest run did (JSON-friendly, returned to Airflow as XCom)."""

    source: str
    interval_start: str
    interval_end: str
    run_id: str
    rows_fetched: int
    rows_loaded: int
    rows_quarantined: int
    hosts: int
    rejects: dict[str, int] = field(default_factory=dict)
    fetch_seconds: float = 0.0
    load_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest_interval(
    source_name: str,
    start: datetime,
    end: datetime,
    run_id: str,
    *,
    settings: Settings | None = None,
    source: Source | None = None,
    lake: Lake | None = None,
    allow_shrink: bool = False,
) -> IngestReport:
    """Load ``[start, end)`` of ``source_name`` into the lake; return what happened.

    ``allow_shrink`` lets an empty batch (or one missing whole metrics) replace an interval that
    holds data; by default that fails, as it usually means the source lost data.

    Example::

        >>> ingest_interval("simulation", datetime(2026, 1, 1, tzinfo=UTC),
        ...                 datetime(2026, 1, 1, 1, tzinfo=UTC), run_id="manual")  # doctest: +SKIP
    """
    from anomaly.sources import get_source
    from anomaly.store import Lake

    require_aware(start, end)
    start, end = to_utc(start), to_utc(end)
    settings = settings or get_settings()
    lake = lake or Lake(settings)
    lake.init()
    src = source or get_source(source_name, settings)

    t0 = time.perf_counter()
    batch = src.fetch(start, end)
    fetch_seconds = time.perf_counter() - t0
    log.info(
        "fetched %d rows from %s for [%s, %s) in %.2fs",
        len(batch),
        source_name,
        start.isoformat(),
        end.isoformat(),
        fetch_seconds,
    )

    t1 = time.perf_counter()
    checked = check_batch(batch, start, end, set(lake.metric_kinds()))
    host_meta = src.hosts() if hasattr(src, "hosts") else None
    report = IngestReport(
        source=source_name,
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        run_id=run_id,
        rows_fetched=checked.total,
        rows_loaded=0,
        rows_quarantined=0,
        hosts=0,
        fetch_seconds=round(fetch_seconds, 3),
    )
    where = f"source {source_name!r} for [{start.isoformat()}, {end.isoformat()})"

    def work(con: duckdb.DuckDBPyConnection) -> CheckResult:
        # Runs under the lake's write lock, again on every retry: the cross-source check and the
        # shrink guard see exactly what this transaction replaces.
        result = checked.copy()
        _mark_source_conflicts(con, result, source_name, start, end)
        if result.total and result.reject_share > settings.max_reject_share:
            raise _BatchRejected(result)
        replaced = _guard_shrink(con, result, source_name, start, end, where, allow_shrink)
        report.rows_loaded = len(result.accepted)
        report.rows_quarantined = len(result.rejected)
        report.hosts = int(result.accepted["host"].nunique())
        report.rejects = dict(result.counts)
        _replace_interval(con, result.accepted, source_name, start, end, run_id)
        _write_quarantine(con, result.rejected, source_name, start, end, run_id)
        _upsert_hosts(con, result.accepted, host_meta, source_name)
        note = f"replaced {replaced} rows" + (f"; {result.summary()}" if result.counts else "")
        _log_run(con, report, "loaded", start, end, note)
        return result

    try:
        result = lake.write(work, what=f"ingest {where}")
    except _BatchRejected as rejected:
        result = rejected.result
        message = (
            f"ingest of {where} rejected {len(result.rejected)} of {result.total} rows "
            f"({result.reject_share:.1%} > ANOMALY_MAX_REJECT_SHARE={settings.max_reject_share:.1%}): "
            f"{result.summary()}. Nothing was loaded; all {result.total} rows are in table quarantine "
            f"(run_id={run_id!r})."
        )
        _quarantine_whole_batch(lake, result, source_name, start, end, run_id, message)
        raise IngestRejected(message) from None
    report.load_seconds = round(time.perf_counter() - t1, 3)
    if result.counts:
        log.warning("quarantined %d rows of %s: %s", len(result.rejected), source_name, result.summary())
    log.info("loaded %d rows (%d hosts) in %.2fs", report.rows_loaded, report.hosts, report.load_seconds)
    return report


def manual_interval(timetable, run_after: datetime) -> tuple[datetime, datetime]:
    """The last complete data interval before ``run_after`` (a run triggered without a logical date)."""
    interval = timetable.infer_manual_data_interval(run_after=run_after)
    return interval.start, interval.end


class _BatchRejected(Exception):
    def __init__(self, result: CheckResult) -> None:
        super().__init__("batch rejected")
        self.result = result


def _guard_shrink(
    con: duckdb.DuckDBPyConnection,
    result: CheckResult,
    source_name: str,
    start: datetime,
    end: datetime,
    where: str,
    allow_shrink: bool,
) -> int:
    """Refuse to replace an interval's rows by nothing, or to drop whole metrics from it.

    An empty answer for an interval that already holds data is what a source outage, a PromQL
    that matches no series, or a range beyond the source's retention look like; replacing the
    rows would delete good data. ``allow_shrink`` (DAG param) says the shrink is intended.
    """
    before = con.execute(
        f"SELECT metric, count(*) AS n FROM {registry.RAW_METRICS} "
        "WHERE source = ? AND ts >= ? AND ts < ? GROUP BY metric",
        [source_name, start, end],
    ).fetchall()
    total = sum(n for _, n in before)
    if not total or allow_shrink:
        return total
    now = set(result.accepted["metric"].unique())
    lost = sorted(m for m, _ in before if m not in now)
    if lost:
        what = "no rows" if result.accepted.empty else f"no rows for metric(s) {', '.join(lost)}"
        raise IngestRejected(
            f"ingest of {where}: the source returned {what}, but the interval holds {total} rows from an "
            "earlier run. Refusing to delete them (a source outage, a query matching no series or a "
            "range beyond the source's retention looks like this). Fix the source and re-run, or "
            "re-run with allow_shrink=True (DAG param) to empty them on purpose."
        )
    return total


def _as_rejected(rows: pd.DataFrame, reason: str, detail: str | list[str]) -> pd.DataFrame:
    """Canonical rows that passed the row checks, in the quarantine layout with a reason."""
    import pandas as pd

    return pd.DataFrame(
        {
            "ts": rows["ts"],
            "ts_raw": rows["ts"].astype(str),
            "host": rows["host"],
            "metric": rows["metric"],
            "value": rows["value"],
            "value_raw": rows["value"].astype(str),
            "reason": reason,
            "detail": detail,
        }
    )


def _mark_source_conflicts(
    con: duckdb.DuckDBPyConnection, result: CheckResult, source_name: str, start: datetime, end: datetime
) -> None:
    """Rows already loaded for the same key by ANOTHER live source go to quarantine, not over them.

    Live sources (prometheus, postgres, files, simulation) describe the same fleet, so one key
    may come from only one of them. A derived dataset (a scenario ``simulation:<name>``, faults
    injected into a copy ``<source>+faults``) is its own namespace: its keys repeat a live
    source's on purpose, and features and labels select it by ``source``.
    """
    import pandas as pd

    from anomaly.sources import SOURCE_NAMES

    if result.accepted.empty or source_name not in SOURCE_NAMES:
        return
    con.register("batch_keys", result.accepted[["ts", "host", "metric"]])
    clash = con.execute(
        f"""
        SELECT b.ts, b.host, b.metric, min(r.source) AS other
        FROM batch_keys b
        JOIN {registry.RAW_METRICS} r USING (ts, host, metric)
        WHERE r.ts >= ? AND r.ts < ? AND r.source <> ? AND list_contains(?, r.source)
        GROUP BY ALL
        """,
        [start, end, source_name, list(SOURCE_NAMES)],
    ).df()
    con.unregister("batch_keys")
    if clash.empty:
        return
    acc = result.accepted
    key = pd.MultiIndex.from_frame(acc[["ts", "host", "metric"]])
    hit = key.isin(pd.MultiIndex.from_frame(clash[["ts", "host", "metric"]]))
    moved = acc.loc[hit].copy()
    other = clash.set_index(["ts", "host", "metric"])["other"]
    moved_other = [other.get(k, "?") for k in zip(moved["ts"], moved["host"], moved["metric"], strict=True)]
    rejected = _as_rejected(
        moved,
        "source_conflict",
        [f"(host, metric, ts) already loaded from source {o!r}" for o in moved_other],
    )
    result.accepted = acc.loc[~hit].reset_index(drop=True)
    result.rejected = pd.concat([result.rejected, rejected], ignore_index=True)
    result.counts["source_conflict"] = int(hit.sum())


def _replace_interval(
    con: duckdb.DuckDBPyConnection,
    rows: pd.DataFrame,
    source_name: str,
    start: datetime,
    end: datetime,
    run_id: str,
) -> None:
    con.execute(
        f"DELETE FROM {registry.RAW_METRICS} WHERE source = ? AND ts >= ? AND ts < ?",
        [source_name, start, end],
    )
    if rows.empty:
        return
    con.register("accepted_rows", rows)
    con.execute(
        f"""
        INSERT INTO {registry.RAW_METRICS} (ts, host, metric, value, source, run_id, ingested_at)
        SELECT ts, host, metric, value, ?, ?, now() FROM accepted_rows ORDER BY host, metric, ts
        """,
        [source_name, run_id],
    )
    con.unregister("accepted_rows")


def _write_quarantine(
    con: duckdb.DuckDBPyConnection,
    rejected: pd.DataFrame,
    source_name: str,
    start: datetime,
    end: datetime,
    run_id: str,
) -> None:
    # A task retry reuses its run id: replace that run's rows instead of adding copies.
    con.execute(
        f"DELETE FROM {registry.QUARANTINE} WHERE run_id = ? AND source = ? "
        "AND interval_start = ? AND interval_end = ?",
        [run_id, source_name, start, end],
    )
    if rejected.empty:
        return
    con.register("rejected_rows", rejected)
    con.execute(
        f"""
        INSERT INTO {registry.QUARANTINE}
            (run_id, source, interval_start, interval_end, reason, detail, ts, ts_raw, host, metric,
             value, value_raw, quarantined_at)
        SELECT ?, ?, ?, ?, reason, detail, ts, ts_raw, host, metric, value, value_raw, now()
        FROM rejected_rows
        """,
        [run_id, source_name, start, end],
    )
    con.unregister("rejected_rows")


def _upsert_hosts(
    con: duckdb.DuckDBPyConnection, rows: pd.DataFrame, meta: pd.DataFrame | None, source_name: str
) -> None:
    """Widen first/last seen and fill role/environment; touch only hosts that change."""
    import pandas as pd

    if rows.empty:
        return
    seen = rows.groupby("host", as_index=False)["ts"].agg(first_seen="min", last_seen="max")
    if meta is not None and not meta.empty:
        seen = seen.merge(meta[["host", "role", "environment"]], on="host", how="left")
    else:
        seen["role"] = None
        seen["environment"] = None
    seen["role"] = seen["role"].astype("object")
    seen["environment"] = seen["environment"].astype("object")
    con.register("seen_hosts", seen)
    merged = con.execute(
        f"""
        SELECT s.host,
               coalesce(s.role, h.role) AS role,
               coalesce(s.environment, h.environment) AS environment,
               least(s.first_seen, coalesce(h.first_seen, s.first_seen)) AS first_seen,
               greatest(s.last_seen, coalesce(h.last_seen, s.last_seen)) AS last_seen,
               coalesce(h.source, ?) AS source,
               h.host IS NULL
                 OR s.first_seen < h.first_seen OR s.last_seen > h.last_seen
                 OR (s.role IS NOT NULL AND s.role IS DISTINCT FROM h.role)
                 OR (s.environment IS NOT NULL AND s.environment IS DISTINCT FROM h.environment)
                 AS changed
        FROM seen_hosts s LEFT JOIN {registry.HOSTS} h USING (host)
        """,
        [source_name],
    ).df()
    con.unregister("seen_hosts")
    changed = merged[merged["changed"]].drop(columns="changed")
    if changed.empty:
        return
    changed = pd.DataFrame(changed)
    con.register("changed_hosts", changed)
    con.execute(f"DELETE FROM {registry.HOSTS} WHERE host IN (SELECT host FROM changed_hosts)")
    con.execute(
        f"""
        INSERT INTO {registry.HOSTS} (host, role, environment, first_seen, last_seen, source, updated_at)
        SELECT host, role, environment, first_seen, last_seen, source, now() FROM changed_hosts
        """
    )
    con.unregister("changed_hosts")


def _log_run(
    con: duckdb.DuckDBPyConnection,
    report: IngestReport,
    status: str,
    start: datetime,
    end: datetime,
    message: str | None,
) -> None:
    con.execute(
        f"""
        INSERT INTO {registry.INGEST_LOG} (run_id, source, interval_start, interval_end, status,
            rows_fetched, rows_loaded, rows_quarantined, message, finished_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())
        """,
        [
            report.run_id,
            report.source,
            start,
            end,
            status,
            report.rows_fetched,
            report.rows_loaded if status == "loaded" else 0,
            report.rows_quarantined,
            message,
        ],
    )


def _quarantine_whole_batch(
    lake: Lake,
    result: CheckResult,
    source_name: str,
    start: datetime,
    end: datetime,
    run_id: str,
    message: str,
) -> None:
    import pandas as pd

    passed = _as_rejected(result.accepted, "batch_rejected", REASONS["batch_rejected"])
    everything = pd.concat([result.rejected, passed], ignore_index=True) if len(passed) else result.rejected
    report = IngestReport(
        source_name,
        start.isoformat(),
        end.isoformat(),
        run_id,
        result.total,
        0,
        len(everything),
        0,
        dict(result.counts),
    )

    def work(con: duckdb.DuckDBPyConnection) -> None:
        _write_quarantine(con, everything, source_name, start, end, run_id)
        _log_run(con, report, "rejected", start, end, message)

    lake.write(work, what=f"quarantine {source_name} [{start.isoformat()}, {end.isoformat()})")


def upsert_host_metadata(lake: Lake, meta: pd.DataFrame, source_name: str) -> None:
    """Set role and environment of hosts already seen (e.g. a simulated fleet loaded from files)."""
    import pandas as pd

    if meta.empty:
        return

    def work(con: duckdb.DuckDBPyConnection) -> None:
        con.register("host_meta", meta)
        seen = con.execute(
            f"SELECT host, first_seen AS ts FROM {registry.HOSTS} WHERE host IN (SELECT host FROM host_meta)"
        ).df()
        con.unregister("host_meta")
        if not seen.empty:
            _upsert_hosts(con, pd.DataFrame(seen), meta, source_name)

    lake.write(work, what="host metadata")
