"""Output files named on the command line, refused before any work is done (not after) when
no file can be written there."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from apot.errors import UserError, os_error_message


def check_output_file(path: Path | None) -> None:
    """UserError naming the problem and the fix unless a file can be created at ``path``
    (None: nothing to check)."""
    if path is None:
        return
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; name a file")
    if not folder.is_dir():
        raise UserError(f"--out {path}: folder {folder} does not exist (or is a file); "
                        f"create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: folder {folder} is not writable; check its permissions")
    try:  # a folder can pass those checks and still take no file (/proc, a full disk)
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise UserError(f"--out {path}: no file can be created in {folder} "
                        f"({os_error_message(exc)})") from None
    os.close(handle)
    os.unlink(probe)
