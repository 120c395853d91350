"""The aggregator process: a grpc.aio server around the Ingestor.

The handler receives each Batch as raw bytes (no deserializer), so what is stored is exactly what
the agent signed and sent. Store work runs on one worker thread: ingest is single-writer.

Hostile clients cannot take it down: messages are size-limited, the number of streams is bounded
(more get RESOURCE_EXHAUSTED), a stream that sends nothing for `limits.stream_idle_timeout_s` is
closed, dead connections are found by keepalive pings, and garbage is rejected per message.
SIGHUP reloads the enrolled node keys and, with [tls], the server certificate, key and CA
(new connections use them; aggregator/tls_reload.py). The standard gRPC health service answers on the gRPC port
and, alone and in plaintext, on `[metrics] grpc_health_listen` (for the kubelet's probe).

With [tls], each batch's node id must be the node id of the client certificate of its stream (read
from the TLS auth context). Checkpoints of the store's Merkle log are signed on the store thread:
by batch count after an append, by a timer, and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.checkpoints import Checkpointer
from agent.aggregator.detection import DetectionShell
from agent.aggregator.forward.forwarder import Forwarding
from agent.aggregator.ingest import Ingestor, security_event
from agent.aggregator.jetstream import JetStreamStore
from agent.aggregator.jetstream_checkpoints import JetStreamCheckpointer
from agent.aggregator.nats_tls import nats_tls
from agent.aggregator.retention import RetentionService
from agent.aggregator.retention_policy import policy_from
from agent.aggregator.store import Store
from agent.aggregator.tls_reload import ServerCertificates
from agent.certs import CertError, node_id_from_cert
from agent.config import AggregatorConfig
from agent.detect.baseline import BaselineConfig
from agent.errors import LogsealError
from agent.keys import load_trusted_keys
from agent.metrics import MetricsServer, Readiness, Registry, register_process_metrics
from agent.seal import keyring_from
from agent.wire import ENROLLED_KEY_METADATA

log = logging.getLogger(__name__)

SERVICE = "logseal.v1.Ingest"


def peer_node_id(context: grpc.aio.ServicerContext) -> str | None:
    """The node id of the stream's client certificate (None when it names none)."""
    pems = context.auth_context().get("x509_pem_cert") or []
    if len(pems) != 1:
        return None
    try:
        return node_id_from_cert(pems[0])
    except CertError:
        return None


def presented_key(context: grpc.aio.ServicerContext) -> bytes:
    """The enrolled public key the agent presents on its stream (metadata `logseal-enrolled-key`, hex)."""
    for item in context.invocation_metadata() or ():
        if item.key == ENROLLED_KEY_METADATA and isinstance(item.value, str):
            try:
                return bytes.fromhex(item.value)
            except ValueError:
                return b""
    return b""


class Aggregator:
    def __init__(self, config: AggregatorConfig) -> None:
        self.config = config
        self.store: Store | JetStreamStore
        self.checkpointer: Checkpointer | JetStreamCheckpointer
        if config.store.type == "jetstream":
            s = config.store
            self.store = JetStreamStore(s.servers, s.stream, s.replicas,
                                        tls=nats_tls(s.tls_ca, s.tls_cert, s.tls_key, "store"))
            self.checkpointer = JetStreamCheckpointer.from_config(self.store, config, time.time_ns())
        else:
            self.store = Store(config.store_dir, config.store.segment_max_bytes)
            self.checkpointer = Checkpointer.from_config(self.store, config, time.time_ns())
        keys = load_trusted_keys(config.trusted_keys_dir)
        self.detection = (DetectionShell(config.detect.rules, config.store_dir, config.detect.alerts_file,
                                         outputs=config.alert_output,
                                         baselines=BaselineConfig() if config.detect.baselines else None)
                          if config.detect.rules or config.detect.baselines else None)
        self.ingestor = Ingestor(self.store, keyring_from(keys), self.detection, checkpointer=self.checkpointer,
                                 bind_identity=config.tls is not None, enrollment=config.enrollment,
                                 trusted_keys_dir=config.trusted_keys_dir)
        self.certificates = ServerCertificates(config.tls) if config.tls is not None else None
        retention = config.retention
        self.retention = RetentionService(
            self.store.db, config.store_dir,
            policy_from(retention.max_age, retention.max_bytes, "retention") if retention is not None else None,
            self.checkpointer.key, self.checkpointer.origin, retention.interval_s if retention is not None else 3600
        ) if isinstance(self.store, Store) else None  # a JetStream store keeps no segments to retire
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logseal-store")
        self.forwarding = Forwarding(config.forward, config.store_dir) if config.forward else None
        self.port = 0
        self.streams_open = 0
        self._silent: set[str] = set()
        self.store_writable = True
        self.latency_observers: list[Any] = []

    async def _stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[pb.Ack]:
        loop = asyncio.get_running_loop()
        peer = context.peer()
        cert_node = peer_node_id(context) if self.config.tls is not None else None
        presented = presented_key(context)
        idle = self.config.limits.stream_idle_timeout_s
        iterator = requests.__aiter__()
        self.streams_open += 1
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(iterator.__anext__(), timeout=idle)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    log.info("closing a stream that sent nothing", extra={"peer": peer, "idle_s": idle})
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"no batch for {idle}s")
                    return
                started = time.monotonic()
                try:
                    ack = await loop.run_in_executor(self._worker, self.ingestor.handle, raw, peer, cert_node,
                                                     presented)
                except OSError as exc:
                    self.store_writable = False
                    log.error("store write failed; the batch is not acked and will be resent",
                              extra={"reason": str(exc)})
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "store not writable")
                    return
                self.store_writable = True
                if self.forwarding is not None:
                    self.forwarding.wake()
                for observe in self.latency_observers:
                    observe(time.monotonic() - started)
                yield ack
        finally:
            self.streams_open -= 1

    async def _checkpoint_timer(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        period = min(self.config.checkpoint_interval_s, 5)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)
            if stop.is_set():
                return
            try:
                await loop.run_in_executor(self._worker, self.checkpointer.tick, time.time_ns())
            except (LogsealError, OSError) as exc:
                log.error("checkpoint refused", extra={"reason": str(exc)})

    async def _retention_timer(self, stop: asyncio.Event) -> None:
        """Legal holds are watched every few seconds; retention runs every `[retention] interval_s`."""
        loop = asyncio.get_running_loop()
        interval = self.config.retention.interval_s if self.config.retention is not None else 5
        period = max(0.2, min(interval / 2, 5))
        while not stop.is_set() and self.retention is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)
            if stop.is_set():
                return
            try:
                now_ns = time.time_ns()
                planned = await loop.run_in_executor(None, self.retention.watch, now_ns)
                if planned is not None and planned.deletions:
                    await loop.run_in_executor(self._worker, self.retention.apply, planned, now_ns)
            except (LogsealError, OSError, sqlite3.Error) as exc:
                log.error("retention run failed; nothing more was deleted", extra={"reason": str(exc)})

    async def _consistency(self, request: pb.ConsistencyRequest, context: grpc.aio.ServicerContext
                           ) -> pb.ConsistencyProof:
        loop = asyncio.get_running_loop()
        try:
            hashes = await loop.run_in_executor(self._worker, self.store.consistency_proof, request.old_size,
                                                request.new_size)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from exc
        return pb.ConsistencyProof(hashes=hashes)

    def check_silence(self, now: float) -> list[str]:
        """Nodes silent for longer than `node_silent_after_s` (each reported once per silence)."""
        limit = self.config.node_silent_after_s
        silent = []
        for node, last in list(self.ingestor.last_batch_unix.items()):
            if now - last > limit and node not in self._silent:
                self._silent.add(node)
                silent.append(node)
                log.warning("node silent: no batch, not even a heartbeat",
                            extra={"node": node, "silent_s": round(now - last)})
                if self.detection is not None:
                    event = security_event("node_silent", node, "", 0, "NODE_SILENT",
                                           f"no batch for {now - last:.0f}s", "")
                    self.detection.submit_event(event)
            elif now - last <= limit:
                self._silent.discard(node)
        return silent

    async def _watch_silence(self, stop: asyncio.Event) -> None:
        period = max(1.0, min(30.0, self.config.node_silent_after_s / 3))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)
            self.check_silence(time.time())

    def reload_keys(self) -> None:
        try:
            keys = load_trusted_keys(self.config.trusted_keys_dir)
        except LogsealError as exc:
            log.error("trusted keys reload refused; the loaded keys stay", extra={"reason": str(exc)})
            return
        self.ingestor.keyring = keyring_from(keys)
        log.info("trusted keys reloaded", extra={"nodes": len(keys)})

    def readiness(self) -> Readiness:
        if not self.store_writable:
            return Readiness.not_ready("the store is not writable")
        return Readiness.ok()

    def _metrics(self) -> MetricsServer | None:
        if not self.config.metrics.listen:
            return None
        registry = Registry()
        register_process_metrics(registry, version="0.1.0", component="aggregator")
        received = registry.counter("logseal_aggregator_batches_received_total", "Batches received.", ["node"])
        acks = registry.counter("logseal_aggregator_acks_total", "Acks sent.", ["node", "status"])
        rejections = registry.counter("logseal_aggregator_rejections_total", "Rejected batches.", ["node", "verdict"])
        store_bytes = registry.gauge("logseal_aggregator_store_bytes", "Bytes of segments and index.")
        free = registry.gauge("logseal_aggregator_store_free_bytes", "Free bytes on the store's file system.")
        writable = registry.gauge("logseal_aggregator_store_writable", "1 when the last write succeeded.")
        last = registry.gauge("logseal_aggregator_last_batch_timestamp_seconds", "Last batch stored.", ["node"])
        streams = registry.gauge("logseal_aggregator_streams_connected", "Open agent streams.")
        latency = registry.histogram("logseal_aggregator_ingest_latency_seconds",
                                     "Receive to fsynced ack, per batch.")
        self.latency_observers.append(latency.observe)
        checkpoint_age = registry.gauge("logseal_aggregator_checkpoint_age_seconds",
                                        "Age of the newest signed checkpoint.")
        stored_events = registry.counter("logseal_aggregator_events_stored_total", "Events stored.", ["dataset"])
        key_epoch = registry.gauge("logseal_aggregator_node_key_epoch", "Current signing key epoch per node.", ["node"])
        if self.detection is not None:
            detection_latency = registry.histogram("logseal_aggregator_detection_latency_seconds",
                                                   "Event time to alert, per alert.", ["rule"])
            self.detection.latency_observers.append(
                lambda rule, seconds: detection_latency.labels(rule).observe(seconds))
        alerts = registry.counter("logseal_aggregator_alerts_total", "Detection alerts raised.", ["rule", "level"])
        retention_segments = registry.counter("logseal_aggregator_retention_deleted_segments_total",
                                              "Segments deleted by retention.", ["rule"])
        retention_bytes = registry.counter("logseal_aggregator_retention_deleted_bytes_total",
                                           "Segment bytes deleted by retention.", ["rule"])
        holds_active = registry.gauge("logseal_aggregator_legal_holds_active", "Legal holds in force.")
        forwarded = registry.counter("logseal_aggregator_forwarded_events_total",
                                     "Events a SIEM accepted.", ["output"])
        forward_retries = registry.counter("logseal_aggregator_forward_retries_total",
                                           "Forward requests that failed transiently.", ["output"])
        dead_lettered = registry.counter("logseal_aggregator_forward_dead_lettered_total",
                                         "Events a SIEM rejected, written to the dead-letter file.", ["output"])
        forward_lag = registry.gauge("logseal_aggregator_forward_lag_events",
                                     "Stored events not yet forwarded.", ["output"])
        forward_failing = registry.gauge("logseal_aggregator_forward_failing",
                                         "1 while the output is backing off after a failure.", ["output"])

        def collect() -> None:
            ing = self.ingestor
            for (node, status), value in ing.acks_by_status.items():
                acks.labels(node, status).mirror(value)
            by_node: dict[str, int] = {}
            for (node, _), value in ing.acks_by_status.items():
                by_node[node] = by_node.get(node, 0) + value
            for node, value in by_node.items():
                received.labels(node).mirror(value)
            for (node, verdict), value in ing.rejections_by_verdict.items():
                rejections.labels(node, verdict).mirror(value)
            for node, when in ing.last_batch_unix.items():
                last.labels(node).set(when)
            total = sum(p.stat().st_size for p in self.config.store_dir.rglob("*") if p.is_file())
            store_bytes.set(total)
            free.set(shutil.disk_usage(self.config.store_dir).free)
            writable.set(1 if self.store_writable else 0)
            streams.set(self.streams_open)
            last_cp = self.checkpointer.last
            if last_cp is not None:
                checkpoint_age.set(max(0.0, time.time() - last_cp.time_ns / 1e9))
            for dataset, value in ing.events_by_dataset.items():
                stored_events.labels(dataset).mirror(value)
            for node, epoch in ing.epochs.current_epochs().items():
                key_epoch.labels(node).set(epoch)
            if self.retention is not None:
                for rule, (segments, deleted_bytes) in self.retention.deleted.items():
                    retention_segments.labels(rule).mirror(segments)
                    retention_bytes.labels(rule).mirror(deleted_bytes)
                holds_active.set(self.retention.holds.active)
            if self.detection is not None:
                for (rule, level), value in self.detection.stats.alerts_by_rule.items():
                    alerts.labels(rule, level).mirror(value)
            if self.forwarding is not None:
                for output, fs in self.forwarding.stats().items():
                    forwarded.labels(output).mirror(fs.forwarded)
                    forward_retries.labels(output).mirror(fs.retries)
                    dead_lettered.labels(output).mirror(fs.dead_lettered)
                    forward_lag.labels(output).set(fs.lag)
                    forward_failing.labels(output).set(1 if fs.failing else 0)

        registry.on_collect(collect)
        return MetricsServer(registry, self.config.metrics.listen, ready=self.readiness)

    async def serve(self, stop: asyncio.Event, reload: asyncio.Event | None = None) -> None:
        limits = self.config.limits
        options = [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", 4 << 20),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.max_connection_idle_ms", 15 * 60_000),
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=limits.max_streams + 16)
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {"Stream": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=None, response_serializer=pb.Ack.SerializeToString),
             "Consistency": grpc.unary_unary_rpc_method_handler(
                self._consistency, request_deserializer=pb.ConsistencyRequest.FromString,
                response_serializer=pb.ConsistencyProof.SerializeToString)},
        )
        server.add_generic_rpc_handlers((handler,))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        credentials = self.certificates.credentials() if self.certificates is not None else None
        if credentials is None:
            self.port = server.add_insecure_port(self.config.listen)
        else:
            self.port = server.add_secure_port(self.config.listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        health_server = None
        if self.config.metrics.grpc_health_listen:
            health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
            health_server.add_insecure_port(self.config.metrics.grpc_health_listen)
            await health_server.start()
        await server.start()
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        metrics = self._metrics()
        if metrics is not None:
            metrics.start()
        timer = asyncio.ensure_future(self._checkpoint_timer(stop))
        retention_timer = asyncio.ensure_future(self._retention_timer(stop))
        if self.forwarding is not None:
            self.forwarding.start()
        host = self.config.listen.rpartition(":")[0]
        if self.config.port_file is not None:
            tmp = self.config.port_file.with_suffix(".tmp")
            tmp.write_text(f"{self.port}\n")
            os.replace(tmp, self.config.port_file)
        log.info("aggregator serving", extra={"address": f"{host}:{self.port}", "store": str(self.config.store_dir),
                                              "tls": self.config.tls is not None, "nodes": len(self.ingestor.keyring),
                                              "detection": list(self.config.detect.rules)})
        silence = asyncio.ensure_future(self._watch_silence(stop))
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait())]
            if reload is not None:
                waiters.append(asyncio.ensure_future(reload.wait()))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if reload is not None and reload.is_set():
                reload.clear()
                self.reload_keys()
                if self.certificates is not None:
                    self.certificates.reload()
        silence.cancel()
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(grace=2)
        if health_server is not None:
            await health_server.stop(grace=1)
        await timer
        await retention_timer
        self._worker.shutdown(wait=True)
        if self.retention is not None:
            self.retention.close()
        try:
            self.checkpointer.sign(time.time_ns())
        except (LogsealError, OSError) as exc:
            log.error("checkpoint refused at shutdown", extra={"reason": str(exc)})
        if self.detection is not None:
            self.detection.close()
        if self.forwarding is not None:
            self.forwarding.close()
        if metrics is not None:
            metrics.stop()
        s = self.ingestor.stats
        log.info("aggregator stopped", extra={"stored_batches": s.stored_batches, "stored_events": s.stored_events,
                                              "duplicates": s.duplicates, "rejected": s.rejected,
                                              "checkpoints": self.checkpointer.signed})
        self.store.close()


def run_aggregator(config: AggregatorConfig) -> int:
    async def main() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await Aggregator(config).serve(stop, reload)

    asyncio.run(main())
    return 0
