"""Every node a witness: the agent checks that each checkpoint the aggregator shows it extends the
last one it saw (RFC 6962 consistency), so a forked or rolled-back store cannot go unnoticed.

Checkpoints arrive on acks. The last accepted one is kept in `spool_dir/witness.json`, so the check
holds across agent restarts. A problem is an alarm: logged at critical level, counted, and handed
to `on_alarm` (the agent seals it as an event of its own stream, `logseal-alarm`). With
`aggregator_pub` configured, checkpoint signatures are checked too; without it only consistency is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.checkpoint import Checkpoint, CheckpointError, Verdict, check_consistent, open_checkpoint

log = logging.getLogger("logseal.witness")

STATE_FILE = "witness.json"


@dataclass(frozen=True)
class Alarm:
    verdict: Verdict
    reason: str
    older: str
    newer: str


def _unsigned(note: str) -> Checkpoint:
    """The checkpoint of a signed note, signatures not checked (no aggregator key configured)."""
    body, _, _ = note.partition("\n\n")
    return Checkpoint.parse(body + "\n")


class Witness:
    def __init__(self, state_dir: Path, aggregator_pub: Ed25519PublicKey | None,
                 prove: Callable[[int, int], list[bytes]], on_alarm: Callable[[Alarm], None]) -> None:
        self._path = state_dir / STATE_FILE
        self._pub = aggregator_pub
        self._prove = prove
        self._on_alarm = on_alarm
        self.last_note = ""
        self.checked = 0
        self.alarms = 0
        with contextlib.suppress(OSError, ValueError, KeyError):
            self.last_note = str(json.loads(self._path.read_text())["checkpoint"])

    def _open(self, note: str) -> Checkpoint:
        if self._pub is None:
            return _unsigned(note)
        origin = note.split("\n", 1)[0]
        return open_checkpoint(note, origin, self._pub)

    def observe(self, note: str) -> None:
        """Check a checkpoint shown on an ack against the last accepted one."""
        if not note or note == self.last_note:
            return
        try:
            newer = self._open(note)
        except CheckpointError as exc:
            self._alarm(Alarm(exc.verdict, exc.reason, self.last_note, note))
            return
        if self.last_note:
            older = self._open(self.last_note)
            if newer.size < older.size:
                verdict = Verdict.ROLLBACK
            elif newer.size == older.size:
                verdict = Verdict.OK if newer.root == older.root and newer.origin == older.origin \
                    else Verdict.INCONSISTENT
            else:
                try:
                    proof = self._prove(older.size, newer.size)
                except Exception as exc:  # the proof is asked again with the next checkpoint
                    log.warning("consistency proof unavailable; will ask again", extra={"reason": str(exc)})
                    return
                verdict = check_consistent(older, newer, proof)
            self.checked += 1
            if verdict is not Verdict.OK:
                self._alarm(Alarm(verdict, verdict.value, self.last_note, note))
                return
        self.last_note = note
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"checkpoint": note}))
        os.replace(tmp, self._path)

    def _alarm(self, alarm: Alarm) -> None:
        self.alarms += 1
        log.critical("ALARM: the aggregator showed a checkpoint that does not extend the last one this node saw",
                     extra={"verdict": alarm.verdict.name, "reason": alarm.reason})
        self._on_alarm(alarm)
