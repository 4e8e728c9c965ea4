"""Run a scenario through the normal ingest path, write its labels, draw it.

``run_scenario`` renders the fleet day by day with the planned faults injected, writes each day
as a Parquet file in the long layout, and loads every day with the same ``ingest_interval`` and
files source the ``ingest_metrics`` DAG uses (so the rows pass the same checks), under the
source name ``simulation:<name>``. Labels go to the ``labels`` table in one transaction.

Example::

    >>> from anomaly.simulate.scenario import Scenario
    >>> report = run_scenario(Scenario(hosts=10, days=1, name="try"))   # doctest: +SKIP
    >>> report["labelled_share"]                                         # doctest: +SKIP
    0.21
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly import registry
from anomaly.simulate.faults import REGISTRY, Fault, inject, labels_frame
from anomaly.simulate.fleet import simulate
from anomaly.simulate.scenario import Scenario, labelled_share, plan_faults

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from anomaly.settings import Settings
    from anomaly.store import Lake

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def _days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    out, cursor = [], start
    while cursor < end:
        nxt = min(cursor + timedelta(days=1), end)
        out.append((cursor, nxt))
        cursor = nxt
    return out


def render_files(
    sc: Scenario, faults: Sequence[Fault], out_dir: Path, progress: Progress | None = None
) -> list[Path]:
    """One Parquet file per day (ts, host, metric, value) with ``faults`` injected."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.parquet"):
        old.unlink()
    modifier = inject(faults)
    paths = []
    days = _days(sc.start, sc.end)
    for k, (a, b) in enumerate(days):
        frame = simulate(sc.fleet, a, b, sc.step_seconds, sc.seed, modifiers=[modifier])
        path = out_dir / f"{a:%Y-%m-%dT%H%M}.parquet"
        frame.to_parquet(path, index=False)
        paths.append(path)
        if progress:
            progress("render", k + 1, len(days))
    return paths


_DATASET_NAME = re.compile(r"[A-Za-z0-9_.+:-]{1,80}")


def _clear_outside(lake: Lake, source: str, start: datetime, end: datetime) -> None:
    """Delete a derived dataset's rows outside its new range (they would carry unlabelled faults),
    and their features."""
    from anomaly.features import delete_rows

    def work(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            f"DELETE FROM {registry.RAW_METRICS} WHERE source = ? AND (ts < ? OR ts >= ?)",
            [source, start, end],
        )
        delete_rows(con, "source = ? AND (ts < ? OR ts >= ?)", [source, start, end])

    lake.write(work, what=f"clear {source} outside its range")


def write_labels(lake: Lake, faults: Sequence[Fault], dataset: str, source: str = "simulation") -> int:
    """Replace the labels of ``dataset`` with one row per fault (one transaction, idempotent)."""
    frame = labels_frame(faults, source=source)
    frame["dataset"] = dataset

    def work(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"DELETE FROM {registry.LABELS} WHERE dataset = ?", [dataset])
        if frame.empty:
            return
        con.register("new_labels", frame)
        con.execute(
            f"""
            INSERT INTO {registry.LABELS} (label_id, host, start_ts, end_ts, type, severity, affected_metrics,
                                           source, description, created_at, dataset)
            SELECT label_id, host, start_ts, end_ts, type, severity, affected_metrics, source, description,
                   now(), dataset
            FROM new_labels
            """
        )
        con.unregister("new_labels")

    lake.write(work, what=f"labels of {dataset}")
    return len(frame)


def run_scenario(
    sc: Scenario,
    *,
    settings: Settings | None = None,
    lake: Lake | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Plan, render, ingest (normal path) and label ``sc``; returns a summary."""
    from anomaly.ingest import ingest_interval, upsert_host_metadata
    from anomaly.settings import get_settings
    from anomaly.sources.files import FilesSource
    from anomaly.store import Lake

    settings = settings or get_settings()
    lake = lake or Lake(settings)
    lake.init()
    faults = plan_faults(sc)
    out_dir = settings.home / "simulations" / sc.name
    render_files(sc, faults, out_dir, progress)
    files = FilesSource(str(out_dir / "*.parquet"), layout="long")
    _clear_outside(lake, sc.source_name, sc.start, sc.end)  # a re-run with fewer days leaves no orphans
    days = _days(sc.start, sc.end)
    rows = quarantined = 0
    for k, (a, b) in enumerate(days):
        report = ingest_interval(
            sc.source_name,
            a,
            b,
            f"simulate__{sc.name}__{a:%Y%m%dT%H%M}",
            settings=settings,
            source=files,
            lake=lake,
        )
        rows += report.rows_loaded
        quarantined += report.rows_quarantined
        if progress:
            progress("ingest", k + 1, len(days))
    upsert_host_metadata(lake, hosts_frame(sc), sc.source_name)
    n_labels = write_labels(lake, faults, sc.source_name)
    by_type: dict[str, int] = {}
    for f in faults:
        by_type[f.type] = by_type.get(f.type, 0) + 1
    return {
        "source": sc.source_name,
        "hosts": sc.hosts,
        "start": sc.start.isoformat(),
        "end": sc.end.isoformat(),
        "rows_loaded": rows,
        "rows_quarantined": quarantined,
        "faults": len(faults),
        "labels": n_labels,
        "labelled_share": round(labelled_share(sc, faults), 4),
        "faults_by_type": dict(sorted(by_type.items())),
        "files": str(out_dir),
    }


def hosts_frame(sc: Scenario) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "host": [h.name for h in sc.fleet],
            "role": [h.role for h in sc.fleet],
            "environment": [h.environment for h in sc.fleet],
        }
    )


# --------------------------------------------------------------------------------------- plot

_PLOT_METRICS = ("cpu_util", "mem_util", "disk_util", "net_in_bytes", "tcp_established", "tcp_retransmits")


def plot_scenario(sc: Scenario, faults: Sequence[Fault], path: Path, *, max_hosts: int = 4) -> Path:
    """PNG: a few hosts (those with the most distinct fault types), their metrics, and every injected
    window shaded and labelled by type, so a person can check each fault looks like what it claims.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    per_host: dict[str, set[str]] = {}
    for f in faults:
        per_host.setdefault(f.host, set()).add(f.type)
    chosen = sorted(per_host, key=lambda h: (-len(per_host[h]), h))[:max_hosts] or [sc.fleet[0].name]
    fleet = [h for h in sc.fleet if h.name in chosen]
    frame = simulate(fleet, sc.start, sc.end, sc.step_seconds, sc.seed, modifiers=[inject(faults)])
    colours = plt.get_cmap("tab20")
    type_colour = {t: colours(i % 20) for i, t in enumerate(sorted(REGISTRY))}

    fig, axes = plt.subplots(len(fleet), 1, figsize=(18, 3.2 * len(fleet)), sharex=True, squeeze=False)
    for ax, host in zip(axes[:, 0], fleet, strict=True):
        mine = frame[frame["host"] == host.name]
        for metric in _PLOT_METRICS:
            s = mine[mine["metric"] == metric].set_index("ts")["value"]
            if s.empty:
                continue
            hi = float(np.nanmax(s.to_numpy())) or 1.0
            ax.plot(s.index, s.to_numpy() / hi, linewidth=0.7, label=f"{metric} (/{hi:.3g})")
        for f in faults:
            if f.host != host.name:
                continue
            ax.axvspan(f.start, f.end, color=type_colour[f.type], alpha=0.25)
            ax.text(
                f.start,
                1.02,
                f.type,
                fontsize=7,
                rotation=0,
                va="bottom",
                ha="left",
                color="black",
                clip_on=True,
            )
        ax.set_ylim(-0.02, 1.15)
        ax.set_title(f"{host.name} ({host.role}, {host.environment})", fontsize=9, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
    axes[-1, 0].set_xlabel("time (UTC); each metric scaled to its maximum; shaded = injected fault")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------- injection into stored series


def inject_into_source(
    from_source: str,
    to_source: str,
    start: datetime,
    end: datetime,
    faults: Sequence[Fault] | None = None,
    *,
    anomaly_share: float = 0.2,
    types: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    step_seconds: int | None = None,
    seed: int = 7,
    settings: Settings | None = None,
    lake: Lake | None = None,
) -> dict[str, Any]:
    """Copy ``from_source``'s rows in ``[start, end)`` with ``faults`` injected to ``to_source``.

    Without ``faults``, faults are planned over the stored hosts like a scenario (share, types,
    hold-out types, seed). The original rows are only read, never written: the modified series land under
    ``to_source`` through the normal ingest path (Parquet files + files source), and the
    faults become labels of dataset ``to_source``. Works on any stored series, e.g. the Server
    Machine Dataset's normal half, or data ingested from Prometheus.
    """
    import numpy as np
    import pandas as pd

    from anomaly.ingest import ingest_interval
    from anomaly.settings import get_settings
    from anomaly.simulate.fleet import Host, SimBlock
    from anomaly.sources import SOURCE_NAMES
    from anomaly.sources.files import FilesSource
    from anomaly.store import Lake

    if from_source == to_source:
        raise ValueError("to_source must differ from from_source: the original is never altered")
    if to_source in SOURCE_NAMES or not _DATASET_NAME.fullmatch(to_source):
        raise ValueError(
            f"to_source {to_source!r} must be a new dataset name (letters, digits, _ - + : ., not one of the "
            f"live sources {', '.join(SOURCE_NAMES)})"
        )
    settings = settings or get_settings()
    lake = lake or Lake(settings)
    rows = lake.query(
        f"SELECT ts, host, metric, value FROM {registry.RAW_METRICS} "
        "WHERE source = ? AND ts >= ? AND ts < ? ORDER BY host, metric, ts",
        [from_source, start, end],
    )
    if rows.empty:
        raise ValueError(f"source {from_source!r} has no rows in [{start.isoformat()}, {end.isoformat()})")
    epoch = (rows["ts"].dt.tz_convert("UTC") - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    if step_seconds is None:
        diffs = np.diff(np.unique(epoch.to_numpy()))
        step_seconds = int(np.median(diffs)) if diffs.size else 60
    # the grid's phase comes from the data: a source sampling at :30 past each minute is on ITS grid
    e = epoch.to_numpy()
    phase = int(np.bincount((e % step_seconds).astype(np.int64)).argmax())
    first = -(-(int(start.timestamp()) - phase) // step_seconds) * step_seconds + phase
    t = np.arange(first, int(end.timestamp()), step_seconds, dtype=np.int64)
    hosts = sorted(rows["host"].unique())
    metrics = sorted(rows["metric"].unique())
    meta = lake.query(f"SELECT host, role, environment FROM {registry.HOSTS}").set_index("host")
    fleet = tuple(
        Host(
            h,
            _known(meta, h, "role"),
            _known(meta, h, "environment"),
            cpus=4,
            mem_bytes=16 << 30,
            disk_bytes=500 * 10**9,
            swap_bytes=4 << 30,
        )
        for h in hosts
    )
    values = {m: np.full((len(hosts), t.size), np.nan) for m in metrics}
    pos = ((e - t[0]) // step_seconds).astype(np.int64)
    on_grid = (e - t[0]) % step_seconds == 0
    off_grid = int((~on_grid).sum())
    if off_grid > 0.01 * len(rows):
        raise ValueError(
            f"{off_grid} of {len(rows)} rows of {from_source!r} are off its {step_seconds}s sampling grid "
            "(irregular scrapes?); pass step_seconds, or resample the source first. Nothing was written."
        )
    host_idx = {h: i for i, h in enumerate(hosts)}
    for m, part in rows[on_grid].groupby("metric"):
        p = pos[on_grid][rows[on_grid]["metric"].to_numpy() == m]
        values[m][[host_idx[h] for h in part["host"]], p] = part["value"].to_numpy()
    present = set(metrics)
    has_data = np.zeros((len(hosts), t.size), dtype=bool)
    for m in metrics:
        has_data |= ~np.isnan(values[m])
    if faults is None:
        # only fault types that touch a metric this source reports, only where a host has data
        usable = tuple(
            k for k in (types or tuple(REGISTRY)) if k not in exclude and present & set(REGISTRY[k].metrics)
        )
        if not usable:
            raise ValueError(
                f"no requested fault type affects the metrics of {from_source!r}: {sorted(present)}"
            )
        sc = Scenario(
            hosts=len(fleet),
            days=(end - start).total_seconds() / 86400,
            anomaly_share=anomaly_share,
            types=usable,
            seed=seed,
            step_seconds=step_seconds,
            start=datetime.fromtimestamp(int(t[0]), UTC) if t.size else start,
            every_type=types is not None,
        )
        faults = plan_faults(sc, fleet=fleet, blocked=~has_data)
    unknown_hosts = sorted({f.host for f in faults} - set(host_idx))
    if unknown_hosts:
        raise ValueError(f"faults name hosts {unknown_hosts} that {from_source!r} has no rows for")
    block = SimBlock(fleet, t, step_seconds, seed, values, original={m: v.copy() for m, v in values.items()})
    inject(faults)(block)
    # a label must describe a real change: keep faults that modified something, and name only the
    # affected metrics this source reports
    kept = []
    for f in faults:
        inside = (t >= f.start.timestamp()) & (t < f.end.timestamp())
        row = host_idx[f.host]
        changed = [
            m
            for m in f.affected_metrics
            if m in present
            and not np.array_equal(
                block.values[m][row][inside], block.original[m][row][inside], equal_nan=True
            )
        ]
        if changed:
            kept.append(replace(f, metrics=tuple(m for m in f.affected_metrics if m in present)))
    dropped = len(faults) - len(kept)

    out_dir = settings.home / "injections" / re.sub(r"[^A-Za-z0-9_.+-]", "_", to_source)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.parquet"):
        old.unlink()
    parts = []
    for m in metrics:
        grid = block.values[m]
        ok = ~np.isnan(grid)
        hi, ti = np.nonzero(ok)
        parts.append(
            pd.DataFrame(
                {
                    "ts": pd.to_datetime(t[ti], unit="s", utc=True),
                    "host": np.array(hosts, dtype=object)[hi],
                    "metric": m,
                    "value": grid[ok],
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame.to_parquet(out_dir / "series.parquet", index=False)
    files = FilesSource(str(out_dir / "*.parquet"), layout="long")
    _clear_outside(lake, to_source, start, end)
    loaded = 0
    for a, b in _days(start, end):
        loaded += ingest_interval(
            to_source,
            a,
            b,
            f"inject__{to_source}__{a:%Y%m%dT%H%M}",
            settings=settings,
            source=files,
            lake=lake,
        ).rows_loaded
    n_labels = write_labels(lake, kept, to_source) if loaded else write_labels(lake, [], to_source)
    if off_grid:
        log.warning(
            "%d rows of %s are off the %ds grid and were not copied", off_grid, from_source, step_seconds
        )
    return {
        "from_source": from_source,
        "to_source": to_source,
        "rows_read": len(rows),
        "rows_loaded": loaded,
        "rows_off_grid": off_grid,
        "labels": n_labels,
        "faults_without_effect": dropped,
    }


def _known(meta: pd.DataFrame, host: str, column: str) -> str:
    from anomaly.simulate.fleet import ENVIRONMENTS, ROLES

    allowed = ROLES if column == "role" else ENVIRONMENTS
    value = meta[column].get(host) if host in meta.index else None
    return value if isinstance(value, str) and value in allowed else "unknown"


def parse_type_list(value: str | None) -> tuple[str, ...] | None:
    """'a,b' -> ('a', 'b'); '' or 'all' -> None (every type)."""
    if value is None or value.strip().lower() in ("", "all"):
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def run_params(params: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """The ``simulate_scenario`` DAG's task: a scenario from DAG params, run, drawn."""
    from anomaly.settings import get_settings

    settings = settings or get_settings()
    sc = Scenario(
        hosts=int(params["hosts"]),
        days=float(params["days"]),
        anomaly_share=float(params["anomaly_share"]),
        types=parse_type_list(params.get("types")),
        exclude=parse_type_list(params.get("exclude")) or (),
        seed=int(params["seed"]),
        step_seconds=settings.step_seconds,
        start=datetime.fromisoformat(params["start"]),
        name=params["name"],
    )
    report = run_scenario(sc, settings=settings)
    report["plot"] = str(
        plot_scenario(sc, plan_faults(sc), settings.home / "reports" / "simulations" / f"{sc.name}.png")
    )
    return report
