"""Linux auditd log (`/var/log/audit/audit.log`): records, and events assembled from them.

A record is one line:

    [node=NAME ]type=TYPE msg=audit(EPOCH.MILLIS:SERIAL): key=value key="quoted" msg='op=... res=...'

(the colon after the `)` is optional: some daemon records leave it out). One kernel event is
several records sharing `msg=audit(EPOCH:SERIAL)` (SYSCALL, EXECVE, CWD, PATH..., PROCTITLE, EOE).

Two entry points, dataset `auditd.log` for both:

* `make_assembler(ctx, options)` -- what the agent runs. It groups the records of one event
  (`auditd_assemble.ReorderBuffer`: EOE, single-record types, a 2 s reorder window, at most 256
  events held) and maps the event to ECS the way go-libaudit's aucoalesce (Elastic's auditd
  normalisation, used by Auditbeat) does; see `build_event` for the field list.
* `make_normalizer(ctx)` -- one event per record, for callers that want records (kept as it was:
  `event.action` = record type lowercased, every pair under `auditd.log`, hex left encoded there).

Either way a line without `type=... msg=audit(EPOCH:SERIAL):` (e.g. `type=UNKNOWN[1329] msg=?`)
becomes an `unparsed_event`, bytes that are not UTF-8 are parsed with U+FFFD replacements (exact
bytes kept in `logseal.original_base64`, and `error.message` says so), and nothing raises.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.normalize.assemble import Assembler, HeldLine, NormalizeOptions
from agent.normalize.auditd_assemble import Lost, Parsed, ReorderBuffer
from agent.normalize.common import (
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    OUTCOME_UNKNOWN,
    Event,
    SourceContext,
    base_event,
    timestamp_from_epoch,
    unparsed_event,
)
from agent.normalize.k8s_audit import NOT_UTF8, looks_like_ip
from agent.normalize.syscalls import arch_name, syscall_name

DATASET = "auditd.log"

_OUTCOME_BY_RES = {
    "success": OUTCOME_SUCCESS,
    "yes": OUTCOME_SUCCESS,
    "1": OUTCOME_SUCCESS,
    "failed": OUTCOME_FAILURE,
    "failure": OUTCOME_FAILURE,
    "fail": OUTCOME_FAILURE,
    "no": OUTCOME_FAILURE,
    "0": OUTCOME_FAILURE,
}
_OUTCOME_BY_SUCCESS = {"yes": OUTCOME_SUCCESS, "no": OUTCOME_FAILURE}

_AUTH_INFO = (("authentication",), ("info",))
_CATEGORIZATION: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "USER_AUTH": _AUTH_INFO,
    "USER_ACCT": _AUTH_INFO,
    "USER_ERR": _AUTH_INFO,
    "CRED_ACQ": _AUTH_INFO,
    "CRED_DISP": _AUTH_INFO,
    "CRED_REFR": _AUTH_INFO,
    "USER_LOGIN": (("authentication",), ("start",)),
    "USER_LOGOUT": (("authentication",), ("end",)),
    "LOGIN": (("authentication",), ("info",)),
    "USER_START": (("session",), ("start",)),
    "USER_END": (("session",), ("end",)),
    "ADD_USER": (("iam",), ("user", "creation")),
    "DEL_USER": (("iam",), ("user", "deletion")),
    "USER_MGMT": (("iam",), ("user", "change")),
    "USER_CHAUTHTOK": (("iam",), ("user", "change")),
    "ADD_GROUP": (("iam",), ("group", "creation")),
    "DEL_GROUP": (("iam",), ("group", "deletion")),
    "GRP_MGMT": (("iam",), ("group", "change")),
    "USER_ROLE_CHANGE": (("iam",), ("change",)),
    "SYSCALL": (("process",), ("info",)),
    "EXECVE": (("process",), ("start",)),
    "USER_CMD": (("process",), ("start",)),
    "SERVICE_START": (("process",), ("start",)),
    "SERVICE_STOP": (("process",), ("end",)),
    "CONFIG_CHANGE": (("configuration",), ("change",)),
    "DAEMON_CONFIG": (("configuration",), ("change",)),
    "USYS_CONFIG": (("configuration",), ("change",)),
    "NETFILTER_CFG": (("configuration",), ("change",)),
}
_UNCATEGORIZED: tuple[tuple[str, ...], tuple[str, ...]] = ((), ("info",))

# Beyond this many digits an epoch is not a time a log can carry (year > 9999 is out already).
_MAX_EPOCH_DIGITS = 12


# Beyond this many digits an epoch is not a time a log can carry (year > 9999 is out already).
_MAX_EPOCH_DIGITS = 12
# auditd's ENRICHED log format appends the resolved names after a GS (0x1d) separator.
_ENRICHED_SEPARATOR = "\x1d"


def _parse_pairs(text: str, out: dict[str, Any], overwrite: bool, quoted: set[str]) -> None:
    """Add the `key=value` pairs of `text` to `out`; bare words (`avc:`, `{ read }`) are skipped.

    Values are unquoted (the keys of quoted values are added to `quoted`: an unquoted value of a
    string field is hex-encoded). A quoted value may hold spaces (USER_AVC's `cmdline="a b"`):
    tokens are joined back until the closing quote.
    """
    tokens = iter(text.split(" "))
    previous = ""
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            if token:
                previous = token
            continue
        quote = value[:1]
        was_quoted = False
        if quote == '"' or quote == "'":
            was_quoted = True
            end = value.find(quote, 1)
            if end < 0:
                parts = [value]
                for more in tokens:
                    parts.append(more)
                    if quote in more:
                        break
                value = " ".join(parts)
                end = value.find(quote, 1)
            # What follows the closing quote in the same token is not part of the value.
            value = value[1:end] if end > 0 else value[1:]
        if previous:
            if previous == "old" or previous == "new":
                key = previous + "_" + key
            previous = ""
        if overwrite or key not in out:
            out[key] = value
            if was_quoted:
                quoted.add(key)
            else:
                quoted.discard(key)


def _int(value: object) -> int | None:
    if type(value) is str and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        return int(value)
    return None


def _decode_hex(value: str) -> bytes | None:
    if not value or len(value) % 2:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


@dataclass(slots=True)
class Record:
    """One parsed record line: header, pairs (values unquoted, still hex where auditd hex-encoded)."""

    node: str | None
    record_type: str
    epoch: str
    sequence: int
    timestamp: str
    fields: dict[str, Any]
    quoted: set[str]

    def text(self, key: str) -> str | None:
        """The plain text of a string field: as is when quoted, hex-decoded when auditd encoded it.

        None when absent or auditd's "no value" (`?`, `(null)`). An unquoted value that is not hex is
        plain text from an old record format (`acct=root :`) and kept as is.
        """
        value = self.fields.get(key)
        if type(value) is not str or not value or value == "?" or value == "(null)":
            return None
        if key in self.quoted:
            return value
        raw = _decode_hex(value)
        return value if raw is None else raw.decode("utf-8", "replace")

    def raw(self, key: str) -> bytes | None:
        """The bytes of a string field (hex-decoded or the quoted text), None when absent."""
        value = self.fields.get(key)
        if type(value) is not str or value == "(null)":
            return None
        if key not in self.quoted:
            decoded = _decode_hex(value)
            if decoded is not None:
                return decoded
        return value.encode("utf-8", "surrogatepass")


class RecordParser:
    """`parse(text)` -> `Record`, or the reason (a string) the text is not an audit record."""

    def __init__(self) -> None:
        # Records of one event share their second: remember the last second's canonical prefix.
        self._last_second = ""
        self._last_prefix = ""

    def parse(self, text: str) -> Record | str:
        node = None
        start = 0
        if text.startswith("node="):
            start = text.find(" ") + 1
            if start == 0:
                return "auditd: nothing after 'node='"
            node = text[5:start - 1]
        if not text.startswith("type=", start):
            return "auditd: not an audit record: no 'type='"
        type_end = text.find(" ", start + 5)
        record_type = text[start + 5:type_end] if type_end > 0 else ""
        if not record_type or not text.startswith("msg=audit(", type_end + 1):
            return "auditd: not an audit record: no 'type=TYPE msg=audit(' header"
        stamp_start = type_end + 11
        stamp_end = text.find(")", stamp_start)
        if stamp_end < 0:
            return "auditd: unterminated 'msg=audit(' header"
        epoch, _, serial = text[stamp_start:stamp_end].partition(":")
        seconds, _, fraction = epoch.partition(".")
        sequence = _int(serial)
        if (
            sequence is None
            or not seconds.isascii() or not seconds.isdigit() or len(seconds) > _MAX_EPOCH_DIGITS
            or (fraction and not (fraction.isascii() and fraction.isdigit()))
        ):
            stamp = text[stamp_start:stamp_end][:40]
            return f"auditd: bad 'msg=audit(EPOCH:SERIAL)' value {stamp!r}"
        if seconds != self._last_second:
            try:
                whole = timestamp_from_epoch(int(seconds))
            except (ValueError, OverflowError, OSError):
                whole = ""
            if len(whole) != 27:
                return f"auditd: epoch {seconds} is out of range"
            self._last_second, self._last_prefix = seconds, whole[:20]
        timestamp = self._last_prefix + (fraction + "000000")[:6] + "Z"

        # `):` as a rule; some daemon records (DAEMON_CONFIG on RHEL 7) leave out the colon.
        rest = text[stamp_end + 2:] if text[stamp_end + 1:stamp_end + 2] == ":" else text[stamp_end + 1:]
        if _ENRICHED_SEPARATOR in rest:
            rest = rest.replace(_ENRICHED_SEPARATOR, " ")
        fields: dict[str, Any] = {"record_type": record_type, "sequence": sequence}
        quoted: set[str] = set()
        inner_start = rest.find("msg='")
        if inner_start >= 0 and (inner_start == 0 or rest[inner_start - 1] == " "):
            inner_end = rest.rfind("'")
            if inner_end <= inner_start + 4:
                inner_end = len(rest)
            _parse_pairs(rest[:inner_start] + rest[inner_end + 1:], fields, True, quoted)
            inner = rest[inner_start + 5:inner_end]
            if inner.endswith(")") and " (" in inner:
                # Old PAM format: `exe="/usr/sbin/crond" (hostname=?, addr=?, terminal=cron res=success)`
                inner = inner[:-1].replace(" (", " ", 1).replace(", ", " ")
            size = len(fields)
            _parse_pairs(inner, fields, False, quoted)
            if len(fields) == size:
                fields["msg"] = inner
        else:
            _parse_pairs(rest, fields, True, quoted)
        fields["record_type"] = record_type
        fields["sequence"] = sequence
        if node is not None:
            fields["node"] = node
        return Record(node, record_type, epoch, sequence, timestamp, fields, quoted)


def _outcome(fields: dict[str, Any]) -> str:
    res = fields.get("res")
    if type(res) is str:
        return _OUTCOME_BY_RES.get(res.lower(), OUTCOME_UNKNOWN)
    success = fields.get("success")
    if type(success) is str:
        return _OUTCOME_BY_SUCCESS.get(success.lower(), OUTCOME_UNKNOWN)
    return OUTCOME_UNKNOWN


def make_normalizer(ctx: SourceContext) -> Callable[[bytes, int, str], Event]:
    """One event per record (see the module docstring); the agent uses `make_assembler`."""
    parser = RecordParser()

    def unparsed(line: bytes, offset: int, received: str, error: str) -> Event:
        return unparsed_event(line=line, offset=offset, ctx=ctx, received=received, dataset=DATASET,
                              error=error)

    def normalize(line: bytes, offset: int, received: str) -> Event:
        try:
            record = parser.parse(line.decode("utf-8", "replace"))
            if isinstance(record, str):
                return unparsed(line, offset, received, record)
            fields = record.fields
            record_type = record.record_type
            category, types = _CATEGORIZATION.get(record_type, _UNCATEGORIZED)
            event = base_event(
                line=line, offset=offset, ctx=ctx, timestamp=record.timestamp, dataset=DATASET,
                action=record_type.lower(), outcome=_outcome(fields), category=list(category),
                types=list(types),
            )
            process: dict[str, Any] = {}
            pid = _int(fields.get("pid"))
            if pid is not None:
                process["pid"] = pid
            ppid = _int(fields.get("ppid"))
            if ppid is not None:
                process["parent"] = {"pid": ppid}
            name = record.text("comm")
            if name is not None:
                process["name"] = name
            executable = record.text("exe")
            if executable is not None:
                process["executable"] = executable
            if process:
                event["process"] = process
            user: dict[str, Any] = {}
            uid = fields.get("uid")
            if uid:
                user["id"] = uid
            account = record.text("acct")
            if account is not None:
                user["name"] = account
            if user:
                event["user"] = user
            addr = fields.get("addr")
            if addr and looks_like_ip(addr):
                event["source"] = {"ip": addr}
            event["auditd"] = {"log": fields}
            if "logseal" in event:
                event["error"] = {"message": "auditd: " + NOT_UTF8}
            return event
        except Exception as exc:  # the invariant: an event for every line, whatever it holds
            error = f"auditd: internal error: {type(exc).__name__}: {str(exc)[:80]}"
            return unparsed(line, offset, received, error)

    return normalize


# -- Assembled events ----------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Record types that are always a whole event on their own: the user-space (1100-1199, 2100-2999)
# and daemon (1200-1299) messages, as go-libaudit's reassembler decides by type number. (It also
# ends an event at types below 1100; of those only LOGIN appears in logs, and since Linux 3.x the
# kernel logs LOGIN inside the syscall that set the login uid, with that syscall's serial: it is
# not alone, so here it waits for its EOE like any kernel record.)
_ALONE = _words("""
    USER_AUTH USER_ACCT USER_MGMT CRED_ACQ CRED_DISP USER_START USER_END USER_AVC USER_CHAUTHTOK
    USER_ERR CRED_REFR USYS_CONFIG USER_LOGIN USER_LOGOUT ADD_USER DEL_USER ADD_GROUP DEL_GROUP
    DAC_CHECK CHGRP_ID TEST TRUSTED_APP USER_SELINUX_ERR USER_CMD USER_TTY CHUSER_ID GRP_AUTH
    SYSTEM_BOOT SYSTEM_SHUTDOWN SYSTEM_RUNLEVEL SERVICE_START SERVICE_STOP GRP_MGMT GRP_CHAUTHTOK
    MAC_CHECK ACCT_LOCK ACCT_UNLOCK USER_DEVICE SOFTWARE_UPDATE
    DAEMON_START DAEMON_END DAEMON_ABORT DAEMON_CONFIG DAEMON_RECONFIG DAEMON_ROTATE DAEMON_RESUME
    DAEMON_ACCEPT DAEMON_CLOSE DAEMON_ERR
    ANOM_LOGIN_FAILURES ANOM_LOGIN_TIME ANOM_LOGIN_SESSIONS ANOM_LOGIN_ACCT ANOM_LOGIN_LOCATION
    ANOM_MAX_DAC ANOM_MAX_MAC ANOM_AMTU_FAIL ANOM_RBAC_FAIL ANOM_RBAC_INTEGRITY_FAIL
    ANOM_CRYPTO_FAIL ANOM_ACCESS_FS ANOM_EXEC ANOM_MK_EXEC ANOM_ADD_ACCT ANOM_DEL_ACCT ANOM_MOD_ACCT
    ANOM_ROOT_TRANS ANOM_LOGIN_SERVICE ANOM_LOGIN_ROOT ANOM_ORIGFAILED ANOM_EVIL
    RESP_ANOMALY RESP_ALERT RESP_KILL_PROC RESP_TERM_ACCESS RESP_ACCT_REMOTE RESP_ACCT_LOCK_TIMED
    RESP_ACCT_UNLOCK_TIMED RESP_ACCT_LOCK RESP_TERM_LOCK RESP_SEBOOL RESP_EXEC RESP_SINGLE
    RESP_HALT RESP_ORIGIN_BLOCK RESP_ORIGIN_BLOCK_TIMED RESP_ORIGIN_UNBLOCK_TIMED
    USER_ROLE_CHANGE ROLE_ASSIGN ROLE_REMOVE LABEL_OVERRIDE LABEL_LEVEL_CHANGE USER_LABELED_EXPORT
    USER_UNLABELED_EXPORT DEV_ALLOC DEV_DEALLOC FS_RELABEL USER_MAC_POLICY_LOAD ROLE_MODIFY
    USER_MAC_CONFIG_CHANGE USER_MAC_STATUS
    CRYPTO_TEST_USER CRYPTO_PARAM_CHANGE_USER CRYPTO_LOGIN CRYPTO_LOGOUT CRYPTO_KEY_USER
    CRYPTO_FAILURE_USER CRYPTO_REPLAY_USER CRYPTO_SESSION CRYPTO_IKE_SA CRYPTO_IPSEC_SA
    VIRT_CONTROL VIRT_RESOURCE VIRT_MACHINE_ID VIRT_INTEGRITY_CHECK VIRT_CREATE VIRT_DESTROY
    VIRT_MIGRATE_IN VIRT_MIGRATE_OUT
""")


def _is_alone(record_type: str) -> bool:
    if record_type in _ALONE:
        return True
    if record_type.startswith("UNKNOWN[") and record_type.endswith("]"):
        number = _int(record_type[8:-1])
        return number is not None and (1100 <= number < 1300 or 2100 <= number < 3000)
    return False


@dataclass(frozen=True, slots=True, eq=False)
class Norm:
    """How aucoalesce names and categorizes an event (its `normalizations.yaml`, as ECS values)."""

    action: str | None
    category: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    kind: str = "event"
    path_index: int = 0


def _norms(table: list[tuple[Norm, str]]) -> dict[str, Norm]:
    return {name: norm for norm, names in table for name in names.split()}


_FILE, _PROCESS, _NETWORK, _HOST, _DRIVER = ("file",), ("process",), ("network",), ("host",), ("driver",)
_IAM, _AUTH, _CONFIG, _SESSION = ("iam",), ("authentication",), ("configuration",), ("session",)
_PROCESS_CONFIG = ("process", "configuration")
_INFO, _CHANGE, _START, _END = ("info",), ("change",), ("start",), ("end",)
_CREATION, _DELETION = ("creation",), ("deletion",)
_CONNECTION_START, _CONNECTION_INFO = ("connection", "start"), ("connection", "info")

_ANY_SYSCALL = Norm(None, _PROCESS, _INFO)
_TIME_CHANGE = Norm("changed-system-time", _HOST, _CHANGE)
_KERNEL_MODULE = Norm("loaded-kernel-module", _DRIVER, _START)

# By syscall name. A syscall with no entry gets `_ANY_SYSCALL` (aucoalesce's `*`).
_SYSCALL_NORMS = _norms([
    (Norm("opened-file", _FILE, _CREATION), "creat"),
    (Norm("opened-file", _FILE, _CHANGE), "fallocate truncate ftruncate"),
    (Norm("opened-file", _FILE, _INFO), "open openat readlink readlinkat"),
    (Norm("read-file", _FILE, _INFO), "read"),
    (Norm("wrote-to-file", _FILE, _CHANGE), "write"),
    (Norm("changed-file-attributes-of", _FILE, _CHANGE),
     "setxattr fsetxattr lsetxattr removexattr fremovexattr lremovexattr"),
    (Norm("changed-file-permissions-of", _FILE, _CHANGE), "chmod fchmod fchmodat"),
    (Norm("changed-file-ownership-of", _FILE, _CHANGE), "chown fchown fchownat lchown"),
    (_KERNEL_MODULE, "finit_module init_module"),
    (Norm("unloaded-kernel-module", _DRIVER, _END), "delete_module"),
    (Norm("created-directory", _FILE, _CREATION, path_index=1), "mkdir mkdirat"),
    (Norm("mounted", _FILE, _CREATION, path_index=1), "mount"),
    (Norm("renamed", _FILE, _CHANGE, path_index=2), "rename renameat renameat2"),
    (Norm("checked-metadata-of", _FILE, _INFO),
     "access faccessat fstatat newfstatat stat stat64 fstat lstat getxattr lgetxattr fgetxattr"),
    (Norm("checked-filesystem-metadata-of", _FILE, _INFO), "statfs fstatfs"),
    (Norm("symlinked", _FILE, _CREATION), "symlink symlinkat"),
    (Norm("unmounted", _FILE, _DELETION), "umount umount2"),
    (Norm("deleted", _FILE, _DELETION), "rmdir unlink unlinkat"),
    (Norm("changed-timestamp-of", _FILE, _INFO), "utime utimes futimesat futimens utimensat"),
    (Norm("executed", _PROCESS, _START), "execve execveat"),
    (Norm("listen-for-connections", _NETWORK, _START), "listen"),
    (Norm("accepted-connection-from", _NETWORK, _CONNECTION_START), "accept accept4"),
    (Norm("bound-socket", _NETWORK, _START), "bind"),
    (Norm("connected-to", _NETWORK, _CONNECTION_START), "connect"),
    (Norm("received-from", _NETWORK, _CONNECTION_INFO), "recv recvfrom recvmsg recvmmsg"),
    (Norm("sent-to", _NETWORK, _CONNECTION_INFO), "send sendto sendmsg sendmmsg"),
    (Norm("killed-pid", _PROCESS, _END), "kill tkill tgkill"),
    (Norm("changed-identity-of", _PROCESS, _CHANGE),
     "setuid seteuid setfsuid setreuid setgid setegid setfsgid setregid setresuid setresgid"),
    (_TIME_CHANGE, "settimeofday clock_settime clock_adjtime stime adjtimex"),
    (Norm("make-device", _FILE, _CREATION), "mknod mknodat"),
    (Norm("changed-system-name", _HOST, _CHANGE), "sethostname setdomainname"),
    (Norm("allocated-memory", _PROCESS, _INFO), "mmap mmap2 brk"),
    (Norm("adjusted-scheduling-policy-of", _PROCESS, _CHANGE),
     "sched_setparam sched_setscheduler sched_setattr"),
])

_ALERT = "alert"
_INTRUSION = ("intrusion_detection",)

# By record type (of the event's first record, when that is not the SYSCALL). Where aucoalesce's
# table says `type: stop` (not an ECS value) this says `end`.
_RECORD_NORMS = _norms([
    (Norm("locked-account", _IAM, ("user", "info")), "ACCT_LOCK"),
    (Norm("unlocked-account", _IAM, ("user", "info")), "ACCT_UNLOCK"),
    (Norm("added-group-account-to", _IAM, ("group", "creation")), "ADD_GROUP"),
    (Norm("added-user-account", _IAM, ("user", "creation")), "ADD_USER"),
    (Norm("deleted-group-account-from", _IAM, ("group", "deletion")), "DEL_GROUP"),
    (Norm("deleted-user-account", _IAM, ("user", "deletion")), "DEL_USER"),
    (Norm("modified-group-account", _IAM, ("group", "change")), "GRP_MGMT"),
    (Norm("assigned-user-role-to", _IAM, ("user", "change")), "ROLE_ASSIGN"),
    (Norm("modified-role", _IAM, _CHANGE), "ROLE_MODIFY"),
    (Norm("removed-user-role-from", _IAM, ("user", "change")), "ROLE_REMOVE"),
    (Norm("modified-user-account", _IAM, ("user", "change")), "USER_MGMT"),
    (Norm("changed-password", _IAM, ("user", "change")), "USER_CHAUTHTOK"),
    (Norm("changed-group-password", _IAM, ("group", "change")), "GRP_CHAUTHTOK"),
    (Norm("acquired-credentials", _AUTH, _INFO), "CRED_ACQ"),
    (Norm("disposed-credentials", _AUTH, _INFO), "CRED_DISP"),
    (Norm("refreshed-credentials", _AUTH, _INFO), "CRED_REFR"),
    (Norm("authenticated-to-group", _AUTH, _INFO), "GRP_AUTH"),
    (Norm("changed-login-id-to", _AUTH, _START), "LOGIN"),
    (Norm("was-authorized", _AUTH, _INFO), "USER_ACCT"),
    (Norm("authenticated", _AUTH, _INFO), "USER_AUTH"),
    (Norm("ended-session", _SESSION, _END), "USER_END"),
    (Norm("error", _AUTH, _INFO), "USER_ERR"),
    (Norm("logged-in", _AUTH, _START), "USER_LOGIN"),
    (Norm("logged-out", _AUTH, _END), "USER_LOGOUT"),
    (Norm("changed-role-to"), "USER_ROLE_CHANGE"),
    (Norm("started-session", _SESSION, _START), "USER_START"),
    (Norm("issued-vm-control", _HOST, _INFO), "VIRT_CONTROL"),
    (Norm("created-vm-image", _HOST, _INFO), "VIRT_CREATE"),
    (Norm("deleted-vm-image", _HOST, _INFO), "VIRT_DESTROY"),
    (Norm("checked-integrity-of", _HOST, _INFO), "VIRT_INTEGRITY_CHECK"),
    (Norm("assigned-vm-id", _HOST, _INFO), "VIRT_MACHINE_ID"),
    (Norm("migrated-vm-from", _HOST, _INFO), "VIRT_MIGRATE_IN"),
    (Norm("migrated-vm-to", _HOST, _INFO), "VIRT_MIGRATE_OUT"),
    (Norm("assigned-vm-resource", _HOST, _INFO), "VIRT_RESOURCE"),
    (Norm("changed-group", _PROCESS, _CHANGE), "CHGRP_ID"),
    (Norm("changed-user-id", _PROCESS, _CHANGE), "CHUSER_ID"),
    (Norm("sent-test", _PROCESS, _INFO), "TEST"),
    (Norm("unknown", _PROCESS, _INFO), "TRUSTED_APP"),
    (Norm("ran-command", _PROCESS, _START), "USER_CMD"),
    (Norm("booted-system", _HOST, _START), "SYSTEM_BOOT"),
    (Norm("changed-to-runlevel", _HOST, _CHANGE), "SYSTEM_RUNLEVEL"),
    (Norm("shutdown-system", _HOST, _END), "SYSTEM_SHUTDOWN"),
    (Norm("started-service", _PROCESS, _START), "SERVICE_START"),
    (Norm("stopped-service", _PROCESS, _END), "SERVICE_STOP"),
    (Norm("changed-audit-configuration", _PROCESS_CONFIG, _CHANGE), "CONFIG_CHANGE"),
    (Norm("aborted-auditd-startup", _PROCESS, _END), "DAEMON_ABORT"),
    (Norm("remote-audit-connected", _NETWORK, _CONNECTION_START), "DAEMON_ACCEPT"),
    (Norm("remote-audit-disconnected", _NETWORK, ("connection", "end")), "DAEMON_CLOSE"),
    (Norm("changed-auditd-configuration", _PROCESS_CONFIG, _CHANGE), "DAEMON_CONFIG"),
    (Norm("shutdown-audit", _PROCESS, _END), "DAEMON_END"),
    (Norm("audit-error", _PROCESS, _INFO), "DAEMON_ERR"),
    (Norm("reconfigured-auditd", _PROCESS_CONFIG, _INFO), "DAEMON_RECONFIG"),
    (Norm("resumed-audit-logging", _PROCESS, _CHANGE), "DAEMON_RESUME"),
    (Norm("rotated-audit-logs", _PROCESS, _CHANGE), "DAEMON_ROTATE"),
    (Norm("started-audit", _PROCESS, _START), "DAEMON_START"),
    (Norm("initialized-audit-subsystem", _PROCESS, _INFO), "KERNEL"),
    (Norm("changed-configuration", _CONFIG, _CHANGE), "USYS_CONFIG"),
    (Norm("loaded-firewall-rule-to", _CONFIG, _CHANGE), "NETFILTER_CFG"),
    (Norm("changed-audit-feature", _CONFIG, _CHANGE), "FEATURE_CHANGE"),
    (Norm("typed"), "TTY USER_TTY"),
    (Norm("relabeled-filesystem"), "FS_RELABEL"),
    (Norm("modified-level-of"), "LABEL_LEVEL_CHANGE"),
    (Norm("overrode-label-of"), "LABEL_OVERRIDE"),
    (Norm("mac-permission"), "MAC_CHECK"),
    (Norm("changed-selinux-boolean", _CONFIG, _CHANGE), "MAC_CONFIG_CHANGE"),
    (Norm("loaded-selinux-policy", _CONFIG, ("access",)), "MAC_POLICY_LOAD"),
    (Norm("changed-selinux-enforcement", _CONFIG, _CHANGE), "MAC_STATUS"),
    (Norm("access-permission"), "USER_AVC"),
    (Norm("changed-mac-configuration", _CONFIG, _CHANGE), "USER_MAC_CONFIG_CHANGE"),
    (Norm("loaded-mac-policy", _CONFIG, ("access",)), "USER_MAC_POLICY_LOAD"),
    (Norm("access-error"), "USER_SELINUX_ERR"),
    (Norm("violated-seccomp-policy"), "SECCOMP"),
    (Norm("caused-mac-policy-error"), "SELINUX_ERR"),
    (Norm("negotiated-crypto-key", _PROCESS, _INFO), "CRYPTO_KEY_USER"),
    (Norm("crypto-officer-logged-in"), "CRYPTO_LOGIN"),
    (Norm("crypto-officer-logged-out", _PROCESS, _INFO), "CRYPTO_LOGOUT"),
    (Norm("started-crypto-session", _PROCESS, _INFO), "CRYPTO_SESSION"),
    (Norm("access-result"), "DAC_CHECK"),
    (Norm("crashed-program", ("process", "intrusion_detection"), ("end", "info"), _ALERT), "ANOM_ABEND"),
    (Norm("attempted-execution-of-forbidden-program", ("process", "intrusion_detection"),
          ("start", "info"), _ALERT), "ANOM_EXEC"),
    (Norm("used-suspicious-link", _INTRUSION, _INFO, _ALERT), "ANOM_LINK"),
    (Norm("failed-log-in-too-many-times-to", _INTRUSION, _INFO, _ALERT), "ANOM_LOGIN_FAILURES"),
    (Norm("attempted-log-in-from-unusual-place-to", _INTRUSION, _INFO, _ALERT), "ANOM_LOGIN_LOCATION"),
    (Norm("opened-too-many-sessions-to", _INTRUSION, _INFO, _ALERT), "ANOM_LOGIN_SESSIONS"),
    (Norm("attempted-log-in-during-unusual-hour-to", _INTRUSION, _INFO, _ALERT), "ANOM_LOGIN_TIME"),
    (Norm("changed-promiscuous-mode-on-device", _INTRUSION, ("info", "change"), _ALERT), "ANOM_PROMISCUOUS"),
    (Norm("tested-file-system-integrity-of", _INTRUSION, _INFO, _ALERT), "ANOM_RBAC_INTEGRITY_FAIL"),
    (Norm("sent-message"), "USER"),
    (_TIME_CHANGE, "TIME_INJOFFSET TIME_ADJNTPVAL"),
    (_KERNEL_MODULE, "KERN_MODULE"),
])
_AVC_SELINUX = Norm("violated-selinux-policy")
_AVC_APPARMOR = Norm("violated-apparmor-policy")

# Whose account `acct=`/`id=` name: the subject (user.name), or the account acted on.
_USER_TARGET_TYPES = _words("USER_MGMT USER_CHAUTHTOK ADD_USER DEL_USER ACCT_LOCK ACCT_UNLOCK "
                             "ROLE_ASSIGN ROLE_REMOVE")
_GROUP_TARGET_TYPES = _words("ADD_GROUP DEL_GROUP GRP_MGMT GRP_CHAUTHTOK")

_INCOMING = _words("recvfrom recvmsg accept accept4")
_OUTGOING = _words("connect sendto sendmsg")
_UNSET_IDS = ("4294967295", "-1")
_LOST_WORDS = ("backlog limit exceeded", "rate limit exceeded", "audit_lost")


def _success(fields: dict[str, Any]) -> str:
    """Outcome as go-libaudit reads it: `success=` (syscalls) before `res=`; yes/1/suc* succeed."""
    value = fields.get("success")
    if type(value) is not str:
        value = fields.get("res")
        if type(value) is not str:
            return OUTCOME_UNKNOWN
    value = value.lower()
    if value in ("yes", "1") or value.startswith("suc"):
        return OUTCOME_SUCCESS
    return OUTCOME_FAILURE


def _audit_id(value: object) -> str | None:
    if type(value) is not str or not value:
        return None
    return "unset" if value in _UNSET_IDS else value


def _split_nul(raw: bytes) -> list[str]:
    parts = raw.split(b"\x00")
    while parts and not parts[-1]:
        parts.pop()
    return [part.decode("utf-8", "replace") for part in parts]


def _execve_args(records: list[Record]) -> list[str] | None:
    """Arguments of the EXECVE records (several when argv is long), `aN`, or `aN_len` + `aN[i]` chunks."""
    fields: dict[str, Any] = {}
    quoted: set[str] = set()
    for record in records:
        fields.update(record.fields)
        quoted.update(record.quoted)
    argc = _int(fields.get("argc"))
    if argc is None:
        return None
    joined = Record(None, "EXECVE", "", 0, "", fields, quoted)
    args = []
    for index in range(min(argc, 1 << 16)):
        key = f"a{index}"
        raw = joined.raw(key)
        if raw is None:
            chunks = []
            part = 0
            while (chunk := joined.raw(f"{key}[{part}]")) is not None:
                chunks.append(chunk)
                part += 1
            if not chunks:
                break
            raw = b"".join(chunks)
        args.append(raw.decode("utf-8", "replace"))
    return args


def _sockaddr(value: str) -> dict[str, str]:
    """Family, address, port or path of a SOCKADDR `saddr=` (struct sockaddr in hex)."""
    raw = _decode_hex(value)
    if raw is None or len(raw) < 2:
        return {}
    family = int.from_bytes(raw[:2], "little")
    if family == 2 and len(raw) >= 8:
        return {"family": "ipv4", "port": str(int.from_bytes(raw[2:4], "big")),
                "ip": ".".join(str(octet) for octet in raw[4:8])}
    if family == 10 and len(raw) >= 24:
        import ipaddress

        return {"family": "ipv6", "port": str(int.from_bytes(raw[2:4], "big")),
                "ip": str(ipaddress.IPv6Address(raw[8:24]))}
    if family == 1:
        path = raw[2:]
        if path[:1] == b"\x00":  # abstract socket name
            return {"family": "unix", "path": "@" + path[1:].split(b"\x00")[0].decode("utf-8", "replace")}
        return {"family": "unix", "path": path.split(b"\x00")[0].decode("utf-8", "replace")}
    return {"family": str(family)}


def _tags(record: Record) -> list[str] | None:
    value = record.fields.get("key")
    if type(value) is not str or not value or value == "(null)":
        return None
    if "key" not in record.quoted:
        raw = _decode_hex(value)
        if raw is not None:
            return [tag.decode("utf-8", "replace") for tag in raw.split(b"\x01") if tag]
    if "=" in value:  # key="key=net"
        value = value.split("=", 1)[1]
    return [value]


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def build_event(records: list[Record], lines: list[HeldLine], ctx: SourceContext) -> Event:
    """The ECS event of one assembled auditd event (its records and lines in feed order).

    * `event.action`/`category`/`type`/`kind` from aucoalesce's normalizations: by the first record's
      type when that is not SYSCALL (merged with the syscall's categorization, as aucoalesce does),
      else by syscall name; no action there -> the syscall name, else the record type lowercased.
    * `event.outcome` from the SYSCALL's `success=`, else the first record's `res=`.
    * `process.pid`/`parent.pid`/`name`/`executable` (SYSCALL first, then the other records),
      `process.title` and `process.args` (PROCTITLE, NULs split; args from EXECVE when present),
      `process.working_directory` (CWD); hex-encoded values decoded.
    * `user.id` uid, `user.audit.id` auid ("unset" for 4294967295), `user.effective.id` euid,
      `user.group.id` gid, `user.name` acct= or the enriched UID= (acct= of account-management
      records is the account acted on: `user.target.name`, or `group.name` for group records).
    * `file.path` (+ inode, mode, uid, gid) from the PATH records: the syscall's path index, then
      the first that is not PARENT/UNKNOWN; `source.*`/`destination.*` from SOCKADDR (direction by
      syscall) or `addr=`; `tags` the rule keys.
    * `auditd.log`: record_type (of the first record, or SYSCALL), sequence, syscall (name), arch,
      session, node; `auditd.records`: every record's pairs as logged; `event.original`: the lines
      joined by "\\n" (`logseal.original_base64` when they are not UTF-8); `log.offset`: first line's.
    """
    kernel = [record for record in records if record.record_type != "EOE"] or records
    syscall = next((record for record in kernel if record.record_type == "SYSCALL"), None)
    primary = kernel[0] if kernel[0].record_type != "SYSCALL" or syscall is None else syscall
    subject = syscall or primary
    ordered = [subject] + [record for record in kernel if record is not subject]

    syscall_label = None
    syscall_norm = None
    if syscall is not None:
        arch = syscall.fields.get("arch")
        number = syscall.fields.get("syscall")
        if type(arch) is str and type(number) is str:
            syscall_label = syscall_name(arch, number)
        if syscall_label is None and type(number) is str:
            syscall_label = number
        syscall_norm = _SYSCALL_NORMS.get(syscall_label or "", _ANY_SYSCALL)

    if primary.record_type == "SYSCALL":
        norm = syscall_norm
    elif primary.record_type == "AVC":
        norm = _AVC_APPARMOR if "apparmor" in primary.fields else _AVC_SELINUX
    else:
        norm = _RECORD_NORMS.get(primary.record_type)
    category: list[str] = list(norm.category) if norm else []
    types: list[str] = list(norm.types) if norm else []
    if syscall_norm is not None and norm is not syscall_norm:
        category.extend(syscall_norm.category)
        types.extend(syscall_norm.types)
    action = norm.action if norm and norm.action else (
        syscall_label if primary.record_type == "SYSCALL" and syscall_label else primary.record_type.lower())
    kind = norm.kind if norm else "event"

    lost = None
    for record in kernel:
        count = _int(record.fields.get("lost"))
        message = record.fields.get("msg")
        if (count or 0) > 0 or (type(message) is str and any(word in message for word in _LOST_WORDS)):
            lost = count
            action, kind, category, types = "audit-lost", _ALERT, [], ["error"]
            break

    joined = b"\n".join(held.line for held in lines)
    event = base_event(
        line=joined, offset=lines[0].offset, ctx=ctx, timestamp=primary.timestamp, dataset=DATASET,
        action=action, outcome=_success(subject.fields), category=category, types=types or ["info"],
        kind=kind,
    )

    process: dict[str, Any] = {}
    user: dict[str, Any] = {}
    def text(key: str) -> str | None:
        """The value of `key` in the first record holding it (SYSCALL first, as aucoalesce merges)."""
        for record in ordered:
            if key in record.fields:
                return record.text(key)
        return None

    pid = _int(subject.fields.get("pid")) if "pid" in subject.fields else _int(text("pid"))
    if pid is not None:
        process["pid"] = pid
    ppid = _int(text("ppid"))
    if ppid is not None:
        process["parent"] = {"pid": ppid}
    for key, name in (("comm", "name"), ("exe", "executable")):
        value = text(key)
        if value is not None:
            process[name] = value
    execve = [record for record in kernel if record.record_type == "EXECVE"]
    args = _execve_args(execve) if execve else None
    proctitle = next((record for record in kernel if record.record_type == "PROCTITLE"), None)
    if proctitle is not None:
        raw = proctitle.raw("proctitle")
        if raw:
            parts = _split_nul(raw)
            process["title"] = " ".join(parts)
            if args is None:
                args = parts
    if args:
        process["args"] = args
    cwd = next((record for record in kernel if record.record_type == "CWD"), None)
    if cwd is not None:
        directory = cwd.text("cwd")
        if directory is not None:
            process["working_directory"] = directory
    if process:
        event["process"] = process

    ids = subject.fields
    for key, dotted in (("uid", "id"), ("euid", "effective.id"), ("gid", "group.id")):
        value = ids.get(key)
        if type(value) is str and value:
            _set(user, dotted, value)
    auid = _audit_id(ids.get("auid"))
    if auid is not None:
        _set(user, "audit.id", auid)
    for key, dotted in (("AUID", "audit.name"), ("EUID", "effective.name"), ("GID", "group.name")):
        value = text(key)
        if value is not None:
            _set(user, dotted, value)
    account = text("acct")
    if primary.record_type in _USER_TARGET_TYPES or primary.record_type in _GROUP_TARGET_TYPES:
        group = primary.record_type in _GROUP_TARGET_TYPES
        if account is not None:
            _set(event if group else user, "group.name" if group else "target.name", account)
        target_id = primary.fields.get("id")
        if type(target_id) is str and target_id and target_id != "?":
            _set(event if group else user, "group.id" if group else "target.id", target_id)
        account = None
    user_name = account if account is not None else text("UID")
    if user_name is not None:
        user["name"] = user_name
    if user:
        event["user"] = user

    paths = [record for record in kernel if record.record_type == "PATH"]
    if paths:
        index = norm.path_index if norm is not None and norm.path_index < len(paths) else 0
        chosen = paths[index]
        for record in paths[index:]:
            nametype = record.fields.get("nametype") or record.fields.get("objtype")
            if nametype != "PARENT" and nametype != "UNKNOWN":
                chosen = record
                break
        file: dict[str, Any] = {}
        path = chosen.text("name")
        if path is not None:
            file["path"] = path
        for key, ecs_key in (("inode", "inode"), ("ouid", "uid"), ("ogid", "gid")):
            value = chosen.fields.get(key)
            if type(value) is str and value:
                file[ecs_key] = value
        mode = chosen.fields.get("mode")
        if type(mode) is str and mode.isascii() and mode.isdigit() and len(mode) <= 12:
            file["mode"] = format(int(mode, 8) & 0o7777, "o").rjust(4, "0")  # permission bits, with setuid etc.
        if file:
            event["file"] = file

    sockaddr = next((record for record in kernel if record.record_type == "SOCKADDR"), None)
    if sockaddr is not None:
        saddr = sockaddr.fields.get("saddr")
        address = _sockaddr(saddr) if type(saddr) is str else {}
        side = "source" if syscall_label in _INCOMING else "destination" if syscall_label in _OUTGOING else None
        if side is not None and ("ip" in address or "path" in address):
            endpoint: dict[str, Any] = {}
            if "ip" in address:
                endpoint["ip"] = address["ip"]
            if "port" in address:
                endpoint["port"] = int(address["port"])
            if "path" in address:
                endpoint["address"] = address["path"]
            event[side] = endpoint
            event["network"] = {"direction": "ingress" if side == "source" else "egress"}
    if "source" not in event:
        addr = text("addr")
        if addr and looks_like_ip(addr):
            event["source"] = {"ip": addr}
            event["network"] = {"direction": "ingress"}

    tags = _tags(subject)
    if tags is None:
        tags = next((found for record in kernel if (found := _tags(record))), None)
    if tags:
        event["tags"] = tags

    log: dict[str, Any] = {"record_type": primary.record_type, "sequence": primary.sequence}
    if syscall is not None:
        if syscall_label is not None:
            log["syscall"] = syscall_label
        arch = syscall.fields.get("arch")
        if type(arch) is str:
            log["arch"] = arch_name(arch) or arch
    session = _audit_id(subject.fields.get("ses"))
    if session is not None:
        log["session"] = session
    if primary.node is not None:
        log["node"] = primary.node
    auditd: dict[str, Any] = {"log": log, "records": [record.fields for record in records]}
    if lost is not None:
        auditd["lost"] = {"count": lost}
    event["auditd"] = auditd
    if "logseal" in event:
        event["error"] = {"message": "auditd: " + NOT_UTF8}
    return event


def lost_event(lost: Lost, ctx: SourceContext) -> Event:
    """An explicit event for serials that never arrived (go-libaudit's `EventsLost`)."""
    span = str(lost.first) if lost.count == 1 else f"{lost.first}-{lost.last}"
    event: Event = {
        "@timestamp": lost.timestamp,
        "event": {"kind": _ALERT, "category": [], "type": ["error"], "action": "audit-lost",
                  "outcome": OUTCOME_UNKNOWN, "dataset": DATASET},
        "host": {"name": ctx.host_name},
        "log": {"file": {"path": ctx.path}, "offset": lost.offset},
        "message": f"auditd: {lost.count} event(s) lost: serial {span} never arrived",
        "auditd": {"lost": {"count": lost.count, "first_sequence": lost.first, "last_sequence": lost.last}},
    }
    if lost.node:
        event["auditd"]["log"] = {"node": lost.node}
    return event


def make_assembler(ctx: SourceContext, options: NormalizeOptions | None = None, *,
                   window_ns: int = 2_000_000_000, max_events: int = 256) -> Assembler:
    """The assembler of auditd logs (see the module docstring and `auditd_assemble`)."""
    parser = RecordParser()

    def parse(line: bytes) -> Parsed | str:
        try:
            record = parser.parse(line.decode("utf-8", "replace"))
        except Exception as exc:  # never raise: the line becomes an unparsed event
            return f"auditd: internal error: {type(exc).__name__}: {str(exc)[:80]}"
        if isinstance(record, str):
            return record
        return Parsed(node=record.node or "", epoch=record.epoch, sequence=record.sequence, record=record,
                      ends=record.record_type == "EOE", alone=_is_alone(record.record_type))

    def build(records: list[Any], lines: list[HeldLine]) -> Event:
        try:
            return build_event(records, lines, ctx)
        except Exception as exc:  # never raise: keep the lines, say what went wrong
            joined = b"\n".join(held.line for held in lines)
            event = unparsed_event(line=joined, offset=lines[0].offset, ctx=ctx, received=lines[0].received,
                                   dataset=DATASET,
                                   error=f"auditd: internal error: {type(exc).__name__}: {str(exc)[:80]}")
            if "logseal" not in event and joined != event["event"]["original"].encode():
                event["logseal"] = {"original_base64": base64.b64encode(joined).decode("ascii")}
            return event

    def unparsed(line: bytes, offset: int, received: str, error: str) -> Event:
        return unparsed_event(line=line, offset=offset, ctx=ctx, received=received, dataset=DATASET,
                              error=error)

    def timestamp_of(record: Any) -> str:
        return str(record.timestamp)

    return ReorderBuffer(parse=parse, build=build, unparsed=unparsed, lost=lambda lost: lost_event(lost, ctx),
                         timestamp_of=timestamp_of, window_ns=window_ns, max_events=max_events)
