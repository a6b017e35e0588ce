"""Prepared datasets: one decode of a source into uint8 tensors, plus a manifest.

A prepared small-image dataset is a folder with ``train.pt`` and ``test.pt`` (each
``{"images": uint8 (N, 3, H, W), "labels": int64 (N,)}``) and ``manifest.json``, which records
where the data came from (mirror archive, torchvision download, generator), its sha256, the
classes, the counts and any subset. Training reads the tensors and never decodes images again.
ImageNet does not fit in memory: its prepared form is a manifest pointing at the folder.

Sources, in the order they are tried for CIFAR:
  * a local mirror: the folder named by ``--mirror`` or the environment variable
    ``APOT_DATA_MIRROR``, holding ``cifar-10-images.tar.gz`` / ``cifar-100-images.tar.gz``
    (image-folder archives, as in ../shared/data); used instead of the download when set;
  * torchvision's download of the official archive (checksums verified by torchvision).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from apot import __version__
from apot.data.archives import IMAGE_SUFFIXES, read_splits
from apot.data.datasets import ARCHIVE, FOLDER, GENERATED, Dataset, get_dataset
from apot.data.manifest import load_manifest
from apot.data.sources import MIRROR_ENV, mirror_folder
from apot.errors import UserError
from apot.layout import MANIFEST, file_sha256
from apot.storage.checkpoints import save_atomic
from apot.storage.jsonfile import write_json
from apot.storage.lock import exclusive

SPLITS = ("train", "test")


def balanced_subset(labels: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of ``per_class`` examples of every class, drawn with ``seed``.

    All indices when ``per_class`` is None. A class with fewer examples is an error: a subset
    that is silently unbalanced would skew every accuracy computed on it.
    """
    if per_class is None:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in labels.unique().tolist():
        members = (labels == cls).nonzero().flatten()
        if len(members) < per_class:
            raise UserError(f"class {cls} has {len(members)} examples, fewer than the "
                            f"{per_class} per class asked for")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def synthetic_split(num_classes: int, per_class: int, seed: int,
                    size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable generated images: a fixed coarse pattern per class plus per-image noise.

    Returns uint8 (N, 3, size, size) images and int64 labels, N = num_classes * per_class;
    the patterns (4x4 colour blocks, so that crops and flips keep them recognizable) depend
    only on ``num_classes``, the noise on ``seed``.
    """
    coarse = torch.rand(num_classes, 3, 4, 4,
                        generator=torch.Generator().manual_seed(num_classes)) * 255
    patterns = F.interpolate(coarse, size=(size, size), mode="nearest")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = torch.randn(len(labels), 3, size, size, generator=generator) * 40
    images = (patterns[labels] + noise).clamp(0, 255).round().to(torch.uint8)
    return images, labels


def _from_mirror(archive: Path, num_classes: int) -> tuple[dict, dict]:
    splits = read_splits(archive, SPLITS)
    classes = splits["train"][2]
    if len(classes) != num_classes:
        raise UserError(f"{archive} has {len(classes)} classes, expected {num_classes}; "
                        f"is it the right archive?")
    source = {"kind": "mirror", "path": str(archive.resolve()), "sha256": file_sha256(archive)}
    return {s: splits[s][:2] for s in SPLITS}, {"source": source, "classes": classes}


def _from_download(name: str, root: Path) -> tuple[dict, dict]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, get_dataset(name).torchvision)
    data = {}
    try:
        for split in SPLITS:
            ds = cls(root=str(root), train=split == "train", download=True)
            images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            data[split] = (images, torch.tensor(ds.targets, dtype=torch.int64))
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, tarfile.TarError) as exc:
        raise UserError(
            f"cannot download {name} ({str(exc).splitlines()[0] if str(exc) else exc!r}). "
            f"Offline? Put {get_dataset(name).archive} in a folder and set {MIRROR_ENV} to it, "
            f"or pass --mirror") from None
    archive = root / cls.filename
    source = {"kind": "download", "url": cls.url, "md5": cls.tgz_md5,
              "sha256": file_sha256(archive) if archive.is_file() else None}
    return data, {"source": source, "classes": list(ds.classes)}


def _write_small(out: Path, name: str, data: dict, info: dict, per_class: dict,
                 seed: int) -> dict:
    counts, files = {}, {}
    for split in SPLITS:
        images, labels = data[split]
        keep = balanced_subset(labels, per_class[split], seed)
        path = out / f"{split}.pt"
        save_atomic({"images": images[keep].contiguous(), "labels": labels[keep].clone()}, path)
        counts[split], files[path.name] = len(keep), file_sha256(path)
    manifest = {"dataset": name, **info, "counts": counts,
                "subset": {"train_per_class": per_class["train"],
                           "test_per_class": per_class["test"], "seed": seed},
                "image_shape": list(data["train"][0].shape[1:]), "files": files,
                "apot_version": __version__}
    _write_manifest(out, manifest)
    return manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    write_json(out / MANIFEST, manifest)


def _imagenet_manifest(name: str, root: Path) -> dict:
    """Manifest of an ImageNet-style folder (dataset ``name``): <root>/train/<class>/*,
    <root>/val/<class>/*."""
    if not root.is_dir():
        raise UserError(f"ImageNet folder {root} does not exist; give --imagenet-root")
    counts, classes, listing = {}, None, hashlib.sha256()
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise UserError(f"ImageNet folder {root} has no '{split}/' (expected {root}/{split}/<class>/<image>)")
        split_classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if classes is not None and split_classes != classes:
            raise UserError(f"ImageNet folder {root}: train/ and val/ have different classes")
        classes = split_classes
        # what ImageFolder will load: images inside class folders, hidden files left out
        files = sorted(p for c in split_dir.iterdir() if c.is_dir() for p in c.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not p.name.startswith("."))
        for p in files:  # a cheap fingerprint of the listing: names and sizes, not contents
            listing.update(f"{p.relative_to(root).as_posix()}:{p.stat().st_size}\n".encode())
        counts[split] = len(files)
    source = {"kind": "folder", "path": str(root.resolve()), "listing_sha256": listing.hexdigest()}
    return {"dataset": name, "source": source, "classes": classes, "counts": counts,
            "apot_version": __version__}


def prepare_dataset(name: str, out: str | os.PathLike, *, mirror: str | None = None,
                    download_root: str | None = None, imagenet_root: str | None = None,
                    train_per_class: int | None = None, test_per_class: int | None = None,
                    seed: int = 0, synthetic_classes: int = 10) -> dict:
    """Prepare dataset ``name`` into folder ``out``; returns the manifest written there."""
    try:
        dataset = get_dataset(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = Path(out)
    with exclusive(out, "prepared dataset"):
        return _prepare_locked(dataset, out, mirror, download_root, imagenet_root,
                               {"train": train_per_class, "test": test_per_class}, seed,
                               synthetic_classes)


def _prepare_locked(dataset: Dataset, out: Path, mirror: str | None, download_root: str | None,
                    imagenet_root: str | None, per_class: dict, seed: int,
                    synthetic_classes: int) -> dict:
    name = dataset.name
    if dataset.kind == FOLDER:
        root = Path(imagenet_root) if imagenet_root else Path("/nonexistent")
        manifest = _imagenet_manifest(name, root)
        _write_manifest(out, manifest)
        return manifest
    if dataset.kind == GENERATED:
        counts = {"train": per_class["train"] or 100, "test": per_class["test"] or 20}
        data = {"train": synthetic_split(synthetic_classes, counts["train"], seed),
                "test": synthetic_split(synthetic_classes, counts["test"], seed + 1)}
        info = {"source": {"kind": "synthetic", "generator": "apot.data.prepare.synthetic_split",
                           "per_class": counts},
                "classes": [f"class{i}" for i in range(synthetic_classes)]}
        return _write_small(out, name, data, info, {"train": None, "test": None}, seed)
    assert dataset.kind == ARCHIVE, dataset
    num_classes, archive_name = dataset.classes, dataset.archive
    folder = mirror_folder(mirror)
    if folder is not None:
        archive = folder / archive_name
        if not archive.is_file():
            raise UserError(f"the data mirror {folder} (from --mirror or {MIRROR_ENV}) has no "
                            f"{archive_name}; add it there or unset {MIRROR_ENV} to download")
        data, info = _from_mirror(archive, num_classes)
    else:
        data, info = _from_download(name, Path(download_root) if download_root else out / "download")
    return _write_small(out, name, data, info, per_class, seed)


def load_prepared(folder: str | os.PathLike, split: str, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images uint8 (N, 3, H, W), labels int64 (N,), manifest) of a prepared small dataset."""
    from apot.storage.checkpoints import load_file

    folder = Path(folder)
    manifest = load_manifest(folder)
    path = folder / f"{split}.pt"
    if "files" not in manifest or path.name not in manifest["files"]:
        raise UserError(f"{folder} has no prepared '{split}' split (dataset "
                        f"{manifest.get('dataset')!r} keeps its images in {manifest.get('source')})")
    if verify and file_sha256(path) != manifest["files"][path.name]:
        raise UserError(f"{path} does not match its manifest (changed or damaged); "
                        f"prepare the dataset again")
    stored: Any = load_file(path)
    if not isinstance(stored, dict) or {"images", "labels"} - set(stored):
        raise UserError(f"{path} is not a prepared split; prepare the dataset again")
    return stored["images"], stored["labels"], manifest
