"""Test-set evaluation of a classifier: in-memory small images, or a streamed ImageNet folder."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

# The authors' CIFAR normalization (CIFAR10/main.py), per RGB channel.
CIFAR_MEAN = (0.491, 0.482, 0.447)
CIFAR_STD = (0.247, 0.243, 0.262)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor, mean=CIFAR_MEAN, std=CIFAR_STD) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32 (N, 3, H, W): (x / 255 - mean) / std."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255) - mean_t) / std_t


def tensor_batches(images: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 100) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalized CIFAR batches from uint8 (N, 3, H, W) images and int64 (N,) labels.

    Batch 100 matches the authors' test loader (BatchNorm uses running statistics, so the
    batch size only changes float round-off).
    """
    for start in range(0, len(labels), batch_size):
        yield normalize(images[start:start + batch_size]), labels[start:start + batch_size]


def imagenet_batches(folder: str | Path, batch_size: int = 100,
                     workers: int = 2) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Streamed ImageNet-style validation batches: Resize(256), CenterCrop(224), normalize."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"ImageNet data {folder} is not a folder (expected <folder>/<class>/<image>)")
    transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    try:
        dataset = ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"ImageNet data {folder}: {exc}") from None
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)


def _score(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[count, top-1 hits, top-5 hits, summed cross-entropy] of one batch, float64."""
    logits = model(x)
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return torch.stack([torch.tensor(len(y), device=x.device),
                        (top[:, 0] == y).sum(),
                        (top == y.unsqueeze(1)).any(dim=1).sum(),
                        F.cross_entropy(logits, y, reduction="sum")]).double()


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: str | torch.device = "cpu") -> dict:
    """Top-1 / top-5 accuracy (percent), mean cross-entropy and count over ``batches``."""
    model.eval().to(device)
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    try:
        for x, y in batches:
            totals += _score(model, x.to(device), y.to(device))
    except OSError as exc:  # an unreadable image file in a streamed folder
        raise UserError(f"cannot read an image while evaluating: {exc}") from None
    n, correct1, correct5, loss_sum = totals.tolist()
    if n == 0:
        raise UserError("no images to evaluate")
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss_sum / n,
            "n": int(n)}
