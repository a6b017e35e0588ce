"""apot stage-start: a released model copied into one checkpoint that records its origin."""
import json

import pytest
import torch
from helpers import AUTHORS_CHECKPOINTS as SHARED

from apot.cli import main
from apot.layout import file_sha256
from apot.models import build_model
from apot.storage.checkpoints import load_file


def stage(capsys, *argv: str) -> tuple[int, dict | str]:
    code = main(["stage-start", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err)


@pytest.mark.skipif(not (SHARED / "res20_32bit.pth.tar").is_file(),
                    reason="the authors' checkpoints are not in ../shared/data")
def test_authors_start_keeps_the_state_and_names_the_released_file(capsys, tmp_path):
    released = SHARED / "res20_32bit.pth.tar"
    code, result = stage(capsys, "--start", "authors", "--arch", "resnet20", "--checkpoint",
                         str(released), "--out", str(tmp_path / "start.pt"))
    assert code == 0
    stored = load_file(tmp_path / "start.pt")
    origin = stored["origin"]
    assert origin["kind"] == "authors" and origin["file"] == str(released.resolve())
    assert origin["sha256"] == file_sha256(released) == \
        "f2d107bcd63ce2fcfb9b6f43f367dc80003e395b378111fedc7f9244fd90bfc6"
    theirs = load_file(released)["state_dict"]
    assert set(stored["state_dict"]) == {k.removeprefix("module.") for k in theirs}
    assert torch.equal(stored["state_dict"]["fc.weight"], theirs["module.fc.weight"])
    assert result["sha256"] == file_sha256(tmp_path / "start.pt")


def test_torchvision_start_reads_torchs_cache(capsys, tmp_path, monkeypatch):
    """Offline, torchvision's weights API takes the file from torch's hub cache; a file
    placed there (as the workflow's message tells a user to) is what the start holds."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.manual_seed(0)
    weights = build_model("resnet18", bits=32, first_last="float").state_dict()
    torch.save(weights, cached)
    code, result = stage(capsys, "--start", "torchvision", "--arch", "resnet18",
                         "--out", str(tmp_path / "tv.pt"))
    assert code == 0, result
    stored = load_file(tmp_path / "tv.pt")
    assert stored["origin"]["url"] == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert stored["origin"]["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert stored["origin"]["sha256"] == file_sha256(cached)
    assert all(torch.equal(stored["state_dict"][k], v) for k, v in weights.items())
    # the start loads into the authors' FP32 ResNet-18 (8-bit first and last layers)
    model = build_model("resnet18", bits=32, first_last="8bit")
    model.load_state_dict(stored["state_dict"])


def test_torchvision_start_offline_without_the_file_names_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code, err = stage(capsys, "--start", "torchvision", "--arch", "resnet18",
                      "--out", str(tmp_path / "tv.pt"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in err
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in err
    assert not (tmp_path / "tv.pt").exists()


def test_authors_start_refuses_a_corrupt_file(capsys, tmp_path):
    bad = tmp_path / "res20_32bit.pth.tar"
    bad.write_text("<html>not a checkpoint</html>")
    code, err = stage(capsys, "--start", "authors", "--arch", "resnet20", "--checkpoint",
                      str(bad), "--out", str(tmp_path / "start.pt"))
    assert code == 2 and "corrupt or not a PyTorch checkpoint" in err
    assert not (tmp_path / "start.pt").exists()


def test_torchvision_start_with_a_damaged_cached_file_names_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 a truncated download")
    code, err = stage(capsys, "--start", "torchvision", "--arch", "resnet18",
                      "--out", str(tmp_path / "tv.pt"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"put it at {cached} (replacing any file there)" in err
    assert not (tmp_path / "tv.pt").exists()
