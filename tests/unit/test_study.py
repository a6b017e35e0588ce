"""config.yaml -> runs: validation with key-naming messages, chain expansion, data sources."""
import copy
from pathlib import Path

import pytest
import yaml

from apot.errors import UserError
from apot.workflow.study import (check_data, data_sources, expand_runs, network_reachable,
                                 validate_config)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def config(**top):
    result = copy.deepcopy(CONFIG)
    result.update(top)
    return validate_config(result)


def test_repository_config_is_valid_and_defaults_are_filled():
    c = config()
    assert c["preset"] == "quick"
    assert c["presets"]["smoke"]["k"] == 2 and c["presets"]["smoke"]["first_last"] == "8bit"
    assert c["presets"]["paper"]["full_scale"] is True
    assert c["presets"]["quick"]["full_scale"] is False
    study = c["presets"]["paper"]["studies"]["cifar10_cosine"]
    assert study["milestones"] == [] and study["batch_size"] == 128
    assert study["alpha"] == {"act_lr": 0.1, "act_wd": 1e-4, "wgt_lr": 0.02, "wgt_wd": 1e-4}


def test_paper_preset_chains_follow_the_authors_recipe():
    runs = {r.path: r for r in expand_runs(config(preset="paper"))}
    assert len(runs) == 5 * 4 + 2
    two_bit = runs["cifar10/resnet56/multistep/apot-w2/seed0"]
    assert two_bit.parent == "cifar10/resnet56/multistep/apot-w3/seed0"
    assert (two_bit.train["lr"], two_bit.train["weight_decay"]) == (0.04, 3e-5)
    assert two_bit.train["epochs"] == 300 and two_bit.train["milestones"] == [150, 225]
    fp32 = runs["cifar10/resnet56/multistep/fp32-w32/seed0"]
    assert fp32.parent is None and (fp32.train["lr"], fp32.train["weight_decay"]) == (0.1, 5e-4)
    assert runs["cifar10/resnet20/cosine/apot-w4/seed0"].parent == \
        "cifar10/resnet20/cosine/fp32-w32/seed0"
    assert two_bit.train["quantizer_rules"] == "cifar" and two_bit.init_start is None
    # ImageNet as the authors ran it: torchvision's pretrained FP32 model as it is, then 5-bit
    imagenet = runs["imagenet/resnet18/from-torchvision/multistep/apot-w5/seed0"]
    assert imagenet.train["batch_size"] == 256 and imagenet.train["act_alpha_lr"] == 0.01
    assert imagenet.train["quantizer_rules"] == "imagenet"
    fp32 = runs["imagenet/resnet18/from-torchvision/multistep/fp32-w32/seed0"]
    assert fp32.train["epochs"] == 0 and fp32.train["milestones"] == []
    assert fp32.init_start == "starts/torchvision-resnet18.pt" and imagenet.init_start is None
    assert imagenet.parent == fp32.path


def test_quick_preset_warm_study_starts_every_scheme_from_one_fp32_control():
    """Five seeds of the APoT chain, three of the uniform chain and of PoT 4 -> 3, each from
    its seed's FP32 control (no 2-bit PoT step: at 2 bits PoT is APoT's quantizer)."""
    runs = {r.path: r for r in expand_runs(config())}
    warm = {p: r for p, r in runs.items() if r.start == "authors"}
    assert len(warm) == 5 * (1 + 3) + 3 * 3 + 3 * 2
    path = "cifar10/resnet20/from-authors/cosine_epochs/{}/seed{}"
    seeds = {"apot": (0, 1, 2, 3, 4), "uniform": (0, 1, 2), "pot": (0, 1, 2)}
    for scheme, its_seeds in seeds.items():
        for seed in its_seeds:
            control = warm[path.format("fp32-w32", seed)]
            assert control.init_start == "starts/authors-resnet20-w32.pt"
            assert control.parent is None
            assert control.data == "cifar10" and control.train["epochs"] == 1
            four = warm[path.format(f"{scheme}-w4", seed)]
            assert four.parent == control.path and four.init_start is None
            assert four.train["epochs"] == 2 and four.train["schedule"] == "cosine_epochs"
            assert warm[path.format(f"{scheme}-w3", seed)].parent == four.path
        assert (path.format(f"{scheme}-w4", len(its_seeds))) not in warm
    for seed in seeds["uniform"]:
        assert warm[path.format("uniform-w2", seed)].parent == path.format("uniform-w3", seed)
    assert not any(p.startswith(path.format("pot-w2", "")) for p in warm)
    scratch = runs["cifar10/resnet20/multistep/apot-w4/seed0"]
    assert scratch.data == "cifar10_small" and scratch.start == "scratch"
    assert not any(r.arch == "resnet56" and r.dataset == "cifar10" for r in runs.values())


def test_scheme_ablation_adds_chains_from_the_same_baseline_and_seeds_multiply():
    c = config(preset="smoke", scheme_ablation=True)
    c["presets"]["smoke"]["seeds"] = [0, 1]
    runs = {r.path: r for r in expand_runs(c, skip=("cifar100", "imagenet"))}
    assert len(runs) == 2 * 3 * (1 + 3 * 3)
    assert runs["cifar10/resnet20/multistep/uniform-w4/seed1"].parent == \
        "cifar10/resnet20/multistep/fp32-w32/seed1"
    assert runs["cifar10/resnet20/multistep/pot-w2/seed0"].train["scheme"] == "pot"


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(preset="nope"), "config key preset: 'nope' is not one of the presets"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"]["chain"][1].update(bits=9),
     ".chain.1.bits: 9 is not one of [2, 3, 4, 5, 6, 7, 8, 32]"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"].update(epochs=0),
     "config key presets.smoke.studies.cifar10.epochs: 0 is less than the minimum of 1"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"].update(shedule="cosine"),
     "('shedule' was unexpected)"),
    (lambda c: c["presets"]["quick"]["studies"]["cifar10"].update(milestones=[4]),
     "config key presets.quick.studies.cifar10.milestones: milestone 4 is not before"),
    (lambda c: c["presets"]["quick"]["studies"]["cifar10"]["chain"][0].update(milestones=[20]),
     "presets.quick.studies.cifar10.chain[0].milestones: milestone 20"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"]["chain"].pop(0),
     "a chain starts with the FP32 baseline"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"]["chain"].reverse(),
     "chain starts with the FP32 baseline (bits 32), got 2"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"]["chain"].insert(
        2, {"bits": 4, "lr": 0.1, "weight_decay": 0.0}), "bit-widths must decrease"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"].update(archs=["resnet18"]),
     "resnet18 does not fit dataset cifar10"),
    (lambda c: c["presets"]["smoke"]["datasets"].pop("cifar100"),
     "config key presets.smoke.studies.cifar100.dataset: 'cifar100' is not listed under the "
     "preset's datasets"),
    (lambda c: c["presets"]["quick"]["studies"]["cifar10"].update(data="cifar100"),
     "presets.quick.studies.cifar10.data: 'cifar100' is prepared from cifar100, not from"),
    (lambda c: c["presets"]["quick"]["studies"]["cifar10"].update(data="nope"),
     "presets.quick.studies.cifar10.data: 'nope' is not listed"),
    (lambda c: c["presets"]["quick"]["datasets"].update(mine={"train_per_class": 5}),
     "presets.quick.datasets.mine: name the dataset it is prepared from"),
    (lambda c: c["presets"]["quick"]["studies"]["warm"].update(archs=["resnet56"]),
     "studies.warm.start: the authors released CIFAR-10 resnet20 checkpoints only"),
    (lambda c: c["presets"]["quick"]["studies"]["cifar10"].update(start="torchvision"),
     "studies.cifar10.start: torchvision's pretrained weights are ImageNet models"),
    (lambda c: c["presets"]["quick"]["studies"]["warm"]["chain"][1].update(epochs=0),
     "studies.warm.chain[1].epochs: 0 epochs (evaluate the start as it is) only fits the first"),
    (lambda c: c["presets"]["quick"]["studies"]["cifar10"]["chain"][0].update(epochs=0),
     "studies.cifar10.chain[0].epochs: 0 epochs"),
    (lambda c: c["presets"]["quick"]["studies"]["warm"].update(schemes=["apot", "lloyd"]),
     "'lloyd' is not one of ['apot', 'pot', 'uniform']"),
    (lambda c: c["presets"]["quick"]["studies"]["warm"].update(quantizer_rules="tf"),
     "'tf' is not one of ['cifar', 'imagenet']"),
])
def test_invalid_config_names_the_key(edit, message):
    broken = copy.deepcopy(CONFIG)
    edit(broken)
    with pytest.raises(UserError) as caught:
        validate_config(broken)
    assert message in str(caught.value)


def test_two_studies_defining_one_run_differently_are_refused():
    c = config(preset="smoke")
    studies = c["presets"]["smoke"]["studies"]
    studies["again"] = copy.deepcopy(studies["cifar10"])
    assert len(expand_runs(c)) == len(expand_runs(config(preset="smoke")))  # same: merged
    studies["again"]["chain"][1]["lr"] = 0.5
    with pytest.raises(UserError, match="both define run cifar10/resnet20/multistep/apot-w4"):
        expand_runs(c)


def test_data_sources_mirror_network_and_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("APOT_OFFLINE", "1")
    monkeypatch.delenv("APOT_DATA_MIRROR", raising=False)
    (tmp_path / "cifar-10-images.tar.gz").write_bytes(b"x")
    c = config(preset="smoke", mirror=str(tmp_path))
    sources = data_sources(c)
    assert sources == {"cifar10": f"mirror: {tmp_path / 'cifar-10-images.tar.gz'}",
                       "cifar100": None, "imagenet": None}
    with pytest.raises(UserError, match="dataset cifar100 has no data source: the mirror"):
        check_data(c, sources)
    c["on_missing_data"] = "skip"
    assert check_data(c, sources) == {
        "cifar100": "not run: no data source",
        "imagenet": "not configured: no ImageNet folder (set imagenet_root)"}
    # without a mirror and offline, nothing provides CIFAR
    c = config(preset="smoke")
    assert data_sources(c)["cifar10"] is None
    assert network_reachable() is False
    # the environment variable is the mirror when the config leaves it empty
    monkeypatch.setenv("APOT_DATA_MIRROR", str(tmp_path))
    assert data_sources(c)["cifar10"].startswith("mirror: ")
    imagenet = tmp_path / "imagenet"
    imagenet.mkdir()
    assert data_sources(config(preset="smoke", imagenet_root=str(imagenet)))["imagenet"] == \
        f"folder: {imagenet}"


def test_a_prepared_dataset_needs_no_source(tmp_path, monkeypatch):
    """A cluster job parses the workflow again on a node that may be offline: once prepared,
    a dataset counts as available whatever the mirror or network."""
    monkeypatch.setenv("APOT_OFFLINE", "1")
    monkeypatch.delenv("APOT_DATA_MIRROR", raising=False)
    c = config(preset="smoke")
    assert data_sources(c, prepared=tmp_path)["cifar10"] is None
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "manifest.json").write_text("{}")
    assert data_sources(c, prepared=tmp_path)["cifar10"] == f"prepared: {tmp_path / 'cifar10'}"


def test_authors_checkpoints_come_from_the_config_or_the_mirror(tmp_path, monkeypatch):
    from apot.workflow.study import authors_checkpoints
    monkeypatch.delenv("APOT_DATA_MIRROR", raising=False)
    assert authors_checkpoints({"mirror": "", "authors_checkpoints": ""}) == {}
    folder = tmp_path / "mirror" / "apot-authors-checkpoints"
    folder.mkdir(parents=True)
    for bits in (32, 4):
        (folder / f"res20_{bits}bit.pth.tar").write_bytes(b"x")
    found = authors_checkpoints({"mirror": str(tmp_path / "mirror"), "authors_checkpoints": ""})
    assert found == {32: str(folder / "res20_32bit.pth.tar"), 4: str(folder / "res20_4bit.pth.tar")}
    monkeypatch.setenv("APOT_DATA_MIRROR", str(tmp_path / "mirror"))
    assert authors_checkpoints({"mirror": "", "authors_checkpoints": ""}) == found
    assert authors_checkpoints({"mirror": "", "authors_checkpoints": str(tmp_path)}) == {}


def test_the_workflow_parses_without_importing_torch():
    """Snakemake imports apot.workflow.study on every parse, and on a cluster every job parses the
    workflow again: torch would add seconds to each."""
    import subprocess
    import sys
    code = ("import sys, apot.workflow.study, apot.data.sources, apot.storage.integrity, apot.layout, apot.data.datasets; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_starts_are_found_staged_or_refused_with_the_fix(tmp_path, monkeypatch):
    from apot.workflow.study import check_starts, find_start
    monkeypatch.setenv("APOT_OFFLINE", "1")
    monkeypatch.delenv("APOT_DATA_MIRROR", raising=False)
    c = config()
    runs = [r for r in expand_runs(c) if r.study == "warm"]
    with pytest.raises(UserError) as caught:
        check_starts(c, runs, tmp_path)
    assert "study warm starts from authors" in str(caught.value)
    assert "res20_32bit.pth.tar was not found" in str(caught.value)
    assert "authors_checkpoints" in str(caught.value)
    c["on_missing_data"] = "skip"
    # warm_uniform and warm_pot share warm's FP32 steps (their runs folded into warm's): they
    # are left out too, all 5 FP32 controls and 15 APoT, 9 uniform and 6 PoT steps
    skipped = check_starts(c, runs, tmp_path)
    assert list(skipped) == ["warm", "warm_uniform", "warm_pot"]
    assert len(expand_runs(c, skip_studies=tuple(skipped))) == len(expand_runs(c)) - 35
    # a start already staged (or a completed first step) needs no source
    c["on_missing_data"] = "error"
    (tmp_path / "starts").mkdir()
    (tmp_path / "starts" / "authors-resnet20-w32.pt").write_bytes(b"x")
    assert check_starts(c, runs, tmp_path) == {}
    folder = tmp_path / "mirror" / "apot-authors-checkpoints"
    folder.mkdir(parents=True)
    (folder / "res20_32bit.pth.tar").write_bytes(b"x")
    c["mirror"] = str(tmp_path / "mirror")
    assert find_start(c, "authors", "resnet20", 32) == str(folder / "res20_32bit.pth.tar")


def test_torchvision_start_is_the_cached_file_or_a_message_naming_it(tmp_path, monkeypatch):
    from apot.workflow.study import check_starts, find_start
    monkeypatch.setenv("APOT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    c = config(preset="paper")
    imagenet = [r for r in expand_runs(c) if r.dataset == "imagenet"]
    assert find_start(c, "torchvision", "resnet18", 32) is None
    with pytest.raises(UserError) as caught:
        check_starts(c, imagenet, tmp_path / "results")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert f"{cached} does not exist" in str(caught.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in str(caught.value)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert find_start(c, "torchvision", "resnet18", 32) == str(cached)
    assert check_starts(c, imagenet, tmp_path / "results") == {}


def test_torchvision_weight_files_and_cache_match_torchvision(monkeypatch):
    import torch
    import torchvision

    from apot.data.sources import TORCHVISION_URL, TORCHVISION_WEIGHTS, torch_hub_checkpoints
    for arch, name in TORCHVISION_WEIGHTS.items():
        weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        assert weights.url == TORCHVISION_URL.format(file=name)
    for env in ({}, {"XDG_CACHE_HOME": "/x/cache"}, {"TORCH_HOME": "/y/torch"}):
        for key in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert torch_hub_checkpoints() == Path(torch.hub.get_dir()) / "checkpoints"
