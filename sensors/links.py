"""The link rules of the incoming folder, shared by the incoming-folder sensor (at each tick) and the
registration run (which repeats them on the file it reads), so that anyone who can write to incoming/
cannot make the platform read a file outside it:

- a path is read only when it is inside the incoming folder once every link on its way is followed:
  a link to a file outside, and a watched sub-folder (incoming/train, valuation, eval) that is itself
  a link leading outside, are refused;
- a file with more than one hard link is refused (another of its names may be outside the folder,
  and a hard link cannot be told from the original).

FORVALUE_INCOMING_FOLLOW_LINKS=1 lifts both rules (links inside the incoming folder always work).
"""

from __future__ import annotations

import stat
from pathlib import Path

FOLLOW_LINKS_SETTING = "FORVALUE_INCOMING_FOLLOW_LINKS"
ALLOWED_BY = f"{FOLLOW_LINKS_SETTING}=1 allows it"


def in_folder(path: Path, root: Path) -> bool:
    """Whether ``path`` names something in ``root`` (by its name: links on its way not followed)."""
    p = Path(path).absolute()
    return p.is_relative_to(root.absolute()) or p.is_relative_to(root.resolve())


def folder_refusal(folder: Path, root: Path, follow: bool) -> str | None:
    """Why no file of the watched sub-folder ``folder`` may be read (it is a link leading outside
    ``root``), else None."""
    if follow:
        return None
    target = folder.resolve()
    if target.is_relative_to(root.resolve()):
        return None
    return f"a link to {target}, outside the incoming folder; none of its files is read ({ALLOWED_BY})"


def _one_refusal(p: Path, real_root: Path) -> str | None:
    target = p.resolve()
    if not target.is_relative_to(real_root):
        if p.is_symlink():
            return f"a link to {target}, outside the incoming folder; not followed ({ALLOWED_BY})"
        return (f"reached through a linked folder: {target} is outside the incoming folder; not followed "
                f"({ALLOWED_BY})")
    st = p.stat()
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return (f"a file with {st.st_nlink} hard links (another of its names may be outside the incoming "
                f"folder); not read ({ALLOWED_BY})")
    return None


def link_refusal(path: Path, root: Path, follow: bool) -> str | None:
    """Why ``path`` (a file, or an HF dataset folder and every file in it) may not be read under the
    link rules of the incoming folder ``root``, else None. Raises the ``OSError`` of a path that
    cannot be looked at (``FileNotFoundError``: it is gone)."""
    if follow:
        return None
    path = Path(path)
    if not in_folder(path, root):
        return f"not in the incoming folder {root}; not read ({ALLOWED_BY})"
    real_root = root.resolve()
    why = _one_refusal(path, real_root)
    if why is not None or not path.is_dir():
        return why
    for p in sorted(path.rglob("*")):
        why = _one_refusal(p, real_root)
        if why is not None:
            return f"{p}: {why}"
    return None
