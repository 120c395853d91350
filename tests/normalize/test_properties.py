"""Never breaks: every registered log family, fed any bytes at all, returns well-formed events that
give back exactly the bytes it was fed.

The families are read from `agent.normalize.ASSEMBLERS`, so a family added to the registry is
covered here without editing this file. For a sequence of lines fed through the family's assembler
(`assembler_for(type, ctx, NormalizeOptions())`) and then `flush(received, force=True)`:

* no exception, and nothing is still held;
* every event has a canonical `@timestamp` (27 characters, `Z`), `event.dataset`, `event.kind`,
  `event.outcome` in {success, failure, unknown}, `host.name`, `log.file.path` and `log.offset`;
* round trip: the multiset of fed lines equals the multiset of lines recovered from the events. An
  event gives back its lines from `logseal.original_base64` (exact bytes) when present, else from
  `event.original`, else -- Kubernetes audit records carried verbatim -- from
  `orjson.dumps(kubernetes.audit)`; an event formed from several lines joins them with b"\\n"; an
  event formed from no line (auditd's "serials never arrived" record) gives back none.
  (Events a policy dropped would be excepted; no policy is configured here.)

Inputs: arbitrary bytes (invalid UTF-8, NUL, CR, long runs), runs of real lines from
agent/samples/ and tests/data/ with shape-keeping mutations (truncation, flipped and inserted bytes,
spliced lines), and explicit hostile cases. Hypothesis runs derandomized, so CI sees the same cases.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.normalize import ASSEMBLERS, NormalizeOptions, assembler_for
from agent.normalize.common import SourceContext

from .helpers import DATA, RECEIVED, SAMPLES

FAMILIES = sorted(ASSEMBLERS)
OUTCOMES = {"success", "failure", "unknown"}
HOST = "node-p"
PATH = "/var/log/property.log"
MIB = 1 << 20

# Families known to break the round trip today, with the reason: {family: reason}. Strict xfail, so
# a fix makes the suite fail until the entry is removed.
KNOWN_ROUND_TRIP_BREAKS: dict[str, str] = {}

SETTINGS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def _seed_files() -> list[Path]:
    files = sorted(SAMPLES.glob("*.log"))
    for path in sorted(DATA.rglob("*")):
        if path.is_file() and path.suffix in (".log", ".json", ".jsonl", ".export", ".txt") and path.stat().st_size:
            files.append(path)
    return files


def _runs() -> list[list[bytes]]:
    """The non-empty lines of each seed file (at most 60 per file), in file order."""
    runs = []
    for path in _seed_files():
        lines = [line for line in path.read_bytes().split(b"\n") if line.strip()][:60]
        if lines:
            runs.append(lines)
    return runs


RUNS = _runs()
HOSTILE_BYTES = [b"\x00", b"\xff", b"\xc3", b"\r", b'"', b"[", b"]", b"{", b"}", b"\\", b"=", b" ", b":", b"<",
                 b">", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"-", b"'", b"\t"]


def no_newline(line: bytes) -> bytes:
    """The tailer splits on b"\\n": a line never holds one."""
    return line.replace(b"\n", b"\r")


@st.composite
def mutated(draw: st.DrawFn, line: bytes, other: bytes) -> bytes:
    kind = draw(st.sampled_from(["keep", "truncate", "flip", "insert", "delete", "splice", "repeat"]))
    data = bytearray(line)
    if kind == "truncate" and data:
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from(HOSTILE_BYTES)) * draw(st.integers(1, 3))
    elif kind == "delete" and data:
        start = draw(st.integers(0, len(data) - 1))
        del data[start:start + draw(st.integers(1, 16))]
    elif kind == "splice":
        return no_newline(line[:draw(st.integers(0, len(line)))] + other[draw(st.integers(0, len(other))):])
    elif kind == "repeat":
        return no_newline(line * draw(st.integers(2, 4)))
    return no_newline(bytes(data))


@st.composite
def real_run(draw: st.DrawFn) -> list[bytes]:
    """Consecutive real lines of one file (so multi-line assemblers see related records), mutated."""
    run = draw(st.sampled_from(RUNS))
    start = draw(st.integers(0, len(run) - 1))
    window = run[start:start + draw(st.integers(1, 10))]
    other = draw(st.sampled_from(run))
    return [draw(mutated(line, other)) for line in window]


ANY_LINE = st.one_of(
    st.binary(max_size=300).map(no_newline),
    st.text(max_size=200).map(lambda text: no_newline(text.encode("utf-8", "surrogatepass"))),
    st.builds(lambda chunk, count: no_newline(chunk * count), st.binary(min_size=1, max_size=8),
              st.integers(1, 50_000)),
)
LINE_SEQUENCES = st.one_of(
    real_run(),
    st.lists(ANY_LINE, min_size=1, max_size=6),
    st.builds(lambda a, b: a + b, real_run(), st.lists(ANY_LINE, max_size=3)),
)


def recovered_lines(event: dict[str, Any]) -> list[bytes]:
    exact = (event.get("logseal") or {}).get("original_base64")
    if "event.original" in ((event.get("logseal") or {}).get("redacted") or []):
        return []  # withheld on purpose; see run_family
    if exact is not None:
        return base64.b64decode(exact).split(b"\n")
    original = event["event"].get("original")
    if original is not None:
        return str(original).encode("utf-8").split(b"\n")
    verbatim = (event.get("kubernetes") or {}).get("audit")
    if isinstance(verbatim, orjson.Fragment):
        return orjson.dumps(verbatim).split(b"\n")
    # Formed from no line (auditd's record of serials that never arrived). An event that dropped its
    # line's bytes is still caught: that line is then missing from the recovered multiset.
    return []


def assert_always_present(event: dict[str, Any], offsets: set[int]) -> None:
    stamp = event["@timestamp"]
    assert isinstance(stamp, str) and len(stamp) == 27 and stamp.endswith("Z"), stamp
    dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    fields = event["event"]
    assert isinstance(fields["dataset"], str) and fields["dataset"]
    assert isinstance(fields["kind"], str) and fields["kind"]
    assert fields["outcome"] in OUTCOMES
    assert event["host"]["name"] == HOST
    assert event["log"]["file"]["path"] == PATH
    assert event["log"]["offset"] in offsets
    orjson.dumps(event)  # serializable: no surrogates, no odd types


def fed_offsets(lines: list[bytes]) -> list[int]:
    offsets, offset = [], 1000
    for line in lines:
        offsets.append(offset)
        offset += len(line) + 1
    return offsets


def run_family(family: str, lines: list[bytes]) -> list[dict[str, Any]]:
    """Feed `lines` (with the offsets a file would give them), flush; check every invariant."""
    assembler = assembler_for(family, SourceContext(host_name=HOST, path=PATH), NormalizeOptions())
    events: list[dict[str, Any]] = []
    offsets: set[int] = set()
    offset = 1000
    for line in lines:
        offsets.add(offset)
        events.extend(assembler.feed(line, offset, RECEIVED))
        offset += len(line) + 1
    events.extend(assembler.flush(RECEIVED, force=True))
    assert assembler.held() == []
    for event in events:
        assert_always_present(event, offsets)
    recovered = Counter(line for event in events for line in recovered_lines(event))
    # A k8s_audit line that could not be parsed and may hold a credential is withheld on purpose
    # (only its keyed hash is kept): it is excepted, found by its offset.
    withheld = {event["log"]["offset"] for event in events
                if "event.original" in ((event.get("logseal") or {}).get("redacted") or [])}
    fed = Counter(line for line, at in zip(lines, fed_offsets(lines), strict=True) if at not in withheld)
    assert recovered == fed, f"lost: {list(fed - recovered)[:3]!r:.300} extra: {list(recovered - fed)[:3]!r:.300}"
    return events


def family_params() -> list[Any]:
    return [
        pytest.param(family, marks=pytest.mark.xfail(strict=True, reason=KNOWN_ROUND_TRIP_BREAKS[family]))
        if family in KNOWN_ROUND_TRIP_BREAKS else family
        for family in FAMILIES
    ]


def test_registry_has_the_families_this_file_must_cover() -> None:
    assert {"k8s_audit", "auditd", "syslog"} <= set(FAMILIES)
    assert RUNS, "no seed lines found"


@pytest.mark.parametrize("family", family_params())
@SETTINGS
@given(lines=LINE_SEQUENCES)
def test_any_lines_give_valid_events_that_round_trip(family: str, lines: list[bytes]) -> None:
    run_family(family, lines)


@pytest.mark.parametrize("family", family_params())
def test_every_real_sample_line_round_trips_in_file_order(family: str) -> None:
    for run in RUNS:
        run_family(family, run)


def _truncated_json() -> bytes:
    line = next((line for run in RUNS for line in run if line.startswith(b'{"kind":"Event"')),
                b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","verb":"get"}')
    return line[: len(line) // 2]


EXPLICIT: dict[str, list[bytes]] = {
    "truncated JSON": [_truncated_json()],
    "200k-deep nested JSON": [b"[" * 200_000],
    "10 MiB line": [b"Mar  3 09:01:17 node-1 app[1]: " + b"x" * (10 * MIB)],
    "NUL bytes": [b"\x00" * 64, b"Mar  3 09:01:17 node-1 app[1]: a\x00b", b'{"kind":"Event\x00"}'],
    "CRLF line endings": [b"Mar  3 09:01:17 node-1 sshd[1]: Accepted password for a from 192.0.2.1 port 2 ssh2\r",
                          b'{"kind":"Event","verb":"get"}\r', b"type=USER_LOGIN msg=audit(1.0:1): pid=1\r", b"\r"],
    "k8s audit line that is valid JSON but not an Event": [b'{"kind":"Pod","apiVersion":"v1","metadata":{}}',
                                                          b'{"kind":"Event"}', b"[]", b"null"],
    "auditd records missing their SYSCALL": [
        b'type=CWD msg=audit(1492037291.036:59): cwd="/root"',
        b'type=PATH msg=audit(1492037291.036:59): item=0 name="/bin/ls" inode=1 dev=fd:00',
        b"type=PROCTITLE msg=audit(1492037291.036:59): proctitle=6C73002D6C",
        b"type=EOE msg=audit(1492037291.036:59): ",
    ],
    "5424 line with a broken SD block": [b'<13>1 2024-03-03T10:00:00Z host app 1 - [id a="1 msg',
                                         b'<13>1 - host app - - [ id a="1"] msg'],
    "invalid UTF-8": [b"\xff\xfe garbage", b"Mar  3 09:01:17 node-1 app[1]: caf\xe9", b'{"kind":"\xff"}'],
    "empty and blank lines": [b"", b" ", b"\t"],
}


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("case", sorted(EXPLICIT))
def test_explicit_hostile_input_gives_valid_events_that_round_trip(family: str, case: str) -> None:
    run_family(family, EXPLICIT[case])


def test_syslog_broken_sd_block_is_still_a_syslog_event_with_the_reason() -> None:
    [event, other] = run_family("syslog", EXPLICIT["5424 line with a broken SD block"])
    assert event["event"]["action"] == "log"
    assert event["process"] == {"name": "app", "pid": 1}
    assert "STRUCTURED-DATA" in event["error"]["message"]
    assert "STRUCTURED-DATA" in other["error"]["message"]


def test_k8s_audit_json_that_is_not_an_event_is_unparsed_with_the_reason() -> None:
    events = run_family("k8s_audit", EXPLICIT["k8s audit line that is valid JSON but not an Event"])
    assert events and all("error" in event for event in events)


def test_auditd_records_without_syscall_still_become_events() -> None:
    events = run_family("auditd", EXPLICIT["auditd records missing their SYSCALL"])
    assert events
