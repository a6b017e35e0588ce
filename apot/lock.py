"""One writer per output folder: an exclusive lock held while a run trains or a dataset is
prepared.

The lock is ``flock`` on a file in the folder. The kernel releases it when the holder exits,
however it ends (SIGKILL, a node crash on NFS once the server notices), so a lock left by a
killed process is simply taken over: no pid file to judge stale. The file records the holder
(host, pid, command, start time) for the message a second writer gets; it is emptied when the
holder finishes, so a non-empty file found unlocked tells of a holder that was killed.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".apot.lock"


def holder_record() -> dict:
    """This process, as a lock file names it."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "command": " ".join(sys.argv[:2]) or "python",
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def describe_holder(text: str) -> str:
    """'host H, pid P (command, since T)' from a lock file's content, or a plain fallback."""
    try:
        held = json.loads(text)
        return (f"host {held['host']}, pid {held['pid']} ({held['command']}, since "
                f"{held['since']})")
    except (ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder)"


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder if needed) or raise a UserError naming the
    holder at once; ``what`` names the folder's content in messages ("run", "dataset")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            handle.seek(0)
            raise UserError(f"{what} folder {folder} is in use by {describe_holder(handle.read())}"
                            f"; wait for it to finish or stop it, or use another folder") from None
        handle.seek(0)
        left = handle.read()
        if left.strip():
            print(f"apot: taking over the lock of {folder} left by "
                  f"{describe_holder(left)}, which is no longer running", file=sys.stderr)
        _rewrite(handle, json.dumps(holder_record()) + "\n")
        try:
            yield
        finally:
            _rewrite(handle, "")
    finally:
        handle.close()  # releases the lock


@contextlib.contextmanager
def writing(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """``exclusive(folder, what)``; a folder this call created is removed again if the block
    fails before anything but the lock was written into it (no empty folder left behind)."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        with exclusive(folder, what):
            yield
    except BaseException:
        if created:
            remove_if_empty(folder)
        raise


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing but its lock file."""
    try:
        if {p.name for p in folder.iterdir()} <= {LOCK_NAME}:
            (folder / LOCK_NAME).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass  # someone else's now, or already gone


def _rewrite(handle, text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()
