"""Making a rename or an unlink durable: the directory entry itself must reach the disk."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path | str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
