"""Ingest one data interval of one source into ``raw_metrics``, idempotently, in two steps.

1. :func:`stage_interval` (the DAG's ``ingest`` task) fetches ``[start, end)``, types every row
   (rows that do not parse go to ``quarantine`` with their reason) and stages the batch in
   ``raw_staging``, which no consumer reads.
2. :func:`release_interval` (the ``validate_raw`` task) runs the ``raw_metrics`` Great
   Expectations suite on the staged batch. A critical failure moves the batch to
   ``quarantine`` and fails with a message naming the suite, expectation, observed value and
   interval; ``raw_metrics`` keeps what it had. Otherwise ONE lake transaction deletes the
   source's rows in the interval and inserts the batch (minus the few rows a row check holds
   back), so a re-run or an overlapping backfill leaves the same rows.

:func:`ingest_interval` does both (CLI, demo, simulations). When more than
``max_reject_share`` of a batch is rejected, nothing is loaded, the whole batch is quarantined
and :class:`IngestRejected` names every problem.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from anomaly import registry
from anomaly.checks import REASONS, CheckResult, as_rejected, parse_batch, screen_rows
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
    batch_id: str = ""  # the staged batch this step worked on
    validation: dict[str, str] = field(default_factory=dict)  # suite -> passed | warning
    warnings: list[str] = field(default_factory=list)

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
    """Load ``[start, end)`` of ``source_name`` into the lake: :func:`stage_interval` then
    :func:`release_interval` (the ``raw_metrics`` suite decides). Returns what happened.

    ``allow_shrink`` lets an empty batch (or one missing whole metrics) replace an interval that
    holds data; by default that fails, as it usually means the source lost data.

    Example::

        >>> ingest_interval("simulation", datetime(2026, 1, 1, tzinfo=UTC),
        ...                 datetime(2026, 1, 1, 1, tzinfo=UTC), run_id="manual")  # doctest: +SKIP
    """
    from anomaly.sources import get_source
    from anomaly.store import Lake

    settings = settings or get_settings()
    lake = lake or Lake(settings)
    src = source or get_source(source_name, settings)
    staged = stage_interval(source_name, start, end, run_id, settings=settings, source=src, lake=lake)
    host_meta = src.hosts() if hasattr(src, "hosts") else None
    released = release_interval(
        source_name,
        start,
        end,
        run_id,
        settings=settings,
        lake=lake,
        allow_shrink=allow_shrink,
        host_meta=host_meta,
    )
    released.fetch_seconds = staged.fetch_seconds
    released.load_seconds = round(staged.load_seconds + released.load_seconds, 3)
    return released


def stage_interval(
    source_name: str,
    start: datetime,
    end: datetime,
    run_id: str,
    *,
    settings: Settings | None = None,
    source: Source | None = None,
    lake: Lake | None = None,
) -> IngestReport:
    """Fetch ``[start, end)``, type every row, and stage the batch in ``raw_staging``.

    Every attempt is a new batch (``batch_id``). Rows that do not parse go to ``quarantine`` now.
    When more than ``max_reject_share`` of the batch does not parse, nothing is staged: the
    ``raw_metrics`` suite runs on the batch as the source sent it (so its type and key
    expectations say what is wrong, in ``validation_results`` and Data Docs), every row goes to
    quarantine, and :class:`~anomaly.validation.ValidationFailed` (or :class:`IngestRejected`
    when the suite has nothing to say) names the problems. A batch this run staged earlier and
    never validated is replaced; ``raw_metrics`` is not touched.
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
    parsed = parse_batch(batch)
    batch_id = uuid.uuid4().hex[:12]
    report = IngestReport(
        source=source_name,
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        run_id=run_id,
        rows_fetched=parsed.total,
        rows_loaded=0,
        rows_quarantined=len(parsed.rejected),
        hosts=int(parsed.accepted["host"].nunique()),
        rejects=dict(parsed.counts),
        fetch_seconds=round(fetch_seconds, 3),
        batch_id=batch_id,
    )
    where = f"source {source_name!r} for [{start.isoformat()}, {end.isoformat()})"
    if parsed.total and parsed.reject_share > settings.max_reject_share:
        _reject_unparsed(lake, settings, batch, parsed, report, start, end, where)

    def work(con: duckdb.DuckDBPyConnection) -> None:
        _supersede_staging(con, source_name, start, end, run_id)
        if not parsed.accepted.empty:
            con.register("staged_rows", parsed.accepted)
            # the registered frame's NaN reads as NULL; every NULL here is a NaN (nulls are rejected)
            con.execute(
                f"""
                INSERT INTO {registry.RAW_STAGING}
                    (batch_id, source, interval_start, interval_end, run_id, ts, host, metric, value, staged_at)
                SELECT ?, ?, ?, ?, ?, ts, host, metric, coalesce(value, 'NaN'::DOUBLE), now()
                FROM staged_rows ORDER BY host, metric, ts
                """,
                [batch_id, source_name, start, end, run_id],
            )
            con.unregister("staged_rows")
        _write_quarantine(con, parsed.rejected, report, start, end)
        note = f"staged {len(parsed.accepted)} rows" + (f"; {parsed.summary()}" if parsed.counts else "")
        _log_run(con, report, "staged", start, end, note)

    lake.write(work, what=f"stage {where}")
    report.load_seconds = round(time.perf_counter() - t1, 3)
    if parsed.counts:
        log.warning("quarantined %d rows of %s: %s", len(parsed.rejected), source_name, parsed.summary())
    log.info("staged %d rows (%d hosts) in %.2fs", len(parsed.accepted), report.hosts, report.load_seconds)
    return report


def release_interval(
    source_name: str,
    start: datetime,
    end: datetime,
    run_id: str,
    *,
    settings: Settings | None = None,
    lake: Lake | None = None,
    allow_shrink: bool = False,
    host_meta: pd.DataFrame | None = None,
) -> IngestReport:
    """Validate the batch this run staged for ``[start, end)`` and release it into ``raw_metrics``.

    The ``raw_metrics`` and ``raw_completeness`` suites run on the staged rows; their results go
    to ``validation_results`` and a Data Docs page whatever the verdict. A critical failure
    moves every staged row to ``quarantine`` (reason ``validation_failed``), records the batch in
    ``quarantine_batches`` and raises :class:`~anomaly.validation.ValidationFailed`:
    ``raw_metrics`` keeps what it had. Otherwise, in ONE transaction, the few rows that fail a
    row check go to ``quarantine`` and the rest replace the source's interval in
    ``raw_metrics``; earlier quarantined batches of the interval are marked released.

    Only a batch still waiting is validated: when this run's latest step for the interval is not
    ``staged`` (already released, quarantined or rejected), this fails instead of validating
    nothing.
    """
    from anomaly.store import Lake
    from anomaly.validation import ValidationFailed, gate, suites

    require_aware(start, end)
    start, end = to_utc(start), to_utc(end)
    settings = settings or get_settings()
    lake = lake or Lake(settings)
    lake.init()
    where = f"source {source_name!r} for [{start.isoformat()}, {end.isoformat()})"
    t0 = time.perf_counter()
    latest = lake.query(
        f"SELECT status, batch_id, rows_fetched, rows_loaded, rows_quarantined, message "
        f"FROM {registry.INGEST_LOG} WHERE run_id = ? AND source = ? AND interval_start = ? "
        "AND interval_end = ? ORDER BY finished_at DESC LIMIT 1",
        [run_id, source_name, start, end],
    )
    if latest.empty:
        raise IngestRejected(
            f"no batch is staged for {where} in run {run_id!r}: the ingest task stages one (in the UI: "
            "clear `ingest` with its downstream tasks)"
        )
    status = latest["status"][0]
    if status != "staged":
        # This run's batch is already decided (a task retry after the decision committed): give
        # the same answer again, and change nothing.
        if status == "loaded":
            log.info("the batch of %s in run %r was already released", where, run_id)
            return IngestReport(
                source_name,
                start.isoformat(),
                end.isoformat(),
                run_id,
                int(latest["rows_fetched"][0]),
                int(latest["rows_loaded"][0]),
                int(latest["rows_quarantined"][0]),
                0,
                batch_id=str(latest["batch_id"][0]),
            )
        message = str(latest["message"][0])
        raise ValidationFailed(message) if status == "quarantined" else IngestRejected(message)
    batch_id = str(latest["batch_id"][0])
    fetched, parse_rejects = int(latest["rows_fetched"][0]), int(latest["rows_quarantined"][0])
    staged = lake.query(
        f"SELECT ts, host, metric, value FROM {registry.RAW_STAGING} WHERE batch_id = ? ORDER BY host, metric, ts",
        [batch_id],
    )
    if len(staged) != fetched - parse_rejects:
        raise IngestRejected(
            f"the batch staged for {where} in run {run_id!r} has {len(staged)} rows, its log says "
            f"{fetched - parse_rejects}: re-run the ingest task of this run to stage it again"
        )
    report = IngestReport(
        source=source_name,
        interval_start=start.isoformat(),
        interval_end=end.isoformat(),
        run_id=run_id,
        rows_fetched=fetched,
        rows_loaded=0,
        rows_quarantined=parse_rejects,
        hosts=0,
        batch_id=batch_id,
    )
    runs = gate.validate_raw(staged, source_name, start, end, lake, settings)
    pages = gate.render(runs, source_name, start, end, run_id, batch_id, settings)
    report.validation = {r.suite: r.status for r in runs}
    report.warnings = [f"{r.suite}: {o.name} ({o.observed})" for r in runs for o in r.warnings]
    parse_counts = dict(
        lake.query(
            f"SELECT reason, count(*) AS n FROM {registry.QUARANTINE} WHERE batch_id = ? GROUP BY reason",
            [batch_id],
        ).itertuples(index=False)
    )

    def refuse(reason: str, message: str, detail: str) -> None:
        """One transaction: every staged row to quarantine, the batch recorded, staging cleared."""

        def work(con: duckdb.DuckDBPyConnection) -> None:
            _write_quarantine(con, as_rejected(staged, reason, detail), report, start, end)
            gate.quarantine_batch(
                con,
                runs,
                source_name,
                start,
                end,
                run_id,
                batch_id,
                rows=len(staged),
                location="table quarantine",
                message=message,
                reason=None if reason == "validation_failed" else detail,
            )
            gate.record(con, runs, source_name, start, end, run_id, batch_id, pages)
            _clear_staging(con, batch_id)
            report.rows_quarantined = parse_rejects + len(staged)
            _log_run(
                con,
                report,
                "quarantined" if reason == "validation_failed" else "rejected",
                start,
                end,
                message,
            )

        lake.write(work, what=f"quarantine {where}")
        gate.refresh_index(lake, settings)

    failed = gate.failed_names(runs)
    if failed:
        message = gate.failure_message(runs, source_name, start, end, run_id) + (
            f". The batch ({len(staged)} rows) is in table quarantine (reason validation_failed, batch_id "
            f"{batch_id!r}) and quarantine_batches; raw_metrics keeps what it had for this interval. Fix "
            "the source and re-run the interval."
        )
        refuse("validation_failed", message, f"batch failed {', '.join(failed)}")
        raise ValidationFailed(message)

    screened = screen_rows(staged, start, end, lake.metric_kinds())

    def work(con: duckdb.DuckDBPyConnection) -> CheckResult:
        # Runs under the lake's write lock, again on every retry: the cross-source check and the
        # shrink guard see exactly what this transaction replaces.
        result = screened.copy()
        _mark_source_conflicts(con, result, source_name, start, end)
        replaced = _guard_shrink(con, result, source_name, start, end, where, allow_shrink)
        report.rows_loaded = len(result.accepted)
        report.rows_quarantined = parse_rejects + len(result.rejected)
        report.hosts = int(result.accepted["host"].nunique())
        report.rejects = {**{str(k): int(v) for k, v in parse_counts.items()}, **result.counts}
        _replace_interval(con, result.accepted, source_name, start, end, run_id)
        _write_quarantine(con, result.rejected, report, start, end)
        _upsert_hosts(con, result.accepted, host_meta, source_name)
        gate.record(con, runs, source_name, start, end, run_id, batch_id, pages)
        gate.release_quarantine(con, [suites.RAW, suites.COMPLETENESS], source_name, start, end, run_id)
        _clear_staging(con, batch_id)
        note = f"replaced {replaced} rows" + (f"; {result.summary()}" if result.counts else "")
        _log_run(con, report, "loaded", start, end, note)
        return result

    try:
        result = lake.write(work, what=f"release {where}")
    except _ShrinkRefused as exc:
        refuse("batch_rejected", str(exc), "the batch would have emptied data of the interval (shrink guard)")
        raise IngestRejected(str(exc)) from None
    gate.refresh_index(lake, settings)
    report.load_seconds = round(time.perf_counter() - t0, 3)
    for line in report.warnings:
        log.warning("validation warning for %s: %s", where, line)
    if result.counts:
        log.warning("quarantined %d rows of %s: %s", len(result.rejected), source_name, result.summary())
    log.info("loaded %d rows (%d hosts) in %.2fs", report.rows_loaded, report.hosts, report.load_seconds)
    return report


def _reject_unparsed(
    lake: Lake,
    settings: Settings,
    batch: pd.DataFrame,
    parsed: CheckResult,
    report: IngestReport,
    start: datetime,
    end: datetime,
    where: str,
) -> NoReturn:
    """Too much of the batch does not parse: validate it as the source sent it, quarantine every
    row, record the batch, and fail."""
    import pandas as pd

    from anomaly.validation import ValidationFailed, gate

    source_name, run_id, batch_id = report.source, report.run_id, report.batch_id
    runs = gate.validate_raw(batch, source_name, start, end, lake, settings)
    pages = gate.render(runs, source_name, start, end, run_id, batch_id, settings)
    share = (
        f"{len(parsed.rejected)} of {parsed.total} rows do not parse ({parsed.reject_share:.1%} > "
        f"ANOMALY_MAX_REJECT_SHARE={settings.max_reject_share:.1%}): {parsed.summary()}"
    )
    tail = (
        f"Nothing was loaded; all {parsed.total} rows are in table quarantine (batch_id {batch_id!r}) and "
        "the batch in quarantine_batches."
    )
    failed = gate.failed_names(runs)
    if failed:
        message = f"{gate.failure_message(runs, source_name, start, end, run_id)}. {share}. {tail}"
    else:
        message = f"ingest of {where}: {share}. {tail}"
    passed = as_rejected(parsed.accepted, "batch_rejected")
    everything = pd.concat([parsed.rejected, passed], ignore_index=True) if len(passed) else parsed.rejected
    report.rows_quarantined = len(everything)

    def work(con: duckdb.DuckDBPyConnection) -> None:
        _supersede_staging(con, source_name, start, end, run_id)
        _write_quarantine(con, everything, report, start, end)
        gate.quarantine_batch(
            con,
            runs,
            source_name,
            start,
            end,
            run_id,
            batch_id,
            rows=len(everything),
            location="table quarantine",
            message=message,
            reason=None if failed else "parse: " + ", ".join(sorted(parsed.counts)),
        )
        gate.record(con, runs, source_name, start, end, run_id, batch_id, pages)
        _log_run(con, report, "rejected", start, end, message)

    lake.write(work, what=f"quarantine {where}")
    gate.refresh_index(lake, settings)
    raise ValidationFailed(message) if failed else IngestRejected(message)


def _supersede_staging(
    con: duckdb.DuckDBPyConnection, source_name: str, start: datetime, end: datetime, run_id: str
) -> None:
    """Make room for a new batch of this run: drop the batch this run staged before and never
    validated (with the rows it quarantined for not parsing: the new batch re-fetched them), and
    move batches of any run staged over a day ago and never validated to quarantine."""
    con.execute(
        f"""
        DELETE FROM {registry.QUARANTINE} WHERE batch_id IN (
            SELECT DISTINCT batch_id FROM {registry.RAW_STAGING}
            WHERE run_id = ? AND source = ? AND interval_start = ? AND interval_end = ?)
        """,
        [run_id, source_name, start, end],
    )
    con.execute(
        f"DELETE FROM {registry.RAW_STAGING} WHERE run_id = ? AND source = ? AND interval_start = ? "
        "AND interval_end = ?",
        [run_id, source_name, start, end],
    )
    con.execute(
        f"""
        INSERT INTO {registry.QUARANTINE}
            (run_id, source, interval_start, interval_end, reason, detail, ts, ts_raw, host, metric,
             value, value_raw, quarantined_at, batch_id)
        SELECT run_id, source, interval_start, interval_end, 'staging_abandoned', ?, ts, CAST(ts AS VARCHAR),
               host, metric, value, CAST(value AS VARCHAR), now(), batch_id
        FROM {registry.RAW_STAGING} WHERE staged_at < now() - INTERVAL 1 DAY
        """,
        [REASONS["staging_abandoned"]],
    )
    con.execute(f"DELETE FROM {registry.RAW_STAGING} WHERE staged_at < now() - INTERVAL 1 DAY")


def _clear_staging(con: duckdb.DuckDBPyConnection, batch_id: str) -> None:
    con.execute(f"DELETE FROM {registry.RAW_STAGING} WHERE batch_id = ?", [batch_id])


def manual_interval(timetable, run_after: datetime) -> tuple[datetime, datetime]:
    """The last complete data interval before ``run_after`` (a run triggered without a logical date)."""
    interval = timetable.infer_manual_data_interval(run_after=run_after)
    return interval.start, interval.end


class _ShrinkRefused(IngestRejected):
    """The shrink guard refused the release (raised inside the transaction, which rolls back)."""


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
        raise _ShrinkRefused(
            f"ingest of {where}: the source returned {what}, but the interval holds {total} rows from an "
            "earlier run. Refusing to delete them (a source outage, a query matching no series or a "
            "range beyond the source's retention looks like this). Fix the source and re-run, or "
            "re-run with allow_shrink=True (DAG param) to empty them on purpose."
        )
    return total


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
    rejected = as_rejected(
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
    report: IngestReport,
    start: datetime,
    end: datetime,
) -> None:
    """Add rejected rows of ``report``'s batch (inside its transaction: a retried transaction
    starts from nothing, so there is nothing to replace)."""
    if rejected.empty:
        return
    con.register("rejected_rows", rejected)
    con.execute(
        f"""
        INSERT INTO {registry.QUARANTINE}
            (run_id, source, interval_start, interval_end, reason, detail, ts, ts_raw, host, metric,
             value, value_raw, quarantined_at, batch_id)
        SELECT ?, ?, ?, ?, reason, detail, ts, ts_raw, host, metric, value, value_raw, now(), ?
        FROM rejected_rows
        """,
        [report.run_id, report.source, start, end, report.batch_id],
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
            rows_fetched, rows_loaded, rows_quarantined, message, finished_at, batch_id)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now(), ?)
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
            report.batch_id or None,
        ],
    )


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
