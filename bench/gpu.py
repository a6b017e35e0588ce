"""Benchmark: the paper preset's CIFAR training in GPU-hours, measured (not a test; CI has no GPU).

In one run, on one device (``--device cuda`` by default):
  * for each (architecture, float or quantized model) the paper preset trains on CIFAR, one
    ``apot train`` run of ``--epochs`` epochs on the prepared data (quantized: 4-bit APoT,
    initialized from the float run), and one ``apot eval`` of its best weights: an epoch costs
    the last epoch's training pass (history.csv ``epoch_seconds``) plus the test pass (the
    eval's ``seconds``, which include loading the test split);
  * several jobs on one GPU: for each count in ``--jobs`` (1 is the one above), that many
    4-bit ResNet-20 ``apot train`` processes started together; their last epochs' images per
    second, summed, against one job's alone;
  * ``paper_cifar_gpu_hours``: every epoch of the paper preset's CIFAR runs (config.yaml, via
    apot.workflow.study) at the measured epoch times, divided by the best jobs-per-GPU gain
    (apot.workflow.gpu_hours). The gain measured on ResNet-20 is applied to ResNet-56 too.

The last line is exactly
``fp32_epoch_s=<ResNet-20 FP32 training pass, s> apot_epoch_s=<4-bit APoT, s>
apot_fp32_epoch_ratio=<apot / fp32> paper_cifar_gpu_hours=<hours>``.

Usage: python bench/gpu.py [--data PREPARED_CIFAR10] [--work DIR] [--jobs 1 2 4] [--epochs 2]
       [--device cuda|cpu] [--train-per-class N --test-per-class N]
Without --data it prepares CIFAR-10 from $APOT_DATA_MIRROR (default ../shared/data) under
--work. ``--device cpu`` with a small subset runs the same steps on the CPU, to check the script
itself; its figures are not the paper's GPU-hours.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from apot.layout import BEST, HISTORY
from apot.quant.schemes import FLOAT_BITS
from apot.workflow.gpu_hours import (FLOAT_KIND, QUANTIZED_KIND, best_jobs_per_gpu, gpu_hours,
                                     planned_epochs)
from apot.workflow.study import validate_config

ROOT = Path(__file__).resolve().parents[1]

QUANTIZED_BITS = 4
SHARED_ARCH = "resnet20"  # the jobs-per-GPU runs: the paper's most frequent CIFAR job
THREADS_PER_JOB = 2       # CPU threads of each process: several share the host's cores


def apot(*args) -> list:
    return [sys.executable, "-m", "apot", *args]


def run(command: list) -> str:
    command = list(map(str, command))
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}):\n"
                         f"{done.stderr.strip()}")
    return done.stdout


def last_epoch(folder: Path) -> dict:
    with open(folder / HISTORY, newline="") as f:
        return list(csv.DictReader(f))[-1]


def train_command(args, arch: str, kind: str, out: Path, init: Path | None) -> list[str]:
    command = apot("train", "--arch", arch, "--data", args.data, "--out", out,
                   "--epochs", args.epochs, "--device", args.device,
                   "--threads", THREADS_PER_JOB, "--no-progress")
    if args.epochs > 1:
        command += ["--milestones", args.epochs - 1]
    if kind == QUANTIZED_KIND:
        command += ["--bits", QUANTIZED_BITS, "--lr", 0.04, "--weight-decay", 1e-4,
                    "--init", init]
    return list(map(str, command))


def epoch_seconds(args, arch: str, kind: str) -> tuple[float, float]:
    """(training pass, training + test pass) seconds of one epoch of ``arch``."""
    out = Path(args.work) / f"{arch}-{kind}"
    init = Path(args.work) / f"{arch}-{FLOAT_KIND}" / BEST
    run(train_command(args, arch, kind, out, init))
    train_s = float(last_epoch(out)["epoch_seconds"])
    bits = QUANTIZED_BITS if kind == QUANTIZED_KIND else FLOAT_BITS
    evaluated = json.loads(run(apot("eval", "--arch", arch, "--bits", bits, "--checkpoint",
                                    out / BEST, "--data", args.data, "--device", args.device,
                                    "--threads", THREADS_PER_JOB)))
    return train_s, train_s + evaluated["seconds"]


def shared_throughput(args, jobs: int) -> float:
    """Images per second of ``jobs`` 4-bit ResNet-20 runs started together, summed over their
    last epochs."""
    init = Path(args.work) / f"{SHARED_ARCH}-{FLOAT_KIND}" / BEST
    outs = [Path(args.work) / f"jobs{jobs}-{i}" for i in range(jobs)]
    processes = [subprocess.Popen(train_command(args, SHARED_ARCH, QUANTIZED_KIND, out, init),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  cwd=ROOT) for out in outs]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"a shared-GPU training job failed:\n{stderr.strip()}")
    return sum(float(last_epoch(out)["images_per_s"]) for out in outs)


def prepare(args) -> None:
    args.data = str(Path(args.work) / "cifar10")
    mirror = os.environ.get("APOT_DATA_MIRROR") or str(ROOT.parent / "shared" / "data")
    subset = []
    if args.train_per_class:
        subset += ["--train-per-class", args.train_per_class]
    if args.test_per_class:
        subset += ["--test-per-class", args.test_per_class]
    run(apot("prepare-data", "--dataset", "cifar10", "--out", args.data, "--mirror", mirror,
             *subset))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="prepared CIFAR-10 folder (apot prepare-data)")
    parser.add_argument("--work", help="folder for the runs (default: a new temporary one)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4],
                        help="jobs per GPU to measure; 1 is the baseline")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per run; the last one is timed (the first warms up)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="(without --data) a class-balanced subset, for a quick check")
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    args = parser.parse_args()
    if 1 not in args.jobs:
        parser.error("--jobs must include 1, the baseline")
    args.work = args.work or tempfile.mkdtemp(prefix="apot-gpu-")
    if args.data is None:
        prepare(args)

    config = validate_config(yaml.safe_load(Path(args.config).read_text()) | {"preset": "paper"})
    plan = planned_epochs(config)
    # floats first: each quantized run starts from its architecture's float run
    order = sorted(plan, key=lambda key: (key[0], key[1] != FLOAT_KIND))
    measured = {key: epoch_seconds(args, *key) for key in order}
    for (arch, kind), (train_s, total_s) in measured.items():
        print(f"{arch} {kind}: {plan[(arch, kind)]} planned epochs, training pass {train_s:.2f} s,"
              f" with the test pass {total_s:.2f} s")

    baseline = measured[(SHARED_ARCH, QUANTIZED_KIND)][0]
    throughput = {1: float(last_epoch(Path(args.work) / f"{SHARED_ARCH}-{QUANTIZED_KIND}")
                           ["images_per_s"])}
    for jobs in sorted(set(args.jobs) - {1}):
        throughput[jobs] = shared_throughput(args, jobs)
    for jobs, images_per_s in sorted(throughput.items()):
        print(f"jobs_per_gpu={jobs}: {images_per_s:.0f} images/s together "
              f"({images_per_s / throughput[1]:.2f}x one job)")
    best, gain = best_jobs_per_gpu(throughput)
    hours = gpu_hours(plan, {key: total for key, (_, total) in measured.items()}, gain)
    fused = "on" if os.environ.get("APOT_CUDA_FUSED") == "1" else "off"
    print(f"best: {best} jobs per GPU; device {args.device}, data {args.data}, fused CUDA "
          f"quantizer {fused} (APOT_CUDA_FUSED)")
    if args.device != "cuda" or args.train_per_class or args.test_per_class:
        print("not a GPU measurement on full CIFAR-10: the figures below check the script, "
              "they are not the paper's GPU-hours")
    fp32 = measured[(SHARED_ARCH, FLOAT_KIND)][0]
    print(f"fp32_epoch_s={fp32:.2f} apot_epoch_s={baseline:.2f} "
          f"apot_fp32_epoch_ratio={baseline / fp32:.2f} paper_cifar_gpu_hours={hours:.2f}")


if __name__ == "__main__":
    main()
