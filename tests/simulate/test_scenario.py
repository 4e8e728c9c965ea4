"""Scenarios: planned faults reach the share, cover every type, honour hold-outs, land via ingest."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.simulate.faults import REGISTRY, Fault
from anomaly.simulate.scenario import Scenario, labelled_share, plan_faults


@pytest.mark.parametrize("seed", [1, 7, 42])
@pytest.mark.parametrize("share", [0.2, 0.3])
def test_plan_reaches_share_with_every_type_and_no_overlap(seed: int, share: float) -> None:
    sc = Scenario(hosts=30, days=7, anomaly_share=share, seed=seed)
    faults = plan_faults(sc)
    assert {f.type for f in faults} == set(REGISTRY)
    got = labelled_share(sc, faults)
    assert share <= got < share + 0.05, got  # stops as soon as the share is reached
    by_host: dict[str, list[Fault]] = {}
    for f in faults:
        assert sc.start <= f.start < f.end <= sc.end
        by_host.setdefault(f.host, []).append(f)
    for windows in by_host.values():
        windows.sort(key=lambda f: f.start)
        for prev, nxt in itertools.pairwise(windows):
            assert prev.end <= nxt.start, f"overlapping labels on {prev.host}: {prev} {nxt}"
    assert plan_faults(sc) == faults  # deterministic for the seed


def test_hold_out_types_are_never_injected() -> None:
    held = ("memory_leak", "packet_loss", "cascade")
    sc = Scenario(hosts=20, days=5, anomaly_share=0.25, exclude=held, seed=3)
    faults = plan_faults(sc)
    assert not {f.type for f in faults} & set(held)
    assert {f.type for f in faults} == set(REGISTRY) - set(held)
    only = plan_faults(Scenario(hosts=20, days=5, anomaly_share=0.1, types=held, seed=3))
    assert {f.type for f in only} == set(held)


def test_cascade_hits_several_hosts_of_one_role_in_sequence() -> None:
    sc = Scenario(hosts=20, days=3, anomaly_share=0.2, types=("cascade",), seed=9)
    faults = plan_faults(sc)
    groups: dict[str, list[Fault]] = {}
    for f in faults:
        groups.setdefault(f.group, []).append(f)
    roles = {h.name: h.role for h in sc.fleet}
    for members in groups.values():
        assert len(members) >= 2
        assert len({roles[f.host] for f in members}) == 1
        starts = sorted(f.start for f in members)
        assert starts[0] < starts[-1]  # staggered: it spreads, it does not start everywhere at once


def test_unknown_types_and_impossible_plans_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown fault type"):
        Scenario(types=("cpu_melt",))
    with pytest.raises(ValueError, match="no fault types left"):
        Scenario(types=("cpu_saturation",), exclude=("cpu_saturation",))


@pytest.mark.parametrize("start", ["2026-01-05T00:00:00+00:00", "2026-01-05T10:17:00+00:00"])
def test_seasonal_break_windows_cover_the_local_peak(start: str) -> None:
    sc = Scenario(
        hosts=10,
        days=4,
        anomaly_share=0.05,
        types=("seasonal_break",),
        seed=2,
        start=datetime.fromisoformat(start),
    )
    hosts = {h.name: h for h in sc.fleet}
    for f in plan_faults(sc):
        host = hosts[f.host]
        peak = 3 if host.role == "batch" else 14
        local_hours = {
            ((f.start + timedelta(minutes=m)).hour + host.utc_offset_hours) % 24
            for m in range(0, int((f.end - f.start).total_seconds() // 60), 10)
        }
        assert peak in local_hours, (f, host.role)


def test_bad_names_and_unreachable_shares_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"name '\.\./x'"):
        Scenario(name="../x")
    with pytest.raises(ValueError, match="could reach only an anomaly share"):
        plan_faults(Scenario(hosts=5, days=2, anomaly_share=0.85, seed=1))


def test_run_scenario_lands_through_ingest_with_labels_and_is_idempotent(lake, tmp_path: Path) -> None:
    from anomaly.simulate.run import plot_scenario, run_scenario

    sc = Scenario(
        hosts=6,
        days=1,
        anomaly_share=0.25,
        seed=4,
        name="t1",
        types=("cpu_saturation", "memory_leak", "scrape_gap", "traffic_spike"),
    )
    first = run_scenario(sc, lake=lake)
    assert first["rows_quarantined"] == 0 and first["faults"] == first["labels"] > 0
    assert first["labelled_share"] >= 0.25
    counts = lake.query(
        "SELECT count(*) AS n, count(DISTINCT (host, metric, ts)) AS k FROM raw_metrics "
        "WHERE source = 'simulation:t1'"
    ).iloc[0]
    assert counts["n"] == counts["k"] == first["rows_loaded"]
    # a scrape gap removes rows: fewer than the full grid
    assert first["rows_loaded"] < 6 * 15 * 1440
    labels = lake.query("SELECT * FROM labels WHERE dataset = 'simulation:t1'")
    assert len(labels) == first["faults"] and set(labels["source"]) == {"simulation"}
    roles = lake.query("SELECT count(*) AS n FROM hosts WHERE role IS NOT NULL")["n"][0]
    assert roles == 6
    again = run_scenario(sc, lake=lake)
    assert again["rows_loaded"] == first["rows_loaded"]
    assert lake.query("SELECT count(*) AS n FROM labels WHERE dataset = 'simulation:t1'")["n"][0] == len(
        labels
    )
    assert (
        lake.query("SELECT count(*) AS n FROM raw_metrics WHERE source = 'simulation:t1'")["n"][0]
        == counts["n"]
    )

    png = plot_scenario(sc, plan_faults(sc), tmp_path / "scenario.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_injection_into_stored_series_leaves_the_original_untouched(lake) -> None:
    from anomaly.ingest import ingest_interval
    from anomaly.simulate.run import inject_into_source
    from tests.conftest import FrameSource, grid_frame

    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    t1 = t0 + timedelta(hours=6)
    frame = grid_frame(t0, t1, hosts=("db-1", "db-2"), metrics=("cpu_util", "load1", "mem_util"))
    frame["value"] = 0.2 + 0.1 * np.sin(np.arange(len(frame)) / 50.0)
    ingest_interval("files", t0, t1, "orig", source=FrameSource(frame))
    before = lake.query(
        "SELECT sum(hash(ts, host, metric, value)) AS h, count(*) AS n FROM raw_metrics "
        "WHERE source = 'files'"
    ).iloc[0]
    fault = Fault("cpu_saturation", "db-1", t0 + timedelta(hours=2), t0 + timedelta(hours=3), severity=0.9)
    report = inject_into_source("files", "files+faults", t0, t1, [fault])
    assert report["rows_loaded"] == len(frame) and report["labels"] == 1
    after = lake.query(
        "SELECT sum(hash(ts, host, metric, value)) AS h, count(*) AS n FROM raw_metrics "
        "WHERE source = 'files'"
    ).iloc[0]
    assert (after["h"], after["n"]) == (before["h"], before["n"])
    diff = lake.query(
        """
        SELECT o.host, o.metric, o.ts, o.value AS old, n.value AS new
        FROM raw_metrics o JOIN raw_metrics n USING (host, metric, ts)
        WHERE o.source = 'files' AND n.source = 'files+faults' AND o.value <> n.value
        """
    )
    assert set(diff["host"]) == {"db-1"} and set(diff["metric"]) <= set(fault.affected_metrics)
    assert diff["ts"].min() >= fault.start and diff["ts"].max() < fault.end
    assert (diff["new"] > diff["old"]).all()  # saturation: cpu only goes up
    with pytest.raises(ValueError, match="never altered"):
        inject_into_source("files", "files", t0, t1, [fault])
    assert Counter(lake.query("SELECT dataset FROM labels")["dataset"]) == {"files+faults": 1}


def test_inject_command_plans_faults_over_stored_hosts(lake) -> None:
    from click.testing import CliRunner

    from anomaly.cli import main

    runner = CliRunner()
    made = runner.invoke(
        main, ["simulate", "--hosts", "4", "--days", "1", "--anomaly-share", "0", "--name", "base"]
    )
    assert made.exit_code == 0, made.output
    result = runner.invoke(
        main,
        [
            "inject",
            "--from-source",
            "simulation:base",
            "--to-source",
            "base+faults",
            "--start",
            "2026-01-05T00:00Z",
            "--end",
            "2026-01-06T00:00Z",
            "--anomaly-share",
            "0.2",
            "--types",
            "cpu_saturation,traffic_drop",
        ],
    )
    assert result.exit_code == 0, result.output
    labels = lake.query("SELECT type, host FROM labels WHERE dataset = 'base+faults'")
    assert set(labels["type"]) == {"cpu_saturation", "traffic_drop"}
    assert set(labels["host"]) <= set(lake.query("SELECT DISTINCT host FROM raw_metrics")["host"])
    bad = runner.invoke(
        main,
        [
            "inject",
            "--from-source",
            "nope",
            "--to-source",
            "x",
            "--start",
            "2026-01-05T00:00Z",
            "--end",
            "2026-01-06T00:00Z",
        ],
    )
    assert bad.exit_code == 1 and "has no rows" in bad.output


def test_rerun_with_fewer_days_leaves_no_unlabelled_rows(lake) -> None:
    from anomaly.simulate.run import run_scenario

    types = ("cpu_saturation", "traffic_drop")
    run_scenario(Scenario(hosts=3, days=2, anomaly_share=0.2, types=types, seed=5, name="shrink"), lake=lake)
    run_scenario(Scenario(hosts=3, days=1, anomaly_share=0.2, types=types, seed=5, name="shrink"), lake=lake)
    last = lake.query("SELECT max(ts) AS t FROM raw_metrics WHERE source = 'simulation:shrink'")["t"][0]
    assert last < datetime(2026, 1, 6, tzinfo=UTC)
    assert lake.query("SELECT max(end_ts) AS t FROM labels WHERE dataset = 'simulation:shrink'")["t"][0] <= (
        datetime(2026, 1, 6, tzinfo=UTC)
    )


def test_injection_follows_the_sources_own_grid_and_labels_only_real_changes(lake) -> None:
    from anomaly.ingest import ingest_interval
    from anomaly.simulate.run import inject_into_source
    from tests.conftest import FrameSource, grid_frame

    t0 = datetime(2026, 3, 2, tzinfo=UTC)
    t1 = t0 + timedelta(hours=12)
    frame = grid_frame(t0, t1, hosts=("a", "b", "c"), metrics=("cpu_util", "mem_util"))
    frame["ts"] = frame["ts"] + pd.Timedelta(seconds=30)  # scraped at :30 past each minute
    frame = frame[frame["ts"] < t1]
    frame["value"] = 0.3 + 0.05 * np.sin(np.arange(len(frame)) / 30.0)
    ingest_interval("files", t0, t1, "orig", source=FrameSource(frame))
    report = inject_into_source("files", "files+f", t0, t1, anomaly_share=0.2, seed=3)
    assert report["rows_off_grid"] == 0 and report["rows_loaded"] == len(frame)
    labels = lake.query("SELECT type, affected_metrics FROM labels WHERE dataset = 'files+f'")
    assert len(labels) > 0
    for metrics in labels["affected_metrics"]:
        assert set(metrics) <= {"cpu_util", "mem_util"}  # only metrics this source reports
    with pytest.raises(ValueError, match="must be a new dataset name"):
        inject_into_source("files+f", "prometheus", t0, t1)
