"""Batch scoring: one source's data interval scored by the champion (or a pinned) model, grouped
into incidents, explained.

**Scores.** :func:`score_interval` reads the interval's rows of ``features``, scores them with
the model (artifacts verified by SHA-256 first), and in ONE lake transaction replaces that
source's ``scores`` of ``[start, end)``, recomputes the incidents the interval touches and adds a
``score_log`` row. Re-runs and backfills, in any order and overlapping, therefore leave exactly
one score per (source, host, ts) and the same incidents: both are a function of the feature rows
and the model, not of the order the intervals ran in.

**Gaps.** A (host, ts) the raw data has in the interval but ``features`` lacks (a quarantined or
unbuilt hour) is not scored; ``score_log.missing`` records it per host (count, first, last).

**Incidents** are maximal runs of alert points (``scores.is_alert``: score at or above the model's
alert threshold, tuned on validation data for the best event F1; ``is_anomaly`` is the lower,
recall-tuned point threshold) of one host in which consecutive points are at most
``ANOMALY_INCIDENT_GAP_SECONDS`` apart, whatever interval they were scored in. After the
interval's scores are replaced, every incident of the source within the gap of the interval is
deleted and its host's runs are recomputed over the span they covered plus the interval: an
incident open at an interval's end is extended by the next run (same id), two incidents joined by
a backfilled hour become one. ``incident_id`` is md5(source, host, first point): stable across
re-runs as long as the run's first point is.

**Explanations.** :func:`explain_incidents` computes, for incidents whose points changed
(``explained_at`` NULL), the XGBoost member's tree SHAP contributions on their alert points
only (at most ``EXPLAIN_MAX_POINTS`` per incident, evenly spaced), averages them per feature and
keeps the ``ANOMALY_EXPLAIN_TOP`` largest by magnitude in ``incident_explanations``; the
incident's ``top_metrics`` are the metrics of those features. It runs outside the scoring
transaction (SHAP is ~1,000 rows/s), so a failure leaves the incidents unexplained, not wrong,
and the next run catches up.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from anomaly import registry
from anomaly.settings import Settings, get_settings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from anomaly.store import Lake
    from anomaly.training.model_registry import ModelRecord

log = logging.getLogger(__name__)

EXPLAIN_MAX_POINTS = 200
_LOADED: dict[tuple[int, str, str], Any] = {}  # the last verified model, for backfills in one process


class ScoringError(ValueError):
    """Scoring was refused (no champion, a model that does not fit the feature store); retrying
    does not help."""

    retryable = False


@dataclass
class ScoreReport:
    source: str
    start: datetime
    end: datetime
    run_id: str | None
    model_version: int
    rows: int = 0
    anomalies: int = 0
    alerts: int = 0
    hosts: int = 0
    expected_rows: int = 0
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)
    incidents: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out


def resolve_model(version: int | None = None, *, lake: Lake | None = None) -> ModelRecord:
    """The pinned ``version``, else the champion; a clear refusal when there is none."""
    from anomaly.training import model_registry

    if version:
        try:
            return model_registry.get(int(version), lake=lake)
        except model_registry.RegistryError as exc:
            raise ScoringError(str(exc)) from exc
    record = model_registry.champion(lake=lake)
    if record is None:
        raise ScoringError(
            "no champion model to score with: train one (the train_model DAG or `anomaly train`), "
            "then make it the champion with `anomaly models promote VERSION` (or pin a version)"
        )
    return record


def _load(record: ModelRecord) -> Any:
    """The record's ensemble, every artifact's SHA-256 checked when first loaded in this process."""
    from anomaly.training import model_registry

    key = (record.version, str(record.artifacts), json.dumps(record.sha256, sort_keys=True))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = model_registry.load(record)
    return _LOADED[key]


def feature_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_catalog = ? AND table_name = ?",
        [registry.LAKE_ALIAS, registry.FEATURES],
    ).fetchone()[0]
    if not exists:
        return []
    return [d[0] for d in con.execute(f"SELECT * FROM {registry.FEATURES} LIMIT 0").description]


def check_features(record: ModelRecord, columns: list[str]) -> None:
    """Refuse a model whose feature list the feature store no longer has, naming them."""
    present = set(columns)
    missing = [f for f in record.features if f not in present]
    if missing:
        raise ScoringError(
            f"model v{record.version} needs {len(missing)} feature(s) the feature store lacks: "
            f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}; rebuild features or retrain"
        )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_interval(
    con: duckdb.DuckDBPyConnection, record: ModelRecord, source: str, start: datetime, end: datetime
) -> pd.DataFrame:
    cols = ", ".join(_ident(f) for f in record.features)
    return con.execute(
        f"SELECT host, ts, {cols} FROM {registry.FEATURES} WHERE source = ? AND ts >= ? AND ts < ? ORDER BY host, ts",
        [source, start, end],
    ).df()


def _gaps(con: duckdb.DuckDBPyConnection, source: str, start: datetime, end: datetime) -> tuple[int, dict]:
    """(host, ts) pairs with raw data in the interval but no feature row: count, and per host."""
    rows = con.execute(
        f"""
        WITH expected AS (
            SELECT DISTINCT host, ts FROM {registry.RAW_METRICS} WHERE source = ? AND ts >= ? AND ts < ?
        ), present AS (
            SELECT host, ts FROM {registry.FEATURES} WHERE source = ? AND ts >= ? AND ts < ?
        )
        SELECT e.host, count(*) AS n, min(e.ts) AS first, max(e.ts) AS last
        FROM expected e ANTI JOIN present p ON e.host = p.host AND e.ts = p.ts
        GROUP BY e.host ORDER BY e.host
        """,
        [source, start, end, source, start, end],
    ).fetchall()
    expected = con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT host, ts FROM {registry.RAW_METRICS} "
        "WHERE source = ? AND ts >= ? AND ts < ?)",
        [source, start, end],
    ).fetchone()[0]
    missing = {
        h: {"points": int(n), "first": f.isoformat(), "last": last.isoformat()} for h, n, f, last in rows
    }
    return int(expected), missing


def score_interval(
    source: str,
    start: datetime,
    end: datetime,
    run_id: str | None = None,
    *,
    version: int | None = None,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> ScoreReport:
    """Score ``[start, end)`` of ``source`` and update its incidents (one transaction)."""
    import numpy as np

    from anomaly.sources.base import require_aware, to_utc
    from anomaly.store import Lake

    require_aware(start, end)
    start, end = to_utc(start), to_utc(end)
    settings = settings or get_settings()
    lake = lake or Lake(settings)
    lake.init()
    t0 = time.perf_counter()
    record = resolve_model(version, lake=lake)
    with lake.connection() as con:
        check_features(record, feature_columns(con))
        frame = _read_interval(con, record, source, start, end)
        expected, missing = _gaps(con, source, start, end)
    report = ScoreReport(source, start, end, run_id, record.version, expected_rows=expected, missing=missing)
    if missing:
        log.warning(
            "%s [%s, %s): %d point(s) without features, not scored: %s",
            source,
            start.isoformat(),
            end.isoformat(),
            sum(m["points"] for m in missing.values()),
            ", ".join(f"{h} ({m['points']})" for h, m in list(missing.items())[:10]),
        )
    if frame.empty:
        log.warning("%s [%s, %s): no feature rows to score", source, start.isoformat(), end.isoformat())
    model = _load(record)
    scores = model.decision_function(frame[record.features]) if len(frame) else np.empty(0)
    out = frame[["host", "ts"]].copy()
    out["score"] = scores.astype(np.float64)
    out["is_anomaly"] = out["score"] >= record.threshold
    alert = record.alert_threshold if settings.alert_threshold is None else settings.alert_threshold
    if alert < record.threshold:  # a page on a point is_anomaly does not flag would contradict it
        log.warning(
            "ANOMALY_ALERT_THRESHOLD %s is below model v%d's point threshold %s: paging on the point threshold",
            alert,
            record.version,
            record.threshold,
        )
        alert = record.threshold
    out["is_alert"] = out["score"] >= alert
    report.rows, report.anomalies = len(out), int(out["is_anomaly"].sum())
    report.alerts = int(out["is_alert"].sum())
    report.hosts = int(out["host"].nunique())
    gap = timedelta(seconds=settings.incident_gap_seconds)

    def work(con: duckdb.DuckDBPyConnection) -> int:
        con.execute(
            f"DELETE FROM {registry.SCORES} WHERE source = ? AND ts >= ? AND ts < ?", [source, start, end]
        )
        con.register("new_scores", out)
        con.execute(
            f"""
            INSERT INTO {registry.SCORES} (source, host, ts, score, is_anomaly, is_alert, model_version,
                run_id, scored_at)
            SELECT ?, host, ts, score, is_anomaly, is_alert, ?, ?, now() FROM new_scores
            """,
            [source, record.version, run_id],
        )
        con.unregister("new_scores")
        touched = _recompute_incidents(con, source, start, end, gap, run_id)
        con.execute(
            f"""
            INSERT INTO {registry.SCORE_LOG} (run_id, source, interval_start, interval_end, model_version,
                rows_scored, anomalies, hosts, expected_rows, missing, seconds, finished_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())
            """,
            [
                run_id,
                source,
                start,
                end,
                record.version,
                report.rows,
                report.anomalies,
                report.hosts,
                expected,
                json.dumps(missing, sort_keys=True),
                time.perf_counter() - t0,
            ],
        )
        return touched

    report.incidents = lake.write(work, what=f"score {source} [{start.isoformat()}, {end.isoformat()})")
    report.seconds = time.perf_counter() - t0
    log.info(
        "scored %s [%s, %s) with model v%d: %d rows, %d anomalous, %d incident(s) recomputed in %.1f s",
        source,
        start.isoformat(),
        end.isoformat(),
        record.version,
        report.rows,
        report.anomalies,
        report.incidents,
        report.seconds,
    )
    return report


def _recompute_incidents(
    con: duckdb.DuckDBPyConnection,
    source: str,
    start: datetime,
    end: datetime,
    gap: timedelta,
    run_id: str | None,
) -> int:
    """Delete the source's incidents within ``gap`` of the interval and rebuild every incident
    of the span they covered (per host) from ``scores``; returns how many incidents now cover it."""
    gap_s = gap.total_seconds()
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE span AS
        WITH old AS (
            SELECT host, min(start_ts) AS lo, max(end_ts) AS hi FROM {registry.INCIDENTS}
            WHERE source = $source AND end_ts >= $start - to_seconds($gap) AND start_ts < $end + to_seconds($gap)
            GROUP BY host
        ), hosts AS (
            SELECT DISTINCT host FROM {registry.SCORES}
            WHERE source = $source AND ts >= $start AND ts < $end AND coalesce(is_alert, is_anomaly)
            UNION SELECT host FROM old
        )
        SELECT h.host, least(coalesce(o.lo, $start), $start) AS lo, greatest(coalesce(o.hi, $end), $end) AS hi
        FROM hosts h LEFT JOIN old o USING (host)
        """,
        {"source": source, "start": start, "end": end, "gap": gap_s},
    )
    doomed = f"""
        SELECT incident_id FROM {registry.INCIDENTS} i JOIN span s USING (host)
        WHERE i.source = $source AND i.end_ts >= s.lo AND i.start_ts <= s.hi
    """
    con.execute(
        f"DELETE FROM {registry.INCIDENT_EXPLANATIONS} WHERE incident_id IN ({doomed})", {"source": source}
    )
    con.execute(f"DELETE FROM {registry.INCIDENTS} WHERE incident_id IN ({doomed})", {"source": source})
    # Alert points of those hosts over their span, one gap beyond on each side so a run that
    # reaches past the span (an incident left outside it by a shorter earlier run) joins in.
    con.execute(
        f"""
        INSERT INTO {registry.INCIDENTS} (incident_id, source, host, start_ts, end_ts, peak_score, mean_score,
            points, model_version, top_metrics, run_id, updated_at, explained_at)
        WITH points AS (
            SELECT sc.host, sc.ts, sc.score, sc.model_version
            FROM {registry.SCORES} sc JOIN span s USING (host)
            WHERE sc.source = $source AND coalesce(sc.is_alert, sc.is_anomaly)
              AND sc.ts >= s.lo - to_seconds($gap) AND sc.ts <= s.hi + to_seconds($gap)
        ), marked AS (
            SELECT *, CASE WHEN lag(ts) OVER w IS NULL OR ts - lag(ts) OVER w > to_seconds($gap)
                           THEN 1 ELSE 0 END AS new_run
            FROM points WINDOW w AS (PARTITION BY host ORDER BY ts)
        ), runs AS (
            SELECT *, sum(new_run) OVER (PARTITION BY host ORDER BY ts) AS run FROM marked
        )
        SELECT md5(concat_ws('|', $source, host, strftime(min(ts) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%f'))),
               $source, host, min(ts), max(ts), max(score), avg(score), count(*),
               arg_max(model_version, ts), []::VARCHAR[], $run_id, now(), NULL
        FROM runs GROUP BY host, run
        """,
        {"source": source, "gap": gap_s, "run_id": run_id},
    )
    n = con.execute(
        f"""
        SELECT count(*) FROM {registry.INCIDENTS} i JOIN span s USING (host)
        WHERE i.source = $source AND i.end_ts >= s.lo AND i.start_ts <= s.hi
        """,
        {"source": source},
    ).fetchone()[0]
    con.execute("DROP TABLE span")
    return int(n)


def metric_of(feature: str, catalog: dict[str, str | None]) -> list[str]:
    """The metrics a feature is computed from: the catalog's metric, the two metrics of a
    cross-metric feature (``corr__a__b_1h``, ``a_per_b``), none for time features."""
    metric = catalog.get(feature)
    if metric:
        return [metric]
    if feature.startswith("corr__"):
        parts = feature.split("__")
        return [p for p in parts[1:3] if p]
    if "_per_" in feature:
        return feature.split("_per_", 1)
    return []


def explain_incidents(
    source: str,
    run_id: str | None = None,
    *,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Explain every incident of ``source`` whose points changed since it was explained."""
    import numpy as np
    import pandas as pd

    from anomaly.store import Lake
    from anomaly.training import model_registry

    settings = settings or get_settings()
    lake = lake or Lake(settings)
    lake.init()
    t0 = time.perf_counter()
    pending = lake.query(
        f"""
        SELECT incident_id, host, start_ts, end_ts, model_version, updated_at FROM {registry.INCIDENTS}
        WHERE source = ? AND explained_at IS NULL ORDER BY start_ts
        """,
        [source],
    )
    if pending.empty:
        return {"source": source, "explained": 0, "points": 0, "seconds": 0.0}
    catalog = dict(lake.query(f"SELECT name, metric FROM {registry.FEATURE_CATALOG}").itertuples(index=False))
    rows: list[tuple] = []
    tops: dict[str, list[str]] = {}
    stamps: dict[str, Any] = {}
    points_done = 0
    for version, group in pending.groupby("model_version"):
        record = model_registry.get(int(version), lake=lake)
        model = _load(record)
        with lake.connection() as con:
            check_features(record, feature_columns(con))
            cols = ", ".join(_ident(f) for f in record.features)
            con.register("pending_incidents", group[["incident_id", "host", "start_ts", "end_ts"]])
            # the alert points of each incident, at most EXPLAIN_MAX_POINTS evenly spaced
            frame = con.execute(
                f"""
                WITH pts AS (
                    SELECT p.incident_id, f.*,
                           row_number() OVER (PARTITION BY p.incident_id ORDER BY f.ts) AS k,
                           count(*) OVER (PARTITION BY p.incident_id) AS n
                    FROM pending_incidents p
                    JOIN {registry.SCORES} s ON s.source = ? AND s.host = p.host
                         AND s.ts >= p.start_ts AND s.ts <= p.end_ts AND coalesce(s.is_alert, s.is_anomaly)
                    JOIN (SELECT host, ts, {cols} FROM {registry.FEATURES} WHERE source = ?) f
                         ON f.host = s.host AND f.ts = s.ts
                )
                SELECT incident_id, {cols} FROM pts
                WHERE n <= {EXPLAIN_MAX_POINTS}
                   OR (k - 1) % CAST(ceil(n / {EXPLAIN_MAX_POINTS}) AS BIGINT) = 0
                ORDER BY incident_id
                """,
                [source, source],
            ).df()
            con.unregister("pending_incidents")
        points_done += len(frame)
        if frame.empty:
            contributions = np.empty((0, len(record.features)))
        else:
            contributions = model.contributions(frame[record.features])
        ids = frame["incident_id"].to_numpy()
        for incident_id in group["incident_id"]:
            mask = ids == incident_id
            stamps[incident_id] = group.loc[group["incident_id"] == incident_id, "updated_at"].iloc[0]
            if not mask.any():  # its points' features are gone (quarantined): nothing to explain
                tops[incident_id] = []
                continue
            mean = contributions[mask].mean(axis=0)
            order = np.argsort(-np.abs(mean), kind="stable")[: settings.explain_top]
            metrics: list[str] = []
            for rank, j in enumerate(order, start=1):
                name = record.features[j]
                found = metric_of(name, catalog)
                rows.append(
                    (incident_id, rank, name, found[0] if found else None, float(mean[j]), record.version)
                )
                metrics += [m for m in found if m not in metrics]
            tops[incident_id] = metrics
    explained = pd.DataFrame(
        rows, columns=["incident_id", "rank", "feature", "metric", "contribution", "model_version"]
    )
    done = pd.DataFrame({"incident_id": list(tops), "updated_at": [stamps[i] for i in tops]})
    done["top_metrics"] = [tops[i] for i in tops]

    def work(con: duckdb.DuckDBPyConnection) -> int:
        con.register("explained", explained)
        con.register("done", done)
        # Only incidents unchanged since they were read: one recomputed meanwhile stays pending.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE still AS
            SELECT i.incident_id FROM {registry.INCIDENTS} i JOIN done d
              ON i.incident_id = d.incident_id AND i.updated_at = d.updated_at AND i.explained_at IS NULL
            """
        )
        con.execute(
            f"DELETE FROM {registry.INCIDENT_EXPLANATIONS} WHERE incident_id IN (SELECT incident_id FROM still)"
        )
        con.execute(
            f"""
            INSERT INTO {registry.INCIDENT_EXPLANATIONS} (incident_id, rank, feature, metric, contribution, model_version)
            SELECT * FROM explained WHERE incident_id IN (SELECT incident_id FROM still)
            """
        )
        con.execute(
            f"""
            UPDATE {registry.INCIDENTS} SET top_metrics = d.top_metrics, explained_at = now()
            FROM done d WHERE {registry.INCIDENTS}.incident_id = d.incident_id
              AND {registry.INCIDENTS}.incident_id IN (SELECT incident_id FROM still)
            """
        )
        n = con.execute("SELECT count(*) FROM still").fetchone()[0]
        con.execute("DROP TABLE still")
        con.unregister("explained")
        con.unregister("done")
        return int(n)

    n = lake.write(work, what=f"explain incidents of {source}")
    seconds = time.perf_counter() - t0
    log.info(
        "explained %d incident(s) of %s from %d anomalous point(s) in %.1f s", n, source, points_done, seconds
    )
    return {
        "source": source,
        "explained": n,
        "points": points_done,
        "seconds": round(seconds, 3),
        "run_id": run_id,
    }


def features_ready(
    source: str, start: datetime, end: datetime, *, lake: Lake | None = None
) -> tuple[bool, str]:
    """Whether feature builds (``feature_log``) cover ``[start, end)`` of ``source``, and what is
    missing: the scoring DAG waits for this before it scores an interval."""
    from anomaly.sources.base import to_utc
    from anomaly.store import Lake

    lake = lake or Lake()
    lake.init()
    built = lake.query(
        f"""
        SELECT DISTINCT interval_start, interval_end FROM {registry.FEATURE_LOG}
        WHERE source = ? AND interval_end > ? AND interval_start < ? ORDER BY interval_start
        """,
        [source, start, end],
    )
    covered = to_utc(start)
    for lo, hi in built.itertuples(index=False):
        lo, hi = to_utc(lo.to_pydatetime()), to_utc(hi.to_pydatetime())
        if lo > covered:
            break
        covered = max(covered, hi)
    if covered >= to_utc(end):
        return True, "features built"
    return (
        False,
        f"features of {source} are built up to {covered.isoformat()}, need {to_utc(end).isoformat()}",
    )
