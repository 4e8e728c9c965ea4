"""Evaluation metrics: hand-made inputs whose right answers are worked out in the comments."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from anomaly.training import metrics as M
from anomaly.training.metrics import (
    calibration,
    evaluate,
    event_metrics,
    event_table,
    point_metrics,
    recall_by_type,
    tune_alert_threshold,
    tune_threshold,
)

T0 = pd.Timestamp("2026-03-02 10:00", tz="UTC")


def test_docstring_examples() -> None:
    result = doctest.testmod(M, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8
    assert result.failed == 0


# --------------------------------------------------------------------------- tune_threshold

# Sorted by score, descending (P = 4 positives):
#   score  labels   flag when score >= t:  tp fp  recall precision
#   0.9    1        t = 0.9                 1  0   0.25   1
#   0.7    1 1 0    t = 0.7                 3  1   0.75   0.75
#   0.4    1 0      t = 0.4                 4  2   1      4/6
#   0.2    0        t = 0.2                 4  3   1      4/7
#   0.1    0        t = 0.1                 4  4   1      0.5
TIES_Y = [0, 1, 0, 1, 1, 0, 1, 0]
TIES_S = [0.1, 0.4, 0.4, 0.7, 0.7, 0.7, 0.9, 0.2]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0.9, 0.4),  # only t <= 0.4 reach recall 1; 0.4 has the best precision (4/6)
        (1.0, 0.4),
        # recall 0.75 exactly at t = 0.7 (precision 0.75). Cutting inside the 0.7 tie (the two
        # positives without the negative) would claim precision 1 at a threshold that really flags
        # all three: the answer must be the tie's value, with its honest precision 0.75.
        (0.75, 0.7),
        (0.5, 0.7),
        (0.25, 0.9),
    ],
)
def test_tune_threshold_with_tied_scores(target: float, expected: float) -> None:
    t = tune_threshold(TIES_Y, TIES_S, target_recall=target)
    assert t == expected
    assert isinstance(t, float)
    m = point_metrics(TIES_Y, np.asarray(TIES_S) >= t)
    assert m["recall"] >= target


def test_tune_threshold_precision_tie_goes_to_the_highest_threshold() -> None:
    # descending: 0.9(1) 0.8(0) 0.7(1) 0.6(0) 0.5(1) 0.4(1), P = 4, target recall 0.5:
    #   t=0.7: tp 2 fp 1 -> R 0.5,  P 2/3
    #   t=0.6: tp 2 fp 2 -> R 0.5,  P 1/2
    #   t=0.5: tp 3 fp 2 -> R 0.75, P 3/5
    #   t=0.4: tp 4 fp 2 -> R 1,    P 4/6 = 2/3  (tie with 0.7)
    # (t = 0.9 and 0.8 have recall 0.25.) The tie goes to 0.7: same precision, fewer alarms.
    y = [1, 0, 1, 0, 1, 1]
    s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    assert tune_threshold(y, s, target_recall=0.5) == 0.7
    assert tune_threshold(y, s, target_recall=0.8) == 0.4


def test_tune_threshold_with_confidence_keeps_recall_when_events_are_resampled() -> None:
    # Ten events of 10 points; nine score 0.8, e0's points 0.3; 100 normal points 0.1-0.5.
    # At 0.8 the span's own recall is 0.9 (e0 missed): enough without confidence. Resampled
    # events draw e0 twice or more in 26 % of the resamples (recall <= 0.8 there), so the 0.9
    # bound is below 0.9 until e0 is caught: at 0.3 every resample has recall 1.
    events = [f"e{e}" for e in range(10) for _ in range(10)] + [None] * 100
    y = [1] * 100 + [0] * 100
    s = [0.3] * 10 + [0.8] * 90 + list(np.linspace(0.1, 0.5, 100))
    assert tune_threshold(y, s, 0.9) == 0.8
    assert tune_threshold(y, s, 0.9, events=events, confidence=0.5) == 0.8  # the median draw
    assert tune_threshold(y, s, 0.9, events=events, confidence=0.9) == 0.3
    with pytest.raises(ValueError, match="confidence needs events"):
        tune_threshold(y, s, 0.9, confidence=0.9)
    with pytest.raises(ValueError, match=r"confidence must be in \[0, 1\), got 1.0"):
        tune_threshold(y, s, 0.9, events=events, confidence=1.0)
    with pytest.raises(ValueError, match=r"3 positive point\(s\) have no event id"):
        tune_threshold(y, s, 0.9, events=[None] * 3 + events[3:], confidence=0.9)
    with pytest.raises(ValueError, match=r"one value per point, shape \(200,\), got shape \(199,\)"):
        tune_threshold(y, s, 0.9, events=events[:-1], confidence=0.9)
    with pytest.raises(ValueError, match="n_boot must be at least 1, got 0"):
        tune_threshold(y, s, 0.9, events=events, confidence=0.9, n_boot=0)


@pytest.mark.parametrize("seed", range(5))
def test_tune_threshold_with_confidence_matches_a_brute_force_search(seed: int) -> None:
    """Every candidate threshold's bootstrap bound computed directly, with the same resamples:
    the answer is the best precision among the thresholds whose bound reaches the target."""
    rng = np.random.default_rng(seed)
    n_events, n_normal = 30, 600
    sizes = rng.integers(2, 20, n_events)
    events = np.r_[np.repeat([f"e{e}" for e in range(n_events)], sizes), [None] * n_normal]
    y = np.r_[np.ones(sizes.sum(), int), np.zeros(n_normal, int)]
    strength = np.repeat(rng.uniform(0.0, 2.0, n_events), sizes)  # events differ as wholes
    s = np.round(np.r_[strength + rng.normal(0, 0.5, sizes.sum()), rng.normal(0, 1, n_normal)], 2)
    got = tune_threshold(y, s, 0.85, events=events, confidence=0.9, n_boot=300, random_state=seed)

    codes = np.repeat(np.arange(n_events), sizes)
    weights = np.random.default_rng(seed).multinomial(n_events, np.full(n_events, 1 / n_events), size=300)
    best, best_t = -1.0, None
    for t in np.unique(s):  # ascending: a precision tie goes to the higher threshold
        caught = np.bincount(codes[s[: sizes.sum()] >= t], minlength=n_events)
        bound = np.quantile((weights @ caught) / (weights @ sizes), 0.1)
        flagged = s >= t
        recall, precision = y[flagged].sum() / y.sum(), y[flagged].mean()
        if bound >= 0.85 - 1e-12 and recall >= 0.85 - 1e-12 and precision >= best:
            best, best_t = precision, t
    assert got == best_t
    assert got <= tune_threshold(y, s, 0.85)


def test_tune_threshold_target_unreachable() -> None:
    with pytest.raises(ValueError, match="no positives"):
        tune_threshold([0, 0, 0], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="target_recall"):
        tune_threshold([0, 1], [0.1, 0.9], target_recall=0.0)
    with pytest.raises(ValueError, match="finite"):
        tune_threshold([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="0/1"):
        tune_threshold([0, 2], [0.1, 0.9])


@settings(max_examples=40, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1), target=st.sampled_from([0.3, 0.5, 0.7, 0.9, 1.0]))
def test_tune_threshold_matches_brute_force(seed: int, target: float) -> None:
    # Brute force over every distinct score as the threshold, in exact integer arithmetic.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y = rng.random(n) < 0.3
    y[rng.integers(n)] = True
    s = np.round(rng.random(n) + 0.3 * y, 1)  # rounding makes many ties
    best = None
    for t in np.unique(s):
        f = s >= t
        tp, fp = int((f & y).sum()), int((f & ~y).sum())
        if tp * 10 >= round(target * 10) * int(y.sum()):  # recall >= target, exactly
            key = (tp * 1.0 / (tp + fp), t)  # best precision, then highest threshold
            best = key if best is None or key > best else best
    assert tune_threshold(y, s, target) == best[1]


# --------------------------------------------------------------------------- point_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_metrics_agree_with_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.2
    s = rng.random(200) + 0.4 * y
    p = s >= 0.7
    m = point_metrics(y, p, s)
    assert m["precision"] == pytest.approx(precision_score(y, p, zero_division=0))
    assert m["recall"] == pytest.approx(recall_score(y, p, zero_division=0))
    assert m["f1"] == pytest.approx(f1_score(y, p, zero_division=0))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s))
    assert (m["positives"], m["negatives"], m["flagged"]) == (y.sum(), (~y).sum(), p.sum())
    assert m["tp"] + m["fn"] == m["positives"]
    assert m["tp"] + m["fp"] == m["flagged"]


def test_point_metrics_undefined_ratios_are_zero_like_sklearn() -> None:
    # nothing flagged: precision 0/0 -> 0.0; f1 = 2*0 / (0 + 0 + 2) = 0.0
    y, p = [0, 1, 1], [0, 0, 0]
    m = point_metrics(y, p)
    assert (m["precision"], m["recall"], m["f1"], m["pr_auc"]) == (0.0, 0.0, 0.0, None)
    assert m["precision"] == precision_score(y, p, zero_division=0)
    # no positives: recall 0/0 -> 0.0, and no PR-AUC (a ranking with nothing to find)
    y, p = [0, 0, 0], [0, 1, 0]
    m = point_metrics(y, p, scores=[0.1, 0.9, 0.2])
    assert (m["precision"], m["recall"], m["f1"], m["pr_auc"]) == (0.0, 0.0, 0.0, None)
    assert m["recall"] == recall_score(y, p, zero_division=0)
    assert m["f1"] == f1_score(y, p, zero_division=0)
    assert (m["tp"], m["fp"], m["fn"], m["flagged"]) == (0, 1, 0, 1)
    # nothing to find and nothing flagged: every ratio is 0/0
    m = point_metrics([0, 0], [False, False])
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="y_pred"):
        point_metrics([0, 1], [0])


# --------------------------------------------------------------------------- events

# Two hosts, one row a minute (m = minutes after T0). "." unflagged, "X" flagged.
#
# host a:  m  0 1 2 3 | 4 5 6 7 | 8 9 10 | (no rows 11-19) | 20 21 22 | 23 24
#          event      | E1 (cpu)|        |                 |          | E4 (net)
#          flag . X X . | . . . X | . X X  |                 |  X  X  X |  X  .
# host b:  m  0 | 1 2 3 | 4 5 | 6 7 8 | 9 10 11
#          event  | E2 (disk)| | E3 (cpu)|
#          flag X | . . .  | . . | . X X | X X  .
#
# Events: E1 detected at m7 (ttd 7 - 4 = 3 min = 180 s), E2 missed, E3 detected at m7
# (ttd 60 s), E4 detected at its first point m23 (ttd 0 s): 4 events, 3 detected, 1 missed.
# False-alarm runs (flagged, outside events, consecutive per host):
#   a: {1,2}; {9,10} and {20,21,22} - split by the 10-minute gap in the scored rows (> 5 min);
#      {20,21,22} touches E4 (m23 flagged): m23 detects E4, m20-22 stay a false alarm;
#   b: {0} (the run does not continue from host a's rows); {9,10} - the tail of a run that
#      starts inside E3 (m7, m8 detect E3; m9, m10 are after the event: a false alarm).
#   -> 5 false-alarm events.
# event precision 3 / (3 + 5) = 3/8, event recall 3/4, F1 = 2 * 3/8 * 3/4 / (3/8 + 3/4) = 1/2.
# time to detect: mean (180 + 60 + 0) / 3 = 80 s, median 60 s.
_ROWS = {
    "a": [
        (0, None, None, 0),
        (1, None, None, 1),
        (2, None, None, 1),
        (3, None, None, 0),
        (4, "E1", "cpu", 0),
        (5, "E1", "cpu", 0),
        (6, "E1", "cpu", 0),
        (7, "E1", "cpu", 1),
        (8, None, None, 0),
        (9, None, None, 1),
        (10, None, None, 1),
        (20, None, None, 1),
        (21, None, None, 1),
        (22, None, None, 1),
        (23, "E4", "net", 1),
        (24, "E4", "net", 0),
    ],
    "b": [
        (0, None, None, 1),
        (1, "E2", "disk", 0),
        (2, "E2", "disk", 0),
        (3, "E2", "disk", 0),
        (4, None, None, 0),
        (5, None, None, 0),
        (6, "E3", "cpu", 0),
        (7, "E3", "cpu", 1),
        (8, "E3", "cpu", 1),
        (9, None, None, 1),
        (10, None, None, 1),
        (11, None, None, 0),
    ],
}


def two_hosts(shuffle: bool = True) -> pd.DataFrame:
    rows = [
        {
            "host": h,
            "ts": T0 + pd.Timedelta(minutes=m),
            # NaN and None both mean "outside every event"
            "event_id": ev if ev is not None else (np.nan if m % 2 else None),
            "fault_type": ft,
            "flagged": bool(f),
        }
        for h, spec in _ROWS.items()
        for m, ev, ft, f in spec
    ]
    df = pd.DataFrame(rows)
    # the metrics order rows themselves; input order must not matter
    return df.sample(frac=1.0, random_state=3).reset_index(drop=True) if shuffle else df


def test_event_metrics_on_the_two_host_example() -> None:
    m = event_metrics(two_hosts())
    assert m == {
        "events": 4,
        "detected": 3,
        "missed": 1,
        "false_alarm_events": 5,
        "event_precision": 3 / 8,
        "event_recall": 3 / 4,
        "event_f1": pytest.approx(0.5),
        "mean_time_to_detect": 80.0,
        "median_time_to_detect": 60.0,
    }


def test_max_gap_splits_runs_only_when_exceeded() -> None:
    pts = two_hosts()
    # the m10 -> m20 gap is 10 minutes: a wider max_gap joins {9,10} and {20,21,22} on host a
    assert event_metrics(pts, max_gap=pd.Timedelta("15min"))["false_alarm_events"] == 4
    assert event_metrics(pts, max_gap=pd.Timedelta("10min"))["false_alarm_events"] == 4  # not > 10 min
    assert event_metrics(pts, max_gap=pd.Timedelta("9min"))["false_alarm_events"] == 5
    # a 1-minute max_gap splits nothing here (every other step is exactly 1 minute)
    assert event_metrics(pts, max_gap=pd.Timedelta("1min"))["false_alarm_events"] == 5


def test_event_table_on_the_two_host_example() -> None:
    t = event_table(two_hosts())
    assert list(t.columns) == [
        "event_id",
        "host",
        "fault_type",
        "start",
        "end",
        "points",
        "detected",
        "first_flag",
        "time_to_detect_s",
    ]
    # ordered by start: E2 (b, m1), E1 (a, m4), E3 (b, m6), E4 (a, m23)
    assert t["event_id"].tolist() == ["E2", "E1", "E3", "E4"]
    assert t["host"].tolist() == ["b", "a", "b", "a"]
    assert t["fault_type"].tolist() == ["disk", "cpu", "cpu", "net"]
    assert t["points"].tolist() == [3, 4, 3, 2]
    assert t["detected"].tolist() == [False, True, True, True]
    minutes = pd.Timedelta(minutes=1)
    assert t["start"].tolist() == [T0 + k * minutes for k in (1, 4, 6, 23)]
    assert t["end"].tolist() == [T0 + k * minutes for k in (3, 7, 8, 24)]
    assert pd.isna(t["first_flag"].iloc[0])
    assert t["first_flag"].iloc[1:].tolist() == [T0 + k * minutes for k in (7, 7, 23)]
    assert math.isnan(t["time_to_detect_s"].iloc[0])
    assert t["time_to_detect_s"].iloc[1:].tolist() == [180.0, 60.0, 0.0]


def test_recall_by_type_on_the_two_host_example() -> None:
    # cpu:  E1 (4 points, 1 flagged) + E3 (3 points, 2 flagged): 2/2 events, 3/7 points
    # disk: E2 (3 points, none flagged): 0/1 events, 0/3 points
    # net:  E4 (2 points, 1 flagged): 1/1 events, 1/2 points
    r = recall_by_type(two_hosts())
    assert r.to_dict("records") == [
        {
            "fault_type": "cpu",
            "events": 2,
            "detected": 2,
            "event_recall": 1.0,
            "points": 7,
            "point_recall": 3 / 7,
        },
        {
            "fault_type": "disk",
            "events": 1,
            "detected": 0,
            "event_recall": 0.0,
            "points": 3,
            "point_recall": 0.0,
        },
        {
            "fault_type": "net",
            "events": 1,
            "detected": 1,
            "event_recall": 1.0,
            "points": 2,
            "point_recall": 0.5,
        },
    ]
    with pytest.raises(ValueError, match="fault_type"):
        recall_by_type(two_hosts().drop(columns="fault_type"))


def test_point_metrics_on_the_two_host_example() -> None:
    # positives 4 + 3 + 3 + 2 = 12, flagged inside events 1 + 0 + 2 + 1 = 4 (tp), flagged
    # outside: a 2 + 2 + 3, b 1 + 2 = 10 (fp), fn = 12 - 4 = 8
    pts = two_hosts()
    m = point_metrics(pts["event_id"].notna(), pts["flagged"])
    assert (m["positives"], m["tp"], m["fp"], m["fn"]) == (12, 4, 10, 8)
    assert m["precision"] == 4 / 14
    assert m["recall"] == 4 / 12


def test_event_metrics_without_events_or_detections() -> None:
    pts = two_hosts()
    quiet = pts.assign(flagged=False)
    m = event_metrics(quiet)
    assert (m["detected"], m["missed"], m["false_alarm_events"]) == (0, 4, 0)
    assert (m["event_precision"], m["event_recall"], m["event_f1"]) == (0.0, 0.0, 0.0)
    assert m["mean_time_to_detect"] is None
    assert m["median_time_to_detect"] is None
    unlabelled = pts.assign(event_id=None)
    m = event_metrics(unlabelled)
    # every flagged point is now outside events: a {1,2} {7} {9,10} {20..23}; b {0} {7..10}
    assert (m["events"], m["false_alarm_events"], m["event_recall"]) == (0, 6, 0.0)
    assert event_table(unlabelled).empty
    assert recall_by_type(unlabelled).empty


def test_event_input_checks() -> None:
    pts = two_hosts()
    with pytest.raises(ValueError, match="tz-aware"):
        event_metrics(pts.assign(ts=pts["ts"].dt.tz_localize(None)))
    with pytest.raises(ValueError, match="missing columns"):
        event_metrics(pts.drop(columns="flagged"))
    with pytest.raises(ValueError, match="more than one host"):
        event_metrics(pts.assign(event_id=pts["event_id"].where(pts["event_id"].isna(), "E")))
    with pytest.raises(ValueError, match="max_gap"):
        event_metrics(pts, max_gap=pd.Timedelta(0))


# --------------------------------------------------------------------------- calibration


def _calibrated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    p = rng.random(n)
    return rng.random(n) < p, p  # y ~ Bernoulli(score): perfectly calibrated by construction


def _overconfident(p: np.ndarray) -> np.ndarray:
    # the same ranking, pushed towards 0 and 1: sigmoid(4 * logit(p))
    return 1.0 / (1.0 + ((1.0 - p) / p) ** 4)


def test_calibration_by_hand() -> None:
    # bins of 0.5: [0.1, 0.2 | y 0, 1] and [0.6, 0.9, 1.0 | y 1, 1, 0]
    #   bin 0: mean score 0.15, rate 0.5    -> |diff| 0.35, weight 2/5
    #   bin 1: mean score 2.5/3, rate 2/3   -> |diff| 1/6,  weight 3/5
    # ECE = 0.4 * 0.35 + 0.6 / 6 = 0.24; Brier = (0.01 + 0.64 + 0.16 + 0.01 + 1) / 5 = 0.364
    c = calibration([0, 1, 1, 1, 0], [0.1, 0.2, 0.6, 0.9, 1.0], bins=2)
    assert c["ece"] == pytest.approx(0.24)
    assert c["brier"] == pytest.approx(0.364)
    r = c["reliability"]
    assert list(r.columns) == ["lower", "upper", "count", "mean_score", "observed_rate"]
    assert r["lower"].tolist() == [0.0, 0.5]
    assert r["upper"].tolist() == [0.5, 1.0]
    assert r["count"].tolist() == [2, 3]
    assert r["mean_score"].tolist() == pytest.approx([0.15, 2.5 / 3])
    assert r["observed_rate"].tolist() == pytest.approx([0.5, 2 / 3])
    # empty bins are listed (count 0, NaN means) and do not enter the ECE
    c4 = calibration([0, 1, 1, 1, 0], [0.1, 0.2, 0.6, 0.9, 1.0], bins=4)
    assert c4["reliability"]["count"].tolist() == [2, 0, 1, 2]
    assert math.isnan(c4["reliability"]["mean_score"].iloc[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration([0, 1], [0.5, 1.5])


def test_calibration_fixed_seed_calibrated_vs_overconfident() -> None:
    y, p = _calibrated(np.random.default_rng(0), 20_000)
    good = calibration(y, p)
    bad = calibration(y, _overconfident(p))
    # ~2000 points a bin: sampling noise alone gives ECE around 0.01
    assert good["ece"] < 0.02
    assert bad["ece"] > 0.1
    assert good["brier"] < bad["brier"]


@settings(max_examples=25, deadline=None, database=None)
@given(seed=st.integers(0, 2**63), bins=st.integers(1, 20))
def test_calibration_properties_for_any_seed(seed: int, bins: int) -> None:
    y, p = _calibrated(np.random.default_rng(seed), 20_000)
    for s in (p, _overconfident(p)):
        c = calibration(y, s, bins=bins)
        # By Jensen per bin, |mean(s - y)| <= sqrt(mean((s - y)^2)), then again across bins:
        # ECE <= sqrt(Brier) for any data, whatever the seed.
        assert 0.0 <= c["ece"] <= math.sqrt(c["brier"]) + 1e-12
        assert c["reliability"]["count"].sum() == y.size
    # one bin: ECE is the gap between the mean score and the base rate
    assert calibration(y, p, bins=1)["ece"] == pytest.approx(abs(p.mean() - y.mean()))
    # statistical, with a margin of ~20 standard deviations: holds for any seed in practice
    assert calibration(y, p, bins=10)["ece"] < 0.05 < calibration(y, _overconfident(p), bins=10)["ece"]


# --------------------------------------------------------------------------- evaluate


def _plain(x: object) -> None:
    """Only JSON's own types, no NaN, all the way down."""
    if isinstance(x, dict):
        for k, v in x.items():
            assert isinstance(k, str)
            _plain(v)
    elif isinstance(x, list):
        for v in x:
            _plain(v)
    else:
        assert x is None or type(x) in (bool, int, float, str), (x, type(x))
        assert not (isinstance(x, float) and not math.isfinite(x))


def test_evaluate_is_json_serialisable_and_consistent() -> None:
    pts = two_hosts()
    scores = np.where(pts["flagged"], 0.8, 0.2)
    r = evaluate(pts.drop(columns="flagged"), scores, threshold=np.float64(0.5))
    _plain(r)
    json.dumps(r, allow_nan=False)
    assert set(r) == {"threshold", "alert_threshold", "point", "event", "recall_by_type", "calibration"}
    assert r["threshold"] == 0.5 and r["alert_threshold"] == 0.5  # no alert threshold: the point one
    assert r["event"] == event_metrics(pts)
    assert r["point"]["tp"] == 4
    assert [row["fault_type"] for row in r["recall_by_type"]] == ["cpu", "disk", "net"]
    assert set(r["calibration"]) == {"brier", "ece"}


def _noisy_host(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """One host, 600 minutes, three 20-minute events: each has a few clear points (0.95, then
    0.9) and borderline ones (0.5); normal points are low (0.1) except 30 scattered ones at 0.6, so a
    threshold low enough for point recall pages on every one of them."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(T0, periods=600, freq="1min")
    event = np.full(600, None, dtype=object)
    scores = np.full(600, 0.1)
    for k, start in enumerate((100, 300, 500)):
        event[start : start + 20] = f"e{k}"
        scores[start : start + 20] = 0.5
        scores[start + 5 : start + 8] = 0.95
        scores[start + 8] = 0.9
    normal = np.flatnonzero(event == None)  # noqa: E711 (element-wise)
    scores[rng.choice(normal[(normal % 7) == 0], 30, replace=False)] = 0.6
    pts = pd.DataFrame({"host": "a", "ts": ts, "event_id": event, "fault_type": "cpu"})
    return pts, scores


def test_alert_threshold_pages_on_the_clear_points_only() -> None:
    pts, scores = _noisy_host()
    point = tune_threshold(pts["event_id"].notna(), scores, 0.9)
    assert point == 0.5  # recall 0.9 needs the borderline points...
    assert (
        event_metrics(pts.assign(flagged=scores >= point))["false_alarm_events"] == 30
    )  # ...and pages 30 times
    alert = tune_alert_threshold(pts, scores)
    assert alert == 0.9  # 0.9 and 0.95 both page once per event and never else: the lower wins
    m = event_metrics(pts.assign(flagged=scores >= alert))
    assert (m["detected"], m["false_alarm_events"], m["event_f1"]) == (3, 0, 1.0)
    assert m["mean_time_to_detect"] == 300.0  # the clear points come 5 minutes in
    shuffled = pts.assign(s=scores).sample(frac=1.0, random_state=1)  # input order does not matter
    assert tune_alert_threshold(shuffled.drop(columns="s"), shuffled["s"].to_numpy()) == alert


def test_alert_threshold_is_never_below_the_floor() -> None:
    pts, scores = _noisy_host()
    assert tune_alert_threshold(pts, scores, floor=0.5) == 0.9  # the floor only cuts candidates
    assert tune_alert_threshold(pts, scores, floor=0.92) == 0.95
    assert tune_alert_threshold(pts, scores, floor=0.97) == 0.97  # above every score: nothing pages


def test_alert_threshold_needs_events() -> None:
    pts, scores = _noisy_host()
    with pytest.raises(ValueError, match="no labelled event"):
        tune_alert_threshold(pts.assign(event_id=None), scores)


def test_evaluate_with_an_alert_threshold_splits_points_from_pages() -> None:
    pts, scores = _noisy_host()
    r = evaluate(pts, scores, threshold=0.5, alert_threshold=0.9)
    assert r["alert_threshold"] == 0.9
    assert r["point"]["recall"] == 1.0 and r["point"]["fp"] == 30  # points: the point threshold
    assert r["event"] == event_metrics(pts.assign(flagged=scores >= 0.9))  # events: the alert one
    assert r["event"]["false_alarm_events"] == 0
    (cpu,) = r["recall_by_type"]
    assert (cpu["event_recall"], cpu["point_recall"]) == (1.0, 1.0)
    # an alert threshold above every event's peak finds nothing, whatever the point threshold
    (cpu,) = evaluate(pts, scores, threshold=0.5, alert_threshold=0.99)["recall_by_type"]
    assert (cpu["detected"], cpu["event_recall"], cpu["point_recall"]) == (0, 0.0, 1.0)


def test_evaluate_degenerate_span_has_no_nan() -> None:
    # no events, nothing detected, scores that are not probabilities: undefined values are None / 0.0
    pts = two_hosts().assign(event_id=None, fault_type=None).drop(columns="flagged")
    r = evaluate(pts, np.linspace(-1.0, 3.0, len(pts)), threshold=10.0)
    _plain(r)
    json.dumps(r, allow_nan=False)
    assert r["point"]["pr_auc"] is None
    assert r["event"]["mean_time_to_detect"] is None
    assert r["recall_by_type"] == []
    assert r["calibration"] is None
    with pytest.raises(ValueError, match="finite"):
        evaluate(pts, np.full(len(pts), np.nan), threshold=0.5)
