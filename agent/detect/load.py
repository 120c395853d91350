"""Reading rule files: paths, folders and the built-in packs. The only module here that does I/O.

Specs: `builtin:kubernetes`, `builtin:linux`, `builtin:logseal` (pipeline integrity, over the
aggregator's own `logseal.security` events), `builtin:all`; or a `.yml`/`.yaml` file; or a folder
(its rule files, recursively, in name order).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from agent.detect.errors import RuleError
from agent.detect.rules import RawDoc, parse_documents

RULES_DIR = Path(__file__).parent / "rules"

# folder under rules/ -> (licence, ruleset) of the rules it holds
FOLDERS = {
    "kubernetes/sigmahq": ("DRL-1.1", "SigmaHQ"),
    "kubernetes/falco": ("Apache-2.0", "logseal port of Falco k8s_audit rules"),
    "kubernetes/logseal": ("Apache-2.0", "logseal"),
    "linux/sigmahq": ("DRL-1.1", "SigmaHQ"),
    "linux/logseal": ("Apache-2.0", "logseal"),
    "logseal": ("Apache-2.0", "logseal"),
}
PACKS = {
    "kubernetes": ("kubernetes/sigmahq", "kubernetes/falco", "kubernetes/logseal"),
    "linux": ("linux/sigmahq", "linux/logseal"),
    "logseal": ("logseal",),
}
PACKS["all"] = PACKS["kubernetes"] + PACKS["linux"] + PACKS["logseal"]


def _rule_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def _read(path: Path, license: str, ruleset: str, shown: str) -> list[RawDoc]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(shown, "", f"cannot read: {exc}") from None
    return parse_documents(text, shown, license, ruleset)


@lru_cache(maxsize=8)
def _builtin(pack: str) -> tuple[RawDoc, ...]:
    """The parsed documents of a built-in pack (read once per process; documents are never mutated)."""
    docs: list[RawDoc] = []
    for folder in PACKS[pack]:
        license, ruleset = FOLDERS[folder]
        for path in _rule_files(RULES_DIR / folder):
            docs.extend(_read(path, license, ruleset, f"builtin:{pack}/{path.relative_to(RULES_DIR)}"))
    return tuple(docs)


def read_specs(specs: Sequence[str]) -> list[RawDoc]:
    docs: list[RawDoc] = []
    for spec in specs:
        if spec.startswith("builtin:"):
            pack = spec.removeprefix("builtin:")
            if pack not in PACKS:
                raise RuleError(spec, "", f"no such pack: choose one of {', '.join('builtin:' + p for p in PACKS)}")
            docs.extend(_builtin(pack))
            continue
        path = Path(spec)
        if path.is_dir():
            files = _rule_files(path)
            if not files:
                raise RuleError(spec, "", "folder holds no .yml or .yaml rule files")
            for f in files:
                docs.extend(_read(f, "unspecified", "custom", str(f)))
        elif path.is_file():
            docs.extend(_read(path, "unspecified", "custom", spec))
        else:
            raise RuleError(spec, "", "no such file or folder (or use builtin:kubernetes, builtin:linux)")
    return docs
