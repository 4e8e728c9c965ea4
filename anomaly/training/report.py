"""Model report: one self-contained HTML page per model version.

The page (``<ANOMALY_HOME>/reports/models/<name>.html``, written by :func:`write_model_report`)
carries the headline test metrics, free details (version, decision, training snapshot...), five
plots and the per-fault-type table. Plots are matplotlib PNGs embedded as base64 data URIs and the
CSS is inline: the file opens offline and can be mailed or archived on its own. Figures are built
as :class:`matplotlib.figure.Figure` objects, never through pyplot, so no global state is touched.

Example::

    >>> metrics = evaluate(test_points, scores, threshold)              # doctest: +SKIP
    >>> write_model_report(settings.model_reports_dir / "v3.html", title="Model version 3",
    ...                    test_points=test_points, scores=scores, threshold=threshold,
    ...                    metrics=metrics, importance=feature_importance(model))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

__all__ = ["feature_importance", "write_model_report"]

TOP_FEATURES = 25
MAX_VALUE_CHARS = 300  # longer detail values are cut, with the full value in a <details> block
_COLOURS = {"normal": "#4c72b0", "anomaly": "#dd8452", "unseen": "#c44e52"}
_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #212529; max-width: 1100px; }
table { border-collapse: collapse; font-size: 14px; margin-bottom: 16px; }
th, td { border: 1px solid #dee2e6; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.unseen { color: #c44e52; font-weight: 600; }
figure { margin: 0 0 24px 0; }
img { max-width: 100%; }
pre { white-space: pre-wrap; word-break: break-all; margin: 4px 0; }
"""


def feature_importance(model: Any, top: int | None = None) -> pd.Series:
    """Gain importance per feature, averaged over the boosted members of a fitted ensemble.

    Each of the ``xgboost`` and ``lightgbm`` members gives a gain vector over
    ``model.feature_names_in_`` (features never split on count 0), normalised to sum 1; the
    result is their mean, sorted descending (ties by name), named ``importance`` and indexed by
    feature name; ``top`` keeps the first ``top``. ``hist_gb`` has no importances and is skipped,
    as is a member whose trees carry no gain at all. Empty when no member contributes.

    >>> feature_importance(model, top=3)  # doctest: +SKIP
    feature
    cpu__mean_5m    0.41
    ...
    """
    names = [str(n) for n in model.feature_names_in_]
    vectors: list[np.ndarray] = []
    if "xgboost" in model.members_:
        booster = model.members_["xgboost"].get_booster()
        gain = booster.get_score(importance_type="gain")
        # Fitted on a numpy array (as the ensemble does) the booster calls features f0, f1, ...
        lookup = {n if booster.feature_names else f"f{j}": j for j, n in enumerate(names)}
        v = np.zeros(len(names))
        for key, value in gain.items():
            if key in lookup:
                v[lookup[key]] += float(value)
        vectors.append(v)
    if "lightgbm" in model.members_:
        v = np.asarray(model.members_["lightgbm"].feature_importance(importance_type="gain"), dtype=float)
        if v.shape != (len(names),):
            raise ValueError(f"lightgbm member has {v.size} features, the model {len(names)}")
        vectors.append(v)
    shares = [v / v.sum() for v in vectors if v.sum() > 0]
    if not shares:
        return pd.Series(dtype=float, name="importance", index=pd.Index([], dtype=object, name="feature"))
    out = pd.Series(np.mean(shares, axis=0), index=pd.Index(names, name="feature"), name="importance")
    order = sorted(range(len(names)), key=lambda j: (-out.iloc[j], names[j]))
    out = out.iloc[order]
    return out if top is None else out.iloc[:top]


def write_model_report(
    path: str | Path,
    *,
    title: str,
    test_points: pd.DataFrame,
    scores: np.ndarray,
    threshold: float,
    metrics: dict,
    importance: pd.Series | None = None,
    details: dict | None = None,
) -> Path:
    """Write the HTML report of one model version at ``path`` (atomically) and return the path.

    ``test_points`` has host, ts, event_id (not null = positive) and fault_type; ``scores`` one
    value per row; ``metrics`` is :func:`anomaly.training.metrics.evaluate` at ``threshold``, plus
    optional ``class_shares`` and ``unseen_types``. Raises ``ValueError`` on empty points, a
    length mismatch, non-finite scores, or a ``metrics["threshold"]`` other than ``threshold``.
    """
    s = np.asarray(scores, dtype=float)
    if len(test_points) == 0:
        raise ValueError("test_points is empty: nothing to report")
    if s.ndim != 1 or s.shape[0] != len(test_points):
        raise ValueError(
            f"scores has {s.size} values (shape {s.shape}) but test_points has {len(test_points)} rows"
        )
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (found NaN or inf)")
    threshold = float(threshold)
    if metrics.get("threshold") is not None and not math.isclose(metrics["threshold"], threshold):
        raise ValueError(f"metrics were computed at threshold {metrics['threshold']}, not {threshold}")
    y = test_points["event_id"].notna().to_numpy()
    unseen = {str(t) for t in metrics.get("unseen_types") or []}
    by_type = list(metrics.get("recall_by_type") or [])

    sections = [
        f"<h1>{_e(title)}</h1>",
        "<h2>Headline (test span)</h2>",
        _table(_headline(threshold, metrics)),
    ]
    if details:
        sections += ["<h2>Details</h2>", _table([(_e(k), _detail(v)) for k, v in details.items()])]
    sections += [
        "<h2>Plots</h2>",
        _img(_pr_curve(y, s, threshold), "Precision-recall curve")
        if y.any()
        else "<p>No positive points in the test span: the precision-recall curve is undefined.</p>",
        _img(_distributions(y, s, threshold), "Score distributions by class"),
        _img(_recall_by_type(by_type, unseen), "Recall per fault type")
        if by_type
        else "<p>No labelled fault types in the test span: no recall per type.</p>",
        _img(
            _importance(importance.sort_values(ascending=False, kind="stable")[:TOP_FEATURES]),
            "Feature importance",
        )
        if importance is not None and len(importance)
        else "<p>No feature importance: the model has no boosted member with gain.</p>",
        _img(_confusion(y, s >= threshold), f"Confusion matrix at threshold {threshold:.4g}"),
    ]
    if by_type:
        sections += ["<h2>Recall per fault type</h2>", _type_table(by_type, unseen)]
    if s.min() >= 0.0 and s.max() <= 1.0:  # calibration is defined for probabilities only
        sections += ["<h2>Calibration (reliability)</h2>", _reliability(y, s)]
    page = (
        f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="UTF-8">\n<title>{_e(title)}</title>\n'
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )
    path = Path(path)
    _write_atomic(path, page)
    return path


# --------------------------------------------------------------------------- tables


def _e(value: object) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    """Ratios with ``digits`` decimals, counts with thousands separators, missing as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def _headline(threshold: float, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    point, event = metrics.get("point") or {}, metrics.get("event") or {}
    rows = [
        ("Point threshold (is_anomaly when score ≥)", f"{threshold:.4g}"),
        ("Alert threshold (events, incidents)", _num(metrics.get("alert_threshold"), 4)),
        ("Point precision", _num(point.get("precision"))),
        ("Point recall", _num(point.get("recall"))),
        ("Point F1", _num(point.get("f1"))),
        ("Point PR-AUC", _num(point.get("pr_auc"))),
        ("Event precision", _num(event.get("event_precision"))),
        ("Event recall", _num(event.get("event_recall"))),
        ("Event F1", _num(event.get("event_f1"))),
        ("Events detected / total", f"{_num(event.get('detected'))} / {_num(event.get('events'))}"),
        ("False-alarm events", _num(event.get("false_alarm_events"))),
        ("Mean time to detect (s)", _num(event.get("mean_time_to_detect"), 1)),
        ("Median time to detect (s)", _num(event.get("median_time_to_detect"), 1)),
    ]
    for key, value in (metrics.get("class_shares") or {}).items():
        shown = f"{float(value):.2%}" if "share" in key and value is not None else _num(value)
        rows.append((key.replace("_", " ").capitalize(), shown))
    if metrics.get("calibration"):
        rows += [("Brier score", _num(metrics["calibration"].get("brier"), 4))]
        rows += [("Expected calibration error", _num(metrics["calibration"].get("ece"), 4))]
    return [(_e(k), _e(v)) for k, v in rows]


def _detail(value: Any) -> str:
    """A details value as escaped HTML: text as is, other values as JSON, long ones folded."""
    if value is None:
        text = "—"
    elif isinstance(value, str | int | float | np.number):
        text = str(value)
    elif isinstance(value, datetime | date | pd.Timestamp):
        text = value.isoformat()
    else:
        text = json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    if len(text) <= MAX_VALUE_CHARS:
        return _e(text)
    return f"<details><summary>{_e(text[:MAX_VALUE_CHARS])}…</summary><pre>{_e(text)}</pre></details>"


def _table(rows: list[tuple[str, str]]) -> str:
    """Two columns of already-escaped HTML."""
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _grid(headers: list[str], rows: list[list[str]], marked: Sequence[bool] = ()) -> str:
    """A table of text cells (escaped here); a ``marked`` row's first cell is shown as unseen."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    marks = [' class="unseen"' if m else "" for m in marked] + [""] * (len(rows) - len(marked))
    body = "".join(
        f"<tr><td{mark}>{_e(row[0])}</td>"
        + "".join(f'<td class="num">{_e(c)}</td>' for c in row[1:])
        + "</tr>"
        for mark, row in zip(marks, rows, strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _type_name(record: Mapping[str, Any], unseen: set[str]) -> str:
    name = "(no type)" if record.get("fault_type") is None else str(record["fault_type"])
    return f"{name} (unseen)" if name in unseen else name


def _type_table(by_type: list[dict[str, Any]], unseen: set[str]) -> str:
    cols = ("events", "detected", "event_recall", "points", "point_recall")
    rows = [[_type_name(r, unseen), *(_num(r.get(c)) for c in cols)] for r in by_type]
    marked = [str(r.get("fault_type")) in unseen for r in by_type]
    return _grid(["Fault type", "Events", "Detected", "Event recall", "Points", "Point recall"], rows, marked)


def _reliability(y: np.ndarray, s: np.ndarray) -> str:
    from anomaly.training.metrics import calibration

    table = calibration(y, s)["reliability"]
    cells = ("count", "mean_score", "observed_rate")
    rows = [
        [
            f"[{r['lower']:.1f}, {r['upper']:.1f}{']' if r['upper'] == 1 else ')'}",
            *(_num(r[c]) for c in cells),
        ]
        for r in table[table["count"] > 0].to_dict("records")
    ]
    return _grid(["Score bin", "Points", "Mean score", "Observed rate"], rows)


# --------------------------------------------------------------------------- plots


def _mpl(text: object) -> str:
    """Text from data for matplotlib: a ``$`` would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def _img(fig: Figure, caption: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _pr_curve(y: np.ndarray, s: np.ndarray, threshold: float) -> Figure:
    precision, recall, _ = precision_recall_curve(y, s, drop_intermediate=True)
    flagged = s >= threshold
    tp = int((y & flagged).sum())
    op_p, op_r = (tp / flagged.sum() if flagged.any() else 0.0), tp / y.sum()
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    ax.step(recall, precision, where="post", label=f"PR curve (PR-AUC {average_precision_score(y, s):.3f})")
    ax.axhline(y.mean(), color="grey", linestyle=":", label=f"positive share {y.mean():.3f}")
    ax.plot([op_r], [op_p], "o", color=_COLOURS["unseen"], label=f"threshold {threshold:.4g}")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1.02), ylim=(0, 1.02), title="Precision-recall")
    ax.legend(loc="lower left")
    return fig


def _distributions(y: np.ndarray, s: np.ndarray, threshold: float) -> Figure:
    bins = np.linspace(min(0.0, s.min()), max(1.0, s.max()), 51)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for name, mask in (("normal", ~y), ("anomaly", y)):
        if mask.any():
            ax.hist(s[mask], bins=bins, alpha=0.55, color=_COLOURS[name], label=f"{name} (n={mask.sum():,})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_yscale("log")
    ax.set(xlabel="Score", ylabel="Points (log scale)", title="Score distributions by class")
    ax.legend()
    return fig


def _recall_by_type(by_type: list[dict[str, Any]], unseen: set[str]) -> Figure:
    labels = [_mpl(_type_name(r, unseen)) for r in by_type]
    pos = np.arange(len(by_type))
    fig = Figure(figsize=(6.4, 1.2 + 0.5 * len(by_type)))
    ax = fig.add_subplot()
    ax.barh(pos - 0.2, [r.get("point_recall") or 0.0 for r in by_type], 0.4, label="point recall")
    ax.barh(pos + 0.2, [r.get("event_recall") or 0.0 for r in by_type], 0.4, label="event recall")
    ax.set_yticks(pos, labels)
    for tick, r in zip(ax.get_yticklabels(), by_type, strict=True):
        if str(r.get("fault_type")) in unseen:
            tick.set_color(_COLOURS["unseen"])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.05), xlabel="Recall", title="Recall per fault type")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _importance(importance: pd.Series) -> Figure:
    fig = Figure(figsize=(6.4, 1.0 + 0.28 * len(importance)))
    ax = fig.add_subplot()
    ax.barh(np.arange(len(importance)), importance.to_numpy(dtype=float), color=_COLOURS["normal"])
    ax.set_yticks(np.arange(len(importance)), [_mpl(n) for n in importance.index])
    ax.invert_yaxis()
    ax.set(
        xlabel="Share of gain (mean over boosted members)",
        title=f"Feature importance (top {len(importance)})",
    )
    return fig


def _confusion(y: np.ndarray, flagged: np.ndarray) -> Figure:
    counts = np.bincount(2 * y.astype(int) + flagged, minlength=4).reshape(2, 2)  # rows: actual
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig = Figure(figsize=(4.6, 4.0))
    ax = fig.add_subplot()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            share = f"{shares[i, j]:.1%}" if totals[i, 0] else "—"
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, f"{counts[i, j]:,}\n{share}", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], ["normal", "anomaly"])
    ax.set_yticks([0, 1], ["normal", "anomaly"])
    ax.set(xlabel="Predicted", ylabel="Actual", title="Confusion matrix (row shares)")
    return fig


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder: a reader sees the old page or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
