"""The anomaly ensemble: estimator contract, unseen faults, artifacts verified before loading."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils import estimator_checks

from anomaly.training.ensemble import (
    COMBINER_FILE,
    MANIFEST,
    MEMBER_FILES,
    MEMBERS,
    AnomalyEnsemble,
    ArtifactError,
    RobustZDetector,
    TailProbabilityDetector,
    WeightedAverageCombiner,
    _quantile_map,
    load_member,
    save_member,
)

SEEN = ("spike", "shift", "flat")


def synthetic(
    n: int = 2000,
    f: int = 12,
    *,
    types: tuple[str, ...] = SEEN,
    rate: float = 0.05,
    seed: int = 0,
    world: int | None = None,
    nan_rate: float = 0.01,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """``n`` 5-minute rows of ``f`` correlated, seasonal features with 4-row fault events.

    Fault types: ``spike`` (+8 on one random feature), ``shift`` (+4 on the first third),
    ``flat`` (the middle third stuck at -5), ``surge`` (+6 on the last third; kept out of training).
    ``world`` (default ``seed``) draws what normal looks like (correlations, daily amplitudes),
    ``seed`` the rows. Returns features, 0/1 labels, the type of each row ("normal" or a fault)
    and timestamps.
    """
    shape = np.random.default_rng(seed if world is None else world)
    mixing, amplitude = shape.normal(size=(3, f)), shape.uniform(0.5, 1.5, size=f)
    rng = np.random.default_rng([seed, 1])
    t = np.arange(n)
    X = rng.normal(size=(n, 3)) @ mixing / np.sqrt(3) + 0.5 * rng.normal(size=(n, f))
    X += np.sin(2 * np.pi * t / 288)[:, None] * amplitude
    kind = np.full(n, "normal", dtype=object)
    third = max(1, f // 3)
    n_events = max(len(types), int(n * rate / 4))
    for e, start in enumerate(rng.choice(n - 4, n_events, replace=False)):
        typ = types[e % len(types)]
        rows = slice(start, start + 4)
        if typ == "spike":
            X[rows, rng.integers(f)] += 8.0
        elif typ == "shift":
            X[rows, :third] += 4.0
        elif typ == "flat":
            X[rows, third : 2 * third] = -5.0
        elif typ == "surge":
            X[rows, 2 * third :] += 6.0
        kind[rows] = typ
    X[rng.random((n, f)) < nan_rate] = np.nan
    frame = pd.DataFrame(X, columns=[f"m{j:02d}__mean_5m" for j in range(f)])
    ts = pd.date_range("2026-01-01", periods=n, freq="5min", tz="UTC")
    return frame, (kind != "normal").astype(int), kind, ts


def small(**params) -> AnomalyEnsemble:
    return AnomalyEnsemble(**{"n_estimators": 20, "n_jobs": 1, "random_state": 0, **params})


@pytest.fixture(scope="module")
def data():
    return synthetic(seed=0)


@pytest.fixture(scope="module")
def fitted(data) -> AnomalyEnsemble:
    """Every member, so that the artifact tests cover every file kind."""
    X, y, _, ts = data
    return small(members=MEMBERS).fit(X, y, time=ts)


# ---------------------------------------------------------------- estimator contract


def test_clone_and_params_round_trip():
    est = AnomalyEnsemble(combiner="average", n_estimators=7, random_state=3)
    params = est.get_params()
    assert clone(est).get_params() == params
    other = AnomalyEnsemble().set_params(**params)
    assert other.get_params() == params
    assert est.set_params(max_depth=2) is est and est.get_params()["max_depth"] == 2


def test_fit_returns_self_and_sets_only_trailing_underscore_attributes(data):
    X, y, _, ts = data
    est = small(combiner="average")
    before = set(vars(est))
    assert not [a for a in before if a.endswith("_")]
    with pytest.raises(NotFittedError):
        est.predict_proba(X)
    assert est.fit(X, y, time=ts) is est
    added = set(vars(est)) - before
    assert all(a.endswith("_") for a in added), added
    assert {
        "members_",
        "combiner_",
        "feature_names_in_",
        "n_features_in_",
        "classes_",
        "member_weights_",
        "validation_scores_",
        "imputation_medians_",
    } <= added
    assert list(est.feature_names_in_) == list(X.columns) and est.n_features_in_ == X.shape[1]
    assert list(est.members_) == list(est.members) == list(est.validation_scores_)
    assert est.n_train_ + est.n_validation_ == len(X)
    weights = np.array(list(est.member_weights_.values()))
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    est.set_params(combiner="stacking").fit(X, y, time=ts)  # a refit leaves nothing stale
    assert hasattr(est, "stacking_coef_") and not hasattr(est, "member_weights_")


def test_random_state_reproduces_and_a_different_seed_changes_scores(data, fitted):
    X, y, _, ts = data
    again = clone(fitted).fit(X, y, time=ts)
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))
    other = clone(fitted).set_params(random_state=1).fit(X, y, time=ts)
    assert not np.array_equal(other.predict_proba(X), fitted.predict_proba(X))
    # The randomised members change (row/column subsampling, random isolation trees); LOF is
    # deterministic below its 5,000-row subsample, hist_gb without early stopping.
    diff = other.member_scores(X) != fitted.member_scores(X)
    assert diff[["xgboost", "lightgbm", "isolation_forest"]].any().all()


def test_members_fitted_one_by_one_through_files_give_the_same_ensemble(data, fitted, tmp_path):
    """The training DAG fits members in separate tasks: fit_member, save_member, load_member and
    fit(prefit=...) must reproduce the single-process fit exactly."""
    X, y, _, ts = data
    template = clone(fitted)
    hashes = {}
    for name in MEMBERS:
        member = template.fit_member(name, X, y, time=ts)
        hashes[name] = save_member(name, member, tmp_path)
    assert not hasattr(template, "members_")  # fit_member leaves the template unfitted
    prefit = {name: load_member(name, tmp_path, sha) for name, sha in hashes.items()}
    combined = clone(fitted).fit(X, y, time=ts, prefit=prefit)
    np.testing.assert_array_equal(combined.predict_proba(X), fitted.predict_proba(X))


def test_member_files_are_verified_and_prefit_is_checked(data, tmp_path):
    X, y, _, ts = data
    est = small(members=("xgboost", "robust_z"))
    sha = save_member("robust_z", est.fit_member("robust_z", X, y, time=ts), tmp_path)
    path = tmp_path / MEMBER_FILES["robust_z"]
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_member("robust_z", tmp_path, sha)
    with pytest.raises(ValueError, match="not one of this ensemble's members"):
        est.fit_member("lightgbm", X, y, time=ts)
    narrow = small(members=("xgboost",)).fit_member("xgboost", X.iloc[:, :5], y, time=ts)
    with pytest.raises(ValueError, match="fitted on 5 features"):
        est.fit(X, y, time=ts, prefit={"xgboost": narrow})
    with pytest.raises(ValueError, match=r"prefit members \['lof'\]"):
        est.fit(X, y, time=ts, prefit={"lof": narrow})


def test_a_given_validation_set_fits_the_combiner_and_every_row_of_x_the_members(data, tmp_path):
    """``validation=(X_val, y_val)``: the members learn from all of X (fit_member(all_rows=True)
    gives the same member), the combiner and the detectors' score maps from the given rows."""
    X, y, _, ts = data
    cut = 1500
    X_tr, y_tr, X_va, y_va = X.iloc[:cut], y[:cut], X.iloc[cut:], y[cut:]
    members = ("xgboost", "isolation_forest", "tail")
    est = small(members=members).fit(X_tr, y_tr, time=ts[:cut], validation=(X_va, y_va))
    assert (est.n_train_, est.n_validation_) == (cut, len(X) - cut)
    alone = small(members=members).fit_member("xgboost", X_tr, y_tr, time=ts[:cut], all_rows=True)
    assert alone.get_booster().num_boosted_rounds() == 20
    np.testing.assert_array_equal(
        alone.predict_proba(X_va)[:, 1], est.member_scores(X_va)["xgboost"].to_numpy()
    )
    # The score maps come from the validation negatives, not the training ones.
    for name in ("isolation_forest", "tail"):
        expected = _quantile_map(est._raw_score(name, X_va.to_numpy()[y_va == 0]))
        for got, want in zip(est.score_maps_[name], expected, strict=True):
            np.testing.assert_array_equal(got, want)
    prefit = {
        m: small(members=members).fit_member(m, X_tr, y_tr, time=ts[:cut], all_rows=True) for m in members
    }
    again = small(members=members).fit(X_tr, y_tr, time=ts[:cut], validation=(X_va, y_va), prefit=prefit)
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    # Without it, the members learn from the first 80 % of X only: a different model.
    inner = small(members=members).fit(X_tr, y_tr, time=ts[:cut])
    assert inner.n_train_ == 1200
    with pytest.raises(ValueError, match="time has 1499 values for 1500 rows"):
        small(members=members).fit(X_tr, y_tr, time=ts[:1499], validation=(X_va, y_va))


def test_a_bad_validation_set_is_refused_by_name(data):
    X, y, _, _ = data
    est = small(members=("xgboost", "tail"))
    with pytest.raises(ValueError, match="validation labels: y has only one class"):
        est.fit(X.iloc[:1500], y[:1500], validation=(X.iloc[1500:], np.zeros(500, dtype=int)))
    with pytest.raises(ValueError, match=r"lacks 1 feature column\(s\).*m03__mean_5m"):
        est.fit(X.iloc[:1500], y[:1500], validation=(X.iloc[1500:].drop(columns="m03__mean_5m"), y[1500:]))
    with pytest.raises(ValueError, match="the validation X has 500 rows but its y has 499"):
        est.fit(X.iloc[:1500], y[:1500], validation=(X.iloc[1500:], y[1501:]))
    few = X.iloc[1500:1508]
    with pytest.raises(ValueError, match="the validation part has 7 negative rows, need at least 10"):
        est.fit(X.iloc[:1500], y[:1500], validation=(few, np.r_[1, np.zeros(7, dtype=int)]))


# The checks that fit on small numpy arrays do not apply (see AnomalyEnsemble's docstring);
# these do.
APPLICABLE_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_estimators_unfitted",
    "check_mixin_order",
    "check_valid_tag_types",
    "check_estimator_tags_renamed",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_classifier_not_supporting_multiclass",
]


@pytest.mark.parametrize("check", APPLICABLE_CHECKS)
def test_sklearn_checks_that_apply(check):
    getattr(estimator_checks, check)("AnomalyEnsemble", AnomalyEnsemble(n_estimators=5, n_jobs=1))


SKIP_ARRAY_API = pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")


@SKIP_ARRAY_API
def test_robust_z_detector_passes_check_estimator():
    estimator_checks.check_estimator(RobustZDetector())


@SKIP_ARRAY_API
def test_tail_probability_detector_passes_check_estimator():
    estimator_checks.check_estimator(TailProbabilityDetector())


@SKIP_ARRAY_API
def test_average_combiner_passes_check_estimator():
    # Weights >= 0 by design: they cannot fit check_classifiers_train's arbitrary blobs.
    why = "non-negative weights cannot fit features that are negatively related to y"
    estimator_checks.check_estimator(
        WeightedAverageCombiner(), expected_failed_checks={"check_classifiers_train": why}
    )


# ---------------------------------------------------------------- behaviour


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_unsupervised_members_score_an_unseen_fault_type_above_normal(seed):
    X, y, _, ts = synthetic(seed=seed)  # spike / shift / flat only
    detectors = ("isolation_forest", "robust_z", "tail")
    est = small(members=("xgboost", *detectors), random_state=seed).fit(X, y, time=ts)
    Xn, _, kind, _ = synthetic(seed=seed + 100, world=seed, types=("surge",), rate=0.1)
    scores = est.member_scores(Xn)
    surge, normal = kind == "surge", kind == "normal"
    for member in detectors:
        s = scores[member].to_numpy()
        assert roc_auc_score(surge[surge | normal], s[surge | normal]) > 0.95, member
        assert np.median(s[surge]) > np.quantile(s[normal], 0.95), member


def test_member_scores_are_in_unit_interval_and_probabilities_sum_to_one(data, fitted):
    X = data[0]
    scores = fitted.member_scores(X)
    assert list(scores.columns) == list(fitted.members_) and scores.index.equals(X.index)
    assert ((scores >= 0) & (scores <= 1)).all().all()
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted.decision_function(X), proba[:, 1])
    np.testing.assert_array_equal(fitted.predict(X), (proba[:, 1] >= 0.5).astype(int))
    np.testing.assert_array_equal(fitted.predict(X, threshold=0.0), np.ones(len(X), dtype=int))


def test_an_empty_batch_scores_to_empty_results(data, fitted):
    empty = data[0].iloc[:0]
    assert fitted.predict_proba(empty).shape == (0, 2)
    assert fitted.predict(empty).shape == (0,)
    assert fitted.member_scores(empty).shape == (0, len(fitted.members_))
    assert fitted.explain(empty) == []


def test_the_ensemble_finds_seen_faults(data, fitted):
    X, y, _, _ = data
    holdout = slice(fitted.n_train_, None)  # rows the members never saw
    assert roc_auc_score(y[holdout], fitted.decision_function(X.iloc[holdout])) > 0.9


def test_columns_are_taken_by_name_extra_ones_ignored_and_inf_is_missing(data, fitted):
    X = data[0].iloc[:300]
    shuffled = X[X.columns[::-1]].assign(unrelated=1.0)
    np.testing.assert_array_equal(fitted.predict_proba(shuffled), fitted.predict_proba(X))
    col = X.columns[0]
    with_inf = X.assign(**{col: X[col].where(X.index % 7 != 0, np.inf)})
    with_nan = X.assign(**{col: X[col].where(X.index % 7 != 0, np.nan)})
    np.testing.assert_array_equal(fitted.predict_proba(with_inf), fitted.predict_proba(with_nan))


def test_a_feature_without_training_values_is_never_evidence(data, tmp_path):
    X, y, _, ts = data
    lag = X["m00__mean_5m"].shift(2000)  # a lag longer than the data: all NaN in training
    est = small(members=MEMBERS).fit(X.assign(lag_1w=lag), y, time=ts)
    assert list(est.empty_features_) == ["lag_1w"]
    arrived = X.assign(lag_1w=np.linspace(-50, 50, len(X)))  # values appear after training
    np.testing.assert_array_equal(
        est.member_scores(arrived).to_numpy(), est.member_scores(X.assign(lag_1w=np.nan)).to_numpy()
    )
    loaded = AnomalyEnsemble.load(tmp_path, est.save(tmp_path))
    np.testing.assert_array_equal(loaded.predict_proba(arrived), est.predict_proba(arrived))


def test_rows_are_ordered_by_time_and_ties_stay_on_one_side(data):
    X, y, _, ts = data
    ordered = small(members=("xgboost", "robust_z")).fit(X, y, time=ts)
    perm = np.random.default_rng(0).permutation(len(X))
    time = pd.Series(ts[perm], index=X.index[perm])  # e.g. a frame's "ts" column
    shuffled = small(members=("xgboost", "robust_z")).fit(X.iloc[perm], y[perm], time=time)
    np.testing.assert_array_equal(shuffled.predict_proba(X), ordered.predict_proba(X))
    # Four hosts per timestamp: the cut falls between timestamps.
    stamps = ts[np.arange(len(X)) // 4]
    est = small(members=("xgboost", "robust_z"), validation_fraction=0.23).fit(X, y, time=stamps)
    assert est.n_train_ % 4 == 0


def test_explain_returns_top_features_with_finite_contributions(data, fitted):
    X, y, _, _ = data
    flagged = X[y == 1].head(5)
    explained = fitted.explain(flagged, top=3)
    assert len(explained) == len(flagged)
    for row in explained:
        assert len(row) == 3
        names, values = zip(*row, strict=True)
        assert set(names) <= set(fitted.feature_names_in_) and len(set(names)) == 3
        assert np.all(np.isfinite(values))
        assert list(np.abs(values)) == sorted(np.abs(values), reverse=True)


def test_robust_z_detector_is_nan_safe_and_scores_distance():
    normal = np.column_stack([np.arange(100.0), np.zeros(100), np.arange(100.0) % 7])
    det = RobustZDetector(top_k=1).fit(normal)
    s = -det.score_samples(np.array([[49.5, 0.0, 3.0], [49.5, np.nan, 3.0], [49.5, 1.0, 3.0], [np.nan] * 3]))
    assert s[0] == s[1] == s[3] == 0.0  # at the median, a missing value is no evidence
    assert s[2] > 1e6 - 1  # a feature constant in normal data that moved: capped, not inf


def _tail_probability(x: float, column: np.ndarray) -> float:
    """The per-feature score by definition: log(0.5 / p), p the smaller one-sided empirical tail
    probability of x among the column's values, floored at 0.5 / n."""
    column = column[~np.isnan(column)]
    if np.isnan(x) or len(column) == 0:
        return 0.0
    p = max(min(np.mean(column <= x), np.mean(column >= x)), 0.5 / len(column))
    return max(float(np.log(0.5 / p)), 0.0)


def test_tail_detector_scores_the_empirical_tail_probability_within_one_knot_step():
    rng = np.random.default_rng(0)
    n, knots = 5000, 16
    normal = np.column_stack([rng.normal(size=n), np.round(rng.normal(size=n)), rng.exponential(size=n)])
    normal[rng.random(normal.shape) < 0.1] = np.nan
    det = TailProbabilityDetector(top_k=1, knots=knots).fit(normal)
    probe = np.r_[rng.normal(scale=2, size=300), np.nanmin(normal), np.nanmax(normal), -1.0, 0.0, 1.0, 50.0]
    for j in range(normal.shape[1]):
        column = normal[:, j]
        m = int(np.sum(~np.isnan(column)))
        step = np.log((m / 2) ** (1 / (knots - 1))) + 1e-9  # the widest gap between two knot ranks
        got = -det.score_samples(
            np.column_stack([probe if i == j else np.full(len(probe), np.nan) for i in range(3)])
        )
        want = np.array([_tail_probability(x, column) for x in probe])
        assert np.all(got >= want - 1e-12), j  # never less extreme than the data says
        assert np.all(got <= want + step), j  # at most one knot step more
        outside = (probe < np.nanmin(column)) | (probe > np.nanmax(column))
        np.testing.assert_allclose(got[outside], np.log(m))  # beyond all of normal: log(n)
        assert got[outside].size and np.all(got[~outside] < np.log(m))
    ties = -det.score_samples(np.array([[np.nan, 0.0, np.nan], [np.nan, 0.5, np.nan]]))
    assert ties[0] == 0.0  # a tie at the median (~38 % of the rounded column is 0): no evidence
    assert ties[1] == pytest.approx(_tail_probability(0.5, normal[:, 1]), abs=0.3)


def test_tail_detector_flags_a_value_beyond_normal_that_robust_z_calls_close():
    # A 15-minute standard deviation: never 0 in normal rows, 0 when the metric is stuck.
    rng = np.random.default_rng(1)
    normal = rng.lognormal(mean=0.0, sigma=0.4, size=(20_000, 4)) + 0.2
    stuck = np.array([[0.0, 0.0, 1.2, 1.1]])
    ordinary = np.array([[1.3, 1.6, 0.9, 1.0]])
    tail = TailProbabilityDetector(top_k=2).fit(normal)
    z = RobustZDetector(top_k=2).fit(normal)
    normal_z = -z.score_samples(normal)
    assert -z.score_samples(stuck)[0] < np.quantile(normal_z, 0.99)  # robust z: an ordinary row
    normal_tail = -tail.score_samples(normal)
    assert -tail.score_samples(stuck)[0] == pytest.approx(np.log(len(normal)))  # beyond all normal
    assert -tail.score_samples(stuck)[0] > normal_tail.max()
    assert -tail.score_samples(ordinary)[0] < np.quantile(normal_tail, 0.99)


def test_tail_detector_ignores_features_that_drift_beyond_their_fitted_range():
    rng = np.random.default_rng(3)
    n = 10_000
    t = np.arange(n)
    rows = np.column_stack(
        [rng.normal(size=n), 50 + t / 1000 + rng.normal(scale=0.1, size=n)]
    )  # a disk filling
    det = TailProbabilityDetector(top_k=1).fit(rows[:7000])
    later = det.ignoring_drift(rows[7000:])
    assert later is not det and not hasattr(det, "drift_ignored_")  # a copy; the fitted one is unchanged
    assert later.drift_ignored_.tolist() == [False, True]
    beyond = np.array([[0.0, 70.0], [9.0, 57.0]])  # drifted level only / stationary feature out of range
    np.testing.assert_allclose(-det.score_samples(beyond), [np.log(7000), np.log(7000)])
    drifted, stuck = -later.score_samples(beyond)
    assert drifted < 0.5 and stuck == pytest.approx(np.log(7000))  # only the ordinary feature counts
    stationary_later = det.ignoring_drift(rows[:7000][::-1])  # rows inside the range: nothing drifts
    assert not stationary_later.drift_ignored_.any()


def test_ensemble_tail_member_ignores_what_drifts_between_its_two_parts(data):
    X, y, _, ts = data
    drifting = X.assign(
        m00__mean_5m=np.linspace(0.0, 100.0, len(X))
    )  # the level of the train part is left behind
    est = small(members=("xgboost", "tail")).fit(drifting, y, time=ts)
    ignored = est.members_["tail"].drift_ignored_
    assert ignored[list(est.feature_names_in_).index("m00__mean_5m")]
    assert ignored.sum() == 1


def test_tail_detector_small_and_large_batches_take_different_paths_to_the_same_scores(monkeypatch):
    from anomaly.training import ensemble as ens

    rng = np.random.default_rng(2)
    normal = np.round(rng.normal(size=(3000, 20)), 1)
    normal[rng.random(normal.shape) < 0.05] = np.nan
    normal[:, 7] = 2.0  # constant
    normal[:, 8] = np.nan  # never seen
    det = TailProbabilityDetector().fit(normal)
    rows = np.round(rng.normal(scale=1.5, size=(200, 20)), 1)
    rows[rng.random(rows.shape) < 0.05] = np.nan
    rows[::3, 7] = 2.5
    many = -det.score_samples(rows)
    assert len(rows) > ens._TAIL_BROADCAST_ROWS
    few = np.concatenate([-det.score_samples(rows[i : i + 10]) for i in range(0, len(rows), 10)])
    np.testing.assert_array_equal(few, many)
    monkeypatch.setattr(ens, "_TAIL_BROADCAST_ROWS", 1000)
    np.testing.assert_array_equal(-det.score_samples(rows), many)
    assert np.all(np.isfinite(many))
    assert many[::3].min() >= np.log(det.n_[7]) / det.top_k  # the constant moved: log(n) in its top 3
    only_unseen = np.full((2, 20), np.nan)
    only_unseen[:, 8] = [0.0, 1e9]
    np.testing.assert_array_equal(-det.score_samples(only_unseen), 0.0)  # no value in fit: no evidence


# ---------------------------------------------------------------- errors


def test_bad_input_raises_clear_errors(data, fitted):
    X, y, _, ts = data
    with pytest.raises(ValueError, match="only one class"):
        small().fit(X, np.zeros(len(X), dtype=int), time=ts)
    with pytest.raises(ValueError, match=r"lacks 2 feature column\(s\).*m03__mean_5m.*m07__mean_5m"):
        fitted.predict(X.drop(columns=["m03__mean_5m", "m07__mean_5m"]))
    with pytest.raises(ValueError, match=r"non-numeric feature column\(s\): host"):
        small().fit(X.assign(host="web-1"), y, time=ts)
    with pytest.raises(ValueError, match=r"non-numeric.*m00__mean_5m"):
        fitted.predict_proba(X.assign(m00__mean_5m="x"))
    with pytest.raises(ValueError, match="at least 100 rows"):
        small().fit(X.iloc[:50], np.arange(50) % 2)
    with pytest.raises(ValueError, match="DataFrame"):
        small().fit(X.to_numpy(), y)
    late = np.zeros(len(X), dtype=int)
    late[-10:] = 1  # every positive in the validation part
    with pytest.raises(ValueError, match=r"training part .* no positive rows"):
        small().fit(X, late, time=ts)
    with pytest.raises(ValueError, match="time has 3 values"):
        small().fit(X, y, time=ts[:3])
    with pytest.raises(ValueError, match="members must be"):
        small(members=("xgboost", "svm")).fit(X, y, time=ts)


# ---------------------------------------------------------------- artifacts


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("ensemble")
    return directory, fitted.save(directory)


def copy_of(saved, tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for path in saved[0].iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return tmp_path


def test_save_then_load_gives_identical_predictions(data, fitted, saved):
    X = data[0]
    directory, hashes = saved
    files = {p.name for p in directory.iterdir()}
    assert files == set(hashes) == {*(MEMBER_FILES[m] for m in fitted.members_), COMBINER_FILE, MANIFEST}
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["feature_names"] == list(fitted.feature_names_in_)
    assert manifest["files"] == {k: v for k, v in hashes.items() if k != MANIFEST}
    assert {"xgboost", "lightgbm", "scikit-learn", "numpy"} <= set(manifest["versions"])
    loaded = AnomalyEnsemble.load(directory, expected_sha256=hashes)
    np.testing.assert_array_equal(loaded.predict_proba(X), fitted.predict_proba(X))
    pd.testing.assert_frame_equal(loaded.member_scores(X), fitted.member_scores(X))
    assert loaded.explain(X.head(3)) == fitted.explain(X.head(3))
    assert loaded.get_params() == fitted.get_params()
    assert loaded.stacking_coef_ == fitted.stacking_coef_
    np.testing.assert_array_equal(AnomalyEnsemble.load(directory).predict(X), fitted.predict(X))


def test_average_combiner_round_trips(data, tmp_path):
    X, y, _, ts = data
    est = small(combiner="average", members=("lightgbm", "robust_z")).fit(X, y, time=ts)
    loaded = AnomalyEnsemble.load(tmp_path, est.save(tmp_path))
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    assert loaded.member_weights_ == est.member_weights_


@pytest.mark.parametrize("file", [*MEMBER_FILES.values(), COMBINER_FILE])
def test_a_changed_byte_is_caught_before_loading(saved, tmp_path, file):
    directory = copy_of(saved, tmp_path)
    data = bytearray((directory / file).read_bytes())
    data[len(data) // 2] ^= 0x01
    (directory / file).write_bytes(bytes(data))
    tampered = hashlib.sha256(bytes(data)).hexdigest()
    for expected in (None, saved[1]):
        with pytest.raises(ArtifactError, match=re.escape(file)) as err:
            AnomalyEnsemble.load(directory, expected_sha256=expected)
        assert tampered in str(err.value) and saved[1][file] in str(err.value)


def test_a_changed_manifest_is_caught_against_the_registry_hashes(saved, tmp_path):
    directory = copy_of(saved, tmp_path)
    text = (directory / MANIFEST).read_text()
    (directory / MANIFEST).write_text(text.replace('"max_depth": 6', '"max_depth": 7'))
    with pytest.raises(ArtifactError, match=re.escape(MANIFEST)):
        AnomalyEnsemble.load(directory, expected_sha256=saved[1])


def test_expected_hashes_must_match_and_be_complete(saved):
    directory, hashes = saved
    wrong = {**hashes, "xgboost.ubj": "0" * 64}
    with pytest.raises(ArtifactError, match=r"xgboost\.ubj.*expected_sha256"):
        AnomalyEnsemble.load(directory, expected_sha256=wrong)
    partial = {k: v for k, v in hashes.items() if k != "robust_z.joblib"}
    with pytest.raises(ArtifactError, match="expected_sha256 names"):
        AnomalyEnsemble.load(directory, expected_sha256=partial)


def test_a_missing_file_is_an_artifact_error(saved, tmp_path):
    directory = copy_of(saved, tmp_path)
    (directory / "lightgbm.txt").unlink()
    with pytest.raises(ArtifactError, match=r"lightgbm\.txt: missing"):
        AnomalyEnsemble.load(directory)


class _Payload:
    """Unpickling this creates a marker directory: proof that a file was deserialised."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("file", ["hist_gb.joblib", COMBINER_FILE])
def test_an_unverified_pickle_is_never_unpickled(saved, tmp_path, file):
    directory = copy_of(saved, tmp_path / "model")
    marker = tmp_path / "unpickled"
    (directory / file).write_bytes(pickle.dumps(_Payload(marker)))
    for expected in (None, saved[1]):
        with pytest.raises(ArtifactError, match=re.escape(file)):
            AnomalyEnsemble.load(directory, expected_sha256=expected)
        assert not marker.exists()
    joblib.load(directory / file)  # the control: loading it unverified does run the payload
    assert marker.exists()
