"""Test-set evaluation of a classifier: which images (Images: a prepared dataset, an image folder
or archive, normalized as their dataset) and the scores over their batches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from apot.data.archives import read_split
from apot.data.datasets import REGISTRY as DATASETS
from apot.data.datasets import Dataset, get_dataset
from apot.data.loader import ImageFolderLoader, TensorLoader
from apot.data.manifest import load_manifest, manifest_dataset
from apot.data.prepare import load_prepared
from apot.engine.predictions import images_identity
from apot.errors import UserError
from apot.layout import MANIFEST


def _score(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[count, top-1 hits, top-5 hits, summed cross-entropy] of one batch, float64; and each
    image's top-1 class (the one the hits count)."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return top[:, 0], torch.stack([torch.tensor(len(y), device=y.device),
                        (top[:, 0] == y).sum(),
                        (top == y.unsqueeze(1)).any(dim=1).sum(),
                        F.cross_entropy(logits, y, reduction="sum")]).double()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: str | torch.device = "cpu", keep_predictions: bool = False) -> dict:
    """Top-1 / top-5 accuracy (percent), mean cross-entropy and count over ``batches``; with
    ``keep_predictions`` also "predicted" and "labels": int64 (N,) CPU tensors, each image's
    predicted and true class in the order of ``batches``."""
    model.eval().to(device)
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    predicted, labels = [], []
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            first, scores = _score(logits, y)
            totals += scores
            if keep_predictions:
                predicted.append(first.cpu())
                labels.append(y.cpu())
    except OSError as exc:  # an unreadable image file in a streamed folder
        raise UserError(f"cannot read an image while evaluating: {exc}") from None
    n, correct1, correct5, loss_sum = totals.tolist()
    if n == 0:
        raise UserError("no images to evaluate")
    result = {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n,
              "n": int(n)}
    if keep_predictions:
        result.update(predicted=torch.cat(predicted), labels=torch.cat(labels))
    return result


@torch.no_grad()
def compare(reference: nn.Module, other: nn.Module,
            batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            device: str | torch.device = "cpu") -> dict:
    """Both models on the same batches: each one's top-1 (percent), how many images they
    predict differently, and the largest absolute difference of their logits (0.0: the same
    logits bit for bit)."""
    reference.eval().to(device)
    other.eval().to(device)
    n = hits_reference = hits_other = differing = 0
    largest = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        a, b = reference(x), other(x)
        n += len(y)
        hits_reference += int((a.argmax(1) == y).sum())
        hits_other += int((b.argmax(1) == y).sum())
        differing += int((a.argmax(1) != b.argmax(1)).sum())
        largest = max(largest, float((a - b).abs().max()))
    if n == 0:
        raise UserError("no images to evaluate")
    return {"n": n, "reference_top1": 100.0 * hits_reference / n,
            "top1": 100.0 * hits_other / n, "differing_predictions": differing,
            "max_abs_logit_difference": largest}


@dataclass(frozen=True)
class Images:
    """The images an evaluation runs on: split ``split`` of ``data`` (a prepared dataset, an
    image folder or archive of small images, or an ImageNet-style folder for 224-pixel
    models), the first ``limit_per_class`` of each class (None: all), normalized as the
    registered dataset ``dataset`` (None: the data's own, see ``batches``)."""
    data: Path
    split: str = "test"
    batch_size: int = 100
    limit_per_class: int | None = None
    dataset: str | None = None

    def batches(self, input_size: int, device) -> tuple[Iterable, int, str]:
        """(batches of normalized images and labels, number of classes, dataset name) for a
        model of ``input_size`` pixels. A prepared dataset is normalized as its manifest's
        dataset; an image folder or archive as the registered dataset with its number of
        classes; a 224-pixel model's folder as ImageNet."""
        data = Path(self.data)
        if input_size != 32:
            entry = named_dataset(self.dataset, "imagenet")
            loader = ImageFolderLoader(str(data / self.split), self.batch_size, False, device,
                                       mean=entry.mean, std=entry.std)
            return loader.epoch(), len(loader.dataset.classes), entry.name
        if (data / MANIFEST).is_file():
            images, labels, classes, entry = self._prepared(data)
        else:
            images, labels, classes = read_split(data, self.split, limit=self.limit_per_class)
            entry = named_dataset(self.dataset, None, len(classes))
        batches = TensorLoader(images, labels, self.batch_size, False, device, mean=entry.mean,
                               std=entry.std, channels_last=False).epoch()
        return batches, len(classes), entry.name

    def _prepared(self, data: Path) -> tuple:
        images, labels, manifest = load_prepared(data, self.split)
        entry = manifest_dataset(manifest, data)
        if self.dataset not in (None, entry.name):
            raise UserError(f"--dataset {self.dataset}: {data} is prepared from {entry.name}")
        if self.limit_per_class:
            keep = torch.cat([(labels == c).nonzero().flatten()[:self.limit_per_class]
                              for c in labels.unique()]).sort().values
            images, labels = images[keep], labels[keep]
        return images, labels, manifest["classes"], entry

    def identity(self) -> str:
        """What the images are, for a predictions file: a prepared test split whole is named
        as a training run names it (so the two compare); anything else by its path, split and
        limit."""
        data = Path(self.data)
        if (data / MANIFEST).is_file() and self.split == "test" and not self.limit_per_class:
            return images_identity(load_manifest(data))
        limit = f", first {self.limit_per_class} per class" if self.limit_per_class else ""
        return f"{data} split {self.split}{limit}"


def named_dataset(name: str | None, default: str | None, classes: int | None = None) -> Dataset:
    """The registered dataset ``name``; without it, ``default``, else the one registered dataset
    with ``classes`` classes."""
    if name is None and default is None:
        matching = [d for d in DATASETS.values() if d.classes == classes]
        if len(matching) != 1:
            raise UserError(f"the images have {classes} classes: name the dataset they come "
                            f"from with --dataset (its normalization applies)")
        return matching[0]
    try:
        return get_dataset(name or default)
    except ValueError as exc:
        raise UserError(str(exc)) from None
