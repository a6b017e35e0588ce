"""A preset's CIFAR training in GPU-hours, from measured epoch times (``bench/gpu.py`` prints it).

Pure arithmetic on the experiment matrix (``apot.workflow.study.expand_runs``), no torch: how many epochs
a preset trains on 32-pixel data, per architecture and float or quantized model; and what those
epochs cost at measured seconds per epoch, when several jobs share one GPU.
"""
from __future__ import annotations

from collections import Counter

from apot.data.datasets import get_dataset
from apot.quant.schemes import FLOAT
from apot.workflow.study import expand_runs

FLOAT_KIND, QUANTIZED_KIND = FLOAT, "quantized"  # the float step keeps its scheme name
CIFAR_IMAGE_SIZE = 32


def planned_epochs(config: dict) -> dict[tuple[str, str], int]:
    """Epochs the selected preset of a validated ``config`` trains on 32-pixel data (its
    CIFAR runs), summed per (architecture, ``"fp32"`` or ``"quantized"``). Every run counts,
    whatever data is on this machine: it is the plan, not what is left to do."""
    epochs: Counter = Counter()
    for run in expand_runs(config):
        if get_dataset(run.dataset).image_size == CIFAR_IMAGE_SIZE:
            kind = FLOAT_KIND if run.scheme == FLOAT else QUANTIZED_KIND
            epochs[(run.arch, kind)] += run.train["epochs"]
    return dict(epochs)


def best_jobs_per_gpu(images_per_s: dict[int, float]) -> tuple[int, float]:
    """(jobs per GPU, gain) of the measured count with the most throughput. ``images_per_s``
    maps jobs per GPU to the images per second of all those jobs together, and must hold 1;
    the gain is that throughput over one job's alone."""
    if 1 not in images_per_s:
        raise ValueError("the throughput of one job alone (jobs per GPU 1) is the baseline; "
                         "measure it too")
    best = max(images_per_s, key=images_per_s.__getitem__)
    return best, images_per_s[best] / images_per_s[1]


def gpu_hours(epochs: dict[tuple[str, str], int], epoch_seconds: dict[tuple[str, str], float],
              gain: float = 1.0) -> float:
    """GPU-hours of ``epochs`` ((architecture, kind) -> epochs, as ``planned_epochs``) at
    ``epoch_seconds`` ((architecture, kind) -> seconds of one epoch, training and test pass,
    one job alone on the GPU), when sharing the GPU between jobs gives ``gain`` times one
    job's throughput."""
    missing = sorted(set(epochs) - set(epoch_seconds))
    if missing:
        raise ValueError(f"no measured epoch time for {missing}")
    if gain <= 0:
        raise ValueError(f"gain must be positive, not {gain}")
    return sum(n * epoch_seconds[key] for key, n in epochs.items()) / gain / 3600
