"""The lake: DuckDB over DuckLake, catalog in SQLite (default) or Postgres, data in Parquet.

Every process opens its own in-memory DuckDB and ATTACHes the lake, so
readers and writers in different processes never block each other; DuckLake
resolves concurrent commits, and writes retry on a commit conflict.

Example::

    >>> from anomaly.store import Lake
    >>> lake = Lake()                                          # doctest: +SKIP
    >>> lake.query("select count(*) as n from raw_metrics")    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from anomaly import registry
from anomaly.settings import Settings, get_settings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

log = logging.getLogger(__name__)

T = TypeVar("T")

# Messages DuckDB/DuckLake/SQLite give for a lost race on commit; such a write is safe to retry.
_RETRYABLE = re.compile(
    r"conflict|database is locked|SQLITE_BUSY|could not serialize|deadlock|Catalog write-write",
    re.IGNORECASE,
)


class StoreError(RuntimeError):
    """The lake could not be opened or written; the message says which and why."""


# DuckDB derives an extension's entry point from its file name; two wheels ship files whose names
# differ from the extension's internal name, so they are loaded through a correctly named copy.
_INTERNAL_NAMES = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}


def extension_path(name: str, cache_dir: Path | None = None) -> Path:
    """Path of a DuckDB extension shipped in the ``duckdb-extension-<name>`` wheel.

    Loading from the wheel means nothing is downloaded at run time.
    """
    import duckdb

    module = f"duckdb_extension_{name}"
    try:
        pkg = importlib.import_module(module)
    except ImportError as exc:
        raise StoreError(
            f"DuckDB extension {name!r} is not installed: add duckdb-extension-{name}=={duckdb.__version__}"
        ) from exc
    base = Path(next(iter(pkg.__path__)))
    wanted = base / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not wanted.exists():
        found = sorted(base.glob(f"extensions/*/{name}.duckdb_extension"))
        if not found:
            raise StoreError(f"no {name}.duckdb_extension inside {base}")
        raise StoreError(
            f"duckdb-extension-{name} ships {found[0].parent.name}, but duckdb is {duckdb.__version__}: "
            "pin both to the same version"
        )
    internal = _INTERNAL_NAMES.get(name)
    if internal is None:
        return wanted
    cache = (cache_dir or Path.home() / ".cache" / "anomaly") / f"duckdb-v{duckdb.__version__}"
    target = cache / f"{internal}.duckdb_extension"
    if not target.exists() or target.stat().st_size != wanted.stat().st_size:
        import os
        import shutil

        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{internal}.{os.getpid()}.tmp"
        shutil.copyfile(wanted, tmp)
        os.replace(tmp, target)  # atomic: a concurrent process never loads a half-written file
    return target


def _quote_literal(text: str) -> str:
    # ATTACH takes no bound parameters; the only literals we splice are paths and a DSN that we
    # built ourselves, so quote them as SQL string literals.
    return "'" + text.replace("'", "''") + "'"


def _sqlite_wal(path: Path) -> None:
    """Put the SQLite catalog in WAL mode (persistent in the file): readers then never block the
    writer and the writer never blocks readers. In the default rollback-journal mode a long
    query made a concurrent ingest fail with 'database is locked'."""
    import sqlite3

    con = sqlite3.connect(path, timeout=30)
    try:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is a lost commit race that a retry may win (an error may say it is not,
    with ``retryable = False``, whatever its text)."""
    return getattr(exc, "retryable", True) and _RETRYABLE.search(str(exc)) is not None


class Lake:
    """Handle on the DuckLake store described by ``settings``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._initialised = False
        self._db: duckdb.DuckDBPyConnection | None = None

    # -- connections -----------------------------------------------------------------------------
    def _attach_target(self) -> str:
        s = self.settings
        if s.catalog == "sqlite":
            s.lake_dir.mkdir(parents=True, exist_ok=True)
            _sqlite_wal(s.sqlite_catalog_path)
            return f"ducklake:sqlite:{s.sqlite_catalog_path}"
        dsn = " ".join(f"{k}={v}" for k, v in self._postgres_params().items())
        return f"ducklake:postgres:{dsn}"

    def _postgres_params(self) -> dict[str, str]:
        from anomaly.connections import get_connection

        s = self.settings
        conn = get_connection(s.catalog_conn_id)
        if conn is None:
            raise StoreError(
                f"catalog=postgres but Airflow connection {s.catalog_conn_id!r} is not defined "
                f"(set AIRFLOW_CONN_{s.catalog_conn_id.upper()} or add it in the Airflow UI)"
            )
        parts = {
            "host": conn.host or "127.0.0.1",
            "port": str(conn.port or 5432),
            "dbname": conn.schema or "postgres",
            "user": conn.login or "postgres",
        }
        if conn.password:
            parts["password"] = conn.password
        return parts

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Serialise lake writers (readers never take it).

        DuckLake lets two transactions that only append to a table both commit, so two writers
        of the same interval could each delete nothing and both insert. Writers therefore take
        a lock: a file lock beside the SQLite catalog (one machine), or a Postgres advisory lock
        in the catalog database (writers on many machines).
        """
        s = self.settings
        if s.catalog == "sqlite":
            import fcntl

            s.lake_dir.mkdir(parents=True, exist_ok=True)
            with open(s.lake_dir / "write.lock", "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        import psycopg2

        key = int.from_bytes(
            hashlib.blake2b(s.lake_data_path.encode(), digest_size=8).digest(), "big", signed=True
        )
        with psycopg2.connect(**self._postgres_params()) as pg:
            pg.autocommit = True
            cur = pg.cursor()
            cur.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
        pg.close()

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection with the lake attached as ``lake`` and selected by ``USE``."""
        import duckdb

        con = duckdb.connect(
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            }
        )
        try:
            # Timestamps are UTC everywhere: never let the host's zone leak into results.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            con.execute(f"LOAD {_quote_literal(str(extension_path('ducklake')))}")
            con.execute(
                f"LOAD {_quote_literal(str(extension_path(self.settings.catalog, self.settings.home / 'extensions')))}"
            )
            data_path = self.settings.lake_data_path
            if "://" not in data_path:
                Path(data_path).mkdir(parents=True, exist_ok=True)
            options = [f"DATA_PATH {_quote_literal(data_path)}"]
            if read_only:
                options.append("READ_ONLY")
            con.execute(
                f"ATTACH {_quote_literal(self._attach_target())} AS {registry.LAKE_ALIAS} "
                f"({', '.join(options)})"
            )
            con.execute(f"USE {registry.LAKE_ALIAS}")
        except Exception as exc:
            con.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the lake ({self.describe()}): {exc}") from exc
        return con

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on this handle's attached lake (attaching costs ~0.4 s, so it happens once).

        Each cursor is its own DuckDB connection (own transaction, own registered frames) on the
        same in-memory database, so threads may each take one.
        """
        if self._db is None:
            self._db = self._connect_retrying()
        cursor = self._db.cursor()
        try:
            cursor.execute(f"USE {registry.LAKE_ALIAS}")
            yield cursor
        finally:
            cursor.close()

    def _connect_retrying(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        # Several processes opening a brand-new Postgres catalog race to create DuckLake's tables;
        # the losers see a conflict and simply attach again.
        attempts = self.settings.commit_retries
        for attempt in range(1, attempts + 1):
            try:
                return self.connect(read_only=read_only)
            except StoreError as exc:
                cause = exc.__cause__ or exc
                if attempt < attempts and (is_retryable(cause) or "already exists" in str(cause)):
                    time.sleep(0.1 * attempt * (0.5 + random.random()))
                    continue
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Detach the lake and release the connection (a later call reconnects)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def describe(self) -> str:
        s = self.settings
        where = str(s.sqlite_catalog_path) if s.catalog == "sqlite" else f"conn_id={s.catalog_conn_id}"
        return f"catalog={s.catalog} ({where}), data={s.lake_data_path}"

    # -- writes ----------------------------------------------------------------------------------
    def write(
        self,
        work: Callable[[duckdb.DuckDBPyConnection], T],
        *,
        what: str = "write",
        prepare: Callable[[duckdb.DuckDBPyConnection], object] | None = None,
    ) -> T:
        """Run ``work(con)`` inside one transaction, holding the write lock; retry it on a
        commit conflict or a busy catalog.

        ``prepare(con)``, if given, runs first on the same connection, under the lock but outside
        the transaction: heavy reads into temp tables go there (DuckLake scans inside a
        transaction can plan much worse: an ASOF join took 22 s instead of 0.9 s). It must not
        write to the lake, and it runs again on a retry.
        ``work`` must be idempotent (delete-then-insert), since a retry runs it again.
        """
        self.init()
        attempts = self.settings.commit_retries
        for attempt in range(1, attempts + 1):
            try:
                with self.write_lock(), self.connection() as con:
                    if prepare is not None:
                        prepare(con)
                    con.execute("BEGIN TRANSACTION")
                    try:
                        result = work(con)
                        con.execute("COMMIT")
                    except BaseException:
                        try:
                            con.execute("ROLLBACK")
                        except Exception:  # noqa: BLE001 - the transaction may already be aborted
                            pass
                        raise
                    return result
            except Exception as exc:
                if attempt < attempts and is_retryable(exc):
                    delay = min(0.05 * 2**attempt, 2.0) * (0.5 + random.random())
                    log.info("%s: %s (attempt %d/%d), retrying in %.2fs", what, exc, attempt, attempts, delay)
                    time.sleep(delay)
                    continue
                raise
        raise AssertionError("unreachable")

    # -- schema ----------------------------------------------------------------------------------
    def init(self) -> None:
        """Apply ``sql/schema/*.sql`` files not applied yet and seed the metric catalog. Idempotent."""
        if self._initialised:
            return
        files = sorted((registry.sql_dir() / "schema").glob("*.sql"))
        if not files:
            raise StoreError(f"no schema files under {registry.sql_dir() / 'schema'}")
        for attempt in range(1, self.settings.commit_retries + 1):
            try:
                self._apply_schema(files)
                break
            except Exception as exc:
                if attempt < self.settings.commit_retries and is_retryable(exc):
                    time.sleep(0.1 * attempt * (0.5 + random.random()))
                    continue
                raise
        self._initialised = True

    def _apply_schema(self, files: Sequence[Path]) -> None:
        with self.connection() as con:
            self._apply_schema_on(con, files)

    def _apply_schema_on(self, con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> None:
        """All pending schema files and the catalog seed in ONE transaction (one catalog commit)."""
        from anomaly.metrics import DEFAULT_METRICS

        existing = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = ?",
                [registry.LAKE_ALIAS],
            ).fetchall()
        }
        applied: set[str] = set()
        if registry.SCHEMA_MIGRATIONS in existing:
            applied = {
                r[0] for r in con.execute(f"SELECT version FROM {registry.SCHEMA_MIGRATIONS}").fetchall()
            }
        pending = [f for f in files if f.stem not in applied]
        have: set[str] = set()
        if registry.METRIC_CATALOG in existing:
            have = {r[0] for r in con.execute(f"SELECT name FROM {registry.METRIC_CATALOG}").fetchall()}
        missing = [m for m in DEFAULT_METRICS if m.name not in have]
        if not pending and not missing:
            return
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {registry.SCHEMA_MIGRATIONS} "
                "(version VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
            )
            for path in pending:
                con.execute(path.read_text())
                con.execute(f"INSERT INTO {registry.SCHEMA_MIGRATIONS} VALUES (?, now())", [path.stem])
            if missing:
                con.executemany(
                    f"INSERT INTO {registry.METRIC_CATALOG} (name, unit, kind, description, origin) "
                    "VALUES (?, ?, ?, ?, 'default')",
                    [(m.name, m.unit, m.kind, m.description) for m in missing],
                )
            con.execute("COMMIT")
        except Exception:
            try:
                con.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - already aborted
                pass
            raise
        log.info("applied schema %s; seeded %d metrics", [p.name for p in pending], len(missing))

    # -- reads -----------------------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """Run one query against the lake (schema applied first) and return a DataFrame."""
        self.init()
        with self.connection() as con:
            return con.execute(sql, params).df() if params is not None else con.execute(sql).df()

    def read(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """Run ``sql`` on a READ-ONLY attachment: what ``anomaly sql`` uses; writes are refused."""
        s = self.settings
        if s.catalog == "sqlite" and not s.sqlite_catalog_path.exists():
            raise StoreError(
                f"no lake at {s.sqlite_catalog_path}: run `anomaly init` or the ingest DAG first"
            )
        con = self._connect_retrying(read_only=True)
        try:
            return con.execute(sql, params).df() if params is not None else con.execute(sql).df()
        finally:
            con.close()

    def metric_kinds(self) -> dict[str, str]:
        """``{metric name: kind}`` from ``metric_catalog``."""
        frame = self.query(f"SELECT name, kind FROM {registry.METRIC_CATALOG}")
        return dict(zip(frame["name"], frame["kind"], strict=True))


def duckdb_cli_lines(settings: Settings | None = None) -> str:
    """SQL a person pastes into the plain ``duckdb`` CLI (``uv run duckdb``) to read this lake.

    The extensions load from the installed wheels, as the product does; on a machine with
    internet, ``INSTALL ducklake; INSTALL sqlite;`` works as well.
    """
    s = settings or get_settings()
    catalog_ext = extension_path(s.catalog, s.home / "extensions")
    if s.catalog == "sqlite":
        target = f"ducklake:sqlite:{s.sqlite_catalog_path}"
    else:
        target = "ducklake:postgres:dbname=<db> host=<host> user=<user>"
    return (
        f"LOAD {_quote_literal(str(extension_path('ducklake')))};\n"
        f"LOAD {_quote_literal(str(catalog_ext))};\n"
        f"ATTACH {_quote_literal(target)} AS lake (DATA_PATH {_quote_literal(s.lake_data_path)}, READ_ONLY);\n"
        "SET TimeZone = 'UTC';\n"
        "USE lake;\n"
        "SELECT host, metric, count(*) AS n FROM raw_metrics GROUP BY ALL ORDER BY ALL;"
    )
