"""Kubernetes audit Policy (`audit.k8s.io/v1` `Policy`): parse it, and decide per audit Event.

Pure: `parse_policy(text, source)` takes the file's text (the caller reads it) and raises a one-line
`ValueError` naming the source, the rule index and the field for anything the kube-apiserver would
reject or that we could not apply faithfully (wrong apiVersion/kind, unknown level or stage, unknown
key, wrong type, a rule on both resources and non-resource URLs, ...).

`AuditPolicy.evaluate(audit)` reproduces the kube-apiserver's checker
(k8s.io/apiserver pkg/audit/policy/checker.go) on a recorded Event instead of request attributes:

* The first rule that matches decides; no match means level None (the apiserver's default), with
  the policy's own omitStages and omitManagedFields.
* A rule's omitStages are the union of its own and the policy's; omitManagedFields of a rule, when
  set, overrides the policy's.
* Attributes come from the Event as the apiserver filled it from the same request: the requesting
  `user` (the audit policy is evaluated before impersonation, so `impersonatedUser` does not match
  `users`/`userGroups`; an Event without `user` matches no rule that names users or groups),
  `verb`, and `objectRef` -- present exactly when the request was a resource request -- with
  `apiGroup` ("" core), `resource`, `subresource`, `namespace` ("" cluster-scoped) and `name`.
  Missing fields are "" as in Go. A non-resource request's path is `requestURI` without its query.
* Matching: `users`, `userGroups` (any of the user's groups), `verbs` exact; a rule with
  `namespaces` or `resources` only matches resource requests, one with `nonResourceURLs` only
  non-resource requests; `resources[].group` exact or "*"; a group entry without `resources`
  matches every resource of the group; `resources` entries match "res" or "res/sub" exactly,
  "*" anything, "*/sub" any resource's subresource `sub`, "res/*" the resource and all its
  subresources; `resourceNames`, when given, must hold the object's name; a non-resource URL
  matches exactly, "*" everything, and "prefix*" by prefix.

Applying a decision is the caller's job (see `k8s_audit`): level None or the Event's stage in
omitStages drops the Event; Metadata removes requestObject and responseObject, Request removes
responseObject; omitManagedFields removes `metadata.managedFields` from the objects and list items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

LEVEL_NONE = "None"
LEVEL_METADATA = "Metadata"
LEVEL_REQUEST = "Request"
LEVEL_REQUEST_RESPONSE = "RequestResponse"
LEVELS = (LEVEL_NONE, LEVEL_METADATA, LEVEL_REQUEST, LEVEL_REQUEST_RESPONSE)
LEVEL_ORDER = {level: rank for rank, level in enumerate(LEVELS)}
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")

API_VERSION = "audit.k8s.io/v1"

_POLICY_KEYS = {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
_RULE_KEYS = {"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs",
              "omitStages", "omitManagedFields"}
_GROUP_RESOURCE_KEYS = {"group", "resources", "resourceNames"}
# A DNS subdomain (RFC 1123), as the apiserver requires of a non-core group name.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, slots=True)
class GroupResources:
    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyRule:
    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool | None = None


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What the policy says of one Event. `rule` is the 0-based index of the matching rule, or None."""

    level: str
    omit_stages: frozenset[str]
    omit_managed_fields: bool
    rule: int | None


@dataclass(frozen=True, slots=True)
class _Request:
    """The authorizer attributes the apiserver evaluated, recovered from an audit Event."""

    user: str | None  # None: no user on the Event (the upstream "Unauthorized" case)
    groups: tuple[str, ...]
    verb: str
    resource_request: bool
    namespace: str
    api_group: str
    resource: str
    subresource: str
    name: str
    path: str


def _text(value: object) -> str:
    return value if type(value) is str else ""


def request_of(audit: dict[str, Any]) -> _Request:
    """The request attributes of an Event; wrong types count as absent (never raises)."""
    user = audit.get("user")
    name: str | None = None
    groups: tuple[str, ...] = ()
    if type(user) is dict:
        name = _text(user.get("username"))
        raw_groups = user.get("groups")
        if type(raw_groups) is list:
            groups = tuple(group for group in raw_groups if type(group) is str)
    ref = audit.get("objectRef")
    uri = _text(audit.get("requestURI"))
    path = uri.split("?", 1)[0]
    if type(ref) is dict:
        return _Request(name, groups, _text(audit.get("verb")), True, _text(ref.get("namespace")),
                        _text(ref.get("apiGroup")), _text(ref.get("resource")), _text(ref.get("subresource")),
                        _text(ref.get("name")), path)
    return _Request(name, groups, _text(audit.get("verb")), False, "", "", "", "", "", path)


def _path_matches(path: str, spec: str) -> bool:
    if spec in ("*", path):
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


def _resource_matches(rule: PolicyRule, request: _Request) -> bool:
    if not request.resource_request:
        return False
    if rule.namespaces and request.namespace not in rule.namespaces:
        return False
    if not rule.resources:
        return True
    resource, subresource = request.resource, request.subresource
    combined = f"{resource}/{subresource}" if subresource else resource
    for group_resources in rule.resources:
        if group_resources.group not in (request.api_group, "*"):
            continue
        if not group_resources.resources:
            return True
        if group_resources.resource_names and request.name not in group_resources.resource_names:
            continue
        for spec in group_resources.resources:
            if spec in (combined, "*"):
                return True
            if subresource and spec.startswith("*/") and spec[2:] == subresource:
                return True
            if spec.endswith("/*") and spec[:-2] == resource:
                return True
    return False


def rule_matches(rule: PolicyRule, request: _Request) -> bool:
    if rule.users and (request.user is None or request.user not in rule.users):
        return False
    if rule.user_groups and (request.user is None or not any(g in rule.user_groups for g in request.groups)):
        return False
    if rule.verbs and request.verb not in rule.verbs:
        return False
    if rule.namespaces or rule.resources:
        return _resource_matches(rule, request)
    if rule.non_resource_urls:
        return not request.resource_request and any(_path_matches(request.path, s) for s in rule.non_resource_urls)
    return True


@dataclass(frozen=True, slots=True)
class AuditPolicy:
    rules: tuple[PolicyRule, ...]
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False
    source: str = "<policy>"

    def evaluate(self, audit: dict[str, Any]) -> PolicyDecision:
        request = request_of(audit)
        for index, rule in enumerate(self.rules):
            if rule_matches(rule, request):
                omit_managed = self.omit_managed_fields if rule.omit_managed_fields is None \
                    else rule.omit_managed_fields
                return PolicyDecision(rule.level, rule.omit_stages | self.omit_stages, omit_managed, index)
        return PolicyDecision(LEVEL_NONE, self.omit_stages, self.omit_managed_fields, None)


# ---- parsing ----------------------------------------------------------------------------------


class _Invalid(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise _Invalid(where, f"must be a list of strings, not {type(value).__name__}")
    for index, item in enumerate(value):
        if type(item) is not str:
            raise _Invalid(f"{where}[{index}]", f"must be a string, not {type(item).__name__} ({item!r:.40})")
    return tuple(value)


def _stages(value: object, where: str) -> frozenset[str]:
    stages = _strings(value, where)
    for index, stage in enumerate(stages):
        if stage not in STAGES:
            raise _Invalid(f"{where}[{index}]", f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
    return frozenset(stages)


def _optional_bool(value: object, where: str) -> bool | None:
    if value is None or type(value) is bool:
        return value
    raise _Invalid(where, f"must be true or false, not {value!r:.40}")


def _mapping(value: object, where: str, allowed: set[str]) -> dict[str, Any]:
    if type(value) is not dict:
        raise _Invalid(where, f"must be a mapping, not {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _Invalid(f"{where}.{key}" if where else str(key),
                           f"unknown key (allowed: {', '.join(sorted(allowed))})")
    return value


def _group_resources(value: object, where: str) -> GroupResources:
    entry = _mapping(value, where, _GROUP_RESOURCE_KEYS)
    group = entry.get("group", "")
    if group is None:
        group = ""
    if type(group) is not str:
        raise _Invalid(f"{where}.group", f"must be a string, not {type(group).__name__}")
    if group not in ("", "*") and not _DNS_SUBDOMAIN.fullmatch(group):
        raise _Invalid(f"{where}.group", f"{group!r} is not an API group name (no version: 'apps', not 'apps/v1')")
    resources = _strings(entry.get("resources"), f"{where}.resources")
    names = _strings(entry.get("resourceNames"), f"{where}.resourceNames")
    if names and not resources:
        raise _Invalid(f"{where}.resourceNames", "using resourceNames requires at least one resource")
    return GroupResources(group, resources, names)


def _rule(value: object, where: str) -> PolicyRule:
    entry = _mapping(value, where, _RULE_KEYS)
    level = entry.get("level")
    if level not in LEVELS:
        what = "missing" if level is None else f"unknown level {level!r:.40}"
        raise _Invalid(f"{where}.level", f"{what} (one of {', '.join(LEVELS)})")
    raw_resources = entry.get("resources")
    if raw_resources is not None and type(raw_resources) is not list:
        raise _Invalid(f"{where}.resources", f"must be a list, not {type(raw_resources).__name__}")
    resources = tuple(_group_resources(item, f"{where}.resources[{i}]") for i, item in enumerate(raw_resources or ()))
    urls = _strings(entry.get("nonResourceURLs"), f"{where}.nonResourceURLs")
    for index, url in enumerate(urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            raise _Invalid(f"{where}.nonResourceURLs[{index}]", f"{url!r} must begin with '/'")
        if "*" in url[:-1]:
            raise _Invalid(f"{where}.nonResourceURLs[{index}]", f"{url!r}: '*' may only be the final character")
    namespaces = _strings(entry.get("namespaces"), f"{where}.namespaces")
    if urls and (resources or namespaces):
        raise _Invalid(f"{where}.nonResourceURLs", "a rule cannot apply to both resources and non-resource URLs")
    return PolicyRule(
        level=level,
        users=_strings(entry.get("users"), f"{where}.users"),
        user_groups=_strings(entry.get("userGroups"), f"{where}.userGroups"),
        verbs=_strings(entry.get("verbs"), f"{where}.verbs"),
        resources=resources,
        namespaces=namespaces,
        non_resource_urls=urls,
        omit_stages=_stages(entry.get("omitStages"), f"{where}.omitStages"),
        omit_managed_fields=_optional_bool(entry.get("omitManagedFields"), f"{where}.omitManagedFields"),
    )


def parse_policy(text: str, source: str) -> AuditPolicy:
    """The Policy in `text` (YAML or JSON); `source` names it in errors (e.g. the file path)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: audit policy is not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        policy = _mapping(document, "", _POLICY_KEYS) if document is not None else None
        if policy is None:
            raise _Invalid("policy", "empty document")
        if policy.get("apiVersion") != API_VERSION:
            raise _Invalid("apiVersion", f"{policy.get('apiVersion')!r} is not {API_VERSION!r}")
        if policy.get("kind") != "Policy":
            raise _Invalid("kind", f"{policy.get('kind')!r} is not 'Policy'")
        raw_rules = policy.get("rules")
        if raw_rules is None:
            raw_rules = []
        if type(raw_rules) is not list:
            raise _Invalid("rules", f"must be a list, not {type(raw_rules).__name__}")
        rules = tuple(_rule(rule, f"rules[{index}]") for index, rule in enumerate(raw_rules))
        omit_managed = _optional_bool(policy.get("omitManagedFields"), "omitManagedFields")
        return AuditPolicy(rules, _stages(policy.get("omitStages"), "omitStages"), bool(omit_managed), source)
    except _Invalid as exc:
        raise ValueError(f"{source}: invalid audit policy: {exc}") from None


def _drop_managed_fields(obj: object, path: tuple[str | int, ...], removed: list[str]) -> None:
    if type(obj) is not dict:
        return
    metadata = obj.get("metadata")
    if type(metadata) is dict and "managedFields" in metadata:
        del metadata["managedFields"]
        removed.append(".".join(str(part) for part in (*path, "metadata", "managedFields")))
    items = obj.get("items")
    if type(items) is list:
        for index, item in enumerate(items):
            _drop_managed_fields(item, (*path, "items", index), removed)


def apply_decision(audit: dict[str, Any], decision: PolicyDecision) -> tuple[list[str], bool]:
    """Strip `audit` in place to what the apiserver would have written at the decision's level.

    Returns the sorted dotted paths removed, and whether the Event changed at all. Dropping (level
    None, omitted stage) is the caller's. When the Event's own `level` is higher than the decision's,
    it is lowered to match what is left (that changes the record but removes nothing, so it is not
    listed).
    """
    removed: list[str] = []
    rank = LEVEL_ORDER.get(decision.level, 0)
    if rank < LEVEL_ORDER[LEVEL_REQUEST_RESPONSE] and "responseObject" in audit:
        del audit["responseObject"]
        removed.append("responseObject")
    if rank < LEVEL_ORDER[LEVEL_REQUEST] and "requestObject" in audit:
        del audit["requestObject"]
        removed.append("requestObject")
    if decision.omit_managed_fields:
        for name in ("requestObject", "responseObject"):
            if name in audit:
                _drop_managed_fields(audit[name], (name,), removed)
    changed = bool(removed)
    own = audit.get("level")
    if type(own) is str and LEVEL_ORDER.get(own, -1) > rank:
        audit["level"] = decision.level
        changed = True
    return sorted(removed), changed
