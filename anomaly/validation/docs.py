"""Static HTML "Data Docs" for validation runs, without a Great Expectations DataContext.

A GE site rebuild re-renders every stored validation result (O(runs)); here each
validation is rendered once, to its own page, with GE's own page renderer and
Jinja view, and :func:`write_index` keeps a plain index of runs next to them::

    <ANOMALY_HOME>/reports/validation/      (root)
        index.html                          write_index()
        static/{images,styles,fonts}/       GE's static assets, copied once
        runs/<name>.html                    render_result(), one per validation

GE's templates assume GE's own site layout for their relative links; the few
templates that carry such links (favicon, top navbar, footer) are replaced so
pages link to ``<root>/static`` and ``<root>/index.html`` relative to
themselves, and GE's stylesheet is linked from ``static/`` rather than inlined.
Bootstrap, jQuery and Font Awesome still come from GE's CDN links: offline, a
page loses that styling and the icons, not its content.

Great Expectations is imported inside the functions: it takes seconds to import.
"""

from __future__ import annotations

import functools
import html
import os
import shutil
import tempfile
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult

ROOT_NAME = "validation"  # <home>/reports/validation: the folder holding index.html and static/
STATIC_DIR = "static"
INDEX_NAME = "index.html"
_CSS = "styles/data_docs_default_styles.css"  # also the marker that static/ was copied completely

# status -> (text colour, background colour)
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "passed": ("#155724", "#d4edda"),
    "warning": ("#856404", "#fff3cd"),
    "failed": ("#721c24", "#f8d7da"),
}
_UNKNOWN_COLOURS = ("#383d41", "#e2e3e5")

# Templates of GE's page view replaced by ours (values computed in Python, already escaped).
_TEMPLATE_OVERRIDES = {
    "favicon.j2": "{{ anomaly_head }}",
    "top_navbar.j2": "{{ anomaly_header }}",
    "data_docs_default_styles.css": "",  # linked from static/ by anomaly_head instead of inlined
    "cloud-footer.j2": "",
}
_GE_TITLE = "<title>Data documentation compiled by Great Expectations</title>"


def render_result(
    result: ExpectationSuiteValidationResult,
    path: Path,
    *,
    title: str,
    summary: dict[str, str] | None = None,
) -> Path:
    """Write one validation result as a standalone HTML page at ``path``; return ``path``.

    ``result`` is what ``ValidationDefinition.run()`` or ``Batch.validate()`` returns. The page is
    GE's validation results page (failed expectations with their observed values), under a header
    with ``title``, a link to the index and the optional ``summary`` table. GE's static assets are
    copied once into ``<root>/static`` (root: the nearest ancestor of ``path`` named "validation",
    else ``path.parent``) and linked relatively.
    """
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from markupsafe import Markup

    path = Path(path)
    root = validation_root(path)
    _ensure_static(root)
    static_url = _href(root / STATIC_DIR, path.parent)
    index_url = _href(root / INDEX_NAME, path.parent)

    document = ValidationResultsPageRenderer().render(result)
    _drop_suite_link(document)
    head = (
        f'<link rel="stylesheet" href="{static_url}/{_CSS}"/>\n'
        f'<link rel="shortcut icon" href="{static_url}/images/favicon.ico" type="image/x-icon"/>'
    )
    page = _page_view().render(
        document,
        show_how_to_buttons=False,
        anomaly_head=Markup(head),
        anomaly_header=Markup(_page_header(title, summary or {}, static_url, index_url)),
    )
    page = page.replace(_GE_TITLE, f"<title>{html.escape(title)}</title>", 1)
    _write_atomic(path, page)
    return path


def write_index(root: Path, runs: list[dict[str, Any]], *, title: str = "Validation runs") -> Path:
    """Write ``root/index.html``, one row per run in the order given (newest first); return its path.

    Each run has: validated_at, suite, source, interval_start, interval_end, run_id, status
    ('passed' | 'warning' | 'failed'), failed and warnings (lists of expectation names), rows and
    page (the run's HTML page, absolute or relative to ``root``).
    """
    root = Path(root)
    counts = Counter(str(run.get("status", "")).lower() for run in runs)
    statuses = [s for s in STATUS_COLOURS if counts[s]] + sorted(set(counts) - set(STATUS_COLOURS))
    badges = " ".join(
        f'<span style="{_status_style(s)};padding:2px 8px;border-radius:4px">'
        f"{counts[s]} {html.escape(s or 'unknown')}</span>"
        for s in statuses
    )
    rows = "\n".join(_index_row(root, run) for run in runs)
    headers = "".join(
        f"<th>{h}</th>"
        for h in (
            "Validated at",
            "Status",
            "Suite",
            "Source",
            "Interval",
            "Rows checked",
            "Failed",
            "Warnings",
            "Run id",
        )
    )
    page = f"""<!DOCTYPE html>
<html>
<head>
<meta charset="UTF-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #212529; }}
table {{ border-collapse: collapse; font-size: 14px; }}
th, td {{ border: 1px solid #dee2e6; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f1f3f5; }}
tr:nth-child(even) td {{ background: #fafbfc; }}
td.status {{ font-weight: 600; }}
td.num {{ text-align: right; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(runs)} run{"" if len(runs) == 1 else "s"}: {badges}</p>
<table>
<thead><tr>{headers}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
    path = root / INDEX_NAME
    _write_atomic(path, page)
    return path


def validation_root(path: Path) -> Path:
    """The reports root of a page: its nearest ancestor named "validation", else its folder."""
    return next((p for p in Path(path).parents if p.name == ROOT_NAME), Path(path).parent)


def _index_row(root: Path, run: dict[str, Any]) -> str:
    status = str(run.get("status", "")).lower()
    page = Path(run["page"]) if run.get("page") else None
    when = html.escape(_fmt(run.get("validated_at")))
    if page is not None:
        when = f'<a href="{_href(page if page.is_absolute() else root / page, root)}">{when}</a>'
    interval = f"{_fmt(run.get('interval_start'))} → {_fmt(run.get('interval_end'))}"
    rows = run.get("rows")
    cells = [
        f"<td>{when}</td>",
        f'<td class="status" style="{_status_style(status)}">{html.escape(status or "unknown")}</td>',
        f"<td>{html.escape(_fmt(run.get('suite')))}</td>",
        f"<td>{html.escape(_fmt(run.get('source')))}</td>",
        f"<td>{html.escape(interval)}</td>",
        f'<td class="num">{f"{rows:,}" if isinstance(rows, int) else html.escape(_fmt(rows))}</td>',
        f"<td>{_names(run.get('failed'), STATUS_COLOURS['failed'][0])}</td>",
        f"<td>{_names(run.get('warnings'), STATUS_COLOURS['warning'][0])}</td>",
        f"<td><code>{html.escape(_fmt(run.get('run_id')))}</code></td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _names(names: list[str] | None, colour: str) -> str:
    if not names:
        return "—"
    return "<br>".join(f'<span style="color:{colour}">{html.escape(str(n))}</span>' for n in names)


def _page_header(title: str, summary: dict[str, str], static_url: str, index_url: str) -> str:
    rows = "".join(
        f'<tr><th style="padding:2px 12px 2px 0">{html.escape(str(k))}</th>'
        f'<td style="padding:2px 8px;{_status_style(str(v).lower()) if k == "status" else ""}">'
        f"{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    table = f'<table style="margin-top:8px;font-size:14px">{rows}</table>' if rows else ""
    return f"""<nav class="border-bottom pl-5 pr-5 pt-2 pb-2">
  <a href="{index_url}"><img src="{static_url}/images/logo-long.png" alt="Great Expectations"
     style="height:40px;width:auto"/></a>
  <span style="margin-left:16px"><a href="{index_url}">Validation runs</a> /
    <strong>{html.escape(title)}</strong></span>
  {table}
</nav>"""


def _status_style(status: str) -> str:
    colour, background = STATUS_COLOURS.get(status, _UNKNOWN_COLOURS)
    return f"color:{colour};background:{background}"


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def _href(target: Path, start: Path) -> str:
    """URL of ``target`` relative to the folder ``start``, quoted and HTML-escaped for an attribute."""
    return html.escape(quote(Path(os.path.relpath(target, start)).as_posix()))


@functools.cache
def _page_view() -> Any:
    """GE's page view, with the templates that link into GE's own site layout replaced."""
    from great_expectations.render.view import DefaultJinjaPageView
    from jinja2 import ChoiceLoader, DictLoader

    view = DefaultJinjaPageView()
    view.env.loader = ChoiceLoader([DictLoader(_TEMPLATE_OVERRIDES), view.env.loader])
    return view


def _drop_suite_link(document: Any) -> None:
    """Unlink the suite name in the overview: it points to GE's expectations/ pages, which we don't write."""
    try:
        header = document.sections[0].content_blocks[0]
        header.subheader.string_template["styling"]["params"].pop("expectation_suite_name", None)
    except (AttributeError, IndexError, KeyError, TypeError):
        pass  # another GE layout: a dead link is harmless


def _ensure_static(root: Path) -> Path:
    """Copy GE's static assets into ``root/static`` unless already there (concurrent callers: one wins)."""
    target = root / STATIC_DIR
    if (target / _CSS).is_file():
        return target
    from great_expectations.render import view

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{STATIC_DIR}-{uuid.uuid4().hex}"
    try:
        shutil.copytree(Path(view.__file__).parent / "static", tmp)
        tmp.rename(target)
    except OSError:
        if not (target / _CSS).is_file():  # lost a race: fine; otherwise a real error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_atomic(path: Path, text: str) -> None:
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
