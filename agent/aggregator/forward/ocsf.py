"""ECS events mapped to OCSF 1.1 event classes (pure: a dict in, a dict out).

- `event.dataset` `kubernetes.audit` -> 6003 API Activity (category 6, Application Activity); the
  activity from the verb: create 1 Create, get/list/watch 2 Read, update/patch 3 Update,
  delete/deletecollection 4 Delete, else 99 Other.
- `event.dataset` `auditd.log` with `event.action` `executed` -> 1007 Process Activity (category 1,
  System Activity), 1 Launch.
- `event.category` holding `authentication` (sshd, sudo, su, login, PAM) -> 3002 Authentication
  (category 3, Identity & Access Management), 1 Logon.
- anything else -> 0 Base Event (category 0, Uncategorized), 99 Other.

Every mapped event keeps the logseal `event.id` as `metadata.uid` (receivers dedup on it), the
source's time as `time` (ms since the epoch), `event.outcome` as `status_id` (1 success, 2 failure,
0 unknown) and the raw line, where kept, as `raw_data`. Base Events carry the ECS event in
`unmapped`. Class and attribute names follow the OCSF 1.1.0 schema (schema.ocsf.io).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

OCSF_VERSION = "1.1.0"
PRODUCT = {"name": "logseal", "vendor_name": "logseal"}

API_ACTIVITY = (6003, "API Activity", 6, "Application Activity")
AUTHENTICATION = (3002, "Authentication", 3, "Identity & Access Management")
PROCESS_ACTIVITY = (1007, "Process Activity", 1, "System Activity")
BASE_EVENT = (0, "Base Event", 0, "Uncategorized")

K8S_VERB_ACTIVITY = {"create": (1, "Create"), "get": (2, "Read"), "list": (2, "Read"), "watch": (2, "Read"),
                     "update": (3, "Update"), "patch": (3, "Update"), "delete": (4, "Delete"),
                     "deletecollection": (4, "Delete")}
OTHER = (99, "Other")
STATUS = {"success": (1, "Success"), "failure": (2, "Failure")}
UNKNOWN_STATUS = (0, "Unknown")


def epoch_ms(timestamp: Any) -> int:
    if not isinstance(timestamp, str) or not timestamp:
        return 0
    try:
        moment = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def _get(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _prune(value: Any) -> Any:
    """Drop None and empty containers, so that the documents hold only what the source said."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value if v is not None]
    return value


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def class_of(event: dict[str, Any]) -> tuple[int, str, int, str]:
    """The OCSF class an ECS event maps to: (class_uid, class_name, category_uid, category_name)."""
    dataset = _get(event, "event.dataset")
    if dataset == "kubernetes.audit":
        return API_ACTIVITY
    if dataset == "auditd.log" and _get(event, "event.action") == "executed":
        return PROCESS_ACTIVITY
    if "authentication" in (_get(event, "event.category") or []):
        return AUTHENTICATION
    return BASE_EVENT


def to_ocsf(event: dict[str, Any]) -> dict[str, Any]:
    """One stored ECS event as an OCSF event of the class `class_of` names."""
    class_uid, class_name, category_uid, category_name = cls = class_of(event)
    outcome = _get(event, "event.outcome")
    status_id, status = STATUS.get(outcome if isinstance(outcome, str) else "", UNKNOWN_STATUS)
    if cls == API_ACTIVITY:
        activity_id, activity, body = _api_activity(event)
    elif cls == AUTHENTICATION:
        (activity_id, activity), body = (1, "Logon"), _authentication(event)
    elif cls == PROCESS_ACTIVITY:
        (activity_id, activity), body = (1, "Launch"), _process_activity(event)
    else:
        (activity_id, activity), body = OTHER, {"unmapped": event}
    doc: dict[str, Any] = {
        "class_uid": class_uid, "class_name": class_name, "category_uid": category_uid,
        "category_name": category_name, "activity_id": activity_id, "activity_name": activity,
        "type_uid": class_uid * 100 + activity_id, "type_name": f"{class_name}: {activity}",
        "time": epoch_ms(event.get("@timestamp")), "severity_id": 1, "severity": "Informational",
        "status_id": status_id, "status": status,
        "message": event.get("message"),
        "metadata": {"version": OCSF_VERSION, "product": PRODUCT, "uid": _get(event, "event.id"),
                     "original_time": event.get("@timestamp"), "log_name": _get(event, "event.dataset"),
                     "log_provider": _get(event, "host.name")},
        "device": {"hostname": _get(event, "host.name"), "type_id": 0},
        "raw_data": _get(event, "event.original"),
    }
    doc.update(body)
    return dict(_prune(doc))


def _api_activity(event: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    audit = _get(event, "kubernetes.audit") or {}
    verb = str(audit.get("verb") or _get(event, "event.action") or "")
    activity_id, activity = K8S_VERB_ACTIVITY.get(verb, OTHER)
    ref = audit.get("objectRef") or {}
    user = audit.get("user") or {}
    ips = audit.get("sourceIPs") or []
    code = _get(audit, "responseStatus.code")
    body = {
        "actor": {"user": {"name": user.get("username") or _get(event, "user.name"), "uid": user.get("uid"),
                           "groups": [{"name": g} for g in user.get("groups") or []]},
                  "app_name": audit.get("userAgent")},
        "api": {"operation": verb, "request": {"uid": audit.get("auditID")},
                "response": {"code": code, "message": _get(audit, "responseStatus.message")},
                "service": {"name": "kube-apiserver"}, "version": ref.get("apiVersion")},
        "resources": [{"type": ref.get("resource"), "name": ref.get("name"), "namespace": ref.get("namespace"),
                       "group": {"name": ref.get("apiGroup")} if ref.get("apiGroup") else None}] if ref else [],
        "src_endpoint": {"ip": ips[0] if ips else _get(event, "source.ip")},
        "http_request": {"user_agent": audit.get("userAgent"), "url": {"path": audit.get("requestURI")}},
        "cloud": {"provider": "Kubernetes"},
        "status_code": str(code) if code is not None else None,
    }
    return activity_id, activity, body


def _authentication(event: dict[str, Any]) -> dict[str, Any]:
    method = _get(event, "system.auth.ssh.method")
    program = _get(event, "process.name")
    return {
        "user": {"name": _get(event, "user.name"), "uid": _get(event, "user.id")},
        "src_endpoint": {"ip": _get(event, "source.ip"), "port": _int(_get(event, "source.port"))},
        "dst_endpoint": {"hostname": _get(event, "host.name")},
        "service": {"name": program},
        "auth_protocol_id": 99 if method else 0, "auth_protocol": method,
        "is_remote": bool(_get(event, "source.ip")) or program == "sshd",
        "logon_process": {"name": program, "pid": _int(_get(event, "process.pid"))},
        "status_detail": _get(event, "event.action"),
    }


def _process_activity(event: dict[str, Any]) -> dict[str, Any]:
    args = _get(event, "process.args") or []
    executable = _get(event, "process.executable")
    user = {"uid": _get(event, "user.id"), "name": _get(event, "user.name")}
    return {
        "process": {"pid": _int(_get(event, "process.pid")), "name": _get(event, "process.name"),
                    "cmd_line": " ".join(str(a) for a in args) or None,
                    "file": {"path": executable, "name": executable.rsplit("/", 1)[-1] if executable else None,
                             "type_id": 1} if executable else None,
                    "parent_process": {"pid": _int(_get(event, "process.parent.pid"))},
                    "user": user},
        "actor": {"user": user, "process": {"pid": _int(_get(event, "process.parent.pid"))}},
    }
