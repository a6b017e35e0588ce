"""A small rendered report (smoke preset, a few fabricated runs written the way the engine
writes them, real cost tables) for the browser tests."""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import yaml

from apot.deploy.cost import cost_tables
from apot.engine.predictions import write_predictions
from apot.layout import PREDICTIONS, ResultsLayout
from apot.reporting.render import build_report
from apot.reporting.summary import summarize
from apot.workflow.study import expand_runs, train_settings, validate_config

ROOT = Path(__file__).resolve().parents[2]
RUNS = {"cifar10/resnet20/multistep/fp32-w32/seed0": 60.0,
        "cifar10/resnet20/multistep/apot-w4/seed0": 58.5,
        "cifar10/resnet20/multistep/apot-w3/seed0": 57.0}


def _write_run(results: Path, path: str, best: float, config: dict) -> None:
    folder = results / "runs" / path
    folder.mkdir(parents=True)
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "lr", "train_loss", "train_top1",
                                               "test_loss", "test_top1", "test_top5",
                                               "images_per_s", "epoch_seconds"])
        writer.writeheader()
        for epoch, top1 in enumerate((best - 5, best - 1, best)):
            writer.writerow({"epoch": epoch, "lr": 0.1, "train_loss": 1.0, "train_top1": 50.0,
                             "test_loss": 1.0, "test_top1": top1, "test_top5": 90.0,
                             "images_per_s": 100.0, "epoch_seconds": 1.0})
    labels = np.arange(100) % 10  # per-image predictions: the first round(best) right
    predictions = write_predictions(folder / PREDICTIONS, np.where(
        np.arange(100) < round(best), labels, (labels + 1) % 10), labels, "fixture")
    (folder / "metrics.json").write_text(json.dumps({
        "best_top1": best, "best_epoch": 2, "final_top1": best, "final_top5": 90.0,
        "epochs": 3, "wall_seconds": 3.0, "device": "cpu", "seed": 0, "init": None,
        "predictions": predictions,
        # the settings the engine records: those the study gives the run
        "config": train_settings(next(run for run in expand_runs(config) if run.path == path),
                                 ResultsLayout(str(results)))}))


def write_report(folder: Path) -> Path:
    """Render the fixture's report under ``folder``; returns the HTML file."""
    config = validate_config(copy.deepcopy(yaml.safe_load((ROOT / "config.yaml").read_text()))
                             | {"preset": "smoke"})
    results = folder / "results" / "smoke"
    for path, best in RUNS.items():
        _write_run(results, path, best, config)
    (results / "cost.json").write_text(json.dumps(cost_tables([("resnet20", 32),
                                                               ("resnet20", 4),
                                                               ("resnet20", 3)])))
    study = {"config": config, "skipped": {"cifar100": "not run: no data source",
                                           "imagenet": "not configured: no ImageNet folder"}}
    summarize(study, results, cost=results / "cost.json")
    build_report(results / "summary.json", folder / "build")
    return folder / "build" / "report.html"
