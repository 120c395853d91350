"""The aggregator process: a grpc.aio server around the Ingestor.

The handler receives each Batch as raw bytes (no deserializer), so what is stored is exactly what
the agent signed and sent. Store work runs on one worker thread: ingest is single-writer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from agent._gen.logseal.v1 import ingest_pb2 as pb
from agent.aggregator.ingest import Ingestor
from agent.aggregator.store import Store
from agent.config import AggregatorConfig
from agent.keys import load_trusted_keys
from agent.seal import keyring_from

log = logging.getLogger(__name__)

_SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 80 << 20),
    ("grpc.max_send_message_length", 4 << 20),
]


def server_credentials(config: AggregatorConfig) -> grpc.ServerCredentials | None:
    tls = config.tls
    if tls is None:
        return None
    assert tls.ca and tls.cert and tls.key
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=tls.ca.read_bytes(),
        require_client_auth=True,
    )


class Aggregator:
    def __init__(self, config: AggregatorConfig) -> None:
        self.config = config
        self.store = Store(config.store_dir, config.store.segment_max_bytes)
        keys = load_trusted_keys(config.trusted_keys_dir)
        self.ingestor = Ingestor(self.store, keyring_from(keys))
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logseal-store")
        self.port = 0

    async def _stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[pb.Ack]:
        loop = asyncio.get_running_loop()
        peer = context.peer()
        async for raw in requests:
            yield await loop.run_in_executor(self._worker, self.ingestor.handle, raw, peer)

    async def serve(self, stop: asyncio.Event) -> None:
        server = grpc.aio.server(options=_SERVER_OPTIONS)
        handler = grpc.method_handlers_generic_handler(
            "logseal.v1.Ingest",
            {"Stream": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=None, response_serializer=pb.Ack.SerializeToString)},
        )
        server.add_generic_rpc_handlers((handler,))
        credentials = server_credentials(self.config)
        if credentials is None:
            self.port = server.add_insecure_port(self.config.listen)
        else:
            self.port = server.add_secure_port(self.config.listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        await server.start()
        host = self.config.listen.rpartition(":")[0]
        if self.config.port_file is not None:
            tmp = self.config.port_file.with_suffix(".tmp")
            tmp.write_text(f"{self.port}\n")
            tmp.replace(self.config.port_file)
        log.info("aggregator serving address=%s:%d store=%s tls=%s nodes=%d", host, self.port,
                 self.config.store_dir, self.config.tls is not None, len(self.ingestor.keyring))
        await stop.wait()
        await server.stop(grace=2)
        self._worker.shutdown(wait=True)
        s = self.ingestor.stats
        log.info("aggregator stopped stored_batches=%d stored_events=%d duplicates=%d rejected=%d",
                 s.stored_batches, s.stored_events, s.duplicates, s.rejected)
        self.store.close()


def run_aggregator(config: AggregatorConfig) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Aggregator(config).serve(stop)

    asyncio.run(main())
    return 0
