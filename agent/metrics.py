"""Prometheus metrics and health endpoints for the agent and the aggregator, with the standard library only.

Design constraints:

* **One registry per process, passed in.** There is no global registry: a daemon creates a `Registry`,
  hands it to the stages that count, and to one `MetricsServer`. Tests make as many as they like.
* **Counting is cheap and never blocks on a scrape.** Every update takes one short lock per metric
  family; rendering copies the values under that lock and formats outside it.
* **Values that are cheaper to read than to track** (spool bytes, store size, age of the oldest
  unacked batch) are refreshed at scrape time by collect callbacks (`Registry.on_collect`); a
  callback that raises is logged and counted in `logseal_metrics_collect_errors_total`, and the
  scrape still succeeds with the other values.
* **Health is explicit.** `/healthz` answers 200 while the process serves HTTP and its optional
  liveness check passes; `/readyz` answers 200 only when the readiness check returns a ready
  `Readiness`, else 503 with the reason as the body. A check that raises is a 503 naming the error,
  never a 500 or a dead server thread.

The exposition is the Prometheus text format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/). Counter names end in `_total`, as
OpenMetrics requires and `prometheus_client` renders them. Histograms expose cumulative
`_bucket{le=...}`, `_sum` and `_count`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, Generic, TypeVar

log = logging.getLogger("logseal.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = frozenset({"le", "quantile"})


class MetricsError(ValueError):
    """A metric was declared or used wrongly (a programming error, raised at the call site)."""


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{_escape_label(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _CounterChild:
    __slots__ = ("_lock", "_value")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0 or math.isnan(amount):
            raise MetricsError(f"a counter only goes up; got inc({amount})")
        with self._lock:
            self._value += amount

    def mirror(self, total: float) -> None:
        """Set the counter to a running total kept elsewhere (the kernel's CPU time); never lowers it."""
        with self._lock:
            self._value = max(self._value, total)

    def get(self) -> float:
        with self._lock:
            return self._value


class _GaugeChild:
    __slots__ = ("_lock", "_value")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._value = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value -= amount

    def set_to_current_time(self) -> None:
        self.set(time.time())

    def get(self) -> float:
        with self._lock:
            return self._value


class _HistogramChild:
    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        self._lock = lock
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        if math.isnan(value):
            raise MetricsError("a histogram cannot observe NaN")
        index = len(self._bounds)
        for i, bound in enumerate(self._bounds):
            if value <= bound:
                index = i
                break
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative bucket counts (the last one is +Inf, i.e. the count) and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative: list[int] = []
        running = 0
        for c in counts:
            running += c
            cumulative.append(running)
        return cumulative, total


C = TypeVar("C", _CounterChild, _GaugeChild, _HistogramChild)


class _Family(Generic[C]):
    kind: ClassVar[str]

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        if not _NAME_RE.match(name):
            raise MetricsError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL_RE.match(label) or label.startswith("__") or label in _RESERVED_LABELS:
                raise MetricsError(f"{name}: invalid label name {label!r}")
        if len(set(labelnames)) != len(labelnames):
            raise MetricsError(f"{name}: duplicate label names {list(labelnames)}")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], C] = {}

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str, **named: str) -> C:
        """The child for one combination of label values, created at first use."""
        if values and named:
            raise MetricsError(f"{self.name}: give label values by position or by name, not both")
        if named:
            if set(named) != set(self.labelnames):
                raise MetricsError(f"{self.name}: labels {sorted(named)} do not match {list(self.labelnames)}")
            values = tuple(named[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise MetricsError(f"{self.name}: expected {len(self.labelnames)} label values, got {len(values)}")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
            return child

    def remove(self, *values: str) -> None:
        """Forget one label combination (e.g. the lag of a file no longer watched)."""
        with self._lock:
            self._children.pop(tuple(str(v) for v in values), None)

    def clear(self) -> None:
        with self._lock:
            self._children.clear()

    def _unlabelled(self) -> C:
        if self.labelnames:
            raise MetricsError(f"{self.name} has labels {list(self.labelnames)}; use .labels(...)")
        return self.labels()

    def _items(self) -> list[tuple[tuple[str, ...], C]]:
        with self._lock:
            return sorted(self._children.items())

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {_escape_help(self.documentation)}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self._samples()

    def _samples(self) -> Iterable[str]:
        for values, child in self._items():
            assert isinstance(child, _CounterChild | _GaugeChild)
            yield f"{self.name}{_labels_text(self.labelnames, values)} {_format_value(child.get())}"


class Counter(_Family[_CounterChild]):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise MetricsError(f"counter {name!r} must end in _total")
        super().__init__(name, documentation, labelnames)
        if not self.labelnames:
            self.labels()  # an unlabelled counter is exported as 0 from the start

    def _new_child(self) -> _CounterChild:
        return _CounterChild(threading.Lock())

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def get(self) -> float:
        return self._unlabelled().get()


class Gauge(_Family[_GaugeChild]):
    kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        if not self.labelnames:
            self.labels()

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild(threading.Lock())

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)

    def set_to_current_time(self) -> None:
        self._unlabelled().set_to_current_time()

    def get(self) -> float:
        return self._unlabelled().get()


class Histogram(_Family[_HistogramChild]):
    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise MetricsError(f"{name}: buckets must be strictly increasing, got {list(buckets)}")
        self.bounds = bounds
        super().__init__(name, documentation, labelnames)
        if not self.labelnames:
            self.labels()

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(threading.Lock(), self.bounds)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def _samples(self) -> Iterable[str]:
        for values, child in self._items():
            cumulative, total = child.snapshot()
            for bound, count in zip((*self.bounds, math.inf), cumulative, strict=True):
                labels = _labels_text(self.labelnames, values, ("le", _format_value(bound)))
                yield f"{self.name}_bucket{labels} {count}"
            plain = _labels_text(self.labelnames, values)
            yield f"{self.name}_sum{plain} {_format_value(total)}"
            yield f"{self.name}_count{plain} {cumulative[-1]}"


Metric = Counter | Gauge | Histogram
M = TypeVar("M", Counter, Gauge, Histogram)


class Registry:
    """The metrics of one process. Names are unique; declaring the same name twice is an error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Metric] = {}
        self._collectors: list[Callable[[], None]] = []
        self._collect_errors = self.counter(
            "logseal_metrics_collect_errors_total", "Collect callbacks that raised during a scrape.")

    def _add(self, metric: M) -> M:
        with self._lock:
            taken = {metric.name}
            if isinstance(metric, Histogram):
                taken |= {f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count"}
            clash = taken & self._names()
            if clash:
                raise MetricsError(f"metric name {sorted(clash)[0]!r} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def _names(self) -> set[str]:
        names: set[str] = set()
        for m in self._metrics.values():
            names.add(m.name)
            if isinstance(m, Histogram):
                names |= {f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count"}
        return names

    def counter(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, documentation, labelnames))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, documentation, labelnames))

    def histogram(self, name: str, documentation: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._add(Histogram(name, documentation, labelnames, buckets))

    def get(self, name: str) -> Metric:
        with self._lock:
            return self._metrics[name]

    def on_collect(self, callback: Callable[[], None]) -> None:
        """Run `callback` before every scrape, to refresh gauges that are read rather than tracked."""
        with self._lock:
            self._collectors.append(callback)

    def render(self) -> bytes:
        """The whole registry in the Prometheus text format 0.0.4."""
        with self._lock:
            collectors = list(self._collectors)
        for callback in collectors:
            try:
                callback()
            except Exception:
                log.exception("metrics collect callback failed", extra={"callback": repr(callback)})
                self._collect_errors.inc()
        with self._lock:
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        lines: list[str] = []
        for metric in metrics:
            lines.extend(metric.render())
        return ("\n".join(lines) + "\n").encode("utf-8")


def register_process_metrics(registry: Registry, version: str, component: str) -> None:
    """`logseal_build_info` and the usual `process_*` metrics of this process (Linux /proc where present)."""
    info = registry.gauge("logseal_build_info", "Always 1; the labels say what is running.", ["version", "component"])
    info.labels(version, component).set(1)
    start = registry.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch.")
    start.set(time.time() - time.monotonic() + _PROCESS_START_MONOTONIC)
    cpu_total = registry.counter("process_cpu_seconds_total", "User and system CPU time spent, in seconds.")
    rss = registry.gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
    fds = registry.gauge("process_open_fds", "Open file descriptors.")
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def collect() -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_total.labels().mirror(usage.ru_utime + usage.ru_stime)
        try:
            with open("/proc/self/statm", "rb") as f:
                rss.set(int(f.read().split()[1]) * page)
        except OSError:
            rss.set(usage.ru_maxrss * 1024)
        try:
            fds.set(len(os.listdir("/proc/self/fd")))
        except OSError:
            fds.set(math.nan)

    registry.on_collect(collect)


_PROCESS_START_MONOTONIC = time.monotonic()


@dataclass(frozen=True)
class Readiness:
    """The verdict of a health check: ready (or alive) or not, and why not."""

    ready: bool
    reason: str = ""

    @classmethod
    def ok(cls) -> Readiness:
        return cls(True, "ok")

    @classmethod
    def not_ready(cls, reason: str) -> Readiness:
        return cls(False, reason or "not ready")


HealthCheck = Callable[[], "Readiness | bool"]


def _run_check(check: HealthCheck | None) -> Readiness:
    if check is None:
        return Readiness.ok()
    try:
        verdict = check()
    except Exception as exc:  # a failing check is a 503 with its reason, never a 500
        log.warning("health check raised", extra={"error": str(exc)})
        return Readiness.not_ready(f"check failed: {type(exc).__name__}: {exc}")
    if isinstance(verdict, Readiness):
        return verdict
    return Readiness.ok() if verdict else Readiness.not_ready("not ready")


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` to (host, port); port 0 means any free port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsError(f"{listen!r} is not host:port (e.g. 0.0.0.0:9600)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # set per instance by MetricsServer
    registry: Registry
    alive_check: HealthCheck | None
    ready_check: HealthCheck | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a client may take to send its request; a stalled client cannot pin a thread
    protocol_version = "HTTP/1.1"
    server_version = "logseal-metrics"

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
               head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _route(self, head_only: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = self.server.registry.render()
            except Exception as exc:
                log.exception("metrics render failed")
                self._reply(500, f"render failed: {exc}\n".encode(), head_only=head_only)
                return
            self._reply(200, body, CONTENT_TYPE, head_only)
        elif path in ("/healthz", "/readyz"):
            check = self.server.alive_check if path == "/healthz" else self.server.ready_check
            verdict = _run_check(check)
            status = 200 if verdict.ready else 503
            self._reply(status, (verdict.reason or ("ok" if verdict.ready else "not ready")).encode() + b"\n",
                        head_only=head_only)
        elif path == "/":
            self._reply(200, b"logseal: /metrics /healthz /readyz\n", head_only=head_only)
        else:
            self._reply(404, b"not found\n", head_only=head_only)

    def do_GET(self) -> None:
        self._route(head_only=False)

    def do_HEAD(self) -> None:
        self._route(head_only=True)

    def _not_allowed(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        log.debug("metrics http request", extra={"request": format % args})


class MetricsServer:
    """Serves `/metrics`, `/healthz` and `/readyz` over HTTP on a background thread.

    `alive` and `ready` are called on every probe (from the server's threads: keep them quick and
    thread-safe); each returns a `Readiness` or a bool.
    """

    def __init__(self, registry: Registry, listen: str, *, ready: HealthCheck | None = None,
                 alive: HealthCheck | None = None) -> None:
        self.registry = registry
        self.listen = listen
        self._ready = ready
        self._alive = alive
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            raise MetricsError("metrics server already started")
        host, port = parse_listen(self.listen)
        server_class = _Server
        if ":" in host:

            class _Server6(_Server):
                address_family = socket.AF_INET6

            server_class = _Server6
        server = server_class((host, port), _Handler)
        server.registry = self.registry
        server.alive_check = self._alive
        server.ready_check = self._ready
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="logseal-metrics", daemon=True)
        self._thread.start()
        log.info("metrics server listening", extra={"address": host, "port": self.port})

    @property
    def port(self) -> int:
        """The bound port (the real one when `listen` asked for port 0)."""
        if self._server is None:
            raise MetricsError("metrics server not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
