"""Checkpoint reading and writing: the authors' files, refused and corrupt files, mismatches."""
import os
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import AUTHORS_CHECKPOINTS as AUTHORS_DIR
from helpers import message

import apot.storage.checkpoints
from apot.errors import UserError
from apot.models import build_model
from apot.storage.checkpoints import extract_state_dict, load_file, load_into_model, save_atomic


class WritesMarkerWhenUnpickled:
    """Unpickling this object opens (and so creates) ``marker`` for writing: code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------- authors' files

def authors_file(bits: int) -> Path:
    path = AUTHORS_DIR / f"res20_{bits}bit.pth.tar"
    if not path.is_file():
        pytest.skip(f"authors' checkpoint {path} not present (shared data not mounted)")
    return path


@pytest.mark.parametrize("bits", [32, 4, 3, 2])
def test_authors_checkpoint_keys_are_renamed_and_load(bits):
    raw = load_file(authors_file(bits))
    assert isinstance(raw, dict) and "state_dict" in raw
    raw_sd = raw["state_dict"]
    assert all(k.startswith("module.") for k in raw_sd)
    state = extract_state_dict(raw)
    assert len(state) == len(raw_sd)
    assert not any(k.startswith("module.") for k in state)
    assert not any(k.endswith((".act_alpha", ".wgt_alpha")) for k in state)
    assert torch.equal(state["conv1.weight"], raw_sd["module.conv1.weight"])

    raw_alphas = {k: v for k, v in raw_sd.items() if k.endswith(("act_alpha", "wgt_alpha"))}
    if bits == 32:
        assert raw_alphas == {}
    else:
        assert len(raw_alphas) == 40
        assert torch.equal(state["layer1.0.conv1.act_quantizer.alpha"],
                           raw_sd["module.layer1.0.conv1.act_alpha"])
        assert torch.equal(state["layer1.0.conv1.weight_quantizer.alpha"],
                           raw_sd["module.layer1.0.conv1.weight_quant.wgt_alpha"])
        assert torch.equal(state["layer2.0.downsample.0.weight_quantizer.alpha"],
                           raw_sd["module.layer2.0.downsample.0.weight_quant.wgt_alpha"])

    model = build_model("resnet20", bits=bits)
    load_into_model(model, state)
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in raw_alphas.items():
        ours = (key.removeprefix("module.").replace(".weight_quant.wgt_alpha",
                                                    ".weight_quantizer.alpha")
                .replace(".act_alpha", ".act_quantizer.alpha"))
        assert loaded[ours].item() == value.item(), key
    assert torch.equal(model.layer3[2].conv2.weight, raw_sd["module.layer3.2.conv2.weight"])
    assert torch.equal(model.fc.bias, raw_sd["module.fc.bias"])
    if bits < 32:  # trained thresholds, far from the initial values
        assert model.layer1[0].conv1.act_quantizer.alpha.item() != 8.0


def test_extract_state_dict_accepts_bare_and_model_key_and_rejects_junk():
    sd = {"module.a.weight": torch.zeros(2), "b.act_alpha": torch.ones(())}
    expected = {"a.weight", "b.act_quantizer.alpha"}
    assert set(extract_state_dict(sd)) == expected
    assert set(extract_state_dict({"model": sd, "epoch": 3})) == expected
    assert set(extract_state_dict({"state_dict": sd, "best_prec": 1.0})) == expected
    with pytest.raises(UserError, match="no model state dict"):
        extract_state_dict({"epoch": 3, "state_dict": [1, 2]})
    with pytest.raises(UserError, match="no model state dict"):
        extract_state_dict([torch.zeros(1)])


# --------------------------------------------------------------------------- unsafe / broken files

def test_malicious_checkpoint_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "code-ran.marker"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": WritesMarkerWhenUnpickled(str(marker))},
               path)
    assert not marker.exists()  # saving only records the call
    with pytest.raises(UserError) as info:
        load_file(path)
    assert "refused" in message(info, path)
    assert not marker.exists()


def test_truncated_checkpoint_is_corrupt(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": build_model("resnet20", first_last="float").state_dict()}, good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as info:
        load_file(bad)
    assert "corrupt" in message(info, bad)
    assert isinstance(load_file(good), dict)  # the intact file still loads


TEXT_FILES = {
    # a download that saved an error page instead of the checkpoint
    "html": "<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
    # a Git LFS pointer checked out without `git lfs pull`
    "lfs-pointer": "version https://git-lfs.github.com/spec/v1\noid sha256:0123abcd\nsize 42\n",
    "plain": "hello world\n",
    "empty": "",
}


@pytest.mark.parametrize("kind", list(TEXT_FILES))
def test_text_file_is_corrupt(tmp_path, kind):
    path = tmp_path / "model.pth"
    path.write_text(TEXT_FILES[kind])
    with pytest.raises(UserError) as info:
        load_file(path)
    assert "corrupt" in message(info, path)
    assert "refused" not in message(info, path)


def test_missing_checkpoint_does_not_exist(tmp_path):
    with pytest.raises(UserError) as info:
        load_file(tmp_path / "nope.pth")
    assert "does not exist" in message(info, tmp_path / "nope.pth")
    with pytest.raises(UserError) as info:
        load_file(tmp_path)  # a folder is not a checkpoint file
    assert "is not a file" in message(info, tmp_path)


# --------------------------------------------------------------------------- mismatches

def test_state_of_another_depth_names_unexpected_and_missing_tensors():
    r32 = build_model("resnet32", first_last="float").state_dict()
    with pytest.raises(UserError, match=r"unexpected tensors \(first: layer1\.3\.") as info:
        load_into_model(build_model("resnet20", first_last="float"), r32)
    assert "missing" not in str(info.value)
    r20 = build_model("resnet20", first_last="float").state_dict()
    with pytest.raises(UserError, match=r"missing tensors \(first: layer1\.3\."):
        load_into_model(build_model("resnet32", first_last="float"), r20)


def test_cifar100_head_into_10_class_model_is_wrong_shape():
    state = build_model("resnet20", num_classes=100, first_last="float").state_dict()
    model = build_model("resnet20", first_last="float")
    before = model.fc.weight.detach().clone()
    with pytest.raises(UserError, match="wrong shape") as info:
        load_into_model(model, state)
    assert "fc.weight" in str(info.value)
    assert "(100, 64)" in str(info.value) and "(10, 64)" in str(info.value)
    assert torch.equal(model.fc.weight, before)  # nothing loaded


def test_quantized_state_into_float_model_asks_for_bits():
    state = build_model("resnet20", bits=4).state_dict()
    with pytest.raises(UserError, match="--bits"):
        load_into_model(build_model("resnet20", bits=32), state)
    # as a progressive initialization the surplus thresholds are ignored
    model = build_model("resnet20", bits=32)
    load_into_model(model, state, progressive=True)
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_source_name_appears_in_mismatch_message():
    state = build_model("resnet20", bits=4).state_dict()
    with pytest.raises(UserError, match="my-file.pth does not match"):
        load_into_model(build_model("resnet20", bits=32), state, source="my-file.pth")


# --------------------------------------------------------------------------- save_atomic

def test_save_atomic_writes_loadable_file_and_no_temp(tmp_path):
    path = tmp_path / "sub" / "ckpt.pth"
    save_atomic({"state_dict": {"w": torch.arange(5.0)}, "epoch": 7}, path)
    obj = load_file(path)
    assert obj["epoch"] == 7
    assert torch.equal(obj["state_dict"]["w"], torch.arange(5.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pth"]
    # overwriting replaces the content
    save_atomic({"epoch": 8}, path)
    assert load_file(path) == {"epoch": 8}
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pth"]


def test_save_atomic_failure_keeps_previous_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    save_atomic({"epoch": 1}, path)
    before = path.read_bytes()

    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(apot.storage.checkpoints.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_file(path) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_save_atomic_failure_without_previous_file_leaves_nothing(tmp_path, monkeypatch):
    def failing_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(apot.storage.checkpoints.torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": 2}, tmp_path / "new.pth")
    assert os.listdir(tmp_path) == []


def test_damaged_pickle_inside_a_zip_is_corrupt_not_unsafe(tmp_path):
    path = tmp_path / "damaged.pth"
    torch.save({"a": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    pickle_name = next(name for name in members if name.endswith("data.pkl"))
    members[pickle_name] = bytes(len(members[pickle_name]))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(UserError) as info:
        load_file(path)
    assert "corrupt" in str(info.value) and "refused" not in str(info.value)


def test_non_string_keys_are_not_a_state_dict():
    with pytest.raises(UserError, match="no model state dict"):
        extract_state_dict({0: torch.ones(1)})
