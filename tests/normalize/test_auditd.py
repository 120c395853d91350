"""Specification of the auditd normalizer, on go-libaudit's raw logs and its own golden parses."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from agent.normalize import normalizer_for
from agent.normalize.common import SourceContext

from .helpers import DATA, RECEIVED, SAMPLES, assert_valid_event, lines_of

HOST = "node-3"
PATH = "/var/log/audit/audit.log"
CTX = SourceContext(host_name=HOST, path=PATH)
LIBAUDIT = DATA / "go-libaudit"
NORMAL = lines_of(LIBAUDIT / "testdata" / "normal.log")


def checked(line: bytes, offset: int = 0) -> dict[str, Any]:
    event = normalizer_for("auditd", CTX)(line, offset, RECEIVED)
    assert_valid_event(event, line, offset, host=HOST, path=PATH)
    return event


def normal(sequence: int, record_type: str) -> bytes:
    """The line of normal.log with this serial and record type (first one)."""
    marker = f":{sequence}): ".encode()
    return next(line for _, line in NORMAL if marker in line and line.startswith(f"type={record_type} ".encode()))


@pytest.mark.parametrize(("offset", "line"), NORMAL, ids=[f"normal@{offset}" for offset, _ in NORMAL])
def test_every_normal_log_record_produces_a_parsed_event(offset: int, line: bytes) -> None:
    event = checked(line, offset)
    assert "error" not in event
    assert event["event"]["dataset"] == "auditd.log"
    assert event["auditd"]["log"]["record_type"] == line[5:line.index(b" ")].decode()


def test_every_line_of_the_shipped_sample_is_a_parsed_record() -> None:
    lines = lines_of(SAMPLES / "audit.log")
    assert len(lines) == 17
    for offset, line in lines:
        assert "error" not in checked(line, offset)


def test_syscall_record_maps_time_action_sequence_outcome_process_and_user() -> None:
    event = checked(normal(59, "SYSCALL"))
    assert event["@timestamp"] == "2017-04-12T22:48:11.036000Z"
    assert event["event"]["action"] == "syscall"
    assert event["event"]["outcome"] == "success"
    assert event["process"] == {"pid": 13393, "parent": {"pid": 12041}, "name": "grep",
                                "executable": "/usr/bin/grep"}
    assert event["user"] == {"id": "1000"}
    log = event["auditd"]["log"]
    assert log["record_type"] == "SYSCALL"
    assert log["sequence"] == 59
    assert log["syscall"] == "59"
    assert log["key"] == "user_commands"
    assert log["comm"] == "grep"
    assert log["auid"] == "1000"
    assert log["subj"] == "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"


def test_outcome_is_failure_when_success_is_no() -> None:
    event = checked(normal(58, "SYSCALL"))
    assert event["event"]["outcome"] == "failure"
    assert event["auditd"]["log"]["exit"] == "-115"


def test_hex_encoded_values_stay_encoded_under_auditd_log_and_are_decoded_for_ecs() -> None:
    event = checked(normal(58, "SYSCALL"))
    encoded = "2F7573722F62696E2F707974686F6E322E373B3538643163636662202864656C6574656429"
    assert event["auditd"]["log"]["exe"] == encoded
    assert event["process"]["executable"] == "/usr/bin/python2.7;58d1ccfb (deleted)"


def test_execve_arguments_are_unquoted() -> None:
    event = checked(normal(59, "EXECVE"))
    assert event["event"]["action"] == "execve"
    assert event["event"]["outcome"] == "unknown"
    log = event["auditd"]["log"]
    assert (log["argc"], log["a0"], log["a1"], log["a2"]) == ("3", "grep", "--color=auto", "mapping")


def test_record_without_outcome_or_process_has_only_its_pairs() -> None:
    event = checked(normal(59, "CWD"))
    assert event["event"]["outcome"] == "unknown"
    assert event["auditd"]["log"] == {"record_type": "CWD", "sequence": 59, "cwd": "/home/andrew_kroh"}
    assert "process" not in event and "user" not in event


def test_node_prefix_is_accepted_and_kept() -> None:
    line = b"node=worker-2 " + normal(59, "SYSCALL")
    event = checked(line)
    assert event["auditd"]["log"]["node"] == "worker-2"
    assert event["host"]["name"] == HOST
    assert event["event"]["action"] == "syscall"
    assert event["auditd"]["log"]["sequence"] == 59


RHEL7 = lines_of(LIBAUDIT / "auparse" / "audit-rhel7.log")


def rhel7(record_type: str) -> bytes:
    return next(line for _, line in RHEL7 if line.startswith(f"type={record_type} ".encode()))


def test_user_space_msg_pairs_are_flattened_without_overwriting_outer_pairs() -> None:
    event = checked(rhel7("USER_LOGIN"))
    log = event["auditd"]["log"]
    assert log["pid"] == "1298" and log["uid"] == "0"
    assert log["op"] == "login"
    assert log["terminal"] == "/dev/pts/0"
    assert log["res"] == "success"
    assert "msg" not in log
    assert event["event"]["outcome"] == "success"
    assert event["event"]["category"] == ["authentication"]
    assert event["source"] == {"ip": "96.241.146.97"}


def test_failed_user_login_with_hex_account_is_a_failure_for_that_account() -> None:
    line = lines_of(LIBAUDIT / "auparse" / "audit-ubuntu16.log")[0][1]
    event = checked(line)
    assert event["event"]["action"] == "user_login"
    assert event["event"]["outcome"] == "failure"
    assert event["user"] == {"id": "0", "name": "(invalid user)"}
    assert event["auditd"]["log"]["acct"] == "28696E76616C6964207573657229"
    assert event["source"] == {"ip": "179.38.151.221"}


def test_res_failed_in_user_err_is_a_failure() -> None:
    event = checked(rhel7("USER_ERR"))
    assert event["event"]["outcome"] == "failure"
    assert event["auditd"]["log"]["acct"] == "?"
    assert "name" not in event.get("user", {})


def test_old_pam_message_format_is_parsed() -> None:
    line = lines_of(LIBAUDIT / "auparse" / "test2.log")[7][1]
    assert b"(hostname=?, addr=?, terminal=cron res=success)" in line
    event = checked(line)
    log = event["auditd"]["log"]
    assert (log["hostname"], log["addr"], log["terminal"], log["res"]) == ("?", "?", "cron", "success")
    assert event["event"]["outcome"] == "success"
    assert event["user"]["name"] == "root"


def test_old_login_format_keeps_old_and_new_ids_apart() -> None:
    line = next(line for _, line in lines_of(LIBAUDIT / "auparse" / "test2.log") if line.startswith(b"type=LOGIN"))
    log = checked(line)["auditd"]["log"]
    assert (log["old_auid"], log["new_auid"]) == ("4294967295", "0")


def test_config_change_res_1_is_a_success() -> None:
    event = checked(rhel7("CONFIG_CHANGE"))
    assert event["event"]["outcome"] == "success"
    assert event["event"]["category"] == ["configuration"]


def test_quoted_value_with_spaces_is_kept_whole() -> None:
    line = (b"type=USER_AVC msg=audit(1700000000.5:7): pid=1 uid=0 auid=4294967295 ses=4294967295 "
            b"msg='avc:  denied  { status } for auid=n/a uid=0 gid=0 cmdline=\"/usr/bin/systemctl status x y\" "
            b"tclass=service permissive=0  exe=\"/usr/lib/systemd/systemd\" sauid=0 hostname=? addr=? terminal=?'")
    event = checked(line)
    log = event["auditd"]["log"]
    assert log["cmdline"] == "/usr/bin/systemctl status x y"
    assert log["tclass"] == "service"
    assert event["@timestamp"] == "2023-11-14T22:13:20.500000Z"


def golden_cases() -> list[Any]:
    cases = []
    for log_path in sorted((LIBAUDIT / "auparse").glob("*.log")):
        golden = json.loads(Path(f"{log_path}.golden").read_text())
        lines = lines_of(log_path)
        assert len(lines) == len(golden)
        for (offset, line), expected in zip(lines, golden, strict=True):
            cases.append(pytest.param(line, offset, expected, id=f"{log_path.name}@{offset}"))
    return cases


@pytest.mark.parametrize(("line", "offset", "expected"), golden_cases())
def test_agrees_with_go_libaudit_on_every_record(line: bytes, offset: int, expected: Any) -> None:
    event = checked(line, offset)
    if expected is None:  # go-libaudit rejects it too
        assert event["event"]["action"] == "unparsed"
        assert event["error"]["message"]
        return
    assert "error" not in event
    assert event["event"]["action"] == expected["record_type"]
    assert event["auditd"]["log"]["sequence"] == expected["sequence"]
    theirs = dt.datetime.fromisoformat(expected["@timestamp"].replace("Z", "+00:00"))
    ours = dt.datetime.fromisoformat(event["@timestamp"].replace("Z", "+00:00"))
    assert ours == theirs
    data = expected.get("data", {})
    result = data.get("result")
    if result is not None:
        assert event["event"]["outcome"] == {"success": "success", "fail": "failure"}[result]
    if "pid" in data:
        assert event["process"]["pid"] == int(data["pid"])
    if "acct" in data and data["acct"] != "?":
        assert event["user"]["name"] == data["acct"]
    if "exe" in data:
        assert event["process"]["executable"] == data["exe"]


def test_record_without_audit_header_is_unparsed() -> None:
    line = next(line for _, line in RHEL7 if line.startswith(b"type=UNKNOWN[1329]"))
    event = checked(line)
    assert event["event"]["action"] == "unparsed"
    assert event["error"]["message"] == "auditd: not an audit record: no 'type=TYPE msg=audit(' header"
    assert event["@timestamp"] == RECEIVED


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"", "auditd: not an audit record: no 'type='"),
        (b"hello world", "auditd: not an audit record: no 'type='"),
        (b"node=lonely", "auditd: nothing after 'node='"),
        (b"type=SYSCALL msg=audit(1492037291.036:59", "auditd: unterminated 'msg=audit(' header"),
        (b"type=SYSCALL msg=audit(abc:59): pid=1", "auditd: bad 'msg=audit(EPOCH:SERIAL)' value 'abc:59'"),
        (b"type=SYSCALL msg=audit(1492037291.036): pid=1",
         "auditd: bad 'msg=audit(EPOCH:SERIAL)' value '1492037291.036'"),
        (b"type=SYSCALL msg=audit(999999999999.0:1): pid=1", "auditd: epoch 999999999999 is out of range"),
        (b"type=SYSCALL msg=audit(1\xd9\xa2.0:1): pid=1", "auditd: bad 'msg=audit(EPOCH:SERIAL)' value '1\u0662.0:1'"),
    ],
)
def test_malformed_records_are_unparsed_with_the_reason(line: bytes, message: str) -> None:
    event = checked(line)
    assert event["error"]["message"] == message
    assert event["event"]["dataset"] == "auditd.log"


def test_invalid_utf8_inside_a_record_is_parsed_and_its_exact_bytes_kept() -> None:
    line = normal(59, "SYSCALL").replace(b'comm="grep"', b'comm="gr\xffep"')
    event = checked(line)
    assert event["event"]["action"] == "syscall"
    assert event["process"]["name"] == "gr\ufffdep"
    assert base64.b64decode(event["logseal"]["original_base64"]) == line
    assert "not valid UTF-8" in event["error"]["message"]


def test_timestamps_are_exact_to_the_logged_digits() -> None:
    line = b"type=CWD msg=audit(1492037291.1:60):  cwd=\"/\""
    assert checked(line)["@timestamp"] == "2017-04-12T22:48:11.100000Z"
    line = b"type=CWD msg=audit(1492037291:60):  cwd=\"/\""
    assert checked(line)["@timestamp"] == "2017-04-12T22:48:11.000000Z"
