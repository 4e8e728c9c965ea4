"""Training sets: features joined with labels, as of one DuckLake snapshot, and honest time splits.

A training set is rebuilt exactly from what a model records: the source, the range, the label
dataset and tolerance, the feature list, and the lake snapshot it was read at (DuckLake time
travel: ``features AT (VERSION => n)``). Rows written after that snapshot, late labels
included, never leak in.

A point is positive when its timestamp lies in a labelled window of its host
``[start_ts - tolerance, end_ts + tolerance)``; ``event_id`` is the label's id (events are what
event-level metrics count) and ``fault_type`` its type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from anomaly import registry

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd

    from anomaly.store import Lake

KEYS = ("host", "ts")
TARGETS = ("label", "event_id", "fault_type")


class TrainingSetError(ValueError):
    """The training set cannot be built or is unusable; nothing was trained or registered."""


@dataclass
class TrainingSet:
    """Rows (host, ts, features..., label, event_id, fault_type) and how to rebuild them."""

    frame: pd.DataFrame
    features: list[str]
    source: str
    labels_dataset: str
    start: datetime
    end: datetime
    tolerance: timedelta
    snapshot: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[self.features]

    @property
    def y(self) -> np.ndarray:
        return self.frame["label"].to_numpy()

    def record(self) -> dict[str, Any]:
        """What a model stores to rebuild this set with :func:`build_training_set`."""
        return {
            "source": self.source,
            "labels_dataset": self.labels_dataset,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "tolerance_seconds": self.tolerance.total_seconds(),
            "snapshot": self.snapshot,
            "features": list(self.features),
        }

    def describe(self) -> dict[str, Any]:
        """Rows, class shares, events and fault types (JSON-friendly)."""
        n = len(self.frame)
        positives = int(self.frame["label"].sum())
        types = self.frame.loc[self.frame["label"] == 1].groupby("fault_type")["event_id"].nunique()
        return {
            "rows": n,
            "positives": positives,
            "positive_share": positives / n if n else 0.0,
            "negative_share": (n - positives) / n if n else 0.0,
            "events": int(self.frame["event_id"].nunique()),
            "hosts": int(self.frame["host"].nunique()),
            "events_by_type": {str(k): int(v) for k, v in types.items()},
            "features": len(self.features),
            "snapshot": self.snapshot,
        }


def current_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    """The lake's latest snapshot id."""
    return int(
        con.execute(f"SELECT id FROM ducklake_current_snapshot('{registry.LAKE_ALIAS}')").fetchone()[0]
    )


def build_training_set(
    source: str,
    start: datetime,
    end: datetime,
    *,
    lake: Lake | None = None,
    labels_dataset: str | None = None,
    tolerance: timedelta = timedelta(0),
    snapshot: int | None = None,
    features: Sequence[str] | None = None,
    min_rows: int = 100,
) -> TrainingSet:
    """Features of ``source`` in ``[start, end)`` with their labels, as of ``snapshot`` (default:
    the latest, which is then recorded).

    ``labels_dataset`` selects ``labels.dataset`` (default: ``source``, the raw data the labels
    describe). ``features`` restricts the columns (default: every numeric or boolean feature of
    ``feature_catalog`` at that snapshot); names missing from the catalog are an error.

    Example::

        >>> ts = build_training_set("simulation", t0, t1)             # doctest: +SKIP
        >>> ts.describe()["positive_share"], ts.record()["snapshot"]  # doctest: +SKIP
    """
    import numpy as np
    import pandas as pd

    from anomaly.sources.base import require_aware, to_utc
    from anomaly.store import Lake

    require_aware(start, end)
    start, end = to_utc(start), to_utc(end)
    if end <= start:
        raise TrainingSetError(f"empty range [{start.isoformat()}, {end.isoformat()})")
    lake = lake or Lake()
    lake.init()
    labels_dataset = labels_dataset or source
    with lake.connection() as con:
        latest = current_snapshot(con)
        snap = latest if snapshot is None else int(snapshot)
        if not 0 <= snap <= latest:
            raise TrainingSetError(f"snapshot {snap} does not exist (the lake's latest is {latest})")
        at = f"AT (VERSION => {snap})"  # an int checked above: time travel takes no parameter
        catalog = con.execute(
            f"SELECT name FROM {registry.FEATURE_CATALOG} {at} ORDER BY position"
        ).fetchall()
        if not catalog:
            raise TrainingSetError(f"no features at snapshot {snap}: build features first")
        known = [name for (name,) in catalog]
        wanted = list(features) if features is not None else known
        missing = sorted(set(wanted) - set(known))
        if missing:
            raise TrainingSetError(
                f"{len(missing)} feature(s) are not in feature_catalog at snapshot {snap}: {', '.join(missing[:20])}"
            )
        columns = ", ".join(f'f."{name}"' for name in wanted)
        frame = con.execute(
            f"""
            WITH l AS (
                SELECT label_id, host, start_ts, end_ts, type
                FROM {registry.LABELS} {at}
                WHERE dataset = $dataset
            )
            SELECT f.host, f.ts, {columns}, l.label_id AS event_id, l.type AS fault_type
            FROM {registry.FEATURES} f {at}
            LEFT JOIN l ON l.host = f.host
                AND f.ts >= l.start_ts - to_microseconds($tol) AND f.ts < l.end_ts + to_microseconds($tol)
            WHERE f.source = $source AND f.ts >= $start AND f.ts < $end
            -- with a tolerance two windows of a host may both cover a point: the earlier one wins
            QUALIFY row_number() OVER (PARTITION BY f.host, f.ts ORDER BY l.start_ts NULLS LAST) = 1
            ORDER BY f.ts, f.host
            """,
            {
                "dataset": labels_dataset,
                "tol": int(tolerance.total_seconds() * 1_000_000),
                "source": source,
                "start": start,
                "end": end,
            },
        ).df()
    where = f"source {source!r} in [{start.isoformat()}, {end.isoformat()}) at snapshot {snap}"
    if len(frame) < min_rows:
        raise TrainingSetError(f"{len(frame)} feature rows for {where}: need at least {min_rows}")
    # booleans (missing flags, weekend) as 0/1, everything as float32; one block, not 400 inserts
    values = frame[wanted].astype("float32")
    frame = pd.concat([frame.drop(columns=wanted), values], axis=1)[list(frame.columns)]
    frame["label"] = frame["event_id"].notna().astype(np.int8)
    positives = int(frame["label"].sum())
    if positives == 0:
        raise TrainingSetError(
            f"no positive rows for {where}: no labels of dataset {labels_dataset!r} overlap it "
            "(simulate faults, import incidents, or widen the range)"
        )
    if positives == len(frame):
        raise TrainingSetError(
            f"every row of {where} is labelled positive: a classifier needs normal rows too"
        )
    return TrainingSet(frame, wanted, source, labels_dataset, start, end, tolerance, snap)


@dataclass(frozen=True)
class Split:
    """Boolean masks over a training set's rows, in time order, with embargo gaps between them."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    boundaries: dict[str, str]


def time_split(
    ts: pd.Series,
    *,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.25,
    embargo: timedelta | None = None,
    hosts: pd.Series | None = None,
    test_hosts: Sequence[str] | None = None,
) -> Split:
    """Train, validation and test spans in time order: train < validation < test, each separated
    by ``embargo`` (default: the longest feature window, so no window straddles two spans).

    With ``hosts`` and ``test_hosts``, those hosts are held out of train and validation and only
    they are in the test span (grouping by host: the model is judged on machines it never saw).
    """
    import pandas as pd

    from anomaly.features import LOOKBACK

    embargo = LOOKBACK if embargo is None else embargo
    if (
        not 0 < validation_fraction < 1
        or not 0 < test_fraction < 1
        or validation_fraction + test_fraction >= 1
    ):
        raise TrainingSetError("validation and test fractions must be in (0, 1) and leave room for training")
    times = pd.to_datetime(ts)
    lo, hi = times.min(), times.max()
    span = hi - lo
    t_test = lo + span * (1 - test_fraction)
    t_val = lo + span * (1 - test_fraction - validation_fraction)
    train = (times < t_val - embargo).to_numpy()
    validation = ((times >= t_val) & (times < t_test - embargo)).to_numpy()
    test = (times >= t_test).to_numpy()
    if test_hosts is not None:
        if hosts is None:
            raise TrainingSetError("test_hosts needs hosts")
        held = hosts.isin(list(test_hosts)).to_numpy()
        train &= ~held
        validation &= ~held
        test &= held
    for name, mask in (("train", train), ("validation", validation), ("test", test)):
        if not mask.any():
            raise TrainingSetError(
                f"the {name} span is empty: the range is too short for the fractions and embargo"
            )
    return Split(
        train,
        validation,
        test,
        {
            "train_end": (t_val - embargo).isoformat(),
            "validation_start": t_val.isoformat(),
            "validation_end": (t_test - embargo).isoformat(),
            "test_start": t_test.isoformat(),
            "embargo_seconds": str(embargo.total_seconds()),
        },
    )
