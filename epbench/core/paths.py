"""Names that become paths, and the one function that builds every path the suite writes.

What comes in: task, variant and cell names (checked once, when a task file is loaded), and the
parts of an output path below a root folder (`--out`, or the records folder below it). What goes
out: the names unchanged (or a one-line `EpbenchError`), and `Path`s that lie below their root
(or a one-line `EpbenchError`).

    check_name(text, what=…)     a task, axis or variant name made of safe characters only
    file_part(text)              a cell name etc. as one file-name component (`[` → `(`, …)
    output_path(root, *parts)    root/parts…, refused when it would leave root
    check_folder(folder)         `--out` names a folder, or nothing yet: not a file
    inside(root, relative)       a path a record names (`traces`), only below root
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath

from epbench.core.errors import EpbenchError

NAME_CHARACTERS = "letters, digits and _ . + - (not starting with . or -, at most 64)"
MAX_NAME = 64
_NAME = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_.+-]*$")
_NUMBER = re.compile(r"^-[0-9][0-9_.eE+-]*$")  # a negative number, as --sweep values may be
_UNSAFE = re.compile(r"[^A-Za-z0-9_.()=,+-]")


def check_name(text: object, *, what: str, where: str) -> str:
    """`text` when it is a safe name (`NAME_CHARACTERS`, or a negative number); else a one-line
    `EpbenchError`: `where: what: expected …, found 'x/../y'`."""
    ok = (
        isinstance(text, str)
        and len(text) <= MAX_NAME
        and bool(_NAME.match(text) or _NUMBER.match(text))
    )
    if not ok:
        raise EpbenchError(f"{where}: {what}: expected a name of {NAME_CHARACTERS}, found {text!r}")
    return str(text)


def file_part(text: str) -> str:
    """`text` as one file-name component: brackets as parentheses, every other character that is
    not a letter, digit or one of `_.()=,+-` as `-`, no leading dot."""
    part = _UNSAFE.sub("-", text.replace("[", "(").replace("]", ")"))
    return part.lstrip(".") or "unnamed"


def _below(path: Path, root: Path) -> bool:
    """True when `path` lies below (or at) `root` once both are resolved (symlinks followed)."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True


def output_path(root: Path, *parts: str) -> Path:
    """`root/parts[0]/…`: every path the suite writes is built here. Refused (`EpbenchError`)
    when a part is absolute or `..`, or the path, resolved, would leave `root`."""
    root = Path(root)
    for part in parts:
        pure = PurePath(part)
        if pure.is_absolute() or ".." in pure.parts or not str(part):
            raise EpbenchError(
                f"{root}: expected an output path below this folder, found the part {part!r}"
            )
    path = root.joinpath(*parts)
    if not _below(path, root):
        raise EpbenchError(f"{root}: expected an output path below this folder, found {path}")
    return path


def check_folder(folder: Path, *, option: str = "--out") -> Path:
    """`folder` when it is a folder or does not exist yet (its first existing parent being a
    folder); a one-line `EpbenchError` when it, or a parent, is a file."""
    folder = Path(folder)
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                found = "a file" if candidate == folder else f"the file {candidate}"
                raise EpbenchError(f"{option} {folder}: expected a folder, found {found}")
            break
    return folder


def make_folder(folder: Path, *, option: str = "--out") -> Path:
    """`check_folder(folder)`, created with its parents; a one-line `EpbenchError` when that
    fails (no permission, a full disk)."""
    check_folder(folder, option=option)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EpbenchError(
            f"{option} {folder}: expected a folder that can be created, found {err.strerror}"
        ) from None
    return Path(folder)


def inside(root: Path, relative: str, *, where: str, what: str) -> Path:
    """`root/relative` for a path a record names (`traces`): relative, without `..`, and below
    `root` once resolved; else a one-line `EpbenchError` naming `where` and `what`."""
    pure = PurePath(relative)
    path = Path(root) / relative
    if pure.is_absolute() or ".." in pure.parts or not _below(path, root):
        raise EpbenchError(
            f"{where}: {what}: expected a path below the results folder {root}, found {relative!r}"
        )
    return path
