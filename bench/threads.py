"""Benchmark: how to spend 2 CPU cores on ResNet-20 training jobs (not a test).

The workflow's `train_threads` decides it: one training job on both cores, or one job per core
side by side (Snakemake then runs two at once under ``--cores 2``). Three persistent worker
processes train a 4-bit APoT ResNet-20 (batch 128, SGD, channels-last input, the step `apot
train` runs): one on 2 threads, two on 1 thread (torch's and numba's, as `apot train --threads`
sets them). Round by round, the 2-thread
worker runs ``--steps`` steps alone, then both 1-thread workers run ``--steps`` steps at the same
time; each variant's throughput is images per wall-clock second, and the medians over rounds
are compared (interleaving, so that a noisy neighbour slows both variants alike). The last line
is exactly
``two_jobs_one_thread_speedup=<images/s of two 1-thread jobs / images/s of one 2-thread job>``
(above 1: one thread per job is faster).

Usage: python bench/threads.py [--rounds N] [--steps N] [--bits B]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

BATCH = 128  # the batch of bench/quantizer.py's step_case


def worker(threads: int, bits: int, commands, results) -> None:
    """Build the model once, then run the number of training steps each command asks for and
    send back the seconds they took; None ends the worker."""
    from quantizer import step_case  # bench/quantizer.py's training step: one definition

    from apot.engine.threads import use_threads

    use_threads(threads)  # torch's and numba's pools, as `apot train --threads` sets them
    step = step_case(bits, channels_last=True)
    for _ in range(3):  # warm-up: allocator, oneDNN primitives, numba compilation
        step()
    results.put("ready")
    while (steps := commands.get()) is not None:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        results.put(time.perf_counter() - start)


class Worker:
    def __init__(self, context, threads: int, bits: int):
        self.commands, self.results = context.Queue(), context.Queue()
        self.process = context.Process(target=worker,
                                       args=(threads, bits, self.commands, self.results))
        self.process.start()

    def ready(self) -> None:
        assert self.results.get(timeout=300) == "ready"

    def stop(self) -> None:
        self.commands.put(None)
        self.process.join(timeout=60)


def run_together(workers: list[Worker], steps: int) -> float:
    """Wall-clock seconds until every worker has run ``steps`` steps, all started at once."""
    start = time.perf_counter()
    for w in workers:
        w.commands.put(steps)
    for w in workers:
        w.results.get(timeout=600)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="training steps per job per round")
    parser.add_argument("--bits", type=int, default=4, help="APoT bit-width (32: FP32)")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    one_job = Worker(context, 2, args.bits)
    two_jobs = [Worker(context, 1, args.bits) for _ in range(2)]
    try:
        for w in (one_job, *two_jobs):
            w.ready()
        one, two = [], []
        for r in range(args.rounds):
            one.append(args.steps * BATCH / run_together([one_job], args.steps))
            two.append(2 * args.steps * BATCH / run_together(two_jobs, args.steps))
            print(f"round {r + 1}: one 2-thread job {one[-1]:.0f} images/s, "
                  f"two 1-thread jobs {two[-1]:.0f} images/s", flush=True)
    finally:
        for w in (one_job, *two_jobs):
            w.stop()
    print(f"median: one 2-thread job {statistics.median(one):.0f} images/s, two 1-thread jobs "
          f"{statistics.median(two):.0f} images/s ({args.bits}-bit, batch {BATCH})")
    print(f"two_jobs_one_thread_speedup={statistics.median(two) / statistics.median(one):.2f}")


if __name__ == "__main__":
    main()
