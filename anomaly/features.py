"""The SQL feature store: ``sql/features/*.sql`` turned into the ``features`` table.

Each file under ``sql/features/`` is one relation (``-- relation:`` in its header), a Jinja
template over the metric catalog, run in file order as a temporary table; later files read
earlier relations. The header also declares the file's ``family``, its ``windows`` or ``lags``,
and its ``columns`` as patterns (``{metric}__mean_{window}``) with a description each: the
``feature_catalog`` table is expanded from those headers, and a build fails if a relation's
columns differ from what its header declares.

Values are bound parameters (``$source``, ``$start``, ``$end``, ``$read_start``); only
identifiers from the metric catalog and numbers from the window definitions are rendered into
the SQL, after validation.

A build covers one interval ``[start, end)`` of one source: it reads the raw rows of the
lookback (the longest window) and of the seasonal lags, computes every relation, and replaces
the interval's rows of ``features`` in one transaction.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly import registry
from anomaly.settings import Settings, get_settings

if TYPE_CHECKING:
    import duckdb

    from anomaly.store import Lake

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_KEY = re.compile(r"--\s*(relation|family|grain|windows|lags):\s*(.*)")
_COLUMN = re.compile(r"--   (\S+)\s{2,}(\S.*)")
_CONTINUATION = re.compile(r"--\s{4,}(\S.*)")

WINDOW_SECONDS = {"5m": 300, "15m": 900, "1h": 3600}
LAG_SECONDS = {"1d": 86_400, "7d": 7 * 86_400}
SEASONAL_TOLERANCE = timedelta(minutes=5)
LOOKBACK = timedelta(seconds=max(WINDOW_SECONDS.values()))


class FeatureError(RuntimeError):
    """A feature file or build failed; the message names the file and the interval."""

    retryable = False  # Lake.write must not re-run a build whose SQL is wrong


# Column names the feature SQL uses itself; a metric may not take them, nor contain "__" (the
# separator of feature names and of the SQL's helper columns).
RESERVED = {"host", "ts", "source", *(f"rows_{w}" for w in WINDOW_SECONDS)}


@dataclass(frozen=True)
class Window:
    name: str
    seconds: int

    @property
    def frame(self) -> str:
        # (t - w, t]: RANGE frames are inclusive, so stop one microsecond short of w.
        return f"INTERVAL '{self.seconds * 1_000_000 - 1} microseconds'"


@dataclass(frozen=True)
class Lag:
    name: str
    seconds: int

    @property
    def interval(self) -> str:
        return f"INTERVAL '{self.seconds} seconds'"


@dataclass(frozen=True)
class MetricRef:
    name: str
    kind: str


@dataclass(frozen=True)
class Pair:
    a: str
    b: str

    @property
    def name(self) -> str:
        return f"{self.a}__{self.b}"


@dataclass(frozen=True)
class Ratio:
    num: str
    den: str

    @property
    def name(self) -> str:
        return f"{self.num}_per_{self.den}"


@dataclass(frozen=True)
class ColumnPattern:
    pattern: str
    description: str


@dataclass(frozen=True)
class FeatureFile:
    path: Path
    relation: str
    family: str
    grain: str
    windows: tuple[Window, ...]
    lags: tuple[Lag, ...]
    columns: tuple[ColumnPattern, ...]

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class FeatureSpec:
    """One row of ``feature_catalog``."""

    name: str
    family: str
    metric: str | None
    window: str | None
    source_file: str
    description: str


@dataclass(frozen=True)
class FeatureContext:
    """What the templates expand over."""

    metrics: tuple[MetricRef, ...]
    pairs: tuple[Pair, ...]
    ratios: tuple[Ratio, ...]

    @classmethod
    def from_catalog(cls, kinds: dict[str, str], settings: Settings | None = None) -> FeatureContext:
        settings = settings or get_settings()
        seen: dict[str, str] = {}
        for name in kinds:
            if not _NAME.fullmatch(name) or "__" in name or name.lower() in RESERVED:
                raise FeatureError(
                    f"metric name {name!r} in metric_catalog cannot name feature columns: use letters, "
                    f"digits and single '_', not starting with a digit, and none of {sorted(RESERVED)}"
                )
            if name.lower() in seen:  # DuckDB matches identifiers case-insensitively
                raise FeatureError(f"metrics {seen[name.lower()]!r} and {name!r} differ only in case")
            seen[name.lower()] = name
        metrics = tuple(MetricRef(n, kinds[n]) for n in sorted(kinds))
        pairs: list[Pair] = []
        ratios: list[Ratio] = []
        wanted = [(a, b, ":", Pair, pairs) for a, b in parse_pairs(settings.feature_pairs, ":")]
        wanted += [(a, b, "/", Ratio, ratios) for a, b in parse_pairs(settings.feature_ratios, "/")]
        for a, b, sep, kind, out in wanted:
            missing = [m for m in (a, b) if m not in kinds]
            if missing:
                log.warning(
                    "feature %s%s%s left out: %s not in metric_catalog", a, sep, b, ", ".join(missing)
                )
                continue
            out.append(kind(a, b))
        return cls(metrics, tuple(pairs), tuple(ratios))


def parse_pairs(text: str, sep: str) -> list[tuple[str, str]]:
    """``"a:b,c:d"`` -> ``[("a", "b"), ("c", "d")]``, with a clear error on a malformed entry."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        left, found, right = item.partition(sep)
        if not found or not _NAME.fullmatch(left.strip()) or not _NAME.fullmatch(right.strip()):
            raise FeatureError(f"{item!r} is not a metric pair written as 'a{sep}b'")
        out.append((left.strip(), right.strip()))
    return out


# -- files --------------------------------------------------------------------------------------
def features_dir() -> Path:
    return registry.sql_dir() / "features"


def parse_header(path: Path) -> FeatureFile:
    """Read the header comment of one feature file."""
    keys: dict[str, str] = {}
    columns: list[list[str]] = []
    in_columns = False
    for line in path.read_text().splitlines():
        if not line.startswith("--"):
            break
        if line.strip() in ("-- columns:", "--columns:"):
            in_columns = True
            continue
        if in_columns and (m := _COLUMN.fullmatch(line)):
            columns.append([m.group(1), m.group(2)])
            continue
        if in_columns and columns and (m := _CONTINUATION.fullmatch(line)):
            columns[-1][1] += " " + m.group(1)
            continue
        in_columns = False
        if m := _HEADER_KEY.fullmatch(line):
            keys.setdefault(m.group(1), m.group(2).strip())
    missing = [k for k in ("relation", "family", "grain") if k not in keys]
    if missing or not columns:
        raise FeatureError(
            f"{path.name}: the header must state relation, family, grain and columns "
            f"(missing: {', '.join(missing + ([] if columns else ['columns']))})"
        )
    if not re.fullmatch(r"feat_[a-z0-9_]+", keys["relation"]) or keys["relation"] == "feat_out":
        raise FeatureError(
            f"{path.name}: relation {keys['relation']!r} must be named feat_<something> (and not feat_out), "
            "so it cannot shadow a lake table"
        )
    try:
        windows = tuple(Window(w, WINDOW_SECONDS[w]) for w in keys.get("windows", "").split())
        lags = tuple(Lag(lag, LAG_SECONDS[lag]) for lag in keys.get("lags", "").split())
    except KeyError as exc:
        known = sorted(WINDOW_SECONDS) + sorted(LAG_SECONDS)
        raise FeatureError(f"{path.name}: unknown window or lag {exc.args[0]!r} (known: {known})") from None
    return FeatureFile(
        path=path,
        relation=keys["relation"],
        family=keys["family"],
        grain=keys["grain"],
        windows=windows,
        lags=lags,
        columns=tuple(ColumnPattern(p, d) for p, d in columns),
    )


def feature_files(directory: Path | None = None) -> list[FeatureFile]:
    """The feature files in run order; the first must be ``feat_base``."""
    directory = directory or features_dir()
    files = [parse_header(p) for p in sorted(directory.glob("*.sql"))]
    if not files or files[0].relation != "feat_base":
        raise FeatureError(f"{directory}: the first feature file must define relation feat_base")
    relations = [f.relation for f in files]
    if len(set(relations)) != len(relations):
        raise FeatureError(f"{directory}: two files define the same relation: {relations}")
    return files


def _ident(name: str) -> str:
    if not _NAME.fullmatch(str(name)):
        raise FeatureError(f"{name!r} is not a safe SQL identifier")
    return f'"{name}"'


def _literal(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)):
        raise FeatureError(f"{name!r} is not a safe SQL literal here")
    return f"'{name}'"


@cache
def _environment():
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["ident"] = _ident
    env.filters["literal"] = _literal
    return env


def render(file: FeatureFile, ctx: FeatureContext) -> str:
    """The SQL of ``file`` for this metric catalog (what ``anomaly features sql`` prints)."""
    template = _environment().from_string(file.path.read_text())
    return template.render(
        metrics=ctx.metrics,
        pairs=ctx.pairs,
        ratios=ctx.ratios,
        windows=file.windows,
        lags=file.lags,
        tolerance=f"INTERVAL '{int(SEASONAL_TOLERANCE.total_seconds())} seconds'",
    )


def expand(file: FeatureFile, ctx: FeatureContext) -> list[FeatureSpec]:
    """The catalog rows the header of ``file`` declares: grouped by metric, then window."""
    keyed: list[tuple[tuple[int, int, int], FeatureSpec]] = []
    metric_pos = {m.name: i for i, m in enumerate(ctx.metrics)}
    for col_pos, col in enumerate(file.columns):
        p = col.pattern
        metrics: Iterable[MetricRef | None] = ctx.metrics if "{metric}" in p else [None]
        for m in metrics:
            choices: list[tuple[str | None, dict[str, str]]] = [(None, {})]
            if "{window}" in p:
                choices = [(w.name, {"window": w.name}) for w in file.windows]
            elif "{lag}" in p:
                choices = [(lag.name, {"lag": lag.name}) for lag in file.lags]
            if "{pair}" in p:
                choices = [(w, {**sub, "pair": pair.name}) for pair in ctx.pairs for w, sub in choices]
            if "{ratio}" in p:
                choices = [(w, {**sub, "ratio": r.name}) for r in ctx.ratios for w, sub in choices]
            for choice_pos, (window, sub) in enumerate(choices):
                values = {**sub, **({"metric": m.name} if m else {})}
                name = p.format(**values)
                desc = col.description.format(**{**values, "metric": m.name if m else "the metric"})
                key = (metric_pos[m.name] if m else -1, choice_pos, col_pos)
                spec = FeatureSpec(name, file.family, m.name if m else None, window, file.name, desc)
                keyed.append((key, spec))
    return [spec for _, spec in sorted(keyed, key=lambda item: item[0])]


def catalog(ctx: FeatureContext, files: Sequence[FeatureFile] | None = None) -> list[FeatureSpec]:
    """Every feature column, in the order of the ``features`` table (after source, host, ts)."""
    files = files if files is not None else feature_files()
    specs = [s for f in files for s in expand(f, ctx)]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FeatureError(f"feature names declared twice: {dupes}")
    return specs


# -- computing ----------------------------------------------------------------------------------
@dataclass
class BuildReport:
    source: str
    start: datetime
    end: datetime
    rows: int = 0
    hosts: int = 0
    features: int = 0
    seconds: float = 0.0
    specs: list[FeatureSpec] = field(default_factory=list)  # the columns of feat_out, in order
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rows": self.rows,
            "hosts": self.hosts,
            "features": self.features,
            "seconds": round(self.seconds, 3),
        }


def compute(
    con: duckdb.DuckDBPyConnection,
    source: str,
    start: datetime,
    end: datetime,
    ctx: FeatureContext,
    files: Sequence[FeatureFile] | None = None,
    *,
    out: str = "feat_out",
) -> BuildReport:
    """Run every feature file on ``con`` and leave the interval's rows in temp table ``out``.

    ``con`` must see ``raw_metrics`` (the lake, or any DuckDB database with that table).
    """
    files = files if files is not None else feature_files()
    con.execute("SET TimeZone = 'UTC'")  # the time features read the wall clock in UTC
    report = BuildReport(source, start, end)
    params = {"source": source, "start": start, "end": end, "read_start": start - LOOKBACK}
    interval = f"[{start.isoformat()}, {end.isoformat()})"
    specs = catalog(ctx, files)
    t0 = time.perf_counter()
    for file in files:
        t = time.perf_counter()
        try:
            sql = render(file, ctx)
            code = re.sub(r"--[^\n]*", "", sql)  # DuckDB refuses parameters the SQL does not use
            used = {k: v for k, v in params.items() if re.search(rf"\${k}\b", code)}
            con.execute(f"CREATE OR REPLACE TEMP TABLE {file.relation} AS {sql}", used)
        except Exception as exc:
            raise FeatureError(
                f"feature file {file.name} failed for interval {interval} of {source!r}: {exc}"
            ) from exc
        report.timings[file.name] = time.perf_counter() - t
        declared = [s.name for s in specs if s.source_file == file.name]
        got = [c for c in _columns(con, file.relation) if c not in ("host", "ts")]
        if sorted(got) != sorted(declared):
            extra, missing = sorted(set(got) - set(declared)), sorted(set(declared) - set(got))
            raise FeatureError(
                f"feature file {file.name}: relation {file.relation} does not match its header "
                f"(undeclared or repeated columns: {extra[:10] or 'repeated'}, declared but missing: {missing[:10]})"
            )
    joins = " ".join(f"JOIN {f.relation} USING (host, ts)" for f in files[1:])
    cols = ", ".join(_ident(s.name) for s in specs)
    t = time.perf_counter()
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT $source AS source, host, ts, {cols} "
        f"FROM {files[0].relation} {joins} WHERE ts >= $start AND ts < $end",
        {"source": source, "start": start, "end": end},
    )
    report.timings["assemble"] = time.perf_counter() - t
    report.rows, report.hosts = con.execute(f"SELECT count(*), count(DISTINCT host) FROM {out}").fetchone()
    report.features = len(specs)
    report.specs = specs
    report.seconds = time.perf_counter() - t0
    return report


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    return [d[0] for d in con.execute(f"SELECT * FROM {relation} LIMIT 0").description]


# -- writing ------------------------------------------------------------------------------------
def build_features(
    source: str,
    start: datetime,
    end: datetime,
    run_id: str | None = None,
    *,
    lake: Lake | None = None,
    files: Sequence[FeatureFile] | None = None,
) -> BuildReport:
    """Compute the features of ``[start, end)`` for ``source`` and replace that interval of the
    ``features`` table, the ``feature_catalog`` and a ``feature_log`` row in one transaction.

    A failure anywhere rolls the whole transaction back: the interval keeps its previous rows.
    """
    from anomaly.sources.base import require_aware, to_utc
    from anomaly.store import Lake

    require_aware(start, end)
    start, end = to_utc(start), to_utc(end)
    lake = lake or Lake()
    files = files if files is not None else feature_files()

    state: dict[str, Any] = {}

    def prepare(con: duckdb.DuckDBPyConnection) -> None:
        kinds = dict(con.execute(f"SELECT name, kind FROM {registry.METRIC_CATALOG}").fetchall())
        ctx = FeatureContext.from_catalog(kinds, lake.settings)
        state["report"] = compute(con, source, start, end, ctx, files)

    def work(con: duckdb.DuckDBPyConnection) -> BuildReport:
        report: BuildReport = state["report"]
        specs = report.specs
        _ensure_table(con, specs)
        state["deleted"] = con.execute(
            f"DELETE FROM {registry.FEATURES} WHERE source = $source AND ts >= $start AND ts < $end",
            {"source": source, "start": start, "end": end},
        ).fetchone()[0]
        cols = ", ".join(["source", "host", "ts"] + [_ident(s.name) for s in specs])
        con.execute(f"INSERT INTO {registry.FEATURES} ({cols}) SELECT {cols} FROM feat_out")
        _write_catalog(con, specs)
        con.execute(
            f"INSERT INTO {registry.FEATURE_LOG} VALUES ($run_id, $source, $start, $end, $rows, $hosts, "
            "$features, $seconds, now())",
            {
                "run_id": run_id,
                "source": source,
                "start": start,
                "end": end,
                "rows": report.rows,
                "hosts": report.hosts,
                "features": report.features,
                "seconds": report.seconds,
            },
        )
        return report

    # The computation runs under the write lock, outside the transaction (see Lake.write); the
    # transaction only swaps the interval's rows, so a failure anywhere leaves them as they were.
    report = lake.write(
        work, prepare=prepare, what=f"build features [{start.isoformat()}, {end.isoformat()})"
    )
    if report.rows == 0:
        log.warning(
            "no raw data of source %r in [%s, %s): no feature rows written%s",
            source,
            start.isoformat(),
            end.isoformat(),
            f" ({state['deleted']} earlier rows of the interval removed)" if state.get("deleted") else "",
        )
    else:
        log.info(
            "features [%s, %s) of %r: %d rows, %d hosts, %d features in %.2fs",
            start.isoformat(),
            end.isoformat(),
            source,
            report.rows,
            report.hosts,
            report.features,
            report.seconds,
        )
    return report


@dataclass
class ValidationReport:
    """What the ``features`` suite found for one interval (JSON-friendly for XCom)."""

    source: str
    interval_start: str
    interval_end: str
    run_id: str | None
    rows: int
    status: str  # passed | warning (a failure raises)
    warnings: list[str] = field(default_factory=list)
    report: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate_features(
    source: str,
    start: datetime,
    end: datetime,
    run_id: str,
    *,
    lake: Lake | None = None,
    settings: Settings | None = None,
) -> ValidationReport:
    """Run the ``features`` suite on the interval's rows of ``features`` (the gate before training
    and scoring read them).

    The suite validates a column profile computed in one SQL pass (one row per feature: NaN or
    infinite values, nulls after warm-up, min and max, count excess). A critical failure writes
    the interval's feature rows to a Parquet file under ``ANOMALY_HOME/quarantine/features/``,
    then in one transaction removes them from ``features`` and records the batch in
    ``quarantine_batches``, and raises :class:`~anomaly.validation.ValidationFailed`; rebuilding
    the interval after the cause is fixed and validating again passes and marks it released.
    """
    from anomaly.sources.base import require_aware, to_utc
    from anomaly.store import Lake
    from anomaly.validation import ValidationFailed, gate, suites

    require_aware(start, end)
    start, end = to_utc(start), to_utc(end)
    settings = settings or get_settings()
    lake = lake or Lake(settings)
    lake.init()
    where = f"source {source!r} for [{start.isoformat()}, {end.isoformat()})"
    batch_id = uuid.uuid4().hex[:12]
    with lake.connection() as con:
        built = con.execute(
            f"SELECT rows_written FROM {registry.FEATURE_LOG} WHERE source = ? AND interval_start = ? "
            "AND interval_end = ? ORDER BY finished_at DESC LIMIT 1",
            [source, start, end],
        ).fetchone()
        if built is None or not table_exists(con):
            raise FeatureError(f"no feature build of {where} yet: build the interval's features first")
        rows = con.execute(
            f"SELECT count(*) FROM {registry.FEATURES} WHERE source = ? AND ts >= ? AND ts < ?",
            [source, start, end],
        ).fetchone()[0]
        if rows != built[0]:
            # e.g. an earlier validation moved them to quarantine: validating nothing would pass
            raise FeatureError(
                f"the features of {where} hold {rows} rows but the latest build wrote {built[0]}: "
                "rebuild the interval (in the UI: clear `build_features` with its downstream tasks)"
            )
        profile = gate.features_profile(con, source, start, end, settings.step_seconds)
    run = gate.validate_features_profile(profile, settings)
    pages = gate.render([run], source, start, end, run_id, batch_id, settings)
    report = ValidationReport(
        source,
        start.isoformat(),
        end.isoformat(),
        run_id,
        rows,
        run.status,
        [f"{o.name} ({o.observed}; e.g. {o.examples})" for o in run.warnings],
        str(pages[suites.FEATURES]),
    )
    if not run.failed:

        def passed(con: duckdb.DuckDBPyConnection) -> None:
            gate.record(con, [run], source, start, end, run_id, batch_id, pages)
            gate.release_quarantine(con, [suites.FEATURES], source, start, end, run_id)

        lake.write(passed, what=f"record features validation {where}")
        gate.refresh_index(lake, settings)
        for line in report.warnings:
            log.warning("features validation warning for %s: %s", where, line)
        return report

    path = gate.batch_path(
        settings.quarantine_dir / "features", source, start, f"{run_id}__{batch_id}", ".parquet"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".parquet.partial")
    message = gate.failure_message([run], source, start, end, run_id) + (
        f". The interval's {rows} feature rows were moved to {path} (quarantine_batches); training "
        "and scoring will not read them. Fix the cause, rebuild the interval and validate again."
    )

    def reject(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            f"COPY (SELECT * FROM {registry.FEATURES} WHERE source = $source AND ts >= $start AND ts < $end "
            "ORDER BY host, ts) TO " + "'" + str(partial).replace("'", "''") + "' (FORMAT parquet)",
            {"source": source, "start": start, "end": end},
        )
        partial.replace(path)
        con.execute(
            f"DELETE FROM {registry.FEATURES} WHERE source = $source AND ts >= $start AND ts < $end",
            {"source": source, "start": start, "end": end},
        )
        gate.quarantine_batch(
            con, [run], source, start, end, run_id, batch_id, rows=rows, location=str(path), message=message
        )
        gate.record(con, [run], source, start, end, run_id, batch_id, pages)

    lake.write(reject, what=f"quarantine features {where}")
    gate.refresh_index(lake, settings)
    raise ValidationFailed(message)


def _ensure_table(con: duckdb.DuckDBPyConnection, specs: Sequence[FeatureSpec]) -> None:
    """Create ``features`` from ``feat_out``'s types, or add the columns a new metric brings."""
    types = {row[0]: row[1] for row in con.execute("DESCRIBE feat_out").fetchall()}
    if not table_exists(con):
        con.execute(f"CREATE TABLE {registry.FEATURES} AS SELECT * FROM feat_out LIMIT 0")
        return
    have = set(_columns(con, registry.FEATURES))
    added = [s.name for s in specs if s.name not in have]
    for name in added:
        con.execute(f"ALTER TABLE {registry.FEATURES} ADD COLUMN {_ident(name)} {types[name]}")
    if added:
        log.warning(
            "added %d feature column(s) to %s (%s%s): rows built earlier hold NULL there; rebuild them "
            "with `anomaly features build`",
            len(added),
            registry.FEATURES,
            ", ".join(added[:5]),
            ", ..." if len(added) > 5 else "",
        )


def table_exists(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the lake has a ``features`` table yet (the first build creates it)."""
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = $db AND table_name = $t",
            {"db": registry.LAKE_ALIAS, "t": registry.FEATURES},
        ).fetchone()[0]
    )


def delete_rows(con: duckdb.DuckDBPyConnection, where: str, params: Sequence[Any]) -> None:
    """``DELETE FROM features WHERE <where>`` when the table exists: whoever removes raw rows
    removes their features in the same transaction."""
    if table_exists(con):
        con.execute(f"DELETE FROM {registry.FEATURES} WHERE {where}", params)


def _write_catalog(con: duckdb.DuckDBPyConnection, specs: Sequence[FeatureSpec]) -> None:
    """Describe every column of ``features``: this build's specs, and as they were the columns
    earlier builds added that this one does not produce (a metric since removed, say).
    ``position`` is the column's place in the table. An unchanged catalog is not rewritten."""
    keys = ("source", "host", "ts")
    position = {
        name: i for i, name in enumerate(c for c in _columns(con, registry.FEATURES) if c not in keys)
    }
    by_name = {
        row[0]: row
        for row in con.execute(
            f'SELECT name, family, metric, "window", source_file, description FROM {registry.FEATURE_CATALOG}'
        ).fetchall()
    }
    for s in specs:
        by_name[s.name] = (s.name, s.family, s.metric, s.window, s.source_file, s.description)
    rows = sorted((position[name], *row) for name, row in by_name.items() if name in position)
    current = [
        tuple(r)
        for r in con.execute(f"SELECT * FROM {registry.FEATURE_CATALOG} ORDER BY position").fetchall()
    ]
    if current == rows:
        return
    con.execute(f"DELETE FROM {registry.FEATURE_CATALOG}")
    con.executemany(f"INSERT INTO {registry.FEATURE_CATALOG} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


def intervals(start: datetime, end: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut into ``step``-long pieces (the last may be shorter)."""
    if step <= timedelta(0):
        raise FeatureError(f"the step must be positive, got {step}")
    out, t = [], start
    while t < end:
        out.append((t, min(t + step, end)))
        t += step
    return out


def build_range(
    source: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    run_id: str | None = None,
    *,
    lake: Lake | None = None,
    progress: Callable[[int, BuildReport], None] | None = None,
) -> list[BuildReport]:
    """Build ``[start, end)`` interval by interval (what a backfill does); ``progress(total,
    report)`` after each."""
    pieces = intervals(start, end, step)
    reports = []
    for a, b in pieces:
        reports.append(build_features(source, a, b, run_id, lake=lake))
        if progress:
            progress(len(pieces), reports[-1])
    return reports


def export(
    lake: Lake,
    path: Path,
    *,
    host: str | None,
    start: datetime | None,
    end: datetime | None,
    source: str | None = None,
) -> int:
    """Write the features of a host (or all hosts) over a range to Parquet or CSV (by suffix)."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise FeatureError(f"{path}: export writes .parquet or .csv files, not {suffix or 'no suffix'!r}")
    if start is not None and end is not None and end <= start:
        raise FeatureError(f"empty range: end {end.isoformat()} is not after start {start.isoformat()}")
    where, params = [], {}
    for col, op, value in (
        ("host", "=", host),
        ("source", "=", source),
        ("ts", ">=", start),
        ("ts", "<", end),
    ):
        if value is not None:
            where.append(f"{col} {op} ${col}_{len(params)}")
            params[f"{col}_{len(params)}"] = value
    sql = f"SELECT * FROM {registry.FEATURES}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY source, host, ts"
    con = lake._connect_retrying(read_only=True)
    rows = 0
    partial = path.with_name(path.name + ".partial")
    try:
        # streamed batch by batch: a month of a fleet does not have to fit in memory
        reader = con.execute(sql, params).to_arrow_reader(100_000)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer_cls = pq.ParquetWriter if suffix == ".parquet" else pa_csv.CSVWriter
        with writer_cls(str(partial), reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
        partial.replace(path)  # a failed export leaves no half-written file under the name
    finally:
        con.close()
        partial.unlink(missing_ok=True)
    return rows
