"""Ships spooled batches to the aggregator over one bidirectional gRPC stream.

Keeps up to `window` batches unacknowledged; on `stored` or `duplicate` the spool forgets the
batch; on `rejected` the batch stays spooled, the rejection is logged, and the stream is re-opened
after a backoff (the aggregator may just not have enrolled the key yet). Any transport error
also means: back off with full jitter, reconnect, resend every pending batch in order. The
aggregator's dedup makes the resends harmless, so delivery into the store is exactly once.

Given several aggregators (which share one store), a session that ends without settling a batch
moves on to the next address, in order and round again: failover. Dedup is by (node, stream, seq)
in the shared store, so a batch sent to two aggregators is still stored once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.config import ShipConfig, TlsConfig
from agent.spool import BatchKey, Spool
from agent.wire import CONSISTENCY_METHOD, ENROLLED_KEY_METADATA, INGEST_STREAM_METHOD

log = logging.getLogger(__name__)

# Acks that let the agent forget a batch; anything else keeps it spooled.
SETTLED_STATUSES = frozenset([pb.Ack.STORED, pb.Ack.DUPLICATE])
# Transport failures that are routine (aggregator restarting, network cut): logged at info.
ROUTINE_CODES = frozenset([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                           grpc.StatusCode.DEADLINE_EXCEEDED])
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 4 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 0),
]


@dataclass
class ShipStats:
    sent: int = 0
    stored: int = 0
    duplicate: int = 0
    rejected: int = 0
    reconnects: int = 0
    retries: int = 0
    connected: bool = False
    last_ack_unix: float = 0.0


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    assert tls.ca and tls.cert and tls.key
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes(),
        certificate_chain=tls.cert.read_bytes(),
    )


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, initial * 2**attempt)]."""
    return rng.uniform(0, min(max_s, initial_s * (2 ** min(attempt, 30))))


class _Session:
    """One open stream: a request generator fed from the spool and bounded by the window."""

    def __init__(self, spool: Spool, window: int, stopping: threading.Event) -> None:
        self.spool = spool
        self.window = window
        self.stopping = stopping
        self.queue = spool.subscribe()
        self.in_flight: deque[BatchKey] = deque()
        self.closed = False
        self.sent = 0
        self.resent = 0

    def requests(self) -> Iterator[bytes]:
        cond = self.spool.condition
        while True:
            with cond:
                cond.wait_for(lambda: self.closed or self.stopping.is_set()
                              or (bool(self.queue) and len(self.in_flight) < self.window))
                if self.closed or self.stopping.is_set():
                    return
                key = self.queue.pop(0)
            data = self.spool.read(key)
            if data is None:
                continue  # acked meanwhile
            with cond:
                self.in_flight.append(key)
            self.sent += 1
            if self.spool.mark_sent(key):
                self.resent += 1
            yield data

    def settle(self, key: BatchKey) -> None:
        with self.spool.condition:
            if key in self.in_flight:
                self.in_flight.remove(key)
            self.spool.condition.notify_all()

    def close(self) -> None:
        with self.spool.condition:
            self.closed = True
            self.spool.condition.notify_all()
        self.spool.unsubscribe(self.queue)


class Shipper(threading.Thread):
    def __init__(self, target: str | Sequence[str], spool: Spool, config: ShipConfig, tls: TlsConfig | None = None,
                 rng: random.Random | None = None, on_checkpoint: Callable[[str], None] | None = None) -> None:
        super().__init__(name="logseal-shipper", daemon=True)
        self.targets = [target] if isinstance(target, str) else list(target)
        self.target = self.targets[0]
        self.spool = spool
        self.config = config
        self.tls = tls
        self.stats = ShipStats()
        self._stopping = threading.Event()
        self._rng = rng or random.Random()
        self._call: grpc.Future | None = None
        self._channel: grpc.Channel | None = None
        # Called (on this thread) with each checkpoint an ack shows: the node witnesses the log.
        self.on_checkpoint = on_checkpoint
        # The node's enrolled public key (raw), presented on each stream for trust-on-first-use enrolment.
        self.enrolled_key = b""

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        with self.spool.condition:
            self.spool.condition.notify_all()

    def run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            progressed = self._session()
            if self._stopping.is_set():
                break
            attempt = 0 if progressed else attempt + 1
            if not progressed and len(self.targets) > 1:
                self.target = self.targets[(self.targets.index(self.target) + 1) % len(self.targets)]
                log.info("failing over to the next aggregator", extra={"target": self.target})
            delay = backoff_delay(attempt, self.config.backoff_initial_ms / 1000,
                                  self.config.backoff_max_ms / 1000, self._rng)
            self.stats.reconnects += 1
            self._stopping.wait(delay)

    def prove_consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """Ask the aggregator (on the open channel) for a consistency proof between two tree sizes."""
        channel = self._channel
        if channel is None:
            raise ConnectionError("not connected to the aggregator")
        call = channel.unary_unary(CONSISTENCY_METHOD, request_serializer=pb.ConsistencyRequest.SerializeToString,
                                   response_deserializer=pb.ConsistencyProof.FromString)
        reply = call(pb.ConsistencyRequest(old_size=old_size, new_size=new_size), timeout=30)
        return list(reply.hashes)

    def _open_channel(self) -> grpc.Channel:
        if self.tls is not None:
            return grpc.secure_channel(self.target, channel_credentials(self.tls), options=_CHANNEL_OPTIONS)
        return grpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)

    def _session(self) -> bool:
        """Run one stream until it fails; True if at least one batch was settled."""
        progressed = False
        session = _Session(self.spool, self.config.window, self._stopping)
        channel = self._open_channel()
        self._channel = channel
        try:
            stream = channel.stream_stream(INGEST_STREAM_METHOD, request_serializer=None,
                                           response_deserializer=pb.Ack.FromString)
            metadata = ((ENROLLED_KEY_METADATA, self.enrolled_key.hex()),) if self.enrolled_key else None
            call = stream(session.requests(), wait_for_ready=False, metadata=metadata)
            self._call = call
            for ack in call:
                self.stats.connected = True
                self.stats.last_ack_unix = time.time()
                if ack.checkpoint and self.on_checkpoint is not None:
                    self.on_checkpoint(ack.checkpoint)
                key = (ack.stream_id, ack.seq)
                if ack.status in SETTLED_STATUSES:
                    if ack.status == pb.Ack.STORED:
                        self.stats.stored += 1
                    else:
                        self.stats.duplicate += 1
                    self.spool.ack(key)
                    session.settle(key)
                    progressed = True
                    continue
                self.stats.rejected += 1
                # KEY_EPOCH_PENDING: its epoch's certifying batch is not in yet; routine, resent shortly.
                level = logging.INFO if ack.verdict == "KEY_EPOCH_PENDING" else logging.ERROR
                log.log(level, "aggregator rejected a batch; it stays spooled and will be resent",
                        extra={"stream": ack.stream_id, "seq": ack.seq, "verdict": ack.verdict, "reason": ack.reason})
                call.cancel()
                break
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            level = logging.INFO if code in ROUTINE_CODES else logging.WARNING
            if not self._stopping.is_set():
                log.log(level, "aggregator stream ended; will reconnect",
                        extra={"target": self.target, "code": code.name if code is not None else None,
                               "detail": str(exc.details() if isinstance(exc, grpc.Call) else exc)})
        finally:
            self._channel = None
            self.stats.connected = False
            self._call = None
            self.stats.sent += session.sent
            self.stats.retries += session.resent
            session.close()
            channel.close()
        return progressed
