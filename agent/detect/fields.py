"""Logsource routing and field mapping: where a Sigma rule looks in logseal's normalized events. Pure.

A rule's `logsource` selects a *route*: the `event.dataset` values it applies to, an optional
extra test on the event, how the event is seen as Sigma documents, and how the rule's field names
map to our ECS paths. Routes (product / service / category):

| logsource | datasets | documents | notes |
|---|---|---|---|
| kubernetes / audit (any category) | kubernetes.audit | the event | fields are the audit event's own names, under `kubernetes.audit` (table below) |
| linux / auditd | auditd.log | each auditd record | Sigma's auditd rules describe single records (`type: EXECVE`, `a0`, `name`, `key`); an event matches when one of its records matches the whole rule |
| linux / process_creation | auditd.log, executions only | the event | Image, CommandLine, User, ... mapped to ECS `process.*` |
| linux / sshd | system.auth, journald | the event | only `process.name: sshd` |
| linux / cron | system.syslog, system.auth, journald | the event | only cron and crontab processes |
| linux / auth | system.auth, journald | the event | |
| linux / syslog | system.syslog, journald | the event | |
| linux (no service, no category) | system.auth, system.syslog, journald | the event | |
| logseal / security | logseal.security | the event | the aggregator's own security events (see `SECURITY_EVENT_SHAPE`) |

A field the table does not name is looked up as written: first under the route's prefix
(`kubernetes.audit.` for Kubernetes, the record for auditd), then from the event's root, so ECS
names (`user.name`, `source.ip`, `host.name`) work everywhere. Keys that contain dots
(`authorization.k8s.io/decision`) are found too. Lists fan out: `requestObject.spec.volumes.hostPath.path`
yields every volume's path.

Kubernetes mapping (the quirks of SigmaHQ's Kubernetes rules, and Falco-style helpers):

| Sigma field | our path(s) under `kubernetes.audit` | why |
|---|---|---|
| `apiGroup` | `objectRef.apiGroup` | SigmaHQ writes the bare name; the audit event keeps it in objectRef |
| `capabilities` | `requestObject.spec.{containers,initContainers,ephemeralContainers}.securityContext.capabilities.add` | the capabilities a created pod asks for live in the request object |
| `hostPath` | `requestObject.spec.volumes.hostPath.path` | the hostPath volumes of a created pod |
| `responseStatus.code` | `responseStatus.code` and `annotations."authorization.k8s.io/decision"` | SigmaHQ compares it with `ALLOW`, which the API server writes as the authorization decision annotation |
| `decision`, `reason` | `annotations."authorization.k8s.io/decision"`, `...reason` | Falco's `ka.auth.decision`, `ka.auth.reason` |
| `containerImage` | `requestObject.spec.{containers,initContainers,ephemeralContainers}.image` | Falco's `ka.req.pod.containers.image` |
| `containerImageRepository` | the same, without `:tag` / `@digest` | Falco's `ka.req.pod.containers.image.repository` |
| `privileged` | `requestObject.spec.{containers,initContainers,ephemeralContainers}.securityContext.privileged` | Falco's `any_container_privileged` |
| `userAgent`, `requestURI`, `verb`, `objectRef.*`, `user.username`, ... | the same name | the audit event's own fields |
"""  # noqa: E501

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.detect.values import Getter, UnsupportedConstruct, text_of

Doc = dict[str, Any]
Path = tuple[str, ...]

_MISSING = object()

# What the aggregator emits as its own security events (dataset logseal.security).
SECURITY_EVENT_SHAPE = {
    "event.dataset": "logseal.security",
    "event.kind": "event",
    "event.action": "one of batch_rejected, chain_break, node_silent, key_epoch_misuse",
    "logseal.node": "the node id concerned",
    "logseal.verdict": "the verdict, e.g. BAD_SIGNATURE, CHAIN_BROKEN, UNKNOWN_KEY (batch_rejected, chain_break)",
    "logseal.stream": "optional: the stream id",
    "logseal.key_id": "optional: the key id (key_epoch_misuse)",
    "logseal.key_epoch": "optional: the key epoch the batch claims (key_epoch_misuse)",
    "message": "optional: one sentence",
}
SECURITY_ACTIONS = ("batch_rejected", "chain_break", "node_silent", "key_epoch_misuse")


def split_path(name: str) -> Path:
    return tuple(name.split("."))


def _collect(obj: Any, parts: Path, i: int, out: list[Any]) -> None:
    if isinstance(obj, list):
        for item in obj:
            _collect(item, parts, i, out)
        return
    if i == len(parts):
        out.append(obj)
        return
    if not isinstance(obj, dict):
        return
    value = obj.get(parts[i], _MISSING)
    if value is not _MISSING:
        _collect(value, parts, i + 1, out)
        return
    for j in range(i + 2, len(parts) + 1):  # keys holding dots, e.g. "authorization.k8s.io/decision"
        key = ".".join(parts[i:j])
        if key in obj:
            _collect(obj[key], parts, j, out)
            return


def get_values(obj: Any, path: Path) -> list[Any]:
    """Every value at `path` (lists fan out and are flattened); [] when absent."""
    cur = obj
    i = 0
    while i < len(path):  # plain nested objects first; lists and dotted keys take the general walk
        if type(cur) is not dict:
            if isinstance(cur, list | dict):
                break
            return []
        nxt = cur.get(path[i], _MISSING)
        if nxt is _MISSING:
            break
        cur = nxt
        i += 1
    else:
        if not isinstance(cur, list):
            return [cur]
    out: list[Any] = []
    _collect(cur, path, i, out)
    return out


def path_getter(path: Path) -> Getter:
    """`get_values(·, path)`, with the common case (nested objects down to one value) unrolled for
    paths of up to four keys; anything else (lists, dotted keys, absence) takes the general walk."""
    if len(path) == 1:
        (a,) = path

        def get1(doc: Any) -> list[Any]:
            if type(doc) is dict:
                v = doc.get(a, _MISSING)
                if v is not _MISSING and not isinstance(v, list):
                    return [v]
            return get_values(doc, path)
        return get1
    if len(path) == 2:
        a, b = path

        def get2(doc: Any) -> list[Any]:
            if type(doc) is dict and type(x := doc.get(a)) is dict:
                v = x.get(b, _MISSING)
                if v is not _MISSING and not isinstance(v, list):
                    return [v]
            return get_values(doc, path)
        return get2
    if len(path) == 3:
        a, b, c = path

        def get3(doc: Any) -> list[Any]:
            if type(doc) is dict and type(x := doc.get(a)) is dict and type(y := x.get(b)) is dict:
                v = y.get(c, _MISSING)
                if v is not _MISSING and not isinstance(v, list):
                    return [v]
            return get_values(doc, path)
        return get3
    if len(path) == 4:
        a, b, c, d = path

        def get4(doc: Any) -> list[Any]:
            if (type(doc) is dict and type(x := doc.get(a)) is dict and type(y := x.get(b)) is dict
                    and type(z := y.get(c)) is dict):
                v = z.get(d, _MISSING)
                if v is not _MISSING and not isinstance(v, list):
                    return [v]
            return get_values(doc, path)
        return get4
    return lambda doc: get_values(doc, path)


def union_getter(*paths: Path, transform: Callable[[Any], Any] | None = None) -> Getter:
    getters = [path_getter(p) for p in paths]
    if len(getters) == 1 and transform is None:
        return getters[0]

    def get(doc: Any) -> list[Any]:
        out: list[Any] = []
        for g in getters:
            out.extend(g(doc))
        return [transform(v) for v in out] if transform else out
    return get


def first_getter(*paths: Path) -> Getter:
    getters = [path_getter(p) for p in paths]
    if len(getters) == 2:
        first, second = getters
        return lambda doc: first(doc) or second(doc)

    def get(doc: Any) -> list[Any]:
        for g in getters:
            vals = g(doc)
            if vals:
                return vals
        return []
    return get


def _strip_tag(image: Any) -> Any:
    if not isinstance(image, str):
        return image
    image = image.split("@", 1)[0]
    head, _, tail = image.rpartition(":")
    return head if head and "/" not in tail else image


_KA = ("kubernetes", "audit")
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def _ka(*parts: str) -> Path:
    return _KA + tuple(p for part in parts for p in part.split("."))


def _containers(suffix: str) -> tuple[Path, ...]:
    return tuple(_ka("requestObject.spec", kind, suffix) for kind in _CONTAINER_LISTS)


_DECISION = _KA + ("annotations", "authorization.k8s.io/decision")
_REASON = _KA + ("annotations", "authorization.k8s.io/reason")

KUBERNETES_FIELDS: dict[str, Getter] = {
    "apiGroup": union_getter(_ka("objectRef.apiGroup")),
    "capabilities": union_getter(*_containers("securityContext.capabilities.add")),
    "hostPath": union_getter(_ka("requestObject.spec.volumes.hostPath.path")),
    "responseStatus.code": union_getter(_ka("responseStatus.code"), _DECISION),
    "decision": union_getter(_DECISION),
    "reason": union_getter(_REASON),
    "containerImage": union_getter(*_containers("image")),
    "containerImageRepository": union_getter(*_containers("image"), transform=_strip_tag),
    "privileged": union_getter(*_containers("securityContext.privileged")),
}

PROCESS_CREATION_FIELDS: dict[str, Getter] = {
    "Image": union_getter(split_path("process.executable")),
    "CommandLine": lambda doc: [" ".join(str(a) for a in args)] if (args := get_values(doc, ("process", "args")))
    else [],
    "ProcessId": union_getter(split_path("process.pid")),
    "ParentProcessId": union_getter(split_path("process.parent.pid")),
    "ParentImage": union_getter(split_path("process.parent.executable")),
    "CurrentDirectory": union_getter(split_path("process.working_directory")),
    "User": union_getter(split_path("user.name")),
    "LogonId": union_getter(split_path("user.audit.id")),
}

# --- auditd records as Sigma documents ----------------------------------------------------------

_HEX = re.compile(r"^(?:[0-9A-F]{2})+$")


def _maybe_hex(value: Any) -> Any:
    """auditd hex-encodes strings with spaces or odd bytes; decode uppercase hex that is printable text."""
    if isinstance(value, str) and len(value) >= 2 and _HEX.match(value):
        try:
            text = bytes.fromhex(value).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return value
        if text.isprintable():
            return text
    return value


def auditd_documents(event: Doc) -> list[Doc]:
    """One document per auditd record, as Sigma's auditd rules see them (`type` = record type).

    Values are decoded where auditd hex-encoded them; a SYSCALL record also gets `SYSCALL` (the
    syscall's name, as `ausearch -i` prints it) and `exe`/`comm` as text; an EXECVE record's
    `a0`, `a1`, ... come from the decoded `process.args`.
    """
    audit = event.get("auditd")
    records = audit.get("records") if isinstance(audit, dict) else None
    if not isinstance(records, list):
        return []
    log = audit.get("log") if isinstance(audit, dict) else None
    raw_process = event.get("process")
    process: dict[str, Any] = raw_process if isinstance(raw_process, dict) else {}
    docs: list[Doc] = []
    for rec in records:
        if not isinstance(rec, dict):
            continue
        doc: Doc = {k: _maybe_hex(v) for k, v in rec.items()}
        rtype = rec.get("record_type")
        doc["type"] = rtype
        if rtype == "SYSCALL":
            if isinstance(log, dict) and log.get("syscall"):
                doc["SYSCALL"] = log["syscall"]
            if process.get("executable"):
                doc["exe"] = process["executable"]
        elif rtype == "EXECVE" and isinstance(process.get("args"), list):
            for i, arg in enumerate(process["args"]):
                doc[f"a{i}"] = arg
        doc["__event__"] = event
        docs.append(doc)
    return docs


def _keyword_text_event(doc: Doc) -> list[str]:
    out = []
    msg = doc.get("message")
    if isinstance(msg, str):
        out.append(msg)
    ev = doc.get("event")
    if isinstance(ev, dict) and isinstance(ev.get("original"), str):
        out.append(ev["original"])
    return out


def _keyword_text_record(doc: Doc) -> list[str]:
    return [" ".join(str(v) for k, v in doc.items() if k != "__event__" and v is not None)]


# --- routes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """How one logsource reads logseal events."""

    name: str
    datasets: tuple[str, ...]
    fields: Mapping[str, Getter] = field(default_factory=dict)
    prefix: Path = ()
    event_filter: Callable[[Doc], bool] | None = None
    per_record: bool = False
    _getters: dict[str, Getter] = field(default_factory=dict, init=False, repr=False, compare=False)

    def documents(self, event: Doc) -> list[Doc]:
        return auditd_documents(event) if self.per_record else [event]

    def views(self, event: Doc) -> list[View]:
        """The event's documents, each wrapped for one evaluation pass (see `View`)."""
        return [View(doc, self) for doc in self.documents(event)]

    def keyword_text(self, doc: Doc) -> list[str]:
        return _keyword_text_record(doc) if self.per_record else _keyword_text_event(doc)

    def getter(self, name: str) -> Getter:
        """The values of Sigma field `name` in one document of this route (one getter per name, so
        that a `View` computes each field once however many rules read it)."""
        getter = self._getters.get(name)
        if getter is None:
            getter = self._getters[name] = self._make_getter(name)
        return getter

    def _make_getter(self, name: str) -> Getter:
        if name in self.fields:
            return self.fields[name]
        path = split_path(name)
        if self.per_record:
            def get_record(doc: Doc) -> list[Any]:
                if name in doc:
                    value = doc[name]
                    return list(value) if isinstance(value, list) else [value]
                return get_values(doc.get("__event__"), path)
            return get_record
        if self.prefix:
            return first_getter(self.prefix + path, path)
        return union_getter(path)


class View:
    """One document of one event while the rules are evaluated on it.

    Each field's values, their lowercased texts and the keyword texts are computed on first use
    and then shared by every rule that reads them, so an event is walked and lowered once, not
    once per rule. A view lives for one event; it never outlives the document it wraps.
    """

    __slots__ = ("_keywords", "_keywords_low", "_values", "doc", "lowered_cache", "route")

    def __init__(self, doc: Doc, route: Route) -> None:
        self.doc = doc
        self.route = route
        self._values: dict[Getter, list[Any]] = {}
        self.lowered_cache: dict[Getter, list[str]] = {}
        self._keywords: list[str] | None = None
        self._keywords_low: list[str] | None = None

    def values(self, getter: Getter) -> list[Any]:
        """`getter(doc)`, computed once (callers must not modify the list)."""
        vals = self._values.get(getter)
        if vals is None:
            vals = self._values[getter] = getter(self.doc)
        return vals

    def lowered(self, getter: Getter) -> list[str]:
        """The texts of `getter`'s values (`text_of`, nulls left out), lowercased, computed once."""
        low = self.lowered_cache.get(getter)
        if low is None:
            low = self.lowered_cache[getter] = _lower_texts(self.values(getter))
        return low

    def keywords(self) -> list[str]:
        """The texts a keyword search looks in (`Route.keyword_text`), computed once."""
        if self._keywords is None:
            self._keywords = self.route.keyword_text(self.doc)
        return self._keywords

    def keywords_lowered(self) -> list[str]:
        if self._keywords_low is None:
            self._keywords_low = _lower_texts(self.keywords())
        return self._keywords_low


def _lower_texts(values: list[Any]) -> list[str]:
    out = []
    for v in values:
        t = v if isinstance(v, str) else text_of(v)
        if t is not None:
            out.append(t.lower())
    return out


def _process_names(*names: str) -> Callable[[Doc], bool]:
    wanted = {n.lower() for n in names}

    def test(event: Doc) -> bool:
        return any(isinstance(v, str) and v.lower() in wanted for v in get_values(event, ("process", "name")))
    return test


def _is_execution(event: Doc) -> bool:
    return bool({"execve", "execveat"} & {v for v in get_values(event, ("auditd", "log", "syscall"))
                                          if isinstance(v, str)})


_SYSLOG_SETS = ("system.auth", "system.syslog", "journald")

KUBERNETES = Route("kubernetes/audit", ("kubernetes.audit",), KUBERNETES_FIELDS, _KA)
AUDITD = Route("linux/auditd", ("auditd.log",), per_record=True)
PROCESS_CREATION = Route("linux/process_creation", ("auditd.log",), PROCESS_CREATION_FIELDS,
                         event_filter=_is_execution)
SSHD = Route("linux/sshd", ("system.auth", "journald"), event_filter=_process_names("sshd"))
CRON = Route("linux/cron", _SYSLOG_SETS, event_filter=_process_names("cron", "crond", "crontab"))
AUTH = Route("linux/auth", ("system.auth", "journald"))
SYSLOG = Route("linux/syslog", ("system.syslog", "journald"))
LINUX = Route("linux", _SYSLOG_SETS)
SECURITY = Route("logseal/security", ("logseal.security",))


def route_for(logsource: Mapping[str, Any]) -> Route:
    """The route of a rule's logsource; an unrouted logsource is an error, never a silent no-op."""
    product = str(logsource.get("product") or "").lower()
    service = str(logsource.get("service") or "").lower()
    category = str(logsource.get("category") or "").lower()
    if product == "kubernetes" and service in ("audit", "") and category in ("application", ""):
        return KUBERNETES
    if product == "linux":
        if category == "process_creation" and not service:
            return PROCESS_CREATION
        if not category:
            routes = {"auditd": AUDITD, "sshd": SSHD, "cron": CRON, "auth": AUTH, "syslog": SYSLOG, "": LINUX}
            if service in routes:
                return routes[service]
    if product == "logseal" and service == "security" and not category:
        return SECURITY
    shown = ", ".join(f"{k}={v}" for k, v in sorted(logsource.items()) if k in ("product", "service", "category"))
    raise UnsupportedConstruct(f"logsource {shown or '(empty)'} is not routed to any logseal dataset")
