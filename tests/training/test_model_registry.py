"""Model registry: versions, champion/challenger promotion rules, rollback, checksum refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from anomaly.training import model_registry as reg
from anomaly.training.ensemble import AnomalyEnsemble, ArtifactError
from anomaly.training.metrics import evaluate, tune_alert_threshold, tune_threshold

T0 = datetime(2026, 6, 1, tzinfo=UTC)
FEATURES = [f"f{i}" for i in range(8)]
FAST = {"n_estimators": 20, "max_depth": 3, "n_jobs": 1, "random_state": 0}


def _points(seed: int, minutes: int = 1500, hosts=("a", "b")) -> pd.DataFrame:
    """Per host, a minute grid of noise with shifted windows (events) every 150 minutes."""
    rng = np.random.default_rng(seed)
    frames = []
    for h in hosts:
        ts = pd.date_range(T0, periods=minutes, freq="min", tz="UTC")
        x = rng.normal(size=(minutes, len(FEATURES)))
        event = np.full(minutes, None, dtype=object)
        for k, start in enumerate(range(60, minutes - 20, 150)):
            x[start : start + 12, :3] += 4.0
            event[start : start + 12] = f"{h}-{k}"
        f = pd.DataFrame(x, columns=FEATURES).astype("float32")
        f.insert(0, "ts", ts)
        f.insert(0, "host", h)
        f["event_id"] = event
        f["fault_type"] = np.where(pd.notna(event), "shift", None)
        frames.append(f)
    out = pd.concat(frames, ignore_index=True).sort_values(["ts", "host"], ignore_index=True)
    out["label"] = out["event_id"].notna().astype("int8")
    return out


def _fit(points: pd.DataFrame, **params) -> tuple[AnomalyEnsemble, float, dict]:
    half = len(points) // 2
    train, val = points.iloc[:half], points.iloc[half:]
    model = AnomalyEnsemble(**{**FAST, **params}).fit(
        train[FEATURES], train["label"].to_numpy(), time=train["ts"]
    )
    scores = model.decision_function(val[FEATURES])
    threshold = tune_threshold(val["label"].to_numpy(), scores, 0.9)
    alert = tune_alert_threshold(val, scores, floor=threshold)
    return model, threshold, evaluate(val, scores, threshold, alert)


def _register(lake, model, threshold, metrics, run_id=None):
    training = {"snapshot": 1, "start": T0, "end": T0 + timedelta(days=1), "features": FEATURES}
    run_id = run_id or f"run-{len(reg.list_models(lake=lake)) + 1}"
    return reg.register(
        model, training=training, threshold=threshold, metrics=metrics, run_id=run_id, lake=lake
    )


def test_a_run_registers_one_version_however_often_it_is_retried(lake, anomaly_home) -> None:
    model, threshold, metrics = _fit(_points(1))
    first = _register(lake, model, threshold, metrics, run_id="scheduled__1")
    again = _register(lake, model, threshold, metrics, run_id="scheduled__1")
    assert again.version == first.version and again.artifacts == first.artifacts
    assert len(reg.list_models(lake=lake)) == 1
    assert [p.name for p in (anomaly_home / "models").iterdir()] == [first.artifacts.name]  # no orphan
    assert reg.by_run("scheduled__1", lake=lake).version == first.version
    assert reg.by_run("other", lake=lake) is None


def test_decide_applies_minimums_then_the_champion_comparison(anomaly_home) -> None:
    good = {"point": {"precision": 0.95, "recall": 0.93}, "event": {"event_f1": 0.96}}
    weak = {"point": {"precision": 0.70, "recall": 0.93}, "event": {"event_f1": 0.96}}
    ok, why = reg.decide(good, None)
    assert ok and "no champion yet" in why
    ok, why = reg.decide(weak, None)
    assert not ok and "precision 0.7 < 0.8" in why
    ok, why = reg.decide(good, {"point": {}, "event": {"event_f1": 0.97}})
    assert not ok and "event_f1 0.9600 < champion's 0.9700 on the same test span" in why
    ok, _ = reg.decide(good, {"point": {}, "event": {"event_f1": 0.96}})  # at least as good: promoted
    assert ok


def test_the_champion_is_judged_at_its_own_alert_threshold(lake) -> None:
    model, threshold, metrics = _fit(_points(1))
    test = _points(2)
    # at its point threshold this model finds every test event without a false alarm...
    assert evaluate(test, model.decision_function(test[FEATURES]), threshold)["event"]["event_f1"] == 1.0
    # ...but as a champion whose alert threshold is above every score it pages on nothing
    silent = _register(lake, model, threshold, {**metrics, "alert_threshold": 1.5})
    reg.promote(silent.version, reason="test", lake=lake)
    challenger = _register(
        lake, model, threshold, {**metrics, "event": {**metrics["event"], "event_f1": 0.95}}
    )
    ok, why = reg.promote_if_better(challenger.version, test, lake=lake)
    assert ok and "event_f1 0.9500 >= champion's 0.0 on the same test span" in why, why


def test_register_promote_challenge_rollback(lake) -> None:
    points = _points(1)
    model, threshold, metrics = _fit(points)
    first = _register(lake, model, threshold, metrics)
    assert (first.version, first.status) == (1, reg.CANDIDATE)
    assert set(first.sha256) and all(len(h) == 64 for h in first.sha256.values())

    test = _points(2)
    ok, why = reg.promote_if_better(1, test, lake=lake)
    assert ok, why  # the easy synthetic faults clear the minimums
    assert reg.champion(lake=lake).version == 1

    # a challenger that saw only noise labels cannot beat the champion on the same test span
    scrambled = points.assign(label=np.random.default_rng(3).permutation(points["label"].to_numpy()))
    weak_model, weak_threshold, weak_metrics = _fit(scrambled)
    second = _register(lake, weak_model, weak_threshold, weak_metrics)
    ok, why = reg.promote_if_better(second.version, test, lake=lake)
    assert not ok
    after = reg.get(second.version, lake=lake)
    assert after.status == reg.CANDIDATE and after.reason == why and "below the minimums" in why
    assert reg.champion(lake=lake).version == 1

    # by hand, then back
    promoted = reg.promote(second.version, reason="operator says so", lake=lake)
    assert promoted.status == reg.CHAMPION and promoted.reason == "operator says so"
    assert reg.get(1, lake=lake).status == reg.RETIRED
    back = reg.rollback(lake=lake)
    assert (
        back.version == 1
        and back.status == reg.CHAMPION
        and back.reason == f"rollback from v{second.version}"
    )
    assert reg.get(second.version, lake=lake).status == reg.RETIRED
    listed = reg.list_models(lake=lake)
    assert listed["version"].tolist() == [2, 1] and (listed["status"] == reg.CHAMPION).sum() == 1
    alerts = [reg.get(v, lake=lake).alert_threshold for v in (2, 1)]
    assert listed["alert_threshold"].tolist() == alerts
    assert alerts == [reg.get(v, lake=lake).metrics["alert_threshold"] for v in (2, 1)]
    assert all(a > t for a, t in zip(alerts, listed["threshold"], strict=True))  # so the JSON is read

    # a loaded champion scores exactly like the model that was registered
    loaded = reg.load(reg.get(1, lake=lake))
    np.testing.assert_array_equal(
        loaded.decision_function(test[FEATURES]), model.decision_function(test[FEATURES])
    )


def test_a_tampered_artifact_is_refused_before_it_is_read(lake) -> None:
    model, threshold, metrics = _fit(_points(4))
    record = _register(lake, model, threshold, metrics)
    victim = sorted(record.sha256)[0]
    path = record.artifacts / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=victim):
        reg.load(record)


def test_registry_errors_are_clear(lake) -> None:
    with pytest.raises(reg.RegistryError, match=r"no model version 7; versions: none yet"):
        reg.get(7, lake=lake)
    with pytest.raises(reg.RegistryError, match=r"no champion to roll back from"):
        reg.rollback(lake=lake)
    model, threshold, metrics = _fit(_points(5))
    with pytest.raises(reg.RegistryError, match=r"lacks 'snapshot': nothing registered"):
        reg.register(model, training={"features": FEATURES}, threshold=threshold, metrics=metrics, lake=lake)
    assert reg.list_models(lake=lake).empty
