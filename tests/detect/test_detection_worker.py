"""The aggregator's detection worker process: alerts in batch order, state handed back at close,
and no worker left behind when the aggregator dies."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import orjson

from agent.aggregator.detection import DetectionShell
from agent.localrun import Workspace, wait_for

from .helpers import k8s


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_alerts_come_back_in_batch_order_and_the_state_is_saved_after_the_last_batch(tmp_path: Path) -> None:
    shell = DetectionShell(["builtin:kubernetes"], tmp_path, None)
    ids = [f"n:s:{i}:0" for i in range(300)]
    for i, eid in enumerate(ids):  # each a single-event batch; every one fires "K8s Secret Deleted"
        body = orjson.dumps(k8s("delete", "secrets", eid=eid, ts=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                                objectRef={"resource": "secrets", "namespace": "default", "name": f"s{i}"}))
        shell.submit_body(body)
    shell.close()
    fired = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    deleted = [a["logseal"]["alert"]["event_ids"][0] for a in fired if a["rule"]["name"] == "K8s Secret Deleted"]
    assert deleted == ids
    assert shell.stats.events == 300 and shell.stats.alerts == len(fired)
    assert json.loads((tmp_path / "detect.state").read_bytes())["emitted"]  # the worker's dedup memory came back


def test_a_restarted_shell_does_not_repeat_an_alert(tmp_path: Path) -> None:
    body = orjson.dumps(k8s("delete", "secrets", eid="n:s:1:0", objectRef={"resource": "secrets"}))
    for _ in range(2):  # the same batch, replayed after a restart
        shell = DetectionShell(["builtin:kubernetes"], tmp_path, None)
        shell.submit_body(body)
        shell.close()
    fired = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["rule"]["name"] for a in fired].count("K8s Secret Deleted") == 1


def test_the_worker_ends_when_the_aggregator_is_killed(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    workers: list[int] = []
    try:
        aggregator = ws.start_aggregator(extra='[detect]\nrules = ["builtin:logseal"]\n')
        wait_for(lambda: bool(children_of(aggregator.pid)), 30, "the detection worker to start")
        workers = children_of(aggregator.pid)
        aggregator.kill()
        wait_for(lambda: not any(alive(pid) for pid in workers), 30,
                 f"the detection worker {workers} to end after its aggregator was killed")
    finally:
        ws.stop_all()
        for pid in workers:  # only if the test failed: the worker this test caused to start
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
