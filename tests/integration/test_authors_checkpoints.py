"""The authors' released ResNet-20 checkpoints, evaluated on the offline CIFAR-10 test set.

Reference top-1 (%) on these 10,000 JPEG images, from an independent implementation of the
authors' model (shared/data/README.md; the authors' own code agrees to within 0.04). The
JPEG images cost about 10 points against the published figures; the comparison proves the
implementation, not the paper's numbers.
"""
import io
import json
import subprocess
import sys

import pytest
import torch

from apot.data.archives import read_split
from apot.data.loader import TensorLoader
from apot.deploy.packed_file import load_packed
from apot.engine.evaluate import evaluate
from apot.models import build_model
from apot.quant.functional import project_bruteforce
from apot.quant.modules import QuantConv2d
from apot.storage.checkpoints import extract_state_dict, load_file, load_into_model

INDEPENDENT_TOP1 = {32: 82.36, 4: 82.86, 3: 83.04, 2: 80.60}
PLAIN_FLOAT_TOP1 = 82.32  # the float checkpoint with float (not 8-bit) first/last layers
TOLERANCE = 0.15  # float round-off at level boundaries flips a handful of images


@pytest.fixture(scope="module")
def test_split(shared_data):
    images, labels, classes = read_split(shared_data / "cifar-10-images.tar.gz", "test")
    assert images.shape == (10000, 3, 32, 32) and len(classes) == 10
    return images, labels


def authors_batches(test_split):
    return TensorLoader(*test_split, batch_size=100, train=False,  # the authors' batch and layout
                        channels_last=False).epoch()


def load_authors(shared_data, bits, first_last="8bit"):
    path = shared_data / "apot-authors-checkpoints" / f"res20_{bits}bit.pth.tar"
    model = build_model("resnet20", bits=bits, first_last=first_last)
    load_into_model(model, extract_state_dict(load_file(path)), source=str(path))
    return model


@pytest.mark.parametrize("bits", [32, 4, 3, 2])
def test_authors_checkpoint_top1_matches_independent_implementation(shared_data, test_split, bits):
    torch.set_num_threads(2)
    result = evaluate(load_authors(shared_data, bits), authors_batches(test_split))
    assert result["n"] == 10000
    assert abs(result["top1"] - INDEPENDENT_TOP1[bits]) <= TOLERANCE, result


def test_float_checkpoint_with_float_first_last_layers(shared_data, test_split):
    result = evaluate(load_authors(shared_data, 32, "float"), authors_batches(test_split))
    assert abs(result["top1"] - PLAIN_FLOAT_TOP1) <= TOLERANCE, result


@pytest.mark.parametrize("bits", [4, 3, 2])
def test_quantized_weights_equal_the_reference_projection_exactly(shared_data, bits):
    model = load_authors(shared_data, bits)
    convs = [m for m in model.modules() if isinstance(m, QuantConv2d)]
    assert len(convs) == 20
    for conv in convs:
        quantizer = conv.weight_quantizer
        w = conv.weight.detach()
        normalized = (w - w.mean()) / w.std()
        alpha = quantizer.alpha.detach()
        c = (normalized / alpha).clamp(-1, 1)
        expected = project_bruteforce(c.abs(), quantizer.projector.table.levels) * c.sign() * alpha
        assert torch.equal(quantizer(conv.weight).detach(), expected)
        # every quantized weight is one of the 2^b - 1 signed levels times alpha
        assert quantizer(conv.weight).detach().div(alpha).abs().unique().numel() <= 2 ** (bits - 1)


def test_cli_eval_on_the_archive(shared_data):
    checkpoint = shared_data / "apot-authors-checkpoints" / "res20_4bit.pth.tar"
    out = subprocess.run(
        [sys.executable, "-m", "apot", "eval", "--arch", "resnet20", "--bits", "4",
         "--checkpoint", str(checkpoint), "--data", str(shared_data / "cifar-10-images.tar.gz"),
         "--limit-per-class", "100", "--device", "cpu"],
        capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["n"] == 1000
    assert 70.0 <= result["top1"] <= result["top5"] <= 100.0


def test_packed_authors_4bit_model_is_a_fifth_of_the_size_and_predicts_the_same(
        shared_data, test_split, tmp_path):
    """apot export of the released 4-bit model, rebuilt from its codes only (apot eval
    --packed's model): the same logits bit for bit in "levels" arithmetic, hence the same
    top-1 (82.90 here); "integer" arithmetic sums exactly and differs by float rounding."""
    torch.set_num_threads(2)
    checkpoint = shared_data / "apot-authors-checkpoints" / "res20_4bit.pth.tar"
    out = tmp_path / "res20_4bit.safetensors"
    done = subprocess.run(
        [sys.executable, "-m", "apot", "export", "--arch", "resnet20", "--bits", "4",
         "--checkpoint", str(checkpoint), "--out", str(out)],
        capture_output=True, text=True, check=True)
    printed = json.loads(done.stdout)
    model = load_authors(shared_data, 4).eval()
    saved = io.BytesIO()
    torch.save(model.state_dict(), saved)
    assert printed["float32_bytes"] == saved.getbuffer().nbytes
    assert out.stat().st_size == printed["packed_bytes"] <= saved.getbuffer().nbytes / 5

    packed, header = load_packed(out)
    assert header["source"]["sha256"] == printed["checkpoint_sha256"]
    x, _ = next(iter(authors_batches(test_split)))
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))
    expected = evaluate(model, authors_batches(test_split))
    assert abs(expected["top1"] - INDEPENDENT_TOP1[4]) <= TOLERANCE
    assert evaluate(packed, authors_batches(test_split)) == expected
    integer, _ = load_packed(out, "integer")
    with torch.no_grad():
        # most logits agree to float rounding; a flip across a level threshold moves the rest
        assert (integer(x) - model(x)).abs().median() < 1e-4
    assert abs(evaluate(integer, authors_batches(test_split))["top1"] - expected["top1"]) <= 0.1
