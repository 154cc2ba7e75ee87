"""Where the datasets live: an explicit data root, else the METACOMPRESS_DATA variable.

Nothing in metacompress knows a default location; callers pass ``--data-root`` (or
``data_root=``) or set the environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from metacompress.errors import DataError

ENV_VAR = "METACOMPRESS_DATA"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Return the data root as an absolute path.

    The explicit argument wins; otherwise the ``METACOMPRESS_DATA`` environment variable is
    used (an empty value counts as unset).  Raises :class:`DataError` when neither is given or
    the path is not an existing directory.
    """
    if data_root is None or str(data_root) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise DataError(
                f"no data root given: pass --data-root (data_root=...) or set {ENV_VAR}"
            )
        data_root, origin = env, f" (from {ENV_VAR})"
    else:
        origin = ""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise DataError(f"{root}: data root {what}{origin}")
    return root.resolve()


def require_file(path: Path, expected: str) -> Path:
    """Return ``path`` if it is an existing file, else raise a one-line DataError."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "not found"
        raise DataError(f"{path}: {what} (expected {expected})")
    return path
