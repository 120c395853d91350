"""Container logs (CRI and Docker json-file): pieces of a line are joined into one event per message.

The oracle is Fluent Bit: its multiline parser tests (`multiline.c`: the record arrays of its
`docker`, `cri`, `container_mix` and `docker_cri_chain` cases) and its Kubernetes filter runtime
tests (a container log and the record expected for it). See tests/data/cri/PROVENANCE.md; the
disagreements are exactly those listed in tests/data/cri/DISAGREEMENTS.md.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.normalize.assemble import NormalizeOptions
from agent.normalize.common import Event, SourceContext, timestamp_to_ns
from agent.normalize.cri import MAX_MESSAGE_BYTES, make_assembler, path_metadata

from .helpers import DATA, RECEIVED, assert_canonical_timestamp

CRI = DATA / "cri"
HOST = "node-1"
ID = "c9898099f6d235126d564ed38a020007ea7a6fac6e25e718de683c9dd0076c16"
PATH = f"/var/log/containers/web-7d4b9c-x2x9k_shop_nginx-{ID}.log"
LATER = "2024-03-05T10:00:09.000000Z"


def assembler(path: str = PATH) -> Any:
    return make_assembler(SourceContext(host_name=HOST, path=path), NormalizeOptions())


def run(lines: list[bytes], path: str = PATH, *, force: bool = True) -> tuple[list[Event], Any]:
    logs = assembler(path)
    events: list[Event] = []
    offset = 0
    for line in lines:
        events += logs.feed(line, offset, RECEIVED)
        offset += len(line) + 1
    if force:
        events += logs.flush(LATER, force=True)
    return events, logs


def original_bytes(event: Event) -> bytes:
    exact = event.get("logseal", {}).get("original_base64")
    return base64.b64decode(exact) if exact is not None else str(event["event"]["original"]).encode()


# -- the oracle ---------------------------------------------------------------------------------------

_C_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "r": "\r", "0": "\0"}


def c_records(name: str) -> list[str]:
    """The strings of `struct record_check NAME[] = {...};` in multiline.c, C escapes decoded."""
    source = (CRI / "multiline.c").read_text()
    body = source[source.index(f"struct record_check {name}[] = {{"):]
    body = body[:body.index("\n};")]
    records = []
    for entry in re.findall(r'\{\s*((?:"(?:[^"\\]|\\.)*"\s*)+)\}', body):
        text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', entry))
        records.append(re.sub(r"\\(.)", lambda m: _C_ESCAPES[m.group(1)], text))
    return records


MULTILINE_CASES = [("docker_input", "docker_output"), ("cri_input", "cri_output"),
                   ("container_mix_input", "container_mix_output"),
                   ("docker_cri_chain_input", "docker_cri_chain_output")]


def fluent_bit_log(event: Event) -> str | None:
    """Our counterpart of Fluent Bit's `log`: a finished Docker line keeps its "\\n" there."""
    message = event.get("message")
    if message is None:
        return None
    docker = original_bytes(event).startswith(b"{")
    finished = not event.get("logseal", {}).get("partial")
    return str(message) + "\n" if docker and finished and event["event"]["action"] != "unparsed" else str(message)


def compare_with_fluent_bit() -> tuple[int, list[str]]:
    """(fields compared, disagreements as 'case: record N: field: ours != fluent-bit')."""
    compared = 0
    disagreements: list[str] = []

    def check(where: str, ours: Any, theirs: Any) -> None:
        nonlocal compared
        compared += 1
        if ours != theirs:
            disagreements.append(f"{where}: {ours!r} != {theirs!r}")

    # multiline.c: each record is fed as one line, as the test feeds it (flb_ml_append_text).
    for case_in, case_out in MULTILINE_CASES:
        events, _ = run([record.encode() for record in c_records(case_in)])
        expected = c_records(case_out)
        for number in range(max(len(events), len(expected))):
            got = fluent_bit_log(events[number]) if number < len(events) else None
            theirs = expected[number] if number < len(expected) else None
            check(f"{case_in}: record {number}: log", got, theirs)

    # Kubernetes runtime tests: <namespace>_<pod>_<container>.log and its expected record(s).
    for log_file in sorted(CRI.glob("*_*_*.log")):
        namespace, pod, container = log_file.stem.split("_")
        outputs = sorted(CRI.glob(f"{log_file.stem}*.out"))
        records = [orjson.loads(out.read_bytes()) for out in outputs]
        container_id = next((r[1]["kubernetes"]["docker_id"] for r in records if "docker_id" in r[1]["kubernetes"]),
                            "0" * 64)
        path = f"/var/log/containers/{pod}_{namespace}_{container}-{container_id}.log"
        events, _ = run(log_file.read_bytes().splitlines(), path)
        for seconds, record in records:
            [ours] = [event for event in events if event.get("stream") == record["stream"]]
            where = f"{log_file.stem}: {record['stream']}"
            meta = record["kubernetes"]
            check(f"{where}: stream", ours.get("stream"), record["stream"])
            check(f"{where}: kubernetes.pod_name", ours["kubernetes"]["pod"]["name"], meta["pod_name"])
            check(f"{where}: kubernetes.namespace_name", ours["kubernetes"]["namespace"], meta["namespace_name"])
            check(f"{where}: kubernetes.container_name", ours["kubernetes"]["container"]["name"],
                  meta["container_name"])
            if "docker_id" in meta:
                check(f"{where}: kubernetes.docker_id", ours["container"]["id"], meta["docker_id"])
            if "log" in record:  # replaced by the annotation parser's fields otherwise
                check(f"{where}: log", fluent_bit_log(ours), record["log"])
                check(f"{where}: time", timestamp_to_ns(ours["@timestamp"]) // 1000, round(seconds * 1e6))
    return compared, disagreements


def listed_disagreements() -> list[str]:
    text = (CRI / "DISAGREEMENTS.md").read_text()
    return [line[3:].split("` — ")[0] for line in text.splitlines() if line.startswith("- `") and ": " in line
            and " != " in line]


def test_agrees_with_fluent_bit_on_at_least_99_percent_of_compared_fields() -> None:
    compared, disagreements = compare_with_fluent_bit()
    assert compared >= 55
    assert (compared - len(disagreements)) / compared >= 0.99
    assert sorted(disagreements) == sorted(listed_disagreements())


# -- the format ---------------------------------------------------------------------------------------


def test_cri_pieces_are_joined_per_stream_and_timed_by_the_first() -> None:
    lines = [
        b"2019-05-07T18:57:50.904275087+00:00 stdout P 1a. some ",
        b"2019-05-07T18:57:50.904275087+00:00 stderr P 1b. ",
        b"2019-05-07T18:57:51.904275088+00:00 stdout P multiline ",
        b"2019-05-07T18:57:52.904275089+00:00 stdout F log",
        b"2019-05-07T18:57:53.000000001+02:00 stderr F err",
    ]
    events, logs = run(lines, force=False)
    assert logs.held() == []
    out, err = events
    assert out["message"] == "1a. some multiline log" and out["stream"] == "stdout"
    assert out["@timestamp"] == "2019-05-07T18:57:50.904275Z"
    assert out["log"]["offset"] == 0
    assert original_bytes(out) == b"\n".join([lines[0], lines[2], lines[3]])
    assert err["message"] == "1b. err" and err["@timestamp"] == "2019-05-07T18:57:50.904275Z"
    assert out["event"]["dataset"] == "container.log"
    assert out["kubernetes"] == {"pod": {"name": "web-7d4b9c-x2x9k"}, "namespace": "shop",
                                 "container": {"name": "nginx"}}
    assert out["container"] == {"id": ID}


def test_docker_records_join_until_a_newline() -> None:
    lines = [b'{"log":"par","stream":"stdout","time":"2021-02-01T16:45:03.012310000Z"}',
             b'{"log":"tial\\n","stream":"stdout","time":"2021-02-01T16:45:04Z"}',
             b'{"log":"whole\\r\\n","stream":"stderr","time":"2021-02-01T16:45:05.5z"}']
    events, _ = run(lines)
    assert [(e["message"], e["stream"], e["@timestamp"]) for e in events] == [
        ("partial", "stdout", "2021-02-01T16:45:03.012310Z"), ("whole\r", "stderr", "2021-02-01T16:45:05.500000Z")]


def test_a_real_cri_stack_trace_with_short_fractions() -> None:
    record = orjson.loads((CRI / "multiline.json").read_bytes())[0]
    lines = record["log"].encode().split(b"\n")
    events, _ = run(lines)
    assert len(events) == 19 and all(event["stream"] == "stderr" for event in events)
    assert events[1]["@timestamp"] == "2020-08-19T21:06:24.337540Z"  # from .33754077Z
    assert events[2]["message"] == "\tat org.apache.hadoop.ipc.Client.call(Client.java:1475)"


def test_pod_directory_paths_give_uid_and_restart_count() -> None:
    meta = path_metadata("/var/log/pods/kube-system_coredns-5d78c9869d-abcde_0f7c8e1a-1111-2222-3333-444455556666/"
                         "coredns/3.log")
    assert meta == {"kubernetes": {"pod": {"name": "coredns-5d78c9869d-abcde",
                                           "uid": "0f7c8e1a-1111-2222-3333-444455556666"},
                                   "namespace": "kube-system", "container": {"name": "coredns", "restart_count": 3}}}
    assert path_metadata(f"/var/lib/docker/containers/{ID}/{ID}-json.log") == {"container": {"id": ID}}
    assert path_metadata("/var/log/syslog") == {}


def test_a_partial_line_without_its_end_is_held_then_flushed_as_partial() -> None:
    logs = assembler()
    assert logs.feed(b"2024-03-05T09:59:59.1Z stdout P no end", 0, RECEIVED) == []
    assert [held.line for held in logs.held()] == [b"2024-03-05T09:59:59.1Z stdout P no end"]
    assert logs.flush("2024-03-05T10:00:01.000000Z") == []  # not yet due
    [event] = logs.flush(LATER, force=True)
    assert event["message"] == "no end" and event["logseal"] == {"partial": True}
    assert "stream ended" in event["error"]["message"]
    assert logs.held() == []


def test_a_partial_line_waiting_too_long_is_emitted_by_an_ordinary_flush() -> None:
    logs = assembler()
    logs.feed(b"2024-03-05T09:59:59.1Z stdout P slow", 0, RECEIVED)
    [event] = logs.flush(LATER)
    assert event["logseal"] == {"partial": True} and "within 5 s" in event["error"]["message"]


def test_flush_with_a_received_that_is_not_a_time_does_not_raise() -> None:
    logs = assembler()
    logs.feed(b"2024-03-05T09:59:59.1Z stdout P x", 0, RECEIVED)
    assert logs.flush("not a time") == [] and len(logs.held()) == 1


def test_a_message_over_the_bound_is_emitted_in_marked_parts_never_dropped() -> None:
    piece = b"2024-03-05T09:59:59.1Z stdout P " + b"x" * (256 << 10)
    lines = [piece] * ((MAX_MESSAGE_BYTES // len(piece)) + 2) + [b"2024-03-05T09:59:59.2Z stdout F end"]
    events, logs = run(lines, force=False)
    assert logs.held() == []
    assert [e.get("logseal") for e in events] == [{"partial": True}, {"continuation": True}]
    assert "".join(e["message"] for e in events) == "x" * (256 << 10) * (len(lines) - 1) + "end"


def test_a_line_that_is_no_container_record_ends_the_pending_pieces_first() -> None:
    lines = [b"2024-03-05T09:59:59.1Z stderr P dd", b"not a container log line"]
    events, _ = run(lines)
    assert [(e["message"], e["event"]["action"]) for e in events] == [("dd", "log"), (lines[1].decode(), "unparsed")]
    assert events[0]["logseal"] == {"partial": True} and events[1]["error"]["message"].startswith("cri: ")


def test_pieces_split_inside_a_utf8_character_decode_whole() -> None:
    text = "größe".encode()
    lines = [b"2024-03-05T09:59:59.1Z stdout P " + text[:3], b"2024-03-05T09:59:59.1Z stdout F " + text[3:]]
    [event], _ = run(lines)
    assert event["message"] == "größe" and "error" not in event
    assert original_bytes(event) == b"\n".join(lines)  # not UTF-8 as a whole: kept in base64


def test_crlf_nul_and_invalid_utf8_are_kept() -> None:
    lines = [b"2024-03-05T09:59:59.1Z stdout F a\x00b\r", b"2024-03-05T09:59:59.1Z stdout F \xff"]
    events, _ = run(lines)
    assert events[0]["message"] == "a\x00b\r"
    assert events[1]["message"] == "\ufffd" and "not valid UTF-8" in events[1]["error"]["message"]
    assert original_bytes(events[1]) == lines[1]


def test_bad_times_and_odd_records_are_unparsed_events() -> None:
    for line in (b"2024-13-05T09:59:59Z stdout F month 13", b"yesterday stdout F x", b"2024-03-05T09:59:59Z stdin F x",
                 b"2024-03-05T09:59:59Z stdout X x", b'{"log": 5}', b"[1]", b"{"):
        [event], _ = run([line])
        assert event["event"]["action"] == "unparsed" and event["error"]["message"].startswith("cri: ")


def test_a_docker_record_without_time_is_timed_at_reception() -> None:
    [event], _ = run([b'{"log": "x\\n", "stream": "stdout"}'])
    assert event["@timestamp"] == RECEIVED and "time of reception" in event["error"]["message"]


# -- never breaks -------------------------------------------------------------------------------------


def check_accounting(lines: list[bytes], events: list[Event], logs: Any) -> None:
    """Every fed line is in exactly one event's original or held(), byte for byte."""
    seen: Counter[bytes] = Counter()
    for event in events:
        seen.update(original_bytes(event).split(b"\n"))
        orjson.dumps(event)
        assert_canonical_timestamp(event["@timestamp"])
        assert event["host"]["name"] == HOST and event["event"]["dataset"] == "container.log"
    seen.update(held.line for held in logs.held())
    assert seen == Counter(lines)


cri_lines = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
    st.builds(lambda stream, tag, msg: b"2024-03-05T09:59:59.123456789Z " + stream + b" " + tag + b" " + msg,
              st.sampled_from([b"stdout", b"stderr"]), st.sampled_from([b"P", b"F", b"F:x"]),
              st.binary(max_size=12).map(lambda b: b.replace(b"\n", b""))),
    st.builds(lambda log, stream: orjson.dumps({"log": log, "stream": stream, "time": "2024-03-05T09:59:59Z"}),
              st.text(max_size=8).map(lambda t: t.replace("\ud800", "")) | st.just("end\n"),
              st.sampled_from(["stdout", "stderr"])),
    st.sampled_from([b"", b"\r", b"{", b'{"log":"a\x01b\\n"}', b"\x00" * 8]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(cri_lines, max_size=30), st.booleans())
def test_any_bytes_never_raise_and_every_line_is_accounted_for(lines: list[bytes], force: bool) -> None:
    events, logs = run(lines, force=force)
    check_accounting(lines, events, logs)
    if force:
        assert logs.held() == []
