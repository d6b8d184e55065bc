"""Recognising files that sit where a model should but are something else, before a loader chokes on them.

The commonest is a Git LFS pointer: cloning a Hugging Face repository without Git LFS leaves, under each
model's name, a text file of about 130 bytes ("version https://git-lfs.github.com/spec/v1", the object's
sha256 and its size). Loaders then report a corrupt protobuf or pickle, which sends users looking in the
wrong place.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
_LFS_POINTER_MAX_BYTES = 1024  # real pointers are ~130 bytes; reading more would only slow big files
_LFS_SIZE = re.compile(rb"^size (\d+)\s*$", re.MULTILINE)


def git_lfs_pointer_size(path: str | os.PathLike) -> int | None:
    """The size of the file a Git LFS pointer stands for (0 if it does not say), or None if `path` is no pointer."""
    try:
        with open(path, "rb") as f:
            head = f.read(_LFS_POINTER_MAX_BYTES + 1)
    except OSError:
        return None
    if len(head) > _LFS_POINTER_MAX_BYTES or not head.startswith(LFS_POINTER_PREFIX):
        return None
    found = _LFS_SIZE.search(head)
    return int(found[1]) if found else 0


def human_size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} bytes"


def git_lfs_pointer_message(path: str | os.PathLike, size: int) -> str:
    """What to tell a user whose model file is a Git LFS pointer of the model of `size` bytes."""
    stands_for = f" (the {human_size(size)} model)" if size else ""
    return (
        f"this is a Git LFS pointer, not the model: a {Path(path).stat().st_size}-byte text file standing for the "
        f"real file{stands_for}, left by a git clone without Git LFS. Download the file itself (the Hugging Face "
        "page's download button, or `git lfs pull` in the clone) and put it in place of this one."
    )
