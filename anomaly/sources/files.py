"""Metrics from CSV (``.csv``, ``.csv.gz``) and Parquet (``.parquet``) files matched by globs.

Two layouts are understood, per file::

    long:  ts, host, metric, value          (one row per sample)
    wide:  ts, host, <metric_a>, <metric_b>  (one row per host and time, one column per metric)

``layout="auto"`` picks long when a file has the metric or value column, wide otherwise.
Files are read in sorted path order and rows keep their order within a file, so the same
files always give the same frame.

What passes through untouched, for the ingest step to quarantine with a reason:

* value text that is not a number (``"n/a"``, ``"12,5"``): kept as text, the value column is
  then ``object`` dtype;
* a missing value in the long layout (an empty or blank CSV cell, a Parquet null): ``None`` in
  an ``object`` value column (``<NA>`` in a ``boolean`` one), so the ingest reports it as
  ``null_value``; a real NaN (Parquet float NaN, the text ``nan``) stays a float NaN;
* Parquet ``decimal`` values become float64 (a translation); ``bool`` values stay ``bool`` (the
  ingest rejects them as ``non_numeric``);
* a missing timestamp (an empty CSV cell, a Parquet null) is read whatever the interval, as
  ``None`` in an ``object`` ts column, so the ingest quarantines the row as ``bad_timestamp``;
* CSV timestamps without an offset (``2025-01-01T00:00:00``): kept *naive*. Timestamps with
  ``Z`` or an offset become UTC-aware. For the interval filter a naive value is compared as
  if it were UTC, but it is not converted. Parquet timestamp columns behave the same way
  (with a time zone: converted to UTC; without: naive).

In the wide layout an empty cell (an empty or blank CSV cell, a Parquet null) means "this metric
was not reported at this time": it is an absent sample, not a value, and gives no row. A real
NaN in a Parquet float column is a value and does give a row.

A CSV timestamp that does not parse as ISO-8601 at all is a structural problem of the file,
not of one sample: it raises ``SourceError`` naming the file, row and text.

Example::

    >>> src = FilesSource("/data/metrics/*.parquet")   # doctest: +SKIP
    >>> src.fetch(start, end).columns.tolist()         # doctest: +SKIP
    ['ts', 'host', 'metric', 'value']
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from anomaly.sources.base import CANONICAL_COLUMNS, SourceError, empty_frame, plan_layout, require_aware

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from anomaly.settings import Settings

Layout = Literal["long", "wide", "auto"]

# Bytes per CSV block: bounds memory to one block plus the interval's result.
CSV_BLOCK_BYTES = 16 << 20

# An ISO-8601 date-time whose time part ends in Z or +hh[:mm] / -hh[:mm]. The time part is required
# so that the day of a date-only value ("2025-01-01") is not mistaken for a "-01" offset.
_HAS_OFFSET = re.compile(r"^\s*\d{4}-?\d{2}-?\d{2}[Tt ].*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$")

_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


def _kind(path: Path) -> Literal["csv", "parquet"] | None:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    return None


def _utc_naive(value: datetime) -> datetime:
    """An aware bound as naive UTC wall clock, for comparing with naive timestamps."""
    return value.astimezone(UTC).replace(tzinfo=None)


class FilesSource:
    """Read ``[start, end)`` from CSV/Parquet files in long or wide layout.

    ``paths`` is one glob pattern or a list of them (``~`` and ``**`` work); a pattern without
    wildcards names one file. In wide layout every column except ts and host is a metric unless
    ``metric_columns`` names them.

    Example::

        >>> src = FilesSource(["/data/a/*.csv.gz", "/data/b/*.parquet"], layout="wide")  # doctest: +SKIP
        >>> src.fetch(datetime(2025, 1, 1, tzinfo=UTC),
        ...           datetime(2025, 1, 2, tzinfo=UTC))                       # doctest: +SKIP
    """

    name = "files"

    def __init__(
        self,
        paths: str | Sequence[str],
        *,
        layout: Layout = "auto",
        ts_column: str = "ts",
        host_column: str = "host",
        metric_column: str = "metric",
        value_column: str = "value",
        metric_columns: Sequence[str] | None = None,
    ) -> None:
        if layout not in ("long", "wide", "auto"):
            raise SourceError(f"files source: layout must be 'long', 'wide' or 'auto', got {layout!r}")
        self.patterns: tuple[str, ...] = (paths,) if isinstance(paths, str) else tuple(paths)
        if not self.patterns:
            raise SourceError("files source: no path patterns given")
        self.layout: Layout = layout
        self.ts_column = ts_column
        self.host_column = host_column
        self.metric_column = metric_column
        self.value_column = value_column
        self.metric_columns = tuple(metric_columns) if metric_columns is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> FilesSource:
        """Build from ``ANOMALY_FILES_GLOB``.

        Example::

            >>> from anomaly.settings import Settings
            >>> FilesSource.from_settings(Settings(files_glob="/data/*.csv")).patterns
            ('/data/*.csv',)
        """
        return cls(settings.files_glob)

    def __repr__(self) -> str:
        return f"FilesSource(paths={list(self.patterns)!r}, layout={self.layout!r})"

    # ------------------------------------------------------------------ files
    def files(self) -> list[Path]:
        """The matched files, sorted; raises ``SourceError`` when nothing matches.

        Example::

            >>> FilesSource("/nonexistent/*.csv").files()
            Traceback (most recent call last):
            ...
            anomaly.sources.base.SourceError: files source: no files match '/nonexistent/*.csv'
        """
        found: set[str] = set()
        for pattern in self.patterns:
            expanded = os.path.expanduser(pattern)
            if glob.has_magic(expanded):
                found.update(glob.glob(expanded, recursive=True))
            elif os.path.exists(expanded):
                found.add(expanded)
        if not found:
            shown = ", ".join(repr(p) for p in self.patterns)
            raise SourceError(f"files source: no files match {shown}")
        paths = [Path(p) for p in sorted(found)]
        for path in paths:
            if path.is_dir():
                raise SourceError(
                    f"files source: {path} is a directory; use a pattern that matches files, "
                    f"e.g. {path / '*.parquet'}"
                )
            if _kind(path) is None:
                raise SourceError(
                    f"files source: {path} is not a supported file (.csv, .csv.gz or .parquet); "
                    f"narrow the pattern {', '.join(self.patterns)}"
                )
        return paths

    # ------------------------------------------------------------------ fetch
    def fetch(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows with ``start <= ts < end`` from all matched files, in the canonical long layout.

        Example::

            >>> FilesSource("metrics/*.csv").fetch(start, end)  # doctest: +SKIP
                                    ts   host    metric  value
            0 2025-01-01 00:00:00+00:00  web-1  cpu_util   0.42
        """
        require_aware(start, end)
        import pandas as pd

        frames: list[pd.DataFrame] = []
        for path in self.files():
            chunks = (
                self._read_csv(path, start, end)
                if _kind(path) == "csv"
                else self._read_parquet(path, start, end)
            )
            frames.extend(f for f in chunks if len(f))
        if not frames:
            return empty_frame()
        frame = pd.concat(frames, ignore_index=True)
        # After the concat: an all-None object chunk would otherwise turn back into NaT.
        frame["ts"] = missing_ts_as_none(frame["ts"])
        return frame

    def _plan(self, path: Path, columns: Sequence[str]) -> tuple[str, list[str], list[str]]:
        """Layout of one file, the columns to read and the metric columns (wide)."""
        return plan_layout(
            columns,
            layout=self.layout,
            ts_column=self.ts_column,
            host_column=self.host_column,
            metric_column=self.metric_column,
            value_column=self.value_column,
            metric_columns=self.metric_columns,
            where=f"files source: {path}",
            container="file",
            # Not metrics: an unnamed CSV column (a saved index) or pandas' index in Parquet.
            not_a_metric=lambda c: bool(_PANDAS_INDEX.fullmatch(c)),
        )

    # ------------------------------------------------------------------ csv
    def _read_csv(self, path: Path, start: datetime, end: datetime) -> Iterator[pd.DataFrame]:
        # pyarrow's reader, not pandas': pandas silently shifts or truncates rows with too many
        # fields (an unquoted "12,5" would become 12), pyarrow rejects them.
        import pyarrow as pa
        import pyarrow.csv as pacsv

        read_options = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
        parse_options = pacsv.ParseOptions(newlines_in_values=True)
        first_row = 1
        try:
            with pacsv.open_csv(path, read_options=read_options, parse_options=parse_options) as head:
                header = head.schema.names
            layout, needed, metrics = self._plan(path, header)
            # Everything as text, nothing as null: "n/a", "NULL" or "" must survive as the text they are.
            convert = pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                include_columns=needed,
            )
            with pacsv.open_csv(
                path, read_options=read_options, parse_options=parse_options, convert_options=convert
            ) as reader:
                for batch in reader:
                    ts = _parse_ts_arrow(batch.column(self.ts_column), path, self.ts_column, first_row)
                    first_row += batch.num_rows
                    yield from self._filtered(batch, ts, start, end, layout, metrics)
        except (pa.ArrowException, OSError) as exc:
            where = f"near data row {first_row}" if first_row > 1 else "at the start"
            raise SourceError(f"files source: {path}: cannot parse the CSV {where}: {exc}") from exc

    # ------------------------------------------------------------------ parquet
    def _read_parquet(self, path: Path, start: datetime, end: datetime) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.dataset as ds

        try:
            dataset = ds.dataset(str(path), format="parquet")
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"files source: {path}: cannot open the Parquet file: {exc}") from exc
        layout, needed, metrics = self._plan(path, dataset.schema.names)
        ts_type = dataset.schema.field(self.ts_column).type
        field = ds.field(self.ts_column)
        if pa.types.is_timestamp(ts_type):
            # Push the interval down: row groups outside it are skipped using Parquet statistics.
            lo, hi = (start, end) if ts_type.tz else (_utc_naive(start), _utc_naive(end))
            # Rows without a timestamp are read too: the ingest quarantines them as bad_timestamp.
            inside = (field >= pa.scalar(lo, type=ts_type)) & (field < pa.scalar(hi, type=ts_type))
            expr = inside | field.is_null()
        elif pa.types.is_string(ts_type) or pa.types.is_large_string(ts_type):
            expr = None  # text timestamps are parsed like CSV, then filtered
        else:
            raise SourceError(
                f"files source: {path}: ts column {self.ts_column!r} has type {ts_type}; expected a "
                "timestamp (preferably with time zone) or ISO-8601 text"
            )
        first_row = 1
        try:
            for batch in dataset.to_batches(columns=needed, filter=expr):
                if batch.num_rows == 0:
                    continue
                if expr is None:
                    ts = _parse_ts_arrow(batch.column(self.ts_column), path, self.ts_column, first_row)
                    first_row += batch.num_rows
                    yield from self._filtered(batch, ts, start, end, layout, metrics)
                    continue
                ts = batch.column(self.ts_column).to_pandas()
                if ts.dt.tz is not None:
                    ts = ts.dt.tz_convert("UTC")
                yield self._to_long(pa.Table.from_batches([batch]), _as_us(ts), layout, metrics)
        except pa.ArrowException as exc:
            raise SourceError(f"files source: {path}: cannot read the Parquet file: {exc}") from exc

    # ------------------------------------------------------------------ shaping
    def _filtered(
        self,
        batch: pa.RecordBatch,
        ts: pd.Series,
        start: datetime,
        end: datetime,
        layout: str,
        metrics: list[str],
    ) -> Iterator[pd.DataFrame]:
        """The batch's rows inside the interval (and those without a timestamp); filtered in Arrow so
        the rest never reaches pandas."""
        import pyarrow as pa

        keep = _in_interval(ts, start, end)
        if keep.any():
            kept = pa.Table.from_batches([batch.filter(pa.array(keep))])
            yield self._to_long(kept, ts[keep], layout, metrics)

    def _to_long(self, table: pa.Table, ts: pd.Series, layout: str, metrics: list[str]) -> pd.DataFrame:
        """One chunk (already filtered) in the canonical layout, row order preserved."""
        import numpy as np
        import pandas as pd

        n = table.num_rows
        ts = ts.reset_index(drop=True)
        host = _object_array(table.column(self.host_column).to_pandas())
        if layout == "long":
            return pd.DataFrame(
                {
                    "ts": ts,
                    "host": pd.Series(host, dtype=object),
                    "metric": pd.Series(
                        _object_array(table.column(self.metric_column).to_pandas()), dtype=object
                    ),
                    "value": long_value_series(*_column_values(table.column(self.value_column))),
                },
                columns=list(CANONICAL_COLUMNS),
            )
        k = len(metrics)
        values, keep = melt_values([_column_values(table.column(m)) for m in metrics])
        return pd.DataFrame(
            {
                "ts": ts.repeat(k)[keep].reset_index(drop=True),
                "host": pd.Series(np.repeat(host, k)[keep], dtype=object),
                "metric": pd.Series(np.tile(np.array(metrics, dtype=object), n)[keep], dtype=object),
                "value": pd.Series(values[keep], dtype=values.dtype),
            },
            columns=list(CANONICAL_COLUMNS),
        )


# ---------------------------------------------------------------------- shared with postgres
def missing_ts_as_none(ts: pd.Series) -> pd.Series:
    """A ts column with missing values as ``None`` in an ``object`` column, else unchanged.

    The ingest reports ``None`` in an object column as ``bad_timestamp``; NaT in a datetime
    column would not be (see the module docstring).

    Example::

        >>> import pandas as pd
        >>> missing_ts_as_none(pd.Series(pd.to_datetime(["2025-01-01T00:00Z", None], utc=True))).tolist()
        [Timestamp('2025-01-01 00:00:00+0000', tz='UTC'), None]
    """
    import pandas as pd

    missing = ts.isna().to_numpy()
    if not missing.any():
        return ts
    out = ts.astype(object).to_numpy(copy=True)
    out[missing] = None
    return pd.Series(out, index=ts.index, dtype=object)


def long_value_series(values: np.ndarray, missing: np.ndarray) -> pd.Series:
    """The long layout's value column: missing cells become ``None`` (``<NA>`` for bool), not NaN.

    Without missing cells the array's dtype is kept (pandas 3 would infer ``str`` for an
    all-text object array).

    Example::

        >>> import numpy as np
        >>> long_value_series(np.array([1.5, np.nan, np.nan]), np.array([False, False, True])).tolist()
        [1.5, nan, None]
    """
    import numpy as np
    import pandas as pd

    if not missing.any():
        return pd.Series(values, dtype=values.dtype)
    if values.dtype == np.bool_:
        return pd.Series(pd.arrays.BooleanArray(values, missing))
    out = values.astype(object)  # a copy
    out[missing] = None
    return pd.Series(out, dtype=object)


def melt_values(columns: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Wide metric columns ``(values, missing)`` -> row-major values and which cells to keep.

    A missing cell of a wide table is an absent sample and is not kept. The values keep the
    columns' dtype when they share one (float64, bool), else they are ``object``.

    Example::

        >>> import numpy as np
        >>> values, keep = melt_values([(np.array([1.0, np.nan]), np.array([False, True])),
        ...                             (np.array([2.0, np.nan]), np.array([False, False]))])
        >>> values[keep].tolist()
        [1.0, 2.0, nan]
    """
    import numpy as np

    dtypes = {v.dtype for v, _ in columns}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(object)
    # Row-major (n, k) -> ravel keeps row order, metrics in column order within a row.
    values = np.column_stack([v.astype(dtype) for v, _ in columns]).ravel()
    keep = ~np.column_stack([m for _, m in columns]).ravel()
    return values, keep


# ---------------------------------------------------------------------- helpers
def _column_values(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """An Arrow value column as ``(values, missing)``.

    Numbers (integer, float, decimal) become float64, keeping NaN apart from null (``missing``);
    bool stays bool; text that is entirely numbers (or blank) becomes float64, other text keeps
    the cells that are not numbers as text (object array). A blank text cell is missing. Other
    types pass through as Python objects for the ingest to judge.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_dictionary(kind):
        column = pc.cast(column, kind.value_type)
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), True)
        missing = blank.to_numpy(zero_copy_only=False)
        if missing.any():
            column = pc.if_else(blank, pa.scalar(None, kind), column)
        try:
            return _float64(pc.cast(column, pa.float64())), missing
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _values(column.to_pandas()), missing  # some cell is not a number: cell by cell
    missing = column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return _float64(pc.cast(column, pa.float64(), safe=False)), missing
    if pa.types.is_boolean(kind):
        return pc.fill_null(column, False).to_numpy(zero_copy_only=False), missing
    return _object_array(column.to_pandas()), missing


def _float64(column: pa.ChunkedArray) -> np.ndarray:
    """A float64 Arrow column as a writable numpy array, null as NaN."""
    import numpy as np

    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64).copy()


def _object_array(series: pd.Series) -> np.ndarray:
    """Labels as a plain object array (pandas 3 would otherwise hand out its ``str`` dtype)."""
    import numpy as np

    out = np.empty(len(series), dtype=object)
    out[:] = series.astype(object).to_numpy()
    return out


def _values(series: pd.Series) -> np.ndarray:
    """Text cells: numbers as float64; text that is not a number stays text (object array), not NaN.

    Missing cells (``None``) become NaN here; the caller knows them from Arrow.

    Example::

        >>> import pandas as pd
        >>> _values(pd.Series(["1.5", "n/a", None, "12,5", "nan"], dtype=object)).tolist()
        [1.5, 'n/a', nan, '12,5', nan]
    """
    import numpy as np
    import pandas as pd

    raw = series.astype(object).reset_index(drop=True)
    numbers = pd.to_numeric(raw, errors="coerce")
    text = raw.map(lambda v: v.strip().lower() if isinstance(v, str) else "")
    # NaN from to_numeric means "did not parse" unless the cell was empty, missing or literally "nan".
    unparsed = numbers.isna() & raw.notna() & ~text.isin(["", "nan"])
    if not unparsed.any():
        return numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    out = numbers.astype(object).to_numpy(copy=True)  # pandas 3 hands out read-only views
    out[unparsed.to_numpy()] = raw[unparsed].to_numpy()
    return out


def _parse_ts_arrow(values: pa.Array | pa.ChunkedArray, path: Path, column: str, first_row: int) -> pd.Series:
    """Like ``_parse_ts_text`` with an Arrow fast path for the common all-aware / all-naive cases.

    Arrow's ISO-8601 cast agrees with pandas where it succeeds; anything it refuses (a mix,
    nanoseconds, a bad value) takes the pandas path, which also writes the error message.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(values):
        offsets = pc.sum(pc.match_substring_regex(values, _HAS_OFFSET.pattern)).as_py() or 0
        target = {len(values): pa.timestamp("us", tz="UTC"), 0: pa.timestamp("us")}.get(offsets)
        if target is not None and values.null_count == 0:
            try:
                return _as_us(pc.cast(values, target).to_pandas())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
    return _parse_ts_text(values.to_pandas(), path, column, first_row)


def _parse_ts_text(text: pd.Series, path: Path, column: str, first_row: int) -> pd.Series:
    """ISO-8601 text -> UTC-aware (with offset), naive (without) or object (a mix of both)."""
    import pandas as pd

    raw = text.astype(object).reset_index(drop=True)
    # An empty cell is a missing timestamp (NaT), passed on for the ingest to quarantine.
    blank = raw.map(lambda v: not isinstance(v, str) or not v.strip()).astype(bool)
    has_offset = raw.where(~blank).str.match(_HAS_OFFSET, na=False).astype(bool)
    aware = pd.to_datetime(raw.where(has_offset), utc=True, format="ISO8601", errors="coerce")
    naive = pd.to_datetime(raw.where(~has_offset & ~blank), format="ISO8601", errors="coerce")
    bad = (has_offset & aware.isna()) | (~has_offset & ~blank & naive.isna())
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        row = first_row + i
        raise SourceError(
            f"files source: {path}: data row {row} (line {row + 1}): {column} {raw[i]!r} is not an "
            "ISO-8601 timestamp"
        )
    aware, naive = _as_us(aware), _as_us(naive)
    if has_offset[~blank].all():
        return aware
    if not has_offset.any():
        return naive
    # A mix: keep each value as it came (aware in UTC or naive) so the ingest can reject the naive ones.
    return aware.astype(object).where(has_offset, naive.astype(object))


def _as_us(ts: pd.Series) -> pd.Series:
    """Microsecond unit, like the rest of the pipeline, unless that would drop nanoseconds."""
    if ts.dt.unit != "ns" or not (ts.dt.nanosecond != 0).any():
        return ts.dt.as_unit("us")
    return ts


def _in_interval(ts: pd.Series, start: datetime, end: datetime) -> np.ndarray:
    """``start <= ts < end`` or no ts at all; naive values are compared as UTC wall clock, not converted.

    Rows without a timestamp are kept so that the ingest can quarantine them (bad_timestamp).
    """
    import pandas as pd

    missing = ts.isna().to_numpy()
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        return ((ts >= start) & (ts < end)).to_numpy() | missing
    if pd.api.types.is_datetime64_dtype(ts.dtype):
        return ((ts >= _utc_naive(start)) & (ts < _utc_naive(end))).to_numpy() | missing
    # object: a mix of aware and naive Timestamps (and NaT).
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    lo_n, hi_n = pd.Timestamp(_utc_naive(start)), pd.Timestamp(_utc_naive(end))
    keep = [
        True if m else (lo <= v < hi) if v.tzinfo is not None else (lo_n <= v < hi_n)
        for v, m in zip(ts, missing, strict=True)
    ]
    return pd.Series(keep, dtype=bool).to_numpy()
