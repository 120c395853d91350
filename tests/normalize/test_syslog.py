"""Specification of the syslog normalizer (RFC 3164, RFC 5424), on the shipped auth.log sample."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from agent.normalize import NormalizeOptions, normalizer_for
from agent.normalize.common import SourceContext
from agent.normalize.syslog import make_assembler, make_normalizer

from .helpers import RECEIVED, SAMPLES, assert_valid_event, lines_of

HOST = "node-9"
AUTH_LOG = "/var/log/auth.log"
SYSLOG = "/var/log/syslog"
AUTH_SAMPLE = lines_of(SAMPLES / "auth.log")


def checked(line: bytes, path: str = AUTH_LOG, received: str = RECEIVED, offset: int = 0) -> dict[str, Any]:
    event = normalizer_for("syslog", SourceContext(host_name=HOST, path=path))(line, offset, received)
    assert_valid_event(event, line, offset, host=HOST, path=path)
    return event


def sample(text: str) -> bytes:
    """The first line of the auth.log sample containing `text`."""
    return next(line for _, line in AUTH_SAMPLE if text.encode() in line)


@pytest.mark.parametrize(("offset", "line"), AUTH_SAMPLE, ids=[f"auth@{offset}" for offset, _ in AUTH_SAMPLE])
def test_every_auth_log_sample_line_produces_a_parsed_auth_event(offset: int, line: bytes) -> None:
    event = checked(line, offset=offset)
    assert "error" not in event
    assert event["event"]["dataset"] == "system.auth"
    assert event["log"]["syslog"]["hostname"] == "node-1"
    assert event["process"]["name"]
    assert event["@timestamp"].startswith("2024-03-03T")


def test_rfc3164_line_maps_time_host_program_pid_and_message() -> None:
    event = checked(sample("Server listening on 0.0.0.0"))
    assert event["@timestamp"] == "2024-03-03T08:14:02.000000Z"
    assert event["host"]["name"] == HOST
    assert event["log"]["syslog"] == {"hostname": "node-1"}
    assert event["process"] == {"name": "sshd", "pid": 2101}
    assert event["message"] == "Server listening on 0.0.0.0 port 22."
    assert event["event"]["action"] == "log"
    assert event["event"]["outcome"] == "unknown"


def test_accepted_publickey_is_a_successful_ssh_login() -> None:
    event = checked(sample("Accepted publickey for ops"))
    assert event["event"]["action"] == "ssh_login"
    assert event["event"]["outcome"] == "success"
    assert event["event"]["category"] == ["authentication", "session"]  # as Elastic's system.auth
    assert event["user"] == {"name": "ops"}
    assert event["source"] == {"ip": "192.0.2.10", "port": 50312}
    assert event["system"]["auth"]["ssh"] == {
        "event": "Accepted", "method": "publickey",
        "signature": "ED25519 SHA256:q3Rk0yJ1pW8cVb2n7sXhT4mLzA9eFdGu6iOoPaQwEr0",
    }
    assert event["related"] == {"user": ["ops"], "ip": ["192.0.2.10"]}


def test_failed_password_for_invalid_user_is_a_failed_ssh_login() -> None:
    event = checked(sample("Failed password for invalid user admin"))
    assert event["event"]["action"] == "ssh_login"
    assert event["event"]["outcome"] == "failure"
    assert event["user"] == {"name": "admin"}
    assert event["source"] == {"ip": "203.0.113.45", "port": 41022}
    assert event["system"]["auth"]["ssh"] == {"event": "Failed", "method": "password"}


def test_invalid_user_is_a_failed_ssh_login() -> None:
    event = checked(sample("Invalid user admin"))
    assert event["event"]["action"] == "ssh_login"
    assert event["event"]["outcome"] == "failure"
    assert event["user"] == {"name": "admin"}


def test_preauth_disconnect_names_the_user_and_the_peer() -> None:
    event = checked(sample("Connection closed by invalid user"))
    assert (event["event"]["action"], event["event"]["outcome"]) == ("ssh_disconnect", "unknown")
    assert (event["event"]["category"], event["event"]["type"]) == (["authentication"], ["end"])
    assert event["user"] == {"name": "admin"}
    assert event["source"] == {"ip": "203.0.113.45", "port": 41022}


def test_too_many_authentication_failures_is_a_failed_disconnect() -> None:
    event = checked(sample("Too many authentication failures [preauth]"))
    assert (event["event"]["action"], event["event"]["outcome"]) == ("ssh_disconnect", "failure")
    assert event["user"] == {"name": "root"}


def test_maximum_authentication_attempts_exceeded_is_a_failure() -> None:
    event = checked(sample("maximum authentication attempts exceeded"))
    assert (event["event"]["action"], event["event"]["outcome"]) == ("ssh_max_auth_attempts_exceeded", "failure")
    assert event["source"] == {"ip": "203.0.113.45", "port": 41090}


def test_received_disconnect_ends_the_session() -> None:
    event = checked(sample("Received disconnect from"))
    assert (event["event"]["action"], event["event"]["category"]) == ("ssh_disconnect", ["session"])
    assert event["source"] == {"ip": "198.51.100.23", "port": 60144}


def test_other_sshd_messages_are_plain_logs() -> None:
    event = checked(sample("Server listening on ::"))
    assert event["event"]["action"] == "log"
    assert "user" not in event


def test_sudo_command_names_the_user_the_target_and_the_command() -> None:
    event = checked(sample("COMMAND=/usr/bin/systemctl restart kubelet"))
    assert event["event"]["action"] == "sudo"
    assert event["event"]["outcome"] == "success"
    assert event["event"]["category"] == ["process"]
    assert event["user"] == {"name": "ops", "target": {"name": "root"}, "effective": {"name": "root"}}
    assert event["system"]["auth"]["sudo"] == {
        "tty": "pts/0", "pwd": "/home/ops", "user": "root", "command": "/usr/bin/systemctl restart kubelet",
    }
    assert event["process"] == {"name": "sudo", "command_line": "/usr/bin/systemctl restart kubelet",
                                "working_directory": "/home/ops"}


def test_sudo_command_holding_semicolons_is_kept_whole() -> None:
    line = b"Mar  3 09:02:40 node-1 sudo:      ops : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/sh -c a ; b"
    assert checked(line)["process"]["command_line"] == "/bin/sh -c a ; b"


def test_sudo_pam_session_names_the_actor_and_the_target() -> None:
    event = checked(sample("pam_unix(sudo:session): session opened"))
    assert (event["event"]["action"], event["event"]["category"]) == ("logged-on", ["session"])
    assert event["user"] == {"name": "ops", "id": "1001", "target": {"name": "root", "id": "0"},
                             "effective": {"name": "root"}}


@pytest.mark.parametrize("text", ["3 incorrect password attempts", "user NOT in sudoers"])
def test_refused_sudo_is_a_failure(text: str) -> None:
    event = checked(sample(text))
    assert event["event"]["action"] == "sudo"
    assert event["event"]["outcome"] == "failure"
    assert event["user"]["name"] == "deploy"
    assert event["event"]["category"] == ["authentication"]
    assert "error" in event["system"]["auth"]["sudo"]


def test_su_failure_and_success() -> None:
    failed = checked(sample("FAILED SU (to root)"))
    assert (failed["event"]["action"], failed["event"]["outcome"]) == ("su", "failure")
    assert failed["user"] == {"name": "deploy", "target": {"name": "root"}, "effective": {"name": "root"}}
    event = checked(sample("(to postgres) ops on pts/0"))
    assert (event["event"]["action"], event["event"]["outcome"]) == ("su", "success")
    assert event["user"]["target"] == {"name": "postgres"}


def test_pam_authentication_failure_of_su_names_requester_and_target() -> None:
    event = checked(sample("pam_unix(su:auth): authentication failure"))
    assert (event["event"]["action"], event["event"]["outcome"]) == ("authentication_failure", "failure")
    assert event["user"] == {"name": "deploy", "target": {"name": "root"}}


def test_logind_sessions_start_and_end() -> None:
    start = checked(sample("New session 14 of user ops."))
    assert (start["event"]["action"], start["event"]["type"]) == ("session-started", ["start"])
    assert start["user"] == {"name": "ops"}
    end = checked(sample("Removed session 15."))
    assert (end["event"]["action"], end["event"]["type"]) == ("session-ended", ["end"])


def test_account_management_lines() -> None:
    user = checked(sample("new user: name=ci-runner"))
    assert (user["event"]["action"], user["event"]["category"]) == ("added-user-account", ["iam"])
    assert user["user"] == {"name": "ci-runner", "id": "1003", "target": {"name": "ci-runner", "id": "1003"}}
    assert user["system"]["auth"]["useradd"] == {"home": "/home/ci-runner", "shell": "/bin/bash"}
    group = checked(sample("new group: name=ci-runner"))
    assert (group["event"]["action"], group["group"]) == ("added-group-account", {"name": "ci-runner", "id": "1003"})
    password = checked(sample("password changed for ci-runner"))
    assert (password["event"]["action"], password["event"]["type"]) == ("password-changed", ["user", "change"])
    assert password["user"] == {"name": "ci-runner", "target": {"name": "ci-runner"}}


def test_auth_program_in_the_general_syslog_file_is_system_auth() -> None:
    assert checked(sample("Accepted password for deploy"), path=SYSLOG)["event"]["dataset"] == "system.auth"


def test_cron_in_the_general_syslog_file_is_system_syslog() -> None:
    event = checked(b"Mar  3 09:45:01 node-1 CRON[3703]: (root) CMD (run-parts /etc/cron.hourly)", path=SYSLOG)
    assert event["event"]["dataset"] == "system.syslog"
    assert event["event"]["action"] == "log"


def test_pam_line_in_the_general_syslog_file_is_system_auth() -> None:
    event = checked(sample("CRON[3702]: pam_unix(cron:session): session opened"), path=SYSLOG)
    assert event["event"]["dataset"] == "system.auth"
    assert (event["event"]["action"], event["user"]) == ("logged-on", {"name": "root", "id": "0"})


def test_auth_facility_makes_system_auth() -> None:
    assert checked(b"<86>Mar  3 09:45:00 node-1 app: x", path=SYSLOG)["event"]["dataset"] == "system.auth"
    assert checked(b"<14>Mar  3 09:45:00 node-1 app: x", path=SYSLOG)["event"]["dataset"] == "system.syslog"


@pytest.mark.parametrize("path", ["/var/log/secure", "/var/log/auth.log.1", "/var/log/secure-20240303"])
def test_any_line_of_an_auth_file_is_system_auth(path: str) -> None:
    line = b"Mar  3 09:45:00 node-1 kernel: [ 12.345] eth0: link up"
    assert checked(line, path=path)["event"]["dataset"] == "system.auth"


def test_pri_gives_priority_facility_and_severity() -> None:
    event = checked(b"<38>Mar  3 09:01:17 node-1 sshd[3310]: Accepted password for ops from 192.0.2.10 port 1 ssh2")
    assert event["log"]["syslog"] == {
        "priority": 38, "facility": {"code": 4}, "severity": {"code": 6}, "hostname": "node-1",
    }
    assert event["event"]["action"] == "ssh_login"


def test_line_without_hostname_starts_with_the_tag() -> None:
    event = checked(b"Mar  3 09:01:17 sshd[3310]: Received signal 15; terminating.", path=SYSLOG)
    assert "hostname" not in event.get("log", {}).get("syslog", {})
    assert event["process"] == {"name": "sshd", "pid": 3310}
    assert event["message"] == "Received signal 15; terminating."


def test_line_without_tag_is_all_message() -> None:
    event = checked(b"Mar  3 09:01:17 node-1 something odd happened here", path=SYSLOG)
    assert event["message"] == "something odd happened here"
    assert "process" not in event
    assert event["event"]["dataset"] == "system.syslog"


def test_zero_padded_day_and_fractional_seconds_are_accepted() -> None:
    event = checked(b"Mar 03 09:01:17.25 node-1 app: hi", path=SYSLOG)
    assert event["@timestamp"] == "2024-03-03T09:01:17.250000Z"


def test_rsyslog_high_precision_timestamp_is_converted_to_utc() -> None:
    line = b"2024-03-03T10:01:17.123456+01:00 node-1 sshd[9]: Accepted password for a from 192.0.2.1 port 2 ssh2"
    event = checked(line)
    assert event["@timestamp"] == "2024-03-03T09:01:17.123456Z"
    assert event["process"] == {"name": "sshd", "pid": 9}
    assert event["event"]["action"] == "ssh_login"


# Year inference for RFC 3164 (no year, zone taken as UTC).


def test_year_is_the_year_of_received() -> None:
    event = checked(b"Jan  1 00:20:00 node-1 app: hi", received="2024-01-01T00:10:00.000000Z")
    assert event["@timestamp"] == "2024-01-01T00:20:00.000000Z"


def test_december_line_read_in_january_is_from_the_previous_year() -> None:
    event = checked(b"Dec 31 23:59:00 node-1 app: hi", received="2024-01-01T00:10:00.000000Z")
    assert event["@timestamp"] == "2023-12-31T23:59:00.000000Z"


def test_time_more_than_a_day_ahead_of_received_is_from_the_previous_year() -> None:
    event = checked(b"Jan  2 01:00:00 node-1 app: hi", received="2024-01-01T00:10:00.000000Z")
    assert event["@timestamp"] == "2023-01-02T01:00:00.000000Z"


def test_time_less_than_a_day_ahead_of_received_keeps_the_year() -> None:
    event = checked(b"Jan  1 23:00:00 node-1 app: hi", received="2024-01-01T00:10:00.000000Z")
    assert event["@timestamp"] == "2024-01-01T23:00:00.000000Z"


def test_february_29_falls_back_to_the_leap_year_before() -> None:
    event = checked(b"Feb 29 12:00:00 node-1 app: hi", received="2025-01-10T00:00:00.000000Z")
    assert event["@timestamp"] == "2024-02-29T12:00:00.000000Z"


def test_impossible_date_is_unparsed() -> None:
    event = checked(b"Feb 30 12:00:00 node-1 app: hi")
    assert event["error"]["message"] == "syslog: impossible date 02-30 12:00:00"


# RFC 5424


def test_rfc5424_line_with_structured_data() -> None:
    line = (b'<165>1 2024-03-03T22:14:15.003Z web-3.example.org billing 8710 ID47 '
            b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][origin@1 ip="192.0.2.7"] '
            b'\xef\xbb\xbfinvoice 42 created')
    event = checked(line, path=SYSLOG)
    assert event["@timestamp"] == "2024-03-03T22:14:15.003000Z"
    assert event["message"] == "invoice 42 created"
    assert event["process"] == {"name": "billing", "pid": 8710}
    assert event["host"]["name"] == HOST
    assert event["log"]["syslog"] == {
        "priority": 165, "facility": {"code": 20}, "severity": {"code": 5}, "version": "1",
        "hostname": "web-3.example.org", "appname": "billing", "procid": "8710", "msgid": "ID47",
        "structured_data": {
            "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
            "origin@1": {"ip": "192.0.2.7"},
        },
    }
    assert event["event"]["dataset"] == "system.syslog"


def test_rfc5424_nil_values_are_left_out_and_nil_time_is_received() -> None:
    event = checked(b"<13>1 - - - - - -", path=SYSLOG)
    assert event["@timestamp"] == RECEIVED
    assert event["log"]["syslog"] == {"priority": 13, "facility": {"code": 1}, "severity": {"code": 5},
                                      "version": "1"}
    assert event["message"] == ""
    assert "process" not in event


def test_rfc5424_escaped_structured_data_values_are_unescaped() -> None:
    line = b'<86>1 2024-03-03T10:00:00+02:00 node-1 sshd 77 - [meta@1 note="a \\"quoted\\" \\] \\\\ end"] msg'
    event = checked(line, path=SYSLOG)
    assert event["log"]["syslog"]["structured_data"] == {"meta@1": {"note": 'a "quoted" ] \\ end'}}
    assert event["@timestamp"] == "2024-03-03T08:00:00.000000Z"
    assert event["message"] == "msg"
    assert event["event"]["dataset"] == "system.auth"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"", "syslog: no RFC 3164 or RFC 5424 header"),
        (b"just some text", "syslog: no RFC 3164 or RFC 5424 header"),
        (b"<999>Mar  3 09:01:17 node-1 app: hi", "syslog: bad PRI <999>"),
        (b"<13", "syslog: unterminated PRI"),
        (b"Mar 33 09:01:17 node-1 app: hi", "syslog: impossible date 03-33 09:01:17"),
        (b"Mar  3 9:1:17 node-1 app: hi", "syslog: bad time '9:1:17'"),
        (b"Mar  x 09:01:17 node-1 app: hi", "syslog: bad day 'x'"),
        (b"<13>1 2024-03-03T10:00:00Z host", "syslog: truncated RFC 5424 header"),
        (b"<13>1 yesterday host app - - - msg", "syslog: bad RFC 5424 timestamp 'yesterday'"),
        (b"2024-99-03T10:00:00Z node-1 app: hi", "syslog: bad timestamp '2024-99-03T10:00:00Z'"),
    ],
)
def test_malformed_lines_are_unparsed_with_the_reason(line: bytes, message: str) -> None:
    event = checked(line)
    assert event["error"]["message"] == message
    assert event["event"]["action"] == "unparsed"
    assert event["event"]["dataset"] == "system.syslog"
    assert event["@timestamp"] == RECEIVED


def test_invalid_utf8_inside_a_line_is_parsed_and_its_exact_bytes_kept() -> None:
    line = sample("Accepted password for deploy").replace(b"deploy", b"dep\xc3\x28loy")
    event = checked(line)
    assert event["event"]["action"] == "ssh_login"
    assert event["user"]["name"] == "dep\ufffd(loy"
    assert base64.b64decode(event["logseal"]["original_base64"]) == line
    assert "not valid UTF-8" in event["error"]["message"]


def test_one_normalizer_follows_each_calls_received_time() -> None:
    normalize = normalizer_for("syslog", SourceContext(host_name=HOST, path=AUTH_LOG))
    line = b"Dec 31 23:59:00 node-1 app: hi"
    assert normalize(line, 0, "2023-12-31T23:59:30.000000Z")["@timestamp"] == "2023-12-31T23:59:00.000000Z"
    assert normalize(line, 0, "2025-01-01T00:00:30.000000Z")["@timestamp"] == "2024-12-31T23:59:00.000000Z"


@pytest.mark.parametrize(
    ("line", "message", "problem"),
    [
        (b'<13>1 - host app - - [id a="1 msg', '[id a="1 msg', "unterminated PARAM-VALUE"),
        (b'<13>1 - host app - - [id a="1" msg', '[id a="1" msg', "bad SD-PARAM"),
        (b'<13>1 - host app - - [id a="1"]msg', '[id a="1"]msg', "no space before MSG"),
        (b"<13>1 - host app - - {x} msg", "{x} msg", "neither '-' nor '['"),
        (b'<13>1 - host app - - [ id a="1"] msg', '[ id a="1"] msg', "bad SD-ID"),
        (b'<13>1 - host app - - [id a="1"] [id2 b="2"] msg', '[id a="1"] [id2 b="2"] msg', None),
    ],
)
def test_broken_structured_data_keeps_the_header_and_names_the_problem(
        line: bytes, message: str, problem: str | None) -> None:
    event = checked(line, path=SYSLOG)
    assert event["event"]["action"] == "log"
    assert event["process"] == {"name": "app"}
    assert event["log"]["syslog"]["hostname"] == "host"
    if problem is None:  # RFC 5424 6.3.5 example 3: the second element is MSG text, not SD
        assert event["message"] == '[id2 b="2"] msg'
        assert event["log"]["syslog"]["structured_data"] == {"id": {"a": "1"}}
        assert "error" not in event
    else:
        assert event["message"] == message
        assert event["error"]["message"].startswith("syslog: bad RFC 5424 STRUCTURED-DATA")
        assert problem in event["error"]["message"]
        assert "structured_data" not in event["log"]["syslog"]


def test_repeated_sd_param_becomes_a_list() -> None:
    event = checked(b'<13>1 - h a - - [origin ip="192.0.2.1" ip="192.0.2.129"] m', path=SYSLOG)
    assert event["log"]["syslog"]["structured_data"] == {"origin": {"ip": ["192.0.2.1", "192.0.2.129"]}}


def test_unknown_escape_in_sd_value_keeps_the_backslash() -> None:
    event = checked(b'<13>1 - h a - - [x@1 p="C:\\\\dir\\n"] m', path=SYSLOG)
    assert event["log"]["syslog"]["structured_data"] == {"x@1": {"p": "C:\\dir\\n"}}


def test_nanosecond_rfc5424_time_is_truncated_to_microseconds() -> None:
    event = checked(b"<13>1 2003-08-24T05:14:15.000000003-07:00 h a - - - m", path=SYSLOG)
    assert event["@timestamp"] == "2003-08-24T12:14:15.000000Z"


def test_pri_without_a_timestamp_is_kept_as_message_at_reception_time() -> None:
    event = checked(b"<13>Use the BFG!", path=SYSLOG)
    assert event["@timestamp"] == RECEIVED
    assert event["message"] == "Use the BFG!"
    assert event["log"]["syslog"]["priority"] == 13
    assert "RFC 3164 section 4.3.2" in event["error"]["message"]
    assert event["event"]["action"] == "log"


def test_crlf_line_end_is_not_part_of_the_message() -> None:
    event = checked(b"Mar  3 09:01:17 node-1 app[7]: hello\r", path=SYSLOG)
    assert event["message"] == "hello"
    assert event["event"]["original"] == "Mar  3 09:01:17 node-1 app[7]: hello\r"


def test_timestamp_with_a_year_uses_that_year() -> None:
    event = checked(b"Nov 14 2022 09:13:13 fw-1 app: hi", path=SYSLOG)
    assert event["@timestamp"] == "2022-11-14T09:13:13.000000Z"
    assert event["log"]["syslog"]["hostname"] == "fw-1"


# Zone of RFC 3164 times (NormalizeOptions.syslog_timezone)


def in_zone(zone: str, line: bytes, received: str = RECEIVED) -> dict[str, Any]:
    normalize = make_normalizer(SourceContext(host_name=HOST, path=SYSLOG), NormalizeOptions(syslog_timezone=zone))
    event = normalize(line, 0, received)
    assert_valid_event(event, line, 0, host=HOST, path=SYSLOG)
    return event


def test_rfc3164_time_is_read_in_the_configured_zone() -> None:
    event = in_zone("Europe/Berlin", b"Mar  3 10:01:17 node-1 app: hi")
    assert event["@timestamp"] == "2024-03-03T09:01:17.000000Z"
    summer = in_zone("Europe/Berlin", b"Jul  3 10:01:17 node-1 app: hi", received="2024-07-05T00:00:00.000000Z")
    assert summer["@timestamp"] == "2024-07-03T08:01:17.000000Z"
    assert in_zone("America/New_York", b"Mar  3 10:01:17 node-1 app: hi")["@timestamp"] == (
        "2024-03-03T15:01:17.000000Z")


def test_rfc3339_time_ignores_the_configured_zone() -> None:
    event = in_zone("Asia/Tokyo", b"2024-03-03T10:01:17.5+01:00 node-1 app: hi")
    assert event["@timestamp"] == "2024-03-03T09:01:17.500000Z"


def test_year_inference_across_new_year_happens_in_utc_after_the_zone() -> None:
    # Local Jan 1 00:30 in Berlin is Dec 31 23:30 UTC: the line, read 40 min later, is not in the future.
    event = in_zone("Europe/Berlin", b"Jan  1 00:30:00 node-1 app: hi", received="2023-12-31T23:40:00.000000Z")
    assert event["@timestamp"] == "2023-12-31T23:30:00.000000Z"
    late = in_zone("Europe/Berlin", b"Dec 31 23:59:00 node-1 app: hi", received="2024-01-01T00:10:00.000000Z")
    assert late["@timestamp"] == "2023-12-31T22:59:00.000000Z"


def test_wall_time_repeated_by_dst_fall_back_is_the_earlier_instant() -> None:
    event = in_zone("Europe/Berlin", b"Oct 27 02:30:00 node-1 app: hi", received="2024-10-28T00:00:00.000000Z")
    assert event["@timestamp"] == "2024-10-27T00:30:00.000000Z"  # CEST (+02:00), not CET


def test_wall_time_skipped_by_dst_spring_forward_uses_the_offset_before_the_gap() -> None:
    event = in_zone("Europe/Berlin", b"Mar 31 02:30:00 node-1 app: hi", received="2024-04-01T00:00:00.000000Z")
    assert event["@timestamp"] == "2024-03-31T01:30:00.000000Z"


def test_unknown_zone_is_refused_when_the_normalizer_is_made() -> None:
    with pytest.raises(ValueError, match="syslog_timezone: 'Mars/Olympus' is not a known IANA time zone"):
        make_normalizer(SourceContext(host_name=HOST, path=SYSLOG), NormalizeOptions(syslog_timezone="Mars/Olympus"))


def test_make_assembler_is_one_event_per_line_in_the_configured_zone() -> None:
    ctx = SourceContext(host_name=HOST, path=SYSLOG)
    assembler = make_assembler(ctx, NormalizeOptions(syslog_timezone="Asia/Tokyo"))
    [event] = assembler.feed(b"Mar  3 09:00:00 node-1 app: hi", 5, RECEIVED)
    assert event["@timestamp"] == "2024-03-03T00:00:00.000000Z"
    assert (assembler.flush(RECEIVED, force=True), assembler.held(), assembler.counters()) == ([], [], {})
