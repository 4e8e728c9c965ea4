"""Benchmark the ensemble on a simulated fleet: the targets of the training issue.

    python -m bench.bench_train [--quick] [--hosts 20] [--days 28] [--history-days 7] [--share 0.2] [--seed 7]

1. Simulate a fleet with every fault type (``anomaly.simulate``) through the normal ingest
   path into a lake of its own (``var/bench/train/``; reused when the same scenario is there),
   and build its features. The fleet runs ``--history-days`` (7) before the ``--days`` it trains
   and tests on, as a deployed feature store has history: without it the weekly-lag features of
   the first week were all NULL. Same 21-day fleet, XGBoost alone, same test span: PR-AUC 0.905
   with the first week's weekly-lag features masked, 0.928 with them.
2. Train on the earlier part of the range, tune the point and alert thresholds on a later
   validation span, test on the last span (embargo between spans): point precision, recall, F1,
   PR-AUC at the point threshold; event precision, recall, F1 and mean time to detect at the
   alert threshold. Targets: event F1 >= 0.90, point precision >= 0.80, point recall >= 0.90.

   Four weeks by default (2026-12-06; ``--days 14`` for a run of about 20 minutes). Training
   data is what limits point precision: on the 14-day fleet (a train span of 7.7 days) no
   threshold reaches recall 0.90 above precision 0.75 on the test span, on the 28-day fleet
   0.865 does (default members, the combiner on the validation span). With 7 days (from a
   Monday) the train span held no weekend and the test span was the weekend, whose lower
   traffic the model had never seen: point precision 0.216 (0.763 with 14 days, same seed and
   model; both measured by 2026-12-04, before the 7 days of history).
3. Leave types out: five fault types are removed from the train and validation spans and kept
   in the test span. Event recall on those unseen types, for the whole ensemble, for its
   supervised members alone and for the ensemble with the optional ``lof`` member (same data,
   same seed): the unsupervised members should raise it.

Prints a table and writes ``var/bench/train.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from anomaly.training.members import DEFAULT_MEMBERS, SUPERVISED

REPO = Path(__file__).resolve().parent.parent
UNSEEN = ("memory_leak", "packet_loss", "stuck_metric", "seasonal_break", "connection_leak")
WITH_LOF = (*DEFAULT_MEMBERS, "lof")
TARGETS = {"event_f1": 0.90, "precision": 0.80, "recall": 0.90}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="6 hosts x 3 days, 60 trees: a smoke run")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--days", type=float, default=28.0, help="days trained, validated and tested on")
    parser.add_argument(
        "--history-days", type=float, default=7.0, help="days simulated before them (feature history only)"
    )
    parser.add_argument("--share", type=float, default=0.2, help="labelled share of the points")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--trees", type=int, default=300)
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts, args.days, args.history_days, args.trees = 6, 3.0, 1.0, 60
    sc, lake, timings = prepare_fleet(args.hosts, args.days + args.history_days, args.share, args.seed)
    start = sc.start + timedelta(days=args.history_days)

    from anomaly.training.dataset import build_training_set
    from anomaly.training.train import fit_and_evaluate

    name = sc.name
    t0 = time.perf_counter()
    ts = build_training_set(sc.source_name, start, sc.end, lake=lake)
    timings["training_set_s"] = time.perf_counter() - t0
    info = ts.describe()
    print(
        f"training set: {info['rows']:,} rows x {info['features']} features, {info['events']} events of "
        f"{len(info['events_by_type'])} types, positive share {info['positive_share']:.3f}",
        flush=True,
    )
    params = {"n_estimators": args.trees, "random_state": args.seed, "n_jobs": 2}
    runs: dict[str, Any] = {}
    for label, kwargs in (
        ("all types, ensemble", {"params": params}),
        ("unseen types, ensemble", {"params": params, "exclude_types": UNSEEN}),
        (
            "unseen types, supervised only",
            {"params": {**params, "members": SUPERVISED}, "exclude_types": UNSEEN},
        ),
        (
            "unseen types, ensemble + lof",
            {"params": {**params, "members": WITH_LOF}, "exclude_types": UNSEEN},
        ),
    ):
        print(f"training: {label} ...", flush=True)
        t0 = time.perf_counter()
        result = fit_and_evaluate(ts, **kwargs)
        seconds = time.perf_counter() - t0
        by_type = {r["fault_type"]: r for r in result.metrics["recall_by_type"]}
        unseen_view = _unseen_view(result)
        runs[label] = {
            **result.summary(),
            "false_alarms": result.metrics["event"]["false_alarm_events"],
            "seconds": seconds,
            "unseen_event_recall": {t: by_type.get(t, {}).get("event_recall") for t in UNSEEN},
            "unseen_point_recall": {t: by_type.get(t, {}).get("point_recall") for t in UNSEEN},
            "recall_by_type": result.metrics["recall_by_type"],
            "validation_ap": getattr(result.model, "validation_scores_", None),
            "unseen_at_fixed_alarm_rate": unseen_view,
            "test_best_precision_at_recall": _best_precision(result, TARGETS["recall"]),
        }
    report = {
        "scenario": name,
        "history_days": args.history_days,
        "training_set": info,
        "timings": timings,
        "runs": runs,
        "targets": TARGETS,
    }
    out = REPO / "var" / "bench" / ("train-quick.json" if args.quick else "train.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    _print(report)
    print(f"\nsaved {out}")
    return 0


def prepare_fleet(hosts: int, days: float, share: float, seed: int) -> tuple[Any, Any, dict[str, float]]:
    """The bench fleet's lake under ``var/bench/train/`` (``ANOMALY_HOME`` is set to it): simulated
    with every fault type, ingested and featurised on the first call for a scenario, reused after
    (a marker file per scenario). Returns the scenario, the lake and the timings of what was built."""
    name = f"bench-h{hosts}-d{days:g}-s{share:g}-r{seed}".replace(".", "_")
    home = REPO / "var" / "bench" / "train"
    os.environ["ANOMALY_HOME"] = str(home)

    from anomaly.settings import get_settings

    get_settings.cache_clear()
    from anomaly.features import build_range
    from anomaly.simulate.run import run_scenario
    from anomaly.simulate.scenario import Scenario
    from anomaly.store import Lake

    sc = Scenario(hosts=hosts, days=days, anomaly_share=share, seed=seed, name=name)
    lake = Lake()
    lake.init()
    marker = home / f"{name}.done"
    timings: dict[str, float] = {}
    if not marker.exists():
        t0 = time.perf_counter()
        print(f"simulating {sc.hosts} hosts x {sc.days:g} days with every fault type ...", flush=True)
        sim = run_scenario(
            sc, progress=lambda stage, done, total: print(f"  {stage} {done}/{total}", flush=True)
        )
        timings["simulate_ingest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        print("building features ...", flush=True)
        build_range(
            sc.source_name,
            sc.start,
            sc.end,
            timedelta(days=1),
            run_id="bench",
            lake=lake,
            progress=lambda total, report: print(f"  features {report.rows:,} rows", flush=True),
        )
        timings["features_s"] = time.perf_counter() - t0
        marker.write_text(json.dumps(sim, default=str))
    return sc, lake, timings


def _best_precision(result: Any, recall: float) -> float:
    """The best point precision any threshold reaches at ``recall`` on the test span itself: a
    diagnosis (the threshold is chosen looking at the test labels), not a result. Below the
    precision target it says no threshold could meet both point targets: the ranking must improve."""
    from anomaly.training.metrics import point_metrics, tune_threshold

    labels = result.test_points["label"].to_numpy()
    threshold = tune_threshold(labels, result.test_scores, recall)
    return float(point_metrics(labels, result.test_scores >= threshold)["precision"])


def _unseen_view(result: Any) -> dict[str, Any]:
    """Unseen types judged at an operating point that does not depend on them: thresholds that
    flag 1 % and 5 % of the *normal* validation rows, and the AUC of unseen-type test points
    against normal test points. The recall-tuned threshold flags so much at recall 0.9 that any
    score would catch the unseen types there, so it cannot show what the detectors add."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from anomaly.training.metrics import event_table

    pts, scores = result.test_points, result.test_scores
    normal_val = result.validation_scores[result.validation_labels == 0]
    unseen = pts["fault_type"].isin(UNSEEN).to_numpy()
    normal = (pts["label"] == 0).to_numpy()
    out: dict[str, Any] = {
        "auc": float(
            roc_auc_score(
                np.r_[np.ones(unseen.sum()), np.zeros(normal.sum())], np.r_[scores[unseen], scores[normal]]
            )
        )
    }
    for rate in (0.01, 0.05):
        threshold = float(np.quantile(normal_val, 1 - rate))
        flagged = scores >= threshold
        events = event_table(pts.assign(flagged=flagged))
        events = events[events["fault_type"].isin(UNSEEN)]
        out[f"alarm_{rate:g}"] = {
            "threshold": threshold,
            "normal_test_flagged": float(flagged[normal].mean()),
            "point_recall": float(flagged[unseen].mean()),
            "event_recall": float(events["detected"].mean()),
        }
    return out


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _print(report: dict[str, Any]) -> None:
    print()
    cols = (
        "precision",
        "recall",
        "f1",
        "pr_auc",
        "event_precision",
        "event_recall",
        "event_f1",
        "false_alarms",
    )
    print(f"{'run':32s}" + "".join(f"{c:>16s}" for c in cols) + f"{'MTTD s':>10s}{'fit s':>8s}")
    for label, r in report["runs"].items():
        print(
            f"{label:32s}"
            + "".join(f"{_fmt(r[c]):>16s}" for c in cols)
            + f"{_fmt(r['mean_time_to_detect_s']):>10s}{r['seconds']:>8.0f}"
        )
    main_run = report["runs"]["all types, ensemble"]
    print(
        f"\nthresholds tuned on validation (all types): point {main_run['threshold']:.4f} (recall "
        f"target), alert {main_run['alert_threshold']:.4f} (best event F1); point metrics at the first, "
        "event metrics at the second"
    )
    print("\ntargets on the test span (all types):")
    for name, floor in TARGETS.items():
        value = main_run[name]
        print(
            f"  {name:10s} {_fmt(value):>6s} >= {floor:.2f}  {'PASS' if value is not None and value >= floor else 'FAIL'}"
        )
    print(
        f"  (diagnosis: with the threshold chosen on the test span itself, the best precision at recall "
        f"{TARGETS['recall']:.2f} is {main_run['test_best_precision_at_recall']:.3f})"
    )
    print(
        "\nthe five types never seen in training, at thresholds flagging 1 % / 5 % of normal validation rows:"
    )
    ens, sup = report["runs"]["unseen types, ensemble"], report["runs"]["unseen types, supervised only"]
    lof = report["runs"]["unseen types, ensemble + lof"]
    for label, r in (("ensemble", ens), ("supervised only", sup), ("ensemble + lof", lof)):
        v = r["unseen_at_fixed_alarm_rate"]
        print(
            f"  {label:16s} AUC {v['auc']:.3f}"
            + "".join(
                f"   {k}: point recall {v[k]['point_recall']:.3f}, event recall {v[k]['event_recall']:.3f}"
                f" (normal test flagged {v[k]['normal_test_flagged']:.3f})"
                for k in ("alarm_0.01", "alarm_0.05")
            )
        )
    print("\nevent recall on the five unseen types at the alert threshold:")
    for t in UNSEEN:
        print(
            f"  {t:18s} ensemble {_fmt(ens['unseen_event_recall'][t]):>6s}   supervised only "
            f"{_fmt(sup['unseen_event_recall'][t]):>6s}   ensemble + lof {_fmt(lof['unseen_event_recall'][t]):>6s}"
        )


if __name__ == "__main__":
    sys.exit(main())
