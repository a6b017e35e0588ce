"""The exceptions the command line turns into one-line messages: UserError (exit 2) and, for
operating-system failures, OSError (exit 1, os_error_message)."""
import errno
import os


class UserError(Exception):
    """Bad input from the user (a path, a value, a file): the message says what and how to fix."""


def flags(names, joined: str = ", ") -> str:
    """Settings named as the command line spells them: ``first_last`` is --first-last."""
    return joined.join("--" + name.replace("_", "-") for name in names)


# What to do about an operating-system failure, by its errno.
_OS_HINTS = {
    errno.ENOSPC: "free space there or write elsewhere; files written before are intact",
    errno.EDQUOT: "free space in your quota or write elsewhere; files written before are intact",
    errno.EACCES: "check the permissions of the path",
    errno.EPERM: "check the permissions of the path",
    errno.EROFS: "that file system is read-only: write elsewhere",
    errno.ENOENT: "create the folder first, or fix the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
    errno.EISDIR: "the path is a folder: name a file",
    errno.EEXIST: "a file is in the way: remove it or choose another path",
}


def os_error_message(exc: OSError) -> str:
    """One line for an operating-system failure: the cause, the path and what to do."""
    cause = (exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))).rstrip(".")
    cause = (cause[:1].lower() + cause[1:]) if cause else (
        f"an operating-system error ({type(exc).__name__}) without a description")
    where = f" ({exc.filename})" if exc.filename else ""
    hint = _OS_HINTS.get(exc.errno)
    if exc.errno == errno.ENOENT and exc.filename and _folder_exists(exc.filename):
        # the folder is there, yet the file cannot be made: a virtual file system (/proc,
        # /sys) or a name the file system refuses
        hint = "the folder exists but does not take new files: write elsewhere"
    return f"{cause}{where}" + (f"; {hint}" if hint else "")


def _folder_exists(filename) -> bool:
    return os.path.isdir(os.path.dirname(os.path.abspath(os.fsdecode(filename))))


def first_line(exc: Exception, limit: int | None = None) -> str:
    """The first line of an exception's message (at most ``limit`` characters), or its type
    when it has none: for messages quoted inside a one-line error."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None else line[:limit]
