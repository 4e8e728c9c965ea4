"""Data Docs pages and index: real Great Expectations results rendered to static HTML."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from anomaly.validation.docs import render_result, write_index


@pytest.fixture(scope="module")
def result():
    """A validation of 100 rows: host is never null (passes), value has 2 NaN (fails)."""
    import great_expectations as gx

    df = pd.DataFrame(
        {
            "host": [f"host-{i % 5}" for i in range(100)],
            "metric": "cpu_util",
            "ts": pd.date_range("2024-01-01", periods=100, freq="min", tz="UTC").astype(
                "datetime64[us, UTC]"
            ),
            "value": np.linspace(0.0, 1.0, 100),
        }
    )
    df.loc[[3, 7], "value"] = np.nan
    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("src").add_dataframe_asset("raw")
    batch_definition = asset.add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name="raw.metrics")
    suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="host"))
    suite.add_expectation(
        gx.expectations.ExpectColumnValuesToNotBeNull(
            column="value", meta={"name": "raw.value_not_nan", "severity": "critical"}, severity="critical"
        )
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    return batch.validate(suite, result_format="SUMMARY")


def _links(html: str) -> list[str]:
    """Local (non-URL, non-anchor) href/src targets, query strings dropped."""
    targets = re.findall(r'(?:href|src)="([^"]+)"', html)
    return [unquote(t.split("?")[0]) for t in targets if not re.match(r"[a-z]+:|#", t)]


def test_render_result(result, tmp_path: Path) -> None:
    assert not result.success
    root = tmp_path / "reports" / "validation"
    page = root / "runs" / "x.html"
    summary = {"suite": "raw.metrics", "run id": "r-1", "status": "failed"}

    assert render_result(result, page, title="raw.metrics <2024-01-01>", summary=summary) == page

    html = page.read_text()
    assert "<title>raw.metrics &lt;2024-01-01&gt;</title>" in html
    assert "<th" in html and "r-1" in html  # the summary table
    # GE's failure rendering: failed status icon, the failing column and its observed value
    assert "fas fa-times text-danger" in html and "Failed" in html
    assert "value" in html and "2 unexpected values found" in html and "98% not null" in html
    assert "100% not null" in html  # the passing expectation on host

    css = root / "static" / "styles" / "data_docs_default_styles.css"
    assert css.is_file() and (root / "static" / "images" / "favicon.ico").is_file()
    assert '<link rel="stylesheet" href="../static/styles/data_docs_default_styles.css"/>' in html
    links = _links(html)
    assert "../index.html" in links
    for link in links:
        if link != "../index.html":  # written by write_index
            assert (page.parent / link).resolve().is_file(), link
    assert "expectations/raw/metrics.html" not in html  # GE's suite page link, not part of our site

    # A second page reuses static/, and a page outside any "validation" folder gets its own.
    mtime = css.stat().st_mtime_ns
    render_result(result, root / "y.html", title="y")
    assert css.stat().st_mtime_ns == mtime
    assert 'href="static/styles/data_docs_default_styles.css"' in (root / "y.html").read_text()
    elsewhere = tmp_path / "other" / "z.html"
    render_result(result, elsewhere, title="z")
    assert (elsewhere.parent / "static" / "styles" / "data_docs_default_styles.css").is_file()
    assert not list(root.rglob("*.tmp")) and not list(root.glob(".static-*"))


def test_write_index(result, tmp_path: Path) -> None:
    root = tmp_path / "reports" / "validation"
    failed_page = render_result(result, root / "runs" / "run 2.html", title="failed")
    passed_page = root / "runs" / "run-1.html"
    passed_page.write_text("<html></html>")
    common = {"source": "prom", "interval_start": datetime(2024, 1, 1, tzinfo=UTC), "warnings": []}
    runs = [
        {
            **common,
            "validated_at": datetime(2024, 1, 1, 1, 5, tzinfo=UTC),
            "suite": "<script>alert(1)</script>",
            "interval_end": "2024-01-01T01:00:00+00:00",
            "run_id": "r-2",
            "status": "failed",
            "failed": ["raw.value_not_nan"],
            "rows": 1234,
            "page": failed_page,  # absolute
        },
        {
            **common,
            "validated_at": "2024-01-01T00:05:00+00:00",
            "suite": "raw.metrics",
            "interval_end": datetime(2024, 1, 1, 0, 0, tzinfo=UTC),
            "run_id": "r-1",
            "status": "passed",
            "failed": [],
            "warnings": ["raw.few_hosts"],
            "rows": 100,
            "page": "runs/run-1.html",  # relative to root
        },
    ]

    index = write_index(root, runs)

    assert index == root / "index.html"
    html = index.read_text()
    links = _links(html)
    assert links == ["runs/run 2.html", "runs/run-1.html"]  # newest first, as given
    assert all((root / link).is_file() for link in links)
    assert "raw.value_not_nan" in html and "raw.few_hosts" in html and "1,234" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "1 passed" in html and "1 failed" in html and "2 runs" in html
    assert html.index("r-2") < html.index("r-1")
    # the page's link back to the index now resolves
    assert (failed_page.parent / "../index.html").resolve() == index.resolve()


def test_write_index_empty(tmp_path: Path) -> None:
    html = write_index(tmp_path / "validation", [], title="Runs & more").read_text()
    assert "0 runs" in html and "Runs &amp; more" in html
