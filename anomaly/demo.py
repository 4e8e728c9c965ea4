"""``make demo``: a simulated fleet served by a real local Prometheus, ingested through Airflow.

1. simulate ``n_hosts`` hosts over the last ``days`` days as raw node_exporter series;
2. backfill them into a Prometheus TSDB with ``promtool`` and start ``prometheus`` on loopback;
3. run the ``ingest_metrics`` DAG with ``dag.test()`` for every data interval of the window
   (the same code a scheduler runs), reading Prometheus through its HTTP API;
4. print what landed per host and metric, and how to query it;
5. train the ensemble with the ``train_model`` DAG, score the model's test span with the
   ``score_metrics`` DAG (incidents, explanations, Postgres, drift) and print the detected
   incidents beside the injected faults.

Without Prometheus on the machine it says so and ingests from the simulation source directly.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _airflow_env(home: Path) -> None:
    """Defaults for a self-contained Airflow under ANOMALY_HOME (must run before Airflow imports)."""
    airflow_home = Path(os.environ.setdefault("AIRFLOW_HOME", str(home / "airflow")))
    airflow_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


def run_demo(
    n_hosts: int = 20,
    days: float = 2.0,
    source: str = "auto",
    schedule: str | None = None,
    train: bool = True,
    trees: int = 150,
) -> None:
    """Run the whole demo; raises SystemExit with a readable message on failure."""
    import warnings

    from rich.console import Console

    from anomaly.settings import get_settings

    # Airflow's own deprecation chatter is not the user's business during a demo.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
    console = Console()
    wall0 = time.perf_counter()
    settings = get_settings()
    _airflow_env(settings.home)
    # Demo intervals: 6 hours each by default, so 2 days are 8 DAG runs (hourly works too, slower).
    os.environ["ANOMALY_INGEST_SCHEDULE"] = schedule or os.environ.get("ANOMALY_DEMO_SCHEDULE", "0 */6 * * *")
    os.environ["ANOMALY_SIM_HOSTS"] = str(n_hosts)
    # whole 6-hour blocks ending before now: every interval of the window is complete
    now = datetime.now(UTC)
    end = now.replace(hour=now.hour - now.hour % 6, minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=6 * max(1, round(days * 4)))

    from anomaly.promlocal import prometheus_available

    use_prometheus = source == "prometheus" or (source == "auto" and prometheus_available())
    if use_prometheus and not prometheus_available():
        raise SystemExit(
            "error: --source prometheus, but prometheus/promtool are not on PATH "
            "(Debian: apt-get install prometheus)"
        )
    if not use_prometheus:
        console.print(
            "[yellow]Prometheus is not installed here (needs root: apt-get install prometheus); "
            "ingesting from the simulation source directly.[/yellow]"
        )

    console.rule("[bold]anomaly demo")
    console.print(
        f"fleet: {n_hosts} simulated hosts, {days:g} days [{start:%Y-%m-%d %H:%M}, "
        f"{end:%Y-%m-%d %H:%M}) UTC, one sample per {settings.step_seconds}s"
    )
    console.print(f"lake:  {settings.home}")

    with console.status("preparing the Airflow metadata database (first run only takes a while)..."):
        _airflow_db_migrate()

    from anomaly.simulate.faults import save_faults
    from anomaly.simulate.scenario import Scenario, plan_faults

    # labelled incidents on 15 % of the fleet's points, types drawn in turn (all of them at 20 hosts x 2 days)
    scenario = Scenario(
        hosts=n_hosts,
        days=(end - start).total_seconds() / 86400,
        anomaly_share=0.15,
        seed=settings.sim_seed,
        step_seconds=settings.step_seconds,
        start=start,
        name="demo",
        every_type=False,
    )
    faults = plan_faults(scenario)
    faults_file = save_faults(faults, settings.home / "demo" / "faults.json")
    os.environ["ANOMALY_SIM_FAULTS_FILE"] = str(faults_file)
    console.print(f"faults: {len(faults)} injected ({len({f.type for f in faults})} types) -> {faults_file}")

    _clear_other_demo_source(console, settings, "simulation" if use_prometheus else "prometheus", start, end)

    server = None
    try:
        if use_prometheus:
            server = _serve_fleet(console, settings, n_hosts, start, end, faults)
            os.environ["ANOMALY_PROMETHEUS_URL"] = server.url
            os.environ["ANOMALY_SOURCE"] = "prometheus"
        else:
            os.environ["ANOMALY_SOURCE"] = "simulation"
        get_settings.cache_clear()
        fetch_seconds, rows = _run_dag(console, start, end)
    finally:
        if server is not None:
            server.stop()

    from anomaly.ingest import upsert_host_metadata
    from anomaly.simulate.run import hosts_frame, plot_scenario, write_labels
    from anomaly.store import Lake

    source_name = "prometheus" if use_prometheus else "simulation"
    lake = Lake(get_settings())
    write_labels(lake, faults, dataset=source_name)
    upsert_host_metadata(lake, hosts_frame(scenario), source_name)  # Prometheus knows no roles
    plot = plot_scenario(scenario, faults, settings.home / "demo" / "faults.png")
    console.print(f"labels: {len(faults)} rows in table labels (dataset = {source_name!r}); picture: {plot}")

    _report(
        console,
        get_settings(),
        fetch_seconds,
        rows,
        time.perf_counter() - wall0,
        "prometheus" if use_prometheus else "simulation",
    )
    if train:
        _train_and_score(console, source_name, start, end, trees)
    console.print(f"demo wall time: {time.perf_counter() - wall0:.0f}s\n")


def _clear_other_demo_source(console, settings, other: str, start: datetime, end: datetime) -> None:
    """A key may come from one live source only; an earlier demo run from the other source owns the
    window's keys (e.g. a first run before Prometheus was installed). Demo data only: clear it."""
    from anomaly import registry
    from anomaly.features import delete_rows
    from anomaly.store import Lake

    lake = Lake(settings)

    def work(con) -> int:
        n = con.execute(
            f"SELECT count(*) FROM {registry.RAW_METRICS} WHERE source = ? AND ts >= ? AND ts < ?",
            [other, start, end],
        ).fetchone()[0]
        if n:
            con.execute(
                f"DELETE FROM {registry.RAW_METRICS} WHERE source = ? AND ts >= ? AND ts < ?",
                [other, start, end],
            )
            delete_rows(con, "source = ? AND ts >= ? AND ts < ?", [other, start, end])
        return n

    cleared = lake.write(work, what="clear earlier demo rows")
    if cleared:
        console.print(f"cleared {cleared:,} rows an earlier demo loaded from source {other!r} in this window")


def _airflow_db_migrate() -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"error: 'airflow db migrate' failed:\n{out.stderr[-2000:]}")


def _serve_fleet(console, settings, n_hosts: int, start: datetime, end: datetime, faults):
    from anomaly.promlocal import PrometheusServer, backfill, write_openmetrics
    from anomaly.simulate.exporter import node_exporter_series
    from anomaly.simulate.fleet import make_fleet

    work = settings.home / "demo" / "prometheus"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fleet = make_fleet(n_hosts, settings.sim_seed)
    # render 30 minutes before the window so rate() windows at its start are full
    t0 = time.perf_counter()
    with console.status("rendering node_exporter series..."):
        from anomaly.simulate.faults import inject

        series = node_exporter_series(
            fleet,
            start - timedelta(minutes=30),
            end,
            settings.step_seconds,
            settings.sim_seed,
            modifiers=[inject(faults)],
        )
        om = work / "fleet.om"
        samples = write_openmetrics(series, om)
    console.print(f"rendered {samples:,} node_exporter samples in {time.perf_counter() - t0:.1f}s -> {om}")
    t0 = time.perf_counter()
    with console.status("backfilling the Prometheus TSDB with promtool..."):
        backfill(om, work / "tsdb", expected_samples=samples)
    console.print(f"promtool backfilled the TSDB in {time.perf_counter() - t0:.1f}s")
    om.unlink()
    server = PrometheusServer(work / "tsdb")
    with console.status("starting prometheus..."):
        server.start()
    console.print(f"Prometheus {server.url} is serving the fleet")
    return server


def _run_dag(console, start: datetime, end: datetime) -> tuple[float, int]:
    from airflow.dag_processing.dagbag import DagBag
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("ingest_metrics")
    if dag is None:
        raise SystemExit(f"error: DAG ingest_metrics not found in {REPO / 'dags'}")
    ends = interval_ends(dag.timetable, start, end)
    fetch_seconds, rows = 0.0, 0
    with Progress(
        TextColumn("ingest_metrics"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    ) as progress:
        bar = progress.add_task("", total=len(ends))
        for interval_end in ends:
            dr = dag.test(logical_date=interval_end)
            if dr.state != "success":
                raise SystemExit(
                    f"error: ingest_metrics failed for the interval ending {interval_end}; "
                    f"see the task log under {os.environ['AIRFLOW_HOME']}/logs"
                )
            staged, released = _last_report(dr, "ingest"), _last_report(dr, "validate_raw")
            if staged and released:
                fetch_seconds += staged["fetch_seconds"]
                rows += released["rows_loaded"]
            progress.update(
                bar,
                advance=1,
                description=f"{dr.data_interval_start:%m-%d %H:%M} .. "
                f"{dr.data_interval_end:%H:%M}  {rows:,} rows",
            )
    return fetch_seconds, rows


def interval_ends(timetable, start: datetime, end: datetime) -> list[datetime]:
    """Ends of the timetable's data intervals that lie inside ``[start, end]``, in order."""
    import pendulum

    ends: list[datetime] = []
    probe = start
    while probe <= end:
        interval = timetable.infer_manual_data_interval(run_after=pendulum.instance(probe))
        if interval.start >= start and interval.end <= end and (not ends or interval.end > ends[-1]):
            ends.append(interval.end)
        probe += timedelta(minutes=1)
    return ends


def _last_report(dr, task_id: str) -> dict | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id=task_id, key="return_value")
            .one_or_none()
        )
        if row is None:
            return None
        value = row.value
    import json

    return json.loads(value) if isinstance(value, str) else value


def _report(console, settings, fetch_seconds: float, rows: int, wall: float, source: str) -> None:
    from rich.table import Table

    from anomaly.store import Lake, duckdb_cli_lines

    lake = Lake(settings)
    counts = lake.query(
        "SELECT host, metric, count(*) AS n FROM raw_metrics WHERE source = ? GROUP BY ALL", [source]
    )
    if counts.empty:
        raise SystemExit("error: nothing landed in raw_metrics; see the task logs")
    hosts = lake.query("SELECT host, role, environment FROM hosts")
    per_host = (
        counts.groupby("host")["n"]
        .agg(metrics="count", rows="sum", lo="min", hi="max")
        .reset_index()
        .merge(hosts, on="host", how="left")
    )
    table = Table(title=f"raw_metrics per host (source = {source})", header_style="bold")
    # Prometheus knows no roles unless your relabelling adds them; show the columns when known
    known = per_host["role"].notna().any()
    columns = [("host", "left"), ("role", "left"), ("env", "left")] if known else [("host", "left")]
    for col, justify in [*columns, ("metrics", "right"), ("rows", "right"), ("rows per metric", "right")]:
        table.add_column(col, justify=justify)
    for r in per_host.itertuples():
        spread = f"{r.lo:,}" if r.lo == r.hi else f"{r.lo:,}-{r.hi:,}"
        meta = [r.host, _text(r.role), _text(r.environment)] if known else [r.host]
        table.add_row(*meta, str(r.metrics), f"{r.rows:,}", spread)
    console.print(table)

    per_metric = (
        counts.groupby("metric")["n"].agg(hosts="count", rows="sum", lo="min", hi="max").reset_index()
    )
    table = Table(title="raw_metrics per metric", header_style="bold")
    for col, justify in [
        ("metric", "left"),
        ("hosts", "right"),
        ("rows", "right"),
        ("rows per host", "right"),
    ]:
        table.add_column(col, justify=justify)
    for r in per_metric.itertuples():
        spread = f"{r.lo:,}" if r.lo == r.hi else f"{r.lo:,}-{r.hi:,}"
        table.add_row(r.metric, str(r.hosts), f"{r.rows:,}", spread)
    console.print(table)

    q = int(lake.query("SELECT count(*) AS n FROM quarantine WHERE source = ?", [source])["n"][0])
    total = int(counts["n"].sum())
    console.print(
        f"[bold]{total:,}[/bold] rows from {counts['host'].nunique()} hosts x "
        f"{counts['metric'].nunique()} metrics in raw_metrics; {q:,} rows in quarantine."
    )
    if fetch_seconds > 0:
        console.print(
            f"{source} fetch: {rows:,} rows in {fetch_seconds:.1f}s = "
            f"[bold]{rows / fetch_seconds:,.0f} rows/s[/bold]"
        )
    built = lake.query(
        "SELECT count(*) AS n, sum(seconds) AS s FROM feature_log WHERE source = ? AND rows_written > 0",
        [source],
    ).iloc[0]
    n_features = int(lake.query("SELECT count(*) AS n FROM feature_catalog")["n"][0])
    n_rows = int(lake.query("SELECT count(*) AS n FROM features WHERE source = ?", [source])["n"][0])
    console.print(
        f"features: [bold]{n_rows:,}[/bold] rows x {n_features} feature columns in table features "
        f"({int(built['n'])} interval builds, {float(built['s'] or 0):.1f}s of SQL); list them with "
        "`uv run anomaly features list`"
    )
    checks = lake.query(
        """
        SELECT suite, count(*) AS runs, count(*) FILTER (WHERE failed) AS failed,
               count(*) FILTER (WHERE NOT failed AND warned) AS warned
        FROM (SELECT suite, bool_or(NOT success AND severity = 'critical') AS failed, bool_or(NOT success) AS warned
              FROM validation_results WHERE source = ? GROUP BY run_id, suite, interval_start, interval_end)
        GROUP BY suite ORDER BY suite
        """,
        [source],
    )
    summary = ", ".join(
        f"{r.suite} {r.runs - r.failed - r.warned} passed/{r.warned} warned/{r.failed} failed"
        for r in checks.itertuples()
    )
    console.print(
        f"validation: {summary}; Data Docs: {settings.validation_reports_dir / 'index.html'} "
        "(`uv run anomaly reports`)",
        soft_wrap=True,
    )
    console.print(f"ingest wall time: {wall:.0f}s\n")
    console.print("[bold]Query it[/bold] (per host and metric, any SQL):")
    console.print(
        '  uv run anomaly sql "select host, metric, count(*), avg(value) from raw_metrics group by all order by all"',
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        "  uv run anomaly sql --format csv \"select * from raw_metrics where host = 'web-prod-01'\"",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        '  uv run anomaly sql "select host, ts, cpu_util, cpu_util__mean_15m, cpu_util__zscore_1h '
        "from features where host = 'web-prod-01' order by ts desc limit 5\"",
        highlight=False,
        soft_wrap=True,
    )
    console.print("  uv run duckdb     # the plain DuckDB CLI; then paste:", highlight=False)
    for line in duckdb_cli_lines(settings).splitlines():
        console.print(f"    {line}", highlight=False, soft_wrap=True)


DEMO_PG_DATABASE = "anomaly_demo"


def _postgres_target(console) -> bool:
    """Point the publish connection at a local database (created if missing) unless the user
    configured one; False when no Postgres answers (the demo then does not publish)."""
    from anomaly.settings import get_settings

    conn_id = get_settings().publish_conn_id
    var = f"AIRFLOW_CONN_{conn_id.upper()}"
    if var in os.environ:
        return True
    try:
        import psycopg2

        admin = psycopg2.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3
        )
    except Exception as exc:  # noqa: BLE001 - any failure means: no local Postgres to publish to
        console.print(f"[yellow]no Postgres at 127.0.0.1:5432 ({exc}); incidents are not published[/yellow]")
        return False
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DEMO_PG_DATABASE])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{DEMO_PG_DATABASE}"')
    admin.close()
    os.environ[var] = f"postgresql://postgres@127.0.0.1:5432/{DEMO_PG_DATABASE}"
    return True


def _train_and_score(console, source: str, start: datetime, end: datetime, trees: int) -> None:
    """Train on the demo's history, score the model's test span, compare with the faults."""
    from airflow.dag_processing.dagbag import DagBag

    from anomaly.settings import get_settings
    from anomaly.store import Lake
    from anomaly.training import model_registry

    os.environ.setdefault("ANOMALY_SCORE_SCHEDULE", os.environ["ANOMALY_INGEST_SCHEDULE"])
    publish = _postgres_target(console)
    get_settings.cache_clear()
    settings = get_settings()
    bag = DagBag(dag_folder=str(REPO / "dags"))
    console.rule("[bold]train_model")
    conf = {"source": source, "start": start.isoformat(), "end": end.isoformat(), "n_estimators": trees}
    with console.status("training the ensemble (5 members in mapped tasks) ..."):
        t0 = time.perf_counter()
        run = bag.get_dag("train_model").test(run_conf=conf)
    lake = Lake(settings)
    record = model_registry.by_run(run.run_id, lake=lake)
    if run.state != "success" or record is None:
        failed = [ti.task_id for ti in run.get_task_instances() if ti.state == "failed"]
        console.print(
            f"[yellow]training did not register a model (failed: {failed}); see the task logs[/yellow]"
        )
        return
    m = record.metrics
    console.print(
        f"model v{record.version} ({time.perf_counter() - t0:.0f}s): test span point precision "
        f"{m['point']['precision']:.3f}, recall {m['point']['recall']:.3f}, PR-AUC {m['point']['pr_auc']:.3f}; "
        f"event recall {m['event']['event_recall']:.3f}, event F1 {m['event']['event_f1']:.3f} "
        f"(point threshold {record.threshold:.4g}, alert threshold {record.alert_threshold:.4g}: "
        f"{m.get('alert_threshold_basis', 'the point threshold')}); status {record.status}: {record.reason}",
        soft_wrap=True,
    )
    console.print(f"report: {settings.model_reports_dir / f'v{record.version}.html'}", soft_wrap=True)
    pinned = 0
    if record.status != model_registry.CHAMPION:
        pinned = record.version
        console.print(
            f"v{record.version} is not the champion; the demo pins it for scoring (param model_version). "
            f"In production: `uv run anomaly models promote {record.version}` or a better model.",
            soft_wrap=True,
        )
    test_start = datetime.fromisoformat(record.training["split"]["test_start"])
    score_dag = bag.get_dag("score_metrics")
    ends = [e for e in interval_ends(score_dag.timetable, start, end) if e > test_start]
    console.rule("[bold]score_metrics")
    for interval_end in ends:
        dr = score_dag.test(
            logical_date=interval_end,
            run_conf={"source": source, "model_version": pinned, "publish": publish},
        )
        states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
        if dr.state != "success":
            raise SystemExit(f"error: score_metrics failed for the interval ending {interval_end}: {states}")
        console.print(
            f"scored [{dr.data_interval_start:%m-%d %H:%M}, {dr.data_interval_end:%H:%M}): "
            + ", ".join(f"{k} {v}" for k, v in states.items()),
            soft_wrap=True,
        )
    # the faults of the test span: the model never trained or tuned on them
    _incident_report(console, lake, source, test_start, end, publish)


def _incident_report(console, lake, source: str, start: datetime, end: datetime, published: bool) -> None:
    """Injected faults of the scored span beside the incidents that overlap them."""
    from rich.table import Table

    faults = lake.query(
        "SELECT label_id, host, type, start_ts, end_ts FROM labels WHERE dataset = ? AND end_ts > ? AND start_ts < ? "
        "ORDER BY start_ts, host",
        [source, start, end],
    )
    incidents = lake.query(
        "SELECT incident_id, host, start_ts, end_ts, peak_score, points, top_metrics FROM incidents "
        "WHERE source = ? AND end_ts >= ? AND start_ts < ? ORDER BY start_ts",
        [source, start, end],
    )
    features = lake.query(
        "SELECT e.incident_id, e.feature FROM incident_explanations e JOIN incidents i USING (incident_id) "
        "WHERE i.source = ? ORDER BY e.incident_id, e.rank",
        [source],
    )
    top = features.groupby("incident_id")["feature"].apply(list).to_dict()
    table = Table(
        title=f"injected faults vs detected incidents, [{start:%m-%d %H:%M}, {end:%m-%d %H:%M}) UTC",
        header_style="bold",
    )
    for col in ("fault type", "host", "start", "end", "detected", "incident start", "top features"):
        table.add_column(col)
    matched: set[str] = set()
    for f in faults.itertuples():
        hits = incidents[
            (incidents["host"] == f.host)
            & (incidents["start_ts"] < f.end_ts)
            & (incidents["end_ts"] >= f.start_ts)
        ]
        matched |= set(hits["incident_id"])
        first = hits.iloc[0] if len(hits) else None
        table.add_row(
            f.type,
            f.host,
            f"{f.start_ts:%m-%d %H:%M}",
            f"{f.end_ts:%H:%M}",
            "[green]detected[/green]" if first is not None else "[red]missed[/red]",
            "" if first is None else f"{first.start_ts:%m-%d %H:%M}",
            "" if first is None else ", ".join(top.get(first.incident_id, [])[:3]),
        )
    console.print(table)
    detected = sum(
        bool(
            (
                (incidents["host"] == f.host)
                & (incidents["start_ts"] < f.end_ts)
                & (incidents["end_ts"] >= f.start_ts)
            ).any()
        )
        for f in faults.itertuples()
    )
    console.print(
        f"detection: [bold]{detected} of {len(faults)}[/bold] injected faults found; "
        f"{len(incidents) - len(matched)} of {len(incidents)} incidents overlap no fault (false alarms)",
        soft_wrap=True,
    )
    if published:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from anomaly.settings import get_settings

        hook = PostgresHook(postgres_conn_id=get_settings().publish_conn_id)
        counts = {
            t: hook.get_first(f"SELECT count(*) FROM {t}")[0]
            for t in ("anomaly_incidents", "anomaly_incident_explanations", "anomaly_scores")
        }
        console.print(
            "Postgres ("
            + os.environ.get(f"AIRFLOW_CONN_{get_settings().publish_conn_id.upper()}", "")
            + "): "
            + ", ".join(f"{t} {n:,} rows" for t, n in counts.items()),
            soft_wrap=True,
        )


def _text(value: object) -> str:
    return "" if value is None or value != value else str(value)
