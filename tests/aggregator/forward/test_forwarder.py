"""Forwarding from a real store to real receivers started here (HEC, _bulk, webhook, TLS syslog).

Each test fills a store through the real ingest path and drives a `Forwarder` pass by pass with a
fake clock for its backoff, so outages and restarts are deterministic.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.aggregator.forward.config import ForwardConfig
from agent.aggregator.forward.forwarder import Forwarder, Forwarding
from agent.aggregator.forward.senders import make_sender
from agent.aggregator.forward.source import StoreReader
from agent.wire import batch_from_bytes
from tests.aggregator.forward.kit import auth_events, normalized, store
from tests.aggregator.forward.receivers import HttpReceiver, SyslogListener, sd_params
from tests.aggregator.storekit import Kit
from tests.conftest import free_port
from tests.tls_material import make_tls_material

TOKEN = "8f2c1d7e-hec-token-never-logged"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path / "store")
    yield k
    k.close()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "hec.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def receivers() -> Iterator[list[HttpReceiver]]:
    started: list[HttpReceiver] = []
    yield started
    for r in started:
        r.stop()


def start(receivers: list[HttpReceiver], kind: str, **kwargs: Any) -> HttpReceiver:
    receiver = HttpReceiver(kind, **kwargs)
    receivers.append(receiver)
    return receiver


OPEN: list[Forwarder] = []


@pytest.fixture(autouse=True)
def close_forwarders() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def make(kit: Kit, clock: Clock | None = None, **fields: Any) -> Forwarder:
    config = ForwardConfig(**{"backoff_initial_ms": 100, "backoff_max_ms": 400, "timeout_s": 5, **fields})
    fwd = Forwarder(config, make_sender(config), StoreReader(kit.directory), kit.directory / "forward",
                    clock=clock or Clock(), jitter=lambda: 1.0)
    OPEN.append(fwd)
    return fwd


def drain(fwd: Forwarder, passes: int = 100) -> None:
    """Step until everything stored is sent (the clock is not moved: a failure is a test failure)."""
    for _ in range(passes):
        fwd.step()
        assert not fwd.stats.failing, fwd.stats.last_error
        if fwd.caught_up:
            return
    raise AssertionError(f"not caught up after {passes} passes")


def dead_letters(fwd: Forwarder) -> list[dict[str, Any]]:
    path = fwd.dead_letter_path
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_stored_event_reaches_splunk_hec_once_in_order(kit: Kit, token_file: Path,
                                                             receivers: list[HttpReceiver]) -> None:
    ids = store(kit, normalized("k8s_audit"), stream="k8s") + store(kit, normalized("syslog"), stream="auth")
    ids += store(kit, normalized("auditd"), node="node-2", stream="audit")
    hec = start(receivers, "hec", token=TOKEN)
    fwd = make(kit, type="splunk_hec", url=hec.url(), token_file=token_file, batch_size=7, index="audit")
    drain(fwd)
    assert hec.ids() == ids and len(set(ids)) == len(ids) == 75
    assert [e["fields"]["event_id"] for e in hec.hec_envelopes] == ids
    assert {e["index"] for e in hec.hec_envelopes} == {"audit"}
    assert {e["sourcetype"] for e in hec.hec_envelopes} == {"logseal:kubernetes.audit", "logseal:system.auth",
                                                           "logseal:auditd.log"}
    assert hec.requests == 11  # ceil(75 / 7)
    assert hec.problems == []
    assert (fwd.stats.forwarded, fwd.stats.lag, fwd.stats.dead_lettered) == (75, 0, 0)
    assert json.loads(fwd.cursor_path.read_text())["batch_id"] > 1


def test_a_wrong_token_is_retried_and_never_logged(kit: Kit, tmp_path: Path, receivers: list[HttpReceiver],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    store(kit, auth_events(3))
    hec = start(receivers, "hec", token="the-right-one")
    wrong = tmp_path / "wrong.token"
    wrong.write_text(TOKEN)
    wrong.chmod(0o600)
    clock = Clock()
    fwd = make(kit, clock, type="splunk_hec", url=hec.url(), token_file=wrong)
    with caplog.at_level(logging.DEBUG):
        assert fwd.step() == 0
    assert fwd.stats.failing and "HTTP 401" in fwd.stats.last_error
    assert dead_letters(fwd) == [] and fwd.position == (1, 0)  # not dead-lettered: a config error
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)  # the sentence and its fields
    assert "HTTP 401" in logged and TOKEN not in logged


def test_elasticsearch_dead_letters_the_rejected_item_and_dedups_a_resend(kit: Kit,
                                                                          receivers: list[HttpReceiver]) -> None:
    ids = store(kit, auth_events(20))
    es = start(receivers, "bulk")
    es.reject_ids = {ids[3]}
    fwd = make(kit, type="elasticsearch", url=f"http://127.0.0.1:{es.port}", batch_size=8)
    drain(fwd)
    assert sorted(es.index) == sorted(set(ids) - {ids[3]})
    assert [d["event"]["id"] for d in es.events] == [i for i in ids if i != ids[3]]
    (dead,) = dead_letters(fwd)
    assert dead["event_id"] == ids[3] and dead["document"]["event"]["id"] == ids[3]
    assert "400" in dead["reason"] and "mapper_parsing_exception" in dead["reason"]
    assert os.stat(fwd.dead_letter_path).st_mode & 0o777 == 0o600
    assert (fwd.stats.forwarded, fwd.stats.dead_lettered) == (19, 1)
    fwd.close()
    # A crash that tore the cursor file: everything is sent again, Elasticsearch keeps one copy by _id.
    fwd.cursor_path.write_text('{"version": 1, "batch_id": 3')
    again = make(kit, type="elasticsearch", url=f"http://127.0.0.1:{es.port}", batch_size=8)
    assert again.position == (1, 0)
    drain(again)
    assert len(es.index) == 19 and len(es.events) == 19
    assert again.stats.forwarded == 19  # 409 conflicts count as delivered


def test_a_webhook_rejecting_one_event_gets_the_rest_and_the_one_is_dead_lettered(
        kit: Kit, receivers: list[HttpReceiver]) -> None:
    ids = store(kit, auth_events(16))
    hook = start(receivers, "webhook", token="s3cret")
    hook.reject_ids = {ids[10]}
    token = kit.directory.parent / "hook.token"
    token.write_text("s3cret")
    token.chmod(0o600)
    fwd = make(kit, type="webhook", url=hook.url(), token_file=token, batch_size=16)
    drain(fwd)
    assert hook.ids() == [i for i in ids if i != ids[10]]
    assert [d["event_id"] for d in dead_letters(fwd)] == [ids[10]]
    assert "HTTP 422" in dead_letters(fwd)[0]["reason"]


def test_an_outage_stops_the_output_and_it_resumes_from_the_cursor_with_nothing_lost(
        kit: Kit, token_file: Path, receivers: list[HttpReceiver]) -> None:
    port = free_port()
    ids = store(kit, auth_events(10))
    clock = Clock()
    fwd = make(kit, clock, type="splunk_hec", url=f"http://127.0.0.1:{port}/services/collector/event",
               token_file=token_file, batch_size=5)
    assert fwd.step() == 0  # nobody listens
    assert fwd.stats.failing and fwd.stats.retries == 1 and fwd.position == (1, 0)
    hec = start(receivers, "hec", token=TOKEN, port=port)
    assert fwd.step() == 0 and hec.requests == 0  # still backing off
    clock.now += 0.1
    assert fwd.step() == 5 and fwd.step() == 5  # a pass sends one request of batch_size
    assert hec.ids() == ids and not fwd.stats.failing
    # The receiver dies while more events arrive; the ones it never answered are sent once it is back.
    hec.stop()
    receivers.remove(hec)
    more = store(kit, auth_events(7))
    assert fwd.step() == 0 and fwd.stats.retries == 2
    position = fwd.position
    clock.now += 0.1
    assert fwd.step() == 0 and fwd.stats.retries == 3 and fwd.position == position
    assert fwd.next_attempt - clock.now == pytest.approx(0.2)  # doubled
    back = start(receivers, "hec", token=TOKEN, port=port)
    clock.now += 0.2
    drain(fwd)
    assert back.ids() == more
    assert fwd.stats.forwarded == 17 and fwd.stats.lag == 0


def test_transient_statuses_back_off_exponentially_then_deliver(kit: Kit, token_file: Path,
                                                                receivers: list[HttpReceiver]) -> None:
    ids = store(kit, auth_events(4))
    hec = start(receivers, "hec", token=TOKEN)
    hec.statuses = [503, 429, 500]
    clock = Clock()
    fwd = make(kit, clock, type="splunk_hec", url=hec.url(), token_file=token_file)
    delays = []
    for _ in range(3):
        assert fwd.step() == 0
        delays.append(round(fwd.next_attempt - clock.now, 3))
        clock.now = fwd.next_attempt
    assert delays == [0.1, 0.2, 0.4]
    assert fwd.step() == 4 and hec.ids() == ids and hec.requests == 4


def test_a_restarted_forwarder_resumes_from_its_persisted_cursor(kit: Kit, receivers: list[HttpReceiver]) -> None:
    hook = start(receivers, "webhook")
    first = store(kit, auth_events(9))
    fwd = make(kit, type="webhook", url=hook.url(), batch_size=4)
    drain(fwd)
    fwd.close()
    second = store(kit, auth_events(6))
    restarted = make(kit, type="webhook", url=hook.url(), batch_size=4)
    assert restarted.position == fwd.position
    drain(restarted)
    assert hook.ids() == first + second


def test_start_at_newest_skips_what_was_stored_before(kit: Kit, receivers: list[HttpReceiver]) -> None:
    hook = start(receivers, "webhook")
    store(kit, auth_events(5))
    fwd = make(kit, type="webhook", url=hook.url(), start_at="newest")
    later = store(kit, auth_events(3))
    drain(fwd)
    assert hook.ids() == later


def test_datasets_filter_and_ocsf_documents(kit: Kit, receivers: list[HttpReceiver]) -> None:
    hook = start(receivers, "webhook")
    store(kit, normalized("syslog"), stream="auth")
    k8s = store(kit, normalized("k8s_audit"), stream="k8s")
    store(kit, normalized("auditd"), stream="audit")
    fwd = make(kit, type="webhook", url=hook.url(), datasets=["kubernetes.audit"], format="ocsf")
    drain(fwd)
    assert hook.ids() == k8s
    assert {d["class_uid"] for d in hook.events} == {6003}
    assert fwd.stats.skipped == 40 and fwd.stats.lag == 0


def test_tls_syslog_receives_every_event_as_an_octet_counted_rfc5424_frame(kit: Kit, tmp_path: Path) -> None:
    tls = make_tls_material(tmp_path / "tls")
    listener = SyslogListener(tls=(tls["server"], tls["server-key"]))
    try:
        ids = store(kit, normalized("auditd"), stream="audit") + store(kit, normalized("syslog"), stream="auth")
        fwd = make(kit, type="syslog", address=f"127.0.0.1:{listener.port}", tls_ca=tls["ca"], format="ocsf",
                   batch_size=6)
        drain(fwd)
        messages = listener.wait(len(ids))
        fwd.close()
    finally:
        listener.stop()
    assert listener.problems == [] and listener.handshake_failures == 0
    assert [sd_params(m)["id"] for m in messages] == ids
    docs = [json.loads(m.group("msg")) for m in messages]
    assert [d["metadata"]["uid"] for d in docs] == ids
    assert {d["class_uid"] for d in docs[:5]} == {1007, 0}  # execs and other auditd records
    assert 3002 in {d["class_uid"] for d in docs[5:]}
    assert {m.group("host") for m in messages} == {"node-1"}


def test_tls_syslog_refuses_a_receiver_its_ca_did_not_sign(kit: Kit, tmp_path: Path) -> None:
    tls, other = make_tls_material(tmp_path / "tls"), make_tls_material(tmp_path / "other")
    listener = SyslogListener(tls=(tls["server"], tls["server-key"]))
    try:
        store(kit, auth_events(3))
        fwd = make(kit, type="syslog", address=f"127.0.0.1:{listener.port}", tls_ca=other["ca"])
        assert fwd.step() == 0
        fwd.close()
    finally:
        listener.stop()
    assert fwd.stats.failing and "CERTIFICATE_VERIFY_FAILED" in fwd.stats.last_error
    assert fwd.position == (1, 0) and listener.messages == []


def test_forwarding_threads_follow_new_events_and_stop_promptly(kit: Kit, token_file: Path,
                                                                receivers: list[HttpReceiver]) -> None:
    hec = start(receivers, "hec", token=TOKEN)
    hook = start(receivers, "webhook")
    forwarding = Forwarding([ForwardConfig(type="splunk_hec", url=hec.url(), token_file=token_file, linger_ms=5000,
                                           name="splunk"),
                             ForwardConfig(type="webhook", url=hook.url(), linger_ms=5000, name="hook")],
                            kit.directory)
    forwarding.start()
    try:
        ids = store(kit, auth_events(12))
        forwarding.wake()  # as the server does after each stored batch: no waiting out the linger
        assert hec.wait_for_events(12, timeout_s=10) == ids
        assert hook.wait_for_events(12, timeout_s=10) == ids
    finally:
        started = time.monotonic()
        forwarding.close()
    assert time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t.name.startswith("logseal-forward-")]
    stats = forwarding.stats()
    assert (stats["splunk"].forwarded, stats["hook"].forwarded) == (12, 12)


def test_a_stored_batch_that_cannot_be_read_is_noted_in_the_dead_letter_file_and_the_rest_flow(
        kit: Kit, receivers: list[HttpReceiver]) -> None:
    ids = store(kit, auth_events(12), per_batch=4)
    segment, offset, length = kit.records()[1]
    path = kit.directory / "segments" / segment
    data = bytearray(path.read_bytes())
    payload = batch_from_bytes(bytes(data[offset + 9:offset + length - 4])).payload  # the record's batch bytes
    at = data.index(payload, offset) + len(payload) // 2
    data[at] ^= 0xFF  # inside batch 2's compressed payload: its signed digest no longer matches
    path.write_bytes(bytes(data))
    hook = start(receivers, "webhook")
    fwd = make(kit, type="webhook", url=hook.url())
    drain(fwd)
    assert hook.ids() == ids[:4] + ids[8:]
    (problem,) = dead_letters(fwd)
    assert problem["reason"].startswith("batch 2 ") and "logseal verify" in problem["reason"]
    assert fwd.stats.dead_lettered == 1 and fwd.stats.lag == 0
