"""Copy the installed dependency closure of a wheel into a target site-packages, offline.

Used by packaging/build-deb.sh when no wheelhouse is given: the distributions the build
interpreter already has installed (the exact files pip installed, as listed in each
distribution's RECORD) are copied, so building the .deb needs no network and no compiler.
Console scripts (RECORD paths outside site-packages) are left out; the package ships its own
launcher. Run it with the interpreter whose environment holds the dependencies:

    python stage_deps.py --site TARGET_SITE_PACKAGES --requires-from TARGET_SITE_PACKAGES/logseal-*.dist-info
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import shutil
import sys
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement


def _requirements(dist: md.Distribution) -> list[Requirement]:
    wanted = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            wanted.append(req)
    return wanted


def closure(roots: list[Requirement]) -> list[md.Distribution]:
    seen: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            sys.exit(f"stage_deps: {req} is not installed in {sys.prefix}; install it or pass --wheelhouse")
        if not req.specifier.contains(dist.version, prereleases=True):
            sys.exit(f"stage_deps: installed {dist.metadata['Name']} {dist.version} does not satisfy {req}")
        seen[key] = dist
        todo.extend(_requirements(dist))
    return sorted(seen.values(), key=lambda d: str(d.metadata["Name"]).lower())


def copy_distribution(dist: md.Distribution, site: Path) -> int:
    copied = 0
    for file in dist.files or []:
        if file.parts[0] == ".." or "__pycache__" in file.parts:
            continue
        source = Path(str(file.locate()))
        if not source.is_file():
            continue
        target = site / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied += 1
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--requires-from", type=Path, required=True, help="the .dist-info folder of the wheel")
    args = parser.parse_args()
    root = md.PathDistribution(args.requires_from)
    for dist in closure(_requirements(root)):
        count = copy_distribution(dist, args.site)
        print(f"stage_deps: {dist.metadata['Name']} {dist.version} ({count} files)")


if __name__ == "__main__":
    main()
