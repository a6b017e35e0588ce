"""Training learns on real images: ResNet-20 on a class-balanced subset of the offline CIFAR-10.

160 SGD steps (5 epochs of 2,000 images, batch 64, cosine schedule), FP32 and 4-bit APoT from
scratch, evaluated on 1,000 test images (100 per class). Threshold: 25 % top-1. Chance is 10 %
and the binomial standard deviation of a chance-level score on 1,000 images is about 0.95
points, so 25 % is more than 15 standard deviations above chance, while the runs reach 31.9 %
(FP32) and 36.5 % (APoT) on the 2-core development machine (2026-12-07: 21 s and 28 s; 8
epochs reached 34.9 % and 44.0 % in 38 s and 46 s); the margin absorbs seed and platform
round-off without letting a broken engine (which stays near 10 %) pass.
"""
import pytest

from apot.data.prepare import prepare_dataset
from apot.engine.config import TrainConfig
from apot.engine.train import train

THRESHOLD_TOP1 = 25.0


@pytest.fixture(scope="module")
def cifar_subset(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cifar10-subset")
    manifest = prepare_dataset("cifar10", out, mirror=str(shared_data), train_per_class=200,
                               test_per_class=100)
    assert manifest["counts"] == {"train": 2000, "test": 1000}
    assert manifest["source"]["kind"] == "mirror"
    return out


@pytest.mark.parametrize("bits, lr, weight_decay", [(32, 0.1, 5e-4), (4, 0.04, 1e-4)])
def test_resnet20_learns_well_above_chance(cifar_subset, tmp_path, bits, lr, weight_decay):
    metrics = train(TrainConfig(arch="resnet20", data=str(cifar_subset), out=str(tmp_path / "run"),
                                epochs=5, bits=bits, lr=lr, weight_decay=weight_decay,
                                schedule="cosine", batch_size=64, device="cpu", progress=False))
    assert metrics["final_top1"] >= THRESHOLD_TOP1, metrics
    assert metrics["best_top1"] >= metrics["final_top1"]
