"""The aggregator process applies [retention] every interval_s, logs the legal holds it sees added and
released, and exports what retention deleted; the store verifies afterwards."""

from __future__ import annotations

import re
import urllib.request

from agent.localrun import Workspace, wait_for
from tests.aggregator.retention_kit import RetentionKit, days_ago, event
from tests.conftest import free_port, run_cli


def metric(port: int, pattern: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    match = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_the_aggregator_applies_retention_every_interval_and_honours_holds(workspace: Workspace) -> None:
    policy = '[retention]\nmax_age = { "*" = "30d" }\ninterval_s = 1\n'
    kit = RetentionKit(workspace.root, retention=policy)  # the workspace's store and trusted keys
    for node in ("n1", "n2", "n1", "n1"):
        kit.send([event(days_ago(60))], node=node)
    kit.close()
    held = run_cli("hold", "add", "--store", str(kit.store_dir), "--node", "n2", "--reason", "case 7")
    assert held.returncode == 0, held.stderr
    port = free_port()
    aggregator = workspace.start_aggregator(extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n{policy}')

    wait_for(lambda: not kit.segment_path("00000001.seg").exists() and not kit.segment_path("00000003.seg").exists(),
             30, "the aggregator to delete the expired, unheld segments 1 and 3")
    assert kit.segment_path("00000002.seg").exists()  # held
    assert kit.segment_path("00000004.seg").exists()  # active
    wait_for(lambda: metric(port, r'logseal_aggregator_retention_deleted_segments_total\{rule="max_age"\}') == 2,
             30, "the deleted segments metric to reach 2")
    assert metric(port, "logseal_aggregator_legal_holds_active") == 1
    deleted_bytes = metric(port, r'logseal_aggregator_retention_deleted_bytes_total\{rule="max_age"\}')
    assert deleted_bytes is not None and deleted_bytes > 0
    assert aggregator.logged("legal hold active", hold=1, selector="node=n2", reason="case 7")
    assert aggregator.logged("retention deleted a segment", segment="00000001.seg", rule="max_age")

    second = run_cli("hold", "add", "--store", str(kit.store_dir), "--node", "n9", "--reason", "case 8")
    assert second.returncode == 0, second.stderr
    wait_for(lambda: bool(aggregator.logged("legal hold added", hold=2, selector="node=n9", reason="case 8")), 30,
             "the aggregator to log the hold added while it runs")
    wait_for(lambda: metric(port, "logseal_aggregator_legal_holds_active") == 2, 30, "two holds active")
    released = run_cli("hold", "release", "--store", str(kit.store_dir), "1", "--reason", "case closed")
    assert released.returncode == 0, released.stderr
    wait_for(lambda: not kit.segment_path("00000002.seg").exists(), 30,
             "the aggregator to delete segment 2 once its hold was released")
    wait_for(lambda: metric(port, "logseal_aggregator_legal_holds_active") == 1, 30, "one hold left active")
    assert aggregator.logged("legal hold released", hold=1, selector="node=n2", reason="case closed")
    assert aggregator.stop() == 0
    assert kit.segment_path("00000004.seg").exists()

    code, report, text = kit.verify()
    assert code == 0, text
    assert [d["segment"] for d in report["deleted_by_retention"]] == [
        "00000001.seg", "00000002.seg", "00000003.seg"]
