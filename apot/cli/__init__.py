"""The ``apot`` command line: one subcommand per job, JSON on stdout, one-line errors."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from apot import __version__
from apot.engine.device import resolve_device
from apot.errors import UserError
from apot.data.datasets import dataset_names
from apot.layout import MANIFEST
from apot.models import ARCHS
from apot.quant.convert import FIRST_LAST_POLICIES, first_and_last
from apot.deploy.onnx_export import ONNX_FORMS
from apot.deploy.packed_layers import ARITHMETICS, PackedQuantConv2d
from apot.quant.levels import MAX_BITS, MIN_BITS, check_k
from apot.quant.schemes import APOT, FLOAT_BITS, MODEL_BITS, levels, scheme_names
from apot.engine.stopping import Stopped


def _bits(text: str, allow_float: bool) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits must be an integer, got {text!r}") from None
    if MIN_BITS <= value <= MAX_BITS or (allow_float and value == FLOAT_BITS):
        return value
    extra = f" or {FLOAT_BITS} for float" if allow_float else ""
    raise argparse.ArgumentTypeError(f"bits must be {MIN_BITS}..{MAX_BITS}{extra}, got {value}")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _base_bits(text: str) -> int:
    try:
        value = int(text)
        check_k(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"k must be an integer from 1 to {MAX_BITS}, got {text!r}") from None
    return value


THREADS_HELP = ("CPU threads of torch and numba (default: torch's: OMP_NUM_THREADS, else the "
                "core count)")


def _write_json(path: Path, result: dict) -> None:
    """The JSON a command prints, also written to ``path`` (atomically: temporary + rename).
    If that write fails, the result is printed before the error: a finished evaluation is
    never lost."""
    from apot.layout import write_text_atomic
    try:
        write_text_atomic(path, _json(result, indent=1, sort_keys=True) + "\n")
    except OSError:
        print(_json(result))
        raise


def _json(result, **options) -> str:
    """Standard JSON: a NaN or infinite float (the loss of a diverged model) becomes null."""
    return json.dumps(_finite(result), allow_nan=False, **options)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def check_output_file(path: Path | None) -> None:
    """Refuse an --out that cannot be written before any work is done (not after)."""
    if path is None:
        return
    folder = path.parent
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; name a file")
    if not folder.is_dir():
        raise UserError(f"--out {path}: folder {folder} does not exist (or is a file); "
                        f"create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: folder {folder} is not writable; check its permissions")
    try:  # a folder can pass those checks and still take no file (/proc, a full disk)
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        from apot.errors import os_error_message
        raise UserError(f"--out {path}: no file can be created in {folder} "
                        f"({os_error_message(exc)})") from None
    os.close(handle)
    os.unlink(probe)


def cmd_levels(args: argparse.Namespace) -> dict | list:
    values = levels(args.scheme, args.bits, signed=args.signed, k=args.k)
    return [str(v) for v in values] if args.exact else [float(v) for v in values]


# The model flags of ``apot eval --checkpoint`` and their defaults; --packed takes none.
EVAL_MODEL_DEFAULTS = {"scheme": APOT, "k": 2, "first_last": "8bit"}


def cmd_eval(args: argparse.Namespace) -> dict:
    from apot.engine.evaluate import evaluate
    from apot.layout import file_sha256
    from apot.engine.threads import use_threads
    _check_eval_flags(args)
    check_output_file(args.out)
    check_output_file(args.predictions)
    device = resolve_device(args.device)
    threads = use_threads(args.threads)
    start = time.perf_counter()
    if args.onnx is not None:
        device = torch.device("cpu")  # ONNX Runtime's CPU provider
        model, batches, dataset, source = _onnx_source(args, args.threads, device)
    elif args.packed is not None:
        from apot.storage.integrity import verify_packed_file
        from apot.deploy.packed_file import load_packed
        verify_packed_file(args.packed)
        model, header = load_packed(args.packed, args.arithmetic)
        for field in ("arch", "bits", *EVAL_MODEL_DEFAULTS):
            setattr(args, field, header[field])
        batches, num_classes, dataset = _eval_batches(args, device)
        if num_classes != header["num_classes"]:
            raise UserError(f"{args.packed} holds a model for {header['num_classes']} classes; "
                            f"the data has {num_classes}")
        source = {"packed": str(args.packed), "packed_sha256": file_sha256(args.packed),
                  "arithmetic": args.arithmetic,
                  "layer_arithmetic": _layer_arithmetic(model)}
    else:
        from apot.models import load_model
        batches, num_classes, dataset = _eval_batches(args, device)
        model, _ = load_model(args.checkpoint, _description(args), num_classes)
        source = {"checkpoint": str(args.checkpoint),
                  "checkpoint_sha256": file_sha256(args.checkpoint)}
    result = evaluate(model, batches, device, keep_predictions=args.predictions is not None)
    if args.onnx is not None:
        result["images_per_s"] = round(result["n"] / max(model.seconds, 1e-9), 1)
    if args.predictions is not None:
        from apot.engine.predictions import write_predictions
        result["predictions"] = write_predictions(
            args.predictions, result.pop("predicted").numpy(), result.pop("labels").numpy(),
            _predictions_identity(args))
    result = {**result, **_description(args), **source,
              "data": str(args.data), "dataset": dataset, "split": args.split,
              "device": str(device), "threads": threads,
              "seconds": round(time.perf_counter() - start, 2)}
    if args.out is not None:
        _write_json(args.out, result)
    return result


def _predictions_identity(args: argparse.Namespace) -> str:
    """What ``apot eval``'s images are: a prepared test split whole is named as a training run
    names it (so the two compare); anything else by its path, split and limit."""
    from apot.engine.predictions import images_identity
    from apot.data.manifest import load_manifest

    data = Path(args.data)
    if (data / MANIFEST).is_file() and args.split == "test" and not args.limit_per_class:
        return images_identity(load_manifest(data))
    limit = f", first {args.limit_per_class} per class" if args.limit_per_class else ""
    return f"{data} split {args.split}{limit}"


def _check_eval_flags(args: argparse.Namespace) -> None:
    """--checkpoint needs --arch and --bits; --packed and --onnx take no model flag (the file
    names its model). Fills the defaults of the mode."""
    model_flags = ("arch", "bits", *EVAL_MODEL_DEFAULTS)
    named = args.packed if args.packed is not None else args.onnx
    if named is not None:
        given = [f"--{f.replace('_', '-')}" for f in model_flags if getattr(args, f) is not None]
        what = "a packed file" if args.packed is not None else "an ONNX file"
        if given:
            raise UserError(f"{', '.join(given)}: {what} names its model itself; "
                            f"drop {'them' if len(given) > 1 else 'it'}")
        if args.onnx is not None and args.arithmetic is not None:
            raise UserError("--arithmetic applies to --packed models; an ONNX file's form "
                            "fixes its arithmetic")
        args.arithmetic = args.arithmetic or (ARITHMETICS[0] if args.packed else None)
        return
    missing = [f"--{f}" for f in ("arch", "bits") if getattr(args, f) is None]
    if missing:
        raise UserError(f"--checkpoint needs {' and '.join(missing)}")
    if args.arithmetic is not None:
        raise UserError("--arithmetic applies to --packed models; a checkpoint computes as it "
                        "was trained")
    for field, default in EVAL_MODEL_DEFAULTS.items():
        if getattr(args, field) is None:
            setattr(args, field, default)


def _onnx_source(args: argparse.Namespace, threads: int, device) -> tuple:
    """(ONNX Runtime model, batches, dataset name, source fields) of ``apot eval --onnx``."""
    from apot.layout import file_sha256
    from apot.deploy.onnx_run import OnnxModel, describe_onnx, read_onnx

    _, meta = read_onnx(args.onnx)
    for field, value in describe_onnx(args.onnx, meta).items():
        setattr(args, field, value)
    batches, num_classes, dataset = _eval_batches(args, device)
    if num_classes != int(meta["num_classes"]):
        raise UserError(f"{args.onnx} holds a model for {meta['num_classes']} classes; the "
                        f"data has {num_classes}")
    model = OnnxModel(args.onnx, threads)
    return model, batches, dataset, {
        "onnx": str(args.onnx), "onnx_sha256": file_sha256(args.onnx),
        "onnx_form": meta["form"], "integer_convs": model.integer_convs,
        "quantized_convs": int(meta["quantized_convs"])}


def _verify_batches(args: argparse.Namespace) -> tuple:
    """(batches on the CPU, dataset name) of an export's check: --verify-data's test split,
    --verify-limit-per-class images of each class."""
    checks = argparse.Namespace(data=args.verify_data, arch=args.arch, dataset=None,
                                split="test", batch_size=100,
                                limit_per_class=args.verify_limit_per_class)
    batches, _, dataset = _eval_batches(checks, torch.device("cpu"))
    return batches, dataset


def _verify_packed(args: argparse.Namespace, model) -> dict:
    """The checkpoint's model against the packed file just written, on the same test batches
    (levels arithmetic: the logits should not differ at all)."""
    from apot.engine.evaluate import compare
    from apot.deploy.packed_file import load_packed
    packed, _ = load_packed(args.out)
    batches, dataset = _verify_batches(args)
    return {"data": str(args.verify_data), "dataset": dataset,
            "limit_per_class": args.verify_limit_per_class, **compare(model, packed, batches)}


def _layer_arithmetic(model) -> dict[str, int]:
    """How many quantized layers computed in each arithmetic (apot.deploy.packed_layers)."""
    counts: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, PackedQuantConv2d):
            counts[module.arithmetic] = counts.get(module.arithmetic, 0) + 1
    return counts


def cmd_export(args: argparse.Namespace) -> dict:
    from apot.models import load_model
    from apot.engine.threads import use_threads
    _fill_export_flags(args)
    check_output_file(args.out)
    check_output_file(args.result)
    use_threads(args.threads)
    model, _ = load_model(args.checkpoint, _description(args))
    classes = model.get_submodule(first_and_last(model)[1]).out_features
    if args.format == "onnx":
        from apot.deploy.onnx_export import export_onnx
        result = export_onnx(model.eval(), _description(args), classes, args.checkpoint,
                             args.out, args.onnx_form, ARCHS[args.arch][2])
        if args.verify_data is not None:
            result["verify"] = _verify_onnx(args, model, args.threads)
    else:
        from apot.deploy.packed_file import export_packed
        if args.bits not in MODEL_BITS:
            raise UserError(f"--format packed stores quantized models (bits {MODEL_BITS[0]}.."
                            f"{MODEL_BITS[-1]}); a {args.bits}-bit model exports with "
                            f"--format onnx --onnx-form float")
        result = export_packed(model.eval(), _description(args), classes, args.checkpoint,
                               args.out)
        if args.verify_data is not None:
            result["verify"] = _verify_packed(args, model)
    if args.result is not None:
        _write_json(args.result, result)
    return result


def _verify_onnx(args: argparse.Namespace, model, threads: int) -> dict:
    """The checkpoint's model against the ONNX file just written, in ONNX Runtime on the same
    test images, and the same network in float32 (--onnx-form float) timed on them."""
    from apot.deploy.onnx_run import compare_onnx
    batches, dataset = _verify_batches(args)
    return {"data": str(args.verify_data), "dataset": dataset,
            "limit_per_class": args.verify_limit_per_class,
            **compare_onnx(model, args.out, list(batches), threads, ARCHS[args.arch][2])}


# apot export's settings, each a flag; with --study and --run the study file gives them all.
EXPORT_FLAGS = ("arch", "bits", *EVAL_MODEL_DEFAULTS, "checkpoint", "out", "result",
                "verify_data", "verify_limit_per_class")
EXPORT_FORMATS = ("packed", "onnx")
EXPORT_PATH_FLAGS = ("checkpoint", "out", "result", "verify_data")
REQUIRED_EXPORT_FLAGS = ("arch", "bits", "checkpoint", "out")


def _fill_export_flags(args: argparse.Namespace) -> None:
    """apot export's settings: a workflow job's from the study file (--study --run,
    apot.workflow.study.export_settings), otherwise the flags with their defaults."""
    given = [name for name in EXPORT_FLAGS if getattr(args, name) is not None]
    if args.format != "onnx" and args.onnx_form is not None:
        raise UserError("--onnx-form applies to --format onnx")
    if args.format == "onnx":
        args.onnx_form = args.onnx_form or ONNX_FORMS[0]
    if args.study or args.run_path:
        from apot.workflow.study import check_trained, export_settings
        if given:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
            raise UserError(f"{flags}: the study file defines the export; leave them out, or "
                            f"give every setting without --study")
        run, layout, _ = study_run(args)
        check_trained(run, layout, args.study)
        for name, value in export_settings(run, layout, args.format).items():
            setattr(args, name, Path(value) if name in EXPORT_PATH_FLAGS else value)
        return
    missing = [f"--{name}" for name in REQUIRED_EXPORT_FLAGS if getattr(args, name) is None]
    if missing:
        raise UserError(f"give {', '.join(missing)}, or the run's --study file and --run")
    for field, default in EVAL_MODEL_DEFAULTS.items():
        if getattr(args, field) is None:
            setattr(args, field, default)


def _description(args: argparse.Namespace) -> dict:
    """The model a command's flags describe (apot.models.load_model)."""
    return {"arch": args.arch, "bits": args.bits, "scheme": args.scheme, "k": args.k,
            "first_last": args.first_last}


def _eval_batches(args: argparse.Namespace, device) -> tuple:
    """(batches, number of classes, dataset name) of ``apot eval``'s data: a prepared dataset
    (normalized as its manifest's dataset), an ImageNet-style folder (224-pixel models), or an
    image folder or archive of small images."""
    from apot.data.archives import read_split
    from apot.data.loader import ImageFolderLoader, TensorLoader
    from apot.data.manifest import manifest_dataset
    from apot.data.prepare import load_prepared

    data = Path(args.data)
    if ARCHS[args.arch][2] != 32:
        entry = _named_dataset(args.dataset, "imagenet")
        loader = ImageFolderLoader(str(data / args.split), args.batch_size, False, device,
                                   mean=entry.mean, std=entry.std)
        return loader.epoch(), len(loader.dataset.classes), entry.name
    if (data / MANIFEST).is_file():
        images, labels, manifest = load_prepared(data, args.split)
        entry = manifest_dataset(manifest, data)
        if args.dataset not in (None, entry.name):
            raise UserError(f"--dataset {args.dataset}: {data} is prepared from {entry.name}")
        if args.limit_per_class:
            keep = torch.cat([(labels == c).nonzero().flatten()[:args.limit_per_class]
                              for c in labels.unique()]).sort().values
            images, labels = images[keep], labels[keep]
        classes = manifest["classes"]
    else:
        images, labels, classes = read_split(data, args.split, limit=args.limit_per_class)
        entry = _named_dataset(args.dataset, None, len(classes))
    batches = TensorLoader(images, labels, args.batch_size, False, device, mean=entry.mean,
                           std=entry.std, channels_last=False).epoch()
    return batches, len(classes), entry.name


def _named_dataset(name: str | None, default: str | None, classes: int | None = None):
    """The registered dataset ``--dataset`` names; without it, ``default``, else the one
    registered dataset with ``classes`` classes."""
    from apot.data.datasets import REGISTRY, get_dataset

    if name is None and default is None:
        matching = [d for d in REGISTRY.values() if d.classes == classes]
        if len(matching) != 1:
            raise UserError(f"the images have {classes} classes: name the dataset they come "
                            f"from with --dataset (its normalization applies)")
        return matching[0]
    try:
        return get_dataset(name or default)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def cmd_dvc_plots_template(args: argparse.Namespace) -> dict:
    from apot.reporting.dvc_plots import write_offline_template
    check_output_file(args.out)
    return write_offline_template(args.out)


def cmd_prepare_data(args: argparse.Namespace) -> dict:
    from apot.data.prepare import prepare_dataset
    return prepare_dataset(args.dataset, args.out, mirror=args.mirror,
                           download_root=args.download_root, imagenet_root=args.imagenet_root,
                           train_per_class=args.train_per_class,
                           test_per_class=args.test_per_class, seed=args.seed,
                           synthetic_classes=args.synthetic_classes)


def cmd_cost(args: argparse.Namespace) -> dict:
    from apot.deploy.cost import network_cost, summary_row
    from apot.engine.threads import use_threads
    check_output_file(args.out)
    use_threads(args.threads)
    model = None
    if args.checkpoint is not None:
        from apot.models import load_model
        model, _ = load_model(args.checkpoint, _description(args))
    cost = network_cost(args.arch, args.bits, args.scheme, args.k, args.first_last, model)
    if args.checkpoint is not None:
        from apot.layout import file_sha256
        cost["checkpoint"] = str(args.checkpoint)
        cost["checkpoint_sha256"] = file_sha256(args.checkpoint)
    result = cost if args.layers else summary_row(cost)
    if args.out is not None:
        _write_json(args.out, result)
    return result


def cmd_summarize(args: argparse.Namespace) -> dict:
    from apot.workflow.study import read_study
    from apot.reporting.summary import summarize
    return summarize(read_study(args.study), args.results, args.benchmarks, args.cost)


def cmd_claims(args: argparse.Namespace) -> dict:
    from apot.reporting.render import write_claims
    check_output_file(args.out)
    return write_claims(args.summary, args.out)


def cmd_report(args: argparse.Namespace) -> dict:
    from apot.reporting.render import build_report
    return build_report(args.summary, args.out_dir, args.claims)


def cmd_cost_tables(args: argparse.Namespace) -> dict:
    from apot.deploy.cost import cost_tables
    from apot.workflow.study import expand_runs, read_study
    config = read_study(args.study)["config"]
    check_output_file(args.out)
    preset = config["presets"][config["preset"]]
    models = {(run.arch, run.bits) for run in expand_runs(config)}
    tables = cost_tables(sorted(models), preset["k"], preset["first_last"])
    _write_json(args.out, tables)
    return {"out": str(args.out), "paper_rows": len(tables["paper"]),
            "study_rows": len(tables["study"])}


def cmd_stage_start(args: argparse.Namespace) -> dict:
    from apot.engine.starts import stage_start
    return stage_start(args.start, args.arch, args.out, checkpoint=args.checkpoint)


def cmd_train(args: argparse.Namespace) -> dict:
    from apot.engine.train import TrainConfig, train
    given = {name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None}
    values = study_run_settings(args, given) if args.study or args.run_path else given
    missing = [f"--{name.replace('_', '-')}" for name in REQUIRED_TRAIN_FLAGS
               if name not in values]
    if missing:
        raise UserError(f"give {', '.join(missing)}, or the run's --study file and --run")
    return train(TrainConfig(**values, progress=args.progress),
                 restart_if_changed=args.restart_if_changed)


def study_run_settings(args: argparse.Namespace, given: dict) -> dict:
    """A workflow job's settings: the run ``--run`` of the study file ``--study``
    (apot.workflow.study.train_settings), plus the flags that say where it runs. The run it starts
    from must have completed with the study's settings of it."""
    from apot.workflow.study import check_parent, train_settings
    from apot.engine.train import RUNTIME_FIELDS
    defining = [f"--{name.replace('_', '-')}" for name in given if name not in RUNTIME_FIELDS]
    if defining:
        raise UserError(f"{', '.join(defining)}: the study file defines the run; leave them "
                        f"out, or give every setting without --study")
    run, layout, config = study_run(args)
    check_parent(config, run, layout, args.study)
    return {**train_settings(run, layout), **given}


def study_run(args: argparse.Namespace) -> tuple:
    """(run, results layout, config) of a workflow job: the run ``--run`` of the study file
    ``--study``, whose results folder holds the preset's results, and the study's config."""
    from apot.layout import ResultsLayout
    from apot.workflow.study import find_run, read_study
    if not (args.study and args.run_path):
        raise UserError("--study and --run go together: the study file the Snakefile writes "
                        "and a run folder under its runs/")
    config = read_study(args.study)["config"]
    return find_run(config, args.run_path), ResultsLayout.of_study_file(args.study), config


# TrainConfig field -> (type, help); defaults come from TrainConfig itself.
TRAIN_FLAGS = {
    "arch": (str, "architecture"), "data": (str, "prepared dataset folder"),
    "out": (str, "run folder (resumed if it holds a checkpoint)"),
    "epochs": (int, "number of epochs"),
    "bits": (int, f"{MODEL_BITS[0]}..{MODEL_BITS[-1]}, or {FLOAT_BITS} for float inner layers"),
    "scheme": (str, "a registered scheme (apot.quant.schemes)"), "k": (int, "APoT base bit-width"),
    "first_last": (str, "8bit | float"), "batch_size": (int, "training batch"),
    "test_batch_size": (int, "test batch"), "lr": (float, "weights' initial learning rate"),
    "momentum": (float, "SGD momentum"), "weight_decay": (float, "weights' weight decay"),
    "act_alpha_lr": (float, "activation thresholds' lr"),
    "act_alpha_wd": (float, "activation thresholds' weight decay"),
    "wgt_alpha_lr": (float, "weight thresholds' lr"),
    "wgt_alpha_wd": (float, "weight thresholds' weight decay"),
    "act_alpha_init": (float, "initial activation threshold (default: the quantizer rules', "
                              "8.0 cifar, 6.0 imagenet)"),
    "quantizer_rules": (str, "cifar | imagenet: the authors' CIFAR or ImageNet quantizer "
                             "gradients"),
    "act_alpha_calibration": (str, "none | mse: activation thresholds no --init provides "
                                   "start at the least-squared-error value on the first "
                                   "training batches"),
    "wgt_alpha_init": (float, "initial weight threshold (in weight std units)"),
    "schedule": (str, "multistep | cosine (per epoch) | cosine_steps (per batch) | "
                 "cosine_epochs (per batch, restarted each epoch)"),
    "milestones": (int, "epochs where lr *= gamma"),
    "gamma": (float, "multistep factor"),
    "init": (str, "initialization checkpoint (progressive, or a released model; with "
                  "--epochs 0 the run is that model as it is)"),
    "seed": (int, "seed of init, order and augmentation"), "device": (str, "auto | cpu | cuda"),
    "threads": (int, "CPU threads of torch and numba (default: torch's: OMP_NUM_THREADS, "
                     "else the core count)"),
    "workers": (int, "image-decoding processes (ImageNet)"),
}


REQUIRED_TRAIN_FLAGS = ("arch", "data", "out", "epochs")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from apot.engine.train import MILESTONES, TrainConfig
    defaults = {f.name: f.default for f in TrainConfig.__dataclass_fields__.values()}
    defaults["milestones"] = list(MILESTONES)
    p.add_argument("--study", type=Path, default=None,
                   help="a workflow job: the study file the Snakefile writes "
                        "(results/<preset>/studies/<digest>.json), with --run; it gives every "
                        "setting but --device, --threads and --workers")
    p.add_argument("--run", dest="run_path", default=None,
                   help="the run's folder under the study's runs/ (with --study)")
    # a flag left out is None here: TrainConfig's default, unless the study file gives it
    for name, (kind, text) in TRAIN_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        extra = {"nargs": "*"} if name == "milestones" else {}
        required = " (required without --study)" if name in REQUIRED_TRAIN_FLAGS else ""
        default = "" if required else f" (default {defaults[name]})"
        p.add_argument(flag, dest=name, type=kind, default=None, help=text + required + default,
                       **extra)
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar on stderr")
    p.add_argument("--restart-if-changed", action="store_true",
                   help="a run folder holding a run of another config, data or start has its "
                        "files moved into <out>/superseded-<time>/ and the run starts over "
                        "(default: an error)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=__package__.partition(".")[0],
                                     description="APoT quantization reproduction.")
    parser.add_argument("--version", action="version", version=f"apot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("levels", help="print a quantizer's normalized level set as JSON")
    p.add_argument("--bits", type=lambda t: _bits(t, False), required=True,
                   help=f"bit-width b ({MIN_BITS}..{MAX_BITS})")
    p.add_argument("--scheme", choices=scheme_names(), default=APOT)
    p.add_argument("--signed", action="store_true",
                   help="sign + (b-1) magnitude bits, as the authors' weights (2^b - 1 levels)")
    p.add_argument("--k", type=_base_bits, default=2,
                   help=f"APoT base bit-width, 1..{MAX_BITS} (default 2)")
    p.add_argument("--exact", action="store_true", help="print exact fractions as strings")
    p.set_defaults(run=cmd_levels)

    p = sub.add_parser("eval", help="evaluate a checkpoint, a packed or an ONNX model on a "
                                    "dataset; prints JSON")
    p.add_argument("--arch", choices=list(ARCHS), default=None, help="(with --checkpoint)")
    p.add_argument("--bits", type=lambda t: _bits(t, True), default=None,
                   help=f"weight/activation bits of the inner layers ({MODEL_BITS[0]}.."
                        f"{MODEL_BITS[-1]}), or {FLOAT_BITS} for the float model "
                        f"(with --checkpoint)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint (needs --arch and --bits)")
    source.add_argument("--packed", type=Path, default=None,
                        help="a packed model (apot export), which names its architecture and "
                             "bits itself")
    source.add_argument("--onnx", type=Path, default=None,
                        help="an ONNX model (apot export --format onnx), run by ONNX Runtime's "
                             "CPU provider; adds images_per_s and integer_convs (convolutions "
                             "the runtime runs on integers after its graph optimization)")
    p.add_argument("--arithmetic", choices=ARITHMETICS, default=None,
                   help="(with --packed) levels: the codes' level values in float32, the "
                        "trained model's logits bit for bit (default); integer: integer codes "
                        "summed exactly, scaled once per layer")
    p.add_argument("--data", type=Path, required=True,
                   help="image-folder archive (.tar.gz, .tar, .zip) or folder with <split>/<class>/")
    p.add_argument("--scheme", choices=scheme_names(), default=None,
                   help=f"(with --checkpoint; default {APOT})")
    p.add_argument("--k", type=_base_bits, default=None,
                   help="APoT base bit-width (with --checkpoint; default 2)")
    p.add_argument("--first-last", choices=FIRST_LAST_POLICIES, default=None,
                   help="first conv / last linear: the authors' 8-bit weights (default) or float "
                        "(with --checkpoint)")
    p.add_argument("--split", default="test")
    p.add_argument("--dataset", choices=dataset_names(), default=None,
                   help="the dataset the images come from, whose normalization applies "
                        "(default: a prepared dataset's own; for an image folder or archive, "
                        "the registered dataset with its number of classes; imagenet for "
                        "224-pixel models)")
    p.add_argument("--batch-size", type=_positive, default=100)
    p.add_argument("--limit-per-class", type=_positive, default=None,
                   help="evaluate only the first N images of each class (quick checks)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--threads", type=_positive, default=None, help=THREADS_HELP)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    p.add_argument("--predictions", type=Path, default=None,
                   help="also write each image's predicted class to this file (.npz, "
                        "apot.engine.predictions): what pairs this model's errors with another's")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("export", help="write a quantized checkpoint as a packed model (integer "
                                      "codes, safetensors); prints its size against float32")
    p.add_argument("--study", type=Path, default=None,
                   help="a workflow job: the study file the Snakefile writes "
                        "(results/<preset>/studies/<digest>.json), with --run; it gives every "
                        "setting but --threads: the run's best.pt, written as its "
                        "packed.safetensors and packed.json, checked on the first test images of "
                        "each class of its data")
    p.add_argument("--run", dest="run_path", default=None,
                   help="a quantized run's folder under the study's runs/ (with --study)")
    p.add_argument("--arch", choices=list(ARCHS), default=None,
                   help="(required without --study)")
    p.add_argument("--bits", type=lambda t: _bits(t, True), default=None,
                   help=f"weight/activation bits of the inner layers ({MODEL_BITS[0]}.."
                        f"{MODEL_BITS[-1]}, or {FLOAT_BITS} with --onnx-form float; required "
                        f"without --study)")
    p.add_argument("--scheme", choices=scheme_names(), default=None,
                   help=f"(default {APOT})")
    p.add_argument("--k", type=_base_bits, default=None, help="APoT base bit-width (default 2)")
    p.add_argument("--first-last", choices=FIRST_LAST_POLICIES, default=None,
                   help="first conv / last linear: the authors' 8-bit weights (default) or float")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a quantized checkpoint (a run's best.pt, or the authors' file; "
                        "required without --study)")
    p.add_argument("--out", type=Path, default=None,
                   help="the packed file to write (required without --study)")
    p.add_argument("--result", type=Path, default=None,
                   help="also write the printed JSON to this file")
    p.add_argument("--verify-data", type=Path, default=None,
                   help="evaluate the checkpoint and the written packed file on this data's "
                        "test split (a prepared dataset, image folder or archive) and record "
                        "both top-1 and their largest logit difference")
    p.add_argument("--verify-limit-per-class", type=_positive, default=None,
                   help="verify on the first N test images of each class only")
    p.add_argument("--format", choices=EXPORT_FORMATS, default=EXPORT_FORMATS[0],
                   help="packed: integer codes in safetensors (default); onnx: an ONNX model "
                        "that ONNX Runtime runs on integer kernels (docs/onnx.md)")
    p.add_argument("--onnx-form", choices=ONNX_FORMS, default=None,
                   help="(with --format onnx) qdq: QuantizeLinear/DequantizeLinear around each "
                        "quantized conv, fused by the runtime into int8 kernels, fast, "
                        "requantizing conv outputs to 8 bits (default); integer: ConvInteger, "
                        "exact sums and the model's float epilogue, its top-1; float: the same "
                        "network in float32 (activations not quantized), the speed baseline")
    p.add_argument("--threads", type=_positive, default=None, help=THREADS_HELP)
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("dvc-plots-template",
                       help="write an HTML template with which dvc plots show draws offline")
    p.add_argument("--out", type=Path, required=True,
                   help="the template file (then: dvc plots show --html-template FILE)")
    p.set_defaults(run=cmd_dvc_plots_template)

    p = sub.add_parser("prepare-data", help="decode a dataset once into tensors + manifest")
    p.add_argument("--dataset", required=True,
                   choices=dataset_names())
    p.add_argument("--out", type=Path, required=True, help="prepared dataset folder")
    p.add_argument("--mirror", default=None,
                   help="folder with cifar-10-images.tar.gz etc. (default: $APOT_DATA_MIRROR; "
                        "unset: torchvision download)")
    p.add_argument("--download-root", default=None, help="where torchvision downloads to")
    p.add_argument("--imagenet-root", default=None, help="ImageNet folder with train/ and val/")
    p.add_argument("--train-per-class", type=_positive, default=None,
                   help="keep a seeded, class-balanced subset of the training set")
    p.add_argument("--test-per-class", type=_positive, default=None)
    p.add_argument("--seed", type=int, default=0, help="subset / generator seed")
    p.add_argument("--synthetic-classes", type=_positive, default=10)
    p.set_defaults(run=cmd_prepare_data)

    p = sub.add_parser("train", help="train or fine-tune one model (resumes); prints metrics")
    add_train_arguments(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("stage-start", help="copy a released model (a chain's start) into a "
                                           "checkpoint file that records its origin")
    p.add_argument("--start", choices=["authors", "torchvision"], required=True,
                   help="authors: their released checkpoint (--checkpoint); torchvision: its "
                        "pretrained ImageNet weights of --arch (torch's cache, or downloaded)")
    p.add_argument("--arch", choices=list(ARCHS), required=True)
    p.add_argument("--checkpoint", type=Path, default=None, help="the released file (authors)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=cmd_stage_start)

    p = sub.add_parser("cost", help="operation counts of a model (MACs, FixOPs, shifts, adds)")
    p.add_argument("--arch", choices=list(ARCHS), required=True)
    p.add_argument("--bits", type=lambda t: _bits(t, True), required=True,
                   help=f"inner layers' bits ({MODEL_BITS[0]}..{MODEL_BITS[-1]}), or {FLOAT_BITS}")
    p.add_argument("--scheme", choices=scheme_names(), default=APOT)
    p.add_argument("--k", type=_base_bits, default=2, help="APoT base bit-width (default 2)")
    p.add_argument("--first-last", choices=FIRST_LAST_POLICIES, default="8bit")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="expected counts over this trained model's weight levels (default: "
                        "every level equally used)")
    p.add_argument("--layers", action="store_true", help="include the per-layer rows")
    p.add_argument("--threads", type=_positive, default=None, help=THREADS_HELP)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    p.set_defaults(run=cmd_cost)

    p = sub.add_parser("cost-tables", help="write the report's cost tables for a study")
    p.add_argument("--study", type=Path, required=True,
                   help="the study file the Snakefile writes "
                        "(results/<preset>/studies/<digest>.json)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=cmd_cost_tables)

    p = sub.add_parser("summarize", help="collect a preset's runs into summary/accuracy files")
    p.add_argument("--results", type=Path, required=True, help="results/<preset> folder")
    p.add_argument("--benchmarks", type=Path, default=None,
                   help="benchmarks/<preset> folder (Snakemake job times)")
    p.add_argument("--cost", type=Path, default=None,
                   help="cost tables to include (results/<preset>/cost.json)")
    p.add_argument("--study", type=Path, required=True,
                   help="the study file the Snakefile writes "
                        "(results/<preset>/studies/<digest>.json)")
    p.set_defaults(run=cmd_summarize)

    p = sub.add_parser("claims", help="judge the paper's claims from summary.json: writes "
                                      "claims.json (verdicts, comparisons, intervals)")
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True,
                   help="results/<preset>/claims.json")
    p.set_defaults(run=cmd_claims)

    p = sub.add_parser("report", help="render report.html and report.pdf from summary.json")
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--claims", type=Path, default=None,
                   help="the verdicts to render (apot claims); computed from the summary when "
                        "left out")
    p.add_argument("--out-dir", type=Path, default=Path("report/build"))
    p.set_defaults(run=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "bits", None) == 1 and args.command in ("eval", "cost", "export"):
        parser.error("argument --bits: quantized models need at least 2 bits (signed weights)")
    try:
        result = args.run(args)
    except UserError as exc:
        print(f"apot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from apot.errors import os_error_message
        print(f"apot {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except Stopped as exc:
        print(f"apot {args.command}: {exc}; the run's files hold its last completed epoch: "
              f"the same command resumes from there", file=sys.stderr)
        return 128 + exc.signum
    print(_json(result))
    return 0
