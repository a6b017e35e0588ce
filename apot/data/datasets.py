"""The datasets by name: one registry entry each (no torch: the Snakefile reads it at parse).

Everything that names, prepares or normalizes a dataset reads this registry: the command
line's choices, the config checks and the schema's name lists (tests/unit/test_registries.py
keeps them equal), the data sources the workflow looks for, ``apot prepare-data``, and the
loaders' normalization. Adding a dataset means one ``Dataset`` entry (and, for a new kind of
source, its reader in apot.data.prepare).
"""
from __future__ import annotations

from dataclasses import dataclass

from apot.registry import Registry

# How a dataset is had. ARCHIVE: small images, decoded once into tensors, from an image-folder
# archive in the data mirror or torchvision's download; FOLDER: a folder with train/ and val/
# class folders, streamed (ImageNet: it does not fit in memory); GENERATED: made by
# apot.data.prepare.synthetic_split (tests and examples; not a study's dataset).
ARCHIVE, FOLDER, GENERATED = "archive", "folder", "generated"

# The authors' CIFAR normalization (CIFAR10/main.py) and torchvision's ImageNet one, per RGB
# channel; CIFAR-100's are the ones the reproducibility report's code carries.
CIFAR_MEAN, CIFAR_STD = (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Dataset:
    """One dataset. ``classes``: its number of classes (None: as many as its folder or
    generator has); ``image_size``: the side of the images its models take (32: the CIFAR
    ResNets, 224: the ImageNet ones); ``archive``: the mirror's image-folder archive, and
    ``torchvision``: the torchvision.datasets class that downloads it (ARCHIVE datasets);
    ``quantizer_rules``: whose quantizer code a study on it follows by default (the authors'
    CIFAR or ImageNet code)."""
    name: str
    kind: str
    classes: int | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int = 32
    archive: str | None = None
    torchvision: str | None = None
    quantizer_rules: str = "cifar"


REGISTRY: Registry[Dataset] = Registry("dataset")
register, unregister = REGISTRY.register, REGISTRY.unregister


register(Dataset("cifar10", ARCHIVE, 10, CIFAR_MEAN, CIFAR_STD,
                 archive="cifar-10-images.tar.gz", torchvision="CIFAR10"))
register(Dataset("cifar100", ARCHIVE, 100, CIFAR100_MEAN, CIFAR100_STD,
                 archive="cifar-100-images.tar.gz", torchvision="CIFAR100"))
register(Dataset("imagenet", FOLDER, None, IMAGENET_MEAN, IMAGENET_STD, image_size=224,
                 quantizer_rules="imagenet"))
register(Dataset("synthetic", GENERATED, None, CIFAR_MEAN, CIFAR_STD))


def dataset_names() -> tuple[str, ...]:
    """Every registered dataset (``apot prepare-data --dataset``)."""
    return tuple(REGISTRY)


def study_datasets() -> tuple[str, ...]:
    """The datasets a study can train on (config keys dataset): all but the generated."""
    return tuple(name for name, entry in REGISTRY.items() if entry.kind != GENERATED)


get_dataset = REGISTRY.entry
