from __future__ import annotations

import stat
from pathlib import Path

from agent.cli import main
from agent.keys import load_private_key, load_public_key
from agent.seal import key_id_of


def test_keygen_writes_a_private_key_0600_and_its_public_half(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--node-id", "node-7", "--out", str(tmp_path / "k")]) == 0
    key, pub = tmp_path / "k" / "node-7.key", tmp_path / "k" / "node-7.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key_id_of(load_private_key(key).public_key()) == key_id_of(load_public_key(pub))
    assert "node-7.pub" in capsys.readouterr().out


def test_keygen_never_overwrites_a_key(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--node-id", "n", "--out", str(tmp_path)]) == 0
    before = (tmp_path / "n.key").read_bytes()
    assert main(["keygen", "--node-id", "n", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "n.key").read_bytes() == before


def test_keygen_refuses_a_node_id_that_is_a_path(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--node-id", "../evil", "--out", str(tmp_path)]) == 2
    assert "--node-id" in capsys.readouterr().err
