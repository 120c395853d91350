"""One `[[forward]]` table: where the aggregator forwards its stored events, and how.

Validated at construction (`ConfigError` names the key and the fix), so a bad table stops the
aggregator at start, never half-way through a forwarding run.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.errors import ConfigError

FORWARD_TYPES = ("syslog", "splunk_hec", "elasticsearch", "webhook")
FORMATS = ("ecs", "ocsf")
START_AT = ("oldest", "newest")
DEFAULT_ES_INDEX = "logs-logseal-default"
"""Matches Elasticsearch's built-in `logs-*-*` data stream template (ECS mappings, `@timestamp`)."""


@dataclass(frozen=True)
class ForwardConfig:
    """One `[[forward]]` table of the aggregator config."""

    type: str
    """"syslog" (RFC 5424, octet-counted, TCP or TLS), "splunk_hec", "elasticsearch" (_bulk) or "webhook"."""
    url: str = ""
    """HTTP types: splunk_hec the collector URL (…/services/collector/event), elasticsearch the cluster URL
    (`/_bulk` is appended), webhook the URL that receives a POST of a JSON array of events."""
    address: str = ""
    """syslog: host:port of the receiver."""
    tls: bool = False
    """syslog: speak TLS (RFC 5425); implied by `tls_ca`. HTTP types use TLS for https:// URLs."""
    tls_ca: Path | None = None
    """CA bundle the receiver's certificate must chain to (default: the system's trust store)."""
    tls_insecure: bool = False
    """Do not check the receiver's certificate or name (tests only; logged as a warning at start)."""
    token_file: Path | None = None
    """File holding the secret: HEC token (`Authorization: Splunk …`), Elasticsearch API key (`ApiKey …`),
    webhook bearer token. Must not be readable by group or others. Never logged."""
    token_env: str = ""
    """... or the name of an environment variable holding it."""
    format: str = "ecs"
    """"ecs": the stored ECS event as is; "ocsf": mapped to OCSF 1.1 classes (see docs/forwarding.md)."""
    datasets: list[str] = field(default_factory=list)
    """Forward only events of these `event.dataset`s (empty: all)."""
    index: str = ""
    """splunk_hec: the index (default: the token's); elasticsearch: the index or data stream."""
    sourcetype: str = ""
    """splunk_hec: the sourcetype (default: `logseal:<event.dataset>`)."""
    batch_size: int = 500
    """Events per request (syslog: per write) at most ..."""
    batch_max_bytes: int = 4 << 20
    """... and encoded bytes per request at most (one larger event still goes alone)."""
    linger_ms: int = 1000
    """How often the store is checked for new events once forwarding has caught up."""
    backoff_initial_ms: int = 500
    """Wait after a first transient failure; doubles per failure, with jitter ..."""
    backoff_max_ms: int = 60_000
    """... up to this. Transient failures are retried for ever."""
    timeout_s: int = 10
    """Connect and response timeout of one request."""
    dead_letter: Path | None = None
    """Events the receiver rejects for good are appended here with the reason (default:
    STORE/forward/<name>.dead-letter.jsonl)."""
    start_at: str = "oldest"
    """Where an output without a cursor starts: "oldest" stored event or "newest" (only what arrives next)."""
    name: str = ""
    """Names the output's cursor, dead-letter file and metrics label; default: type and a hash of the target."""

    def __post_init__(self) -> None:
        where = "forward"
        if self.type not in FORWARD_TYPES:
            raise ConfigError(f"{where}.type: {self.type!r} is not one of {', '.join(FORWARD_TYPES)}")
        if self.type == "syslog":
            host, sep, port = self.address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ConfigError(f"{where}.address: {self.address!r} is not host:port (e.g. siem.example:6514)")
            if self.url:
                raise ConfigError(f"{where}.url: a syslog output takes `address`, not url")
        else:
            if urlsplit(self.url).scheme not in ("http", "https") or not urlsplit(self.url).hostname:
                raise ConfigError(f"{where}.url: {self.url!r} must be an http:// or https:// URL "
                                  f"for type = \"{self.type}\"")
            if self.address:
                raise ConfigError(f"{where}.address: only a syslog output takes an address; use url")
            if self.tls:
                raise ConfigError(f"{where}.tls: only for syslog; HTTP outputs use TLS for https:// URLs")
        if self.format not in FORMATS:
            raise ConfigError(f"{where}.format: {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.start_at not in START_AT:
            raise ConfigError(f"{where}.start_at: {self.start_at!r} is not one of {', '.join(START_AT)}")
        if self.type == "splunk_hec" and self.token_file is None and not self.token_env:
            raise ConfigError(f"{where}.token_file: splunk_hec needs the HEC token: set token_file or token_env")
        if self.token_file is not None and self.token_env:
            raise ConfigError(f"{where}.token_env: give token_file or token_env, not both")
        if (self.index or self.sourcetype) and self.type not in ("splunk_hec", "elasticsearch"):
            raise ConfigError(f"{where}.index: only splunk_hec and elasticsearch outputs take an index or sourcetype")
        if self.sourcetype and self.type != "splunk_hec":
            raise ConfigError(f"{where}.sourcetype: only a splunk_hec output takes a sourcetype")
        for key, low in (("batch_size", 1), ("batch_max_bytes", 1024), ("linger_ms", 1), ("backoff_initial_ms", 1),
                         ("timeout_s", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{where}.{key}: must be at least {low}, got {getattr(self, key)}")
        if self.backoff_max_ms < self.backoff_initial_ms:
            raise ConfigError(f"{where}.backoff_max_ms: must be at least backoff_initial_ms "
                              f"({self.backoff_initial_ms}), got {self.backoff_max_ms}")
        if any(not d for d in self.datasets):
            raise ConfigError(f"{where}.datasets: an empty name; list datasets like \"kubernetes.audit\"")
        if self.name and not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"{where}.name: {self.name!r} may hold only letters, digits, '-', '_' and '.'")

    @property
    def target(self) -> str:
        return self.address if self.type == "syslog" else self.url

    @property
    def key(self) -> str:
        """Stable name of this output's cursor, dead-letter file and metrics label."""
        return self.name or f"{self.type}-{hashlib.sha256(self.target.encode()).hexdigest()[:12]}"

    @property
    def use_tls(self) -> bool:
        if self.type == "syslog":
            return self.tls or self.tls_ca is not None or self.tls_insecure
        return self.url.startswith("https:")

    def read_token(self) -> str:
        """The secret from `token_file` or `token_env` ("" when neither is set); ConfigError names the key."""
        where = "forward"
        if self.token_env:
            token = os.environ.get(self.token_env, "").strip()
            if not token:
                raise ConfigError(f"{where}.token_env: environment variable {self.token_env} is unset or empty")
            return token
        if self.token_file is None:
            return ""
        try:
            mode = self.token_file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"{where}.token_file: {self.token_file} is accessible by group or others "
                                  f"(mode {stat.S_IMODE(mode):o}); run chmod 600 on it")
            token = self.token_file.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"{where}.token_file: {self.token_file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}.token_file: cannot read {self.token_file}: {exc}") from None
        if not token:
            raise ConfigError(f"{where}.token_file: {self.token_file} is empty")
        return token


def check_forwards(forwards: list[ForwardConfig], where: str) -> None:
    """Whole-list checks: distinct names, CA files present, secrets readable (a missing one stops the start)."""
    keys = [f.key for f in forwards]
    for i, fwd in enumerate(forwards):
        if fwd.key in keys[:i]:
            raise ConfigError(f"{where}: forward[{i}].name: two outputs share the name {fwd.key!r}; give them "
                              "distinct `name`s")
        if fwd.tls_ca is not None and not fwd.tls_ca.is_file():
            raise ConfigError(f"{where}: forward[{i}].tls_ca: file {fwd.tls_ca} does not exist")
        try:
            fwd.read_token()
        except ConfigError as exc:
            raise ConfigError(f"{where}: forward[{i}]{str(exc).removeprefix('forward')}") from None
