"""Where commands may write: never over their input, never over an existing file unless forced,
never through a link out of an output folder.  Every check runs before any work or any write."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from metacompress.errors import FormatError, UserError


def check_output_file(output: str | os.PathLike, inputs: list[str | os.PathLike] = (), force: bool = False,
                      option: str = "-o") -> Path:
    """``output`` if a file may be written there: not a folder, in a folder, not one of ``inputs``
    (also through links), and new unless ``force``."""
    output = Path(output)
    parent = output.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{option} {output}: {parent} is not a folder")
    if output.is_dir():
        raise UserError(f"{option} {output}: is a folder; give a file name")
    for source in inputs:
        if output.exists() and Path(source).exists() and os.path.samefile(output, source):
            raise UserError(f"{option} {output}: is the input file {source}; write to another file")
    if (output.exists() or output.is_symlink()) and not force:
        raise UserError(f"{option} {output}: already exists; remove it or pass --force to overwrite it")
    return output


def safe_relative_path(name: str, what: str) -> PurePosixPath:
    """A stored relative path checked before use: no absolute path, no empty, ``.`` or ``..``
    component, no NUL or backslash.  Raises FormatError naming ``what``."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or "\0" in name or "\\" in name:
        raise FormatError(f"{what} has a name that cannot be written safely: {name!r}")
    return PurePosixPath(*parts)


def check_output_tree(root: Path, relative_paths: list[PurePosixPath], force: bool = False,
                      option: str = "-o") -> list[Path]:
    """The files ``relative_paths`` under ``root``, after checking that none collide (a name twice,
    or a file where another needs a folder), that no folder on the way is a link (writes would
    leave ``root``) or a file, and that none exists unless ``force``."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{option} {root}: is a file, not a folder")
    seen: dict[PurePosixPath, int] = {}
    folders: set[PurePosixPath] = set()
    for i, rel in enumerate(relative_paths):
        if rel in seen:
            raise FormatError(f"items {seen[rel]} and {i} would both be written to {root / rel}; "
                              "extract one of them with --items")
        seen[rel] = i
        folders.update(rel.parents)
    for rel, i in seen.items():
        if rel in folders:
            raise FormatError(f"item {i} would be written to {root / rel}, which other items need as a folder")
    checked: set[PurePosixPath] = set()
    targets = []
    for rel in relative_paths:
        for folder in reversed(rel.parents[:-1]):  # the folders below root, outermost first
            if folder in checked:
                continue
            path = root / folder
            if path.is_symlink():
                raise UserError(f"{option} {root}: {path} is a link; extract does not write through links")
            if path.exists() and not path.is_dir():
                raise UserError(f"{option} {root}: {path} is a file where a folder is needed")
            checked.add(folder)
        target = root / rel
        if target.is_dir() and not target.is_symlink():
            raise UserError(f"{option} {root}: {target} is a folder where a file is needed")
        if (target.exists() or target.is_symlink()) and not force:
            raise UserError(f"{option} {root}: {target} already exists; remove it or pass --force to overwrite")
        targets.append(target)
    return targets


@contextmanager
def undone_on_error(root: Path, targets: list[Path]) -> Iterator[None]:
    """If the block fails (disk full, read-only, interrupted), remove the ``targets`` it created
    and the folders (``root``, those above it and those below) that did not exist before.
    Files that existed before (overwritten with --force) are left as they are."""
    new_files = [t for t in targets if not os.path.lexists(t)]
    new_folders = {folder for t in [root, *targets] for folder in (t, *t.parents)
                   if folder not in new_files and not os.path.lexists(folder)}
    try:
        yield
    except BaseException:
        for path in new_files:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        for folder in sorted(new_folders, key=lambda f: len(f.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:  # holds something this run did not write
                pass
        raise
