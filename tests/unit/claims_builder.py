"""Constructed summaries for the claim rules: runs per seed with per-image predictions.

A model with top-1 p (points) classifies correctly the easiest round(p / 100 * N) of N test
images (one fixed order of difficulty), so two models disagree only on the images between
their counts: the paired test-set error of their difference is as small as it can be, and a
test controls it through N. Groups are built by apot.reporting.summary's own grouping (collapse marking
included), so a test sees what `apot summarize` would write.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from apot.engine.predictions import write_predictions
from apot.reporting.summary import group_records, mark_collapsed

CLASSES = 10
IDENTITY = "test.pt sha256 " + "ab" * 32


class Built:
    def __init__(self, folder: Path, *, images: int = 10_000, full_scale: bool = False,
                 source: str = "mirror", start: str = "authors", preset: str = "quick"):
        self.folder, self.images, self.source, self.start = folder, images, source, start
        self.full_scale, self.preset = full_scale, preset
        self.labels = np.arange(images) % CLASSES
        self.order = np.random.default_rng(0).permutation(images)
        self.runs: list[dict] = []
        self.authors: list[dict] = []
        self.count = 0

    def _file(self, top1: float, identity: str = IDENTITY) -> str:
        correct = np.zeros(self.images, dtype=bool)
        correct[self.order[:round(top1 / 100 * self.images)]] = True
        predicted = np.where(correct, self.labels, (self.labels + 1) % CLASSES)
        self.count += 1
        path = self.folder / f"m{self.count}.npz"
        write_predictions(path, predicted, self.labels, identity)
        return str(path)

    def group(self, dataset, arch, schedule, scheme, bits, top1s, *, gains=None,
              start=None, failed=(), predictions=True):
        """One run per seed with these best top-1 (points); ``gains``: each run's last-epoch
        gain (None: a one-epoch run); ``failed``: seeds whose run did not complete."""
        gains = gains if gains is not None else [0.0] * len(top1s)
        for seed, (top1, gain) in enumerate(zip(top1s, gains)):
            run = {"study": "s", "dataset": dataset, "arch": arch,
                   "start": start or self.start, "schedule": schedule, "scheme": scheme,
                   "bits": bits, "seed": seed, "data": dataset, "path": f"{dataset}/{scheme}"
                   f"{bits}/{schedule}/seed{seed}"}
            if seed in failed:
                run["status"] = "missing: the run has not completed"
            else:
                run.update(status="done", best_top1=top1, final_top1=top1, epochs=2,
                           data_source=self.source, test_images=self.images, last_gain=gain,
                           predictions=self._file(top1) if predictions else None)
            self.runs.append(run)
        return self

    def chain(self, dataset, arch, schedule, fp32, quantized: dict, *, scheme="apot",
              gains=None, start=None):
        """An FP32 group (top-1 per seed) and quantized groups {bits: top-1 per seed}."""
        self.group(dataset, arch, schedule, "fp32", 32, fp32, gains=[None] * len(fp32),
                   start=start)
        for bits, top1s in quantized.items():
            self.group(dataset, arch, schedule, scheme, bits, top1s, gains=gains, start=start)
        return self

    def released(self, bits: int, top1: float, identity: str = IDENTITY):
        self.authors.append({"bits": bits, "top1": top1, "n": self.images,
                             "predictions": self._file(top1, identity)})
        return self

    def summary(self) -> dict:
        datasets = sorted({r["data"] for r in self.runs})
        data = {d: {"classes": [str(c) for c in range(CLASSES)],
                    "counts": {"train": 20_000, "test": self.images}} for d in datasets}
        runs = [dict(r) for r in self.runs]
        mark_collapsed(runs, data)
        return {"preset": self.preset, "full_scale": self.full_scale, "data": data,
                "runs": runs, "groups": group_records(runs),
                "authors": {"data": "cifar10", "evals": self.authors}}
