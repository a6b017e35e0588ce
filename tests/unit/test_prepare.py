"""Prepared datasets: mirror archives, torchvision's download (from a local file), subsets,
synthetic data, ImageNet manifests, damaged and unsafe inputs, and the prepare-data command."""
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
import torchvision.datasets.utils as tv_utils
from PIL import Image

from apot.cli import main
from apot.data.archives import CIFAR10_CLASSES
from apot.data.prepare import MIRROR_ENV, balanced_subset, load_prepared, prepare_dataset
from apot.errors import UserError

ARCHIVE = "cifar-10-images.tar.gz"
PREFIX = "cifar-10-images"
TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 3
SIZE = 32


# ---------------------------------------------------------------- helpers (as in test_data.py)

def pixels(split: str, class_index: int, image_index: int, size: int = SIZE) -> np.ndarray:
    """A distinct, deterministic uint8 (size, size, 3) image for each (split, class, image)."""
    seed = {"train": 1000, "test": 2000, "val": 3000}[split] + 10 * class_index + image_index
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_image(path: Path, array: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, "RGB").save(path, format=fmt)


def make_tree(root: Path, classes=CIFAR10_CLASSES, per_split=None) -> Path:
    """root/cifar-10-images/<split>/<class>/<i>.png; returns root/cifar-10-images."""
    per_split = per_split or {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS}
    prefix = root / PREFIX
    for split, count in per_split.items():
        for c, cls in enumerate(classes):
            for i in range(count):
                write_image(prefix / split / cls / f"{i}.png", pixels(split, c, i))
    return prefix


def pack(tree: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """tar.gz of ``tree`` with members under its name, plus ``extra`` raw members."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)  # TarInfo keeps '..' and a leading '/' as given
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def expected(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) and labels in the reader's order: CIFAR class order, file names."""
    images = [pixels(split, c, i) for c in range(10) for i in range(count)]
    labels = [c for c in range(10) for _ in range(count)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), torch.tensor(labels)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """A mirror folder holding a tiny CIFAR-10 image-folder archive (6 train + 3 test / class)."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "mirror"
    pack(make_tree(root / "src"), folder / ARCHIVE)
    return folder


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    """A developer's APOT_DATA_MIRROR must not leak into these tests."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """torchvision's CIFAR10 download points at a missing local file: it fails fast, offline."""
    monkeypatch.setattr(tvd.CIFAR10, "url", (tmp_path / "absent" / "x.tar.gz").as_uri())


# ---------------------------------------------------------------- mirror source

def test_mirror_archive_is_prepared_losslessly(mirror, tmp_path):
    out = tmp_path / "prepared"
    manifest = prepare_dataset("cifar10", out, mirror=str(mirror))
    assert sorted(p.name for p in out.iterdir()) == [".apot.lock", "manifest.json", "test.pt", "train.pt"]
    assert (out / ".apot.lock").read_text() == ""  # the lock, released
    assert json.loads((out / "manifest.json").read_text()) == manifest
    archive = mirror / ARCHIVE
    assert manifest["dataset"] == "cifar10"
    assert manifest["source"]["kind"] == "mirror"
    assert manifest["source"]["path"] == str(archive.resolve())
    assert Path(manifest["source"]["path"]).is_absolute()
    assert manifest["source"]["sha256"] == sha256(archive)
    assert manifest["classes"] == list(CIFAR10_CLASSES)
    assert manifest["counts"] == {"train": 60, "test": 30}
    assert manifest["image_shape"] == [3, 32, 32]
    assert manifest["files"] == {"train.pt": sha256(out / "train.pt"),
                                 "test.pt": sha256(out / "test.pt")}

    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        images, labels, loaded_manifest = load_prepared(out, split)
        want_images, want_labels = expected(split, count)
        assert loaded_manifest == manifest
        assert images.dtype == torch.uint8 and images.shape == (10 * count, 3, 32, 32)
        assert labels.dtype == torch.int64
        assert torch.equal(labels, want_labels)
        assert torch.equal(images, want_images)


def test_env_mirror_is_used_when_no_mirror_is_given(mirror, tmp_path, monkeypatch, no_download):
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    manifest = prepare_dataset("cifar10", tmp_path / "out", mirror=None)
    assert manifest["source"]["kind"] == "mirror"
    assert manifest["source"]["path"] == str((mirror / ARCHIVE).resolve())
    assert manifest["counts"] == {"train": 60, "test": 30}


def test_explicit_mirror_wins_over_env(mirror, tmp_path, monkeypatch, no_download):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "empty"))
    manifest = prepare_dataset("cifar10", tmp_path / "out", mirror=str(mirror))
    assert manifest["source"]["path"] == str((mirror / ARCHIVE).resolve())


@pytest.mark.parametrize("via_env", [False, True])
def test_mirror_without_archive_names_file_and_env(tmp_path, monkeypatch, via_env, no_download):
    empty = tmp_path / "empty"
    empty.mkdir()
    if via_env:
        monkeypatch.setenv(MIRROR_ENV, str(empty))
    with pytest.raises(UserError) as info:
        prepare_dataset("cifar10", tmp_path / "out", mirror=None if via_env else str(empty))
    assert ARCHIVE in str(info.value)
    assert MIRROR_ENV in str(info.value)
    assert not (tmp_path / "out" / "train.pt").exists()


# ---------------------------------------------------------------- class-balanced subsets

def test_balanced_subset_of_a_small_label_tensor():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 2, 2])  # 4 zeros, 3 ones, 5 twos
    keep = balanced_subset(labels, 2, seed=0)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, keep.sort().values)
    assert len(set(keep.tolist())) == 6
    assert torch.bincount(labels[keep]).tolist() == [2, 2, 2]
    assert torch.equal(balanced_subset(labels, 2, seed=0), keep)
    draws = {tuple(balanced_subset(labels, 2, seed=s).tolist()) for s in range(10)}
    assert len(draws) > 1  # the seed matters
    assert torch.equal(balanced_subset(labels, None, seed=0), torch.arange(12))
    assert torch.bincount(labels[balanced_subset(labels, 3, seed=1)]).tolist() == [3, 3, 3]
    with pytest.raises(UserError, match="class 1 has 3 examples"):
        balanced_subset(labels, 4, seed=0)


def _subset(mirror: Path, out: Path, seed: int):
    manifest = prepare_dataset("cifar10", out, mirror=str(mirror), train_per_class=2,
                               test_per_class=1, seed=seed)
    return manifest, load_prepared(out, "train")[:2], load_prepared(out, "test")[:2]


def test_seeded_subset_is_class_balanced_and_reproducible(mirror, tmp_path):
    manifest, (train_x, train_y), (test_x, test_y) = _subset(mirror, tmp_path / "a", seed=3)
    assert manifest["counts"] == {"train": 20, "test": 10}
    assert manifest["subset"] == {"train_per_class": 2, "test_per_class": 1, "seed": 3}
    assert torch.bincount(train_y, minlength=10).tolist() == [2] * 10
    assert torch.bincount(test_y, minlength=10).tolist() == [1] * 10
    # every kept image is one of the archive's images of its class
    full_x, full_y = expected("train", TRAIN_PER_CLASS)
    for image, label in zip(train_x, train_y):
        matches = [i for i in range(len(full_x)) if torch.equal(full_x[i], image)]
        assert len(matches) == 1 and full_y[matches[0]] == label
    assert len({tuple(x.flatten()[:16].tolist()) for x in train_x}) == 20  # no duplicates

    _, (again_x, again_y), (again_tx, _) = _subset(mirror, tmp_path / "b", seed=3)
    assert torch.equal(again_x, train_x) and torch.equal(again_y, train_y)
    assert torch.equal(again_tx, test_x)

    _, (other_x, other_y), _ = _subset(mirror, tmp_path / "c", seed=4)
    assert torch.equal(other_y, train_y)  # same balance ...
    assert not torch.equal(other_x, train_x)  # ... other images


def test_subset_larger_than_a_class_is_an_error(mirror, tmp_path):
    with pytest.raises(UserError, match="per class"):
        prepare_dataset("cifar10", tmp_path / "out", mirror=str(mirror),
                        train_per_class=TRAIN_PER_CLASS + 1)
    with pytest.raises(UserError, match="per class"):
        prepare_dataset("cifar10", tmp_path / "out2", mirror=str(mirror),
                        test_per_class=TEST_PER_CLASS + 1)


# ---------------------------------------------------------------- damaged and unsafe archives

def test_archive_with_nine_classes(tmp_path):
    tree = make_tree(tmp_path / "src", classes=CIFAR10_CLASSES[:9],
                     per_split={"train": 1, "test": 1})
    pack(tree, tmp_path / "mirror" / ARCHIVE)
    with pytest.raises(UserError, match="classes"):
        prepare_dataset("cifar10", tmp_path / "out", mirror=str(tmp_path / "mirror"))
    assert not (tmp_path / "out" / "train.pt").exists()


def test_archive_without_test_split(tmp_path):
    tree = make_tree(tmp_path / "src", per_split={"train": 1})
    pack(tree, tmp_path / "mirror" / ARCHIVE)
    with pytest.raises(UserError, match="test/"):
        prepare_dataset("cifar10", tmp_path / "out", mirror=str(tmp_path / "mirror"))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_truncated_archive(mirror, tmp_path):
    data = (mirror / ARCHIVE).read_bytes()
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / ARCHIVE).write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        prepare_dataset("cifar10", tmp_path / "out", mirror=str(tmp_path / "mirror"))
    assert not (tmp_path / "out" / "train.pt").exists()


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_unsafe_member_names_are_refused(tmp_path, kind):
    unique = f"apot-evil-{uuid.uuid4().hex}.png"  # unique: /tmp is shared with other runs
    name = {"dotdot": f"../{unique}", "absolute": f"/tmp/{unique}"}[kind]
    tree = make_tree(tmp_path / "src", per_split={"train": 1, "test": 1})
    mirror = tmp_path / "mirror"
    pack(tree, mirror / ARCHIVE, extra={name: png_bytes(pixels("train", 0, 0))})
    with pytest.raises(UserError, match="unsafe"):
        prepare_dataset("cifar10", tmp_path / "out", mirror=str(mirror))
    assert not (tmp_path / "out" / "train.pt").exists()
    assert not (tmp_path / "out" / "manifest.json").exists()
    for place in (Path("/tmp"), tmp_path, mirror.parent, Path.cwd().parent, Path.cwd()):
        assert not (place / unique).exists()


# ---------------------------------------------------------------- loading prepared folders

def test_tampered_prepared_file_is_refused(mirror, tmp_path):
    out = tmp_path / "out"
    prepare_dataset("cifar10", out, mirror=str(mirror), train_per_class=1, test_per_class=1)
    load_prepared(out, "train")  # fine before
    with open(out / "train.pt", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserError, match="manifest"):
        load_prepared(out, "train")
    images, _, _ = load_prepared(out, "test")  # the other split is untouched
    assert images.shape == (10, 3, 32, 32)


def test_folder_without_manifest(tmp_path):
    (tmp_path / "train.pt").write_bytes(b"")
    with pytest.raises(UserError, match="prepare-data"):
        load_prepared(tmp_path, "train")


# ---------------------------------------------------------------- synthetic

def test_synthetic_counts_classes_and_determinism(tmp_path):
    manifest = prepare_dataset("synthetic", tmp_path / "a", train_per_class=4,
                               test_per_class=2, seed=5)
    assert manifest["source"]["kind"] == "synthetic"
    assert manifest["counts"] == {"train": 40, "test": 20}
    assert len(manifest["classes"]) == 10
    images, labels, _ = load_prepared(tmp_path / "a", "train")
    assert images.dtype == torch.uint8 and images.shape == (40, 3, 32, 32)
    assert torch.bincount(labels).tolist() == [4] * 10

    three = prepare_dataset("synthetic", tmp_path / "three", train_per_class=3,
                            test_per_class=1, synthetic_classes=3)
    assert three["counts"] == {"train": 9, "test": 3}
    assert len(three["classes"]) == 3
    _, test_labels, _ = load_prepared(tmp_path / "three", "test")
    assert sorted(test_labels.tolist()) == [0, 1, 2]

    again = prepare_dataset("synthetic", tmp_path / "b", train_per_class=4,
                            test_per_class=2, seed=5)
    assert again["files"] == manifest["files"]
    assert (tmp_path / "a" / "train.pt").read_bytes() == (tmp_path / "b" / "train.pt").read_bytes()
    other = prepare_dataset("synthetic", tmp_path / "c", train_per_class=4,
                            test_per_class=2, seed=6)
    assert other["files"]["train.pt"] != manifest["files"]["train.pt"]


# ---------------------------------------------------------------- torchvision download path

def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fake_cifar_python_archive(folder: Path) -> tuple[Path, dict, dict[str, list[str]]]:
    """cifar-10-python.tar.gz in the official layout with tiny batches.

    Returns (archive, {"train"/"test": (images (N,3,32,32), labels)}, md5 lists). The official
    pickles were written by Python 2, so torchvision (which loads them with encoding="latin1")
    sees str keys "data"/"labels"/"label_names"; written from Python 3 the keys must be str too.
    """
    rng = np.random.default_rng(7)
    batches, md5s, data = {}, {"train": [], "test": []}, {"train": ([], []), "test": ([], [])}
    names = [(f"data_batch_{i}", "train", 2) for i in range(1, 6)] + [("test_batch", "test", 3)]
    for name, split, n in names:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # R plane, G plane, B plane
        labels = rng.integers(0, 10, n).tolist()
        blob = pickle.dumps({"batch_label": name, "data": rows, "labels": labels,
                             "filenames": [f"{name}_{i}.png" for i in range(n)]})
        batches[name] = blob
        md5s[split].append([name, _md5(blob)])
        data[split][0].append(rows.reshape(n, 3, 32, 32))
        data[split][1].extend(labels)
    batches["batches.meta"] = pickle.dumps({"label_names": list(CIFAR10_CLASSES),
                                            "num_cases_per_batch": 2, "num_vis": 3072})
    archive = folder / "cifar-10-python.tar.gz"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    want = {s: (torch.from_numpy(np.concatenate(x)), torch.tensor(y)) for s, (x, y) in data.items()}
    md5s["meta"] = _md5(batches["batches.meta"])
    return archive, want, md5s


def test_torchvision_download_from_a_local_url(tmp_path, monkeypatch):
    # torchvision (0.29) cannot fetch file:// URLs as such: its _urlretrieve reads
    # ``response.length`` for the progress bar, which urllib's file:// responses lack
    # (AttributeError). So only that innermost byte copy is replaced, by a urlopen + copy;
    # the rest runs as shipped: CIFAR10.download -> download_and_extract_archive ->
    # download_url (redirect check through urlopen, md5 of the archive) -> extract_archive,
    # then the md5 checks of every batch file and the unpickling.
    def urlretrieve(url, filename, chunk_size=1 << 15):
        with urllib.request.urlopen(url) as response, open(filename, "wb") as handle:
            shutil.copyfileobj(response, handle, chunk_size)
        fetched.append(url)

    fetched = []
    monkeypatch.setattr(tv_utils, "_urlretrieve", urlretrieve)
    archive, want, md5s = fake_cifar_python_archive(tmp_path / "server")
    url = archive.as_uri()
    monkeypatch.setattr(tvd.CIFAR10, "url", url)
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", _md5(archive.read_bytes()))
    monkeypatch.setattr(tvd.CIFAR10, "train_list", md5s["train"])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", md5s["test"])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5s["meta"]})
    download_root = tmp_path / "downloads"
    out = tmp_path / "out"
    manifest = prepare_dataset("cifar10", out, mirror=None, download_root=str(download_root))

    assert fetched == [url]  # downloaded once, then found intact for the test split
    downloaded = download_root / "cifar-10-python.tar.gz"
    assert downloaded.read_bytes() == archive.read_bytes()  # fetched through the URL
    assert (download_root / "cifar-10-batches-py" / "test_batch").is_file()  # and extracted
    assert manifest["source"]["kind"] == "download"
    assert manifest["source"]["url"] == url
    assert manifest["source"]["sha256"] == sha256(archive)
    assert manifest["classes"] == list(CIFAR10_CLASSES)
    assert manifest["counts"] == {"train": 10, "test": 3}
    assert manifest["image_shape"] == [3, 32, 32]
    for split in ("train", "test"):
        images, labels, _ = load_prepared(out, split)
        assert images.dtype == torch.uint8 and images.is_contiguous()
        assert torch.equal(images, want[split][0])
        assert torch.equal(labels, want[split][1])


def test_failed_download_points_to_the_mirror(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd.CIFAR10, "url", (tmp_path / "nowhere" / "c.tar.gz").as_uri())
    with pytest.raises(UserError, match=MIRROR_ENV) as info:
        prepare_dataset("cifar10", tmp_path / "out", mirror=None,
                        download_root=str(tmp_path / "downloads"))
    assert "cannot download" in str(info.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_download_with_wrong_checksum_points_to_the_mirror(tmp_path, monkeypatch):
    archive, _, _ = fake_cifar_python_archive(tmp_path / "server")
    monkeypatch.setattr(tv_utils, "_urlretrieve",
                        lambda url, filename, chunk_size=0: shutil.copyfile(archive, filename))
    monkeypatch.setattr(tvd.CIFAR10, "url", archive.as_uri())
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", "0" * 32)  # torchvision's md5 check fails
    with pytest.raises(UserError, match=MIRROR_ENV):
        prepare_dataset("cifar10", tmp_path / "out", mirror=None,
                        download_root=str(tmp_path / "downloads"))
    assert not (tmp_path / "out" / "train.pt").exists()


# ---------------------------------------------------------------- ImageNet folder manifest

def make_imagenet(root: Path, splits=("train", "val")) -> Path:
    for split in splits:
        for c, cls in enumerate(("n02_zebra", "n01_apple")):  # not sorted on creation
            write_image(root / split / cls / f"{split}_{c}.JPEG", pixels(split, c, 0, 8), "JPEG")
    return root


def test_imagenet_manifest(tmp_path):
    root = make_imagenet(tmp_path / "imagenet")
    out = tmp_path / "out"
    manifest = prepare_dataset("imagenet", out, imagenet_root=str(root))
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["source"]["kind"] == "folder"
    assert manifest["source"]["path"] == str(root.resolve())
    assert manifest["counts"] == {"train": 2, "val": 2}
    assert manifest["classes"] == ["n01_apple", "n02_zebra"]
    with pytest.raises(UserError, match="no prepared 'train'"):
        load_prepared(out, "train")  # its images stay in the folder


def test_imagenet_without_val(tmp_path):
    root = make_imagenet(tmp_path / "imagenet", splits=("train",))
    with pytest.raises(UserError, match="val/"):
        prepare_dataset("imagenet", tmp_path / "out", imagenet_root=str(root))


# ---------------------------------------------------------------- command line

def test_cli_prepare_data_prints_the_manifest(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prepare-data", "--dataset", "synthetic", "--out", str(out),
                 "--train-per-class", "3", "--test-per-class", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = json.loads(captured.out)
    assert printed == json.loads((out / "manifest.json").read_text())
    assert printed["counts"] == {"train": 30, "test": 20}
    assert printed["dataset"] == "synthetic"
    assert os.path.isfile(out / "train.pt") and os.path.isfile(out / "test.pt")


def test_cli_prepare_data_error_exit_code(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["prepare-data", "--dataset", "cifar10", "--out", str(tmp_path / "out"),
                 "--mirror", str(tmp_path / "empty")])
    captured = capsys.readouterr()
    assert code == 2
    assert ARCHIVE in captured.err and captured.out == ""


def test_cifar100_mirror_archive_with_100_classes(tmp_path):
    """CIFAR-100's path is CIFAR-10's with another archive name and class count: generated
    data in the same format stands in for the real archive, which is not available offline."""
    classes = [f"class{i:03d}" for i in range(100)]
    tree = make_tree(tmp_path / "src", classes=classes, per_split={"train": 2, "test": 1})
    mirror_dir = tmp_path / "mirror"
    pack(tree, mirror_dir / "cifar-100-images.tar.gz")
    manifest = prepare_dataset("cifar100", tmp_path / "out", mirror=str(mirror_dir),
                               train_per_class=1)
    assert manifest["dataset"] == "cifar100" and manifest["classes"] == classes
    assert manifest["counts"] == {"train": 100, "test": 100}
    images, labels, _ = load_prepared(tmp_path / "out", "train")
    assert labels.bincount().tolist() == [1] * 100 and images.shape == (100, 3, 32, 32)
    with pytest.raises(UserError, match="has 100 classes, expected 10"):
        shutil.copy(mirror_dir / "cifar-100-images.tar.gz", mirror_dir / "cifar-10-images.tar.gz")
        prepare_dataset("cifar10", tmp_path / "out10", mirror=str(mirror_dir))
