"""Connections to catalog files through one in-memory DuckDB per process.

Starting a DuckDB database costs ~25 ms (its built-in catalog is built each time), attaching a file
to a running one ~3 ms. The catalog opens a short-lived connection for every query (so that other
processes can take the file between two of them: DuckDB allows one writer process), hundreds per
Dagster run: each one attaches the file to this process's in-memory DuckDB, and the last one to
finish detaches it, which releases the file's lock exactly as closing a database did.

A file is attached once at a time in a process (DuckDB refuses a second attachment of the same file):
connections that overlap share it (counted), read-only requests share a read-write attachment, and
a write while only readers hold it is refused as DuckDB refuses a second configuration of one file.
The in-memory DuckDB is closed before a fork when no file is attached; a forked child starts its own.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass


@dataclass
class _Held:
    alias: str
    read_only: bool
    users: int = 0


class Attachments:
    """The process's in-memory DuckDB and the catalog files attached to it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self._db = None
        self._held: dict[str, _Held] = {}

    def _database(self):
        import duckdb

        if self._db is None:
            self._db, self._held = duckdb.connect(":memory:"), {}
        return self._db

    def before_fork(self) -> None:
        """Before a fork: an idle in-memory DuckDB is closed (the child inherits none)."""
        self._lock.acquire()
        if self._db is not None and not self._held:
            self._db.close()
            self._db = None

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> None:
        """In a forked child: a DuckDB the parent was using is not usable here (its threads did not
        follow) and must not be closed either (closing joins those threads: it would hang): it is kept,
        unused, and the child starts its own."""
        if self._db is not None:
            _INHERITED.append(self._db)
        self._lock, self._db, self._held = threading.Lock(), None, {}

    def open(self, path: str, read_only: bool):
        """A connection (a cursor of the in-memory DuckDB) whose default database is the file at ``path``.
        Raises DuckDB's errors as connecting would (a lock held by another process: ``IOException``)."""
        import duckdb

        with self._lock:
            db = self._database()
            held = self._held.get(path)
            if held is not None and held.read_only and not read_only:
                raise duckdb.ConnectionException(f"{path} is open read-only in this process: a different "
                                                 f"configuration cannot write it at the same time")
            if held is None:
                alias = f"catalog_{next(self._names)}"
                db.execute(f"ATTACH ? AS {alias}" + (" (READ_ONLY)" if read_only else ""), [path])
                try:   # where it spills, as a file database would (refused once a spill folder is in use)
                    db.execute("SET temp_directory = ?", [path + ".tmp"])
                except duckdb.Error:
                    pass
                held = self._held[path] = _Held(alias, read_only)
            held.users += 1
            try:
                con = db.cursor()
                con.execute(f"USE {held.alias}")
            except BaseException:
                self._release(path)
                raise
        return con

    def close(self, path: str, con) -> None:
        """Close ``con``; the file is detached (its lock released) when no connection uses it."""
        try:
            con.close()
        finally:
            with self._lock:
                self._release(path)

    def _release(self, path: str) -> None:
        held = self._held.get(path)
        if held is None:
            return
        held.users -= 1
        if held.users <= 0:
            del self._held[path]
            self._db.execute(f"DETACH {held.alias}")


_INHERITED: list = []   # DuckDBs a forked child inherited: never used, never closed
ATTACHMENTS = Attachments()
os.register_at_fork(before=ATTACHMENTS.before_fork, after_in_parent=ATTACHMENTS.after_fork_in_parent,
                    after_in_child=ATTACHMENTS.after_fork_in_child)

__all__ = ["ATTACHMENTS", "Attachments"]
