"""Checksums on read: a shard's data file is used only once its bytes are known to be the ones its
manifest records (size and sha256).

A file is hashed at most once per state. Its state is its identity on disk: (device, inode, size,
mtime, ctime). Any write through the file system changes mtime and ctime, and ctime cannot be set
back by a user (``os.utime`` sets mtime and atime only), so a file whose identity is the one seen
when it was last hashed holds the bytes that were hashed. Who hashed a state records it:

- in this process (``_VERIFIED``): the same file is not hashed twice by one process;
- on disk, beside the shard (``verified/<file>.json``, a stamp: that identity and its sha256): the
  writer that committed the shard (it hashes the files for the manifest anyway) and any reader that
  hashed a file stamp it, so a later process checks two ``stat`` results instead of every byte.
  Stamps are a cache: one that is missing, unreadable or unwritable (a store shared read-only)
  means the file is hashed again; a stamp for another identity or checksum is ignored.

Mode ``full`` ignores the stamps (every process hashes each file on its first open), ``off`` checks
sizes only (benchmarks: what the check costs). What a stamp cannot see is a change below the file
system (a disk's bit rot that leaves ctime alone): ``forvalue store verify`` hashes every file
whatever the stamps say.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..io import atomic_write_text

VERIFIED = "verified"
MODES = ("stamp", "full", "off")
_VERIFIED: dict[tuple, str] = {}   # identity -> sha256 hashed by this process
_HASHED = {"files": 0, "bytes": 0, "seconds": 0.0}   # what reads of this process hashed, the time checks took


class ChecksumMismatch(ValueError):
    """A data file whose bytes are not the ones its manifest records."""


def identity(path: Path, st: os.stat_result) -> tuple:
    """What names one state of a file: path, device, inode, size, mtime and ctime (ns)."""
    return (str(Path(path).absolute()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stamp_path(path: Path) -> Path:
    return path.parent / VERIFIED / f"{path.name}.json"


def stamps_folder(folder: Path) -> Path | None:
    """The stamps' folder of a shard folder; None when it is a link (it could lead outside the store:
    then nothing is stamped or read there, and each process hashes the files)."""
    d = Path(folder) / VERIFIED
    return None if d.is_symlink() else d


def _stamped(path: Path, ident: tuple) -> str | None:
    """The sha256 a stamp records for this identity of ``path`` (None: no stamp, or another state).
    A stamp that is a link is not followed."""
    if stamps_folder(path.parent) is None:
        return None
    try:
        fd = os.open(stamp_path(path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, encoding="utf-8") as f:
            stamp = json.loads(f.read())
        if tuple(stamp["identity"]) == ident[1:]:
            return str(stamp["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def record(path: Path, st: os.stat_result, sha256: str) -> None:
    """Remember that ``path`` in state ``st`` has ``sha256``: in this process and in its stamp (best
    effort: a store this user may not write is hashed again by the next process)."""
    ident = identity(path, st)
    _VERIFIED[ident] = sha256
    if stamps_folder(path.parent) is None or _stamped(path, ident) == sha256:
        return
    try:
        atomic_write_text(stamp_path(path), json.dumps({"identity": list(ident[1:]), "sha256": sha256}))
    except OSError:
        pass


def forget(folder: Path, names) -> None:
    """Remove the stamps of ``names`` (files moved aside or deleted)."""
    for name in names if stamps_folder(folder) is not None else ():
        try:
            stamp_path(Path(folder) / str(name)).unlink(missing_ok=True)
        except OSError:
            pass


def check(path: Path, st: os.stat_result, data, want: dict | None, mode: str = "stamp") -> None:
    """Raise :class:`ChecksumMismatch` unless ``data`` (the bytes of ``path``, read from the open file
    whose ``fstat`` is ``st``) has the size and sha256 ``want`` records. Hashed only when neither this
    process nor (mode ``stamp``) a stamp has seen this state of the file with that checksum."""
    if mode == "off" or not want:
        return
    if mode not in MODES:
        raise ValueError(f"checksum mode must be one of {', '.join(MODES)}, got {mode!r}")
    t0 = time.perf_counter()
    try:
        _check(path, st, data, want, mode)
    finally:
        _HASHED["seconds"] += time.perf_counter() - t0


def _check(path: Path, st: os.stat_result, data, want: dict, mode: str) -> None:
    if st.st_size != want.get("size", st.st_size):
        raise ChecksumMismatch(f"{path.name} has {st.st_size} bytes, the manifest records {want['size']}")
    sha = want.get("sha256")
    if not sha:
        return
    ident = identity(path, st)
    if _VERIFIED.get(ident) == sha or (mode == "stamp" and _stamped(path, ident) == sha):
        return
    got = hashlib.sha256(data).hexdigest()
    _HASHED["files"] += 1
    _HASHED["bytes"] += st.st_size
    if got != sha:
        raise ChecksumMismatch(f"{path.name}: checksum mismatch")
    record(path, st, got)


def hashed() -> dict:
    """{"files", "bytes"} the reads of this process hashed so far, and "seconds": the time their checks took
    (stamps, hashes)."""
    return dict(_HASHED)


def digest(path: Path) -> dict:
    """{"size", "sha256"} of a file, recorded as verified (the writer's hash for the manifest): the
    identity is taken before and after hashing and recorded only when it did not change meanwhile."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        after = os.fstat(f.fileno())
    if identity(path, before) == identity(path, after):
        record(Path(path), after, h.hexdigest())
    return {"size": after.st_size, "sha256": h.hexdigest()}


__all__ = ["ChecksumMismatch", "MODES", "VERIFIED", "check", "digest", "forget", "hashed", "identity", "record",
           "stamp_path", "stamps_folder"]
