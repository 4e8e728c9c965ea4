"""PrometheusSource against a real Prometheus, backfilled with promtool from known data.

Faults are real too: a port with nothing listening, bad PromQL answered by
Prometheus itself, and a tiny loopback HTTP server that answers 503/429 or
records the auth headers it receives.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import pytest
import requests

from anomaly.promlocal import PrometheusServer, backfill, prometheus_available, write_openmetrics
from anomaly.settings import Settings
from anomaly.sources.base import CANONICAL_COLUMNS, SourceError
from anomaly.sources.prometheus import PrometheusSource, strip_port

T0 = 1709251200  # 2024-03-01T00:00:00Z
STEP = 60
N = 360  # six hours of minutes
START = datetime.fromtimestamp(T0, UTC)
END = START + timedelta(seconds=N * STEP)
HOSTS = ("db-01", "web-01", "web-02")
QUERIES = {"cpu_util": "test_cpu_util", "load1": "test_load1"}


def _generated() -> dict[str, dict[str, np.ndarray]]:
    """metric -> host -> values at T0 + i*STEP; binary fractions, so exactly representable."""
    rng = np.random.default_rng(42)
    data: dict[str, dict[str, np.ndarray]] = {"test_cpu_util": {}, "test_load1": {}}
    for host in HOSTS:
        data["test_cpu_util"][host] = rng.integers(0, 1025, N) / 1024.0
        data["test_load1"][host] = rng.integers(0, 64 * 40, N) / 64.0
    # Non-finite values must come through as floats for the ingest checks.
    data["test_load1"]["web-02"][[10, 20, 30]] = [np.nan, np.inf, -np.inf]
    return data


DATA = _generated()
TS = T0 + STEP * np.arange(N)
_rng = np.random.default_rng(7)
RANDOM = _rng.standard_normal(N) * 10.0 ** _rng.integers(-300, 300, N)


def _expected(queries: dict[str, str], start: int = T0, end: int = T0 + N * STEP) -> pd.DataFrame:
    """The canonical frame the source must return for grid points in [start, end)."""
    grid = TS
    keep = (grid >= start) & (grid < end)
    parts = []
    for metric in sorted(queries):
        for host in sorted(HOSTS):
            values = DATA[queries[metric]][host][keep]
            parts.append(
                pd.DataFrame(
                    {
                        "ts": pd.to_datetime(TS[keep], unit="s", utc=True).astype("datetime64[us, UTC]"),
                        "host": host,
                        "metric": metric,
                        "value": values,
                    }
                )
            )
    frame = pd.concat(parts, ignore_index=True)[list(CANONICAL_COLUMNS)]
    return frame.astype({"host": object, "metric": object})


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus on a free loopback port, TSDB backfilled with DATA and a few odd series."""
    if not prometheus_available():
        pytest.fail("prometheus and promtool must be on PATH (Debian/Ubuntu: apt-get install prometheus)")
    root = tmp_path_factory.mktemp("prom")
    series: list[tuple[str, dict[str, str], str, Any, Any]] = []
    for name, by_host in DATA.items():
        for host, values in by_host.items():
            series.append((name, {"instance": f"{host}:9100", "job": "node", "hostname": host.upper()}, "gauge",
                           TS, values))  # fmt: skip
    # Two targets of one host: both rows must survive (the ingest quarantines duplicates).
    series.append(("test_dup", {"instance": "web-01:9100"}, "gauge", TS, np.full(N, 1.0)))
    series.append(("test_dup", {"instance": "web-01:9200"}, "gauge", TS, np.full(N, 2.0)))
    # Full-precision doubles over many magnitudes: the text formats on both sides must be exact.
    series.append(("test_random", {"instance": "web-01:9100"}, "gauge", TS, RANDOM))
    # No instance label at all.
    series.append(("test_nohost", {"job": "batch"}, "gauge", TS, np.zeros(N)))
    n = write_openmetrics(series, root / "data.om")
    backfill(root / "data.om", root / "tsdb", expected_samples=n)
    server = PrometheusServer(root / "tsdb")
    with server:
        yield server


class CountingSession(requests.Session):
    """A real session that counts the HTTP requests going through it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls += 1
        return super().request(method, url, *args, **kwargs)


class FakeServer:
    """A loopback HTTP server answering from a script of (status, body) and recording requests."""

    def __init__(self, responses: list[tuple[int, Any]], delay: float = 0.0) -> None:
        self.responses = responses
        self.delay = delay
        self.seen: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                fake.seen.append({"path": self.path, "headers": dict(self.headers), "form": parse_qs(body)})
                status, payload = fake.responses[min(len(fake.seen), len(fake.responses)) - 1]
                if fake.delay:
                    time.sleep(fake.delay)
                raw = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _matrix(*series: tuple[dict[str, str], list[tuple[int, str]]]) -> dict[str, Any]:
    result = [{"metric": labels, "values": [[t, v] for t, v in values]} for labels, values in series]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- real Prometheus


def test_round_trip_values_hosts_timestamps(prom: PrometheusServer) -> None:
    frame = PrometheusSource(prom.url, QUERIES, STEP).fetch(START, END)
    assert frame.columns.tolist() == list(CANONICAL_COLUMNS)
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    # instance="web-01:9100" -> host "web-01"; NaN/+Inf/-Inf kept as floats.
    assert set(frame["host"]) == set(HOSTS)
    assert frame["value"].isna().sum() == 1 and np.isposinf(frame["value"]).sum() == 1
    pd.testing.assert_frame_equal(frame, _expected(QUERIES), check_exact=True)


def test_full_precision_doubles_round_trip_bit_exactly(prom: PrometheusServer) -> None:
    frame = PrometheusSource(prom.url, {"r": "test_random"}, STEP).fetch(START, END)
    assert frame["value"].to_numpy().tobytes() == RANDOM.tobytes()


def test_grid_alignment_and_interval_splits(prom: PrometheusServer) -> None:
    src = PrometheusSource(prom.url, QUERIES, STEP)
    # Off-grid start: first point is the next multiple of the step; end itself is excluded.
    start, end = START + timedelta(seconds=90), START + timedelta(minutes=30)
    frame = src.fetch(start, end)
    pd.testing.assert_frame_equal(frame, _expected(QUERIES, T0 + 120, T0 + 1800), check_exact=True)
    # Any split of an interval gives the same rows as the whole.
    mid = START + timedelta(minutes=7, seconds=13)
    parts = pd.concat([src.fetch(START, mid), src.fetch(mid, END)], ignore_index=True)
    parts = parts.sort_values(["metric", "host", "ts"], kind="stable", ignore_index=True)
    pd.testing.assert_frame_equal(parts, src.fetch(START, END), check_exact=True)


def test_empty_grid_interval_returns_empty_frame(prom: PrometheusServer) -> None:
    frame = PrometheusSource(prom.url, QUERIES, STEP).fetch(
        START + timedelta(seconds=1), START + timedelta(seconds=59)
    )
    assert frame.empty and frame.columns.tolist() == list(CANONICAL_COLUMNS)


@pytest.mark.parametrize(("max_points", "expected_calls"), [(50, 8), (7, 52), (359, 2), (360, 1)])
def test_chunked_range_equals_single_query(
    prom: PrometheusServer, max_points: int, expected_calls: int
) -> None:
    single = PrometheusSource(prom.url, {"cpu_util": "test_cpu_util"}, STEP).fetch(START, END)
    session = CountingSession()
    src = PrometheusSource(
        prom.url, {"cpu_util": "test_cpu_util"}, STEP, max_points=max_points, session=session
    )
    chunked = src.fetch(START, END)
    assert session.calls == expected_calls  # ceil(360 / max_points) for one metric
    assert not chunked.duplicated(["metric", "host", "ts"]).any()
    assert chunked.groupby("host")["ts"].nunique().tolist() == [N] * len(HOSTS)
    pd.testing.assert_frame_equal(chunked, single, check_exact=True)


def test_two_series_of_one_host_both_kept(prom: PrometheusServer) -> None:
    frame = PrometheusSource(prom.url, {"dup": "test_dup"}, STEP).fetch(START, START + timedelta(minutes=5))
    assert len(frame) == 10 and set(frame["host"]) == {"web-01"}
    assert sorted(frame["value"].unique()) == [1.0, 2.0]


def test_other_host_label(prom: PrometheusServer) -> None:
    src = PrometheusSource(prom.url, {"cpu_util": "test_cpu_util"}, STEP, host_label="hostname")
    frame = src.fetch(START, START + timedelta(minutes=5))
    assert set(frame["host"]) == {h.upper() for h in HOSTS}


def test_series_without_host_label_names_metric_and_query(prom: PrometheusServer) -> None:
    src = PrometheusSource(prom.url, {"batch_size": "test_nohost"}, STEP)
    with pytest.raises(SourceError, match=r"'batch_size'.*'instance'.*query: test_nohost"):
        src.fetch(START, START + timedelta(minutes=5))


def test_bad_promql_fails_at_once_with_prometheus_error(prom: PrometheusServer) -> None:
    session = CountingSession()
    src = PrometheusSource(prom.url, {"cpu_util": "sum(test_cpu_util"}, STEP, session=session, retries=3)
    with pytest.raises(SourceError) as err:
        src.fetch(START, END)
    msg = str(err.value)
    assert session.calls == 1
    assert "HTTP 400 (bad_data)" in msg and "parse error" in msg
    assert prom.url + "/api/v1/query_range" in msg and "'cpu_util'" in msg
    assert "2024-03-01T00:00:00+00:00" in msg and "sum(test_cpu_util" in msg


# --------------------------------------------------------------------------- real faults, no Prometheus


def test_nothing_listening_retries_then_names_url() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    session = CountingSession()
    src = PrometheusSource(url, QUERIES, STEP, retries=2, backoff=0.01, session=session)
    with pytest.raises(SourceError) as err:
        src.fetch(START, END)
    msg = str(err.value)
    assert session.calls == 3
    assert url + "/api/v1/query_range" in msg and "connection error" in msg and "after 3 attempts" in msg
    assert "'cpu_util'" in msg and "2024-03-01T06:00:00+00:00" in msg


def test_stopped_prometheus_is_a_source_error(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path / "tsdb").start()
    url = server.url
    server.stop()
    with pytest.raises(SourceError, match=r"connection error.*" + url.replace(".", r"\.")):
        PrometheusSource(url, QUERIES, STEP, retries=1, backoff=0.01).fetch(START, END)


def test_503_is_retried_and_reported() -> None:
    body = {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}
    with FakeServer([(503, body)]) as fake:
        src = PrometheusSource(fake.url, QUERIES, STEP, retries=2, backoff=0.01)
        with pytest.raises(SourceError) as err:
            src.fetch(START, END)
    assert len(fake.seen) == 3
    assert "HTTP 503 (unavailable): TSDB not ready" in str(err.value) and fake.url in str(err.value)


def test_transient_errors_then_success() -> None:
    ok = _matrix(({"instance": "[::1]:9100"}, [(T0, "0.5"), (T0 + 60, "NaN"), (T0 + 120, "+Inf")]))
    with FakeServer([(503, "<html>bad gateway</html>"), (429, ""), (200, ok)]) as fake:
        frame = PrometheusSource(fake.url, {"m": "q"}, STEP, retries=2, backoff=0.01).fetch(START, END)
    assert len(fake.seen) == 3
    assert frame["host"].tolist() == ["[::1]"] * 3
    assert (
        frame["value"].iloc[0] == 0.5
        and np.isnan(frame["value"].iloc[1])
        and np.isinf(frame["value"].iloc[2])
    )
    # The request is a POST on the step grid: start/end are multiples of the step, end < END.
    form = fake.seen[-1]["form"]
    assert fake.seen[-1]["path"] == "/api/v1/query_range"
    assert form["query"] == ["q"] and form["step"] == ["60"]
    assert form["start"] == [str(T0)] and form["end"] == [str(T0 + (N - 1) * STEP)]


def test_timeout_is_retried() -> None:
    with FakeServer([(200, _matrix())], delay=0.5) as fake:
        src = PrometheusSource(fake.url, {"m": "q"}, STEP, retries=1, backoff=0.01, timeout=0.1)
        with pytest.raises(SourceError, match="after 2 attempts: connection error: ReadTimeout"):
            src.fetch(START, END)
    assert len(fake.seen) == 2


def test_4xx_other_than_429_is_not_retried() -> None:
    body = {"status": "error", "errorType": "execution", "error": "too many samples"}
    with FakeServer([(422, body)]) as fake:
        src = PrometheusSource(fake.url, {"m": "q"}, STEP, retries=3, backoff=0.01)
        with pytest.raises(SourceError, match=r"HTTP 422 \(execution\): too many samples"):
            src.fetch(START, END)
    assert len(fake.seen) == 1


# --------------------------------------------------------------------------- auth and settings


def test_basic_auth_and_bearer_are_sent_and_never_leak() -> None:
    with FakeServer([(503, "down")]) as fake:
        basic = PrometheusSource(fake.url, {"m": "q"}, STEP, auth=("reader", "s3cret-pw"), retries=0)
        with pytest.raises(SourceError) as err_basic:
            basic.fetch(START, END)
        bearer = PrometheusSource(fake.url, {"m": "q"}, STEP, bearer_token="tok-123456", retries=0)
        with pytest.raises(SourceError) as err_bearer:
            bearer.fetch(START, END)
        # Credentials in the URL become basic auth and leave the URL.
        inline = PrometheusSource(
            fake.url.replace("://", "://reader:s3cret-pw@"), {"m": "q"}, STEP, retries=0
        )
        assert "s3cret" not in inline.url and "s3cret" not in repr(inline)
        with pytest.raises(SourceError) as err_inline:
            inline.fetch(START, END)
    expected_basic = "Basic " + base64.b64encode(b"reader:s3cret-pw").decode()
    assert fake.seen[0]["headers"]["Authorization"] == expected_basic
    assert fake.seen[1]["headers"]["Authorization"] == "Bearer tok-123456"
    assert fake.seen[2]["headers"]["Authorization"] == expected_basic
    for err in (err_basic, err_bearer, err_inline):
        assert "HTTP 503" in str(err.value) and fake.url in str(err.value)
        assert "s3cret" not in str(err.value) and "tok-123456" not in str(err.value)


def _settings(tmp_path: Path, conn_id: str, **overrides: Any) -> Settings:
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"cpu_util": "test_cpu_util"}))
    overrides.setdefault("prometheus_url", "http://127.0.0.1:9090")  # independent of ANOMALY_* in the env
    return Settings(
        home=tmp_path / "home", prometheus_conn_id=conn_id, prometheus_metrics_file=metrics_file, **overrides
    )


def test_from_settings_reads_airflow_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeServer([(500, {"status": "error", "errorType": "internal", "error": "boom"})]) as fake:
        port = int(fake.url.rsplit(":", 1)[1])
        conn = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": port,
            "login": "svc",
            "password": "pw-basic-42",
        }
        monkeypatch.setenv("AIRFLOW_CONN_PROM_TEST_BASIC", json.dumps(conn))
        src = PrometheusSource.from_settings(_settings(tmp_path, "prom_test_basic", prometheus_retries=1))
        assert src.url == fake.url and src.queries == {"cpu_util": "test_cpu_util"}
        assert src.retries == 1 and src.step_seconds == 60
        with pytest.raises(SourceError) as err:
            src.fetch(START, END)
    assert len(fake.seen) == 2
    assert (
        fake.seen[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"svc:pw-basic-42").decode()
    )
    assert "HTTP 500 (internal): boom" in str(err.value) and "pw-basic-42" not in str(err.value)


@pytest.mark.parametrize(
    ("extra", "password", "header"),
    [
        ({"bearer_token": "tok-extra-1"}, None, "Bearer tok-extra-1"),
        ({"auth": "bearer"}, "tok-pass-2", "Bearer tok-pass-2"),
    ],
)
def test_from_settings_bearer_token_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str], password: str | None, header: str
) -> None:
    with FakeServer([(503, "down")]) as fake:
        port = int(fake.url.rsplit(":", 1)[1])
        conn = {"conn_type": "http", "host": "127.0.0.1", "port": port, "password": password, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_PROM_TEST_BEARER", json.dumps(conn))
        src = PrometheusSource.from_settings(_settings(tmp_path, "prom_test_bearer", prometheus_retries=0))
        with pytest.raises(SourceError) as err:
            src.fetch(START, END)
    assert fake.seen[0]["headers"]["Authorization"] == header
    assert header.split()[1] not in str(err.value) and header.split()[1] not in repr(src)


@pytest.mark.parametrize(
    ("conn", "url", "auth"),
    [
        ({"host": "prom.example", "port": 9091, "schema": "https", "extra": {"bearer_token": "tok-1"}},
         "https://prom.example:9091", "bearer"),
        ({"host": "https://prom.example/prometheus", "password": "tok-2", "extra": {"auth": "bearer"}},
         "https://prom.example/prometheus", "bearer"),
        ({"host": "http://prom.example:9090", "port": 9090, "login": "u", "password": "p"},
         "http://prom.example:9090", "basic"),
        ({"host": "prom.example"}, "http://prom.example", "none"),
        # Only credentials in the connection: the URL comes from settings.
        ({"login": "u", "password": "p"}, "http://127.0.0.1:9090", "basic"),
    ],
)  # fmt: skip
def test_from_settings_url_and_auth_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any], url: str, auth: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PROM_TEST_VARIANT", json.dumps({"conn_type": "http", **conn}))
    src = PrometheusSource.from_settings(_settings(tmp_path, "prom_test_variant"))
    assert src.url == url
    assert f"auth={auth})" in repr(src)


def test_from_settings_without_connection_uses_url(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "prom_test_not_defined", prometheus_url="http://10.1.2.3:9090/")
    src = PrometheusSource.from_settings(settings)
    assert src.url == "http://10.1.2.3:9090" and repr(src).endswith("auth=none)")


def test_strip_port() -> None:
    assert strip_port("web-01:9100") == "web-01"
    assert strip_port("10.0.0.5:9100") == "10.0.0.5"
    assert strip_port("[fe80::1]:9100") == "[fe80::1]"
    assert strip_port("fe80::1") == "fe80::1"
    assert strip_port("web-01") == "web-01"


# --------------------------------------------------------------------------- promlocal


def test_write_openmetrics_counter_and_backfill(tmp_path: Path) -> None:
    """A counter (and odd timestamps) go through promtool into a real TSDB unchanged."""
    base = 1080421539  # 2004: promtool truncates x.699 s to ...698 ms unless written carefully
    ts = np.array([base + 0.699, base + 60.396, base + 120, base + 180.001])
    values = np.array([0.0, 5.0, 7.5, 1.0])  # a reset at the end, as after a reboot
    n = write_openmetrics(
        [
            ("test_requests", {"instance": "a:1", "path": 'say "hi"\\\n'}, "counter", ts, values),
            ("test_gauge", {}, "gauge", np.array([base + 60, base]), np.array([2.0, np.nan])),
        ],
        tmp_path / "c.om",
    )
    text = (tmp_path / "c.om").read_text()
    assert n == 6
    assert "# TYPE test_requests counter\n" in text and "test_requests_total{" in text
    assert 'path="say \\"hi\\"\\\\\\n"' in text
    assert text.index("test_gauge NaN") < text.index("test_gauge 2.0") and text.endswith("# EOF\n")

    blocks = backfill(tmp_path / "c.om", tmp_path / "tsdb", expected_samples=n)
    assert len(blocks) == 1
    with PrometheusServer(tmp_path / "tsdb") as server:
        # A range selector returns the raw samples with their own timestamps.
        resp = requests.get(
            server.url + "/api/v1/query", params={"query": "test_requests_total[10m]", "time": base + 300}
        ).json()
    (series,) = resp["data"]["result"]
    assert series["metric"]["__name__"] == "test_requests_total"
    got = [(round(t * 1000), float(v)) for t, v in series["values"]]
    assert got == [(round(t * 1000), v) for t, v in zip(ts.tolist(), values.tolist(), strict=True)]


def test_write_openmetrics_rejects_invalid_input(tmp_path: Path) -> None:
    out = tmp_path / "x.om"
    one = np.array([T0])
    with pytest.raises(ValueError, match="duplicate timestamp"):
        write_openmetrics([("g", {}, "gauge", np.array([T0, T0]), np.array([1.0, 2.0]))], out)
    with pytest.raises(ValueError, match="counter values"):
        write_openmetrics([("c", {}, "counter", one, np.array([-1.0]))], out)
    with pytest.raises(ValueError, match="same label set"):
        write_openmetrics([("g", {"a": "1"}, "gauge", one, one * 1.0)] * 2, out)
    with pytest.raises(ValueError, match="already a gauge"):
        write_openmetrics(
            [("g", {}, "gauge", one, one * 1.0), ("g", {"a": "1"}, "counter", one, one * 1.0)], out
        )
    with pytest.raises(ValueError, match="invalid metric name"):
        write_openmetrics([("1bad", {}, "gauge", one, one * 1.0)], out)
    with pytest.raises(ValueError, match="timestamps but"):
        write_openmetrics([("g", {}, "gauge", one, np.array([1.0, 2.0]))], out)


def test_backfill_reports_samples_promtool_dropped(tmp_path: Path) -> None:
    # Hand-written, out of order: promtool exits 0 but keeps only the first sample.
    (tmp_path / "bad.om").write_text(f"# TYPE x gauge\nx 1 {T0}\nx 2 {T0 - 60}\n# EOF\n")
    with pytest.raises(RuntimeError, match=r"wrote 1 samples .* expected 2"):
        backfill(tmp_path / "bad.om", tmp_path / "tsdb", expected_samples=2)


def test_backfill_failure_carries_promtool_stderr(tmp_path: Path) -> None:
    (tmp_path / "bad.om").write_text("# TYPE x gauge\nx one 1\n# EOF\n")
    with pytest.raises(RuntimeError, match=r"promtool backfill .* failed .*: .+"):
        backfill(tmp_path / "bad.om", tmp_path / "tsdb")


def test_server_start_failure_shows_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with code") as err:
        PrometheusServer(tmp_path / "tsdb", extra_args=["--no-such-flag"]).start()
    assert "no-such-flag" in str(err.value)
