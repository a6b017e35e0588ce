"""The paper preset's CIFAR training in GPU-hours (apot.workflow.gpu_hours, printed by bench/gpu.py): the
planned epochs come from config.yaml's matrix, and the hours from measured epoch times."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from apot.workflow.gpu_hours import (FLOAT_KIND, QUANTIZED_KIND, best_jobs_per_gpu, gpu_hours,
                                     planned_epochs)
from apot.workflow.study import IMAGENET_ARCHS, expand_runs, validate_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def paper(edit=lambda preset: None) -> dict:
    config = copy.deepcopy(CONFIG) | {"preset": "paper"}
    edit(config["presets"]["paper"])
    return validate_config(config)


def test_the_paper_plan_counts_every_cifar_epoch_and_no_imagenet_one():
    plan = planned_epochs(paper())
    assert not {arch for arch, _ in plan} & set(IMAGENET_ARCHS)
    assert {kind for _, kind in plan} == {FLOAT_KIND, QUANTIZED_KIND}
    # every chain fine-tunes three bit-widths from its float run, each as long as the float run
    for arch in {arch for arch, _ in plan}:
        assert plan[(arch, QUANTIZED_KIND)] == 3 * plan[(arch, FLOAT_KIND)] > 0
    cifar_runs = [run for run in expand_runs(paper()) if run.arch not in IMAGENET_ARCHS]
    assert sum(plan.values()) == sum(run.train["epochs"] for run in cifar_runs)


def test_the_plan_follows_the_config():
    base = planned_epochs(paper())

    def halve_epochs(preset):
        for study in preset["studies"].values():
            study["epochs"] //= 2
            if "milestones" in study:
                study["milestones"] = [m // 2 for m in study["milestones"]]
    assert planned_epochs(paper(halve_epochs)) == {key: n // 2 for key, n in base.items()}


def test_hours_are_epochs_times_seconds_over_the_gain():
    epochs = {("resnet20", FLOAT_KIND): 900, ("resnet20", QUANTIZED_KIND): 2700}
    seconds = {("resnet20", FLOAT_KIND): 4.0, ("resnet20", QUANTIZED_KIND): 2.0}
    assert gpu_hours(epochs, seconds) == pytest.approx((900 * 4 + 2700 * 2) / 3600)
    assert gpu_hours(epochs, seconds, gain=2.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no measured epoch time for .*quantized"):
        gpu_hours(epochs, {("resnet20", FLOAT_KIND): 4.0})
    with pytest.raises(ValueError, match="gain must be positive"):
        gpu_hours(epochs, seconds, gain=0)


def test_the_best_jobs_per_gpu_is_the_most_throughput_against_one_job():
    assert best_jobs_per_gpu({1: 100.0, 2: 180.0, 4: 150.0}) == (2, pytest.approx(1.8))
    assert best_jobs_per_gpu({1: 100.0, 2: 60.0}) == (1, 1.0)  # sharing only slowed it
    with pytest.raises(ValueError, match="one job alone"):
        best_jobs_per_gpu({2: 180.0, 4: 150.0})
