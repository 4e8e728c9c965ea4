"""The anomaly ensemble: boosted classifiers and unsupervised detectors, combined on held-out time.

Members (any subset, by name):

- ``xgboost``, ``lightgbm``, ``hist_gb``: gradient-boosted classifiers on the raw features (NaN is
  handled natively), positives up-weighted by ``scale_pos_weight`` (negatives / positives of the
  training part unless given; ``hist_gb`` gets it as a sample weight).
- ``isolation_forest``: fitted on the *negatives* of the training part (labelled anomalies are
  known not to be normal), features median-imputed with the negatives' medians.
- ``tail``: :class:`TailProbabilityDetector`, each feature's empirical distribution over the
  same negatives; a row's score is the mean of its ``top_k`` (3) largest ``log(0.5 / p)``, ``p``
  a value's one-sided tail probability among normal values (a value beyond all of them scores
  ``log(n)``). ``fit`` then ignores every feature whose values drift: more than
  max(0.1 %, 20 / n) of the validation part's negatives beyond its training range
  (``ignoring_drift``).
- ``robust_z`` (optional): :class:`RobustZDetector`, per-feature median and MAD of the same
  negatives; a row's score is the mean of its ``top_k`` largest absolute robust z-scores.
- ``lof`` (optional): Local Outlier Factor (novelty mode) on robust-scaled, median-imputed
  negatives (a subsample of at most 5,000 rows).

The unsupervised members see no fault type, so a fault never labelled can still score high.

**Why ``tail`` replaced ``robust_z`` as a default** (2026-12-05, ``make bench-train``'s fleet:
402,179 rows x 454 features; five fault types left out of training; each detector fitted alone
on the training part's 176,831 normal rows, judged on the test span's unseen-type points against
its normal points). Unseen-versus-normal AUC: ``tail`` 0.781 (``top_k`` 3; 0.774-0.781 for
``top_k`` 1 to 10, 0.710 for the mean over all features, ECOD's sum), ``robust_z`` 0.633. Event
recall on the unseen types at the threshold flagging 1 % of normal validation rows: ``tail``
0.806, ``robust_z`` 0.097. Per type (``tail`` / ``robust_z`` AUC): stuck_metric 0.97 / 0.53 (a
15-minute standard deviation of exactly 0 lies beyond every normal row, yet only 1.5 robust
units below the median), packet_loss 0.92 / 0.69, memory_leak 0.91 / 0.67, connection_leak
0.97 / 0.93, seasonal_break 0.54 / 0.56 (the day's peak missing: each value is plausible for
some hour). In the stacked ensemble (same split), ``robust_z`` beside ``tail`` moved the
unseen-type AUC and recalls by at most 0.002 and point precision by 0.004 (0.387 with it, 0.392
without), so it left the defaults. ``top_k`` 3 is ``robust_z``'s, kept, not chosen on these figures.

**Why ``tail`` ignores drifting features.** Over weeks some levels leave the range the training
part saw without anything being wrong (a disk filling slowly, traffic growing). On the 28-day
version of that fleet (``--days 28``: 356,596 normal training rows), 1.4-2.0 % of the normal
validation rows had ``disk_util`` levels beyond their training range: every one of those rows
scores ``log(n)`` on them, normal rows fill the top of the score range, and the threshold that
flags 1 % of normal validation rows sits at that ceiling. Fitted alone, as above: event recall
on the unseen types at that threshold 0.444 with every feature, 0.778 with the 12 features
past 0.1 % ignored (stuck_metric 0.00 -> 1.00, packet_loss 0.33 -> 0.83; AUC 0.821 -> 0.825;
0.778 too at a 1 % limit, which ignores 10). The limit is ``max(0.001, 20 / n)``: ten times the
2 / n of new rows a stationary feature puts beyond the range of n rows.

**Split.** With ``validation=(X_val, y_val)`` (as ``fit_and_evaluate`` and the training DAG call
it: the validation span, past the embargo) the members learn from every row of ``X``, and the
combiner, the detectors' score maps and ``tail``'s drift check from those held-out rows.
Without it, ``fit`` orders the rows by ``time`` and cuts them once, at a timestamp boundary (rows
sharing a timestamp, e.g. every host at one instant, never straddle it): members learn from the
first ``1 - validation_fraction``, the combiner from the rest. Measured on the 14-day version
of ``make bench-train``'s fleet (default members, same seed; test span): the inner cut (members on the first 80 %
of the train span, combiner on its last 20 %, no embargo between them; 2026-12-05) gave point
precision 0.665 at recall 0.904, PR-AUC 0.931, event F1 0.948, best precision at recall 0.9 on
the test span 0.700; the validation span (members on the whole train span, 25 % more rows;
2026-12-06) 0.704 at 0.908, 0.934, 0.948, 0.747; on the 28-day fleet 0.839 at 0.899, 0.943,
0.962, 0.834 before and 0.892 at 0.895, 0.948, 0.962, 0.865 after. The thresholds are then tuned on the rows the
combiner learned from: a logistic regression of 5 inputs on 80,000-160,000 rows, too small to overfit
them measurably. Members are **not** refit on the whole afterwards: the combiner learned how far
to trust each member from that member's scores on rows it never saw, and a member refit on
those rows is a different model whose scores the combiner never saw. Refitting also bought
nothing measurable (below) for twice the fit time.

**Member scores** (``member_scores``) are in [0, 1] and increase with anomaly: the classifiers'
probabilities, and for unsupervised members the mid-rank quantile of the raw score among the
validation part's negatives (0.999 = more anomalous than 99.9 % of normal held-out rows;
bounded by 0.5/m and 1 - 0.5/m for m negatives, so logits stay finite).

**Combination.** ``combiner="stacking"`` (default): logistic regression (C=1) on the logits of
the member scores, fitted on the validation part. Its output is a probability calibrated to the
validation part's base rate, so ``predict``'s 0.5 threshold means P(anomaly) >= 0.5. Coefficients
are unconstrained: a detector may get a negative weight when it mostly repeats what the
classifiers already say (non-negative weights were tried: below). ``combiner="average"``:
weighted mean of the member scores, weights proportional to validation skill (average precision
minus the positive rate, floored at 0; weights proportional to plain AP gave the same numbers to
3 decimals): a ranking score, not a probability.

Measured, to choose (before ``tail`` existed: the default five had ``robust_z`` in its place;
``n_estimators=300``, seeds 0-2, mean and worst seed): synthetic fleets of
60,000 5-minute rows x 40 correlated, seasonal features (5 latent factors), 3 % positives in
6-row events of 4 fault types (spike, level shift, flat-line, noise burst), 1 % NaN; time-ordered
60 / 20 / 20 into member training / combiner validation / test. In the test part 45 % of the
events are of 3 types never seen before: a surge on other features, a sag (the opposite of the
seen shift) and a correlation break (marginals as normal). AP = average precision on the test
part without the unseen types; recall at the threshold that flags 1 % of normal test rows.

===========================================  =============  ============  ===============
members / combiner                           AP seen        AUC unseen    recall unseen
===========================================  =============  ============  ===============
default 5, stacking (chosen)                 0.843 (0.78)   0.743 (0.72)  0.337 (0.33)
default 5, stacking, weights >= 0            0.838 (0.77)   0.773 (0.75)  0.351 (0.33)
default 5, average                           0.833 (0.76)   0.812 (0.79)  0.344 (0.32)
default 5, stacking, members refit on all    0.841 (0.78)   0.760 (0.73)  0.335 (0.31)
default 5 + lof, stacking                    0.886 (0.84)   0.997 (1.00)  0.945 (0.92)
default 5 + lof, stacking, weights >= 0      0.863 (0.80)   0.985 (0.98)  0.781 (0.75)
default 5 + lof, average                     0.843 (0.78)   0.911 (0.89)  0.349 (0.33)
3 boosted only, stacking                     0.827 (0.76)   0.706 (0.69)  0.337 (0.32)
xgboost only                                 0.803 (0.74)   0.703 (0.67)  0.309 (0.26)
===========================================  =============  ============  ===============

Validation AP of the members: boosted 0.83-0.85 each, isolation_forest 0.30-0.46, robust_z
0.33-0.44, lof 0.79-0.85. Stacking is best or level on seen faults in every configuration; with
the default members the average ranks unseen faults better (AUC) but is level at the
1 %-of-normal operating point, and with ``lof`` stacking is far ahead on everything. Isolation
Forest and robust z catch marginal extremes (surge: recall 0.88 in the stacked ensemble) but not
the sag (0.07) or the correlation break (0.15); ``lof`` catches them (0.97, 0.87) because it
sees the joint shape of normal. Its cost: scoring at ~80k rows/s (below), so it stays opt-in; on
real fleets, measure it.

Fit: 10-12 s for all six members on 48,000 x 40 rows (``n_jobs=2``, 2 cores). Scoring
1,000,000 x 40 rows on 2 cores with the scoring path before the changes below, raw rows/s per
member: xgboost ~450k, robust_z ~1.9M, isolation_forest ~240k, lightgbm ~190k, hist_gb ~125k,
lof ~80k; ``predict_proba`` with the 5 default members ~45k rows/s, with ``lof`` ~30k.
``explain`` ~1k rows/s. Save or verified load: < 0.1 s (4.4 MB).

**Artifacts.** ``save`` writes XGBoost as UBJSON, LightGBM as its text model, the scikit-learn
members and the combiner with ``joblib`` (there is no native format; they are unpickled only
after their SHA-256 matched), and ``manifest.json`` (parameters, feature names, members, the
small fitted arrays as exact JSON floats, file -> SHA-256, library versions). ``load`` hashes
every file, and checks it against the manifest and the registry's ``expected_sha256``, before
deserialising any; it deserialises the very bytes it hashed.

**Scoring** (``predict_proba``, ``decision_function``, ``member_scores``). The frame becomes one
row-ordered array, float32 when the features are float32 (as the feature store hands them out;
every member scores float32 exactly as its float64 widening), else float64. Each member runs
single-threaded on its native path: XGBoost ``inplace_predict`` on a private 1-thread copy of
the booster per thread; the LightGBM ``Booster``; hist_gb and the Isolation Forest, for up to 256
rows, walked by numpy through all their trees at once (``_Forest``), beyond that one library call
per tree on a column-ordered copy; robust z in 512-row chunks; the combiner's arithmetic without
its per-call validation. With ``n_jobs=2`` a batch of 16 to 2,047 rows spreads its members over
the two threads, a larger one its rows: no OpenMP inside a member, whose barriers stall whenever
another process holds a core. Every path is pinned to the libraries' own calls, bit for bit
(``tests/training/test_ensemble_scoring.py``); the held-out scores of the bench champion are
unchanged (max |diff| 0). ``explain`` (XGBoost SHAP contributions) is slow and meant for flagged
rows only.

Measured on the champion of ``make bench-score`` (``make bench-train``'s fleet: 300 trees, 393
float32 features, held-out rows; 2 cores, 1-minute load ~2 from other processes), the old and
the new path timed alternately in one process, median per call: 1 row 23.6 -> 0.71 ms, 100 rows 20.1 -> 2.9 ms, 1,000 rows
49.6 -> 22.1 ms, 10,000 rows 355 -> 229 ms (31k -> 48k rows/s; under heavier load the old path
swung to 1-2 s, the OpenMP stalls). What each step bought, per call:

===============================================  ==========================  =================
step                                             before                      after
===============================================  ==========================  =================
hist_gb: no ``threadpool_limits`` context        ~4 ms (every call)          0 (``n_threads``)
hist_gb, 1 row: numpy walk, not 300 calls        3.4-4 ms                    0.07-0.13 ms
isolation forest, 1 row: numpy walk, no joblib   5-9 ms                      0.06-0.07 ms
isolation forest, 10k: column order, 1 thread    155 ms (row order)          26 ms
xgboost, 1 row: 1 thread, not 2 (OpenMP)         0.4 ms idle, 20 ms loaded   0.25-0.39 ms
frame -> array, 1 row: one ``to_numpy``          0.55-1.2 ms                 0.04 ms
robust z, 10k, 1 thread: 512-row chunks          52-68 ms                    38-39 ms
combiner: its arithmetic, no validation          0.16-0.23 ms                0.01 ms
members over 2 threads, 100 / 500 rows           6.6 / 24-33 ms              5.1 / 18 ms
===============================================  ==========================  =================

Where the time goes now, 10,000 rows on 2 threads (1-minute load 1.6): hist_gb 63 ms, lightgbm
50, xgboost 26, robust z 23, isolation forest 19, frame -> array 4, combiner 0.2; the ensemble
185 ms, 56k rows/s, against 339k for its XGBoost member alone; one row 0.70 ms (XGBoost alone
0.29). The trees of the three boosted members are the floor: 100k rows/s on 2 cores needs fewer
members (from the parts: ~80k without hist_gb, ~135k without hist_gb and lightgbm; their
accuracy is for ``make bench-train`` to judge). Compiled trees did not help batches: treelite
4.8 / tl2cgen 1.0 (gcc) took 60, 131 and 167 ms per 10,000 rows on one thread for xgboost,
lightgbm and hist_gb against the libraries' 50, 91 and 139 (and XGBoost's compiled probabilities
differ by up to 2e-7). treelite's interpreter (GTIL) is exact (max |diff| 0 on 10,000 rows for
all three) and takes 0.06 ms for one row against XGBoost's 0.25-0.39 ms: a way to ~0.5 ms per
row, at the cost of a new dependency.

>>> ens = AnomalyEnsemble(n_estimators=50, random_state=0).fit(X, y, time=ts)  # doctest: +SKIP
>>> flagged = X[ens.predict(X) == 1]  # doctest: +SKIP
>>> ens.explain(flagged, top=3)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import platform
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb
from joblib import effective_n_jobs
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, RobustScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from anomaly.training.members import DEFAULT_MEMBERS, MEMBERS, SUPERVISED, UNSUPERVISED

__all__ = [
    "MEMBERS",
    "SUPERVISED",
    "UNSUPERVISED",
    "AnomalyEnsemble",
    "ArtifactError",
    "RobustZDetector",
    "TailProbabilityDetector",
    "WeightedAverageCombiner",
    "load_member",
    "save_member",
]

COMBINERS = ("stacking", "average")

MIN_ROWS = 100
MIN_NEGATIVES = 10  # per part: the detectors learn "normal", the score maps need its quantiles

MANIFEST = "manifest.json"
COMBINER_FILE = "combiner.joblib"
MEMBER_FILES = {
    "xgboost": "xgboost.ubj",
    "lightgbm": "lightgbm.txt",
    "hist_gb": "hist_gb.joblib",
    "isolation_forest": "isolation_forest.joblib",
    "robust_z": "robust_z.joblib",
    "tail": "tail.joblib",
    "lof": "lof.joblib",
}
FORMAT = "anomaly-ensemble/1"

_IF_TREES = 100  # path lengths settle well before 100 trees (Liu et al. 2008); scoring cost is linear
_LOF_MAX_ROWS = 5_000  # LOF scoring is a k-NN query per row: bound the reference set
_QUANTILES = 1_001
_PROB_EPS = 1e-6
_Z_CAP = 1e6
_CHUNK = 65_536
_Z_ROWS = 512  # robust z works on this many rows at a time: its temporaries stay in cache
_TAIL_BROADCAST_ROWS = 64  # up to here the tail detector compares every knot at once
_TAIL_ROWS = 2_048  # beyond, it scores this many rows at a time
_TAIL_DRIFT_LIMIT = 0.001  # share of later normal rows beyond a feature's range that marks it as drifting
_FOREST_MAX_ROWS = 256  # up to here hist_gb and isolation_forest are walked by numpy (_Forest)
_MEMBER_SPLIT_MIN_ROWS = 16  # from here on the members of a batch run on n_jobs threads
_PARALLEL_MIN_ROWS = 2_048  # from here on the rows of a batch are split over n_jobs threads
_SLOWEST_FIRST = ("lof", "tail", "xgboost", "hist_gb", "lightgbm", "isolation_forest", "robust_z")
_PIECE = 8_192  # rows one thread scores at a time: bounded temporaries on large batches


class ArtifactError(ValueError):
    """A saved ensemble is incomplete or a file's SHA-256 differs from the recorded one."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities clipped to [1e-6, 1 - 1e-6]: the stacking combiner's input."""
    p = np.clip(np.asarray(p, dtype=np.float64), _PROB_EPS, 1.0 - _PROB_EPS)
    return np.log(p) - np.log1p(-p)


class _TopKDetector(BaseEstimator):
    """What :class:`RobustZDetector` and :class:`TailProbabilityDetector` share: missing values
    are allowed (no evidence) and a row's score averages its ``top_k`` largest feature scores."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _check_top_k(self) -> None:
        if not (isinstance(self.top_k, int | np.integer) and self.top_k >= 1):
            raise ValueError(f"top_k must be a positive integer, got {self.top_k!r}")


class RobustZDetector(_TopKDetector):
    """Distance from normal in robust z units: mean of a row's ``top_k`` largest ``|x - median| / scale``.

    ``scale`` is 1.4826 x MAD (the normal-consistent MAD); a feature whose MAD is 0 falls back to
    1.2533 x the mean absolute deviation, then to 1e-9 x max(1, |median|); a feature with no value
    at all in fit gets an infinite scale (never evidence). Missing values contribute 0 (no
    evidence), so a row's score never is NaN; |z| is capped at 1e6.

    Fit it on normal rows. As scikit-learn's detectors, ``score_samples`` returns the *opposite*
    of the anomaly score (lower = more abnormal).

    >>> det = RobustZDetector(top_k=2).fit(np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]))
    >>> float(-det.score_samples(np.array([[1.0, 2.0]]))[0])
    0.0
    """

    def __init__(self, top_k: int = 3):
        self.top_k = top_k

    def fit(self, X: Any, y: Any = None) -> RobustZDetector:
        self._check_top_k()
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
            center = np.nanmedian(X, axis=0)
            center = np.where(np.isnan(center), 0.0, center)
            dev = np.abs(X - center)
            mad = 1.4826 * np.nanmedian(dev, axis=0)
            mean_ad = 1.2533 * np.nanmean(dev, axis=0)
        scale = np.where(mad > 0, mad, mean_ad)
        scale = np.where(np.isnan(scale), np.inf, scale)  # no value seen: |z| = 0
        self.center_ = center
        self.scale_ = np.maximum(scale, 1e-9 * np.maximum(1.0, np.abs(center)))
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Opposite of the anomaly score: ``-mean(top_k |z|)`` per row (lower = more abnormal)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        return -_robust_z(X, self.center_, self.scale_, self.top_k)


class TailProbabilityDetector(_TopKDetector):
    """How far out in normal's own tails a row lies: mean of its ``top_k`` largest per-feature
    scores ``log(0.5 / p)``, ``p`` the empirical one-sided tail probability of the value among the
    normal rows it was fitted on (``P(X <= x)`` or ``P(X >= x)``, whichever is smaller).

    A value at the median scores ~0; one beyond everything normal ever showed (``p`` floored at
    ``0.5 / n`` for ``n`` fitted values) scores ``log(n)``, however close it is in robust z units.
    That is what :class:`RobustZDetector` misses: a stuck metric's 15-minute standard deviation of
    exactly 0 is only -1.5 robust z from normal's median, yet below every normal row. The idea is
    ECOD's (Li et al., 2022, empirical-CDF outlier detection), aggregated by ``top_k`` instead of a
    sum over all features, so one or a few broken features are not drowned by hundreds of
    ordinary ones.

    Each feature keeps ``2 x knots`` order statistics, ranks spaced geometrically from each end
    (1, ..., n/2 and n, ..., n/2), and precomputed scores for a value equal to, or strictly
    between, them. ``p`` is the bound those ranks give (e.g. ``x >= v`` of rank ``r`` gives
    ``P(X <= x) >= r / n``): never more extreme than the data, at most one rank step (a factor
    ``(n/2) ** (1 / (knots - 1))``, 1.27 for 177k rows and 48 knots) less. Ties are exact: a value
    equal to a knot gets the probability of all its copies. Missing values score 0 (no evidence);
    a feature with no value in fit always scores 0.

    Fit it on normal rows. As scikit-learn's detectors, ``score_samples`` returns the *opposite*
    of the anomaly score (lower = more abnormal).

    >>> det = TailProbabilityDetector(top_k=1).fit(np.arange(100.0).reshape(-1, 1))
    >>> [round(float(-s), 2) for s in det.score_samples(np.array([[49.5], [0.0], [-1.0]]))]
    [0.0, 3.91, 4.61]
    """

    def __init__(self, top_k: int = 3, knots: int = 48):
        self.top_k = top_k
        self.knots = knots

    def fit(self, X: Any, y: Any = None) -> TailProbabilityDetector:
        self._check_top_k()
        if not (isinstance(self.knots, int | np.integer) and self.knots >= 2):
            raise ValueError(f"knots must be an integer >= 2, got {self.knots!r}")
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        width = 2 * int(self.knots)
        n_features = X.shape[1]
        self.values_ = np.full((n_features, width), np.inf)  # padding: +inf, above any finite value
        self.equal_ = np.zeros((n_features, width))  # score of x == values_[f, j]
        self.between_ = np.zeros((n_features, width + 1))  # score of values_[f, j-1] < x < values_[f, j]
        self.n_ = np.zeros(n_features, dtype=np.int64)
        for f in range(n_features):
            col = np.sort(X[:, f][~np.isnan(X[:, f])])
            n = len(col)
            self.n_[f] = n
            if n == 0:
                continue
            low = np.geomspace(1, max(1.0, n / 2), int(self.knots))
            ranks = np.unique(np.r_[np.round(low), n + 1 - np.round(low)].astype(np.int64).clip(1, n))
            values = col[ranks - 1]
            g = len(values)
            # Over ties, P(X <= v) uses the last copy's rank and P(X >= v) the first copy's.
            last = np.searchsorted(values, values, side="right") - 1
            first = np.searchsorted(values, values, side="left")
            below = ranks / n  # P(X <= values[j]) >= ranks[j] / n
            above = (n - ranks + 1) / n  # P(X >= values[j]) >= (n - ranks[j] + 1) / n
            floor = 0.5 / n
            self.values_[f, :g] = values
            self.equal_[f, :g] = _tail_score(np.minimum(below[last], above[first]), floor)
            self.equal_[f, g:] = _tail_score(np.zeros(width - g), floor)
            between_low = np.r_[0.0, below]  # x > values[j-1]: P(X <= x) >= below[j-1]
            between_high = np.r_[above, 0.0]  # x < values[j]: P(X >= x) >= above[j]
            self.between_[f, : g + 1] = _tail_score(np.minimum(between_low, between_high), floor)
            self.between_[f, g + 1 :] = _tail_score(np.zeros(width - g), floor)
        return self

    def ignoring_drift(self, X_later: Any, limit: float = _TAIL_DRIFT_LIMIT) -> TailProbabilityDetector:
        """A copy that ignores (scores 0 on) every feature for which more than ``limit`` (and more
        than ``20 / n``) of the normal rows ``X_later``, taken *after* the n fitted ones, lie
        beyond the fitted range.

        A stationary feature puts about 2 / n of new normal rows outside the range of n earlier
        ones; a level that drifts (disk usage growing for weeks, traffic growing) puts a steady
        share there, and every such row would score ``log(n)`` on it: the top scores of normal
        rows saturate and hide a real fault beyond the range. Ignored: ``drift_ignored_``."""
        check_is_fitted(self)
        X_later = validate_data(self, X_later, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        low = np.where(self.n_ > 0, self.values_[:, 0], np.inf)
        high = np.where(
            self.n_ > 0, np.max(np.where(np.isinf(self.values_), -np.inf, self.values_), axis=1), -np.inf
        )
        with np.errstate(invalid="ignore"):
            beyond = ((X_later < low) | (X_later > high)).mean(axis=0) if len(X_later) else np.zeros(len(low))
        out = copy.deepcopy(self)
        # ten times the 2 / n expected of a stationary feature, for small n
        out.drift_ignored_ = beyond > np.maximum(limit, 20.0 / np.maximum(self.n_, 1))
        out.equal_[out.drift_ignored_] = 0.0
        out.between_[out.drift_ignored_] = 0.0
        return out

    def score_samples(self, X: Any) -> np.ndarray:
        """Opposite of the anomaly score: ``-mean(top_k log(0.5 / p))`` per row (lower = more abnormal)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)
        return -_tail(X, self)


class WeightedAverageCombiner(ClassifierMixin, BaseEstimator):
    """Weighted mean of member scores in [0, 1]; weights proportional to validation skill.

    Skill is a member's average precision minus the positive rate (what a random score gets),
    floored at 0; equal weights if no member has any. ``predict_proba`` is a ranking score.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, S: Any, y: Any) -> WeightedAverageCombiner:
        S, y = validate_data(self, S, y, dtype=np.float64)
        self.classes_, y = _encode_binary(y)
        ap = np.array([average_precision_score(y, S[:, j]) for j in range(S.shape[1])])
        skill = np.clip(ap - float(np.mean(y)), 0.0, None)
        if skill.sum() <= 0:
            skill = np.ones_like(skill)
        self.weights_ = skill / skill.sum()
        return self

    def predict_proba(self, S: Any) -> np.ndarray:
        check_is_fitted(self)
        S = validate_data(self, S, dtype=np.float64, reset=False)
        s = np.clip(S @ self.weights_, 0.0, 1.0)
        return np.column_stack([1.0 - s, s])

    def predict(self, S: Any) -> np.ndarray:
        score = self.predict_proba(S)[:, 1]  # checks fitted first
        return self.classes_[(score >= 0.5).astype(int)]


class AnomalyEnsemble(ClassifierMixin, BaseEstimator):
    """Boosted classifiers plus unsupervised detectors, combined on held-out later rows.

    Parameters
    ----------
    members : names from ``MEMBERS``; default all but ``lof``.
    combiner : ``"stacking"`` (logistic regression on member logits) or ``"average"``.
    validation_fraction : the latest share of rows (by ``time``) that fits the combiner, when
        ``fit`` is not given ``validation=`` rows.
    n_estimators, max_depth, learning_rate : shared by the three boosted members.
    scale_pos_weight : positive-class weight; None = negatives / positives of the training part.
    n_jobs : threads for every member (-1 = all cores).
    random_state : seeds every member (each draws its own seed from it).

    Fitted attributes: ``members_`` (name -> fitted member; LightGBM as a ``lightgbm.Booster``),
    ``combiner_``, ``feature_names_in_``, ``n_features_in_``, ``classes_``, ``member_weights_``
    (average) or ``stacking_coef_`` (stacking), ``validation_scores_`` (member -> validation
    average precision), ``imputation_medians_``, ``empty_features_`` (features with no value in
    the training part's negatives: never evidence for the detectors), ``score_maps_``
    (unsupervised member -> (raw-score quantiles, levels)), ``scale_pos_weight_``, ``n_train_``,
    ``n_validation_``.

    Not run: most of ``sklearn.utils.estimator_checks``. Those checks fit on small unordered
    numpy arrays (often < 100 rows, sometimes one class per half), while this estimator takes a
    DataFrame (features are addressed by name), needs >= 100 rows and positives in both time
    parts, and by design does not give the same model for a permuted row order
    (``check_methods_sample_order_invariance`` of *fit*). The parameter, cloning, tag, repr,
    unfitted and multiclass-rejection checks apply and are run in the tests.
    """

    def __init__(
        self,
        members: Sequence[str] = DEFAULT_MEMBERS,
        combiner: str = "stacking",
        validation_fraction: float = 0.2,
        n_estimators: int = 300,
        max_depth: int = 6,
        learning_rate: float = 0.05,
        scale_pos_weight: float | None = None,
        n_jobs: int | None = 2,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.members = members
        self.combiner = combiner
        self.validation_fraction = validation_fraction
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.scale_pos_weight = scale_pos_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.classifier_tags.multi_class = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "combiner_")  # set last: a fit that failed half-way is not fitted

    # ------------------------------------------------------------------ fitting

    def _check_params(self) -> tuple[str, ...]:
        members = (self.members,) if isinstance(self.members, str) else tuple(self.members)
        unknown = [m for m in members if m not in MEMBERS]
        if not members or unknown or len(set(members)) != len(members):
            raise ValueError(
                f"members must be distinct names from {MEMBERS}, got {self.members!r}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        if self.combiner not in COMBINERS:
            raise ValueError(f"combiner must be one of {COMBINERS}, got {self.combiner!r}")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        for name in ("n_estimators", "max_depth"):
            value = getattr(self, name)
            if not (isinstance(value, int | np.integer) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not float(self.learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.scale_pos_weight is not None and not float(self.scale_pos_weight) > 0:
            raise ValueError(f"scale_pos_weight must be > 0 or None, got {self.scale_pos_weight!r}")
        return members

    def _threads(self) -> int:
        return max(1, int(effective_n_jobs(self.n_jobs)))

    def _begin(
        self, X: pd.DataFrame, y: Any, time: Any, validation: tuple[Any, Any] | None, all_rows: bool = False
    ) -> tuple[tuple[str, ...], dict[str, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Check the input, order and cut it in time (unless ``validation`` holds the combiner's
        rows, or ``all_rows``: then every row of X trains the members), and set the state every
        member needs (features, imputation medians, class weight, seeds). Returns members and
        the two parts (no validation part for ``all_rows``)."""
        members = self._check_params()
        y = _binary_labels(y)
        names = _feature_names(X)
        A = _to_matrix(X, names)
        n = A.shape[0]
        if len(y) != n:
            raise ValueError(f"X has {n} rows but y has {len(y)}")
        if n < MIN_ROWS:
            raise ValueError(f"need at least {MIN_ROWS} rows to fit, got {n}")
        if validation is not None or all_rows:
            if time is not None:  # checked, not used: the caller ordered the two parts in time
                _time_split(time, n, float(self.validation_fraction))
            A_tr, y_tr, cut = A, y, n
            _check_part("training", y_tr, n, n)
            A_va, y_va = A[:0], y[:0]
            if validation is not None:
                X_va, y_va = validation
                A_va = _to_matrix(X_va, names)
                try:
                    y_va = _binary_labels(y_va)
                except ValueError as exc:
                    raise ValueError(f"validation labels: {exc}") from None
                if len(y_va) != len(A_va):
                    raise ValueError(f"the validation X has {len(A_va)} rows but its y has {len(y_va)}")
                _check_part("validation", y_va, len(y_va), len(y_va))
        else:
            order, cut = _time_split(time, n, float(self.validation_fraction))
            A, y = A[order], y[order]
            A_tr, y_tr, A_va, y_va = A[:cut], y[:cut], A[cut:], y[cut:]
            _check_part("training", y_tr, cut, n)
            _check_part("validation", y_va, n - cut, n)

        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)  # a refit starts from nothing (no stale stacking_coef_ etc.)
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        self.classes_ = np.array([0, 1])
        self.n_train_, self.n_validation_ = int(cut), len(y_va)
        n_pos = int(y_tr.sum())
        spw = float(self.scale_pos_weight) if self.scale_pos_weight is not None else (cut - n_pos) / n_pos
        self.scale_pos_weight_ = spw

        normal = A_tr[y_tr == 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns impute as 0
            medians = np.nanmedian(normal, axis=0)
        self.imputation_medians_ = np.where(np.isnan(medians), 0.0, medians)
        self.empty_features_ = np.asarray([names[j] for j in np.flatnonzero(np.isnan(medians))], dtype=object)
        rng = check_random_state(self.random_state)
        seeds = dict(zip(MEMBERS, rng.randint(0, 2**31 - 1, size=len(MEMBERS)).tolist(), strict=True))
        return members, seeds, A_tr, y_tr, A_va, y_va

    def fit_member(
        self, name: str, X: pd.DataFrame, y: Any, *, time: Any = None, all_rows: bool = False
    ) -> Any:
        """Fit the one member ``name`` exactly as :meth:`fit` would (same rows, weights and seed)
        and return it, leaving this estimator unfitted: members can then be fitted in separate
        processes (the training DAG maps this over the members) and handed to
        ``fit(..., prefit={name: member})``. ``all_rows=True`` when that fit gets ``validation=``
        (the member then learns from every row of X); the same rows as that fit only when
        ``all_rows`` matches it, which ``fit`` cannot check. Needs an integer ``random_state``
        to be reproducible."""
        work = clone(self)
        members, seeds, A_tr, y_tr, _, _ = work._begin(X, y, time, None, all_rows=all_rows)
        if name not in members:
            raise ValueError(f"{name!r} is not one of this ensemble's members {list(members)}")
        return work._fit_member(name, A_tr, y_tr, work.scale_pos_weight_, seeds[name], work._threads())

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        *,
        time: Any = None,
        prefit: Mapping[str, Any] | None = None,
        validation: tuple[pd.DataFrame, Any] | None = None,
    ) -> AnomalyEnsemble:
        """Fit the members and the combiner: on ``validation`` when given, else on the latest
        ``validation_fraction`` of the rows (the members on the rest).

        ``X``: DataFrame of numeric features (NaN allowed; +-inf is treated as missing);
        ``y``: 0/1 labels; ``time``: one timestamp (or number) per row giving the time order,
        else the row order is the time order. ``validation``: ``(X_val, y_val)``, rows held out
        in time for the combiner, the detectors' score maps and ``tail``'s drift check; with it
        the members learn from every row of ``X`` (in the order given) and
        ``validation_fraction`` is not used. That those rows are later than ``X``, past an
        embargo, is the caller's to ensure (``fit_and_evaluate`` passes the validation span). ``prefit``: members already fitted by
        :meth:`fit_member` on the same ``X``, ``y`` and ``time`` (not refitted).
        """
        members, seeds, A_tr, y_tr, A_va, y_va = self._begin(X, y, time, validation)
        prefit = dict(prefit or {})
        unknown = sorted(set(prefit) - set(members))
        if unknown:
            raise ValueError(f"prefit members {unknown} are not among the members {list(members)}")
        threads = self._threads()
        fitted: dict[str, Any] = {}
        for name in members:
            if name in prefit:
                _check_member_width(name, prefit[name], self.n_features_in_)
                fitted[name] = prefit[name]
            else:
                fitted[name] = self._fit_member(
                    name, A_tr, y_tr, self.scale_pos_weight_, seeds[name], threads
                )
        if "tail" in fitted:  # levels that drift (a disk filling for weeks) are not anomalies
            fitted["tail"] = fitted["tail"].ignoring_drift(A_va[y_va == 0])
        self.members_ = fitted

        raw = {name: self._raw_score(name, A_va) for name in members}
        self.score_maps_ = {
            name: _quantile_map(raw[name][y_va == 0]) for name in members if name in UNSUPERVISED
        }
        S_va = np.column_stack([self._map(name, raw[name]) for name in members])
        self.validation_scores_ = {
            name: float(average_precision_score(y_va, S_va[:, j])) for j, name in enumerate(members)
        }
        if self.combiner == "stacking":
            comb = make_pipeline(FunctionTransformer(_logit), LogisticRegression(C=1.0, max_iter=1000))
            comb.fit(S_va, y_va)
            self.stacking_coef_ = dict(zip(members, comb[-1].coef_[0].tolist(), strict=True))
        else:
            comb = WeightedAverageCombiner().fit(S_va, y_va)
            self.member_weights_ = dict(zip(members, comb.weights_.tolist(), strict=True))
        self.combiner_ = comb
        return self

    def _fit_member(self, name: str, A: np.ndarray, y: np.ndarray, spw: float, seed: int, threads: int):
        if name == "xgboost":
            clf = xgb.XGBClassifier(
                n_estimators=self.n_estimators,
                max_depth=self.max_depth,
                learning_rate=self.learning_rate,
                scale_pos_weight=spw,
                subsample=0.8,
                colsample_bytree=0.8,
                tree_method="hist",
                n_jobs=threads,
                random_state=seed,
            )
            return clf.fit(A, y)
        if name == "lightgbm":
            clf = lgb.LGBMClassifier(
                n_estimators=self.n_estimators,
                max_depth=self.max_depth,
                num_leaves=min(2**self.max_depth, 131_072),
                learning_rate=self.learning_rate,
                scale_pos_weight=spw,
                subsample=0.8,
                subsample_freq=1,
                colsample_bytree=0.8,
                deterministic=True,
                force_row_wise=True,
                n_jobs=threads,
                random_state=seed,
                verbose=-1,
            )
            clf.fit(A, y)
            # The standalone booster of the text model: what ``load`` rebuilds, bit for bit.
            return lgb.Booster(model_str=clf.booster_.model_to_string())
        if name == "hist_gb":
            clf = HistGradientBoostingClassifier(
                max_iter=self.n_estimators,
                max_depth=self.max_depth,
                max_leaf_nodes=None,
                learning_rate=self.learning_rate,
                early_stopping=False,
                random_state=seed,
            )
            empty = np.isnan(A).all(axis=0)
            if empty.any():  # scikit-learn 1.9's binning fails on an all-NaN column; it is never split on
                A = np.where(empty, 0.0, A)
            with threadpool_limits(limits=threads, user_api="openmp"):
                return clf.fit(A, y, sample_weight=np.where(y == 1, spw, 1.0))
        normal = A[y == 0]
        if name == "robust_z":
            return RobustZDetector(top_k=3).fit(normal)
        if name == "tail":
            return TailProbabilityDetector(top_k=3).fit(normal)
        imputed = self._impute(normal)
        if name == "isolation_forest":
            return IsolationForest(n_estimators=_IF_TREES, random_state=seed, n_jobs=threads).fit(imputed)
        if len(imputed) > _LOF_MAX_ROWS:  # lof
            pick = np.random.RandomState(seed).choice(len(imputed), _LOF_MAX_ROWS, replace=False)
            imputed = imputed[np.sort(pick)]
        lof = LocalOutlierFactor(n_neighbors=20, novelty=True, n_jobs=threads)
        return make_pipeline(RobustScaler(), lof).fit(imputed)

    # ------------------------------------------------------------------ scoring

    def _impute(self, A: np.ndarray) -> np.ndarray:
        out = A.copy()
        missing = np.isnan(out)
        # A feature never seen in normal rows (say a seasonal lag longer than the training span)
        # is always imputed: its first values must not make every row look unusual.
        missing[:, np.isin(self.feature_names_in_, self.empty_features_)] = True
        np.copyto(out, self.imputation_medians_, where=missing)
        return out

    def _scorer(self) -> _Scorer:
        """The scoring state prepared from the fitted members: cached beside the estimator (not
        an attribute: fit sets only fitted attributes, and copies and pickles stay lean), rebuilt
        after a refit or a change of ``n_jobs``."""
        threads = self._threads()
        scorer = _SCORERS.get(self)
        if scorer is None or not scorer.matches(self, threads):
            scorer = _SCORERS[self] = _Scorer(self, threads)
        return scorer

    def _raw_scores(self, A: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """(rows, names): each member's native score, probability (classifiers) or anomaly score
        (higher = worse). Every member runs single-threaded; with ``n_jobs`` > 1 a batch of
        ``_MEMBER_SPLIT_MIN_ROWS`` or more rows spreads its members over the threads (slowest
        first, each thread taking the next), one of ``_PARALLEL_MIN_ROWS`` or more its rows, in
        pieces of at most ``_PIECE`` rows. Rows and members are independent: the scores do not
        depend on the split."""
        scorer = self._scorer()
        A = np.ascontiguousarray(A)
        n = len(A)
        out = np.empty((n, len(names)), dtype=np.float64)
        if scorer.threads > 1 and len(names) > 1 and _MEMBER_SPLIT_MIN_ROWS <= n < _PARALLEL_MIN_ROWS:
            rank = {name: i for i, name in enumerate(_SLOWEST_FIRST)}
            todo = iter(sorted(range(len(names)), key=lambda j: rank.get(names[j], len(rank))))
            lock = threading.Lock()

            def by_member(w: int) -> None:
                while True:
                    with lock:
                        j = next(todo, None)
                    if j is None:
                        return
                    scorer.score(self, A, [names[j]], out[:, j : j + 1], w)

            _run_threads(by_member, min(scorer.threads, len(names)))
            return out
        workers = scorer.threads if n >= _PARALLEL_MIN_ROWS else 1
        pieces = math.ceil(math.ceil(n / _PIECE) / workers) * workers  # a multiple of workers
        edges = [n * i // pieces for i in range(pieces + 1)]

        def work(w: int) -> None:
            for i in range(w, pieces, workers):
                lo, hi = edges[i], edges[i + 1]
                scorer.score(self, A[lo:hi], names, out[lo:hi], w)

        _run_threads(work, workers)
        return out

    def _raw_score(self, name: str, A: np.ndarray) -> np.ndarray:
        """One member's native score: probability (classifiers) or anomaly score (higher = worse)."""
        return self._raw_scores(A, [name])[:, 0]

    def _map(self, name: str, raw: np.ndarray) -> np.ndarray:
        if name not in UNSUPERVISED:
            return raw
        quantiles, levels = self.score_maps_[name]
        return np.interp(raw, quantiles, levels)

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self)
        scorer = self._scorer()
        return _feature_array(X, scorer.names, scorer.columns)

    def _scores(self, A: np.ndarray) -> np.ndarray:
        names = list(self.members_)
        if len(A) == 0:  # an empty interval: some members refuse zero rows
            return np.empty((0, len(names)))
        S = self._raw_scores(A, names)
        for j, name in enumerate(names):
            if name in UNSUPERVISED:
                S[:, j] = self._map(name, S[:, j])
        return S

    def _combine(self, S: np.ndarray) -> np.ndarray:
        """The combiner's class-1 probability of member scores ``S``: the fitted combiner's own
        arithmetic without its per-call validation (the same operations, so the same bits)."""
        comb = self.combiner_
        if isinstance(comb, Pipeline) and len(comb.steps) == 2:
            first, last = comb.steps[0][1], comb.steps[1][1]
            if (
                isinstance(first, FunctionTransformer)
                and first.func is _logit
                and not first.validate
                and first.kw_args is None
                and type(last) is LogisticRegression
                and last.coef_.shape == (1, S.shape[1])
            ):
                return expit((_logit(S) @ last.coef_.T + last.intercept_).reshape(-1))
        if type(comb) is WeightedAverageCombiner:
            return np.clip(S @ comb.weights_, 0.0, 1.0)
        return comb.predict_proba(S)[:, 1]

    def _proba(self, X: pd.DataFrame) -> np.ndarray:
        S = self._scores(self._matrix(X))  # checks fitted first
        return self._combine(S) if len(S) else np.empty(0)

    def member_scores(self, X: pd.DataFrame) -> pd.DataFrame:
        """One column per member, each in [0, 1] and increasing with anomaly (see the module doc)."""
        S = self._scores(self._matrix(X))
        return pd.DataFrame(S, columns=list(self.members_), index=X.index)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 2): columns for classes 0 and 1."""
        p = self._proba(X)
        return np.column_stack([1.0 - p, p])

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """The combined anomaly score: the probability of class 1 (not a margin around 0)."""
        return self._proba(X)

    def predict(self, X: pd.DataFrame, threshold: float = 0.5) -> np.ndarray:
        """1 where the combined score is >= ``threshold``, else 0."""
        score = self._proba(X)  # checks fitted first
        return self.classes_[(score >= threshold).astype(int)]

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """(n, n_features) SHAP contributions of each feature to each row's score, bias dropped:
        the XGBoost member's (LightGBM's if there is no XGBoost member), in that member's
        log-odds. Exact TreeSHAP: about as slow as scoring every tree once per feature."""
        A = self._matrix(X)
        if len(A) == 0:
            return np.empty((0, self.n_features_in_))
        if "xgboost" in self.members_:
            booster = self.members_["xgboost"].get_booster()
            contribs = booster.predict(xgb.DMatrix(A, nthread=self._threads()), pred_contribs=True)
        elif "lightgbm" in self.members_:
            contribs = self.members_["lightgbm"].predict(A, pred_contrib=True, num_threads=self._threads())
        else:
            raise ValueError("explanations need an xgboost or lightgbm member")
        return np.asarray(contribs, dtype=np.float64)[:, : self.n_features_in_]

    def explain(self, X: pd.DataFrame, top: int = 5) -> list[list[tuple[str, float]]]:
        """Per row, the ``top`` features by absolute SHAP contribution, largest first.

        Contributions are the XGBoost member's (LightGBM's if there is no XGBoost member), in
        log-odds of that member: exact TreeSHAP, about as slow as scoring every tree per
        feature, so call it on flagged rows only.
        """
        contribs = self.contributions(X)
        if len(contribs) == 0:
            return []
        top = max(0, min(int(top), self.n_features_in_))
        idx = np.argsort(-np.abs(contribs), axis=1, kind="stable")[:, :top]
        names = self.feature_names_in_
        return [
            [(str(names[j]), float(row[j])) for j in cols] for row, cols in zip(contribs, idx, strict=True)
        ]

    # ------------------------------------------------------------------ artifacts

    def save(self, directory: str | Path) -> dict[str, str]:
        """Write the fitted ensemble to ``directory``; return file name -> SHA-256 (manifest included).

        The registry records the returned hashes and hands them back to :meth:`load`.
        """
        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        blobs: dict[str, bytes] = {}
        for name, member in self.members_.items():
            blobs[MEMBER_FILES[name]] = _member_bytes(name, member)
        blobs[COMBINER_FILE] = _joblib_bytes(self.combiner_)
        for file, data in blobs.items():
            (directory / file).write_bytes(data)
        hashes = {file: _sha256(data) for file, data in blobs.items()}
        params = self.get_params()
        if not isinstance(params["random_state"], int | type(None)):
            params["random_state"] = None  # a RandomState instance is not JSON; the fit is done
        params["members"] = list(self.members_)
        fitted = {
            "imputation_medians": self.imputation_medians_.tolist(),
            "empty_features": [str(c) for c in self.empty_features_],
            "score_maps": {k: [q.tolist(), lv.tolist()] for k, (q, lv) in self.score_maps_.items()},
            "validation_scores": self.validation_scores_,
            "scale_pos_weight": self.scale_pos_weight_,
            "n_train": self.n_train_,
            "n_validation": self.n_validation_,
        }
        if self.combiner == "stacking":
            fitted["stacking_coef"] = self.stacking_coef_
        else:
            fitted["member_weights"] = self.member_weights_
        manifest = {
            "format": FORMAT,
            "params": params,
            "feature_names": [str(c) for c in self.feature_names_in_],
            "members": list(self.members_),
            "combiner": self.combiner,
            "fitted": fitted,
            "files": hashes,
            "versions": _versions(),
        }
        data = json.dumps(manifest, indent=1, allow_nan=False).encode("utf-8")
        (directory / MANIFEST).write_bytes(data)
        return {**hashes, MANIFEST: _sha256(data)}

    @classmethod
    def load(cls, directory: str | Path, expected_sha256: Mapping[str, str] | None = None) -> AnomalyEnsemble:
        """Verify every file's SHA-256, then rebuild the fitted ensemble.

        Each file is read once and hashed; it must match the manifest and, when given,
        ``expected_sha256`` (which then must name every file, ``manifest.json`` included).
        Only when all files matched is any deserialised, from the bytes that were hashed.
        Raises :class:`ArtifactError` naming the file and both hashes on a mismatch. Without
        ``expected_sha256`` the manifest vouches for the files: that catches corruption, not
        someone able to rewrite the manifest as well, which is why the registry passes them.
        """
        directory = Path(directory)
        expected = dict(expected_sha256) if expected_sha256 is not None else None
        manifest_bytes = _read(directory, MANIFEST)
        if expected is not None:
            _verify(MANIFEST, manifest_bytes, expected.get(MANIFEST), "expected_sha256")
        try:
            manifest = json.loads(manifest_bytes)
            members = list(manifest["members"])
            listed = dict(manifest["files"])
            params, fitted = dict(manifest["params"]), dict(manifest["fitted"])
            params["members"] = tuple(params["members"])
            feature_names = [str(c) for c in manifest["feature_names"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory / MANIFEST}: not an ensemble manifest ({exc})") from exc
        if manifest.get("format") != FORMAT or not set(members) <= set(MEMBER_FILES):
            raise ArtifactError(f"{directory / MANIFEST}: unknown format or members")
        # The file set follows from the member list, never from names in the manifest.
        files = [MEMBER_FILES[m] for m in members] + [COMBINER_FILE]
        if set(listed) != set(files):
            raise ArtifactError(f"{directory / MANIFEST}: files {sorted(listed)} != expected {sorted(files)}")
        if expected is not None and set(expected) != {*files, MANIFEST}:
            raise ArtifactError(
                f"expected_sha256 names {sorted(expected)}, the artifact has {sorted([*files, MANIFEST])}"
            )
        blobs = {}
        for file in files:
            data = _read(directory, file)
            _verify(file, data, listed[file], "the manifest")
            if expected is not None:
                _verify(file, data, expected[file], "expected_sha256")
            blobs[file] = data

        # ---- every byte verified: deserialise
        _warn_versions(manifest.get("versions", {}))
        est = cls(**params)
        threads = est._threads()
        fitted_members: dict[str, Any] = {}
        for name in members:
            fitted_members[name] = _member_from_bytes(name, blobs[MEMBER_FILES[name]], threads)
        est.members_ = fitted_members
        est.combiner_ = joblib.load(io.BytesIO(blobs[COMBINER_FILE]))
        est.feature_names_in_ = np.asarray(feature_names, dtype=object)
        est.n_features_in_ = len(est.feature_names_in_)
        est.classes_ = np.array([0, 1])
        est.imputation_medians_ = np.asarray(fitted["imputation_medians"], dtype=np.float64)
        est.empty_features_ = np.asarray(fitted["empty_features"], dtype=object)
        est.score_maps_ = {
            k: (np.asarray(q, dtype=np.float64), np.asarray(lv, dtype=np.float64))
            for k, (q, lv) in fitted["score_maps"].items()
        }
        est.validation_scores_ = dict(fitted["validation_scores"])
        est.scale_pos_weight_ = float(fitted["scale_pos_weight"])
        est.n_train_, est.n_validation_ = int(fitted["n_train"]), int(fitted["n_validation"])
        if est.combiner == "stacking":
            est.stacking_coef_ = dict(fitted["stacking_coef"])
        else:
            est.member_weights_ = dict(fitted["member_weights"])
        return est


class _Scorer:
    """What scoring needs from a fitted ensemble, prepared once: the feature names, one
    single-threaded copy of the XGBoost booster per thread (no ``set_param`` per call, no two
    threads on one booster), float32 imputation values, and hist_gb and the Isolation Forest
    packed for numpy (:class:`_Forest`) when their structure allows it. Every path computes what
    the member's own ``predict_proba`` / ``score_samples`` computes, bit for bit."""

    def __init__(self, est: AnomalyEnsemble, threads: int):
        self._key = (est.members_, est.imputation_medians_, est.empty_features_, est.feature_names_in_)
        self.threads = threads
        self.names = [str(c) for c in est.feature_names_in_]
        self.columns = pd.Index(self.names, dtype=object)
        self.members = dict(est.members_)
        # A feature never seen in normal rows is always imputed (see AnomalyEnsemble._impute).
        self.always_impute = np.isin(est.feature_names_in_, est.empty_features_)
        self.medians32 = est.imputation_medians_.astype(np.float32)
        self.boosters: list[Any] = []
        if "xgboost" in self.members:
            booster = self.members["xgboost"].get_booster()
            for _ in range(threads):
                copy = booster.copy()
                copy.set_param({"nthread": 1})
                self.boosters.append(copy)
        self.hist_forest = _hist_gb_forest(self.members.get("hist_gb"))
        self.iforest = _isolation_forest_parts(self.members.get("isolation_forest"), len(self.names))

    def matches(self, est: AnomalyEnsemble, threads: int) -> bool:
        now = (est.members_, est.imputation_medians_, est.empty_features_, est.feature_names_in_)
        return threads == self.threads and all(a is b for a, b in zip(now, self._key, strict=True))

    def score(
        self, est: AnomalyEnsemble, P: np.ndarray, names: Sequence[str], out: np.ndarray, w: int
    ) -> None:
        """Raw scores of the C-ordered rows ``P`` for the members ``names`` into ``out``, on one
        thread (``w``: which of the ``threads`` workers this is)."""
        imputed = None
        for j, name in enumerate(names):
            member = self.members[name]
            if name == "xgboost":
                out[:, j] = self.boosters[w].inplace_predict(P)
            elif name == "lightgbm":
                out[:, j] = member.predict(P, num_threads=1)
            elif name == "hist_gb":
                out[:, j] = self._hist_gb(member, P)
            elif name == "robust_z":
                out[:, j] = _robust_z(P, member.center_, member.scale_, member.top_k)
            elif name == "tail":
                out[:, j] = _tail(P, member)
            elif name == "isolation_forest":
                if imputed is None:
                    imputed = self._impute32(P)
                out[:, j] = self._isolation_forest(member, imputed)
            else:  # lof: its own float64 path
                out[:, j] = -member.score_samples(est._impute(P.astype(np.float64)))

    def _impute32(self, P: np.ndarray) -> np.ndarray:
        """``AnomalyEnsemble._impute`` then float32 (what the Isolation Forest reads), in one copy:
        float32(x) where x is kept, float32(median) where it is imputed. Row-ordered for the
        numpy walk, column-ordered for the library's tree-by-tree walk (~6x faster on 10,000
        rows x 393 features: each tree reads the same few features of every row)."""
        out = P.astype(np.float32, order="C" if len(P) <= _FOREST_MAX_ROWS else "F")
        missing = np.isnan(out)
        missing[:, self.always_impute] = True
        np.copyto(out, self.medians32, where=missing)
        return out

    def _hist_gb(self, member: Any, P: np.ndarray) -> np.ndarray:
        if self.hist_forest is not None and len(P) <= _FOREST_MAX_ROWS:
            forest, baseline = self.hist_forest
            raw = _sum_in_order(baseline, forest.leaf_values(P))
        else:  # the library's walk, one tree at a time, reads columns: give it a column-ordered copy
            raw = member._raw_predict(np.asfortranarray(P, dtype=np.float64), n_threads=1)
        return member._loss.predict_proba(raw)[:, 1]

    def _isolation_forest(self, member: Any, imputed: np.ndarray) -> np.ndarray:
        if self.iforest is None:
            return -member.score_samples(imputed)
        forest, leaf_terms, denominator = self.iforest
        if len(imputed) <= _FOREST_MAX_ROWS:
            depths = _sum_in_order(0.0, forest.leaf_values(imputed))
        else:  # IsolationForest._compute_score_samples without joblib's per-tree dispatch
            depths = np.zeros(len(imputed))
            for tree, terms in zip(member.estimators_, leaf_terms, strict=True):
                depths += terms[tree.apply(imputed, check_input=False)]
        return 2 ** (-np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0))


def _hist_gb_forest(member: Any) -> tuple[_Forest, float] | None:
    """hist_gb's trees as a :class:`_Forest` and its baseline (binary, no categorical split)."""
    if member is None or getattr(member, "n_trees_per_iteration_", None) != 1:
        return None
    nodes = [predictors[0].nodes for predictors in member._predictors]
    if any(nd["is_categorical"].any() for nd in nodes):
        return None
    trees = [
        (
            nd["feature_idx"],
            nd["num_threshold"],
            nd["left"],
            nd["right"],
            nd["missing_go_to_left"],
            nd["is_leaf"],
            nd["value"],
        )
        for nd in nodes
    ]
    baseline = np.asarray(member._baseline_prediction, dtype=np.float64).reshape(-1)
    return _Forest(trees), float(baseline[0])


def _isolation_forest_parts(
    member: Any, n_features: int
) -> tuple[_Forest, list[np.ndarray], np.ndarray] | None:
    """The Isolation Forest's trees as a :class:`_Forest` whose leaf values are each leaf's
    path-length term (as ``IsolationForest._compute_score_samples`` adds it), those terms per
    tree, and the score's denominator. None when the forest subsamples features."""
    from sklearn.ensemble._iforest import _average_path_length

    if member is None or member._max_features != n_features:
        return None
    terms = [
        lengths + average - 1.0
        for lengths, average in zip(
            member._decision_path_lengths, member._average_path_length_per_tree, strict=True
        )
    ]
    trees = []
    for est, term in zip(member.estimators_, terms, strict=True):
        t = est.tree_
        leaf = t.children_left == -1
        trees.append(
            (t.feature, t.threshold, t.children_left, t.children_right, t.missing_go_to_left, leaf, term)
        )
    denominator = len(member.estimators_) * _average_path_length([member._max_samples])
    return _Forest(trees), terms, denominator


# ---------------------------------------------------------------------- helpers


def _member_bytes(name: str, member: Any) -> bytes:
    """A fitted member in its library's native format (joblib for scikit-learn)."""
    if name == "xgboost":
        return bytes(member.get_booster().save_raw("ubj"))
    if name == "lightgbm":
        return member.model_to_string().encode("utf-8")
    return _joblib_bytes(member)


def _member_from_bytes(name: str, data: bytes, threads: int) -> Any:
    """Inverse of :func:`_member_bytes`; call it only on bytes whose SHA-256 was verified."""
    if name == "xgboost":
        clf = xgb.XGBClassifier(n_jobs=threads)
        clf.load_model(bytearray(data))
        clf.get_booster().set_param({"nthread": threads})
        return clf
    if name == "lightgbm":
        return lgb.Booster(model_str=data.decode("utf-8"))
    return joblib.load(io.BytesIO(data))


def save_member(name: str, member: Any, directory: str | Path) -> str:
    """Write one fitted member (from :meth:`AnomalyEnsemble.fit_member`) to ``directory`` in its
    native format; return its SHA-256, to hand back to :func:`load_member`."""
    if name not in MEMBER_FILES:
        raise ValueError(f"unknown member {name!r}; members are {MEMBERS}")
    data = _member_bytes(name, member)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{MEMBER_FILES[name]}.tmp"
    tmp.write_bytes(data)
    tmp.replace(directory / MEMBER_FILES[name])
    return _sha256(data)


def load_member(name: str, directory: str | Path, sha256: str, n_jobs: int | None = 2) -> Any:
    """Read one member saved by :func:`save_member`, refusing it unless its SHA-256 matches."""
    if name not in MEMBER_FILES:
        raise ValueError(f"unknown member {name!r}; members are {MEMBERS}")
    data = _read(Path(directory), MEMBER_FILES[name])
    _verify(MEMBER_FILES[name], data, sha256, "the caller")
    return _member_from_bytes(name, data, max(1, int(effective_n_jobs(n_jobs))))


def _check_member_width(name: str, member: Any, n_features: int) -> None:
    if isinstance(member, lgb.Booster):
        width = member.num_feature()
    else:
        width = getattr(member, "n_features_in_", None)
        if width is None and hasattr(member, "steps"):  # the lof pipeline
            width = getattr(member.steps[0][1], "n_features_in_", None)
    if width is not None and int(width) != n_features:
        raise ValueError(f"prefit member {name!r} was fitted on {width} features, X has {n_features}")


def _binary_labels(y: Any) -> np.ndarray:
    y_type = type_of_target(y, input_name="y", raise_unknown=True)
    if y_type != "binary":
        raise ValueError(f"Only binary classification is supported. The type of the target is {y_type}.")
    y = np.asarray(y)
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"y must be 0/1 (or boolean), got values {sorted(values)!r}")
    if len(values) < 2:
        raise ValueError(
            f"y has only one class ({values.pop()}): need both normal (0) and anomalous (1) rows"
        )
    return y.astype(np.int8)


def _encode_binary(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two class labels and ``y`` as 0.0/1.0 (1.0 = the larger label), for the combiners."""
    y_type = type_of_target(y, input_name="y", raise_unknown=True)
    if y_type != "binary":
        raise ValueError(f"Only binary classification is supported. The type of the target is {y_type}.")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"y has only one class ({classes[0]!r})")
    return classes, (np.asarray(y) == classes[1]).astype(np.float64)


def _feature_names(X: Any) -> list[str]:
    if not isinstance(X, pd.DataFrame):
        raise ValueError(f"X must be a pandas DataFrame of named features, got {type(X).__name__}")
    names = list(X.columns)
    if not names:
        raise ValueError("X has no columns")
    if not all(isinstance(c, str) for c in names):
        raise ValueError("feature names (the columns of X) must be strings")
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"duplicate feature columns: {dup}")
    return names


def _to_matrix(X: Any, names: list[str]) -> np.ndarray:
    """The columns ``names`` of ``X`` as one float64 array (+-inf -> NaN); extra columns ignored."""
    if not isinstance(X, pd.DataFrame):
        raise ValueError(f"X must be a pandas DataFrame of named features, got {type(X).__name__}")
    present = set(X.columns)
    missing = [c for c in names if c not in present]
    if missing:
        raise ValueError(f"X lacks {len(missing)} feature column(s) the model was fitted on: {missing}")
    if not X.columns.is_unique:
        dup = sorted({str(c) for c in X.columns[X.columns.duplicated()] if c in set(names)})
        if dup:
            raise ValueError(f"duplicate feature columns: {dup}")
    frame = X if list(X.columns) == names else X[names]  # selecting copies: skip it when possible
    bad = [
        f"{c} ({t})"
        for c, t in frame.dtypes.items()
        if not pd.api.types.is_numeric_dtype(t) or pd.api.types.is_complex_dtype(t)
    ]
    if bad:
        raise ValueError(f"non-numeric feature column(s): {', '.join(bad)}")
    A = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(A).any():
        A = np.where(np.isinf(A), np.nan, A)  # a new array: A may be a view of the caller's frame
    return A


def _feature_array(X: Any, names: list[str], columns: pd.Index) -> np.ndarray:
    """The columns ``names`` (``columns``, the same as an Index) of ``X`` as one C-ordered array
    for scoring, +-inf -> NaN; extra columns ignored.

    float32 when pandas' common dtype of those columns is float32 (all float32, as the feature
    store hands them out), else float64 as in fit. Every member scores float32 input exactly as
    its float64 widening: XGBoost and the Isolation Forest compare in float32 anyway, LightGBM,
    hist_gb and robust z widen float32 to float64 without loss. Row order (C) is what XGBoost,
    LightGBM and robust z read fastest; hist_gb gets its own column-ordered copy.
    """
    if not isinstance(X, pd.DataFrame):
        raise ValueError(f"X must be a pandas DataFrame of named features, got {type(X).__name__}")
    if X.columns.equals(columns):  # the usual case: exactly the model's columns, in order
        frame = X
    else:
        present = set(X.columns)
        missing = [c for c in names if c not in present]
        if missing:
            raise ValueError(f"X lacks {len(missing)} feature column(s) the model was fitted on: {missing}")
        if not X.columns.is_unique:
            dup = sorted({str(c) for c in X.columns[X.columns.duplicated()] if c in set(names)})
            if dup:
                raise ValueError(f"duplicate feature columns: {dup}")
        frame = X[names]
    A = frame.to_numpy()  # one common dtype: float32 only if every value is exact in float32
    if A.dtype != np.float32:
        if A.dtype.kind in "biuf":
            A = A.astype(np.float64, copy=False)
        else:  # object (mixed or extension dtypes), datetimes, complex: check, then as in fit
            bad = [
                f"{c} ({t})"
                for c, t in frame.dtypes.items()
                if not pd.api.types.is_numeric_dtype(t) or pd.api.types.is_complex_dtype(t)
            ]
            if bad:
                raise ValueError(f"non-numeric feature column(s): {', '.join(bad)}")
            A = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    A = np.ascontiguousarray(A)
    if np.isinf(A).any():
        A = np.where(np.isinf(A), np.nan, A)  # a new array: A may be a view of the caller's frame
    return A


def _robust_z(X: np.ndarray, center: np.ndarray, scale: np.ndarray, top_k: int) -> np.ndarray:
    """:class:`RobustZDetector`'s anomaly score (``-score_samples``) of a checked array; float32
    rows are widened to float64 by the first subtraction, exactly as a float64 copy would be."""
    n, f = X.shape
    k = min(top_k, f)
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, _Z_ROWS):
        z = np.abs(X[lo : lo + _Z_ROWS] - center)
        z /= scale
        np.nan_to_num(z, copy=False, nan=0.0, posinf=_Z_CAP)
        np.minimum(z, _Z_CAP, out=z)
        out[lo : lo + _Z_ROWS] = np.partition(z, f - k, axis=1)[:, f - k :].mean(axis=1)
    return out


def _tail_score(p: np.ndarray, floor: float) -> np.ndarray:
    """:class:`TailProbabilityDetector`'s per-feature score of tail probabilities ``p``."""
    return np.maximum(np.log(0.5 / np.maximum(p, floor)), 0.0)


def _tail(X: np.ndarray, det: TailProbabilityDetector) -> np.ndarray:
    """:class:`TailProbabilityDetector`'s anomaly score (``-score_samples``) of a checked array,
    ``_TAIL_ROWS`` rows at a time on a feature-major float64 copy (float32 values widen exactly).

    A value's knot index is the count of knots below it (``searchsorted``, side left), found by
    one comparison with every knot for a few rows, by one ``searchsorted`` per feature for more."""
    n, f = X.shape
    values, equal, between = det.values_, det.equal_, det.between_
    width = values.shape[1]
    k = min(det.top_k, f)
    feat = np.arange(f)[:, None]
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, _TAIL_ROWS):
        xt = np.ascontiguousarray(X[lo : lo + _TAIL_ROWS].T, dtype=np.float64)  # f x rows
        if xt.shape[1] <= _TAIL_BROADCAST_ROWS:
            idx = (values[:, :, None] < xt[:, None, :]).sum(axis=1)
        else:
            idx = np.empty(xt.shape, dtype=np.intp)
            for j in range(f):
                idx[j] = np.searchsorted(values[j], xt[j])
        at = np.minimum(idx, width - 1)
        S = np.where(values[feat, at] == xt, equal[feat, at], between[feat, idx])
        S[np.isnan(xt)] = 0.0
        out[lo : lo + _TAIL_ROWS] = np.partition(S, f - k, axis=0)[f - k :].mean(axis=0)
    return out


class _Forest:
    """The trees of one fitted member packed into flat arrays and walked by numpy, all trees and
    rows at once: cheaper than the library's one call per tree for a few rows, dearer for
    thousands (``_FOREST_MAX_ROWS``).

    Each step moves every (row, tree) pair one level down; leaves lead to themselves, so
    ``depth`` steps reach every leaf. The decisions are the libraries' own: ``x <= threshold``
    in float64 (float32 features widen exactly) and NaN to the side the node learned. Callers
    sum the leaf values tree by tree in order (``np.add.accumulate``), as the libraries do, so
    scores are bit-identical to theirs (the tests check it).
    """

    def __init__(self, trees: Sequence[tuple[np.ndarray, ...]]):
        """``trees``: per tree (feature, threshold, left, right, nan_left, is_leaf, value)."""
        feature, threshold, kids, nan_left, value, roots = [], [], [], [], [], []
        offset, depth = 0, 0
        for feat, thr, left, right, nan_l, leaf, val in trees:
            leaf = np.asarray(leaf, dtype=bool)
            own = np.arange(len(leaf), dtype=np.intp)
            left = np.where(leaf, own, left).astype(np.intp)
            right = np.where(leaf, own, right).astype(np.intp)
            depth = max(depth, _tree_depth(left, right, leaf))
            pair = np.empty(2 * len(leaf), dtype=np.intp)
            pair[0::2], pair[1::2] = right + offset, left + offset  # index: 2 * node + (went left)
            feature.append(np.where(leaf, 0, feat).astype(np.intp))
            threshold.append(np.where(leaf, 0.0, thr).astype(np.float64))
            nan_left.append(np.asarray(nan_l, dtype=bool) & ~leaf)
            kids.append(pair)
            value.append(np.asarray(val, dtype=np.float64))
            roots.append(offset)
            offset += len(leaf)
        self.feature = np.concatenate(feature)
        self.threshold = np.concatenate(threshold)
        self.kids = np.concatenate(kids)
        self.nan_left = np.concatenate(nan_left)
        self.value = np.concatenate(value)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.depth = depth

    def leaf_values(self, A: np.ndarray) -> np.ndarray:
        """(rows, trees): the value of the leaf each row of the C-ordered ``A`` reaches in each tree."""
        A = np.ascontiguousarray(A)
        n, f = A.shape
        flat = A.reshape(-1)
        row_start = np.arange(0, n * f, f, dtype=np.intp)[:, None]
        nodes = np.repeat(self.roots[None, :], n, axis=0)
        nan = bool(self.nan_left.any()) and bool(np.isnan(A).any())
        for _ in range(self.depth):
            x = flat.take(row_start + self.feature.take(nodes))
            left = x <= self.threshold.take(nodes)
            if nan:
                left |= np.isnan(x) & self.nan_left.take(nodes)
            nodes = self.kids.take(2 * nodes + left)
        return self.value.take(nodes)


def _tree_depth(left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> int:
    """Edges on the longest root-to-leaf path of one tree (node 0 is the root)."""
    depth, level = 0, np.array([0])
    while True:
        inner = level[~leaf[level]]
        if len(inner) == 0:
            return depth
        level = np.concatenate([left[inner], right[inner]])
        depth += 1


def _sum_in_order(first: np.ndarray | float, values: np.ndarray) -> np.ndarray:
    """Per row ``first + values[:, 0] + values[:, 1] + ...``, added left to right as a loop over
    the trees adds them (``accumulate`` never reorders, unlike ``sum``)."""
    n, t = values.shape
    terms = np.empty((t + 1, n), dtype=np.float64)
    terms[0] = first
    terms[1:] = values.T
    return np.add.accumulate(terms, axis=0)[-1]


_SCORERS: weakref.WeakKeyDictionary[AnomalyEnsemble, _Scorer] = weakref.WeakKeyDictionary()


def _run_threads(work: Any, workers: int) -> None:
    """``work(0)`` .. ``work(workers - 1)`` at once: the caller runs ``work(0)``. Threads are
    started per call (fork-safe, ~0.1 ms) and only for batches large enough to repay them; the
    members' native code releases the GIL."""
    if workers == 1:
        work(0)
        return
    errors: list[BaseException] = []

    def run(w: int) -> None:
        try:
            work(w)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(1, workers)]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _time_split(time: Any, n: int, validation_fraction: float) -> tuple[np.ndarray, int]:
    """Row order and the cut: rows ``order[:cut]`` train the members, the rest the combiner."""
    nominal = round(n * (1.0 - validation_fraction))
    if isinstance(time, str):
        raise ValueError(f"time must be the timestamps themselves, not a column name ({time!r})")
    if time is None:
        return np.arange(n), nominal
    index = pd.Index(time) if not isinstance(time, pd.Index) else time
    if len(index) != n:
        raise ValueError(f"time has {len(index)} values for {n} rows")
    if index.hasnans:
        raise ValueError("time has missing values")
    if isinstance(index, pd.DatetimeIndex):
        keys = index.asi8  # UTC nanoseconds, also for tz-aware stamps
    elif pd.api.types.is_numeric_dtype(index.dtype) and not pd.api.types.is_bool_dtype(index.dtype):
        keys = index.to_numpy(dtype=np.float64)
    else:
        raise ValueError(f"time must be timestamps or numbers, got dtype {index.dtype}")
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1  # where a new timestamp begins
    if len(starts) == 0:
        raise ValueError("all rows share one timestamp: there is no time to split on")
    cut = int(starts[np.argmin(np.abs(starts - nominal))])
    return order, cut


def _check_part(part: str, y: np.ndarray, size: int, n: int) -> None:
    pos = int(y.sum())
    if size == 0 or pos == 0:
        raise ValueError(
            f"the {part} part ({size} of {n} rows in time order) has no positive rows: "
            "both the members and the combiner need labelled anomalies; label more or change "
            "validation_fraction"
        )
    if size - pos < MIN_NEGATIVES:
        raise ValueError(f"the {part} part has {size - pos} negative rows, need at least {MIN_NEGATIVES}")


def _quantile_map(normal_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw-score quantiles of normal rows and their mid-rank levels in (0, 1), for ``np.interp``."""
    m = len(normal_scores)
    p = np.linspace(0.0, 1.0, min(m, _QUANTILES))
    return np.quantile(normal_scores, p), (p * (m - 1) + 0.5) / m


def _joblib_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    joblib.dump(obj, buf)
    return buf.getvalue()


def _read(directory: Path, file: str) -> bytes:
    path = directory / file
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing") from exc


def _verify(file: str, data: bytes, recorded: str | None, source: str) -> None:
    actual = _sha256(data)
    if recorded is None:
        raise ArtifactError(f"{file}: no SHA-256 recorded in {source} (actual {actual})")
    if actual != recorded:
        raise ArtifactError(f"{file}: SHA-256 {actual} differs from {recorded} recorded in {source}")


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "xgboost": xgb.__version__,
        "lightgbm": lgb.__version__,
        "joblib": joblib.__version__,
    }


def _warn_versions(saved: Mapping[str, str]) -> None:
    current = _versions()
    differ = {k: (v, current[k]) for k, v in saved.items() if k in current and current[k] != v}
    if differ:
        warnings.warn(
            f"ensemble saved with other library versions (saved, now): {differ}; "
            "scores may differ from the original's",
            UserWarning,
            stacklevel=3,
        )
