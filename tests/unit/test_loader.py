"""Batched augmentation and the in-memory TensorLoader."""
import math

import pytest
import torch
import torchvision.transforms.functional as TF

from apot.data.datasets import CIFAR_MEAN, CIFAR_STD
from apot.data.loader import TensorLoader, random_crop_flip

PAD = 4


def random_images(n: int = 5, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8)


def reference_crop_flip(image: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    """Slice the zero-padded (C, H, W) image at (top, left), then mirror left-right."""
    _, h, w = image.shape
    padded = torch.zeros(image.shape[0], h + 2 * PAD, w + 2 * PAD, dtype=image.dtype)
    padded[:, PAD:PAD + h, PAD:PAD + w] = image
    crop = padded[:, top:top + h, left:left + w]
    return crop.flip(-1) if flip else crop


# ---------------------------------------------------------------- random_crop_flip

@pytest.mark.parametrize("flip", [False, True])
def test_random_crop_flip_matches_slicing(flip):
    images = random_images()
    offsets = torch.tensor([[0, 0], [8, 8], [0, 8], [8, 0], [3, 5]])
    flips = torch.full((5,), flip)
    out = random_crop_flip(images, offsets, flips, PAD)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for i in range(5):
        top, left = offsets[i].tolist()
        assert torch.equal(out[i], reference_crop_flip(images[i], top, left, flip)), (i, top, left)


def test_random_crop_flip_mixed_flips_and_identity():
    images = random_images(seed=1)
    offsets = torch.tensor([[4, 4], [4, 4], [1, 7], [6, 2], [8, 3]])
    flips = torch.tensor([False, True, True, False, True])
    out = random_crop_flip(images, offsets, flips, PAD)
    assert torch.equal(out[0], images[0])  # centre crop, no flip: the image itself
    assert torch.equal(out[1], images[1].flip(-1))
    for i in range(5):
        top, left = offsets[i].tolist()
        assert torch.equal(out[i], reference_crop_flip(images[i], top, left, bool(flips[i])))
    # a corner crop brings in exactly PAD rows / columns of zero padding
    corner = random_crop_flip(images[:1], torch.tensor([[0, 0]]), torch.tensor([False]), PAD)[0]
    assert corner[:, :PAD].eq(0).all() and corner[:, :, :PAD].eq(0).all()
    assert torch.equal(corner[:, PAD:, PAD:], images[0][:, :-PAD, :-PAD])


def test_random_crop_flip_matches_torchvision():
    images = random_images(seed=2)
    generator = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 2 * PAD + 1, (5, 2), generator=generator)
    flips = torch.tensor([True, False, True, True, False])
    out = random_crop_flip(images, offsets, flips, PAD)
    for i in range(5):
        top, left = offsets[i].tolist()
        want = TF.crop(TF.pad(images[i], PAD), top, left, 32, 32)
        if flips[i]:
            want = TF.hflip(want)
        assert torch.equal(out[i], want), (i, top, left)


# ---------------------------------------------------------------- TensorLoader

def unique_dataset(n: int = 23, size: int = 8):
    """Labels 0..n-1 (unique) and image i filled with a pattern that encodes i."""
    images = random_images(n, size, seed=4)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return images, torch.arange(n)


def batches(loader: TensorLoader, epoch: int = 0):
    return [(x.clone(), y.clone()) for x, y in loader.epoch(epoch)]


def test_train_epoch_visits_each_example_once():
    images, labels = unique_dataset()
    loader = TensorLoader(images, labels, batch_size=5, train=True, device="cpu", seed=1)
    assert len(loader) == math.ceil(23 / 5) == 5
    for epoch in (0, 1, 2):
        got = batches(loader, epoch)
        assert len(got) == len(loader)
        assert [len(y) for _, y in got] == [5, 5, 5, 5, 3]
        seen = torch.cat([y for _, y in got])
        assert sorted(seen.tolist()) == list(range(23))
        for x, y in got:
            assert x.dtype == torch.float32 and x.shape == (len(y), 3, 8, 8)
            assert x.device.type == "cpu" and y.device.type == "cpu"
            assert y.dtype == torch.int64
        assert seen.tolist() != list(range(23))  # shuffled


def test_len_is_ceiling_of_examples_over_batch():
    images, labels = unique_dataset(20)
    for batch, want in ((5, 4), (6, 4), (20, 1), (21, 1), (1, 20), (7, 3)):
        assert len(TensorLoader(images, labels, batch, train=True)) == want
        assert len(batches(TensorLoader(images, labels, batch, train=False))) == want


def test_train_batches_depend_on_seed_and_epoch_only():
    images, labels = unique_dataset()
    a = TensorLoader(images, labels, batch_size=5, train=True, seed=1)
    b = TensorLoader(images, labels, batch_size=5, train=True, seed=1)
    first, again = batches(a, 3), batches(b, 3)
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(y1, y2) and torch.equal(x1, x2)
    assert torch.equal(torch.cat([x for x, _ in batches(a, 3)]), torch.cat([x for x, _ in first]))

    order = lambda bs: torch.cat([y for _, y in bs]).tolist()  # noqa: E731
    assert order(batches(a, 4)) != order(first)  # another epoch: another order
    c = TensorLoader(images, labels, batch_size=5, train=True, seed=2)
    assert order(batches(c, 3)) != order(first)  # another seed: another order


def test_eval_loader_is_in_order_unaugmented_and_normalized():
    images, labels = unique_dataset(13)
    loader = TensorLoader(images, labels, batch_size=4, train=False)
    got = batches(loader)
    assert [y.tolist() for _, y in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12]]
    x = torch.cat([x for x, _ in got])
    assert x.dtype == torch.float32
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    want = (images.double() / 255 - mean.double()) / std.double()
    torch.testing.assert_close(x.double(), want, rtol=0, atol=1e-5)
    # and twice the same
    assert torch.equal(torch.cat([x for x, _ in batches(loader)]), x)


def test_train_loader_output_is_normalized_crop_flip_of_the_input():
    """Identity normalization (mean 0, std 1/255) exposes the uint8 crops: each batch item is
    some padded crop (offsets 0..8), possibly flipped, of the image its label names."""
    images, labels = unique_dataset(9, size=8)
    loader = TensorLoader(images, labels, batch_size=4, train=True, seed=5,
                          mean=(0, 0, 0), std=(1 / 255,) * 3)
    for x, y in loader.epoch(0):
        # x / 255 / (1 / 255) in float32: integers up to round-off
        torch.testing.assert_close(x, x.round(), rtol=0, atol=1e-4)
        for crop, label in zip(x.round().to(torch.uint8), y.tolist()):
            candidates = [reference_crop_flip(images[label], top, left, flip)
                          for top in range(9) for left in range(9) for flip in (False, True)]
            assert any(torch.equal(crop, c) for c in candidates), label


# ---------------------------------------------------------------- augmentation statistics

def test_augmentation_statistics():
    """4000 copies of one 16x16 image whose channel 0 is row+1 and channel 1 is col+1: the
    centre pixel gives the crop offsets, its right neighbour the flip."""
    n, size = 4000, 16
    rows = torch.arange(1, size + 1).view(size, 1).expand(size, size)
    cols = torch.arange(1, size + 1).view(1, size).expand(size, size)
    image = torch.stack([rows, cols, torch.full((size, size), 200)]).to(torch.uint8)
    images = image.expand(n, 3, size, size)
    loader = TensorLoader(images, torch.zeros(n, dtype=torch.int64), batch_size=n, train=True,
                          seed=0, mean=(0, 0, 0), std=(1 / 255,) * 3)
    (x, _), = list(loader.epoch(0))
    x = x.round().long()
    c = size // 2
    centre_row, centre_col, right_col = x[:, 0, c, c] - 1, x[:, 1, c, c] - 1, x[:, 1, c, c + 1] - 1
    flipped = right_col < centre_col
    assert torch.equal((right_col - centre_col).abs(), torch.ones(n, dtype=torch.long))
    # crop at top-left (t, l) of the padded image: output (i, j) <- original (t-PAD+i, l-PAD+j),
    # columns mirrored (j -> size-1-j) when flipped
    top = centre_row - c + PAD
    left = torch.where(flipped, centre_col - (size - 1 - c) + PAD, centre_col - c + PAD)
    assert 0.45 < flipped.float().mean().item() < 0.55
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=2 * PAD + 1)
        assert len(counts) == 2 * PAD + 1  # nothing outside 0..8
        assert counts.min().item() > 0.7 * n / 9 and counts.max().item() < 1.3 * n / 9, counts
    # the decoded draws reproduce the whole batch
    assert torch.equal(random_crop_flip(images, torch.stack([top, left], 1), flipped, PAD).long(),
                       x)
    # the two axes and the flip are drawn independently (all 9x9x2 combinations occur)
    assert len(set(zip(top.tolist(), left.tolist(), flipped.tolist()))) == 162
