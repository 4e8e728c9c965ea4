"""The default metric set: canonical names, units, kinds and node_exporter PromQL.

``kind`` drives validation ranges (ratio in [0, 1], percent in [0, 100],
counter/bytes/rate non-negative) and feature logic (counters get reset-aware
rates). The catalog is seeded into the ``metric_catalog`` table on start;
users add their own metrics there, or through ``ANOMALY_PROMETHEUS_METRICS_FILE``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

KINDS = ("ratio", "percent", "gauge", "counter", "bytes", "rate")

# ``$rate`` is replaced by the rate window (at least four scrape steps).
_NET = 'device!~"lo|veth.*|docker.*|br-.*"'


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    kind: str
    description: str
    promql: str


DEFAULT_METRICS: tuple[Metric, ...] = (
    Metric(
        "cpu_util",
        "ratio",
        "ratio",
        "Share of CPU time not idle, averaged over cores",
        '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[$rate]))',
    ),
    Metric("load1", "tasks", "gauge", "1-minute load average", "avg by (instance) (node_load1)"),
    Metric(
        "mem_util",
        "ratio",
        "ratio",
        "Share of memory in use (1 - available / total)",
        "1 - sum by (instance) (node_memory_MemAvailable_bytes)"
        " / sum by (instance) (node_memory_MemTotal_bytes)",
    ),
    Metric(
        "swap_util",
        "ratio",
        "ratio",
        "Share of swap in use",
        # (total - free) / total, and 0 on hosts without swap instead of 0/0
        "(sum by (instance) (node_memory_SwapTotal_bytes) - sum by (instance) (node_memory_SwapFree_bytes))"
        " / clamp_min(sum by (instance) (node_memory_SwapTotal_bytes), 1)",
    ),
    Metric(
        "disk_util",
        "ratio",
        "ratio",
        "Share of the root filesystem in use",
        '1 - sum by (instance) (node_filesystem_avail_bytes{mountpoint="/"})'
        ' / sum by (instance) (node_filesystem_size_bytes{mountpoint="/"})',
    ),
    Metric(
        "disk_read_bytes",
        "bytes/s",
        "rate",
        "Bytes read from disks per second",
        "sum by (instance) (rate(node_disk_read_bytes_total[$rate]))",
    ),
    Metric(
        "disk_write_bytes",
        "bytes/s",
        "rate",
        "Bytes written to disks per second",
        "sum by (instance) (rate(node_disk_written_bytes_total[$rate]))",
    ),
    Metric(
        "disk_io_time",
        "ratio",
        "ratio",
        "Share of time the busiest disk was doing IO",
        "max by (instance) (rate(node_disk_io_time_seconds_total[$rate]))",
    ),
    Metric(
        "net_in_bytes",
        "bytes/s",
        "rate",
        "Bytes received per second",
        f"sum by (instance) (rate(node_network_receive_bytes_total{{{_NET}}}[$rate]))",
    ),
    Metric(
        "net_out_bytes",
        "bytes/s",
        "rate",
        "Bytes sent per second",
        f"sum by (instance) (rate(node_network_transmit_bytes_total{{{_NET}}}[$rate]))",
    ),
    Metric(
        "net_in_packets",
        "packets/s",
        "rate",
        "Packets received per second",
        f"sum by (instance) (rate(node_network_receive_packets_total{{{_NET}}}[$rate]))",
    ),
    Metric(
        "net_out_packets",
        "packets/s",
        "rate",
        "Packets sent per second",
        f"sum by (instance) (rate(node_network_transmit_packets_total{{{_NET}}}[$rate]))",
    ),
    Metric(
        "tcp_retransmits",
        "segments/s",
        "rate",
        "TCP segments retransmitted per second",
        "sum by (instance) (rate(node_netstat_Tcp_RetransSegs[$rate]))",
    ),
    Metric(
        "tcp_established",
        "connections",
        "gauge",
        "TCP connections in ESTABLISHED state",
        "sum by (instance) (node_netstat_Tcp_CurrEstab)",
    ),
    Metric(
        "procs_running",
        "processes",
        "gauge",
        "Processes in runnable state",
        "sum by (instance) (node_procs_running)",
    ),
)

DEFAULT_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in DEFAULT_METRICS)


def default_promql_map(step_seconds: int) -> dict[str, str]:
    """Metric name -> PromQL for node_exporter, with a rate window of 4 steps (>= 1 min)."""
    window = f"{max(4 * step_seconds, 60)}s"
    return {m.name: m.promql.replace("$rate", window) for m in DEFAULT_METRICS}


def load_promql_map(path: Path | None, step_seconds: int) -> dict[str, str]:
    """The configured map: a JSON file ``{"metric": "PromQL", ...}``, or the default one."""
    if path is None:
        return default_promql_map(step_seconds)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read Prometheus metric map {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"Prometheus metric map {path} must be a JSON object of metric name -> PromQL")
    return dict(data)
