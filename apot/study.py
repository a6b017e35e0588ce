"""The experiment matrix: config.yaml -> the list of training runs of one preset.

Pure functions of the config (plus, for data sources, the file system and an optional network
probe), shared by the Snakefile, the summary and the report so that the matrix is stated once,
in config.yaml, and expanded once, here.

A run's folder, relative to ``results/<preset>/runs``::

    <dataset>/<arch>/<schedule>/<scheme>-w<bits>/seed<seed>

with scheme ``fp32`` and bits 32 for the float baseline of a chain. Each quantized run is
initialized from the run before it in its chain (FP32 -> 4 -> 3 -> 2), same dataset, arch,
schedule, scheme and seed.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .sources import MANIFEST, SMALL_DATASETS, mirror_folder

FLOAT_BITS = 32
FLOAT_SCHEME = "fp32"
ABLATION_SCHEMES = ("uniform", "pot")
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# Hosts torchvision downloads CIFAR from; probed (TCP connect) only when no mirror is set.
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)
OFFLINE_ENV = "APOT_OFFLINE"  # set to 1 to skip the probe and treat the network as absent
IMAGENET_ARCHS = ("resnet18", "resnet34", "resnet50")
# Config keys that say how and where the study runs, not what it computes: changing them must
# not re-run a job, so they stay out of rule params and out of the summary.
RUNTIME_KEYS = ("device", "train_threads", "mirror", "download_root", "authors_checkpoints")


def result_config(config: dict) -> dict:
    """``config`` without its RUNTIME_KEYS."""
    return {k: v for k, v in config.items() if k not in RUNTIME_KEYS}


def run_path(dataset: str, arch: str, schedule: str, scheme: str, bits: int | str,
             seed: int | str) -> str:
    """A run's folder relative to ``results/<preset>/runs`` (the layout in the module doc)."""
    return f"{dataset}/{arch}/{schedule}/{scheme}-w{bits}/seed{seed}"


@dataclass(frozen=True)
class RunSpec:
    """One training run: where it lives, what it trains, and which run initializes it."""
    study: str
    dataset: str
    arch: str
    schedule: str
    scheme: str
    bits: int
    seed: int
    train: dict = field(compare=False, hash=False)  # apot train flags (TrainConfig fields)
    parent: str | None = None                     # path of the initializing run

    @property
    def path(self) -> str:
        return run_path(self.dataset, self.arch, self.schedule, self.scheme, self.bits, self.seed)


def validate_config(config: dict) -> dict:
    """Validate ``config`` against the schema, filling defaults in place (as Snakemake's
    ``validate`` does), then check the cross-field rules. Returns the config."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, sub["default"])
        yield from validator_cls.VALIDATORS["properties"](validator, properties, instance, schema)

    filling = jsonschema.validators.extend(validator_cls, {"properties": set_defaults})
    error = jsonschema.exceptions.best_match(filling(schema).iter_errors(config))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise UserError(f"config key {where}: {error.message}")
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """Rules the schema cannot express; each message names the offending key."""
    if config["preset"] not in config["presets"]:
        raise UserError(f"config key preset: {config['preset']!r} is not one of the presets "
                        f"({', '.join(config['presets'])})")
    for name, preset in config["presets"].items():
        for study_name, study in preset["studies"].items():
            where = f"presets.{name}.studies.{study_name}"
            if study["dataset"] not in preset["datasets"]:
                raise UserError(f"config key {where}.dataset: {study['dataset']!r} is not listed "
                                f"under presets.{name}.datasets")
            imagenet = study["dataset"] == "imagenet"
            for arch in study["archs"]:
                if (arch in IMAGENET_ARCHS) != imagenet:
                    raise UserError(f"config key {where}.archs: {arch} does not fit dataset "
                                    f"{study['dataset']}")
            chain = study["chain"]
            if chain[0]["bits"] != FLOAT_BITS:
                raise UserError(f"config key {where}.chain[0].bits: a chain starts with the "
                                f"FP32 baseline (bits 32), got {chain[0]['bits']}")
            bits = [step["bits"] for step in chain]
            if any(b >= a for a, b in zip(bits, bits[1:])):
                raise UserError(f"config key {where}.chain: bit-widths must decrease along the "
                                f"chain (each run starts from the one before), got {bits}")
            for i, step in enumerate(chain):
                epochs = step.get("epochs", study["epochs"])
                milestones = step.get("milestones", study["milestones"])
                late = [m for m in milestones if m >= epochs]
                if study["schedule"] == "multistep" and late:
                    key = f"{where}.chain[{i}].milestones" if "milestones" in step \
                        else f"{where}.milestones"
                    raise UserError(f"config key {key}: milestone {late[0]} is not before the "
                                    f"last epoch (epochs {epochs}); milestones must be "
                                    f"1..{epochs - 1}")


def network_reachable(timeout: float = 3.0) -> bool:
    """Whether the CIFAR download host answers (False at once when APOT_OFFLINE=1)."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return False
    try:
        with socket.create_connection(DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def data_sources(config: dict, prepared: str | Path | None = None) -> dict[str, str | None]:
    """dataset -> where it comes from ("prepared: <folder>", "mirror: <archive>", "download",
    "folder: <path>"), or None when nothing provides it; only the selected preset's datasets.

    A dataset already prepared under ``prepared/<dataset>`` needs no source: this is what lets
    a cluster job (which parses the workflow again, often on a node without network) run.
    """
    preset = config["presets"][config["preset"]]
    folder = mirror_folder(config.get("mirror") or None)
    sources: dict[str, str | None] = {}
    online = None
    for dataset in preset["datasets"]:
        done = Path(prepared) / dataset if prepared is not None else None
        if done is not None and (done / MANIFEST).is_file():
            sources[dataset] = f"prepared: {done}"
            continue
        if dataset == "imagenet":
            root = config.get("imagenet_root") or ""
            sources[dataset] = f"folder: {root}" if root and Path(root).is_dir() else None
            continue
        archive_name = SMALL_DATASETS[dataset][1]
        if folder is not None and (folder / archive_name).is_file():
            sources[dataset] = f"mirror: {folder / archive_name}"
            continue
        if folder is None:
            if online is None:
                online = network_reachable()
            sources[dataset] = "download" if online else None
        else:
            sources[dataset] = None
    return sources


def missing_reason(config: dict, dataset: str) -> str:
    """Why a dataset without a source did not run, as the report states it."""
    if dataset == "imagenet":
        root = config.get("imagenet_root") or ""
        return ("not configured: no ImageNet folder (set imagenet_root)" if not root
                else f"not run: ImageNet folder {root} does not exist")
    return "not run: no data source"


def check_data(config: dict, sources: dict[str, str | None]) -> dict[str, str]:
    """Datasets that will not run -> reason. Raises, naming the fix, when a CIFAR dataset has
    no source and ``on_missing_data`` is not ``skip``. ImageNet only runs when configured."""
    skipped = {}
    for dataset, source in sources.items():
        if source is not None:
            continue
        if dataset == "imagenet" and not config.get("imagenet_root"):
            skipped[dataset] = missing_reason(config, dataset)
            continue
        if config["on_missing_data"] != "skip":
            folder = mirror_folder(config.get("mirror") or None)
            archive = SMALL_DATASETS[dataset][1] if dataset in SMALL_DATASETS else "train/ val/"
            where = (f"the mirror {folder} has no {archive}" if folder is not None
                     else "no data mirror is set and the download host cannot be reached")
            raise UserError(
                f"dataset {dataset} has no data source: {where}. Put {archive} in a folder and "
                f"set APOT_DATA_MIRROR (or config key mirror) to it, or run with "
                f"--config on_missing_data=skip to leave its jobs out")
        skipped[dataset] = missing_reason(config, dataset)
    return skipped


def schemes(config: dict) -> tuple[str, ...]:
    return ("apot", *ABLATION_SCHEMES) if config["scheme_ablation"] else ("apot",)


def train_flags(config: dict, preset: dict, study: dict, step: dict, scheme: str,
                seed: int) -> dict[str, Any]:
    """The ``apot train`` settings of one chain step (TrainConfig field names) that define its
    result; where it runs (device, threads) is not one of them."""
    alpha = study["alpha"]
    return {
        "epochs": step.get("epochs", study["epochs"]),
        "bits": step["bits"],
        "scheme": "apot" if scheme == FLOAT_SCHEME else scheme,
        "k": preset["k"],
        "first_last": preset["first_last"],
        "batch_size": step.get("batch_size", study["batch_size"]),
        "test_batch_size": study["test_batch_size"],
        "lr": step["lr"],
        "momentum": study["momentum"],
        "weight_decay": step["weight_decay"],
        "act_alpha_lr": alpha.get("act_lr", 0.1), "act_alpha_wd": alpha.get("act_wd", 1e-4),
        "wgt_alpha_lr": alpha.get("wgt_lr", 0.02), "wgt_alpha_wd": alpha.get("wgt_wd", 1e-4),
        "schedule": study["schedule"],
        "milestones": list(step.get("milestones", study["milestones"])),
        "gamma": study["gamma"],
        "seed": seed,
    }


def expand_runs(config: dict, skip: tuple[str, ...] = ()) -> list[RunSpec]:
    """Every run of the selected preset, parents before children; datasets in ``skip`` are
    left out. Two studies that produce the same run folder must agree on its settings."""
    preset = config["presets"][config["preset"]]
    runs: dict[str, RunSpec] = {}
    for study_name, study in preset["studies"].items():
        if study["dataset"] in skip:
            continue
        for arch in study["archs"]:
            for seed in preset["seeds"]:
                base = None
                for scheme in schemes(config):
                    parent = base
                    for step in study["chain"]:
                        is_float = step["bits"] == FLOAT_BITS
                        if is_float and base is not None:
                            continue  # one FP32 baseline, shared by the scheme chains
                        spec = RunSpec(study_name, study["dataset"], arch, study["schedule"],
                                       FLOAT_SCHEME if is_float else scheme, step["bits"], seed,
                                       train_flags(config, preset, study, step,
                                                   FLOAT_SCHEME if is_float else scheme, seed),
                                       parent)
                        _add_run(runs, spec)
                        parent = spec.path
                        if is_float:
                            base = spec.path
    return list(runs.values())


def _add_run(runs: dict[str, RunSpec], spec: RunSpec) -> None:
    known = runs.get(spec.path)
    if known is not None and (known.train != spec.train or known.parent != spec.parent):
        raise UserError(f"studies {known.study} and {spec.study} both define run {spec.path} "
                        f"with different settings; give one of them another schedule or arch")
    runs.setdefault(spec.path, spec)


AUTHORS_BITS = (32, 4, 3, 2)
AUTHORS_FILE = "res20_{bits}bit.pth.tar"  # the names in the authors' repository (renamed)
AUTHORS_FOLDER = "apot-authors-checkpoints"  # inside the mirror folder


def authors_checkpoints(config: dict) -> dict[int, str]:
    """bits -> file of the authors' released CIFAR-10 ResNet-20 checkpoint, for those found in
    config key authors_checkpoints, else in the mirror's apot-authors-checkpoints/ folder."""
    folder = config.get("authors_checkpoints") or ""
    if not folder:
        mirror = mirror_folder(config.get("mirror") or None)
        folder = str(mirror / AUTHORS_FOLDER) if mirror is not None else ""
    if not folder or not Path(folder).is_dir():
        return {}
    files = {bits: Path(folder) / AUTHORS_FILE.format(bits=bits) for bits in AUTHORS_BITS}
    return {bits: str(path) for bits, path in files.items() if path.is_file()}
