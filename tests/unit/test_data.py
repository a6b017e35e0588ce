"""Image-folder datasets as folders and archives: decoding, class order, limits, errors."""
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import message
from PIL import Image

from apot.data.archives import CIFAR10_CLASSES, read_split
from apot.errors import UserError

CLASSES = ("zebra", "apple", "mango")  # deliberately not sorted on disk
PER_CLASS = 2
SIZE = 8


def pixels(split: str, class_index: int, image_index: int, size: int = SIZE) -> np.ndarray:
    """A distinct, deterministic uint8 (size, size, 3) image for each (split, class, image)."""
    seed = {"train": 1000, "test": 2000}[split] + 10 * class_index + image_index
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, "RGB").save(path, format="PNG")


def make_tree(root: Path, classes=CLASSES, per_class=PER_CLASS, splits=("train", "test"),
              size=SIZE) -> Path:
    """root/mini/<split>/<class>/<i>.png; returns root/mini."""
    prefix = root / "mini"
    for split in splits:
        for c, cls in enumerate(classes):
            for i in range(per_class):
                write_png(prefix / split / cls / f"{i}.png", pixels(split, c, i, size))
    return prefix


def pack(tree: Path, dest: Path, kind: str) -> Path:
    """Pack ``tree`` (the prefix folder) into an archive whose members start with its name."""
    if kind == "folder":
        return tree.parent
    if kind == "zip":
        path = dest.with_suffix(".zip")
        with zipfile.ZipFile(path, "w") as archive:
            for file in sorted(tree.parent.rglob("*")):
                archive.write(file, file.relative_to(tree.parent).as_posix())  # dirs too
        return path
    suffix, mode = {"tar": (".tar", "w"), "tar.gz": (".tar.gz", "w:gz")}[kind]
    path = dest.parent / (dest.name + suffix)
    with tarfile.open(path, mode) as archive:
        archive.add(tree, arcname=tree.name)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "src")


def expected_test_split(per_class=PER_CLASS):
    """Images and labels in the reader's order: classes sorted, files by name."""
    order = sorted(CLASSES)
    images, labels = [], []
    for label, cls in enumerate(order):
        c = CLASSES.index(cls)
        for i in range(per_class):
            images.append(pixels("test", c, i))
            labels.append(label)
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return stacked, torch.tensor(labels), order


@pytest.mark.parametrize("kind", ["folder", "tar", "tar.gz", "zip"])
def test_read_split_decodes_exact_pixels(tree, tmp_path, kind):
    path = pack(tree, tmp_path / "mini", kind)
    images, labels, classes = read_split(path, "test")
    want_images, want_labels, want_classes = expected_test_split()
    assert classes == want_classes == ["apple", "mango", "zebra"]
    assert images.dtype == torch.uint8 and images.shape == (6, 3, SIZE, SIZE)
    assert images.is_contiguous()
    assert labels.dtype == torch.int64
    assert labels.tolist() == want_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(images, want_images)


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "zip"])
def test_train_split_is_separate(tree, tmp_path, kind):
    path = pack(tree, tmp_path / "mini", kind)
    images, labels, classes = read_split(path, "train")
    assert images.shape == (6, 3, SIZE, SIZE)
    first_apple = torch.from_numpy(pixels("train", CLASSES.index("apple"), 0)).permute(2, 0, 1)
    assert torch.equal(images[0], first_apple)


def test_folder_with_split_at_top_level(tree):
    images, labels, classes = read_split(tree, "test")  # .../mini itself holds test/
    assert images.shape == (6, 3, SIZE, SIZE)
    assert classes == sorted(CLASSES)


@pytest.mark.parametrize("kind", ["folder", "tar", "zip"])
def test_limit_keeps_first_images_per_class(tmp_path, kind):
    tree = make_tree(tmp_path / "src", per_class=3)
    path = pack(tree, tmp_path / "mini", kind)
    images, labels, classes = read_split(path, "test", limit=1)
    assert labels.tolist() == [0, 1, 2]
    for label, cls in enumerate(classes):
        first = torch.from_numpy(pixels("test", CLASSES.index(cls), 0)).permute(2, 0, 1)
        assert torch.equal(images[label], first)
    images2, labels2, _ = read_split(path, "test", limit=2)
    assert labels2.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(images2[::2], images)
    all_images, all_labels, _ = read_split(path, "test")
    assert len(all_labels) == 9


def test_cifar10_class_names_use_torchvision_order(tmp_path):
    # CIFAR-10's torchvision order happens to be alphabetical too, so this pins the order and
    # the label of each image rather than telling the two rules apart. The folders are written
    # in reverse so that creation (directory) order cannot give the answer.
    root = tmp_path / "cifar"
    for c, cls in reversed(list(enumerate(CIFAR10_CLASSES))):
        write_png(root / "test" / cls / "img.png", np.full((4, 4, 3), c * 20, dtype=np.uint8))
    images, labels, classes = read_split(root, "test")
    assert classes == list(CIFAR10_CLASSES)
    assert classes[0] == "airplane" and classes[9] == "truck"
    assert labels.tolist() == list(range(10))
    for label in range(10):
        # the image of class CIFAR10_CLASSES[label] has value label * 20
        assert (images[labels == label] == label * 20).all()


def test_grayscale_and_rgba_are_converted_to_rgb(tmp_path):
    root = tmp_path / "ds"
    (root / "test" / "a").mkdir(parents=True)
    (root / "test" / "b").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 77, dtype=np.uint8), "L").save(root / "test" / "a" / "x.png")
    Image.fromarray(np.full((4, 4, 4), 9, dtype=np.uint8), "RGBA").save(root / "test" / "b" / "y.png")
    images, labels, _ = read_split(root, "test")
    assert images.shape == (2, 3, 4, 4)
    assert (images[0] == 77).all() and (images[1] == 9).all()


# --------------------------------------------------------------------------- errors

def test_missing_path(tmp_path):
    path = tmp_path / "nowhere.tar.gz"
    with pytest.raises(UserError) as info:
        read_split(path)
    assert "does not exist" in message(info, path)


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "zip"])
def test_no_test_split(tmp_path, kind):
    tree = make_tree(tmp_path / "src", splits=("train",))
    path = pack(tree, tmp_path / "mini", kind)
    with pytest.raises(UserError) as info:
        read_split(path, "test")
    text = message(info, path)
    assert "has no images under 'test/<class>/'" in text, text


def test_truncated_tar_gz(tree, tmp_path):
    path = pack(tree, tmp_path / "mini", "tar.gz")
    data = path.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UserError) as info:
        read_split(cut, "test")
    text = message(info, cut)
    assert "corrupt or truncated" in text


def test_truncated_zip(tree, tmp_path):
    path = pack(tree, tmp_path / "mini", "zip")
    data = path.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: len(data) // 2])  # central directory gone
    with pytest.raises(UserError) as info:
        read_split(cut, "test")
    assert "corrupt or truncated" in message(info, cut)


@pytest.mark.parametrize("kind", ["folder", "tar"])
def test_corrupt_image(tree, tmp_path, kind):
    (tree / "test" / "mango" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    path = pack(tree, tmp_path / "mini", kind)
    with pytest.raises(UserError) as info:
        read_split(path, "test")
    text = message(info, path)
    assert "cannot decode image" in text
    assert "test/mango/1.png" in text
    # the train split is intact and still reads
    assert read_split(path, "train")[0].shape == (6, 3, SIZE, SIZE)


def test_images_of_different_sizes(tree, tmp_path):
    write_png(tree / "test" / "apple" / "2.png", pixels("test", 0, 2, size=SIZE * 2))
    with pytest.raises(UserError) as info:
        read_split(tree.parent, "test")
    text = message(info, tree.parent)
    assert "different sizes" in text
    assert "(8, 8, 3)" in text and "(16, 16, 3)" in text


def test_folder_without_images(tmp_path):
    (tmp_path / "ds" / "test" / "cat").mkdir(parents=True)
    (tmp_path / "ds" / "test" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError) as info:
        read_split(tmp_path / "ds", "test")
    assert "no images" in message(info, tmp_path / "ds")


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_hidden_files_and_macos_resource_forks_are_ignored(tmp_path, tree, kind):
    (tree / "test" / "apple" / "._0.png").write_bytes(b"\x00\x05\x16\x07 not an image")
    fork = tree.parent / "__MACOSX" / "mini" / "test" / "apple" / "._1.png"
    fork.parent.mkdir(parents=True)
    fork.write_bytes(b"\x00\x05\x16\x07 not an image")
    images, labels, classes = read_split(pack(tree, tmp_path / "mini", kind), "test")
    assert len(labels) == len(CLASSES) * PER_CLASS
    assert classes == sorted(CLASSES)
