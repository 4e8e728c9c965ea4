"""Fault types of the ``network`` family: links, connections and the traffic a host is offered.

Each function reads the host's baseline values at the same sample (a pure function of absolute
time), computes what the fault does to them and writes the result inside the window only, and
only to the metrics the fault affects (``ctx.metrics``: a caller may narrow the default list).
Coupled metrics move together: packets with bytes, connections with traffic, ``load1`` with
``cpu_util`` (through the fleet's run-queue model), retransmits with the packets sent.

Example::

    >>> from datetime import UTC, datetime
    >>> from anomaly.simulate import make_fleet, simulate_arrays
    >>> from anomaly.simulate.faults import Fault, inject
    >>> fleet = make_fleet(4, seed=7)
    >>> f = Fault("packet_loss", fleet[0].name, datetime(2025, 1, 6, 10, tzinfo=UTC),
    ...           datetime(2025, 1, 6, 11, tzinfo=UTC), severity=0.8)
    >>> b = simulate_arrays(fleet, datetime(2025, 1, 6, 9, tzinfo=UTC), datetime(2025, 1, 6, 12, tzinfo=UTC),
    ...                     modifiers=[inject([f])])
    >>> a = simulate_arrays(fleet, datetime(2025, 1, 6, 9, tzinfo=UTC), datetime(2025, 1, 6, 12, tzinfo=UTC))
    >>> inside = slice(60, 120)
    >>> bool((b.values["tcp_retransmits"][0, inside] > a.values["tcp_retransmits"][0, inside]).all())
    True
"""

from __future__ import annotations

import numpy as np

from anomaly.simulate.faults import FaultContext, fault_type
from anomaly.simulate.fleet import runnable_tasks

_LINK_BYTES_PER_GBPS = 125e6  # 1 Gbit/s in bytes per second
_FULL_FRAME = 1514.0  # an MSS-sized TCP segment on the wire (bytes)
_ACK_FRAME = 66.0  # a pure ACK with timestamps (bytes)

_TRAFFIC = ("net_in_bytes", "net_out_bytes", "net_in_packets", "net_out_packets")


# ----------------------------------------------------------------------------- helpers


def _read(ctx: FaultContext, *metrics: str) -> dict[str, np.ndarray]:
    """Copies of the host's current rows (the baseline, or what earlier faults left)."""
    return {m: ctx.series(m).copy() for m in metrics}


def _write(ctx: FaultContext, new: dict[str, np.ndarray]) -> None:
    """Write ``new`` inside the window, for the fault's affected metrics only."""
    allowed = set(ctx.metrics)
    for metric, values in new.items():
        if metric in allowed:
            ctx.series(metric)[ctx.inside] = values[ctx.inside]


def _lognormal(sigma: float, z: np.ndarray) -> np.ndarray:
    """Mean-one multiplicative noise."""
    return np.exp(sigma * z - sigma * sigma / 2.0)


def _load_following(
    ctx: FaultContext, load1: np.ndarray, cpu_old: np.ndarray, cpu_new: np.ndarray
) -> np.ndarray:
    """``load1`` rescaled by the change of runnable tasks that the CPU change implies."""
    r_old = runnable_tasks(ctx.host.cpus, cpu_old)
    r_new = runnable_tasks(ctx.host.cpus, cpu_new)
    ratio = np.divide(r_new, r_old, out=np.ones_like(r_new), where=r_old > 1e-9)
    return np.maximum(np.where(r_old > 1e-9, load1 * ratio, load1 + r_new), 0.0)


def _clip_ratio(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


# --------------------------------------------------------------------------- fault types


@fault_type(
    "network_saturation",
    metrics=(
        "net_out_bytes",
        "net_out_packets",
        "net_in_bytes",
        "net_in_packets",
        "tcp_retransmits",
        "cpu_util",
    ),
    family="network",
    effects={
        "net_out_bytes": "up",
        "net_out_packets": "up",
        "net_in_bytes": "up",
        "net_in_packets": "up",
        "tcp_retransmits": "up",
        "cpu_util": "up",
    },
)
def network_saturation(ctx: FaultContext) -> None:
    """The host's uplink is full: a bulk sender (backup, replication, a runaway log shipper or an
    unthrottled cache warm-up) transmits at line rate. ``net_out_bytes`` climbs to a ceiling well
    above normal and stays pinned there with almost no variance (the link cannot go faster);
    ``net_out_packets`` follow with full-size segments; the receiver's delayed ACKs (one per two
    segments) raise ``net_in_packets`` and, slightly, ``net_in_bytes``. The transmit queue
    overflows and tail-drops segments, which TCP retransmits: ``tcp_retransmits`` rise with the
    drop rate. Per-packet kernel work (softirq, checksums, copies) adds a little ``cpu_util``,
    most visible on small hosts; it does not add runnable tasks, so ``load1`` is untouched.

    Severity sets how close the link gets to line rate (``0.6 + 0.4 * severity`` of the way
    from the normal level to the ceiling; 1 = pinned) and the drop rate.

    Params: ``link_gbps`` (1.0: capacity of the bottleneck; goodput is 95 % of it),
    ``drop`` (0.01: share of sent segments tail-dropped at severity 1),
    ``us_per_packet`` (8.0: CPU microseconds of kernel work per extra packet).
    """
    v = _read(
        ctx,
        "net_out_bytes",
        "net_out_packets",
        "net_in_bytes",
        "net_in_packets",
        "tcp_retransmits",
        "cpu_util",
    )
    sev = ctx.severity
    ceiling = 0.95 * ctx.param("link_gbps", 1.0) * _LINK_BYTES_PER_GBPS * (1.0 + 0.004 * ctx.noise(0))
    pull = ctx.envelope * (0.6 + 0.4 * sev)
    out_bytes = v["net_out_bytes"] + np.maximum(ceiling - v["net_out_bytes"], 0.0) * pull
    extra_out = (out_bytes - v["net_out_bytes"]) / _FULL_FRAME
    extra_acks = extra_out / 2.0
    out_packets = v["net_out_packets"] + extra_out
    drop = ctx.param("drop", 0.01) * sev * ctx.envelope * _lognormal(0.25, ctx.noise(1))
    cores = (extra_out + extra_acks) * ctx.param("us_per_packet", 8.0) * 1e-6
    _write(
        ctx,
        {
            "net_out_bytes": out_bytes,
            "net_out_packets": out_packets,
            "net_in_packets": v["net_in_packets"] + extra_acks,
            "net_in_bytes": v["net_in_bytes"] + extra_acks * _ACK_FRAME,
            "tcp_retransmits": v["tcp_retransmits"] + out_packets * drop,
            "cpu_util": _clip_ratio(v["cpu_util"] + cores / ctx.host.cpus),
        },
    )


@fault_type(
    "packet_loss",
    metrics=(*_TRAFFIC, "tcp_retransmits"),
    family="network",
    effects={**dict.fromkeys(_TRAFFIC, "down"), "tcp_retransmits": "up"},
)
def packet_loss(ctx: FaultContext) -> None:
    """A lossy link: a flapping or dirty optic, a duplex mismatch, an overloaded middlebox or a
    noisy cloud network drops a share of the packets. Every lost segment this host sent is
    retransmitted, so ``tcp_retransmits`` rise sharply; and TCP's congestion control reads each
    loss as congestion and halves its window, so throughput falls roughly as ``1 / sqrt(loss)``
    (the Mathis model): ``net_in_bytes``, ``net_out_bytes`` and both packet rates drop together,
    by about half at severity 0.5. The loss rate fluctuates from minute to minute (bursts).

    Params: ``loss`` (0.05: packet loss rate at severity 1, scaled by severity and the ramp),
    ``sensitivity`` (8.0: throughput is divided by ``1 + sensitivity * sqrt(loss rate)``).
    """
    v = _read(ctx, *_TRAFFIC, "tcp_retransmits")
    loss = np.minimum(
        ctx.param("loss", 0.05) * ctx.severity * ctx.envelope * _lognormal(0.3, ctx.noise(0)), 0.5
    )
    keep = 1.0 / (1.0 + ctx.param("sensitivity", 8.0) * np.sqrt(loss))
    new = {m: v[m] * keep for m in _TRAFFIC}
    # Fewer segments go out, but a share ``loss`` of them is sent again.
    new["tcp_retransmits"] = v["tcp_retransmits"] * keep + new["net_out_packets"] * loss
    _write(ctx, new)


@fault_type(
    "connection_storm",
    metrics=("tcp_established", "net_in_packets", "cpu_util", "load1", "procs_running"),
    family="network",
    effects={
        "tcp_established": "up",
        "net_in_packets": "up",
        "cpu_util": "up",
        "load1": "up",
        "procs_running": "up",
    },
)
def connection_storm(ctx: FaultContext) -> None:
    """A burst of new clients or a retry storm: after a blip, every client reconnects at once
    (no backoff or jitter), or a pool restarts and opens all its connections together.
    ``tcp_established`` jumps several-fold (connections pile up faster than they finish), and
    each new connection costs a handful of small inbound packets (SYN, handshake ACK, a short
    request, FIN): ``net_in_packets`` rise. Those packets are 60-300 bytes, so inbound *bytes*
    barely move next to normal traffic and are left alone (as are the small replies).
    Accepting, TLS handshakes and forking workers or database backends burn CPU: ``cpu_util``
    heads for ``0.7 + 0.28 * severity`` (at least ``+0.1 * severity``); the herd of woken
    workers queues for the cores, so ``procs_running`` and ``load1`` rise by the fleet's
    run-queue model plus a backlog of ``severity * (2 + cpus / 2)`` runnable tasks.

    Params: ``conn_factor`` (8.0: extra connections per normal one at severity 1),
    ``clients`` (2000.0: extra connections at severity 1 whatever the host's normal count: the
    storm's size is set by the client population), ``hold_s`` (2.0: seconds a storm connection
    stays open, short because retries fail fast; arrival rate = extra / hold_s),
    ``packets_per_conn`` (5.0: inbound packets per new connection).
    """
    v = _read(ctx, "tcp_established", "net_in_packets", "cpu_util", "load1", "procs_running")
    sev, env = ctx.severity, ctx.envelope
    cpus = ctx.host.cpus
    clients = ctx.param("conn_factor", 8.0) * v["tcp_established"] + ctx.param("clients", 2000.0)
    extra_conns = env * sev * clients * _lognormal(0.15, ctx.noise(0))
    arrivals = extra_conns / ctx.param("hold_s", 2.0)  # new connections per second (Little's law)
    target = (0.7 + 0.28 * sev) * (1.0 + 0.02 * ctx.noise(1))
    cpu = _clip_ratio(v["cpu_util"] + env * np.maximum(target - v["cpu_util"], 0.1 * sev))
    backlog = env * sev * (2.0 + cpus / 2.0)
    extra_runnable = (
        np.maximum(runnable_tasks(cpus, cpu) - runnable_tasks(cpus, v["cpu_util"]), 0.0) + backlog
    )
    procs = v["procs_running"] + np.maximum(
        np.rint(extra_runnable + np.sqrt(extra_runnable) * ctx.noise(2)), 0.0
    )
    _write(
        ctx,
        {
            "tcp_established": np.rint(v["tcp_established"] + extra_conns),
            "net_in_packets": v["net_in_packets"] + arrivals * ctx.param("packets_per_conn", 5.0),
            "cpu_util": cpu,
            "load1": _load_following(ctx, v["load1"], v["cpu_util"], cpu) + backlog,
            "procs_running": np.maximum(procs, 1.0),
        },
    )


@fault_type(
    "connection_leak",
    metrics=("tcp_established", "mem_util"),
    family="network",
    effects={"tcp_established": "up", "mem_util": "up"},
)
def connection_leak(ctx: FaultContext) -> None:
    """Connections opened and never closed: a code path forgets to close (or return to the pool)
    a socket, or a peer vanished without a FIN and no keepalive reaps it. ``tcp_established``
    climbs steadily for the whole window, whatever the traffic does, until the process hits its
    file-descriptor limit or is restarted; each leaked connection pins kernel socket buffers and
    application state (request context, TLS session), so ``mem_util`` creeps up with it. Nothing
    else moves: leaked connections are idle.

    The climb follows the fault's ramp (``linear``, ``exp`` or ``sigmoid`` over the window);
    ``step`` is taken as linear, because a leak cannot appear at once.

    Params: ``per_minute`` (40.0: connections leaked per minute at severity 1; the window's
    total is ``per_minute * severity * minutes``), ``kb_per_conn`` (256.0: memory held by one
    leaked connection, KiB).
    """
    v = _read(ctx, "tcp_established", "mem_util")
    per_minute = ctx.param("per_minute", 40.0) * ctx.severity
    if ctx.fault.ramp == "step":
        leaked = np.floor(per_minute * np.maximum(ctx.elapsed, 0.0) / 60.0 + 1e-9)
    else:
        leaked = np.floor(per_minute * (ctx.duration / 60.0) * ctx.envelope + 1e-9)
    leaked = np.where(ctx.inside, leaked, 0.0)
    held = leaked * ctx.param("kb_per_conn", 256.0) * 1024.0 / ctx.host.mem_bytes
    _write(
        ctx,
        {"tcp_established": v["tcp_established"] + leaked, "mem_util": _clip_ratio(v["mem_util"] + held)},
    )


_UPSTREAM = (*_TRAFFIC, "tcp_established", "cpu_util", "load1")


@fault_type(
    "upstream_failure",
    metrics=_UPSTREAM,
    family="network",
    effects=dict.fromkeys(_UPSTREAM, "down"),
)
def upstream_failure(ctx: FaultContext) -> None:
    """A dependency the host cannot work without fails: DNS stops resolving, the upstream service
    or database is down, or a credential expired. Requests fail at once (or the load balancer's
    health check fails and takes the host out), so traffic collapses to a trickle of health
    checks, retries and scrapes: ``net_*_bytes`` and ``net_*_packets`` fall to 2-5 % of normal
    (2 % at severity 1), pooled and client connections are torn down (``tcp_established`` falls
    by ``60 + 35 * severity`` %), and with no work to do ``cpu_util`` sinks toward idle and
    ``load1`` follows.

    Params: none besides severity and ramp.
    """
    v = _read(ctx, *_UPSTREAM)
    sev, env = ctx.severity, ctx.envelope
    residual = (0.02 + 0.03 * (1.0 - sev)) * _lognormal(0.3, ctx.noise(0))  # retries come in bursts
    traffic = 1.0 - env * (1.0 - np.minimum(residual, 1.0))
    new = {m: v[m] * traffic for m in _TRAFFIC}
    new["tcp_established"] = np.rint(v["tcp_established"] * (1.0 - env * (0.6 + 0.35 * sev)))
    cpu = v["cpu_util"] * (1.0 - env * (0.5 + 0.4 * sev))
    new["cpu_util"] = cpu
    new["load1"] = _load_following(ctx, v["load1"], v["cpu_util"], cpu)
    _write(ctx, new)


_SPIKE = (*_TRAFFIC, "tcp_established", "cpu_util", "load1")


@fault_type(
    "traffic_spike",
    metrics=_SPIKE,
    family="network",
    effects=dict.fromkeys(_SPIKE, "up"),
)
def traffic_spike(ctx: FaultContext) -> None:
    """A flash crowd: a launch, a marketing push, a viral link or a bot sends several times the
    normal request rate. Bytes and packets in both directions scale together by the same factor
    (``2.5 + 4 * severity``, so 4.5x at severity 0.5; same request mix, same packet
    sizes), concurrent connections follow by Little's law (``tcp_established`` up by 80 % of the
    traffic's increase), and CPU does the extra work: ``cpu_util`` goes to
    ``1 - (1 - cpu) ** factor`` (proportional to demand while the host has headroom, saturating
    near 1), with ``load1`` following and a run queue once CPU passes 80 %.

    Params: ``factor`` (4.0: the traffic multiplier is ``1 + 1.5 + factor * severity``, with
    10 % minute-to-minute jitter).
    """
    v = _read(ctx, *_SPIKE)
    sev, env = ctx.severity, ctx.envelope
    mult = 1.0 + env * (1.5 + ctx.param("factor", 4.0) * sev) * _lognormal(0.1, ctx.noise(0))
    new = {m: v[m] * mult for m in _TRAFFIC}
    new["tcp_established"] = np.rint(v["tcp_established"] * (1.0 + 0.8 * (mult - 1.0)))
    cpu = _clip_ratio(1.0 - (1.0 - v["cpu_util"]) ** mult)
    new["cpu_util"] = cpu
    new["load1"] = _load_following(ctx, v["load1"], v["cpu_util"], cpu)
    _write(ctx, new)


_DROP = (*_TRAFFIC, "tcp_established", "cpu_util", "load1")


@fault_type(
    "traffic_drop",
    metrics=_DROP,
    family="network",
    effects=dict.fromkeys(_DROP, "down"),
)
def traffic_drop(ctx: FaultContext) -> None:
    """The host loses part of its traffic: the load balancer drained it or lowered its weight, a
    region or client population is cut off, or a partial outage upstream sends fewer requests.
    Bytes and packets in both directions fall together by ``40 + 40 * severity`` %; the
    traffic-driven connections go with them (``tcp_established`` falls by 80 % of the traffic's
    drop: pools, monitoring and ssh stay); ``cpu_util`` falls by 70 % of the traffic's drop
    (daemons and housekeeping keep running) and ``load1`` follows. Unlike ``upstream_failure``
    the host keeps serving what still arrives.

    Params: ``drop`` (overrides the share of traffic lost, 0-1; default ``0.4 + 0.4 * severity``).
    """
    v = _read(ctx, *_DROP)
    env = ctx.envelope
    drop = np.clip(ctx.param("drop", 0.4 + 0.4 * ctx.severity), 0.0, 1.0) * env
    new = {m: v[m] * (1.0 - drop) for m in _TRAFFIC}
    new["tcp_established"] = np.rint(v["tcp_established"] * (1.0 - 0.8 * drop))
    cpu = v["cpu_util"] * (1.0 - 0.7 * drop)
    new["cpu_util"] = cpu
    new["load1"] = _load_following(ctx, v["load1"], v["cpu_util"], cpu)
    _write(ctx, new)
