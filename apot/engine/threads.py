"""The CPU threads of a process: set once, for torch and numba alike, before any kernel runs.

numba's parallel loops (apot.quant.cpu_fused) use the OpenMP threading layer; the first call
of one starts numba's thread pool, which sets OpenMP's thread count to all cores, and torch
reads that count: a process that asked torch for 1 thread would run on every core from its
first quantized batch on. The count of threads changes the order of float reductions, so a
run resumed on another count does not continue bit for bit; and a cluster job would use more
cores than it asked for. Starting numba's pool first, then setting both counts, holds them.
"""
from __future__ import annotations

import os

import torch

from apot.errors import UserError


def use_threads(threads: int | None) -> dict:
    """Start numba's thread pool, then set torch and numba to ``threads`` (None: torch's
    default, which follows OMP_NUM_THREADS, else the core count). Returns the counts in use,
    ``{"torch": n, "numba": n or None}``, for the run's metrics."""
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    wanted = threads or torch.get_num_threads()  # read before numba can change it
    numba = _started_numba()
    torch.set_num_threads(wanted)
    if numba is not None:
        numba.set_num_threads(min(wanted, numba.config.NUMBA_NUM_THREADS))
    return threads_in_use()


def threads_in_use() -> dict:
    """What torch and numba run on now."""
    numba = _numba()
    return {"torch": torch.get_num_threads(),
            "numba": numba.get_num_threads() if numba is not None else None}


def _numba():
    from apot.quant import cpu_fused
    return cpu_fused.numba if cpu_fused.AVAILABLE else None


def _started_numba():
    """numba with its thread pool started (once per process; a no-op after the first)."""
    numba = _numba()
    if numba is not None:
        from numba.np.ufunc import parallel
        parallel._launch_threads()
    return numba


def core_count() -> int:
    """Cores this process may run on (its CPU affinity: a cluster job's allocation)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
