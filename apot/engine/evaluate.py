"""Test-set evaluation of a classifier over batches from a loader (apot.data.loader)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from apot.errors import UserError


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
