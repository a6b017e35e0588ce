"""Stopping a training run cleanly when the process is told to stop.

A batch scheduler stops a job with SIGTERM (SLURM on `scancel`, at the time limit and on
pre-emption; SIGKILL follows after its KillWait). A run that gets SIGTERM or SIGINT stops at
once with `Stopped`, which the command line turns into a one-line message and exit status
128 + signal. Saving the checkpoint is never split: a signal that arrives while the run writes
its files is acted on right after the write, so `best.pt`, `checkpoint.pt` and `history.csv`
always describe the same epoch.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """The process was told to stop (``signum``) while a run was training."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopOnSignals:
    """While active, SIGTERM/SIGINT raise `Stopped`, except inside `atomic()` blocks, after
    which they do. Only the main thread can install handlers; elsewhere this does nothing."""

    def __init__(self) -> None:
        self._pending: int | None = None
        self._atomic = False
        self._previous: dict[int, object] = {}
        self._owner = os.getpid()

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._owner:
            # a forked data-loading worker: end the usual way; the training process stops
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self._atomic:
            self._pending = signum
            return
        raise Stopped(signum)

    @contextlib.contextmanager
    def active(self) -> Iterator[StopOnSignals]:
        """Stop on the signals inside this block (re-entrant: an inner block changes nothing)."""
        self._owner = os.getpid()
        if self._previous or threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous.clear()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """A block no stop interrupts; a signal received inside it stops the run after it."""
        self._atomic = True
        try:
            yield
        finally:
            self._atomic = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise Stopped(signum)
