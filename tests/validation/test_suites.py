"""The suites as code (no Great Expectations needed): names, tolerances, ranges, severity overrides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from anomaly.validation import suites

START = datetime(2026, 3, 1, 10, tzinfo=UTC)
END = START + timedelta(hours=1)
KINDS = {"cpu_util": "ratio", "mem_util": "ratio", "load1": "gauge", "net_in_bytes": "rate"}
ROW_LEVEL = {
    "raw.value_not_nan",
    "raw.value_finite",
    "raw.ts_in_interval",
    "raw.key_unique",
    "raw.range_ratio",
    "raw.range_rate",
}


def _by_name(checks: list[suites.Check]) -> dict[str, suites.Check]:
    return {c.name: c for c in checks}


def test_row_level_expectations_tolerate_the_reject_share_and_structural_ones_do_not() -> None:
    checks = _by_name(suites.raw_suite(START, END, KINDS, ["h1"], 0.01))
    tolerant = {name for name, c in checks.items() if "mostly" in c.kwargs}
    assert tolerant == ROW_LEVEL
    assert all(checks[name].kwargs["mostly"] == pytest.approx(0.99) for name in ROW_LEVEL)
    # with no tolerance, every row counts
    strict = suites.raw_suite(START, END, KINDS, ["h1"], 0.0)
    assert not any("mostly" in c.kwargs for c in strict)


def test_ranges_exist_for_the_kinds_in_the_catalog_only() -> None:
    checks = _by_name(suites.raw_suite(START, END, KINDS, [], 0.01))
    ranges = sorted(n for n in checks if n.startswith("raw.range_"))
    assert ranges == ["raw.range_rate", "raw.range_ratio"]  # gauge has no range; no counter here
    ratio, rate = checks["raw.range_ratio"].kwargs, checks["raw.range_rate"].kwargs
    assert ratio["where"] == {"metric": ["cpu_util", "mem_util"]}
    assert (ratio["min_value"], ratio["max_value"]) == (0.0, 1.0)
    assert rate["where"] == {"metric": ["net_in_bytes"]} and rate["min_value"] == 0.0
    assert "max_value" not in rate
    counter = _by_name(suites.raw_suite(START, END, {"requests_total": "counter"}, [], 0.01))
    assert counter["raw.range_counter"].kwargs["min_value"] == 0.0
    assert counter["raw.range_counter"].description == "counter metrics (requests_total) are >= 0"


def test_interval_bounds_are_half_open() -> None:
    ts = _by_name(suites.raw_suite(START, END, KINDS, [], 0.01))["raw.ts_in_interval"].kwargs
    assert (ts["min_value"], ts["max_value"], ts["strict_max"]) == (START, END, True)
    assert not ts.get("strict_min", False)


def test_default_severities() -> None:
    raw = suites.raw_suite(START, END, KINDS, [], 0.01)
    warnings = {c.name for c in raw if c.severity == suites.WARNING}
    assert warnings == {"raw.known_metrics", "raw.known_hosts"}
    (completeness,) = suites.completeness_suite(0.9)
    assert (completeness.name, completeness.severity) == ("raw.completeness", suites.WARNING)
    assert completeness.kwargs == {"column": "share", "min_value": 0.9}


def test_severity_overrides() -> None:
    raw = suites.raw_suite(START, END, KINDS, [], 0.01)
    changed = _by_name(suites.with_overrides(raw, " raw.known_hosts = critical , raw.value_not_nan=WARNING "))
    assert changed["raw.known_hosts"].severity == suites.CRITICAL
    assert changed["raw.value_not_nan"].severity == suites.WARNING
    assert changed["raw.value_finite"].severity == suites.CRITICAL  # untouched
    # a kind's range may be overridden even when this catalog has no metric of that kind
    assert suites.with_overrides(raw, "raw.range_percent=warning") == raw
    with pytest.raises(suites.SuiteConfigError, match=r"unknown expectation\(s\) raw.nope"):
        suites.with_overrides(raw, "raw.nope=warning")
    with pytest.raises(suites.SuiteConfigError, match="is not name=critical or name=warning"):
        suites.with_overrides(raw, "raw.known_hosts=fatal")
    with pytest.raises(suites.SuiteConfigError, match="severity must be one of"):
        suites.Check("x", "ExpectColumnValuesToNotBeNull", {}, "fatal", "x")
