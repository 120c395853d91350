"""The pure encoders and the meaning of receivers' answers, without sockets."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

import pytest

from agent.aggregator.forward.formats import (
    Item,
    Outcome,
    Result,
    bulk_body,
    document,
    hec_body,
    http_outcome,
    parse_bulk_response,
    syslog_frames,
    syslog_message,
    webhook_body,
)
from agent.aggregator.forward.senders import bisect_rejections
from tests.aggregator.forward.kit import normalized
from tests.aggregator.forward.receivers import FRAME, RFC5424, sd_params


def items(source: str = "syslog", fmt: str = "ecs") -> list[Item]:
    out = []
    for n, event in enumerate(normalized(source)):
        event["event"]["id"] = f"node-1:{source}:1:{n}"
        out.append(Item(event, document(event, fmt)))
    return out


def test_a_syslog_message_is_rfc5424_with_the_event_id_in_structured_data() -> None:
    item = next(i for i in items() if i.event["event"]["action"] == "ssh_login"
                and i.event["event"]["outcome"] == "failure")
    match = RFC5424.match(syslog_message(item).decode())
    assert match, syslog_message(item)
    assert match.group("pri") == str(13 * 8 + 5)  # log audit, notice for a failed action
    assert match.group("ts") == item.event["@timestamp"]
    assert (match.group("host"), match.group("app"), match.group("procid"), match.group("msgid")) == (
        "node-1", "logseal", "-", "system.auth")
    assert sd_params(match) == {"id": item.id, "dataset": "system.auth", "action": "ssh_login",
                                "outcome": "failure"}
    assert json.loads(match.group("msg")) == item.event


def test_syslog_frames_are_octet_counted_back_to_back() -> None:
    batch = items("k8s_audit", "ocsf")[:5]
    data, out = syslog_frames(batch), []
    while data:
        m = FRAME.match(data)
        assert m
        out.append(data[m.end():m.end() + int(m.group(1))])
        data = data[m.end() + int(m.group(1)):]
    assert out == [syslog_message(i) for i in batch]
    assert [json.loads(RFC5424.match(o.decode()).group("msg"))["class_uid"] for o in out] == [6003] * 5  # type: ignore[union-attr]


def test_hec_events_carry_time_host_sourcetype_and_the_event_id_as_a_field() -> None:
    batch = items()[:3]
    decoder, text, pos, envelopes = json.JSONDecoder(), hec_body(batch, index="audit").decode(), 0, []
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        envelopes.append(obj)
        pos += len(text[pos:]) - len(text[pos:].lstrip())
    assert [e["event"] for e in envelopes] == [i.event for i in batch]
    assert [e["fields"]["event_id"] for e in envelopes] == [i.id for i in batch]
    first = envelopes[0]
    assert first["time"] == dt.datetime(2026, 3, 3, 8, 14, 2, tzinfo=dt.UTC).timestamp()
    assert (first["host"], first["index"], first["sourcetype"]) == ("node-1", "audit", "logseal:system.auth")
    assert first["source"].endswith("auth.log")


def test_bulk_pairs_a_create_action_with_the_event_id_before_each_document() -> None:
    batch = items("auditd", "ocsf")
    lines = bulk_body(batch, "logs-logseal-default").decode().split("\n")
    assert lines[-1] == "" and len(lines) == 2 * len(batch) + 1
    actions, docs = [json.loads(x) for x in lines[:-1:2]], [json.loads(x) for x in lines[1::2]]
    assert actions == [{"create": {"_index": "logs-logseal-default", "_id": i.id}} for i in batch]
    assert all(d["@timestamp"] == i.event["@timestamp"] and d["metadata"]["uid"] == i.id
               for d, i in zip(docs, batch, strict=True))


def test_bulk_responses_are_judged_per_item() -> None:
    body = json.dumps({"errors": True, "items": [
        {"create": {"status": 201}},
        {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        {"create": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad field"}}},
        {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        {"create": {"status": 503}}]}).encode()
    results = parse_bulk_response(body, 5)
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.REJECTED, Outcome.RETRY,
                                            Outcome.RETRY]
    assert "mapper_parsing_exception: bad field" in results[2].reason
    with pytest.raises(ValueError, match="expected 2 items"):
        parse_bulk_response(body, 2)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.ACCEPTED), (204, Outcome.ACCEPTED), (400, Outcome.REJECTED), (413, Outcome.REJECTED),
    (422, Outcome.REJECTED), (408, Outcome.RETRY), (429, Outcome.RETRY), (500, Outcome.RETRY),
    (503, Outcome.RETRY), (401, Outcome.RETRY), (403, Outcome.RETRY), (404, Outcome.RETRY)])
def test_http_statuses(status: int, outcome: Outcome) -> None:
    assert http_outcome(status, b'{"text":"x"}').outcome is outcome


def test_a_webhook_body_is_a_json_array_of_the_documents() -> None:
    batch = items("k8s_audit")[:4]
    assert json.loads(webhook_body(batch)) == [i.event for i in batch]


def test_halving_a_rejected_request_isolates_the_bad_events() -> None:
    batch = items()[:9]
    bad = {batch[2].id, batch[7].id}
    requests: list[int] = []

    def send(part: Sequence[Item]) -> tuple[list[Result], bool]:
        requests.append(len(part))
        verdict = Result(Outcome.REJECTED, "HTTP 400") if bad & {i.id for i in part} else Result(Outcome.ACCEPTED)
        return [verdict] * len(part), True

    results = bisect_rejections(batch, send)
    assert [i.id for i, r in zip(batch, results, strict=True) if r.outcome is Outcome.REJECTED] == sorted(bad)
    assert all(r.outcome is Outcome.ACCEPTED for i, r in zip(batch, results, strict=True) if i.id not in bad)
    assert len(requests) < 2 * len(batch)


def test_halving_stops_at_a_transient_failure() -> None:
    batch = items()[:8]

    def send(part: Sequence[Item]) -> tuple[list[Result], bool]:
        if len(part) == 8:
            return [Result(Outcome.REJECTED, "HTTP 400")] * 8, True
        return [Result(Outcome.RETRY, "connection refused")] * len(part), True

    assert [r.outcome for r in bisect_rejections(batch, send)] == [Outcome.RETRY] * 8
