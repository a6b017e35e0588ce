"""Image-folder datasets: ``<root>/<split>/<class>/<image>``, as a folder or an archive.

This module reads a split into memory as uint8 tensors (small-image datasets such as CIFAR)
without unpacking an archive to disk. Class indices follow the dataset's canonical order when
the class names are CIFAR-10's (torchvision's order), otherwise the sorted folder names.
"""
from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

import numpy as np
import torch
from PIL import Image

from apot.errors import UserError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
# Caps on what one archive can make the reader hold in memory: members are read whole, and a
# small archive can hold a highly compressed member (a 0.7 MB archive once cost 0.4 GB), so
# the archive's own headers cannot be the only limit. Members are images of a small-image
# dataset (nothing else is read from an archive; torchvision reads the official ones): the
# CIFAR-10 mirror's 60,000 JPEGs are at most 1.1 kB each and 55 MB in all; 32 MiB is generous
# for any single JPEG or PNG (ImageNet's are a few MB), 1 GiB in all ~19 times what CIFAR needs.
MAX_MEMBER_BYTES = 32 << 20
MAX_ARCHIVE_BYTES = 1 << 30


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _split_member(name: str, splits: tuple[str, ...]) -> tuple[str, str, str] | None:
    """(split, class, file) if ``name`` is ``[prefix/]<split>/<class>/<file>`` with an image
    suffix and ``split`` in ``splits``; None for anything else (folders, hidden files)."""
    parts = PurePosixPath(name).parts
    if any(part.startswith(".") or part == "__MACOSX" for part in parts if part not in (".", "..")):
        return None  # macOS resource forks (._x.png) and other hidden files
    if len(parts) < 3 or parts[-3] not in splits or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    return parts[-3], parts[-2], parts[-1]


def _check_member_name(name: str, path: Path) -> None:
    """Refuse archive members that would land outside the archive's root if unpacked."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise UserError(f"archive {path} is unsafe: member {name!r} points outside the archive "
                        f"(absolute path or '..'); refusing to read it")


def _check_size(size: int, size_text: str, name: str, path: Path, total: int) -> None:
    """Refuse a member of ``size`` bytes (``size_text`` in words) when it, or the archive's
    ``total`` so far with it, is over the caps."""
    if size > MAX_MEMBER_BYTES:
        problem = (f"member {name!r} is {size_text}, over the cap of {MAX_MEMBER_BYTES:,} bytes "
                   f"for one image")
    elif total + size > MAX_ARCHIVE_BYTES:
        problem = (f"its images add up to more than the cap of {MAX_ARCHIVE_BYTES:,} bytes for "
                   f"one archive (at member {name!r}, {size_text}); this reader is for "
                   f"small-image datasets such as CIFAR")
    else:
        return
    raise UserError(f"archive {path} is unsafe: {problem}; refusing to read it (a damaged or "
                    f"malicious archive?). Download or copy it again from a trusted source")


def _read_member(handle: BinaryIO, declared: int, name: str, path: Path, total: int) -> bytes:
    """A member's bytes, never more than its declared size (at most MAX_MEMBER_BYTES) + 1 of
    them in memory.

    ``declared`` is the size in the member's header, ``total`` the bytes already read from
    this archive. The header is checked before reading (a declared bomb costs nothing), and
    the bytes actually read after it, since a header is only the archive's claim.
    """
    _check_size(declared, f"{declared:,} bytes", name, path, total)
    # one byte more than the header says: enough to catch a lying header, and no 32 MiB
    # buffer allocated per member (read(n) allocates n bytes up front)
    data = handle.read(declared + 1)
    if len(data) > declared:
        raise UserError(f"archive {path} is unsafe: member {name!r} holds more than the "
                        f"{declared:,} bytes its header says; refusing to read it (a damaged or "
                        f"malicious archive?). Download or copy it again from a trusted source")
    return data


def _archive_members(path: Path, splits: tuple[str, ...]) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, file, bytes) of the images of ``splits`` in an archive, in stored order.

    Nothing is unpacked to disk; members with unsafe names or sizes over the caps stop the
    read, and links and other non-regular members are ignored (an image must be a regular file
    inside the archive).
    """
    total = 0  # bytes read from this archive so far, against MAX_ARCHIVE_BYTES
    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                _check_member_name(info.filename, path)
                key = None if info.is_dir() else _split_member(info.filename, splits)
                if key:
                    with archive.open(info) as handle:
                        data = _read_member(handle, info.file_size, info.filename, path, total)
                    total += len(data)
                    yield (*key, data)
        return
    with tarfile.open(path, mode="r:*") as archive:
        for member in archive:
            _check_member_name(member.name, path)
            key = _split_member(member.name, splits) if member.isfile() else None
            if key:
                data = _read_member(archive.extractfile(member), member.size, member.name,
                                    path, total)
                total += len(data)
                yield (*key, data)


def _folder_members(root: Path, splits: tuple[str, ...]) -> Iterator[tuple[str, str, str, bytes]]:
    for split in splits:
        candidates = [root / split] + [child / split for child in sorted(root.iterdir())
                                       if child.is_dir()]
        split_dir = next((c for c in candidates if c.is_dir()), None)
        if split_dir is None:
            continue  # reported by the caller with the other missing splits
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for image in sorted(class_dir.iterdir()):
                if (image.is_file() and image.suffix.lower() in IMAGE_SUFFIXES
                        and not image.name.startswith(".")):
                    yield split, class_dir.name, image.name, image.read_bytes()


def class_order(names: set[str]) -> list[str]:
    """Canonical class order: CIFAR-10's torchvision order when it is CIFAR-10, else sorted."""
    if names == set(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    return sorted(names)


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as exc:  # PIL raises many types for broken files
        raise UserError(f"cannot decode image {where}: {exc}; the dataset is damaged, "
                        f"download or copy it again") from None


def read_splits(path: str | Path, splits: tuple[str, ...] = ("train", "test"),
                limit: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """Read several splits of an image-folder dataset in one pass over the folder or archive.

    Returns {split: (images uint8 (N, 3, H, W), labels int64 (N,), class names)}. All images
    must share one size (small-image datasets). ``limit`` keeps the first ``limit`` images per
    class in file-name order, for quick checks. Every split must exist and have the same classes.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"dataset {path} does not exist (give an image-folder archive or folder)")
    grouped: dict[str, dict[str, list[tuple[str, bytes]]]] = {s: {} for s in splits}
    try:
        members = (_archive_members(path, splits) if is_archive(path)
                   else _folder_members(path, splits))
        for split, cls, name, data in members:
            grouped[split].setdefault(cls, []).append((name, data))
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"dataset archive {path} is corrupt or truncated ({reason}); "
                        f"download or copy it again") from None
    missing = [s for s in splits if not grouped[s]]
    if missing:
        raise UserError(f"{path} has no images under {', '.join(repr(s + '/<class>/') for s in missing)}"
                        f" (expected <root>/<split>/<class>/<image>); the dataset is incomplete")
    names = {s: set(grouped[s]) for s in splits}
    if len({frozenset(n) for n in names.values()}) > 1:
        raise UserError(f"{path}: the splits have different classes "
                        f"({', '.join(f'{s}: {len(n)}' for s, n in names.items())})")
    classes = class_order(names[splits[0]])
    return {split: _decode_split(grouped[split], classes, limit, split, path) for split in splits}


def _decode_split(grouped: dict[str, list[tuple[str, bytes]]], classes: list[str],
                  limit: int | None, split: str,
                  path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    images, labels = [], []
    for label, cls in enumerate(classes):
        for name, data in sorted(grouped[cls])[:limit]:
            images.append(_decode(data, f"{split}/{cls}/{name} in {path}"))
            labels.append(label)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise UserError(f"images of {split}/ in {path} have different sizes {sorted(shapes)[:3]}; this "
                        f"reader is for small fixed-size images (CIFAR)")
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return stacked, torch.tensor(labels, dtype=torch.int64), classes


def read_split(path: str | Path, split: str = "test",
               limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One split of an image-folder dataset: see ``read_splits``."""
    return read_splits(path, (split,), limit)[split]
