"""journald: `journalctl -o export` / `-o json` streams become one ECS event per journal entry.

The oracle is Filebeat's journald input: its expected events for `input-multiline-parser.export`
(tests/data/journald/, see PROVENANCE.md). Every field both sides produce is compared; the
disagreements are exactly those listed in tests/data/journald/DISAGREEMENTS.md.
"""

from __future__ import annotations

import base64
import datetime as dt
import struct
from collections import Counter
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.normalize.assemble import NormalizeOptions
from agent.normalize.common import Event, SourceContext
from agent.normalize.journald import MAX_ENTRY_BYTES, make_assembler

from .helpers import DATA, RECEIVED, assert_canonical_timestamp

JOURNALD = DATA / "journald"
HOST = "node-1"
PATH = "journalctl://system"
LATER = "2024-03-05T10:00:09.000000Z"


def assembler() -> Any:
    return make_assembler(SourceContext(host_name=HOST, path=PATH), NormalizeOptions())


def split_stream(stream: bytes) -> list[tuple[int, bytes]]:
    """(offset, line) for each line the tailer would feed: the bytes between two newlines."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    pieces = stream.split(b"\n")
    for piece in pieces[:-1]:  # the bytes after the last newline are not a line yet
        out.append((offset, piece))
        offset += len(piece) + 1
    return out


def run(stream: bytes, *, force: bool = True) -> tuple[list[Event], Any]:
    journal = assembler()
    events: list[Event] = []
    for offset, line in split_stream(stream):
        events += journal.feed(line, offset, RECEIVED)
    if force:
        events += journal.flush(LATER, force=True)
    return events, journal


def original_bytes(event: Event) -> bytes:
    exact = event.get("logseal", {}).get("original_base64")
    return base64.b64decode(exact) if exact is not None else str(event["event"]["original"]).encode()


def binary_field(key: bytes, value: bytes) -> bytes:
    return key + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"


# -- the oracle ---------------------------------------------------------------------------------------


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


def compare_with_filebeat() -> tuple[int, list[str]]:
    """(fields compared, disagreements as 'entry N: field: ours != filebeat')."""
    expected = orjson.loads((JOURNALD / "input-multiline-parser-events.json").read_bytes())
    events, _ = run((JOURNALD / "input-multiline-parser.export").read_bytes())
    assert len(events) == len(expected)
    compared = 0
    disagreements: list[str] = []
    for number, (ours, theirs) in enumerate(zip(events, expected, strict=True)):
        when = dt.datetime.fromisoformat(theirs["Timestamp"])
        compared += 1
        if dt.datetime.fromisoformat(ours["@timestamp"]) != when:
            disagreements.append(f"entry {number}: @timestamp: {ours['@timestamp']} != {theirs['Timestamp']}")
        flat = flatten(ours)
        for name, value in flatten(theirs["Fields"]).items():
            compared += 1
            if flat.get(name) != value:
                disagreements.append(f"entry {number}: {name}: {flat.get(name)!r} != {value!r}")
    return compared, disagreements


def listed_disagreements() -> list[str]:
    text = (JOURNALD / "DISAGREEMENTS.md").read_text()
    return [line[2:].split(" — ")[0].strip("`") for line in text.splitlines() if line.startswith("- `entry ")]


def test_agrees_with_filebeat_on_at_least_99_percent_of_compared_fields() -> None:
    compared, disagreements = compare_with_filebeat()
    assert compared >= 240
    assert (compared - len(disagreements)) / compared >= 0.99
    assert sorted(disagreements) == sorted(listed_disagreements())


# -- the mapping --------------------------------------------------------------------------------------


def test_an_export_entry_maps_to_ecs_and_keeps_the_cursor() -> None:
    events, journal = run((JOURNALD / "input-multiline-parser.export").read_bytes(), force=False)
    assert journal.held() == []
    first = events[0]
    assert first["@timestamp"] == "2021-11-22T17:10:04.051729Z"
    assert first["event"]["dataset"] == "journald"
    assert first["host"] == {"name": HOST, "hostname": "x-wing", "id": "a6a19d57efcf4bf38705c63217a63ba3"}
    assert first["message"] == "pam_unix(sudo:session): session closed for user root"
    assert first["process"]["pid"] == 2084586
    assert first["process"]["name"] == "sudo"
    assert first["process"]["executable"] == "/usr/bin/sudo"
    assert first["process"]["command_line"] == "sudo journalctl --user --rotate"
    assert first["user"] == {"id": "1000", "group": {"id": "0"}}
    assert first["systemd"]["unit"] == "session-1.scope"
    assert first["log"]["syslog"] == {"priority": 6, "severity": {"code": 6}, "facility": {"code": 10},
                                      "appname": "sudo", "hostname": "x-wing"}
    assert first["journald"]["custom"] == {"syslog_timestamp": "Nov 22 18:10:04 "}
    assert first["journald"]["cursor"].startswith("s=c358e9ae507b4a9e96832b98b445558c;i=6a9d7;")
    assert events[1]["systemd"]["user_unit"] == "init.scope"
    assert events[1]["message_id"] == "39f53479d3a045ac8e11786248231fbf"
    for event in events:
        assert_canonical_timestamp(event["@timestamp"])
        assert "error" not in event
        assert event["journald"]["cursor"]


def test_originals_rejoined_are_the_stream_and_offsets_are_each_entrys_first_line() -> None:
    for name in ("input-multiline-parser.export", "multiple-boots.export"):
        stream = (JOURNALD / name).read_bytes()
        events, journal = run(stream)
        assert journal.held() == []
        assert b"\n".join(original_bytes(event) for event in events) + b"\n" == stream
        for event in events:
            assert stream[event["log"]["offset"]:].startswith(original_bytes(event))


def test_a_line_that_cannot_start_an_entry_is_an_event_of_its_own() -> None:
    events, _ = run((JOURNALD / "multiple-boots.export").read_bytes())
    unparsed = [event for event in events if event["event"]["action"] == "unparsed"]
    assert [event["event"]["original"][:27] for event in unparsed] == ["Sep 17 11:26:36 Debian12 ke"] * 2
    assert all(event["error"]["message"].startswith("journald: ") for event in unparsed)
    entries = [event for event in events if event["event"]["action"] == "log"]
    assert len(entries) == 6
    assert {event["journald"]["host"]["boot_id"] for event in entries} == {
        "0ffe5f74a4bd49ca8597eb05fe1a512a", "457105b2d84547a4b4549f0eaa700b61", "e2fca45429e54522bb2927112eb8e0b5"}


HEAD = b"__CURSOR=s=1;i=2\n__REALTIME_TIMESTAMP=1700000000123456\n_PID=42\n_COMM=demo\n"


def test_a_binary_field_split_over_several_lines_is_read_by_its_length() -> None:
    message = b"first line\nsecond \xff\xfe line\n\nlast"
    stream = HEAD + binary_field(b"MESSAGE", message) + b"_EXE=/bin/demo\n\n"
    events, journal = run(stream, force=False)
    assert journal.held() == []
    [event] = events
    assert event["message"] == message.decode("utf-8", "replace")
    assert event["process"] == {"pid": 42, "name": "demo", "executable": "/bin/demo"}
    assert "not valid UTF-8" in event["error"]["message"]
    assert original_bytes(event) == stream[:-1]


def test_a_binary_length_holding_a_newline_byte_is_not_an_entry_end() -> None:
    value = b"0123456789"  # length 10 = b"\n\0\0\0\0\0\0\0": the line after the key is empty
    stream = HEAD + binary_field(b"MESSAGE", value) + b"\n"
    [event], _ = run(stream, force=False)
    assert event["message"] == "0123456789"
    assert "error" not in event and event["journald"]["cursor"] == "s=1;i=2"


def test_a_key_line_that_is_not_a_binary_field_is_kept_as_malformed() -> None:
    stream = HEAD + b"NOT_BINARY\nMESSAGE=hello\n\n"
    [event], _ = run(stream, force=False)
    assert event["message"] == "hello"
    assert event["error"]["message"] == "journald: 1 malformed line(s) in the entry"
    assert original_bytes(event) == stream[:-1]


def test_a_truncated_entry_is_held_then_emitted_cut_off_on_force_flush() -> None:
    stream = HEAD + b"MESSAGE=half an ent"
    journal = assembler()
    for offset, line in split_stream(stream + b"\n"):
        assert journal.feed(line, offset, RECEIVED) == []
    assert [held.line for held in journal.held()] == (stream).split(b"\n")
    assert journal.flush(LATER) == []
    [event] = journal.flush(LATER, force=True)
    assert event["message"] == "half an ent"
    assert "cut off" in event["error"]["message"]
    assert event["@timestamp"] == "2023-11-14T22:13:20.123456Z"
    assert journal.held() == []


def test_a_binary_field_cut_off_mid_value_is_emitted_with_what_arrived() -> None:
    stream = HEAD + b"MESSAGE\n" + struct.pack("<Q", 100) + b"only\nsome"
    [event], _ = run(stream + b"\n")
    assert event["message"] == "only\nsome"
    assert "binary field MESSAGE incomplete" in event["error"]["message"]


def test_json_entries_with_binary_and_repeated_values() -> None:
    entry = {
        "__CURSOR": "s=9;i=1", "__REALTIME_TIMESTAMP": "1700000000000001", "_PID": "7",
        "MESSAGE": list(b"bin\nary \xff"), "TAG": ["a", "b"], "BIG": None, "_CMDLINE": 'sh -c "echo \\"hi\\" there"',
    }
    line = orjson.dumps(entry)
    events, journal = run(line + b"\n")
    [event] = events
    assert event["message"] == "bin\nary \ufffd"
    assert event["journald"]["custom"] == {"tag": ["a", "b"]}
    assert event["process"]["args"] == ["sh", "-c", '"echo \\"hi\\" there"']
    assert event["process"]["pid"] == 7 and event["journald"]["cursor"] == "s=9;i=1"
    assert event["event"]["original"] == line.decode()


def test_export_and_json_entries_may_alternate() -> None:
    stream = HEAD + b"MESSAGE=one\n\n" + orjson.dumps({"MESSAGE": "two", "__CURSOR": "c2"}) + b"\n"
    events, _ = run(stream)
    assert [event["message"] for event in events] == ["one", "two"]
    assert events[1]["@timestamp"] == RECEIVED and "no usable __REALTIME_TIMESTAMP" in events[1]["error"]["message"]


def test_crlf_entries_end_at_a_lone_carriage_return_and_values_lose_it() -> None:
    stream = HEAD.replace(b"\n", b"\r\n") + b"MESSAGE=hi\r\n\r\n"
    [event], journal = run(stream, force=False)
    assert event["message"] == "hi" and event["process"]["pid"] == 42
    assert journal.held() == []


def test_nul_bytes_survive_in_values_and_original() -> None:
    stream = HEAD + b"MESSAGE=a\x00b\n\n"
    [event], _ = run(stream)
    assert event["message"] == "a\x00b"
    assert original_bytes(event) == stream[:-1]


def test_an_entry_without_its_empty_line_is_bounded() -> None:
    journal = assembler()
    line = b"FIELD=" + b"x" * (1 << 20)
    events: list[Event] = []
    for number in range(MAX_ENTRY_BYTES // len(line) + 2):
        events += journal.feed(line, number * (len(line) + 1), RECEIVED)
    assert len(events) == 1 and "longer than" in events[0]["error"]["message"]
    assert len(journal.held()) < 3


def test_empty_lines_before_an_entry_belong_to_it() -> None:
    [event], _ = run(b"\n\n" + HEAD + b"\n")
    assert event["log"]["offset"] == 0 and original_bytes(event).startswith(b"\n\n__CURSOR")


def test_the_same_entry_gives_the_same_event_whatever_came_before() -> None:
    entry = HEAD + b"MESSAGE=x\n\n"
    alone, _ = run(entry)
    after, _ = run(b"garbage\n" + HEAD + b"MESSAGE\n" + struct.pack("<Q", 3) + b"abc\n\n" + entry)
    again = after[-1]
    again["log"]["offset"] = 0
    assert again == alone[0]


# -- never breaks -------------------------------------------------------------------------------------


def check_accounting(lines: list[bytes], events: list[Event], journal: Any) -> None:
    """Every fed line is in exactly one event's original or held(), in order, byte for byte."""
    pieces = [original_bytes(event) for event in events] + [held.line for held in journal.held()]
    assert b"\n".join(pieces) == b"\n".join(lines)
    assert sum(piece.count(b"\n") + 1 for piece in pieces) == len(lines)
    for event in events:
        orjson.dumps(event)
        assert event["host"]["name"] == HOST and event["event"]["dataset"] == "journald"
        assert_canonical_timestamp(event["@timestamp"])


field_lines = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"\r", b"MESSAGE=hi", b"MESSAGE", b"__CURSOR=c", b"_PID=1", b"{", b'{"MESSAGE":"j"}',
                     b"\x08\x00\x00\x00\x00\x00\x00\x00", b"\n", b"PRIORITY=x", b"_CAP_EFFECTIVE=ffffffffffffffff"]),
    st.builds(lambda key, value: binary_field(key, value)[:-1], st.sampled_from([b"MESSAGE", b"X"]),
              st.binary(max_size=30)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(field_lines, max_size=30), st.booleans())
def test_any_bytes_never_raise_and_every_line_is_accounted_for(chunks: list[bytes], force: bool) -> None:
    stream = b"\n".join(chunks) + b"\n"
    lines = [line for _, line in split_stream(stream)]
    journal = assembler()
    events: list[Event] = []
    for number, line in enumerate(lines):
        events += journal.feed(line, number, RECEIVED)
    events += journal.flush(LATER, force=force)
    check_accounting(lines, events, journal)
    if force:
        assert journal.held() == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["MESSAGE", "DATA", "_X"]), st.binary(max_size=24), st.booleans()),
                min_size=1, max_size=6))
def test_well_formed_entries_round_trip_their_values(fields: list[tuple[str, bytes, bool]]) -> None:
    stream = HEAD
    for key, value, binary in fields:
        if binary or b"\n" in value:
            stream += binary_field(key.encode(), value)
        else:
            stream += key.encode() + b"=" + value + b"\n"
    stream += b"\n"
    [event], journal = run(stream, force=False)
    assert journal.held() == []
    assert "malformed" not in event.get("error", {}).get("message", "")
    values: dict[str, list[str]] = {}
    for key, value, _ in fields:
        values.setdefault(key, []).append(value.decode("utf-8", "replace"))
    expected = {key: items[0] if len(items) == 1 else items for key, items in values.items()}
    assert event.get("message") == expected.get("MESSAGE")
    custom = event["journald"].get("custom", {})
    assert custom.get("data") == expected.get("DATA") and custom.get("x") == expected.get("_X")
    assert original_bytes(event) == stream[:-1]


def test_hostile_single_lines() -> None:
    for line in (b"", b"\xff\xfe", b"\x00" * 64, b"\r", b"[" * 100_000, b"{" + b"[" * 100_000, b"A" * (1 << 20),
                 b'{"MESSAGE": "\\ud800"}', b"{}", b"{\"__REALTIME_TIMESTAMP\": \"99999999999999999999\"}"):
        journal = assembler()
        events = journal.feed(line, 5, RECEIVED) + journal.flush(LATER, force=True)
        check_accounting([line], events, journal)
        assert all("internal error" not in event.get("error", {}).get("message", "") for event in events)
    assert Counter(assembler().counters()) == Counter()
