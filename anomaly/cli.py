"""The ``anomaly`` command: query the lake, ingest by hand, run the demo.

Examples::

    anomaly sql "select host, count(*) from raw_metrics group by host"
    anomaly sql --format csv "select * from quarantine" > rejected.csv
    anomaly ingest --source files --start 2026-01-01T00:00Z --end 2026-01-02T00:00Z
    anomaly features build --source simulation --start 2026-01-01T00:00Z --end 2026-01-02T00:00Z
    anomaly features export --host web-01 --start 2026-01-01T00:00Z --out web-01.parquet
    anomaly demo
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from anomaly.sources import SOURCE_NAMES


class _CliError(click.ClickException):
    def show(self, file=None) -> None:
        click.secho(f"error: {self.format_message()}", err=True, fg="red")


def _parse_utc(value: str, name: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _CliError(f"{name}: {value!r} is not an ISO-8601 timestamp (e.g. 2026-01-01T00:00Z)") from exc
    if ts.tzinfo is None:
        raise _CliError(f"{name}: {value!r} has no time zone; add 'Z' for UTC")
    return ts.astimezone(UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")
def main(verbose: bool) -> None:
    """Batch anomaly detection for infrastructure metrics."""
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.argument("query")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--limit",
    type=int,
    default=1000,
    show_default=True,
    help="Rows printed in table format (csv and json print all).",
)
def sql(query: str, fmt: str, limit: int) -> None:
    """Run a read-only SQL QUERY against the lake (tables: raw_metrics, hosts, ...); writes are refused."""
    import duckdb

    from anomaly.store import Lake, StoreError

    try:
        frame = Lake().read(query)
    except StoreError as exc:
        raise _CliError(str(exc)) from exc
    except duckdb.Error as exc:
        raise _CliError(f"query failed: {exc}") from exc
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso", date_unit="us"))
    else:
        _print_table(frame, limit)


def _print_table(frame, limit: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    for col in frame.columns:
        table.add_column(str(col), justify="right" if frame[col].dtype.kind in "iuf" else "left")
    for row in frame.head(limit).itertuples(index=False):
        table.add_row(*("NULL" if v is None or v != v else str(v) for v in row))
    console = Console()
    console.print(table)
    shown = min(limit, len(frame))
    console.print(f"{len(frame)} row(s)" + (f", first {shown} shown" if shown < len(frame) else ""))


@main.command()
def init() -> None:
    """Create the lake and apply the schema (idempotent)."""
    from anomaly.store import Lake

    lake = Lake()
    lake.init()
    click.echo(f"lake ready: {lake.describe()}")


@main.command()
@click.option("--source", type=click.Choice(SOURCE_NAMES), default=None, help="Default: ANOMALY_SOURCE.")
@click.option("--start", required=True, help="Interval start, ISO-8601 with zone (inclusive).")
@click.option("--end", required=True, help="Interval end, ISO-8601 with zone (exclusive).")
@click.option("--run-id", default=None, help="Recorded with the rows (default: manual__<now>).")
def ingest(source: str | None, start: str, end: str, run_id: str | None) -> None:
    """Ingest [START, END) from a source without Airflow (same code path as the DAG)."""
    from anomaly.ingest import IngestRejected, ingest_interval
    from anomaly.settings import get_settings
    from anomaly.sources import SourceError
    from anomaly.validation import ValidationFailed

    source = source or get_settings().source
    begin, finish = _parse_utc(start, "--start"), _parse_utc(end, "--end")
    run_id = run_id or f"manual__{datetime.now(UTC).isoformat()}"
    try:
        report = ingest_interval(source, begin, finish, run_id)
    except (IngestRejected, ValidationFailed, SourceError, ValueError) as exc:
        raise _CliError(str(exc)) from exc
    click.echo(json.dumps(report.as_dict(), indent=2))


@main.command()
def reports() -> None:
    """Where the reports are: validation Data Docs (HTML), quarantined batches, model reports."""
    from anomaly.settings import get_settings
    from anomaly.store import Lake, StoreError

    settings = get_settings()
    index = settings.validation_reports_dir / "index.html"
    click.echo(f"validation reports (Great Expectations Data Docs): {index}")
    if not index.exists():
        click.echo(
            "  none yet: they are written by the ingest DAG's validate_raw and validate_features tasks"
        )
    try:
        lake = Lake(settings)
        if settings.catalog != "sqlite" or settings.sqlite_catalog_path.exists():
            lake.init()  # a lake made by an older version gets the validation tables
        runs = lake.read(
            """
            SELECT count(*) AS validations,
                   count(*) FILTER (WHERE failed) AS failed,
                   count(*) FILTER (WHERE NOT failed AND warned) AS warned
            FROM (SELECT bool_or(NOT success AND severity = 'critical') AS failed,
                         bool_or(NOT success) AS warned
                  FROM validation_results GROUP BY run_id, suite, source, interval_start, interval_end)
            """
        ).iloc[0]
        held = lake.read(
            "SELECT count(*) FILTER (WHERE released_at IS NULL) AS held, count(released_at) AS released "
            "FROM quarantine_batches"
        ).iloc[0]
        last = lake.read(
            "SELECT suite, source, interval_start, reason, location FROM quarantine_batches "
            "WHERE released_at IS NULL ORDER BY quarantined_at DESC LIMIT 1"
        )
    except StoreError:
        click.echo("  (no lake yet)")
        return
    n, failed, warned = int(runs["validations"]), int(runs["failed"]), int(runs["warned"])
    click.echo(
        f"  {n:,} validations: {n - failed - warned:,} passed, {warned:,} with warnings, {failed:,} failed"
    )
    click.echo(
        f"quarantined batches: {int(held['held'])} held, {int(held['released'])} released "
        '(anomaly sql "select * from quarantine_batches")'
    )
    for r in last.itertuples():
        click.echo(
            f"  latest held: {r.suite} of {r.source} at {r.interval_start}: {r.reason} -> {r.location}"
        )
    click.echo(f"model reports: {settings.home / 'reports' / 'models'}")
    click.echo(
        f"\nbrowse: python -m http.server -d {settings.home / 'reports'} 8008, then open http://127.0.0.1:8008/"
    )


@main.command()
def info() -> None:
    """Where the lake is, and how to open it with the plain duckdb CLI."""
    from anomaly.settings import get_settings
    from anomaly.store import Lake, duckdb_cli_lines

    settings = get_settings()
    click.echo(f"ANOMALY_HOME: {settings.home}")
    click.echo(f"lake: {Lake(settings).describe()}")
    click.echo("\nplain duckdb CLI (pip install duckdb-cli, or the duckdb binary):\n")
    click.echo(duckdb_cli_lines(settings))


@main.command()
@click.option("--hosts", type=click.IntRange(1), default=50, show_default=True, help="Hosts in the fleet.")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=14, show_default=True)
@click.option(
    "--anomaly-share",
    type=click.FloatRange(0, 0.9),
    default=0.2,
    show_default=True,
    help="Share of (host, timestamp) points inside a fault window.",
)
@click.option("--types", default="all", show_default=True, help="Comma-separated fault types, or 'all'.")
@click.option("--exclude", default="", help="Comma-separated fault types to hold out (never injected).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--step",
    "step_seconds",
    type=click.IntRange(1),
    default=60,
    show_default=True,
    help="Seconds between samples.",
)
@click.option(
    "--start", default=None, help="First timestamp, ISO-8601 with zone (default 2026-01-05T00:00Z)."
)
@click.option("--name", default="sim", show_default=True, help="Rows land under source 'simulation:<name>'.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also draw a few hosts with the injected windows shaded (PNG).",
)
@click.option("--list-types", is_flag=True, help="List the fault types and exit.")
def simulate(
    hosts: int,
    days: float,
    anomaly_share: float,
    types: str,
    exclude: str,
    seed: int,
    step_seconds: int,
    start: str | None,
    name: str,
    plot_path: str | None,
    list_types: bool,
) -> None:
    """Simulate a fleet with typed faults, ingest it through the normal path, and write its labels."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from anomaly.simulate.faults import REGISTRY
    from anomaly.simulate.run import parse_type_list, plot_scenario, run_scenario
    from anomaly.simulate.scenario import DEFAULT_START, Scenario, plan_faults

    console = Console()
    if list_types:
        for kind in sorted(REGISTRY, key=lambda k: (REGISTRY[k].family, k)):
            ft = REGISTRY[kind]
            console.print(
                f"[bold]{kind}[/bold] ({ft.family}; {', '.join(ft.metrics)})\n  {ft.description}\n",
                highlight=False,
            )
        return
    try:
        scenario = Scenario(
            hosts=hosts,
            days=days,
            anomaly_share=anomaly_share,
            types=parse_type_list(types),
            exclude=parse_type_list(exclude) or (),
            seed=seed,
            step_seconds=step_seconds,
            start=_parse_utc(start, "--start") if start else DEFAULT_START,
            name=name,
        )
    except ValueError as exc:
        raise _CliError(str(exc)) from exc
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage} days", total=total)
            bar.update(tasks[stage], completed=done)

        try:
            report = run_scenario(scenario, progress=progress)
        except ValueError as exc:
            raise _CliError(str(exc)) from exc
    click.echo(json.dumps(report, indent=2))
    if plot_path:
        out = plot_scenario(scenario, plan_faults(scenario), Path(plot_path))
        click.echo(f"plot: {out}")


@main.command()
@click.option("--from-source", required=True, help="Stored series to copy (e.g. prometheus, files).")
@click.option("--to-source", required=True, help="Source name of the modified copy (e.g. prometheus+faults).")
@click.option("--start", required=True, help="ISO-8601 with zone, inclusive.")
@click.option("--end", required=True, help="ISO-8601 with zone, exclusive.")
@click.option("--anomaly-share", type=click.FloatRange(0, 0.9), default=0.2, show_default=True)
@click.option("--types", default="all", show_default=True, help="Comma-separated fault types, or 'all'.")
@click.option("--exclude", default="", help="Comma-separated fault types to hold out.")
@click.option("--seed", type=int, default=7, show_default=True)
def inject(
    from_source: str,
    to_source: str,
    start: str,
    end: str,
    anomaly_share: float,
    types: str,
    exclude: str,
    seed: int,
) -> None:
    """Inject typed faults into a copy of stored series; the original source is never altered."""
    from anomaly.ingest import IngestRejected
    from anomaly.simulate.run import inject_into_source, parse_type_list

    try:
        report = inject_into_source(
            from_source,
            to_source,
            _parse_utc(start, "--start"),
            _parse_utc(end, "--end"),
            anomaly_share=anomaly_share,
            types=parse_type_list(types),
            exclude=parse_type_list(exclude) or (),
            seed=seed,
        )
    except (ValueError, IngestRejected) as exc:
        raise _CliError(str(exc)) from exc
    click.echo(json.dumps(report, indent=2))


@main.command()
@click.option("--hosts", type=int, default=20, show_default=True, help="Simulated hosts.")
@click.option("--days", type=float, default=2.0, show_default=True, help="Days of history.")
@click.option(
    "--source",
    type=click.Choice(["auto", "prometheus", "simulation"]),
    default="auto",
    show_default=True,
    help="auto: Prometheus when installed, else the simulation directly.",
)
@click.option(
    "--train/--no-train",
    default=True,
    show_default=True,
    help="Then train a model, score its test span and compare incidents with the injected faults.",
)
@click.option("--trees", type=int, default=150, show_default=True, help="Trees per boosted member.")
def demo(hosts: int, days: float, source: str, train: bool, trees: int) -> None:
    """Simulate a fleet, serve it from a local Prometheus, ingest it through the Airflow DAG, then
    train, score and report incidents beside the injected faults."""
    from anomaly.demo import run_demo

    run_demo(n_hosts=hosts, days=days, source=source, train=train, trees=trees)


@main.group()
def features() -> None:
    """Build, list, show and export the SQL features (sql/features/*.sql)."""


@features.command("build")
@click.option("--source", default=None, help="Source whose raw rows to use (default: ANOMALY_SOURCE).")
@click.option("--start", required=True, help="ISO-8601 with zone, inclusive.")
@click.option("--end", required=True, help="ISO-8601 with zone, exclusive.")
@click.option("--step", default="1h", show_default=True, help="Interval length of each build (e.g. 1h, 1d).")
def features_build(source: str | None, start: str, end: str, step: str) -> None:
    """Build the features of [START, END), one STEP-long interval at a time (a backfill)."""
    from rich.progress import Progress

    from anomaly.features import FeatureError, build_range
    from anomaly.settings import get_settings
    from anomaly.store import StoreError

    source = source or get_settings().source
    begin, finish = _parse_utc(start, "--start"), _parse_utc(end, "--end")
    if finish <= begin:
        raise _CliError(f"--end {end} is not after --start {start}")
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"features of {source}", total=None)

        def advance(total: int, _report) -> None:
            progress.update(bar, total=total, advance=1)

        try:
            reports = build_range(
                source,
                begin,
                finish,
                _parse_step(step),
                f"manual__{datetime.now(UTC).isoformat()}",
                progress=advance,
            )
        except (FeatureError, StoreError, ValueError) as exc:
            raise _CliError(str(exc)) from exc
    rows = sum(r.rows for r in reports)
    click.echo(
        f"built {len(reports)} interval(s) of {source!r}: {rows} rows, {reports[-1].features} features"
    )


def _parse_step(text: str):
    import math
    from datetime import timedelta

    units = {"m": 60, "h": 3600, "d": 86400}
    try:
        seconds = float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise _CliError(f"--step {text!r}: write a number and a unit m, h or d (e.g. 1h)") from None
    if not math.isfinite(seconds) or seconds < 60:
        raise _CliError(f"--step {text!r} must be at least one minute")
    return timedelta(seconds=seconds)


@features.command("list")
def features_list() -> None:
    """Print the feature catalog of the current metric catalog (name, family, window, file)."""
    import pandas as pd

    from anomaly.features import FeatureError, catalog

    ctx = _feature_context()
    try:
        specs = catalog(ctx)
    except FeatureError as exc:
        raise _CliError(str(exc)) from exc
    frame = pd.DataFrame(
        [(s.name, s.family, s.window or "", s.source_file, s.description) for s in specs],
        columns=["name", "family", "window", "source_file", "description"],
    )
    _print_table(frame, len(frame))


def _feature_context():
    from anomaly.features import FeatureContext, FeatureError
    from anomaly.store import Lake, StoreError

    try:
        return FeatureContext.from_catalog(Lake().metric_kinds())
    except (FeatureError, StoreError) as exc:
        raise _CliError(str(exc)) from exc


@features.command("sql")
@click.argument("file", required=False)
def features_sql(file: str | None) -> None:
    """Print the rendered SQL of one feature FILE (e.g. 10_rolling.sql), or of all of them."""
    from anomaly.features import FeatureError, feature_files, render

    ctx = _feature_context()
    try:
        files = feature_files()
    except FeatureError as exc:
        raise _CliError(str(exc)) from exc
    chosen = [f for f in files if file in (None, f.name, f.relation)]
    if not chosen:
        raise _CliError(f"no feature file {file!r}; files: {', '.join(f.name for f in files)}")
    for f in chosen:
        click.echo(f"-- {f.name}: CREATE TEMP TABLE {f.relation} AS\n{render(f, ctx)}")


@features.command("export")
@click.option("--host", default=None, help="One host (default: all hosts).")
@click.option("--source", default=None, help="One source (default: all sources).")
@click.option("--start", default=None, help="ISO-8601 with zone, inclusive.")
@click.option("--end", default=None, help="ISO-8601 with zone, exclusive.")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A .parquet or .csv file.",
)
def features_export(host, source, start, end, out: Path) -> None:
    """Write the features of a host over a range to Parquet or CSV."""
    import duckdb

    from anomaly.features import FeatureError, export
    from anomaly.store import Lake, StoreError

    begin = _parse_utc(start, "--start") if start else None
    finish = _parse_utc(end, "--end") if end else None
    try:
        n = export(Lake(), out, host=host, start=begin, end=finish, source=source)
    except (FeatureError, StoreError) as exc:
        raise _CliError(str(exc)) from exc
    except duckdb.CatalogException as exc:
        raise _CliError(f"no features yet ({exc}); build them with `anomaly features build`") from exc
    click.echo(f"wrote {n} rows to {out}")


@main.command()
@click.option("--source", required=True, help="Features source, e.g. simulation:bench.")
@click.option("--start", required=True, help="ISO-8601 with zone, inclusive.")
@click.option("--end", required=True, help="ISO-8601 with zone, exclusive.")
@click.option("--labels", "labels_dataset", default=None, help="labels.dataset (default: the source).")
@click.option("--exclude-types", default="", help="Fault types left out of training (tested on).")
@click.option("--no-promote", is_flag=True, help="Register only; do not try to promote.")
def train(
    source: str, start: str, end: str, labels_dataset: str | None, exclude_types: str, no_promote: bool
) -> None:
    """Train, evaluate and register an ensemble on [START, END) of SOURCE (the train_model DAG's work)."""
    from anomaly.training.dataset import TrainingSetError
    from anomaly.training.train import train_model

    begin, finish = _parse_utc(start, "--start"), _parse_utc(end, "--end")
    try:
        result = train_model(
            source,
            begin,
            finish,
            run_id=f"manual__{datetime.now(UTC).isoformat()}",
            labels_dataset=labels_dataset,
            exclude_types=[t for t in exclude_types.split(",") if t],
            promote=not no_promote,
        )
    except (TrainingSetError, ValueError) as exc:
        raise _CliError(str(exc)) from exc
    click.echo(json.dumps(result.summary(), indent=2, default=str))


@main.group()
def models() -> None:
    """The model registry: list, show, promote, rollback."""


@models.command("list")
def models_list() -> None:
    """Every model version, newest first."""
    from anomaly.training.model_registry import list_models

    _print_table(list_models(), 100)


@models.command("show")
@click.argument("version", type=int)
def models_show(version: int) -> None:
    """One version: parameters, training set, metrics, artifacts."""
    from dataclasses import asdict

    from anomaly.training.model_registry import RegistryError, get

    try:
        record = get(version)
    except RegistryError as exc:
        raise _CliError(str(exc)) from exc
    click.echo(json.dumps(asdict(record), indent=2, default=str))


@models.command("promote")
@click.argument("version", type=int)
@click.option("--reason", default="promoted by hand", show_default=True)
def models_promote(version: int, reason: str) -> None:
    """Make VERSION the champion (the current one is retired)."""
    from anomaly.training.model_registry import RegistryError, promote

    try:
        record = promote(version, reason=reason)
    except RegistryError as exc:
        raise _CliError(str(exc)) from exc
    click.echo(f"model v{record.version} is the champion ({record.reason})")


@models.command("rollback")
def models_rollback() -> None:
    """Retire the champion and bring back the previous one."""
    from anomaly.training.model_registry import RegistryError, rollback

    try:
        record = rollback()
    except RegistryError as exc:
        raise _CliError(str(exc)) from exc
    click.echo(f"model v{record.version} is the champion again ({record.reason})")


if __name__ == "__main__":  # pragma: no cover
    main()
