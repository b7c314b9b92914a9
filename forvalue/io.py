"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file ForValue writes goes through :func:`atomic_write` (or its text / bytes / copy / folder
forms): the content is written to a temporary name in the same folder, then renamed into place;
on any failure the temporary file is removed and the old file is left as it was.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask: from /proc on Linux (reading it with os.umask means setting it, which
    other threads would see), else set and restored once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` with a temporary path next to ``path``, then rename it to ``path``. The
    file gets the mode a plain ``open`` would give it (0666 less the umask: a team's shared store
    stays readable to the team), not the 0600 of a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_writable(path: str | Path) -> None:
    """Prove before any work that ``path`` can be written the way :func:`atomic_write` writes it: a
    temporary file is made and removed in its folder (or, where that folder is still to be made, a
    temporary folder in the nearest one that exists). Raises the OSError that writing would meet."""
    path = Path(os.path.abspath(path))
    folder = path.parent
    if folder.is_dir():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
        return
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(folder))
    os.rmdir(tempfile.mkdtemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp"))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_copy(src: str | Path, dst: str | Path) -> Path:
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


@contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name, renamed to ``path`` when the block ends without error
    (an existing ``path`` is replaced only with ``replace``; otherwise it must not exist or be empty)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not replace and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())   # mkdtemp makes 0700
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["atomic_write", "check_writable", "atomic_write_text", "atomic_write_bytes", "atomic_copy", "atomic_dir"]
