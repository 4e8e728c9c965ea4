"""Prometheus source: one ``/api/v1/query_range`` per metric (and chunk), on a fixed step grid.

Every metric is a PromQL expression returning one series per host (label
``instance`` by default, ``:port`` stripped). Evaluation timestamps are the
multiples of ``step_seconds`` since the epoch inside ``[start, end)``, so
re-runs and different interval splits return identical timestamps, and long
intervals are cut into chunks of at most ``max_points`` points that neither
overlap nor leave gaps.

Example::

    >>> src = PrometheusSource("http://127.0.0.1:9090", {"load1": "avg by (instance) (node_load1)"}, 60)
    >>> src.fetch(start, end)                                    # doctest: +SKIP
                             ts    host metric  value
    0 2024-03-01 00:00:00+00:00  web-01  load1   0.25

Note what Prometheus itself does before the data gets here: a query evaluated
at ``t`` returns the newest sample in ``(t - lookback, t]`` (5 min by default),
so short gaps come back filled with the previous value and a series that
stopped without a staleness marker (e.g. backfilled data) is repeated for up
to 5 min after its last sample.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from anomaly.sources.base import CANONICAL_COLUMNS, SourceError, empty_frame, require_aware

if TYPE_CHECKING:
    import pandas as pd
    import requests

    from anomaly.settings import Settings

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# Prometheus rejects a range query with more than 11,000 points per series.
_SERVER_MAX_POINTS = 11_000
# "host:9100" -> "host", "[::1]:9100" -> "[::1]"; a bare IPv6 address is left alone.
_PORT_RE = re.compile(r"^(\[[^\]]*\]|[^:]+):\d+$")
# Never sleep longer than this between attempts, whatever Retry-After says.
_MAX_DELAY = 30.0
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def strip_port(value: str) -> str:
    """The host part of an ``instance`` label value.

    Example::

        >>> strip_port("web-01:9100"), strip_port("[::1]:9100"), strip_port("web-01")
        ('web-01', '[::1]', 'web-01')
    """
    m = _PORT_RE.match(value)
    return m.group(1) if m else value


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat().replace("+00:00", "Z")


def _epoch_us(dt: datetime) -> int:
    # Exact integer arithmetic: no float rounding at step boundaries.
    return (dt - _EPOCH) // _US


class _Failure(Exception):
    """One failed attempt: what went wrong and whether another attempt may help."""

    def __init__(self, detail: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


class PrometheusSource:
    """Fetch metrics from the Prometheus HTTP API as canonical long rows.

    ``queries`` maps a metric name to PromQL; each must return one series per
    host, identified by ``host_label``. Pass ``auth=(user, password)`` for
    basic auth or ``bearer_token`` for an ``Authorization: Bearer`` header;
    credentials embedded in ``url`` are moved to basic auth. ``session`` lets
    callers supply a configured (or instrumented) ``requests.Session``;
    ``compress`` asks for gzip responses (worth it only on slow links).

    Example::

        >>> src = PrometheusSource("https://prom.example:9090", {"load1": "node_load1"}, 60,
        ...                        auth=("reader", "secret"))
        >>> src.url
        'https://prom.example:9090'
    """

    name = "prometheus"

    def __init__(
        self,
        url: str,
        queries: Mapping[str, str],
        step_seconds: int,
        *,
        auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        max_points: int = 10_000,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        host_label: str = "instance",
        verify_tls: bool | str = True,
        compress: bool = False,
        session: requests.Session | None = None,
    ) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Prometheus URL must be http(s)://host[:port][/path], got {_redact_url(url)!r}")
        if parts.username is not None:
            # Keep credentials out of every URL we build, log or put in an error.
            if auth is None and bearer_token is None:
                auth = (unquote(parts.username), unquote(parts.password or ""))
            netloc = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=netloc)
        if auth is not None and bearer_token is not None:
            raise ValueError("give either basic auth or a bearer token, not both")
        if not queries or not all(isinstance(k, str) and isinstance(v, str) for k, v in queries.items()):
            raise ValueError("queries must be a non-empty mapping of metric name -> PromQL")
        if isinstance(step_seconds, bool) or not isinstance(step_seconds, int) or step_seconds <= 0:
            raise ValueError(f"step_seconds must be a positive integer, got {step_seconds!r}")
        if not 1 <= max_points <= _SERVER_MAX_POINTS:
            raise ValueError(f"max_points must be in 1..{_SERVER_MAX_POINTS}, got {max_points}")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("retries and backoff must be >= 0 and timeout > 0")

        self.url = urlunsplit(parts._replace(query="", fragment="")).rstrip("/")
        self.queries = dict(queries)
        self.step_seconds = step_seconds
        self.max_points = max_points
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.host_label = host_label
        self.verify_tls = verify_tls
        self.compress = compress
        self._auth = tuple(auth) if auth is not None else None
        self._bearer = bearer_token
        self._session = session
        # Only the secret parts; short ones would mangle messages and never appear anyway.
        self._secrets = [
            s for s in (self._auth[1] if self._auth else None, bearer_token) if s and len(s) >= 4
        ]

    def __repr__(self) -> str:
        kind = "basic" if self._auth else "bearer" if self._bearer else "none"
        return (
            f"PrometheusSource(url={self.url!r}, metrics={len(self.queries)}, "
            f"step={self.step_seconds}s, auth={kind})"
        )

    # ------------------------------------------------------------------ settings

    @classmethod
    def from_settings(cls, settings: Settings) -> PrometheusSource:
        """Build from settings and the Airflow connection ``settings.prometheus_conn_id``.

        The connection gives the URL (host, port, schema ``http``/``https``;
        a host may carry its own scheme and path; no host: ``prometheus_url``),
        basic auth (login/password) or a bearer token (extra
        ``{"bearer_token": "..."}``, or the password with extra
        ``{"auth": "bearer"}``). Optional extras: ``host_label``, ``verify_tls``
        (false or a CA bundle path), ``compress``. Without the connection,
        ``settings.prometheus_url`` is used without auth.

        Example::

            >>> # AIRFLOW_CONN_ANOMALY_PROMETHEUS='{"conn_type": "http", "host": "prom", "port": 9090}'
            >>> PrometheusSource.from_settings(get_settings()).url     # doctest: +SKIP
            'http://prom:9090'
        """
        from anomaly.connections import get_connection
        from anomaly.metrics import load_promql_map

        queries = load_promql_map(settings.prometheus_metrics_file, settings.step_seconds)
        common: dict[str, Any] = {
            "max_points": settings.prometheus_max_points,
            "timeout": settings.prometheus_timeout,
            "retries": settings.prometheus_retries,
        }
        conn = get_connection(settings.prometheus_conn_id)
        if conn is None:
            return cls(settings.prometheus_url, queries, settings.step_seconds, **common)

        # A connection holding only credentials keeps the URL from settings.
        url = _connection_url(conn, settings.prometheus_conn_id) if conn.host else settings.prometheus_url
        extra = conn.extra_dejson if isinstance(getattr(conn, "extra_dejson", None), dict) else {}
        token = extra.get("bearer_token") or None
        if token is None and str(extra.get("auth", "")).lower() == "bearer":
            token = conn.password or None
            if token is None:
                raise ValueError(
                    f"connection {settings.prometheus_conn_id!r} has extra auth=bearer "
                    "but no password (the token)"
                )
        auth = None
        if token is None and conn.login:
            auth = (conn.login, conn.password or "")
        if "host_label" in extra:
            common["host_label"] = str(extra["host_label"])
        if "compress" in extra:
            common["compress"] = str(extra["compress"]).lower() in ("true", "1", "yes")
        if "verify_tls" in extra:
            verify = extra["verify_tls"]
            if isinstance(verify, str) and verify.lower() in ("true", "false"):
                verify = verify.lower() == "true"
            common["verify_tls"] = verify
        return cls(url, queries, settings.step_seconds, auth=auth, bearer_token=token, **common)

    # ------------------------------------------------------------------ fetch

    def fetch(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Rows for every metric at the step-grid timestamps in ``[start, end)``.

        Example::

            >>> day = datetime(2024, 3, 1, tzinfo=UTC)
            >>> src.fetch(day, day + timedelta(hours=1))              # doctest: +SKIP
        """
        import numpy as np
        import pandas as pd

        require_aware(start, end)
        started = time.monotonic()
        step = self.step_seconds
        step_us = step * 1_000_000
        start_us, end_us = _epoch_us(start), _epoch_us(end)
        # Grid points: multiples of the step, first >= start, last < end.
        first = -(-start_us // step_us) * step
        last = ((end_us - 1) // step_us) * step
        if first > last:
            return empty_frame()
        chunk_span = self.max_points * step
        chunks = [(a, min(a + chunk_span - step, last)) for a in range(first, last + 1, chunk_span)]
        interval = f"[{start.isoformat()}, {end.isoformat()})"

        ts_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        code_parts: list[np.ndarray] = []
        # Each distinct (metric, host) gets an integer code; names are looked up once at the end.
        codes: dict[tuple[str, str], int] = {}
        requests_made = 0
        for metric, query in self.queries.items():
            n_series = n_points = 0
            for a, b in chunks:
                data = self._query_range(metric, query, a, b, interval)
                requests_made += 1
                for series in data["result"]:
                    host = self._host_of(series, metric, query)
                    ts, values = _parse_samples(series, metric, query)
                    if ts.size == 0:
                        continue
                    code = codes.setdefault((metric, host), len(codes))
                    ts_parts.append(ts)
                    val_parts.append(values)
                    code_parts.append(np.full(ts.size, code, dtype=np.int64))
                    n_series += 1
                    n_points += ts.size
            if n_series == 0:
                log.warning(
                    "prometheus: metric %s returned no series over %s; query: %s", metric, interval, query
                )
            log.debug(
                "prometheus: %s: %d series (summed over %d chunks), %d points",
                metric,
                n_series,
                len(chunks),
                n_points,
            )

        if not ts_parts:
            log.info(
                "prometheus: no data for %d metrics over %s (%d requests)",
                len(self.queries),
                interval,
                requests_made,
            )
            return empty_frame()
        ts_us = np.rint(np.concatenate(ts_parts) * 1e6).astype(np.int64)
        value = np.concatenate(val_parts)
        code = np.concatenate(code_parts)
        # query_range includes its end; the grid already stops before `end`,
        # this also guards against a server that answers off-grid.
        keep = (ts_us >= start_us) & (ts_us < end_us)
        if not keep.all():
            ts_us, value, code = ts_us[keep], value[keep], code[keep]
        # Canonical order (metric, host, ts): rank the codes by name, then a
        # stable sort, so two series of one host both stay, in the server's order.
        pairs = list(codes)
        by_name = sorted(range(len(pairs)), key=pairs.__getitem__)
        rank = np.empty(len(pairs), dtype=np.int64)
        rank[by_name] = np.arange(len(pairs))
        order = np.lexsort((ts_us, rank[code]))
        code = code[order]
        metrics = np.array([m for m, _ in pairs], dtype=object)
        hosts = np.array([h for _, h in pairs], dtype=object)
        frame = pd.DataFrame(
            {
                "ts": pd.DatetimeIndex(ts_us[order].astype("datetime64[us]")).tz_localize("UTC"),
                "host": hosts[code],
                "metric": metrics[code],
                "value": value[order],
            },
            columns=list(CANONICAL_COLUMNS),
        )
        log.info(
            "prometheus: %d rows, %d metrics, %d hosts over %s in %.2f s (%d requests)",
            len(frame), len({m for m, _ in pairs}), len({h for _, h in pairs}), interval,
            time.monotonic() - started, requests_made,
        )  # fmt: skip
        return frame

    def _host_of(self, series: dict[str, Any], metric: str, query: str) -> str:
        labels = series.get("metric") or {}
        if self.host_label not in labels:
            raise SourceError(
                f"Prometheus series of metric {metric!r} has no {self.host_label!r} label "
                f"(labels {labels}); the query must keep it, e.g. `avg by ({self.host_label}) (...)`. "
                f"query: {query}"
            )
        return strip_port(str(labels[self.host_label]))

    # ------------------------------------------------------------------ HTTP

    def _get_session(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _query_range(self, metric: str, query: str, a: int, b: int, interval: str) -> dict[str, Any]:
        """``data`` of one query_range call over grid points ``a..b`` (inclusive), with retries."""
        endpoint = self.url + "/api/v1/query_range"
        params = {"query": query, "start": str(a), "end": str(b), "step": str(self.step_seconds)}
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(endpoint, params)
            except _Failure as failure:
                if not failure.retryable or attempt == attempts:
                    tried = f" after {attempt} attempts" if attempt > 1 else ""
                    raise SourceError(
                        self._scrub(
                            f"Prometheus query_range failed{tried}: {failure.detail}; url {endpoint}, "
                            f"metric {metric!r}, interval {interval}, chunk {_iso(a)}..{_iso(b)} "
                            f"step {self.step_seconds}s; query: {query}"
                        )
                    ) from None
                delay = min(self.backoff * 2 ** (attempt - 1), _MAX_DELAY)
                if failure.retry_after is not None:
                    delay = max(delay, min(failure.retry_after, _MAX_DELAY))
                log.warning(
                    "prometheus: %s (metric %s, attempt %d/%d); retrying in %.1f s",
                    self._scrub(failure.detail),
                    metric,
                    attempt,
                    attempts,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(self, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
        import requests

        # Prometheus gzips single-threaded at ~10 MB/s, several times slower than
        # the JSON parse here; only compress on request (slow WAN links).
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip" if self.compress else "identity"}
        if self._bearer:
            headers["Authorization"] = f"Bearer {self._bearer}"
        try:
            # POST form: long PromQL does not hit URL length limits of proxies.
            resp = self._get_session().request(
                "POST",
                endpoint,
                data=params,
                headers=headers,
                auth=self._auth,
                timeout=self.timeout,
                verify=self.verify_tls,
            )
        except requests.exceptions.SSLError as exc:
            raise _Failure(f"TLS error: {exc}", retryable=False) from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Failure(
                f"connection error: {type(exc).__name__}: {_reason(exc)}", retryable=True
            ) from None
        except requests.RequestException as exc:
            raise _Failure(f"request error: {type(exc).__name__}: {exc}", retryable=False) from None

        status = resp.status_code
        if status != 200:
            retryable = status >= 500 or status == 429
            retry_after = _retry_after(resp.headers.get("Retry-After")) if retryable else None
            raise _Failure(f"HTTP {status}{_error_text(resp)}", retryable, retry_after)
        try:
            payload = resp.json()
        except ValueError:
            raise _Failure(f"HTTP 200 but not JSON{_error_text(resp)}", retryable=False) from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            raise _Failure(f"HTTP 200 but status not success{_error_text(resp)}", retryable=False)
        for warning in payload.get("warnings") or ():
            log.warning("prometheus: server warning: %s", warning)
        data = payload.get("data") or {}
        if data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise _Failure(
                f"unexpected result type {data.get('resultType')!r} (want matrix)", retryable=False
            )
        return data

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            for form in {secret, quote(secret, safe="")}:
                text = text.replace(form, "***")
        return text


def _parse_samples(series: dict[str, Any], metric: str, query: str) -> tuple[Any, Any]:
    """``[[1709251200, "0.25"], ...]`` -> (float seconds, float values) arrays.

    ``float()`` also reads "NaN", "+Inf" and "-Inf"; they are kept for the
    ingest checks to quarantine.
    """
    import numpy as np

    if "values" not in series:
        raise SourceError(
            f"Prometheus series of metric {metric!r} has no float samples "
            f"(native histograms are not supported); query: {query}"
        )
    values = series["values"] or []
    n = len(values)
    ts = np.fromiter(map(_FIRST, values), dtype=np.float64, count=n)
    vals = np.fromiter(map(float, map(_SECOND, values)), dtype=np.float64, count=n)
    return ts, vals


def _error_text(resp: requests.Response) -> str:
    """``" (bad_data): parse error ..."`` from Prometheus' error JSON, else a body excerpt."""
    try:
        payload = resp.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("error"):
        kind = payload.get("errorType")
        return f" ({kind}): {payload['error']}" if kind else f": {payload['error']}"
    body = " ".join((resp.text or "").split())
    if not body:
        return f" {resp.reason}" if resp.reason else ""
    return f": {body[:300]}{'...' if len(body) > 300 else ''}"


def _reason(exc: Exception) -> str:
    """The informative tail of a requests/urllib3 error, e.g. ``[Errno 111] Connection refused``."""
    inner = exc.args[0] if exc.args else None
    text = str(getattr(inner, "reason", None) or inner or exc)
    # urllib3 prefixes "HTTPConnectionPool(host=..., port=...): " -- the URL is in our message already.
    if text.startswith(("HTTPConnection", "HTTPSConnection")) and "): " in text:
        text = text.split("): ", 1)[1]
    return text


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; the exponential backoff is good enough
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _connection_url(conn: Any, conn_id: str) -> str:
    """Base URL from an Airflow connection, the way Airflow's HttpHook builds it."""
    host = (conn.host or "").strip()
    if not host:
        raise ValueError(f"Airflow connection {conn_id!r} has no host")
    if "://" in host:
        parts = urlsplit(host)
        if conn.port and parts.port is None:
            parts = parts._replace(netloc=f"{parts.netloc}:{conn.port}")
        return urlunsplit(parts)
    scheme = (conn.schema or "http").strip().lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"Airflow connection {conn_id!r}: schema must be http or https, got {conn.schema!r}")
    host, sep, path = host.partition("/")
    netloc = f"{host}:{conn.port}" if conn.port and not _PORT_RE.match(host) else host
    return f"{scheme}://{netloc}{sep}{path}"
