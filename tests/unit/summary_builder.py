"""A study's results written as its jobs would write them, without training: for the summary,
report and registry tests."""
import csv
import json
from pathlib import Path

import numpy as np
import yaml
from helpers import CONFIG_FILE

from apot.engine.predictions import write_predictions
from apot.layout import PREDICTIONS, ResultsLayout
from apot.workflow.study import expand_runs, train_settings

CONFIG = yaml.safe_load(CONFIG_FILE.read_text())



def write_run(results: Path, path: str, best: float, seed: int, config: dict) -> None:
    folder = results / "runs" / path
    folder.mkdir(parents=True)
    history = [{"epoch": 0, "lr": 0.1, "train_loss": 1.0, "train_top1": 50.0,
                "test_loss": 1.1, "test_top1": best - 1, "test_top5": 90.0,
                "images_per_s": 100.0, "epoch_seconds": 2.0},
               {"epoch": 1, "lr": 0.01, "train_loss": 0.8, "train_top1": 60.0,
                "test_loss": 0.9, "test_top1": best, "test_top5": 95.0,
                "images_per_s": 100.0, "epoch_seconds": 2.0}]
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    (folder / "metrics.json").write_text(json.dumps({
        "best_top1": best, "best_epoch": 1, "final_top1": best - 0.5, "final_top5": 95.0,
        "epochs": 2, "wall_seconds": 4.0, "device": "cpu", "seed": seed, "init": None,
        "config": recorded_config(config, path, results),
        "predictions": write_test_predictions(folder / PREDICTIONS, best)}))



def write_test_predictions(path: Path, top1: float, images: int = 100) -> dict:
    """Per-image predictions of ``images`` test images, the first round(top1 %) of them
    right: models of one fixture disagree only where their accuracies differ."""
    labels = np.arange(images) % 10
    right = np.arange(images) < round(top1 / 100 * images)
    return write_predictions(path, np.where(right, labels, (labels + 1) % 10), labels,
                             "test.pt sha256 " + "ab" * 32)



def recorded_config(config: dict, path: str, results: Path) -> dict:
    """The settings metrics.json records: those the study gives the run."""
    run = next(run for run in expand_runs(config) if run.path == path)
    return train_settings(run, ResultsLayout(str(results)))



def cost_fixture(results: Path) -> Path:
    from apot.deploy.cost import cost_tables
    path = results / "cost.json"
    path.write_text(json.dumps(cost_tables([("resnet20", 32), ("resnet20", 4)])))
    return path
