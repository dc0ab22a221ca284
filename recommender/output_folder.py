"""The folders the tool writes (`recommend -o DIR`, `report -o DIR`): it owns them, and nothing else.

A folder holds the files of the last run and a manifest naming them (`MANIFEST`, a name `kubectl apply
-f DIR` ignores). A new run:

- refuses a folder holding files the manifest does not name, files it did not write, unless forced;
  forced, it leaves them as they are (a file with the name of one of its own is replaced);
- removes the files of the last run that it does not write again;
- writes the new set in a temporary folder next to the folder (in the same parent, so on the same
  filesystem) and renames it into place: a run that fails leaves the last set as it was. A folder that
  cannot be renamed (a mount point, the working directory, a read-only parent) or that holds other
  files gets the new files renamed into it one by one instead, once they are all written, the
  manifest covering old and new files until the last rename.

Names are plain file names (no separator, not hidden), checked here whatever they were made from:
nothing is written outside the folder, and nothing over the manifest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping

from recommender.errors import RecommenderError

MANIFEST = ".netpol-recommender-files"
MANIFEST_HEADER = "# The files netpol-recommender wrote in this folder. Its next run replaces them.\n"
NEXT, PREVIOUS = "netpol-recommender-next-", "netpol-recommender-previous-"
"""Temporary folders: the new set being written, and the last set while the new one is renamed in."""


class OutputFolderError(RecommenderError):
    """An output folder cannot be written: it holds files the tool did not write, or a name would leave it."""


def check_name(name: str) -> None:
    """Refuse anything but a plain, visible file name: joined to a folder, it names a file in that folder."""
    if not _is_plain(name):
        raise OutputFolderError(f"{name!r} is not a plain file name: nothing is written under that name")


def _is_plain(name: str) -> bool:
    return bool(name) and not name.startswith(".") and not any(c in name for c in "/\\\0")


def replace_folder(directory: str, files: Mapping[str, str], *, force: bool = False) -> list[str]:
    """Make `directory` hold `files` (name → text) and the manifest, and no other file of an earlier run.

    Raises `OutputFolderError` when the folder holds files the tool did not write (unless `force`: they
    are left as they are) or a name is not a plain file name. Returns the paths written, in order.
    """
    for name in files:
        check_name(name)
    folder = os.path.realpath(directory)
    _recover(folder)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise OutputFolderError(f"{directory} exists and is not a folder")
    owned = _manifest(folder)
    foreign = sorted(set(_entries(folder)) - owned) if os.path.isdir(folder) else []
    if foreign and not force:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputFolderError(
            f"{directory} holds files netpol-recommender did not write ({listed}): give an empty or new "
            "folder, or --force to write into it anyway (those files are left as they are)"
        )
    swap = not foreign and _can_rename(folder)
    parent, base = os.path.split(folder)
    os.makedirs(parent if swap else folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{base}.{NEXT}" if swap else f".{NEXT}", dir=parent if swap else folder)
    try:
        for name, text in files.items():
            _write(os.path.join(staging, name), text)
        _write(os.path.join(staging, MANIFEST), _manifest_text(files))
        if swap:
            _swap_in(staging, folder)
        else:
            _rename_in(staging, folder, files, owned)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone once renamed into place
    return [os.path.join(directory, name) for name in files]


def _can_rename(folder: str) -> bool:
    """The folder can be replaced by a folder renamed from its parent: a writable parent, not a mount
    point, not the working directory or one of its parents (the process would be left in a removed folder)."""
    parent = os.path.dirname(folder)
    if os.path.ismount(folder) or os.path.commonpath([folder, os.getcwd()]) == folder:
        return False
    return os.access(parent, os.W_OK | os.X_OK) if os.path.isdir(parent) else _can_create(parent)


def _can_create(folder: str) -> bool:
    existing = folder
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    return os.access(existing, os.W_OK | os.X_OK)


def _swap_in(staging: str, folder: str) -> None:
    """Rename the new set into place, the last set aside first (`_recover` puts it back after a crash between)."""
    os.chmod(staging, os.stat(folder).st_mode & 0o7777 if os.path.isdir(folder) else 0o755)
    if not os.path.isdir(folder):
        os.rename(staging, folder)
        return
    parent, base = os.path.split(folder)
    previous = tempfile.mkdtemp(prefix=f".{base}.{PREVIOUS}", dir=parent)
    os.rmdir(previous)  # a unique name to rename the last set to
    os.rename(folder, previous)
    try:
        os.rename(staging, folder)
    except BaseException:
        os.rename(previous, folder)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _rename_in(staging: str, folder: str, files: Iterable[str], owned: set[str]) -> None:
    """Rename the new files into the folder one by one, then remove the last run's other files; the
    manifest names old and new files until then, so that no file of ours is ever taken for a foreign one."""
    names = list(files)
    both = os.path.join(staging, f"{MANIFEST}-both")
    _write(both, _manifest_text(sorted(owned | set(names))))
    os.replace(both, os.path.join(folder, MANIFEST))
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(folder, name))
    for name in sorted(owned - set(names)):
        _remove(os.path.join(folder, name))
    os.replace(os.path.join(staging, MANIFEST), os.path.join(folder, MANIFEST))


def _recover(folder: str) -> None:
    """Undo what a run killed while writing left: put the last set back if it was renamed aside and the new
    one not yet in place; remove temporary folders."""
    parent, base = os.path.split(folder)
    if not os.path.isdir(parent):
        return
    previous = sorted(name for name in os.listdir(parent) if name.startswith(f".{base}.{PREVIOUS}"))
    if previous and not os.path.lexists(folder):
        os.rename(os.path.join(parent, previous.pop()), folder)
    leftovers = [os.path.join(parent, name) for name in os.listdir(parent) if name.startswith(f".{base}.{NEXT}")]
    leftovers += [os.path.join(parent, name) for name in previous]
    if os.path.isdir(folder):
        leftovers += [os.path.join(folder, name) for name in os.listdir(folder) if name.startswith(f".{NEXT}")]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


def _entries(folder: str) -> list[str]:
    return [name for name in os.listdir(folder) if name != MANIFEST]


def _manifest(folder: str) -> set[str]:
    """The names the manifest lists (none without a manifest); only plain file names, whoever wrote it."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {line for line in lines if line and not line.startswith("#") and _is_plain(line)}


def _manifest_text(names: Iterable[str]) -> str:
    return MANIFEST_HEADER + "".join(f"{name}\n" for name in names)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o644)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        shutil.rmtree(path)
