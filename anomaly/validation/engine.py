"""Run a suite (:class:`~anomaly.validation.suites.Check` list) on a pandas batch with Great
Expectations 1.x, and read the outcome of every expectation.

Batches are validated as dataframes: GE's SQL datasource fails on DuckDB (see the design notes).
Importing this module imports Great Expectations (seconds): only validation tasks do.

Speed: text key columns are dictionary-encoded (pandas categoricals) before GE sees them, which
makes set membership, uniqueness and row conditions about 4x faster on a million rows; only
columns whose every value is a string are encoded, so the type expectations still see a wrong
type as it came.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from anomaly.validation.suites import CRITICAL, Check

log = logging.getLogger(__name__)

EXAMPLES = 5


@dataclass
class CheckOutcome:
    """What one expectation found."""

    name: str
    expectation_type: str
    column: str | None
    severity: str
    description: str
    success: bool
    observed: str
    unexpected_count: int | None
    unexpected_percent: float | None
    element_count: int | None
    examples: str

    @property
    def critical_failure(self) -> bool:
        return not self.success and self.severity == CRITICAL


@dataclass
class SuiteRun:
    """One validation of one batch: GE's result (for Data Docs) and our reading of it."""

    suite: str
    rows: int
    seconds: float
    outcomes: list[CheckOutcome]
    result: Any = field(repr=False)  # great_expectations ExpectationSuiteValidationResult

    @property
    def failed(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.critical_failure]

    @property
    def warnings(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if not o.success and not o.critical_failure]

    @property
    def status(self) -> str:
        return "failed" if self.failed else "warning" if self.warnings else "passed"


@cache
def _batch_definition(suite: str):
    """One ephemeral GE context per process, one dataframe asset per suite."""
    context = _context()
    source = context.data_sources.add_or_update_pandas(name=f"anomaly_{suite}")
    asset = source.add_dataframe_asset(name=suite)
    return asset.add_batch_definition_whole_dataframe(name="interval")


@cache
def _context():
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def prepare(frame: pd.DataFrame, text_columns: Sequence[str]) -> pd.DataFrame:
    """Dictionary-encode the all-string columns of ``text_columns``; leave anything else as is."""
    out = frame
    for col in text_columns:
        if col not in frame.columns:
            continue
        series = frame[col]
        if isinstance(series.dtype, pd.CategoricalDtype):
            if pd.api.types.infer_dtype(series.cat.categories, skipna=True) != "string":
                out = out.assign(**{col: series.astype(object)})  # let the type check see it
            continue
        if series.dtype == object and pd.api.types.infer_dtype(series, skipna=False) == "string":
            out = out.assign(**{col: series.astype("category")})
    return out


def run(
    suite: str,
    frame: pd.DataFrame,
    checks: Sequence[Check],
    *,
    text_columns: Sequence[str] = (),
    index_columns: Sequence[str] = (),
) -> SuiteRun:
    """Validate ``frame`` against ``checks``; ``index_columns`` name the rows in examples."""
    t0 = time.perf_counter()
    batch_frame = prepare(frame, text_columns)
    definition = _batch_definition(suite)  # creates the context a suite needs first
    gx_suite = gx.ExpectationSuite(name=suite)
    encoded = {
        c for c in text_columns if c in batch_frame and isinstance(batch_frame[c].dtype, pd.CategoricalDtype)
    }
    for check in checks:
        cls = getattr(gxe, check.expectation)
        kwargs = dict(check.kwargs)
        if where := kwargs.pop("where", None):
            kwargs["row_condition"] = _condition(where)
        is_str_check = check.expectation == "ExpectColumnValuesToBeOfType" and kwargs.get("type_") == "str"
        if is_str_check and check.column in encoded:  # prepare() checked every value is a string
            kwargs["type_"] = "CategoricalDtypeType"
        gx_suite.add_expectation(
            cls(
                **kwargs,
                severity=check.severity,
                description=check.description,
                meta={"name": check.name, "severity": check.severity},
            )
        )
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}
    if index_columns:
        result_format["unexpected_index_column_names"] = list(index_columns)
    batch = definition.get_batch(batch_parameters={"dataframe": batch_frame})
    result = batch.validate(gx_suite, result_format=result_format)
    by_name = {c.name: c for c in checks}
    outcomes = [_outcome(r, by_name) for r in result.results]
    order = {c.name: i for i, c in enumerate(checks)}
    outcomes.sort(key=lambda o: order.get(o.name, len(order)))
    seconds = time.perf_counter() - t0
    log.info("suite %s: %d rows, %d expectations in %.2fs", suite, len(frame), len(outcomes), seconds)
    return SuiteRun(suite, len(frame), seconds, outcomes, result)


def _condition(where: dict[str, Any]) -> Any:
    """{column: value or list} -> a GE row condition (all must hold)."""
    from great_expectations.expectations.row_conditions import Column

    parts = [
        Column(col).is_in(list(v)) if isinstance(v, (list, tuple, set)) else Column(col) == v
        for col, v in where.items()
    ]
    out = parts[0]
    for part in parts[1:]:
        out = out & part
    return out


def _outcome(res: Any, by_name: dict[str, Check]) -> CheckOutcome:
    config = res.expectation_config
    name = (config.meta or {}).get("name", config.type)
    check = by_name.get(name)
    detail = res.result or {}
    error = _raised(res.exception_info)
    raised = error is not None
    unexpected = detail.get("unexpected_count")
    percent = detail.get("unexpected_percent_total", detail.get("unexpected_percent"))
    elements = detail.get("element_count")
    if raised:
        observed = f"error: {error.strip()[:300]}"
    elif detail.get("observed_value") is not None:
        observed = _short(detail["observed_value"])
    elif unexpected is not None:
        share = f" ({percent:.2f}%)" if percent is not None and not math.isnan(percent) else ""
        observed = f"{unexpected} unexpected of {elements} rows{share}"
    else:
        observed = ""
    examples = detail.get("partial_unexpected_index_list") or detail.get("partial_unexpected_list") or []
    return CheckOutcome(
        name=name,
        expectation_type=config.type,
        column=config.kwargs.get("column"),
        severity=check.severity if check else str(getattr(config, "severity", CRITICAL)),
        description=check.description if check else "",
        success=bool(res.success) and not raised,
        observed=observed,
        unexpected_count=int(unexpected) if unexpected is not None else None,
        unexpected_percent=float(percent) if percent is not None else None,
        element_count=int(elements) if elements is not None else None,
        examples=_examples(list(examples)[:EXAMPLES]),
    )


def _raised(info: Any) -> str | None:
    """The error message when the expectation (or a metric it needed) raised, else None.

    GE 1.x puts it at the top of ``exception_info`` or, for a metric, under the metric's id."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "raised")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "raised")
    return None


def _examples(items: list[Any]) -> str:
    """'host=h1 metric=cpu_util ts=2026-03-01T10:01:00+00:00 value=1.5; ...' or '1.5, nan'."""
    shown = []
    for item in items:
        if isinstance(item, dict):
            shown.append(" ".join(f"{k}={_plain(v)}" for k, v in item.items()))
        else:
            shown.append(_plain(item))
    return _short("; ".join(shown))


def _plain(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    return str(value)


def _short(value: Any, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
