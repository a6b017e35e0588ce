"""The datasets by name and where their sources are, without importing torch: the Snakefile
reads these when it is parsed, and on a cluster every job parses it again."""
from __future__ import annotations

import os
from pathlib import Path

MANIFEST = "manifest.json"
MIRROR_ENV = "APOT_DATA_MIRROR"
# dataset -> (number of classes, mirror archive name, torchvision class name)
SMALL_DATASETS = {
    "cifar10": (10, "cifar-10-images.tar.gz", "CIFAR10"),
    "cifar100": (100, "cifar-100-images.tar.gz", "CIFAR100"),
}
DATASETS = (*SMALL_DATASETS, "imagenet", "synthetic")


def mirror_folder(mirror: str | os.PathLike | None) -> Path | None:
    """The mirror folder from the argument, else from APOT_DATA_MIRROR, else None."""
    value = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    return Path(value) if value else None
