"""Specification of the auditd assembler: records -> events, the reorder window, held lines, loss.

Grouping is checked against go-libaudit's own reassembler expectations (`reassembler_test.go` on
the same logs); the ECS mapping of whole events against its golden events in test_auditd_oracle.py.
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.normalize.assemble import Assembler, HeldLine, NormalizeOptions
from agent.normalize.auditd import make_assembler
from agent.normalize.common import SourceContext

from .helpers import DATA, RECEIVED, lines_of

CTX = SourceContext(host_name="node-3", path="/var/log/audit/audit.log")
TESTDATA = DATA / "go-libaudit" / "testdata"
NORMAL = lines_of(TESTDATA / "normal.log")
LATER = "2024-03-05T10:00:01.500000Z"  # 1.5 s after RECEIVED: inside the 2 s window
DUE = "2024-03-05T10:00:02.000001Z"  # just over 2 s after RECEIVED


def assembler(**kwargs: Any) -> Assembler:
    return make_assembler(CTX, NormalizeOptions(), **kwargs)


def feed_all(lines: list[tuple[int, bytes]], received: str = RECEIVED, **kwargs: Any) -> list[dict[str, Any]]:
    a = assembler(**kwargs)
    events = [event for offset, line in lines for event in a.feed(line, offset, received)]
    events += a.flush(received, force=True)
    assert a.held() == []
    return events


def records(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(sequence, number of records) of each assembled event, in the order returned."""
    return [(e["auditd"]["log"]["sequence"], len(e["auditd"]["records"])) for e in events
            if e["event"]["action"] != "audit-lost"]


def original_lines(event: dict[str, Any]) -> list[bytes]:
    if "logseal" in event:
        return base64.b64decode(event["logseal"]["original_base64"]).split(b"\n")
    return event["event"]["original"].encode().split(b"\n")


def rec(record_type: str, serial: int, body: str, epoch: str = "1700000000.123") -> bytes:
    return f"type={record_type} msg=audit({epoch}:{serial}): {body}".encode()


SYSCALL = rec("SYSCALL", 7, 'arch=c000003e syscall=59 success=yes exit=0 items=1 ppid=1 pid=42 auid=1000 '
                            'uid=0 gid=0 euid=0 ses=3 comm="ls" exe="/usr/bin/ls" key="exec"')
PATH = rec("PATH", 7, 'item=0 name="/usr/bin/ls" inode=5 dev=08:01 mode=0100755 ouid=0 ogid=0 nametype=NORMAL')
EOE = rec("EOE", 7, "")
USER_LOGIN = rec("USER_LOGIN", 8, "pid=1 uid=0 auid=1000 ses=3 msg='op=login acct=\"alice\" exe=\"/usr/sbin/sshd\" "
                                  "hostname=? addr=10.0.0.9 terminal=ssh res=failed'")


# -- grouping, as go-libaudit's reassembler ------------------------------------------------------

def test_normal_log_makes_the_five_events_go_libaudit_makes() -> None:
    assert records(feed_all(NORMAL)) == [(58, 2), (59, 5), (60, 5), (61, 4), (62, 1)]


def test_out_of_order_records_are_regrouped_into_the_same_events() -> None:
    events = feed_all(lines_of(TESTDATA / "out_of_order.log"))
    assert sorted(records(events)) == [(58, 2), (59, 5), (60, 5), (61, 4), (62, 1)]
    normal = {e["auditd"]["log"]["sequence"]: e for e in feed_all(NORMAL)}
    for event in events:
        expected = normal[event["auditd"]["log"]["sequence"]]
        for name in ("process", "user", "file", "tags", "@timestamp"):
            assert event.get(name) == expected.get(name)
        assert event["event"]["action"] == expected["event"]["action"]


def test_serial_gaps_become_an_explicit_lost_event() -> None:
    events = feed_all(lines_of(TESTDATA / "lost_messages.log"))
    assert records(events) == [(49, 2), (59, 5), (60, 5), (61, 4), (62, 1)]
    lost = [e for e in events if e["event"]["action"] == "audit-lost"]
    assert len(lost) == 1
    assert lost[0]["auditd"]["lost"] == {"count": 9, "first_sequence": 50, "last_sequence": 58}
    assert lost[0]["event"]["kind"] == "alert"
    assert lost[0]["event"]["type"] == ["error"]
    assert lost[0]["message"] == "auditd: 9 event(s) lost: serial 50-58 never arrived"
    assert lost[0]["@timestamp"] == "2017-04-12T22:48:11.036000Z"  # the first record after the gap


def test_serial_rollover_is_not_a_loss() -> None:
    events = feed_all(lines_of(TESTDATA / "rollover.log"))
    assert records(events) == [(4294967294, 1), (4294967295, 1), (0, 1), (1, 1), (2, 1)]


def test_a_late_record_fills_its_gap_within_the_window() -> None:
    a = assembler()
    a.feed(rec("USER_CMD", 1, "pid=1 uid=0 msg='cmd=6C73 res=success'"), 0, RECEIVED)
    a.feed(rec("USER_CMD", 3, "pid=1 uid=0 msg='cmd=6C73 res=success'"), 100, RECEIVED)
    a.feed(rec("USER_CMD", 2, "pid=1 uid=0 msg='cmd=6C73 res=success'"), 200, LATER)
    assert a.flush(DUE, force=True) == []


def test_a_gap_still_open_after_the_window_is_reported_by_flush() -> None:
    a = assembler()
    a.feed(rec("USER_CMD", 1, "pid=1 uid=0 msg='cmd=6C73 res=success'"), 0, RECEIVED)
    a.feed(rec("USER_CMD", 5, "pid=1 uid=0 msg='cmd=6C73 res=success'"), 100, RECEIVED)
    assert a.flush(LATER) == []
    (lost,) = a.flush(DUE)
    assert lost["auditd"]["lost"]["count"] == 3
    assert lost["log"]["offset"] == 100


def test_a_restart_of_the_serial_counter_is_not_a_loss() -> None:
    lines = [rec("USER_CMD", 900000000, "res=success"), rec("USER_CMD", 1, "res=success")]
    assert [e["event"]["action"] for e in feed_all(list(enumerate(lines)))] == ["ran-command", "ran-command"]


def test_eoe_completes_an_event_at_once() -> None:
    a = assembler()
    assert a.feed(SYSCALL, 0, RECEIVED) == []
    assert a.feed(PATH, 300, RECEIVED) == []
    assert [h.offset for h in a.held()] == [0, 300]
    (event,) = a.feed(EOE, 500, RECEIVED)
    assert a.held() == []
    assert event["event"]["original"] == b"\n".join([SYSCALL, PATH, EOE]).decode()
    assert [r["record_type"] for r in event["auditd"]["records"]] == ["SYSCALL", "PATH", "EOE"]
    assert event["log"]["offset"] == 0


def test_user_space_records_are_events_at_once() -> None:
    a = assembler()
    (event,) = a.feed(USER_LOGIN, 0, RECEIVED)
    assert a.held() == []
    assert event["event"]["action"] == "logged-in"
    assert event["event"]["outcome"] == "failure"
    assert event["event"]["category"] == ["authentication"] and event["event"]["type"] == ["start"]
    assert event["user"] == {"id": "0", "audit": {"id": "1000"}, "name": "alice"}
    assert event["source"] == {"ip": "10.0.0.9"}


def test_an_event_without_eoe_waits_for_the_window_then_flush_returns_it() -> None:
    a = assembler()
    a.feed(SYSCALL, 0, RECEIVED)
    a.feed(PATH, 300, RECEIVED)
    assert a.flush(LATER) == []
    assert len(a.held()) == 2
    (event,) = a.flush(DUE)
    assert event["auditd"]["log"]["sequence"] == 7
    assert a.held() == []


def test_feeding_a_later_line_also_returns_the_events_that_became_due() -> None:
    a = assembler()
    a.feed(SYSCALL, 0, RECEIVED)
    events = a.feed(USER_LOGIN, 300, DUE)
    assert [e["auditd"]["log"]["sequence"] for e in events] == [8, 7]


def test_at_most_256_events_are_held_and_the_oldest_goes_first() -> None:
    a = assembler()
    for serial in range(256):
        assert a.feed(rec("SYSCALL", serial, "syscall=1 success=yes"), serial * 100, RECEIVED) == []
    (oldest,) = a.feed(rec("SYSCALL", 256, "syscall=1 success=yes"), 25600, RECEIVED)
    assert oldest["auditd"]["log"]["sequence"] == 0
    assert len(a.held()) == 256
    assert a.counters()["evicted_full"] == 1


def test_held_lists_the_lines_of_unfinished_events_in_feed_order() -> None:
    a = assembler()
    other = rec("SYSCALL", 9, "syscall=2 success=no")
    a.feed(SYSCALL, 0, RECEIVED)
    a.feed(other, 100, LATER)
    a.feed(PATH, 200, LATER)
    assert a.held() == [HeldLine(SYSCALL, 0, RECEIVED), HeldLine(other, 100, LATER), HeldLine(PATH, 200, LATER)]
    a.feed(EOE, 300, LATER)
    assert a.held() == [HeldLine(other, 100, LATER)]


def test_held_lines_fed_again_after_a_crash_give_the_same_events() -> None:
    first = assembler()
    events = [e for offset, line in NORMAL[:9] for e in first.feed(line, offset, RECEIVED)]
    restarted = assembler()
    for held in first.held():
        events += restarted.feed(held.line, held.offset, held.received)
    events += [e for offset, line in NORMAL[9:] for e in restarted.feed(line, offset, RECEIVED)]
    events += restarted.flush(RECEIVED, force=True)
    assert events == feed_all(NORMAL)


def test_records_of_other_nodes_never_join() -> None:
    events = feed_all([(0, b"node=a " + SYSCALL), (100, b"node=b " + PATH), (200, b"node=a " + EOE)])
    assert sorted((e["auditd"]["log"]["node"], len(e["auditd"]["records"])) for e in events) == [("a", 2), ("b", 1)]


def test_a_line_that_is_not_a_record_is_an_unparsed_event_at_once() -> None:
    a = assembler()
    a.feed(SYSCALL, 0, RECEIVED)
    (event,) = a.feed(b"audit: backlog limit exceeded", 300, RECEIVED)
    assert event["event"]["action"] == "unparsed"
    assert event["error"]["message"] == "auditd: not an audit record: no 'type='"
    assert event["event"]["original"] == "audit: backlog limit exceeded"
    assert [h.line for h in a.held()] == [SYSCALL]


def test_records_missing_their_syscall_still_make_one_event() -> None:
    (event,) = feed_all([(0, PATH), (100, rec("CWD", 7, 'cwd="/root"')), (200, EOE)])
    assert event["auditd"]["log"]["record_type"] == "PATH"
    assert event["file"]["path"] == "/usr/bin/ls"
    assert event["process"] == {"working_directory": "/root"}
    assert event["event"]["outcome"] == "unknown"


def test_a_record_reporting_lost_events_is_an_audit_lost_alert() -> None:
    (event,) = feed_all([(0, rec("DAEMON_ERR", 3, "op=dispatch lost=12 res=failed"))])
    assert event["event"]["action"] == "audit-lost"
    assert event["event"]["kind"] == "alert"
    assert event["auditd"]["lost"] == {"count": 12}


# -- the event: ECS mapping and decoding ---------------------------------------------------------

def test_an_execve_event_maps_process_user_file_and_keeps_every_record() -> None:
    event = next(e for e in feed_all(NORMAL) if e["auditd"]["log"]["sequence"] == 59)
    assert event["@timestamp"] == "2017-04-12T22:48:11.036000Z"
    assert event["event"]["action"] == "executed"
    assert event["event"]["category"] == ["process"] and event["event"]["type"] == ["start"]
    assert event["event"]["outcome"] == "success"
    assert event["process"] == {"pid": 13393, "parent": {"pid": 12041}, "name": "grep", "executable": "/usr/bin/grep",
                                "args": ["grep", "--color=auto", "mapping"],
                                "working_directory": "/home/andrew_kroh"}
    assert event["user"] == {"id": "1000", "audit": {"id": "1000"}, "effective": {"id": "1000"},
                             "group": {"id": "1001"}}
    assert event["file"] == {"path": "/usr/bin/grep", "inode": "2512", "uid": "0", "gid": "0", "mode": "0755"}
    assert event["tags"] == ["user_commands"]
    assert event["auditd"]["log"] == {"record_type": "SYSCALL", "sequence": 59, "syscall": "execve",
                                      "arch": "x86_64", "session": "802"}
    assert [r["record_type"] for r in event["auditd"]["records"]] == ["SYSCALL", "EXECVE", "CWD", "PATH", "PATH"]
    assert event["auditd"]["records"][1]["a2"] == "mapping"
    lines = [line for _, line in NORMAL if b":59): " in line]
    assert event["event"]["original"] == b"\n".join(lines).decode()
    assert event["log"]["offset"] == next(offset for offset, line in NORMAL if b":59): " in line)


def test_a_connect_event_has_its_destination_from_sockaddr() -> None:
    event = next(e for e in feed_all(NORMAL) if e["auditd"]["log"]["sequence"] == 58)
    assert event["event"]["action"] == "connected-to"
    assert event["event"]["outcome"] == "failure"
    assert event["destination"] == {"ip": "169.254.169.254", "port": 80}
    assert event["network"] == {"direction": "egress"}
    assert event["process"]["executable"] == "/usr/bin/python2.7;58d1ccfb (deleted)"  # hex-decoded
    assert event["user"]["audit"] == {"id": "unset"}  # auid 4294967295
    assert "tags" not in event  # key=(null)


def test_hex_proctitle_gives_title_and_args_and_hex_paths_are_decoded() -> None:
    title = b"bash\x00-c\x00echo hi there".hex().upper()
    lines = [
        rec("SYSCALL", 7, "arch=c00000b7 syscall=221 success=yes exit=0 pid=5 uid=0 comm=6D7920636D64 "
                          "exe=\"/bin/bash\""),
        rec("CWD", 7, "cwd=2F746D702F6120646972"),
        rec("PATH", 7, "item=0 name=2F746D702F6120646972 nametype=PARENT"),
        rec("PATH", 7, "item=1 name=2F746D702F6120646972 nametype=NORMAL"),
        rec("PROCTITLE", 7, f"proctitle={title}"),
        rec("EOE", 7, ""),
    ]
    (event,) = feed_all(list(enumerate(lines)))
    assert event["auditd"]["log"]["syscall"] == "execve" and event["auditd"]["log"]["arch"] == "aarch64"
    assert event["event"]["action"] == "executed"
    assert event["process"]["title"] == "bash -c echo hi there"
    assert event["process"]["args"] == ["bash", "-c", "echo hi there"]
    assert event["process"]["name"] == "my cmd"
    assert event["process"]["working_directory"] == "/tmp/a dir"
    assert event["file"]["path"] == "/tmp/a dir"


def test_execve_arguments_split_into_chunks_are_joined() -> None:
    big = "x" * 10 + " y"
    lines = [
        SYSCALL,
        rec("EXECVE", 7, 'argc=3 a0="sh" a1=2D63'),
        rec("EXECVE", 7, f"a2_len={len(big)} a2[0]={big[:6].encode().hex()} a2[1]={big[6:].encode().hex()}"),
        EOE,
    ]
    (event,) = feed_all(list(enumerate(lines)))
    assert event["process"]["args"] == ["sh", "-c", big]


def test_multiple_rule_keys_become_tags() -> None:
    line = SYSCALL.replace(b'key="exec"', b"key=" + b"exec\x0164bit".hex().upper().encode())
    (event,) = feed_all([(0, line), (100, EOE)])
    assert event["tags"] == ["exec", "64bit"]


def test_invalid_utf8_is_kept_exactly_for_the_whole_event() -> None:
    bad = SYSCALL.replace(b'comm="ls"', b'comm="l\xffs"')
    (event,) = feed_all([(0, bad), (100, PATH), (200, EOE)])
    assert base64.b64decode(event["logseal"]["original_base64"]) == b"\n".join([bad, PATH, EOE])
    assert "not valid UTF-8" in event["error"]["message"]
    assert event["process"]["name"] == "l\ufffds"


def test_the_per_record_normalizer_is_unchanged() -> None:
    from agent.normalize.auditd import make_normalizer

    event = make_normalizer(CTX)(SYSCALL, 0, RECEIVED)
    assert event["event"]["action"] == "syscall"
    assert event["auditd"]["log"]["comm"] == "ls"


# -- properties ----------------------------------------------------------------------------------

EVENT_LINES: list[list[bytes]] = []
for _, _line in NORMAL:
    _serial = _line.split(b":", 2)[1].split(b")")[0]
    if not EVENT_LINES or EVENT_LINES[-1][0].split(b":", 2)[1].split(b")")[0] != _serial:
        EVENT_LINES.append([])
    EVENT_LINES[-1].append(_line)


def _signature(events: list[dict[str, Any]]) -> Counter[bytes]:
    return Counter(b"\n".join(sorted(original_lines(e))) for e in events if e["event"]["action"] != "audit-lost")


WITH_EOE = [[*lines, b"type=EOE " + lines[0].split(b" ")[1]] for lines in EVENT_LINES]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.permutations([index for index, lines in enumerate(WITH_EOE) for _ in lines]))
def test_any_interleaving_of_events_ending_in_eoe_gives_the_same_events_at_their_eoe(order: list[int]) -> None:
    pending = [list(lines) for lines in WITH_EOE]
    a = assembler()
    events = [event for offset, index in enumerate(order) for event in a.feed(pending[index].pop(0), offset, RECEIVED)]
    assert a.held() == []  # every event was returned at its EOE, none waits for the window
    sequential = list(enumerate(line for lines in WITH_EOE for line in lines))
    assert _signature(events) == _signature(feed_all(sequential))
    assert len(events) == len(WITH_EOE)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.permutations([line for _, line in NORMAL]))
def test_any_shuffle_within_the_window_gives_the_same_events(shuffled: list[bytes]) -> None:
    events = feed_all(list(enumerate(shuffled)))
    assert _signature(events) == _signature(feed_all(NORMAL))
    assert not [e for e in events if e["event"]["action"] == "audit-lost"]


_LINES = st.one_of(
    st.sampled_from([line for _, line in NORMAL] + [SYSCALL, PATH, EOE, USER_LOGIN]),
    st.binary(max_size=120),
    st.builds(lambda line, cut: line[:cut], st.sampled_from([SYSCALL, PATH, USER_LOGIN]), st.integers(0, 200)),
    st.builds(lambda serial, body: rec("SYSCALL", serial, body.decode("utf-8", "replace")),
              st.integers(0, 2**32 + 5), st.binary(max_size=60)),
    st.builds(lambda n: rec("EOE", n, ""), st.integers(0, 5)),
).map(lambda line: line.replace(b"\n", b" "))
_STEPS = st.lists(st.tuples(_LINES, st.sampled_from([RECEIVED, LATER, DUE, "not a time"]), st.booleans()),
                  max_size=30)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(_STEPS, st.integers(1, 4))
def test_any_bytes_in_every_line_is_in_exactly_one_event_or_held(steps: list[tuple[bytes, str, bool]],
                                                                  cap: int) -> None:
    a = assembler(max_events=cap)
    fed: Counter[bytes] = Counter()
    out: Counter[bytes] = Counter()
    for offset, (line, received, flush) in enumerate(steps):
        fed[line] += 1
        for event in a.feed(line, offset, received) + (a.flush(received) if flush else []):
            if event["event"]["action"] != "audit-lost":
                out.update(original_lines(event))
        assert out + Counter(h.line for h in a.held()) == fed
    for event in a.flush(DUE, force=True):
        if event["event"]["action"] != "audit-lost":
            out.update(original_lines(event))
    assert a.held() == [] and out == fed
