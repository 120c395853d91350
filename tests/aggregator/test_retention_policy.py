"""The pure retention planner and the signed record format, with plain values; and the [retention]
config table's validation."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.aggregator import retention_policy, retention_records
from agent.aggregator.retention_policy import Hold, SegmentFacts, parse_age, plan, policy_from
from agent.aggregator.retention_records import RetentionRecord, open_record, sign_record
from agent.checkpoint import CheckpointError
from agent.config import load_aggregator_config
from agent.errors import ConfigError

DAY = 86_400 * 10**9
NOW = 20_000 * DAY
POLICY = policy_from({"kubernetes.audit": "400d", "*": "90d"}, 0, "retention")


def seg(number: int, *datasets: tuple[str, float], size: int = 100, active: bool = False,
        holds: tuple[int, ...] = (), received_days_ago: float = 0) -> SegmentFacts:
    """A segment whose newest event per dataset is the given number of days old."""
    return SegmentFacts(f"{number:08d}.seg", size, number, number, len(datasets),
                        tuple((d, NOW - int(age * DAY)) for d, age in datasets),
                        NOW - int(received_days_ago * DAY), active, holds)


def names(decisions: tuple[retention_policy.Decision, ...]) -> list[str]:
    return [d.segment.name for d in decisions]


def test_parse_age_units_and_refusals() -> None:
    assert parse_age("45s") == 45 * 10**9
    assert parse_age("2w") == parse_age("14d") == 14 * DAY
    assert parse_age("12h") == DAY // 2
    for bad in ("0d", "90", "90 days", "1.5d", "-1d", "d", ""):
        with pytest.raises(ValueError, match="is not an age"):
            parse_age(bad)


def test_a_segment_expires_only_when_every_event_is_past_its_own_datasets_age() -> None:
    segments = [
        seg(1, ("system.auth", 91)),                            # past "*" 90d
        seg(2, ("system.auth", 91), ("kubernetes.audit", 300)),  # kubernetes.audit keeps it (400d)
        seg(3, ("kubernetes.audit", 401)),                      # past 400d
        seg(4, ("", 95)),                                       # no dataset: "*"
        seg(5, ("system.auth", 89)),                            # not yet
        seg(6, ("system.auth", 500), active=True),              # never the active segment
    ]
    result = plan(segments, POLICY, NOW)
    assert names(result.deletions) == ["00000001.seg", "00000003.seg", "00000004.seg"]
    assert {d.rule for d in result.deletions} == {"max_age"}
    kept = {d.segment.name: d.reason for d in result.kept}
    assert "kubernetes.audit events until" in kept["00000002.seg"]
    assert "active" in kept["00000006.seg"]


def test_without_a_star_rule_unnamed_datasets_keep_their_segment() -> None:
    policy = policy_from({"system.auth": "1d"}, 0, "retention")
    result = plan([seg(1, ("system.auth", 5)), seg(2, ("system.auth", 5), ("journald", 900)),
                   seg(3), seg(4, active=True)], policy, NOW)
    assert names(result.deletions) == ["00000001.seg"]
    kept = {d.segment.name: d.reason for d in result.kept}
    assert "journald has no max_age" in kept["00000002.seg"]
    assert "no \"*\" max_age" in kept["00000003.seg"]  # no events: ages only under "*"


def test_a_segment_without_events_ages_by_when_its_last_batch_arrived() -> None:
    result = plan([seg(1, received_days_ago=100), seg(2, received_days_ago=10), seg(3, active=True)], POLICY, NOW)
    assert names(result.deletions) == ["00000001.seg"]


def test_a_segment_not_yet_under_a_signed_checkpoint_stays() -> None:
    unsigned = dataclasses.replace(seg(1, ("system.auth", 200)), checkpointed=False)
    for policy in (POLICY, policy_from({}, 1, "retention")):
        result = plan([unsigned, seg(2, active=True)], policy, NOW)
        assert result.deletions == ()
        assert "not yet under a signed checkpoint" in result.kept[0].reason


def test_a_hold_keeps_an_expired_segment() -> None:
    result = plan([seg(1, ("system.auth", 200), holds=(3, 5)), seg(2, ("system.auth", 200)), seg(3, active=True)],
                  POLICY, NOW)
    assert names(result.deletions) == ["00000002.seg"]
    assert result.kept[0].reason.startswith("held by legal hold #3, #5")


def test_max_bytes_takes_the_oldest_unheld_segments_until_under_the_bound() -> None:
    policy = policy_from({}, 250, "retention")
    segments = [seg(1, ("a", 1), size=100), seg(2, ("a", 1), size=100, holds=(1,)), seg(3, ("a", 1), size=100),
                seg(4, ("a", 1), size=100), seg(5, ("a", 1), size=100, active=True)]
    result = plan(segments, policy, NOW)
    assert names(result.deletions) == ["00000001.seg", "00000003.seg", "00000004.seg"]
    assert {d.rule for d in result.deletions} == {"max_bytes"}
    assert result.segment_bytes == 500 and result.bytes_deleted == 300
    assert "held by legal hold #1" in {d.segment.name: d.reason for d in result.kept}["00000002.seg"]


def test_max_bytes_counts_what_max_age_already_frees() -> None:
    policy = policy_from({"*": "30d"}, 200, "retention")
    result = plan([seg(1, ("a", 1)), seg(2, ("a", 40)), seg(3, ("a", 1)), seg(4, ("a", 1), active=True)],
                  policy, NOW)
    assert [(d.segment.name, d.rule) for d in result.deletions] == [("00000001.seg", "max_bytes"),
                                                                    ("00000002.seg", "max_age")]


def test_hold_selectors_become_one_sql_condition() -> None:
    hold = Hold(1, 0, "r", node="n1", action="delete", since_ns=5, until_ns=9)
    assert hold.where() == ("e.node = ? AND e.action = ? AND e.ts_ns >= ? AND e.ts_ns < ?", ["n1", "delete", 5, 9])
    assert Hold(2, 0, "r").where() == ("1", [])
    assert hold.selector().startswith("node=n1 action=delete since=1970-01-01T00:00:00Z")


def test_the_pure_modules_do_no_io() -> None:
    for module in (retention_policy, retention_records):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {str(node.module).split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"os", "socket", "sqlite3", "asyncio", "grpc", "time", "pathlib"}, module.__name__


def record() -> RetentionRecord:
    return RetentionRecord(1, 5, "max_age", "00000001.seg", 1, 4, 0, 3, 1000, "why\nnot", "", 12, 1, 2, "ab" * 32)


def test_a_signed_record_opens_and_any_edited_column_breaks_it() -> None:
    key = Ed25519PrivateKey.generate()
    signed = dataclasses.replace(record(), signature=sign_record(record(), "example/log", key))
    open_record(signed, "example/log", key.public_key())
    for name, value in [("rule", "max_bytes"), ("segment", "00000002.seg"), ("last_batch_id", 5),
                        ("last_leaf", 4), ("bytes", 1), ("note", "other"), ("leaves_root", "cd" * 32),
                        ("events", 0), ("time_ns", 6), ("id", 2)]:
        with pytest.raises(CheckpointError):
            open_record(dataclasses.replace(signed, **{name: value}), "example/log", key.public_key())
    with pytest.raises(CheckpointError):
        open_record(signed, "example/other", key.public_key())
    with pytest.raises(CheckpointError):
        open_record(signed, "example/log", Ed25519PrivateKey.generate().public_key())


def write_config(tmp_path: Path, retention: str) -> Path:
    (tmp_path / "trusted").mkdir(exist_ok=True)
    path = tmp_path / "aggregator.toml"
    path.write_text(f'listen = "127.0.0.1:0"\nstore_dir = "{tmp_path / "store"}"\n'
                    f'trusted_keys_dir = "{tmp_path / "trusted"}"\n{retention}')
    return path


def test_the_retention_table_is_read_into_the_config(tmp_path: Path) -> None:
    config = load_aggregator_config(write_config(
        tmp_path, '[retention]\nmax_age = { "kubernetes.audit" = "400d", "*" = "90d" }\nmax_bytes = 1000\n'
                  'interval_s = 60\n'))
    assert config.retention is not None
    assert config.retention.max_age == {"kubernetes.audit": "400d", "*": "90d"}
    assert (config.retention.max_bytes, config.retention.interval_s) == (1000, 60)
    assert load_aggregator_config(write_config(tmp_path, "")).retention is None


@pytest.mark.parametrize(("table", "message"), [
    ('max_age = { "*" = "90 days" }', r"retention\.max_age\.\*: '90 days' is not an age"),
    ('max_age = { "*" = 90 }', r"retention\.max_age\.\*: must be a string"),
    ('max_age = "90d"', r"retention\.max_age: must be a table"),
    ('max_age = { "a b" = "1d" }', r"retention\.max_age: dataset name 'a b'"),
    ("max_bytes = -1", r"retention\.max_bytes: must be at least 0"),
    ('max_age = { "*" = "1d" }\ninterval_s = 0', r"retention\.interval_s: must be between 1"),
    ('max_age = { "*" = "1d" }\nmax_ages = 1', r"retention\.max_ages: unknown key"),
    ("", r"retention: give max_age .* or max_bytes"),
])
def test_bad_retention_config_is_refused_with_the_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_aggregator_config(write_config(tmp_path, f"[retention]\n{table}\n"))
