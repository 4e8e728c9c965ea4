"""The ensemble's scoring path gives, bit for bit, what each member's own library call gives.

Scoring skips the libraries' per-call overheads (single-threaded members on row pieces, numpy
walks of hist_gb and the Isolation Forest for small batches, float32 features kept as float32,
the combiner's arithmetic without its validation): these tests pin every such path to the plain
library call on the float64 matrix, for batch sizes on both sides of each switch.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from anomaly.training import ensemble as ens
from anomaly.training.ensemble import MEMBERS, AnomalyEnsemble
from tests.training.test_ensemble import synthetic

BATCHES = (1, 5, ens._MEMBER_SPLIT_MIN_ROWS + 1, ens._FOREST_MAX_ROWS + 1, ens._PARALLEL_MIN_ROWS + 300)


@pytest.fixture(scope="module")
def data():
    X, y, _, ts = synthetic(n=3000, f=12, seed=3, nan_rate=0.05)  # > _PARALLEL_MIN_ROWS + 300
    return X.astype(np.float32), y, ts


@pytest.fixture(scope="module", params=["stacking", "average"])
def fitted(request, data) -> AnomalyEnsemble:
    X, y, ts = data
    est = AnomalyEnsemble(members=MEMBERS, combiner=request.param, n_estimators=30, n_jobs=2, random_state=1)
    return est.fit(X, y, time=ts)


def library_scores(est: AnomalyEnsemble, X: pd.DataFrame) -> np.ndarray:
    """Each member's raw score through its library's public call on the float64 matrix."""
    A = X[list(est.feature_names_in_)].to_numpy(dtype=np.float64)
    A = np.where(np.isinf(A), np.nan, A)
    m = est.members_
    raw = {
        "xgboost": np.asarray(m["xgboost"].get_booster().inplace_predict(A), dtype=np.float64),
        "lightgbm": m["lightgbm"].predict(A),
        "hist_gb": m["hist_gb"].predict_proba(A)[:, 1],
        "isolation_forest": -m["isolation_forest"].score_samples(est._impute(A)),
        "robust_z": -m["robust_z"].score_samples(A),
        "tail": -m["tail"].score_samples(A),
        "lof": -m["lof"].score_samples(est._impute(A)),
    }
    return np.column_stack([raw[name] for name in est.members_])


@pytest.mark.parametrize("batch", BATCHES)
def test_member_scores_equal_the_libraries_own_calls(fitted, data, batch):
    X = data[0].iloc[:batch]
    raw = fitted._raw_scores(fitted._matrix(X), list(fitted.members_))
    np.testing.assert_array_equal(raw, library_scores(fitted, X))


def test_several_pieces_per_thread_change_nothing(fitted, data, monkeypatch):
    X = data[0]
    whole = fitted._raw_scores(fitted._matrix(X), list(fitted.members_))
    monkeypatch.setattr(ens, "_PIECE", 97)  # 3000 rows: 32 pieces over 2 threads
    np.testing.assert_array_equal(fitted._raw_scores(fitted._matrix(X), list(fitted.members_)), whole)
    np.testing.assert_array_equal(whole, library_scores(fitted, X))


def test_combined_score_equals_the_fitted_combiners_own_call(fitted, data):
    X = data[0]
    S = fitted.member_scores(X).to_numpy()
    np.testing.assert_array_equal(fitted.decision_function(X), fitted.combiner_.predict_proba(S)[:, 1])
    np.testing.assert_array_equal(fitted.predict_proba(X)[:, 1], fitted.decision_function(X))


def test_float32_and_float64_frames_of_the_same_values_score_the_same(fitted, data):
    X = data[0].iloc[:600]
    wide = X.astype(np.float64)
    mixed = X.copy()  # float32, float64 and int64 columns: one float64 matrix
    mixed[X.columns[0]] = X[X.columns[0]].astype(np.float64)
    mixed[X.columns[1]] = X[X.columns[1]].fillna(0).round().astype(np.int64)
    np.testing.assert_array_equal(fitted.member_scores(X), fitted.member_scores(wide))
    np.testing.assert_array_equal(fitted.member_scores(mixed), fitted.member_scores(mixed.astype(np.float64)))
    assert fitted._matrix(X).dtype == np.float32 and fitted._matrix(wide).dtype == np.float64


def test_row_by_row_equals_the_batch(fitted, data):
    X = data[0].iloc[:40]
    one = np.vstack([fitted.member_scores(X.iloc[[i]]).to_numpy() for i in range(len(X))])
    np.testing.assert_array_equal(one, fitted.member_scores(X).to_numpy())
    single = np.array([fitted.decision_function(X.iloc[[i]])[0] for i in range(len(X))])
    np.testing.assert_allclose(single, fitted.decision_function(X), rtol=0, atol=1e-15)  # BLAS by shape


def test_n_jobs_changed_after_fit_scores_the_same(fitted, data):
    X = data[0]
    before = fitted.decision_function(X)
    fitted.set_params(n_jobs=1)
    try:
        np.testing.assert_array_equal(fitted.decision_function(X), before)
    finally:
        fitted.set_params(n_jobs=2)


def test_a_pickled_copy_scores_the_same_and_a_refit_rebuilds_the_scoring_state(fitted, data):
    X, y, ts = data
    fitted.decision_function(X.iloc[:10])
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(fitted)).decision_function(X), fitted.decision_function(X)
    )
    other = pickle.loads(pickle.dumps(fitted))
    other.decision_function(X.iloc[:10])
    other.set_params(random_state=2).fit(X, y, time=ts)  # the stale cache must not be used
    fresh = AnomalyEnsemble(**other.get_params()).fit(X, y, time=ts)
    np.testing.assert_array_equal(other.decision_function(X), fresh.decision_function(X))


def test_a_failing_member_in_a_worker_thread_raises_in_the_caller(fitted, data, monkeypatch):
    X = data[0]

    def boom(*args, **kwargs):
        raise RuntimeError("member failed")

    monkeypatch.setattr(fitted._scorer(), "_hist_gb", boom)
    with pytest.raises(RuntimeError, match="member failed"):
        fitted.decision_function(X)
