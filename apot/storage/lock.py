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

from apot.errors import UserError

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


# flock errors of a file system that has no locks (Lustre mounted without flock, NFS without
# its lock daemon, some FUSE mounts): the command runs unlocked, with a warning.
NO_LOCKS = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``folder``'s lock or raise a UserError naming the holder at once; ``what`` names
    the folder's content in messages ("run", "prepared dataset"). The folder is created if
    needed, and removed again if the block fails while it holds nothing but the lock (a
    command that failed before writing anything leaves no empty folder)."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    handle = _locked_handle(folder, what)
    try:
        if handle is not None:
            _announce_takeover(handle, folder)
            _rewrite(handle, json.dumps(holder_record()) + "\n")
        try:
            yield
        except BaseException:
            if created:  # still holding the lock: no other writer is inside
                remove_if_empty(folder)
            raise
        finally:
            if handle is not None and folder.is_dir():
                _rewrite(handle, "")
    finally:
        if handle is not None:
            handle.close()  # releases the lock


def _locked_handle(folder: Path, what: str):
    """The lock file of ``folder``, open and locked (None on a file system without locks)."""
    path = folder / LOCK_NAME
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read()
            handle.close()
            if exc.errno in NO_LOCKS:
                print(f"apot: warning: {path}: the file system has no locks "
                      f"({os.strerror(exc.errno)}); nothing stops a second writer in {folder}",
                      file=sys.stderr)
                return None
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise UserError(f"{what} folder {folder} is in use by {describe_holder(holder)}; "
                            f"wait for it to finish or stop it, or use another folder (if that "
                            f"host is gone for good, delete {path})") from None
        # the file locked must still be the one at the path: a writer that failed early may
        # have removed it (remove_if_empty) between our open and our lock
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()
        folder.mkdir(parents=True, exist_ok=True)


def _announce_takeover(handle, folder: Path) -> None:
    handle.seek(0)
    left = handle.read()
    if left.strip():
        print(f"apot: taking over the lock of {folder} left by {describe_holder(left)}, which "
              f"is no longer running", file=sys.stderr)


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if it holds nothing but its lock file."""
    try:
        if {p.name for p in folder.iterdir()} <= {LOCK_NAME}:
            (folder / LOCK_NAME).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass  # not empty after all, or already gone


def _rewrite(handle, text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text)
    handle.flush()
