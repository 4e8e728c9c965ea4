"""Run a real, local Prometheus filled with known data (tests and the product demo).

Three steps, each usable on its own::

    >>> from anomaly.promlocal import write_openmetrics, backfill, PrometheusServer
    >>> write_openmetrics(series, "/tmp/demo/data.om")                # doctest: +SKIP
    >>> backfill("/tmp/demo/data.om", "/tmp/demo/tsdb")               # doctest: +SKIP
    >>> with PrometheusServer("/tmp/demo/tsdb") as prom:              # doctest: +SKIP
    ...     PrometheusSource(prom.url, {"cpu": "cpu_util"}, 60).fetch(start, end)

``write_openmetrics`` produces the OpenMetrics text that ``promtool tsdb
create-blocks-from openmetrics`` turns into TSDB blocks, ``backfill`` runs
promtool, and ``PrometheusServer`` serves the blocks on a loopback port with
no scrape targets, so the data stays exactly what was written.

Things worth knowing about Prometheus 2.42 here:

* Time retention is measured from the newest block, not from the wall clock,
  so a TSDB holding both 2024 and recent data loses the old blocks under the
  default 15 d retention. The server runs with ``retention.time=100y``.
* Backfilled data has no staleness markers: a range query keeps returning a
  series' last sample for the 5 min lookback after it ends, and fills gaps
  shorter than that with the previous value.
* promtool reads sample timestamps as float seconds and truncates to ms
  (``int64(ts * 1000)``); the writer compensates (see ``_format_timestamps``).
* promtool exits 0 even when it drops samples (out of order within a series);
  the writer sorts, and ``backfill(..., expected_samples=n)`` checks the count.
* promtool re-reads the whole input once per block window: its default 2h
  blocks make a week of data ~7x slower to backfill than 24h blocks.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_TYPES = ("gauge", "counter")
# Lines per write: big enough that per-block overhead vanishes, small enough
# that a block's temporary strings stay around 30 MB.
_BLOCK_LINES = 200_000
# "sec.mmm" decimal suffixes for the millisecond part, built once.
_MS_SUFFIX = [f".{ms:03d}" for ms in range(1000)]

SeriesSpec = tuple[str, Mapping[str, str], str, Any, Any]


def prometheus_available() -> bool:
    """Whether both ``prometheus`` and ``promtool`` are on PATH.

    Example::

        >>> isinstance(prometheus_available(), bool)
        True
    """
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


# --------------------------------------------------------------------------- OpenMetrics


def _escape_label_value(value: str) -> str:
    # OpenMetrics escapes exactly these three characters in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series_prefix(sample_name: str, labels: Mapping[str, str]) -> str:
    """``name{a="1",b="2"} `` (labels sorted so the file is deterministic)."""
    for key in labels:
        if not _LABEL_NAME_RE.match(key) or key.startswith("__"):
            raise ValueError(f"invalid label name {key!r} on {sample_name} (reserved or not [a-zA-Z_]\\w*)")
    if not labels:
        return sample_name + " "
    body = ",".join(f'{k}="{_escape_label_value(str(labels[k]))}"' for k in sorted(labels))
    return f"{sample_name}{{{body}}} "


def _family_and_sample_name(metric_name: str, metric_type: str) -> tuple[str, str]:
    """OpenMetrics names: a counter family ``x`` has samples ``x_total``."""
    if metric_type not in _METRIC_TYPES:
        raise ValueError(
            f"metric type of {metric_name!r} must be one of {_METRIC_TYPES}, got {metric_type!r}"
        )
    if not _METRIC_NAME_RE.match(metric_name):
        raise ValueError(f"invalid metric name {metric_name!r}")
    if metric_type == "counter":
        family = metric_name.removesuffix("_total")
        if not family:
            raise ValueError(f"invalid counter name {metric_name!r}")
        return family, family + "_total"
    return metric_name, metric_name


def _format_values(values: np.ndarray) -> list[str]:
    """Shortest round-trip decimal of each float, OpenMetrics spelling for NaN/Inf."""
    # float.__repr__ is the shortest string that parses back to the same double
    # (Go's ParseFloat is correctly rounded too), so values survive bit-exactly.
    out = list(map(float.__repr__, values.tolist()))
    bad = np.flatnonzero(~np.isfinite(values))
    for i in bad.tolist():
        v = values[i]
        out[i] = "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    return out


def _format_timestamps(ts_ms: np.ndarray) -> list[str]:
    """Seconds as text that promtool turns back into exactly ``ts_ms``.

    promtool parses the seconds as a float64 and truncates ``ts * 1000`` to an
    int64, so e.g. ``1080421539.699`` becomes ...698 ms. Whole seconds are
    always exact; for the few fractional values that would truncate wrongly we
    append a ``5`` (half a millisecond), which truncates to the right value.
    """
    if not (ts_ms % 1000).any():
        return list(map(int.__repr__, (ts_ms // 1000).tolist()))
    sec = np.floor_divide(ts_ms, 1000)
    frac = ts_ms - sec * 1000
    out = [s + _MS_SUFFIX[f] for s, f in zip(map(int.__repr__, sec.tolist()), frac.tolist(), strict=True)]
    # Reproduce Go's arithmetic in float64: ParseFloat(decimal) == ts_ms / 1000
    # (both correctly rounded), then truncation of the product toward zero.
    wrong = np.trunc((ts_ms / 1000.0) * 1000.0).astype(np.int64) != ts_ms
    for i in np.flatnonzero(wrong).tolist():
        out[i] += "5"
    return out


def _to_ms(timestamps: Any, where: str) -> np.ndarray:
    ts = np.asarray(timestamps)
    if ts.ndim != 1:
        raise ValueError(f"{where}: timestamps must be one-dimensional")
    if np.issubdtype(ts.dtype, np.integer):
        return ts.astype(np.int64) * 1000
    if np.issubdtype(ts.dtype, np.floating):
        if not np.isfinite(ts).all():
            raise ValueError(f"{where}: timestamps must be finite")
        # Prometheus stores milliseconds; round to the nearest one.
        return np.rint(ts.astype(np.float64) * 1000.0).astype(np.int64)
    raise ValueError(f"{where}: timestamps must be int or float epoch seconds, got dtype {ts.dtype}")


def write_openmetrics(series: Iterable[SeriesSpec], path: str | os.PathLike[str]) -> int:
    """Write series to an OpenMetrics text file for ``promtool tsdb create-blocks-from``.

    ``series`` yields ``(metric_name, labels, metric_type, timestamps_seconds, values)``
    with ``metric_type`` ``"gauge"`` or ``"counter"``. All series of one metric
    are grouped into one family, in first-seen order; each series is written
    in increasing time order (it is sorted if needed). Counters follow
    OpenMetrics naming: ``http_requests`` and ``http_requests_total`` both
    become family ``http_requests`` with samples (and the Prometheus series)
    ``http_requests_total``; their values must be finite and >= 0 (resets
    are allowed, as in Prometheus). Timestamps are stored at millisecond
    resolution. Returns the number of samples written.

    The arrays are held until the file is written (families must be
    contiguous); output is built and written in blocks, 1-1.6 s per million
    samples (short decimals are faster than full-precision doubles).

    Example::

        >>> import numpy as np
        >>> ts = 1709251200 + 60 * np.arange(3)
        >>> write_openmetrics([("cpu_util", {"instance": "web-01:9100"}, "gauge", ts,
        ...                     np.array([0.25, 0.5, 0.75]))], "/tmp/x.om")
        3
    """
    families: dict[str, tuple[str, str, list[tuple[str, np.ndarray, np.ndarray]]]] = {}
    sample_owner: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for item in series:
        metric_name, labels, metric_type, timestamps, values = item
        family, sample_name = _family_and_sample_name(metric_name, metric_type)
        where = f"series {sample_name}{dict(labels)}"
        prev = families.get(family)
        if prev is not None and prev[0] != metric_type:
            raise ValueError(f"{where}: family {family!r} is already a {prev[0]}, not a {metric_type}")
        # A gauge `x_total` and a counter `x` would write the same sample name.
        owner = sample_owner.setdefault(sample_name, family)
        if owner != family:
            raise ValueError(f"{where}: sample name {sample_name!r} also produced by family {owner!r}")
        prefix = _series_prefix(sample_name, labels)
        if (family, prefix) in seen:
            raise ValueError(f"{where}: the same label set appears twice")
        seen.add((family, prefix))

        ts_ms = _to_ms(timestamps, where)
        vals = np.asarray(values, dtype=np.float64)
        if vals.shape != ts_ms.shape:
            raise ValueError(f"{where}: {len(ts_ms)} timestamps but {vals.size} values")
        if ts_ms.size > 1 and (np.diff(ts_ms) <= 0).any():
            order = np.argsort(ts_ms, kind="stable")
            ts_ms, vals = ts_ms[order], vals[order]
            dup = np.flatnonzero(np.diff(ts_ms) == 0)
            if dup.size:
                raise ValueError(f"{where}: duplicate timestamp {ts_ms[dup[0]] / 1000} s")
        if metric_type == "counter" and vals.size and not (np.isfinite(vals) & (vals >= 0)).all():
            raise ValueError(f"{where}: counter values must be finite and >= 0")
        if prev is None:
            prev = families[family] = (metric_type, sample_name, [])
        if ts_ms.size:
            prev[2].append((prefix, ts_ms, vals))

    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for family, (metric_type, _, members) in families.items():
            out.write(f"# TYPE {family} {metric_type}\n")
            for prefix, ts_ms, vals in members:
                # Join "prefix value ts" lines in C (map/join), block by block.
                sep = "\n" + prefix
                for lo in range(0, ts_ms.size, _BLOCK_LINES):
                    hi = lo + _BLOCK_LINES
                    v_txt = _format_values(vals[lo:hi])
                    t_txt = _format_timestamps(ts_ms[lo:hi])
                    out.write(prefix + sep.join(map(" ".join, zip(v_txt, t_txt, strict=True))) + "\n")
                written += ts_ms.size
        out.write("# EOF\n")
    return written


# --------------------------------------------------------------------------- promtool


def _require_binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name!r} not found on PATH; install Prometheus (e.g. `apt-get install prometheus`, "
            "which provides both prometheus and promtool)"
        )
    return found


def backfill(
    openmetrics_path: str | os.PathLike[str],
    tsdb_dir: str | os.PathLike[str],
    *,
    max_block_duration: str = "24h",
    expected_samples: int | None = None,
) -> list[Path]:
    """Turn an OpenMetrics file into TSDB blocks in ``tsdb_dir``; returns the new block dirs.

    Runs ``promtool tsdb create-blocks-from openmetrics``. ``max_block_duration``
    (a hidden promtool flag, default 2h there) caps each block's span. promtool
    re-reads the whole file once per block window, so longer blocks backfill
    much faster (5M samples over 7 days: 2h ~150 s, 24h ~20 s, 744h ~13 s).

    promtool silently drops samples it cannot append (e.g. out of time order
    within a series); pass ``expected_samples`` (what :func:`write_openmetrics`
    returned) to turn that into an error.

    Example::

        >>> n = write_openmetrics(series, "/tmp/demo/data.om")              # doctest: +SKIP
        >>> backfill("/tmp/demo/data.om", "/tmp/demo/tsdb", expected_samples=n)  # doctest: +SKIP
        [PosixPath('/tmp/demo/tsdb/01HQ...')]
    """
    promtool = _require_binary("promtool")
    tsdb = Path(tsdb_dir)
    tsdb.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in tsdb.iterdir()}
    cmd = [
        promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
        f"--max-block-duration={max_block_duration}", str(openmetrics_path), str(tsdb),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise RuntimeError(
            f"promtool backfill of {openmetrics_path} failed (exit {proc.returncode}): {detail}"
        )
    blocks = sorted(p for p in tsdb.iterdir() if p.name not in before and (p / "meta.json").is_file())
    samples = sum(json.loads((p / "meta.json").read_text())["stats"]["numSamples"] for p in blocks)
    if expected_samples is not None and samples != expected_samples:
        raise RuntimeError(
            f"promtool wrote {samples} samples from {openmetrics_path}, expected {expected_samples} "
            "(it drops samples that are out of order or duplicated within a series)"
        )
    log.info("backfilled %d samples in %d block(s) into %s", samples, len(blocks), tsdb)
    return blocks


# --------------------------------------------------------------------------- server


def _free_port() -> int:
    # Bind-and-release: a tiny race with other processes, acceptable for tests/demo.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """A Prometheus serving ``tsdb_dir`` on a loopback port, with no scrape targets.

    ``port=None`` picks a free port (retrying if another process takes it
    first). Config and log go to a temporary directory removed on ``stop()``,
    or to ``log_dir`` if given (kept). ``retention`` must span from the oldest
    to the newest block (see the module notes); ``extra_args`` are appended to
    the command line, e.g. ``["--query.lookback-delta=1m"]``.

    Example::

        >>> with PrometheusServer("/tmp/demo/tsdb") as prom:   # doctest: +SKIP
        ...     requests.get(prom.url + "/api/v1/labels").json()
    """

    def __init__(
        self,
        tsdb_dir: str | os.PathLike[str],
        port: int | None = None,
        binary: str = "prometheus",
        *,
        retention: str = "100y",
        log_dir: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 60.0,
    ) -> None:
        self.tsdb_dir = Path(tsdb_dir).resolve()
        self.port = port
        self.binary = binary
        self.retention = retention
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if self.port is None:
            raise RuntimeError("PrometheusServer has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> PrometheusServer:
        """Launch Prometheus and wait until ``/-/ready`` answers 200."""
        if self.running:
            return self
        binary = _require_binary(self.binary)
        self.tsdb_dir.mkdir(parents=True, exist_ok=True)
        auto_port = self.port is None
        for attempt in range(3):
            if auto_port:
                self.port = _free_port()
            self._launch(binary)
            try:
                self._wait_ready()
            except RuntimeError as exc:
                # A picked port can be taken by someone else before Prometheus binds it.
                retry = auto_port and attempt < 2 and "address already in use" in str(exc)
                self.stop()
                if retry:
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            break
        assert self._proc is not None
        log.info("prometheus ready at %s (tsdb %s, pid %d)", self.url, self.tsdb_dir, self._proc.pid)
        return self

    def _launch(self, binary: str) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._workdir = self.log_dir
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="promlocal-"))
        config = self._workdir / f"prometheus-{self.port}.yml"
        # No scrape_configs: nothing but the backfilled blocks ever lands in the TSDB.
        config.write_text("global:\n  evaluation_interval: 1m\nscrape_configs: []\n")
        self.log_path = self._workdir / f"prometheus-{self.port}.log"
        cmd = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.tsdb_dir}",
            # Retention counts back from the newest block, so old and recent
            # backfilled data only coexist with a retention this long.
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *self.extra_args,
        ]
        with open(self.log_path, "wb") as logf:
            self._proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        atexit.register(self.stop)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout
        ready_url = self.url + "/-/ready"
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with code {self._proc.returncode} before becoming ready; "
                    f"{self._log_hint()}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as resp:
                    # Still ours? With a fixed port, another server could be answering.
                    if resp.status == 200 and self._proc.poll() is None:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or 503 while the TSDB loads
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"prometheus at {self.url} not ready after {self.ready_timeout:.0f} s; "
                    f"{self._log_hint()}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _log_hint(self) -> str:
        # A temporary log is removed on stop, so only point at a kept one.
        return f"log {self.log_path}" if self.log_dir is not None else "log tail"

    def log_tail(self, lines: int = 30) -> str:
        """The server log's error lines and last lines (empty if there is no log)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        # A bad flag prints one error line followed by the whole usage text.
        errors = [ln for ln in text[:-lines] if "level=error" in ln or ln.startswith("Error")]
        return "\n".join(errors[:5] + text[-lines:])

    def stop(self) -> None:
        """Terminate (then kill after 10 s) the server; a temporary config/log dir is removed."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        atexit.unregister(self.stop)
        if self._workdir is not None and self.log_dir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self.log_path = None
        self._workdir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
