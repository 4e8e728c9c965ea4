"""The model report: a self-contained HTML page with embedded PNG plots, and gain importance."""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import pandas as pd
import pytest

from anomaly.training.ensemble import AnomalyEnsemble
from anomaly.training.metrics import evaluate
from anomaly.training.report import feature_importance, write_model_report

UNSAFE = "<script>x</script>"
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def scored_points(seed: int = 0, *, events: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Two hosts, 300 points each at 15 s; 3 events of 2 fault types; scores that follow the labels."""
    ts = pd.date_range("2026-01-05", periods=300, freq="15s", tz="UTC")
    frames = []
    windows = {
        "a": [("e1", "cpu_spike", 50, 70), ("e2", UNSAFE, 150, 175)],
        "b": [("e3", "cpu_spike", 100, 130)],
    }
    for host, spans in windows.items():
        df = pd.DataFrame({"host": host, "ts": ts, "event_id": None, "fault_type": None}, dtype=object)
        df["ts"] = ts
        if events:
            for event_id, fault_type, lo, hi in spans:
                df.loc[lo : hi - 1, ["event_id", "fault_type"]] = [event_id, fault_type]
        frames.append(df)
    points = pd.concat(frames, ignore_index=True)
    rng = np.random.default_rng(seed)
    positive = points["event_id"].notna().to_numpy()
    scores = np.where(positive, rng.beta(6, 3, len(points)), rng.beta(2, 8, len(points)))
    return points, scores


def images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in IMG.findall(page)]


def test_report_is_self_contained_with_five_plots(tmp_path):
    points, scores = scored_points()
    metrics = evaluate(points, scores, 0.5)
    metrics["class_shares"] = {"train_rows": 1000, "train_positive_share": 0.1, "test_positive_share": 0.12}
    metrics["unseen_types"] = [UNSAFE]
    importance = pd.Series([0.7, 0.2, 0.1], index=["cpu", "mem", "disk$io"], name="importance")
    details = {
        "version": 3,
        "parameters": {"n_estimators": 300},
        "snapshot": "x" * 1000,
        "<i>k</i>": "<b>h</b>",
    }

    path = write_model_report(
        tmp_path / "reports" / "models" / "v3.html",
        title="Model version 3",
        test_points=points,
        scores=scores,
        threshold=0.5,
        metrics=metrics,
        importance=importance,
        details=details,
    )

    assert path == tmp_path / "reports" / "models" / "v3.html" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["v3.html"]  # no temporary file left behind
    page = path.read_text(encoding="utf-8")
    pngs = images(page)
    assert len(pngs) == page.count("<img ") == 5
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    assert f"{metrics['point']['precision']:.3f}" in page
    assert f"{metrics['event']['event_recall']:.3f}" in page
    assert "10.00%" in page  # a class share
    assert UNSAFE not in page and "<b>h</b>" not in page and "<i>k</i>" not in page
    assert html.escape(UNSAFE) + " (unseen)" in page and html.escape("<b>h</b>") in page
    assert "<details>" in page and "x" * 1000 in page  # a long value is folded, not lost
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page, re.IGNORECASE)


def test_report_without_positives_or_importance_explains_the_missing_plots(tmp_path):
    points, scores = scored_points(events=False)
    metrics = evaluate(points, scores, 0.5)
    page = write_model_report(
        tmp_path / "v1.html",
        title="Model version 1",
        test_points=points,
        scores=scores,
        threshold=0.5,
        metrics=metrics,
    ).read_text(encoding="utf-8")
    assert len(images(page)) == 2  # score distributions and confusion matrix
    assert "precision-recall curve is undefined" in page
    assert "no recall per type" in page and "No feature importance" in page


def test_report_refuses_mismatched_inputs(tmp_path):
    points, scores = scored_points()
    metrics = evaluate(points, scores, 0.5)
    common = {"title": "v", "threshold": 0.5, "metrics": metrics}
    with pytest.raises(ValueError, match=r"scores has 599 values .* test_points has 600 rows"):
        write_model_report(tmp_path / "a.html", test_points=points, scores=scores[:-1], **common)
    with pytest.raises(ValueError, match="empty"):
        write_model_report(tmp_path / "b.html", test_points=points.iloc[:0], scores=scores[:0], **common)
    with pytest.raises(ValueError, match="threshold"):
        write_model_report(
            tmp_path / "c.html", test_points=points, scores=scores, **{**common, "threshold": 0.6}
        )
    assert not list(tmp_path.iterdir())


def informative(seed: int = 0, n: int = 600) -> tuple[pd.DataFrame, np.ndarray]:
    """Five noise features and ``signal``, shifted by 4 standard deviations on positives."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    y[[10, 20, n - 10, n - 20]] = 1  # positives in both time parts, whatever the seed
    X = pd.DataFrame(rng.normal(size=(n, 5)), columns=[f"noise{j}" for j in range(5)])
    X.insert(2, "signal", rng.normal(size=n) + 4.0 * y)
    return X, y


def test_feature_importance_of_boosted_members():
    X, y = informative()
    model = AnomalyEnsemble(
        members=("xgboost", "lightgbm", "hist_gb"), n_estimators=20, n_jobs=1, random_state=0
    ).fit(X, y)
    imp = feature_importance(model)
    assert imp.name == "importance" and set(imp.index) == set(X.columns)
    assert imp.sum() == pytest.approx(1.0)
    assert imp.is_monotonic_decreasing and (imp >= 0).all()
    assert imp.index[0] == "signal"
    assert list(feature_importance(model, top=2).index) == list(imp.index[:2])


def test_feature_importance_is_empty_without_boosted_gain():
    X, y = informative()
    model = AnomalyEnsemble(members=("hist_gb", "robust_z"), n_estimators=5, n_jobs=1, random_state=0).fit(
        X, y
    )
    imp = feature_importance(model)
    assert imp.empty and imp.name == "importance"
