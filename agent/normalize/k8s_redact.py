"""Redaction of secrets in Kubernetes audit Events, before they are sealed (always on).

Pure: `Redactor(key, paths).redact(audit, line)` edits the parsed Event in place and returns the
dotted paths (within the Event, i.e. within `kubernetes.audit`) of what it replaced, sorted.

What is redacted:

* Secret values: every value of `data` and `stringData` of a Secret in `requestObject` or
  `responseObject` -- an object of kind Secret, the items of a SecretList, the Secret items of a
  List, and any object or list item with `data`/`stringData` when `objectRef.resource` is "secrets"
  (patch bodies and Table rows included; a JSON-patch body on secrets has every op's `value`
  redacted). The
  `kubectl.kubernetes.io/last-applied-configuration` annotation of such objects is redacted too,
  since `kubectl apply` copies the whole Secret, data included, into it.
* `spec.token` of a TokenReview and `status.token` of a TokenRequest (serviceaccounts/token).
* Anywhere in the Event: a string value that is an HTTP credential, `Bearer <token>` or
  `Basic <x>` (scheme case-insensitive); inside longer text (e.g. a command line) the credential
  after an `Authorization:`/`Authorization=` is replaced and the rest kept; and the value of any
  key named `authorization` (case-insensitive), annotation or field, whatever its type.
* The configured paths: dotted paths into the Event, `*` matching any key or list index
  (e.g. `requestObject.spec.containers.*.env.*.value`). A key holding a dot cannot be named by a
  path except through `*`.

Each redacted value becomes `[REDACTED hmac-sha256:<first 16 hex of HMAC-SHA256(key, value)>]`:
equal secrets give equal markers under one key (correlatable, not readable). The HMAC is over the
UTF-8 of a string, or over the compact sorted-key JSON of any other value. Markers are never
redacted again, so redaction is idempotent. `None` is left alone (there is nothing to hide).

Fast path: `redact` looks at the raw line before walking the Event: a line that cannot hold a
credential or an authorization key costs one lower-casing and three substring searches. JSON
written with `\\u` escapes for ASCII letters (the apiserver never does that) can hide a scheme or
key from this check.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import orjson

MARKER_PREFIX = "[REDACTED hmac-sha256:"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# A whole value that is an HTTP credential: scheme, whitespace, one token (prose is not a credential).
_CREDENTIAL = re.compile(r"\s*(?:bearer|basic)\s+\S+\s*", re.IGNORECASE)
# A credential after an Authorization header name inside longer text: group 1 is what is replaced.
_EMBEDDED = re.compile(r"authorization[\"']?\s*[:=]\s*[\"']?((?:bearer|basic)\s+[^\s\"',;]+)", re.IGNORECASE)
# Cheap check on the lower-cased raw line: could it hold a scheme word or an authorization key?
_SCHEME_WORD = re.compile(rb"b(?:earer|asic)")
_AUTH_KEY = b'authorization"'

Path = tuple[str | int, ...]

_SENSITIVE_RESOURCES = frozenset({"secrets", "tokenreviews", "serviceaccounts"})
_SENSITIVE_KINDS = frozenset({"Secret", "SecretList", "List", "TokenReview", "TokenRequest"})


def _sensitive_kind(obj: object) -> bool:
    return type(obj) is dict and obj.get("kind") in _SENSITIVE_KINDS


def marker(key: bytes, value: object) -> str:
    """The redaction marker of `value` under `key`."""
    if type(value) is str:
        data = value.encode("utf-8", "surrogatepass")
    else:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return MARKER_PREFIX + hmac.new(key, data, hashlib.sha256).hexdigest()[:16] + "]"


def is_marker(value: object) -> bool:
    return type(value) is str and value.startswith(MARKER_PREFIX) and value.endswith("]")


def _dotted(path: Path) -> str:
    return ".".join(str(part) for part in path)


class Redactor:
    """Redaction with one key and one set of configured paths (parsed once)."""

    def __init__(self, key: bytes, paths: tuple[str, ...] = ()) -> None:
        self.key = key
        self.paths: tuple[tuple[str, ...], ...] = tuple(tuple(p.split(".")) for p in paths if p)
        for path in self.paths:
            if any(part == "" for part in path):
                raise ValueError(f"redact path {'.'.join(path)!r} has an empty part")

    def redact(self, audit: dict[str, Any], line: bytes | None = None) -> list[str]:
        """Redact `audit` in place; the sorted dotted paths of what was replaced.

        `line` is the raw record `audit` was parsed from, used only to skip the full walk when it
        cannot hold a credential or an authorization key (None: always walk).
        """
        done: dict[str, None] = {}
        request_object = audit.get("requestObject")
        response_object = audit.get("responseObject")
        if request_object is not None or response_object is not None:
            ref = audit.get("objectRef")
            resource = ref.get("resource") if type(ref) is dict else None
            if resource in _SENSITIVE_RESOURCES or _sensitive_kind(request_object) or _sensitive_kind(response_object):
                subresource = ref.get("subresource") if type(ref) is dict else None
                if request_object is not None:
                    self._objects("requestObject", request_object, resource, subresource, done)
                if response_object is not None:
                    self._objects("responseObject", response_object, resource, subresource, done)
        if line is None:
            walk = True
        else:
            lowered = line.lower()
            walk = _AUTH_KEY in lowered or _SCHEME_WORD.search(lowered) is not None
        if walk:
            self._walk(audit, (), done)
        for spec in self.paths:
            self._configured(audit, spec, 0, (), done)
        return sorted(done) if done else []

    # -- replacing --------------------------------------------------------------------------

    def _replace(self, parent: Any, slot: str | int, path: Path,
                 done: dict[str, None]) -> None:
        value = parent[slot]
        if value is None or is_marker(value):
            return
        parent[slot] = marker(self.key, value)
        done[_dotted(path)] = None

    def _values_of(self, container: object, base: Path, done: dict[str, None]) -> None:
        """Redact every value of a `data`/`stringData` map (or the whole thing if it is not a map)."""
        if type(container) is dict:
            for key in container:
                self._replace(container, key, (*base, key), done)

    def _secret(self, obj: dict[str, Any], path: Path, done: dict[str, None]) -> None:
        for field in ("data", "stringData"):
            if field in obj:
                if type(obj[field]) is dict:
                    self._values_of(obj[field], (*path, field), done)
                else:
                    self._replace(obj, field, (*path, field), done)
        metadata = obj.get("metadata")
        annotations = metadata.get("annotations") if type(metadata) is dict else None
        if type(annotations) is dict and LAST_APPLIED in annotations:
            self._replace(annotations, LAST_APPLIED, (*path, "metadata", "annotations", LAST_APPLIED), done)

    def _objects(self, name: str, obj: object, resource: object, subresource: object,
                 done: dict[str, None]) -> None:
        base: Path = (name,)
        secrets = resource == "secrets"
        if type(obj) is list:
            if secrets:  # a JSON patch: every op's value may carry secret data
                for index, op in enumerate(obj):
                    if type(op) is dict and "value" in op:
                        self._replace(op, "value", (name, index, "value"), done)
            return
        if type(obj) is not dict:
            return
        kind = obj.get("kind")
        if kind == "Secret" or (secrets and ("data" in obj or "stringData" in obj or kind is None)):
            self._secret(obj, base, done)
        items = obj.get("items")
        if type(items) is list and (secrets or kind in ("SecretList", "List")):
            for index, item in enumerate(items):
                if type(item) is dict and (item.get("kind") == "Secret" or (
                        item.get("kind") is None and (secrets or kind == "SecretList"))):
                    self._secret(item, (*base, "items", index), done)
        rows = obj.get("rows")
        if secrets and type(rows) is list:  # a Table (kubectl get): each row's object keeps annotations
            for index, row in enumerate(rows):
                if type(row) is dict and type(row.get("object")) is dict:
                    self._secret(row["object"], (*base, "rows", index, "object"), done)
        if kind == "TokenReview" or (resource == "tokenreviews" and kind is None):
            spec = obj.get("spec")
            if type(spec) is dict and "token" in spec:
                self._replace(spec, "token", (*base, "spec", "token"), done)
        if kind == "TokenRequest" or (resource == "serviceaccounts" and subresource == "token" and kind is None):
            status = obj.get("status")
            if type(status) is dict and "token" in status:
                self._replace(status, "token", (*base, "status", "token"), done)

    def _walk(self, node: dict[str, Any] | list[Any], path: Path, done: dict[str, None]) -> None:
        """Credentials and authorization keys anywhere under `node` (iterative: no recursion limit)."""
        stack: list[tuple[Any, Path]] = [(node, path)]
        while stack:
            container, base = stack.pop()
            slots = container.keys() if type(container) is dict else range(len(container))
            for slot in list(slots):
                value = container[slot]
                here = (*base, slot)
                if type(slot) is str and len(slot) == 13 and slot.lower() == "authorization":
                    self._replace(container, slot, here, done)
                elif type(value) is str:
                    if _CREDENTIAL.fullmatch(value):
                        self._replace(container, slot, here, done)
                    elif "authorization" in value.lower():
                        replaced = self._embedded(value)
                        if replaced != value:
                            container[slot] = replaced
                            done[_dotted(here)] = None
                elif type(value) is dict or type(value) is list:
                    stack.append((value, here))

    def _embedded(self, text: str) -> str:
        return _EMBEDDED.sub(lambda m: m.group(0)[: m.start(1) - m.start(0)] + marker(self.key, m.group(1)), text)

    def _configured(self, node: Any, spec: tuple[str, ...], depth: int, path: Path,
                    done: dict[str, None]) -> None:
        part = spec[depth]
        last = depth == len(spec) - 1
        slots: list[str | int]
        if type(node) is dict:
            slots = list(node) if part == "*" else [part] if part in node else []
        elif type(node) is list:
            if part == "*":
                slots = list(range(len(node)))
            else:
                slots = [int(part)] if part.isdigit() and int(part) < len(node) else []
        else:
            return
        for slot in slots:
            if last:
                self._replace(node, slot, (*path, slot), done)
            else:
                self._configured(node[slot], spec, depth + 1, (*path, slot), done)
