from pathlib import Path

import pytest
from helpers import CIFAR10_ARCHIVE, SHARED


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not CIFAR10_ARCHIVE.is_file():
        pytest.fail(f"offline data missing: {CIFAR10_ARCHIVE} (set APOT_SHARED to the shared/ "
                    f"folder that holds data/cifar-10-images.tar.gz)")
    return SHARED / "data"


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small generated prepared dataset (10 classes, 24 training and 8 test images each),
    for tests of the training engine that need learnable data, not real images."""
    from apot.data.prepare import prepare_dataset
    out = tmp_path_factory.mktemp("synthetic")
    prepare_dataset("synthetic", out, train_per_class=24, test_per_class=8)
    return out
