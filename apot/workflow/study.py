"""The experiment matrix: config.yaml -> the list of training runs of one preset.

Pure functions of the config (plus, for data sources, the file system and an optional network
probe), shared by the Snakefile, the summary and the report so that the matrix is stated once,
in config.yaml, and expanded once, here.

A run's folder, relative to ``results/<preset>/runs``::

    <dataset>/<arch>/<schedule>/<scheme>-w<bits>/seed<seed>                 (from scratch)
    <dataset>/<arch>/from-<start>/<schedule>/<scheme>-w<bits>/seed<seed>    (warm start)

with scheme ``fp32`` and bits 32 for the float step of a chain. Each quantized run is
initialized from the run before it in its chain (FP32 -> 4 -> 3 -> 2), same dataset, arch,
schedule, scheme and seed. A chain's first step starts from scratch, or (study key ``start``)
from a released model: the authors' CIFAR-10 ResNet-20 (``authors``), torchvision's pretrained
ImageNet weights (``torchvision``) or a checkpoint file (any other value, a path). Released
models are first copied under ``results/<preset>/starts/`` (``start_file``), so that a run
never depends on where the mirror or torch's cache was.

A preset's ``datasets`` are the prepared datasets, by name: each comes from the dataset of its
name, or of its ``dataset`` key (so that one preset can hold all of CIFAR-10 and a subset of
it); a study reads the prepared dataset named by its ``data`` key (default: its dataset).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apot.data.datasets import ARCHIVE, FOLDER, get_dataset, study_datasets
from apot.data.sources import (TORCHVISION_HOST, TORCHVISION_URL, TORCHVISION_WEIGHTS,
                               mirror_folder, torch_hub_checkpoints)
from apot.engine.settings import PATH_SETTINGS, SCHEMA, same_path
from apot.errors import UserError
from apot.layout import (BEST, MANIFEST, METRICS, ONNX_MODEL, ONNX_RESULT, PACKED, PACKED_RESULT,
                         RUN_COST, STUDIES, STUDY_DIGEST_CHARS, ResultsLayout,
                         write_text_if_changed)
from apot.quant.schemes import APOT, FLOAT, FLOAT_BITS, ablation_schemes
from apot.storage.jsonfile import json_text, read_record

# Hosts torchvision downloads CIFAR from; probed (TCP connect) only when no mirror is set.
DOWNLOAD_HOST = ("www.cs.toronto.edu", 443)
OFFLINE_ENV = "APOT_OFFLINE"  # set to 1 to skip the probe and treat the network as absent
IMAGENET_ARCHS = ("resnet18", "resnet34", "resnet50")
SCRATCH = "scratch"
RELEASED_STARTS = ("authors", "torchvision")  # any other start is a checkpoint file's path
AUTHORS_ARCH = "resnet20"  # the authors released CIFAR-10 checkpoints of this model only
# Config keys that say how and where the study runs, not what it computes: changing them must
# not re-run a job, so they stay out of rule params and out of the summary.
RUNTIME_KEYS = ("device", "train_threads", "mirror", "download_root", "authors_checkpoints")
# The Snakefile's study file, for the jobs of a cluster: they parse the workflow again, and
# read the file the submitting process wrote, not one of their own parse (rules/common.smk).
STUDY_ENV = "APOT_STUDY_FILE"
STUDY_FILE_MAX_BYTES = 16 << 20  # a study file is a few kB; more is not one


def result_config(config: dict) -> dict:
    """``config`` without its RUNTIME_KEYS."""
    return {k: v for k, v in config.items() if k not in RUNTIME_KEYS}


def run_path(dataset: str, arch: str, schedule: str, scheme: str, bits: int | str,
             seed: int | str, start: str = SCRATCH) -> str:
    """A run's folder relative to ``results/<preset>/runs`` (the layout in the module doc)."""
    return f"{group_path(dataset, arch, schedule, scheme, bits, start)}/seed{seed}"


def group_path(dataset: str, arch: str, schedule: str, scheme: str, bits: int | str,
               start: str = SCRATCH) -> str:
    """The folder of a group's runs (one chain step, every seed) under ``runs``: its name in
    the summary and the report."""
    warm = "" if start == SCRATCH else f"from-{start_label(start)}/"
    return f"{dataset}/{arch}/{warm}{schedule}/{scheme}-w{bits}"


def start_label(start: str) -> str:
    """A start as a folder name: scratch, authors, torchvision, or file-<file stem>."""
    if start == SCRATCH or start in RELEASED_STARTS:
        return start
    stem = Path(start).name.split(".")[0]
    return "file-" + ("".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "x")


def start_file(start: str, arch: str, bits: int) -> str | None:
    """Where a released start is copied, relative to ``results/<preset>`` (``apot
    stage-start``); None for scratch, and for a file start (the path itself is used)."""
    if start == "authors":
        return f"starts/authors-{arch}-w{bits}.pt"
    if start == "torchvision":
        return f"starts/torchvision-{arch}.pt"
    return None


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
    data: str = ""                                # prepared dataset (preset datasets key)
    start: str = SCRATCH                          # the chain's start (module doc)
    first: bool = False                           # first step of its chain: starts from start

    def __post_init__(self):
        if not self.data:
            object.__setattr__(self, "data", self.dataset)

    @property
    def path(self) -> str:
        return run_path(self.dataset, self.arch, self.schedule, self.scheme, self.bits, self.seed,
                        self.start)

    @property
    def init_start(self) -> str | None:
        """The checkpoint this run starts from when it is the first step of a warm chain:
        the staged copy (relative to results/<preset>) or the file start's own path."""
        if not self.first or self.start == SCRATCH:
            return None
        return start_file(self.start, self.arch, self.bits) or self.start


def start_path(run: RunSpec, layout: ResultsLayout) -> str | None:
    """The checkpoint the first step of a warm chain starts from: the staged copy of a released
    model, or the study's own file; None for every other run."""
    start = run.init_start
    if start is None:
        return None
    return layout.start(start) if start.startswith("starts/") else start


def train_settings(run: RunSpec, layout: ResultsLayout) -> dict[str, Any]:
    """``apot train``'s settings of one run (TrainConfig fields): its model and training
    settings, its prepared data and folder, and its start (its parent's best weights, a
    released model, or none)."""
    settings = {"arch": run.arch, "data": layout.data_dir(run.data),
                "out": layout.run_dir(run.path), **run.train}
    init = layout.run_file(run.parent, BEST) if run.parent is not None else start_path(run, layout)
    if init is not None:
        settings["init"] = init
    return settings


# A workflow export checks its packed file on this many test images of each class: it compares
# logits, which any image does; the full test split of ImageNet would take a CPU an hour.
PACKED_CHECK_PER_CLASS = 10
# The ONNX check compares top-1 and measures speed, which needs more images: about this many
# test images in all (100 per class of CIFAR-10, 10 of CIFAR-100, 1 of ImageNet), a few
# seconds of ONNX Runtime for a CIFAR ResNet.
ONNX_CHECK_IMAGES = 1000


def best_model_settings(run: RunSpec, layout: ResultsLayout) -> dict[str, Any]:
    """The model of one trained run and its best weights: the settings ``apot cost`` and
    ``apot export`` read a run's model with."""
    return {"arch": run.arch, "bits": run.bits, "scheme": run.train["scheme"],
            "k": run.train["k"], "first_last": run.train["first_last"],
            "checkpoint": layout.run_file(run.path, BEST)}


def cost_settings(run: RunSpec, layout: ResultsLayout) -> dict[str, Any]:
    """``apot cost``'s settings of one trained quantized run: its model over its best weights,
    per layer, written beside them."""
    return {**best_model_settings(run, layout), "layers": True,
            "out": layout.run_file(run.path, RUN_COST)}


# per export format: the file, the printed result
EXPORT_FILES = {"packed": (PACKED, PACKED_RESULT), "onnx": (ONNX_MODEL, ONNX_RESULT)}


def check_per_class(run: RunSpec, format: str) -> int:
    """Test images per class an export of ``run`` in ``format`` is checked on."""
    if format == "packed":
        return PACKED_CHECK_PER_CLASS
    # a dataset whose classes its folder decides (ImageNet): as many as ImageNet's
    classes = get_dataset(run.dataset).classes or 1000
    return max(1, ONNX_CHECK_IMAGES // classes)


def export_settings(run: RunSpec, layout: ResultsLayout, format: str = "packed") -> dict[str, Any]:
    """``apot export``'s settings of one trained quantized run in ``format`` (EXPORT_FILES):
    its model and best weights, the file and result to write, and the data the file is
    checked on."""
    out, result = EXPORT_FILES[format]
    return {**best_model_settings(run, layout),
            "out": layout.run_file(run.path, out),
            "result": layout.run_file(run.path, result),
            "verify_data": layout.data_dir(run.data),
            "verify_limit_per_class": check_per_class(run, format)}


def study_record(config: dict, skipped: dict, skipped_studies: dict, authors_bits: list,
                 authors_data: str | None) -> dict:
    """What the jobs of one invocation need to know of it: the resolved config (without
    RUNTIME_KEYS), the prepared datasets and studies left out (with the reason the report
    prints), and the authors' checkpoints found and the data they are evaluated on."""
    return {"config": result_config(config), "skipped": skipped,
            "skipped_studies": skipped_studies, "authors_bits": authors_bits,
            "authors_data": authors_data}


def study_text(record: dict) -> str:
    return json_text(record, sort_keys=True) + "\n"


def study_digest(text: str) -> str:
    """The name of a study file of this content (without .json)."""
    return hashlib.sha256(text.encode()).hexdigest()[:STUDY_DIGEST_CHARS]


def write_study(record: dict, layout: ResultsLayout) -> str:
    """Write the study file of ``record``, named by its content, and return its path. A file
    of that name holds that content, so writing it again changes nothing a job reads: another
    invocation (a dry run, one the workflow's lock refuses) writes a file of another name."""
    text = study_text(record)
    path = layout.study_file(study_digest(text))
    write_text_if_changed(path, text)
    return path


def read_study(path: str | os.PathLike) -> dict:
    """A study file the Snakefile wrote, checked against its name (UserError otherwise); its
    config is validated again."""
    path = Path(path)
    wanted = f"results/<preset>/{STUDIES}/<digest>.json, written by the Snakefile"
    if path.parent.name != STUDIES or len(path.stem) != STUDY_DIGEST_CHARS:
        raise UserError(f"--study {path} is not a study file ({wanted})")
    try:
        if path.stat().st_size > STUDY_FILE_MAX_BYTES:
            raise UserError(f"--study {path} is not a study file: it has "
                            f"{path.stat().st_size} bytes")
        text = path.read_bytes().decode()
    except OSError as exc:
        raise UserError(f"cannot read --study {path} ({exc.strerror}); run snakemake again, "
                        f"which writes it") from None
    except UnicodeDecodeError:
        text = ""
    if study_digest(text) != path.stem:
        raise UserError(f"--study {path} does not hold the content its name records (changed "
                        f"or damaged since it was written); delete it and run snakemake again")
    try:
        study = json.loads(text)
        study["config"] = validate_config(study["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"--study {path} is not the study file the Snakefile writes ({exc}); "
                        f"delete it and run snakemake again") from None
    return study


def recorded_differences(run: RunSpec, layout: ResultsLayout, recorded: dict
                         ) -> dict[str, tuple]:
    """{setting: (recorded, the study's)} where the config a run recorded (metrics.json's
    "config") differs from the study's settings of the run. Paths (its data, its start) count
    by where they point, not how they are spelled; the files behind them are checked by their
    content elsewhere (apot.storage.integrity, apot.engine.train)."""
    expected = {"init": None, **train_settings(run, layout)}
    differ = {}
    for key, value in expected.items():
        mine = recorded.get(key)
        if key == "out":  # the folder the record is in, wherever it was moved
            continue
        if not (same_path(mine, value) if key in PATH_SETTINGS else mine == value):
            differ[key] = (mine, value)
    return differ


def recorded_config_problem(run: RunSpec, layout: ResultsLayout) -> str | None:
    """Why a completed run's metrics.json does not hold the run the study defines (None: it
    does, or the run has not completed)."""
    path = Path(layout.run_file(run.path, METRICS))
    if not path.exists():
        return None
    metrics, problem = read_record(path)
    if problem is not None:
        return f"its {problem}"
    recorded = metrics.get("config") if isinstance(metrics, dict) else None
    if not isinstance(recorded, dict):
        return f"its {METRICS} records no config (written before apot recorded it)"
    if not isinstance(metrics.get("predictions"), dict):
        return (f"its {METRICS} records no per-image predictions (written before apot kept "
                f"them)")
    differ = recorded_differences(run, layout, recorded)
    if not differ:
        return None
    listed = ", ".join(f"{key} {a!r} there, {b!r} in the study" for key, (a, b) in differ.items())
    return f"it was trained with other settings than the study's ({listed})"


def run_problems(run: RunSpec, layout: ResultsLayout) -> list[str]:
    """Why a completed run cannot be used as the study's (empty: it can, or it has not
    completed): its files against their record (apot.storage.integrity.check_run), else its recorded
    settings against the study's."""
    from apot.storage.integrity import check_run

    problems = check_run(layout.run_dir(run.path))
    if not problems:
        problems = [p for p in [recorded_config_problem(run, layout)] if p]
    return problems


def check_trained(run: RunSpec, layout: ResultsLayout, study: str | os.PathLike) -> None:
    """UserError unless ``run`` completed, its files are whole, and it was trained with the
    study's settings (what a job that reads a trained run, an export, needs): results of two
    configurations are never mixed."""
    if not Path(layout.run_file(run.path, METRICS)).is_file():
        raise UserError(f"run {run.path} has not completed (no {METRICS}): train it first "
                        f"(snakemake trains every run before what reads it)")
    problems = run_problems(run, layout)
    if problems:
        raise UserError(f"run {run.path}: {'; '.join(problems)}, --study {study}; run snakemake "
                        f"again: it trains the run again with the study's settings")


def check_parent(config: dict, run: RunSpec, layout: ResultsLayout,
                 study: str | os.PathLike) -> None:
    """check_trained of the run ``run`` starts from, if it starts from one."""
    if run.parent is not None:
        check_trained(find_run(config, run.parent), layout, study)


def find_run(config: dict, path: str) -> RunSpec:
    """The run of the selected preset whose folder is ``path`` (UserError if none is)."""
    for run in expand_runs(config):
        if run.path == path:
            return run
    raise UserError(f"run {path} is not part of preset {config['preset']} (see config.yaml)")


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
    _check_finite(config, "")
    if config["preset"] not in config["presets"]:
        raise UserError(f"config key preset: {config['preset']!r} is not one of the presets "
                        f"({', '.join(config['presets'])})")
    for name, preset in config["presets"].items():
        for data_name, entry in preset["datasets"].items():
            if dataset_of(preset, data_name) not in study_datasets():
                raise UserError(f"config key presets.{name}.datasets.{data_name}: name the "
                                f"dataset it is prepared from (dataset: one of "
                                f"{', '.join(study_datasets())})")
        for study_name, study in preset["studies"].items():
            _check_study(f"presets.{name}.studies.{study_name}", preset, study)


def _check_finite(node: Any, where: str) -> None:
    """UserError naming the first key whose value is NaN or infinite: YAML's .nan and .inf
    pass every schema bound (no comparison with NaN is true), and would surface only hours
    later, as a diverged run."""
    if isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"config key {where}: {node} is not a finite number; give a finite one")
    items = (node.items() if isinstance(node, dict)
             else enumerate(node) if isinstance(node, list) else ())
    for key, value in items:
        _check_finite(value, f"{where}[{key}]" if isinstance(key, int)
                      else f"{where}.{key}" if where else str(key))


def dataset_of(preset: dict, data_name: str) -> str:
    """The dataset a prepared dataset of ``preset`` is made from."""
    return preset["datasets"][data_name].get("dataset") or data_name


def study_data(study: dict) -> str:
    """The prepared dataset a study reads (its key ``data``, default its dataset)."""
    return study.get("data") or study["dataset"]


def _check_study(where: str, preset: dict, study: dict) -> None:
    data = study_data(study)
    if data not in preset["datasets"]:
        key = f"{where}.data" if study.get("data") else f"{where}.dataset"
        raise UserError(f"config key {key}: {data!r} is not listed under the preset's datasets")
    if dataset_of(preset, data) != study["dataset"]:
        raise UserError(f"config key {where}.data: {data!r} is prepared from "
                        f"{dataset_of(preset, data)}, not from the study's dataset "
                        f"{study['dataset']}")
    large_images = get_dataset(study["dataset"]).image_size > 32
    for arch in study["archs"]:
        if (arch in IMAGENET_ARCHS) != large_images:
            raise UserError(f"config key {where}.archs: {arch} does not fit dataset "
                            f"{study['dataset']}")
    start = study.get("start", SCRATCH)
    if start == "authors" and (study["dataset"] != "cifar10" or study["archs"] != [AUTHORS_ARCH]):
        raise UserError(f"config key {where}.start: the authors released CIFAR-10 "
                        f"{AUTHORS_ARCH} checkpoints only; this study has {study['dataset']} "
                        f"{', '.join(study['archs'])}")
    if start == "torchvision" and not large_images:
        raise UserError(f"config key {where}.start: torchvision's pretrained weights are "
                        f"ImageNet models; this study is on {study['dataset']}")
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
        if epochs == 0 and (i > 0 or start == SCRATCH):
            raise UserError(f"config key {where}.chain[{i}].epochs: 0 epochs (evaluate the "
                            f"start as it is) only fits the first step of a chain with a start")
        milestones = step.get("milestones", study["milestones"])
        late = [m for m in milestones if m >= epochs]
        if study["schedule"] == "multistep" and late and epochs > 0:
            key = f"{where}.chain[{i}].milestones" if "milestones" in step \
                else f"{where}.milestones"
            raise UserError(f"config key {key}: milestone {late[0]} is not before the "
                            f"last epoch (epochs {epochs}); milestones must be "
                            f"1..{epochs - 1}")


def network_reachable(timeout: float = 3.0, host: tuple[str, int] = DOWNLOAD_HOST) -> bool:
    """Whether a download host answers (False at once when APOT_OFFLINE=1)."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return False
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def data_sources(config: dict, prepared: str | Path | None = None) -> dict[str, str | None]:
    """prepared dataset name -> where it comes from ("prepared: <folder>", "mirror: <archive>",
    "download", "folder: <path>"), or None when nothing provides it; the selected preset's.

    A dataset already prepared under ``prepared/<name>`` needs no source: this is what lets
    a cluster job (which parses the workflow again, often on a node without network) run.
    """
    preset = config["presets"][config["preset"]]
    folder = mirror_folder(config.get("mirror") or None)
    sources: dict[str, str | None] = {}
    online = None
    for name in preset["datasets"]:
        dataset = dataset_of(preset, name)
        done = Path(prepared) / name if prepared is not None else None
        if done is not None and (done / MANIFEST).is_file():
            sources[name] = f"prepared: {done}"
            continue
        if get_dataset(dataset).kind == FOLDER:
            root = config.get("imagenet_root") or ""
            sources[name] = f"folder: {root}" if root and Path(root).is_dir() else None
            continue
        archive_name = get_dataset(dataset).archive
        if folder is not None and (folder / archive_name).is_file():
            sources[name] = f"mirror: {folder / archive_name}"
            continue
        if folder is None:
            if online is None:
                online = network_reachable()
            sources[name] = "download" if online else None
        else:
            sources[name] = None
    return sources


def missing_reason(config: dict, dataset: str) -> str:
    """Why a dataset without a source did not run, as the report states it."""
    if get_dataset(dataset).kind == FOLDER:
        root = config.get("imagenet_root") or ""
        return ("not configured: no ImageNet folder (set imagenet_root)" if not root
                else f"not run: ImageNet folder {root} does not exist")
    return "not run: no data source"


def check_data(config: dict, sources: dict[str, str | None]) -> dict[str, str]:
    """Prepared datasets that will not run -> reason. Raises, naming the fix, when a CIFAR
    dataset has no source and ``on_missing_data`` is not ``skip``. ImageNet only runs when
    configured."""
    preset = config["presets"][config["preset"]]
    skipped = {}
    for name, source in sources.items():
        dataset = dataset_of(preset, name)
        if source is not None:
            continue
        if get_dataset(dataset).kind == FOLDER and not config.get("imagenet_root"):
            skipped[name] = missing_reason(config, dataset)
            continue
        if config["on_missing_data"] != "skip":
            folder = mirror_folder(config.get("mirror") or None)
            entry = get_dataset(dataset)
            archive = entry.archive if entry.kind == ARCHIVE else "train/ val/"
            where = (f"the mirror {folder} has no {archive}" if folder is not None
                     else "no data mirror is set and the download host cannot be reached")
            raise UserError(
                f"dataset {dataset} has no data source: {where}. Put {archive} in a folder and "
                f"set APOT_DATA_MIRROR (or config key mirror) to it, or run with "
                f"--config on_missing_data=skip to leave its jobs out")
        skipped[name] = missing_reason(config, dataset)
    return skipped


def schemes(config: dict, study: dict) -> tuple[str, ...]:
    """A study's schemes, APoT first: its key ``schemes``, plus uniform and PoT everywhere with
    the config key ``scheme_ablation``."""
    listed = list(study["schemes"])
    if config["scheme_ablation"]:
        listed += ablation_schemes()
    return tuple(sorted(set(listed), key=lambda s: (s != APOT, listed.index(s))))


def quantizer_rules(study: dict) -> str:
    """Which of the authors' quantizer implementations a study follows: its key
    ``quantizer_rules``, else the dataset's (the ImageNet code for ImageNet)."""
    return study.get("quantizer_rules") or get_dataset(study["dataset"]).quantizer_rules


def train_flags(config: dict, preset: dict, study: dict, step: dict, scheme: str,
                seed: int) -> dict[str, Any]:
    """The ``apot train`` settings of one chain step (TrainConfig field names) that define its
    result; where it runs (device, threads) is not one of them."""
    alpha = study["alpha"]
    return {
        "epochs": step.get("epochs", study["epochs"]),
        "bits": step["bits"],
        "scheme": APOT if scheme == FLOAT else scheme,
        "k": preset["k"],
        "first_last": preset["first_last"],
        "batch_size": step.get("batch_size", study["batch_size"]),
        "test_batch_size": study["test_batch_size"],
        "lr": step["lr"],
        "momentum": study["momentum"],
        "weight_decay": step["weight_decay"],
        "act_alpha_lr": alpha["act_lr"], "act_alpha_wd": alpha["act_wd"],
        "wgt_alpha_lr": alpha["wgt_lr"], "wgt_alpha_wd": alpha["wgt_wd"],
        "quantizer_rules": quantizer_rules(study),
        "act_alpha_calibration": study["act_alpha_calibration"],
        "schedule": study["schedule"],
        # a 0-epoch step (the start as it is) steps no schedule
        "milestones": (list(step.get("milestones", study["milestones"]))
                       if step.get("epochs", study["epochs"]) > 0 else []),
        "gamma": study["gamma"],
        "seed": seed,
    }


def expand_runs(config: dict, skip: tuple[str, ...] = (),
                skip_studies: tuple[str, ...] = ()) -> list[RunSpec]:
    """Every run of the selected preset, parents before children; prepared datasets in ``skip``
    and studies in ``skip_studies`` are left out. Two studies that produce the same run folder
    must agree on its settings."""
    preset = config["presets"][config["preset"]]
    runs: dict[str, RunSpec] = {}
    for study_name, study in preset["studies"].items():
        if study_data(study) in skip or study_name in skip_studies:
            continue
        for arch in study["archs"]:
            for seed in study.get("seeds") or preset["seeds"]:
                _expand_chains(config, preset, study_name, study, arch, seed, runs)
    return list(runs.values())


def _expand_chains(config: dict, preset: dict, study_name: str, study: dict, arch: str,
                   seed: int, runs: dict[str, RunSpec]) -> None:
    """One chain per scheme, all sharing the study's single FP32 step."""
    base = None
    for scheme in schemes(config, study):
        parent = base
        for step in study["chain"]:
            is_float = step["bits"] == FLOAT_BITS
            if is_float and base is not None:
                continue  # one FP32 baseline, shared by the scheme chains
            run_scheme = FLOAT if is_float else scheme
            spec = RunSpec(study_name, study["dataset"], arch, study["schedule"], run_scheme,
                           step["bits"], seed,
                           train_flags(config, preset, study, step, run_scheme, seed), parent,
                           data=study_data(study), start=study.get("start", SCRATCH),
                           first=parent is None)
            _add_run(runs, spec)
            parent = spec.path
            if is_float:
                base = spec.path


def _add_run(runs: dict[str, RunSpec], spec: RunSpec) -> None:
    known = runs.get(spec.path)
    if known is not None and (known.train != spec.train or known.parent != spec.parent
                              or known.data != spec.data or known.start != spec.start):
        raise UserError(f"studies {known.study} and {spec.study} both define run {spec.path} "
                        f"with different settings; give one of them another schedule or arch")
    runs.setdefault(spec.path, spec)


def find_start(config: dict, start: str, arch: str, bits: int) -> str | None:
    """Where a chain's start is now: a file, "download" (torchvision's, with the network up),
    or None when it cannot be had."""
    if start == "authors":
        return authors_checkpoints(config).get(bits)
    if start == "torchvision":
        cached = torch_hub_checkpoints() / TORCHVISION_WEIGHTS[arch]
        if cached.is_file():
            return str(cached)
        return "download" if network_reachable(host=TORCHVISION_HOST) else None
    return start if Path(start).is_file() else None


def missing_start(config: dict, start: str, arch: str, bits: int) -> str:
    """Why a start cannot be had, and the fix."""
    if start == "authors":
        return (f"the authors' released {arch} checkpoint {AUTHORS_FILE.format(bits=bits)} was "
                f"not found: put the authors' checkpoints in a folder and set config key "
                f"authors_checkpoints to it (or place them in <mirror>/{AUTHORS_FOLDER})")
    if start == "torchvision":
        name = TORCHVISION_WEIGHTS[arch]
        return (f"torchvision's pretrained {arch} weights are not cached "
                f"({torch_hub_checkpoints() / name} does not exist) and "
                f"{TORCHVISION_HOST[0]} cannot be reached: download "
                f"{TORCHVISION_URL.format(file=name)} on a machine with internet and put it "
                f"at that path (or set TORCH_HOME to the folder holding hub/checkpoints/{name})")
    return f"the start checkpoint {start} does not exist (check the study's start: path)"


def check_starts(config: dict, runs: list[RunSpec], results: str | Path) -> dict[str, str]:
    """Studies whose start cannot be had -> reason. A start already staged under
    ``results/starts/`` needs no source (as a prepared dataset needs no archive; the chain's
    first step depends on the staged file, so it must stay). Raises, naming the fix, unless
    ``on_missing_data`` is ``skip``."""
    skipped = {}
    for run in runs:
        if run.init_start is None or run.study in skipped:
            continue
        staged = start_file(run.start, run.arch, run.bits)
        if staged and (Path(results) / staged).is_file():
            continue
        if find_start(config, run.start, run.arch, run.bits) is not None:
            continue
        if config["on_missing_data"] != "skip":
            raise UserError(f"study {run.study} starts from {run.start}, but "
                            f"{missing_start(config, run.start, run.arch, run.bits)}; or run "
                            f"with --config on_missing_data=skip to leave its jobs out")
        # short and free of local paths: the reason goes into the summary's params
        skipped[run.study] = f"not run: its start ({start_label(run.start)}) is not available"
        # a study that shares this one's first step (its runs folded into this study's) starts
        # from the same file: it cannot run either
        preset = config["presets"][config["preset"]]
        for name, study in preset["studies"].items():
            if study.get("start", SCRATCH) == run.start and run.arch in study["archs"]:
                skipped.setdefault(name, skipped[run.study])
    return skipped


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
