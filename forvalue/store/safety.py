"""The feature store's safety parts: folder locks, claims, damaged-shard detection, clean-up.

Locks are OS file locks (``fcntl.flock``) on files under ``<folder>/locks/``: the kernel drops them
when their process dies, so a killed writer never leaves a lock or a claim behind that blocks the
next one. (On a system without ``fcntl`` the store works without these guarantees.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path

from ..errors import StoreError
from .checksums import digest, forget, stamps_folder

try:
    import fcntl
except ImportError:   # not on this platform: no locking
    fcntl = None

LOCKS = "locks"
DAMAGED = "damaged"
_TMP_SHARD = re.compile(r"^\.shard-([0-9a-f]+)\.")


def _lock_dir(folder: Path) -> Path:
    d = folder / LOCKS
    d.mkdir(parents=True, exist_ok=True)
    return d


class FolderLock:
    """The folder's exclusive lock, held for the short planning steps of a writer."""

    def __init__(self, folder: Path, timeout: float = 600.0):
        self.path, self.timeout, self.fd = _lock_dir(folder) / "store.lock", timeout, None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return self
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise StoreError(f"{self.path}: locked by another process for more than {self.timeout:.0f} s")
                time.sleep(0.05)

    def __exit__(self, *exc):
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class Claim:
    """Samples a writer is computing: ``claim-<id>.json`` (the ids) guarded by ``claim-<id>.lock``,
    which the writer keeps locked until it releases the claim (or dies)."""

    def __init__(self, folder: Path, sample_ids: list[str]):
        d = _lock_dir(folder)
        self.id = uuid.uuid4().hex
        self.lock = d / f"claim-{self.id}.lock"
        self.file = d / f"claim-{self.id}.json"
        self.fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        shard_id = hashlib.sha256("\n".join(sample_ids).encode()).hexdigest()[:16]
        self.file.write_text(json.dumps({"sample_ids": sample_ids, "shard_id": shard_id, "pid": os.getpid(),
                                         "created_at": time.time()}))

    def release(self) -> None:
        for p in (self.file, self.lock):
            p.unlink(missing_ok=True)
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def take_claim(folder: Path, sample_ids: list[str]) -> Claim:
    return Claim(folder, sample_ids)


def _alive(lock: Path) -> bool:
    """Whether a claim's lock is held by a living writer (taking it succeeds only when it is not)."""
    if fcntl is None or not lock.exists():
        return lock.exists()
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def live_claims(folder: Path) -> dict[str, set[str]]:
    """{shard id: sample ids} of the claims of living writers; dead writers' claims are removed.
    Call under the folder's lock."""
    out: dict[str, set[str]] = {}
    d = folder / LOCKS
    if not d.exists():
        return out
    for f in d.glob("claim-*.json"):
        lock = f.with_suffix(".lock")
        try:
            claim = json.loads(f.read_text())
        except (OSError, ValueError):
            claim = None
        if claim is not None and _alive(lock):
            out[claim["shard_id"]] = set(claim["sample_ids"])
        elif not _alive(lock):
            f.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
    return out


def claimed_tmp(path: Path, claims: dict[str, set[str]]) -> bool:
    """Whether a temporary file belongs to a living writer (it is named after its claim's shard)."""
    m = _TMP_SHARD.match(path.name)
    return bool(m and m.group(1) in claims)


def remove_stale_tmp(folder: Path, claims: dict[str, set[str]]) -> list[Path]:
    """Remove temporary files that no living writer owns (a killed writer's half-written shard), and
    half-written stamps (a stamp is a cache: one removed while it is written is simply not kept)."""
    removed = []
    for p in folder.glob(".*.tmp"):
        if not claimed_tmp(p, claims):
            p.unlink(missing_ok=True)
            removed.append(p)
    stamps = stamps_folder(folder)
    for p in stamps.glob(".*.tmp") if stamps is not None else ():
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def no_permission(path: Path, e: OSError | None) -> StoreError:
    """The one-line error of a store file this user may not read (the store is left as it is)."""
    return StoreError(f"{path}: no permission to read it ({e.strerror if e else 'permission denied'}); the store "
                      f"belongs to another user or was written with a strict umask: ask its owner to make it "
                      f"readable (chmod -R g+rX) or use a store of your own (--store)")


def _plain_name(name) -> bool:
    """A data file's manifest entry: a plain file name of the shard's own folder (no folder part, no
    absolute path, no '..'), as the store writes them."""
    return (isinstance(name, str) and name.startswith("shard-") and "/" not in name and "\\" not in name
            and "\0" not in name and Path(name).name == name)


def damaged_shard(folder: Path, manifest: Path, *, deep: bool = False) -> tuple[dict | None, str | None]:
    """(manifest, None) for an intact shard, else (manifest or None, what is wrong). The quick check
    (every read) wants both files present with the recorded sizes; ``deep`` also compares sha256
    checksums (hashing every file again, whatever forvalue/store/checksums.py has recorded) and opens the
    data files' footers."""
    try:
        info = json.loads(manifest.read_text())
        files = info["files"]
        ids = info["sample_ids"]
        assert isinstance(ids, list) and {"rows", "samples"} <= set(files)
    except PermissionError as e:   # someone else's store: not damage, and never a reason to move it
        raise no_permission(manifest, e) from None
    except FileNotFoundError:
        return None, None if not manifest.exists() else "manifest unreadable"
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
        return None, f"manifest unreadable ({type(e).__name__})"
    bad = [files[k] for k in ("rows", "samples") if not _plain_name(files[k])]
    if bad:   # never follow it: None, so that setting the shard aside moves the manifest only
        return None, f"manifest damaged: file entry {bad[0]!r} is not a file name in the shard's folder"
    sums = info.get("checksums", {})
    for key in ("rows", "samples"):
        path = folder / files[key]
        if path.is_symlink():
            return None, f"{files[key]} is a link, not a file written by the store"
        if not path.is_file():
            return info, f"{files[key]} is missing"
        if not os.access(path, os.R_OK):
            raise no_permission(path, None)
        want = sums.get(key)
        if want and path.stat().st_size != want["size"]:
            return info, f"{files[key]} has {path.stat().st_size} bytes, the manifest records {want['size']}"
        if deep:
            if want and digest(path)["sha256"] != want["sha256"]:   # hashed whatever is recorded
                return info, f"{files[key]}: checksum mismatch"
            try:
                from .shard_format import check_readable

                check_readable(path)
            except Exception as e:   # pyarrow raises several types for a damaged file
                return info, f"{files[key]}: unreadable data file ({e})"
    return info, None


def quarantine(folder: Path, manifest: Path, info: dict | None, reason: str) -> Path:
    """Move a damaged shard (its manifest and files) to ``damaged/<time>-<shard>/`` with a note."""
    dest = folder / DAMAGED / f"{time.strftime('%Y%m%dT%H%M%S')}-{manifest.stem}-{uuid.uuid4().hex[:6]}"
    dest.mkdir(parents=True, exist_ok=True)
    names = [manifest.name] + (list(info["files"].values()) if isinstance(info, dict) and "files" in info else [])
    for name in names:
        try:
            (folder / name).rename(dest / name)
        except FileNotFoundError:   # another reader moved it first
            pass
    (dest / "REASON.txt").write_text(reason + "\n")
    forget(folder, names[1:])
    return dest


__all__ = ["FolderLock", "Claim", "take_claim", "live_claims", "claimed_tmp", "remove_stale_tmp", "damaged_shard",
           "no_permission", "quarantine", "LOCKS", "DAMAGED"]
