"""The command line, run in-process (plus one subprocess run of ``python -m apot``)."""
import hashlib
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apot.cli import main
from apot.data.archives import CIFAR10_CLASSES
from apot.models import build_model

REPO = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str):
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert err == ""
    return json.loads(out)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- levels

def test_levels_apot_4bit(capsys):
    values = run_json(capsys, "levels", "--bits", "4", "--scheme", "apot")
    assert len(values) == 16
    assert all(isinstance(v, float) for v in values)
    assert values == sorted(values)
    assert len(set(values)) == 16
    assert values[0] == 0.0 and values[-1] == 1.0
    assert values[1] == pytest.approx(1 / 48)
    assert run_json(capsys, "levels", "--bits", "4") == values  # apot is the default


def test_levels_signed_4bit(capsys):
    values = run_json(capsys, "levels", "--signed", "--bits", "4")
    assert len(values) == 15
    assert values == sorted(values)
    assert values == [-v for v in reversed(values)]
    assert values[0] == -1.0 and values[7] == 0.0 and values[-1] == 1.0


def test_levels_uniform_2bit(capsys):
    values = run_json(capsys, "levels", "--scheme", "uniform", "--bits", "2")
    assert values == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=0)
    assert len(values) == 4


def test_levels_exact(capsys):
    values = run_json(capsys, "levels", "--bits", "4", "--exact")
    assert all(isinstance(v, str) for v in values)
    assert values[:2] == ["0", "1/48"]
    assert values[-1] == "1"
    assert "11/16" in values
    floats = run_json(capsys, "levels", "--bits", "4")
    assert [float(Fraction(v)) for v in values] == floats


def test_levels_pot_and_k(capsys):
    assert run_json(capsys, "levels", "--scheme", "pot", "--bits", "2") == [0, 0.25, 0.5, 1]
    # k = 1 gives the uniform set (paper)
    k1 = run_json(capsys, "levels", "--bits", "3", "--k", "1", "--exact")
    assert k1 == ["0", "1/7", "2/7", "3/7", "4/7", "5/7", "6/7", "1"]


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "apot", "levels", "--bits", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    values = json.loads(proc.stdout)
    assert len(values) == 4 and values[0] == 0.0 and values[-1] == 1.0


# --------------------------------------------------------------------------- argument errors

@pytest.mark.parametrize("argv, wanted", [
    (["levels", "--bits", "9"], "bits must be 1..8, got 9"),
    (["levels", "--bits", "two"], "bits must be an integer"),
    (["levels", "--bits", "4", "--k", "0"], "k must be an integer from 1 to 8"),
    (["levels", "--bits", "4", "--k", "40"], "k must be an integer from 1 to 8"),
    (["eval", "--arch", "resnet99", "--bits", "4", "--checkpoint", "c", "--data", "d"],
     "invalid choice: 'resnet99'"),
    (["eval", "--arch", "resnet20", "--bits", "1", "--checkpoint", "c", "--data", "d"],
     "at least 2 bits"),
])
def test_bad_arguments_exit_2(capsys, argv, wanted):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    last = err.strip().splitlines()[-1]  # argparse: usage line(s), then one error line
    assert last.startswith(("apot: error: ", "apot levels: error: ", "apot eval: error: "))
    assert wanted in last


# --------------------------------------------------------------------------- eval

def write_split(root: Path, per_class: int = 2, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for cls in CIFAR10_CLASSES:
        for i in range(per_class):
            path = root / "test" / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_split(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, bits in (("q4", 4), ("float", 32)):
        paths[name] = folder / f"{name}.pth"
        torch.save({"state_dict": build_model("resnet20", bits=bits).state_dict()}, paths[name])
    return paths


def eval_args(checkpoint, data, *extra) -> list[str]:
    return ["eval", "--arch", "resnet20", "--checkpoint", str(checkpoint), "--data", str(data),
            *extra]


def test_eval_end_to_end(capsys, checkpoints, dataset):
    result = run_json(capsys, *eval_args(checkpoints["q4"], dataset, "--bits", "4",
                                         "--device", "cpu", "--batch-size", "8"))
    assert result["n"] == 20
    assert 0 <= result["top1"] <= result["top5"] <= 100
    assert result["loss"] > 0
    assert result["arch"] == "resnet20" and result["bits"] == 4
    assert result["scheme"] == "apot" and result["device"] == "cpu"
    assert result["split"] == "test" and result["first_last"] == "8bit"
    assert result["checkpoint_sha256"] == hashlib.sha256(checkpoints["q4"].read_bytes()).hexdigest()


def test_eval_keeps_per_image_predictions(capsys, checkpoints, dataset, tmp_path):
    """--predictions: the per-image predictions beside the result, the same top-1, and what
    the test images are (an image folder: its listing's fingerprint)."""
    from apot.engine.predictions import read_predictions
    out = tmp_path / "p.npz"
    result = run_json(capsys, *eval_args(checkpoints["q4"], dataset, "--bits", "4", "--device",
                                         "cpu", "--predictions", str(out)))
    kept = read_predictions(out)
    assert len(kept.labels) == result["n"] == 20
    assert kept.top1 == pytest.approx(result["top1"], abs=1e-3)
    assert kept.identity == f"{dataset} split test"  # not a prepared dataset: its path
    again = tmp_path / "again.npz"
    run_json(capsys, *eval_args(checkpoints["q4"], dataset, "--bits", "4", "--device", "cpu",
                                "--predictions", str(again)))
    assert read_predictions(again).identity == kept.identity


def test_eval_limit_per_class(capsys, checkpoints, dataset):
    result = run_json(capsys, *eval_args(checkpoints["float"], dataset, "--bits", "32",
                                         "--device", "cpu", "--limit-per-class", "1"))
    assert result["n"] == 10
    assert result["bits"] == 32


def test_eval_missing_checkpoint(capsys, tmp_path, dataset):
    missing = tmp_path / "missing.pth"
    code, out, err = run(capsys, *eval_args(missing, dataset, "--bits", "4", "--device", "cpu"))
    assert code == 2
    assert out == ""
    line = one_line_error(err)
    assert line.startswith("apot eval: error:")
    assert "does not exist" in line.replace(str(missing), "<path>")


def test_eval_float_checkpoint_with_bits_4(capsys, checkpoints, dataset):
    code, out, err = run(capsys, *eval_args(checkpoints["float"], dataset, "--bits", "4",
                                            "--device", "cpu"))
    assert code == 2
    assert out == ""
    line = one_line_error(err)
    assert "float model" in line and "--bits 32" in line


def test_eval_quantized_checkpoint_with_bits_32(capsys, checkpoints, dataset):
    code, out, err = run(capsys, *eval_args(checkpoints["q4"], dataset, "--bits", "32",
                                            "--device", "cpu"))
    assert code == 2
    assert "pass the --bits it was trained with" in one_line_error(err)


def test_eval_missing_data(capsys, checkpoints, tmp_path):
    missing = tmp_path / "nodata.tar.gz"
    code, out, err = run(capsys, *eval_args(checkpoints["q4"], missing, "--bits", "4",
                                            "--device", "cpu"))
    assert code == 2
    assert "does not exist" in one_line_error(err).replace(str(missing), "<path>")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_eval_cuda_without_gpu(capsys, checkpoints, dataset):
    code, out, err = run(capsys, *eval_args(checkpoints["q4"], dataset, "--bits", "4",
                                            "--device", "cuda"))
    assert code == 2
    assert out == ""
    line = one_line_error(err)
    assert "no CUDA GPU" in line and "--device cpu" in line


def test_eval_unknown_device_is_one_line(capsys, checkpoints, dataset):
    code, out, err = run(capsys, *eval_args(checkpoints["q4"], dataset, "--bits", "4",
                                            "--device", "tpu"))
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "unknown device" in err


def test_eval_refuses_a_checkpoint_recorded_for_other_bits(capsys, tmp_path, dataset):
    path = tmp_path / "described.pth"
    torch.save({"state_dict": build_model("resnet20", bits=4).state_dict(),
                "model": {"arch": "resnet20", "bits": 4, "scheme": "apot", "k": 2,
                          "first_last": "8bit"}}, path)
    code, _, err = run(capsys, *eval_args(path, dataset, "--bits", "3", "--device", "cpu"))
    assert code == 2 and "bits=4 (asked for 3)" in err
    code, out, _ = run(capsys, *eval_args(path, dataset, "--bits", "4", "--device", "cpu"))
    assert code == 0 and json.loads(out)["n"] == 20
