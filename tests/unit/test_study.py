"""config.yaml -> runs: validation with key-naming messages, chain expansion, data sources."""
import copy
from pathlib import Path

import pytest
import yaml

from apot.errors import UserError
from apot.study import (check_data, data_sources, expand_runs, network_reachable,
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
    imagenet = runs["imagenet/resnet18/multistep/apot-w5/seed0"]
    assert imagenet.train["batch_size"] == 256 and imagenet.train["act_alpha_lr"] == 0.01
    assert runs["imagenet/resnet18/multistep/fp32-w32/seed0"].train["milestones"] == [30, 60]


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
     "'cifar100' is not listed under presets.smoke.datasets"),
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
    from apot.study import authors_checkpoints
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
    """Snakemake imports apot.study on every parse, and on a cluster every job parses the
    workflow again: torch would add seconds to each."""
    import subprocess
    import sys
    code = "import sys, apot.study, apot.sources; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
