"""The one typed configuration schema for agent and aggregator, read from TOML and validated once.

Unknown keys are errors (a typo must not silently fall back to a default). Every error is one line
naming the file, the key and the fix. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent.aggregator.alert_outputs import AlertOutputConfig
from agent.aggregator.forward.config import ForwardConfig, check_forwards
from agent.aggregator.nats_tls import nats_tls
from agent.aggregator.retention_policy import policy_from
from agent.errors import ConfigError

SOURCE_TYPES = ("k8s_audit", "auditd", "syslog", "journald", "cri")
DEFAULT_JOURNALCTL = ["journalctl", "--output=export", "--follow", "--all"]


@dataclass(frozen=True)
class BatchConfig:
    max_events: int = 1000
    """Seal a batch once it holds this many events."""
    max_bytes: int = 1 << 20
    """... or once its raw lines add up to this many bytes."""
    linger_ms: int = 200
    """... or once its oldest event has waited this long."""
    zstd_level: int = 3
    """zstd compression level (1 fastest .. 19 smallest)."""


@dataclass(frozen=True)
class ShipConfig:
    window: int = 32
    """Unacknowledged batches in flight at once."""
    backoff_initial_ms: int = 200
    """First reconnect delay; doubles per failure, with full jitter."""
    backoff_max_ms: int = 30_000
    """Ceiling of the reconnect delay."""
    shutdown_grace_ms: int = 5_000
    """On SIGTERM, how long to wait for the last batches' acks before exiting (they stay spooled)."""


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""
    """host:port of the HTTP server for /metrics, /healthz and /readyz ("" = off; port 0 = any)."""
    grpc_health_listen: str = ""
    """Aggregator only: a plaintext host:port serving only grpc.health.v1 (for the kubelet's probe)."""


@dataclass(frozen=True)
class SpoolConfig:
    max_bytes: int = 1 << 30
    """Disk the spool may use for unacknowledged batches."""
    when_full: str = "block"
    """"block": stop reading until acks make room (nothing lost while the logs stay on disk);
    "drop_oldest": drop the oldest unacked batch's payload, with a gap record in its stream."""


@dataclass(frozen=True)
class TailConfig:
    poll_interval_ms: int = 100
    """How often idle files and globs are checked for new data and new files."""
    read_chunk_bytes: int = 1 << 20
    """Bytes read from a file per call."""
    max_line_bytes: int = 1 << 20
    """A line longer than this is shipped in pieces marked `logseal.line_continues` (never dropped)."""


@dataclass(frozen=True)
class KeysConfig:
    epoch_s: int = 86_400
    """Change the node's signing key (a new epoch) after this many seconds ..."""
    epoch_batches: int = 100_000
    """... or after this many sealed batches, whichever comes first; the old private key is erased."""


@dataclass(frozen=True)
class TlsConfig:
    ca: Path | None = None
    """CA bundle that signs the peer's certificate."""
    cert: Path | None = None
    """This side's certificate (PEM)."""
    key: Path | None = None
    """This side's private key (PEM, mode 0600)."""


@dataclass(frozen=True)
class SourceConfig:
    type: str
    """One of k8s_audit, auditd, syslog, journald, cri."""
    paths: list[str] = field(default_factory=list)
    """Glob patterns of files to tail (all types but journald)."""
    command: list[str] = field(default_factory=list)
    """journald only: the command whose output is read; default `journalctl --output=export --follow
    --all`, with `--after-cursor=<cursor>` added when resuming."""
    policy: Path | None = None
    """k8s_audit only: an audit.k8s.io/v1 Policy file applied before sealing (kube-apiserver semantics)."""
    redact_paths: list[str] = field(default_factory=list)
    """k8s_audit only: extra dotted paths in the audit event to redact (`*` matches any key or index)."""
    timezone: str = "UTC"
    """syslog only: zone of RFC 3164 timestamps, which carry none (IANA name, e.g. "Europe/Berlin")."""
    name: str = ""
    """Stream id (the hash chain runs per node and stream); defaults to `type`. Unique per agent."""
    keep_original: bool | None = None
    """Keep each raw line in `event.original`. Default: yes, except Kubernetes audit JSON, whose
    record is carried verbatim under `kubernetes.audit`. Bytes that are not UTF-8 are always kept."""


@dataclass(frozen=True)
class AgentConfig:
    node_id: str
    """This node's name; batches are signed under it."""
    key: Path
    """Ed25519 private key of this node (from `logseal keygen`, mode 0600)."""
    spool_dir: Path
    """Disk buffer for sealed batches and file positions."""
    aggregator: str | list[str]
    """host:port of the aggregator, or a list of them: the agent fails over to the next on a connection
    failure (every aggregator of the list must share one store, e.g. `[store] type = "jetstream"`)."""
    heartbeat_s: int = 60
    """Seal an empty batch in a stream that had nothing to send for this long (0: never), so that a node
    going silent, or a stream's tail being cut, shows at the aggregator."""
    aggregator_pub: Path | None = None
    """The aggregator's public key (STORE/aggregator.pub): checkpoint signatures shown on acks are checked
    with it. Without it the node still checks that each checkpoint extends the last one it saw."""
    redact_key: Path | None = None
    """File holding the secret of the keyed hash in redaction markers. Default: derived from the node
    key, so markers correlate within a node; give all nodes one file to correlate across the fleet."""
    source: list[SourceConfig] = field(default_factory=list)
    batch: BatchConfig = field(default_factory=BatchConfig)
    ship: ShipConfig = field(default_factory=ShipConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    tail: TailConfig = field(default_factory=TailConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tls: TlsConfig | None = None
    keys: KeysConfig = field(default_factory=KeysConfig)


@dataclass(frozen=True)
class StoreConfig:
    segment_max_bytes: int = 64 << 20
    """Start a new segment file once the current one reaches this size."""
    type: str = "local"
    """"local": segments and index under `store_dir`; "jetstream": a replicated NATS JetStream stream
    shared by every aggregator of the fleet (see docs/jetstream.md)."""
    servers: list[str] = field(default_factory=list)
    """jetstream: NATS URLs of the cluster's nodes (e.g. "nats://10.0.0.1:4222")."""
    stream: str = "LOGSEAL"
    """jetstream: name of the stream; its chain heads and Merkle state are in the key-value bucket
    `<stream>-state`."""
    replicas: int = 3
    """jetstream: replicas of the stream and the bucket (1..5)."""
    tls_ca: Path | None = None
    """jetstream: CA of the NATS servers' certificates; set it to connect over TLS."""
    tls_cert: Path | None = None
    """jetstream: the aggregator's client certificate, for servers that verify clients."""
    tls_key: Path | None = None
    """jetstream: the key of `tls_cert` (keep it 0600)."""


@dataclass(frozen=True)
class LimitsConfig:
    max_message_bytes: int = 72 << 20
    """Largest gRPC message accepted (a batch decompresses to at most 64 MiB)."""
    max_streams: int = 1024
    """Agent streams served at once; more are refused with RESOURCE_EXHAUSTED."""
    stream_idle_timeout_s: int = 300
    """A stream that sends nothing for this long is closed (the agent reconnects when it has data)."""


@dataclass(frozen=True)
class DetectConfig:
    rules: list[str] = field(default_factory=list)
    """Sigma rule packs, files or folders (e.g. "builtin:all"); empty = no detection."""
    alerts_file: Path | None = None
    """Alerts are appended here as JSON lines (default: STORE/alerts.jsonl)."""
    baselines: bool = False
    """Also run the anomaly baselines (new combinations and sources, rate spikes), with their defaults."""


@dataclass(frozen=True)
class RetentionConfig:
    max_age: dict[str, str] = field(default_factory=dict)
    """Per `event.dataset`, how long events are kept, e.g. { "kubernetes.audit" = "400d", "*" = "90d" }
    (units s, m, h, d, w; "*" = every dataset not named). A segment goes once all its events are past
    their dataset's age; a dataset with no rule (and no "*") is kept forever."""
    max_bytes: int = 0
    """Bound on the bytes of segment files; over it, the oldest sealed segments go (0 = no bound)."""
    interval_s: int = 3600
    """How often the aggregator applies the rules."""


@dataclass(frozen=True)
class AggregatorConfig:
    listen: str
    """host:port to serve gRPC on (port 0 picks a free port; see `port_file`)."""
    store_dir: Path
    """Where segments and the index live."""
    trusted_keys_dir: Path
    """Folder of enrolled node public keys, `<node_id>.pub`."""
    port_file: Path | None = None
    """If set, the bound port is written here once serving (useful with port 0)."""
    store: StoreConfig = field(default_factory=StoreConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    alert_output: list[AlertOutputConfig] = field(default_factory=list)
    """`[[alert_output]]` tables: where alerts go besides `detect.alerts_file` (file, webhook, syslog)."""
    forward: list[ForwardConfig] = field(default_factory=list)
    """`[[forward]]` tables: SIEMs that receive every stored event (syslog, splunk_hec, elasticsearch, webhook)."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tls: TlsConfig | None = None
    """With [tls], client certificates are required and a batch is accepted only if its node_id is the
    node id of the client certificate (URI SAN `logseal://node/<id>`)."""
    origin: str = ""
    """Name of this aggregator's Merkle log, the first line of every checkpoint and the key name of its
    signature. Default: `logseal/<host name at first start>`, recorded in the store; a log's origin
    never changes, so a different value for an existing store is refused."""
    aggregator_key: Path | None = None
    """Ed25519 key that signs checkpoints. Default: STORE/aggregator.key, created at first start."""
    node_silent_after_s: int = 180
    """A node that sent nothing (not even a heartbeat) for this long raises a `node_silent` security event."""
    checkpoint_every: int = 1000
    """Sign a checkpoint after this many new batches ..."""
    checkpoint_interval_s: int = 60
    """... and every this many seconds when new batches arrived (and at shutdown)."""
    enrollment: str = "pinned"
    """How a node's first (epoch-0) signing key is trusted: "pinned" (only `<node_id>.pub` in
    trusted_keys_dir) or "tofu" (needs [tls]: the first key a node presents with a valid client
    certificate for its node id is pinned into trusted_keys_dir; a different one later is UNKNOWN_KEY)."""
    witness_dir: Path | None = None
    """If set, every signed checkpoint is also written here, one file per checkpoint
    (`<size, 20 digits>.checkpoint`, never overwritten): e.g. a WORM mount that the store's
    administrators cannot rewrite. `logseal verify STORE --witness DIR` checks the store against it."""
    retention: RetentionConfig | None = None
    """`[retention]`: delete whole sealed segments by age and size, with signed records and legal holds
    (docs/retention.md). Without it nothing is ever deleted."""


T = TypeVar("T")


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _convert(value: Any, hint: Any, where: str, base: Path) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) > 1 and isinstance(value, list):  # e.g. `str | list[str]`: a list picks the list type
            return _convert(value, next(a for a in inner if typing.get_origin(a) is list), where, base)
        return _convert(value, inner[0], where, base)
    if origin is dict:
        _, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            raise _fail(where, f"must be a table, got {type(value).__name__}")
        return {str(k): _convert(v, value_hint, f"{where}.{k}", base) for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise _fail(where, f"must be a list, got {type(value).__name__}")
        return [_convert(v, item, f"{where}[{i}]", base) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise _fail(where, f"must be a table, got {type(value).__name__}")
        return _build(typing.cast(type, hint), value, where, base)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise _fail(where, "must be a non-empty path string")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path)
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(where, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(where, f"must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _fail(where, f"must be a string, got {value!r}")
        return value
    raise _fail(where, f"unsupported type {hint!r}")  # pragma: no cover - schema bug


def _build(cls: type[T], table: dict[str, Any], where: str, base: Path) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    for key in table:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise _fail(f"{where}.{key}" if where else key, f"unknown key; known keys here: {known}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key_where = f"{where}.{name}" if where else name
        if name in table:
            values[name] = _convert(table[name], hints[name], key_where, base)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _fail(key_where, "is required")
    return cls(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _positive(value: int, where: str, low: int = 1, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{where}: must be {bound}, got {value}")


def _check_glob(pattern: str, where: str) -> None:
    if not pattern:
        raise ConfigError(f"{where}: empty glob; give a file pattern like /var/log/audit/audit.log*")
    if "\x00" in pattern:
        raise ConfigError(f"{where}: glob contains a NUL byte")
    depth = 0
    for ch in pattern:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        raise ConfigError(f"{where}: glob {pattern!r} has an unclosed '['; close it or escape it as [[]")
    if pattern.endswith("/"):
        raise ConfigError(f"{where}: glob {pattern!r} names a directory; add a file pattern like '*.log'")


def _check_address(value: str, where: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{where}: {value!r} is not host:port (e.g. 127.0.0.1:7443)")


def _check_tls(tls: TlsConfig | None, where: str) -> None:
    if tls is None:
        return
    for name in ("ca", "cert", "key"):
        if getattr(tls, name) is None:
            raise ConfigError(f"{where}.{name}: is required when [tls] is present (mTLS needs ca, cert and key)")
    for name in ("ca", "cert", "key"):
        path = getattr(tls, name)
        if not path.is_file():
            raise ConfigError(f"{where}.{name}: file {path} does not exist")


def load_agent_config(path: Path) -> AgentConfig:
    config = _build(AgentConfig, _read_toml(path), "", path.parent.resolve())
    where = str(path)
    if not config.node_id or "/" in config.node_id or ":" in config.node_id:
        raise ConfigError(f"{where}: node_id: must be non-empty without '/' or ':', got {config.node_id!r}")
    if config.key.exists() and not config.key.is_file():
        raise ConfigError(f"{where}: key: {config.key} is not a regular file; point it at the node's .key file")
    # Once key epochs began (agent/epochs.py keeps them in SPOOL/node-keys), the enrolled key may be erased.
    if not config.key.is_file() and not (config.spool_dir / "node-keys" / "state.json").is_file():
        raise ConfigError(f"{where}: key: {config.key} does not exist; create it with "
                          f"`logseal keygen --node-id {config.node_id} --out {config.key.parent}`")
    if isinstance(config.aggregator, list) and not config.aggregator:
        raise ConfigError(f"{where}: aggregator: give at least one host:port")
    for i, address in enumerate(aggregator_addresses(config)):
        _check_address(address, f"{where}: aggregator" + (f"[{i}]" if isinstance(config.aggregator, list) else ""))
    if config.aggregator_pub is not None and not config.aggregator_pub.is_file():
        raise ConfigError(f"{where}: aggregator_pub: file {config.aggregator_pub} does not exist; copy the "
                          "aggregator's STORE/aggregator.pub")
    if config.redact_key is not None and not config.redact_key.is_file():
        raise ConfigError(f"{where}: redact_key: file {config.redact_key} does not exist")
    if not config.source:
        raise ConfigError(f"{where}: source: at least one [[source]] table is required")
    names: set[str] = set()
    for i, source in enumerate(config.source):
        at = f"{where}: source[{i}]"
        if source.type not in SOURCE_TYPES:
            raise ConfigError(f"{at}.type: {source.type!r} is not one of {', '.join(SOURCE_TYPES)}")
        if source.type == "journald":
            if source.paths:
                raise ConfigError(f"{at}.paths: a journald source reads `command`, not files; remove paths")
        elif not source.paths:
            raise ConfigError(f"{at}.paths: give at least one glob")
        elif source.command:
            raise ConfigError(f"{at}.command: only a journald source runs a command; remove it")
        for j, pattern in enumerate(source.paths):
            _check_glob(pattern, f"{at}.paths[{j}]")
        if source.policy is not None:
            if source.type != "k8s_audit":
                raise ConfigError(f"{at}.policy: only a k8s_audit source takes an audit policy")
            if not source.policy.is_file():
                raise ConfigError(f"{at}.policy: file {source.policy} does not exist")
        if source.redact_paths and source.type != "k8s_audit":
            raise ConfigError(f"{at}.redact_paths: only a k8s_audit source redacts paths")
        try:
            zoneinfo.ZoneInfo(source.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{at}.timezone: {source.timezone!r} is not a known IANA time zone "
                              "(e.g. UTC, Europe/Berlin)") from None
        name = source.name or source.type
        if name in names:
            raise ConfigError(f"{at}.name: stream {name!r} is used twice; give each source a unique name")
        if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ConfigError(f"{at}.name: {name!r} may hold only letters, digits, '_', '-', '.'")
        names.add(name)
    b = config.batch
    _positive(b.max_events, f"{where}: batch.max_events", 1, 100_000)
    _positive(b.max_bytes, f"{where}: batch.max_bytes", 1024, 32 << 20)
    _positive(b.linger_ms, f"{where}: batch.linger_ms", 1, 600_000)
    _positive(b.zstd_level, f"{where}: batch.zstd_level", 1, 19)
    _positive(config.heartbeat_s, f"{where}: heartbeat_s", 0, 86_400)
    _positive(config.ship.window, f"{where}: ship.window", 1, 1024)
    _positive(config.ship.backoff_initial_ms, f"{where}: ship.backoff_initial_ms", 1)
    _positive(config.ship.backoff_max_ms, f"{where}: ship.backoff_max_ms", config.ship.backoff_initial_ms)
    _positive(config.ship.shutdown_grace_ms, f"{where}: ship.shutdown_grace_ms", 0, 600_000)
    _positive(config.spool.max_bytes, f"{where}: spool.max_bytes", 1 << 20)
    if config.spool.when_full not in ("block", "drop_oldest"):
        raise ConfigError(f"{where}: spool.when_full: {config.spool.when_full!r} is not \"block\" or \"drop_oldest\"")
    _positive(config.tail.poll_interval_ms, f"{where}: tail.poll_interval_ms", 1, 60_000)
    _positive(config.tail.read_chunk_bytes, f"{where}: tail.read_chunk_bytes", 4096)
    _positive(config.tail.max_line_bytes, f"{where}: tail.max_line_bytes", 1024, 64 << 20)
    _check_tls(config.tls, f"{where}: tls")
    _check_metrics(config.metrics, f"{where}: metrics", aggregator=False)
    _positive(config.keys.epoch_s, f"{where}: keys.epoch_s", 1)
    _positive(config.keys.epoch_batches, f"{where}: keys.epoch_batches", 1)
    return config


def _check_metrics(metrics: MetricsConfig, where: str, aggregator: bool) -> None:
    if metrics.listen:
        _check_address(metrics.listen, f"{where}.listen")
    if metrics.grpc_health_listen:
        if not aggregator:
            raise ConfigError(f"{where}.grpc_health_listen: only the aggregator serves gRPC health")
        _check_address(metrics.grpc_health_listen, f"{where}.grpc_health_listen")


def load_aggregator_config(path: Path) -> AggregatorConfig:
    config = _build(AggregatorConfig, _read_toml(path), "", path.parent.resolve())
    where = str(path)
    _check_address(config.listen, f"{where}: listen")
    if not config.trusted_keys_dir.is_dir():
        raise ConfigError(f"{where}: trusted_keys_dir: {config.trusted_keys_dir} is not a directory; "
                          "create it and put each node's <node_id>.pub in it")
    _positive(config.store.segment_max_bytes, f"{where}: store.segment_max_bytes", 1 << 16)
    _check_store_type(config.store, f"{where}: store")
    if config.store.type == "jetstream" and config.retention is not None:
        raise ConfigError(f"{where}: retention: a jetstream store is not retired by logseal (its stream denies "
                          "deletes); remove [retention] or set the stream's limits in NATS")
    if config.store.type == "jetstream" and config.forward:
        raise ConfigError(f"{where}: forward: forwarding reads a local store; with a jetstream store, consume the "
                          "stream from NATS instead (remove [[forward]])")
    _check_tls(config.tls, f"{where}: tls")
    _check_metrics(config.metrics, f"{where}: metrics", aggregator=True)
    _positive(config.limits.max_message_bytes, f"{where}: limits.max_message_bytes", 1 << 20, 1 << 30)
    _positive(config.limits.max_streams, f"{where}: limits.max_streams", 1, 100_000)
    _positive(config.limits.stream_idle_timeout_s, f"{where}: limits.stream_idle_timeout_s", 1)
    _positive(config.checkpoint_every, f"{where}: checkpoint_every", 1)
    _positive(config.checkpoint_interval_s, f"{where}: checkpoint_interval_s", 1, 86_400)
    if config.origin and not _valid_origin(config.origin):
        raise ConfigError(f"{where}: origin: {config.origin!r} must be non-empty, without spaces or '+' "
                          "(e.g. \"example.com/logseal\")")
    if config.aggregator_key is not None and not config.aggregator_key.is_file():
        raise ConfigError(f"{where}: aggregator_key: file {config.aggregator_key} does not exist (leave the key "
                          "out to have one created in the store)")
    if config.enrollment not in ("pinned", "tofu"):
        raise ConfigError(f"{where}: enrollment: {config.enrollment!r} is not \"pinned\" or \"tofu\"")
    if config.enrollment == "tofu" and config.store.type == "jetstream":
        raise ConfigError(f"{where}: enrollment: \"tofu\" pins keys in one aggregator's trusted_keys_dir, which the "
                          "other aggregators of a jetstream store do not see; use \"pinned\" (same .pub files on "
                          "every aggregator)")
    if config.enrollment == "tofu" and config.tls is None:
        raise ConfigError(f"{where}: enrollment: \"tofu\" needs [tls] (client certificates name the node); "
                          "add a [tls] table or use \"pinned\"")
    if config.witness_dir is not None and config.witness_dir.exists() and not config.witness_dir.is_dir():
        raise ConfigError(f"{where}: witness_dir: {config.witness_dir} is not a directory")
    if config.retention is not None:
        policy_from(config.retention.max_age, config.retention.max_bytes, f"{where}: retention")
        _positive(config.retention.interval_s, f"{where}: retention.interval_s", 1, 7 * 86_400)
    check_forwards(config.forward, where)
    return config


def _valid_origin(origin: str) -> bool:
    """A checkpoint origin that is also a valid signed-note key name."""
    return bool(origin) and "+" not in origin and all(c.isprintable() and not c.isspace() for c in origin)


def stream_name(source: SourceConfig) -> str:
    return source.name or source.type


def aggregator_addresses(config: AgentConfig) -> list[str]:
    """The agent's aggregators, in failover order."""
    return [config.aggregator] if isinstance(config.aggregator, str) else list(config.aggregator)


def _check_store_type(store: StoreConfig, where: str) -> None:
    if store.type not in ("local", "jetstream"):
        raise ConfigError(f"{where}.type: {store.type!r} is not \"local\" or \"jetstream\"")
    if store.type == "local":
        if store.servers:
            raise ConfigError(f"{where}.servers: only a jetstream store has servers; set type = \"jetstream\"")
        return
    if not store.servers:
        raise ConfigError(f"{where}.servers: give the NATS URLs of the cluster (e.g. [\"nats://127.0.0.1:4222\"])")
    for i, url in enumerate(store.servers):
        if not url.startswith(("nats://", "tls://")) or not url.split("://", 1)[1]:
            raise ConfigError(f"{where}.servers[{i}]: {url!r} is not a NATS URL (nats://host:port)")
    if not store.stream or not all(c.isalnum() or c in "_-" for c in store.stream):
        raise ConfigError(f"{where}.stream: {store.stream!r} may hold only letters, digits, '_' and '-'")
    _positive(store.replicas, f"{where}.replicas", 1, 5)
    nats_tls(store.tls_ca, store.tls_cert, store.tls_key, where)
