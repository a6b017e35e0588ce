"""The ``apot`` command line's arguments: one subcommand per job; the model flags and the train
flags declared once (the latter from apot.engine.config)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from apot import __version__
from apot.cli import commands
from apot.data.datasets import dataset_names
from apot.deploy.export import EXPORT_FORMATS
from apot.deploy.onnx_export import ONNX_FORMS
from apot.deploy.packed_layers import ARITHMETICS
from apot.engine.config import FIELD_HELP, REQUIRED_FIELDS, field_defaults
from apot.models import ARCHS, DESCRIPTION_DEFAULTS
from apot.quant.convert import FIRST_LAST_POLICIES
from apot.quant.levels import MAX_BITS, MIN_BITS
from apot.quant.schemes import APOT, FLOAT_BITS, MODEL_BITS, scheme_names
from apot.workflow.study import RELEASED_STARTS

THREADS_HELP = "CPU threads of torch and numba (default: OMP_NUM_THREADS, else the cores)"
STUDY_HELP = ("a workflow job: the study file the Snakefile writes "
              "(results/<preset>/studies/<digest>.json), with --run; it gives every setting but ")


def integer(problem: Callable[[int], str | None], not_an_integer: str) -> Callable[[str], int]:
    """An argparse type: an integer in which ``problem`` finds none (else its message)."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{not_an_integer}, got {text!r}") from None
        if (found := problem(value)) is not None:
            raise argparse.ArgumentTypeError(found)
        return value
    return convert


def _model_bits_problem(value: int) -> str | None:
    if value in MODEL_BITS or value == FLOAT_BITS:
        return None
    if MIN_BITS <= value < MODEL_BITS[0]:
        return "quantized models need at least 2 bits (signed weights)"
    return f"bits must be {MIN_BITS}..{MAX_BITS} or {FLOAT_BITS} for float, got {value}"


level_bits = integer(lambda v: None if MIN_BITS <= v <= MAX_BITS
                     else f"bits must be {MIN_BITS}..{MAX_BITS}, got {v}", "bits must be an integer")
model_bits = integer(_model_bits_problem, "bits must be an integer")
positive = integer(lambda v: None if v >= 1 else f"must be a positive integer, got {v}",
                   "must be a positive integer")
base_bits = integer(lambda v: None if 1 <= v <= MAX_BITS else
                    f"k must be an integer from 1 to {MAX_BITS}, got {v}",
                    f"k must be an integer from 1 to {MAX_BITS}")


def add_model_flags(p: argparse.ArgumentParser, note: str) -> None:
    """--arch, --bits, --scheme, --k, --first-last: the model a checkpoint holds; None when left
    out (the command fills DESCRIPTION_DEFAULTS). ``note`` ends each help."""
    p.add_argument("--arch", choices=list(ARCHS), help=note)
    p.add_argument("--bits", type=model_bits, help=f"inner layers' bits ({MODEL_BITS[0]}.."
                   f"{MODEL_BITS[-1]}), or {FLOAT_BITS} for the float model {note}")
    p.add_argument("--scheme", choices=scheme_names(),
                   help=f"(default {DESCRIPTION_DEFAULTS['scheme']}) {note}")
    p.add_argument("--k", type=base_bits,
                   help=f"APoT base bit-width (default {DESCRIPTION_DEFAULTS['k']}) {note}")
    p.add_argument("--first-last", choices=FIRST_LAST_POLICIES, help="first conv / last linear: "
                   f"the authors' 8-bit weights (default) or float {note}")


def add_levels(sub) -> None:
    p = sub.add_parser("levels", help="print a quantizer's normalized level set as JSON")
    p.add_argument("--bits", type=level_bits, required=True,
                   help=f"bit-width b ({MIN_BITS}..{MAX_BITS})")
    p.add_argument("--scheme", choices=scheme_names(), default=APOT)
    p.add_argument("--signed", action="store_true",
                   help="sign + (b-1) magnitude bits, as the authors' weights (2^b - 1 levels)")
    p.add_argument("--k", type=base_bits, default=DESCRIPTION_DEFAULTS["k"],
                   help=f"APoT base bit-width, 1..{MAX_BITS} (default 2)")
    p.add_argument("--exact", action="store_true", help="print exact fractions as strings")
    p.set_defaults(run=commands.levels)


def add_images_flags(p: argparse.ArgumentParser) -> None:
    """The images apot eval runs on (apot.engine.evaluate.Images)."""
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset, or an image "
                   "folder (<split>/<class>/) or its archive (.tar.gz, .tar, .zip)")
    p.add_argument("--split", default="test")
    p.add_argument("--dataset", choices=dataset_names(), help="the dataset whose normalization "
                   "applies (default: the data's own; apot.engine.evaluate.Images)")
    p.add_argument("--batch-size", type=positive, default=100)
    p.add_argument("--limit-per-class", type=positive,
                   help="evaluate only the first N images of each class (quick checks)")


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint, packed or ONNX model; prints JSON")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint (needs --arch and --bits)")
    source.add_argument("--packed", type=Path, help="a packed model (apot export), which names "
                                                    "its architecture and bits itself")
    source.add_argument("--onnx", type=Path, help="an ONNX model (apot export --format onnx) "
                        "run by ONNX Runtime; adds images_per_s and integer_convs")
    add_model_flags(p, "(with --checkpoint)")
    p.add_argument("--arithmetic", choices=ARITHMETICS, help="(with --packed) levels: the "
                   "trained model's logits bit for bit (default); integer: exact integer sums")
    add_images_flags(p)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    p.add_argument("--threads", type=positive, help=THREADS_HELP)
    p.add_argument("--out", type=Path, help="also write the JSON to this file")
    p.add_argument("--predictions", type=Path, help="also write each image's predicted class "
                   "to this file (.npz, apot.engine.predictions)")
    p.set_defaults(run=commands.evaluate)


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a quantized checkpoint as a packed model (integer "
                                      "codes, safetensors); prints its size against float32")
    p.add_argument("--study", type=Path, help=STUDY_HELP + "--threads")
    p.add_argument("--run", dest="run_path",
                   help="a quantized run's folder under the study's runs/ (with --study)")
    add_model_flags(p, "(arch and bits required without --study)")
    p.add_argument("--checkpoint", type=Path, help="a quantized checkpoint (required without "
                   "--study)")
    p.add_argument("--out", type=Path, help="the file to write (required without --study)")
    p.add_argument("--result", type=Path, help="also write the printed JSON to this file")
    p.add_argument("--verify-data", type=Path, help="run the checkpoint and the written file "
                   "on this data's test split and record how they differ")
    p.add_argument("--verify-limit-per-class", type=positive,
                   help="verify on the first N test images of each class only")
    p.add_argument("--format", choices=EXPORT_FORMATS, default=EXPORT_FORMATS[0],
                   help="packed: integer codes in safetensors (default); onnx: an ONNX model")
    p.add_argument("--onnx-form", choices=ONNX_FORMS, help="(with --format onnx) qdq: int8 "
                   "kernels, fast (default); integer: exact sums, the model's top-1; float: "
                   "float32, the speed baseline (docs/onnx.md)")
    p.add_argument("--threads", type=positive, help=THREADS_HELP)
    p.set_defaults(run=commands.export)


def add_prepare_data(sub) -> None:
    p = sub.add_parser("prepare-data", help="decode a dataset once into tensors + manifest")
    p.add_argument("--dataset", required=True, choices=dataset_names())
    p.add_argument("--out", type=Path, required=True, help="prepared dataset folder")
    p.add_argument("--mirror", help="folder with cifar-10-images.tar.gz etc. (default: "
                   "$APOT_DATA_MIRROR; unset: torchvision download)")
    p.add_argument("--download-root", help="where torchvision downloads to")
    p.add_argument("--imagenet-root", help="ImageNet folder with train/ and val/")
    p.add_argument("--train-per-class", type=positive,
                   help="keep a seeded, class-balanced subset of the training set")
    p.add_argument("--test-per-class", type=positive)
    p.add_argument("--seed", type=int, default=0, help="subset / generator seed")
    p.add_argument("--synthetic-classes", type=positive, default=10)
    p.set_defaults(run=commands.prepare_data)


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune one model (resumes); prints metrics")
    p.add_argument("--study", type=Path, help=STUDY_HELP + "--device, --threads and --workers")
    p.add_argument("--run", dest="run_path",
                   help="the run's folder under the study's runs/ (with --study)")
    defaults = field_defaults()
    # a flag left out is None here: TrainConfig's default, unless the study file gives it
    for name, (kind, text) in FIELD_HELP.items():
        extra = {"nargs": "*"} if name == "milestones" else {}
        required = " (required without --study)" if name in REQUIRED_FIELDS else ""
        default = "" if required else f" (default {defaults[name]})"
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None,
                       help=text + required + default, **extra)
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar on stderr")
    p.add_argument("--restart-if-changed", action="store_true", help="move another run's files "
                   "into <out>/superseded-<time>/ and start over (default: an error)")
    p.set_defaults(run=commands.train)


def add_stage_start(sub) -> None:
    p = sub.add_parser("stage-start", help="copy a released model (a chain's start) into a "
                                           "checkpoint file that records its origin")
    p.add_argument("--start", choices=RELEASED_STARTS, required=True, help="authors: their "
                   "--checkpoint; torchvision: its pretrained ImageNet weights of --arch")
    p.add_argument("--arch", choices=list(ARCHS), required=True)
    p.add_argument("--checkpoint", type=Path, help="the released file (authors)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=commands.stage_start)


def add_cost(sub) -> None:
    p = sub.add_parser("cost", help="operation counts of a model (MACs, FixOPs, shifts, adds)")
    p.add_argument("--study", type=Path, help=STUDY_HELP + "--threads")
    p.add_argument("--run", dest="run_path", help="a quantized run under runs/ (with --study)")
    add_model_flags(p, "(arch and bits required without --study)")
    p.add_argument("--checkpoint", type=Path,
                   help="expected counts over this trained model's weight levels (default: "
                        "every level equally used)")
    p.add_argument("--layers", action="store_true", default=None, help="per-layer rows too")
    p.add_argument("--threads", type=positive, help=THREADS_HELP)
    p.add_argument("--out", type=Path, help="also write the JSON to this file")
    p.set_defaults(run=commands.cost)


def add_reporting(sub) -> None:
    """The commands that turn a study's results into evidence."""
    study = {"type": Path, "help": "the study file the Snakefile writes "
                                   "(results/<preset>/studies/<digest>.json)"}
    p = sub.add_parser("cost-tables", help="write the report's cost tables for a study")
    p.add_argument("--study", required=True, **study)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=commands.cost_tables)
    p = sub.add_parser("summarize", help="collect a preset's runs into summary/accuracy files")
    p.add_argument("--results", type=Path, required=True, help="results/<preset> folder")
    p.add_argument("--benchmarks", type=Path,
                   help="benchmarks/<preset> folder (Snakemake job times)")
    p.add_argument("--cost", type=Path, help="cost tables to include (results/<preset>/cost.json)")
    p.add_argument("--study", required=True, **study)
    p.set_defaults(run=commands.summarize)
    p = sub.add_parser("claims", help="judge the paper's claims from summary.json: writes "
                                      "claims.json (verdicts, comparisons, intervals)")
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="results/<preset>/claims.json")
    p.set_defaults(run=commands.claims)
    p = sub.add_parser("report", help="render report.html and report.pdf from summary.json")
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--claims", type=Path,
                   help="the verdicts to render (apot claims); computed from the summary when "
                        "left out")
    p.add_argument("--out-dir", type=Path, help="(default: report/build/<the summary's preset>)")
    p.set_defaults(run=commands.report)
    p = sub.add_parser("dvc-plots-template",
                       help="write an HTML template with which dvc plots show draws offline")
    p.add_argument("--out", type=Path, required=True,
                   help="the template file (then: dvc plots show --html-template FILE)")
    p.set_defaults(run=commands.dvc_plots_template)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=__package__.partition(".")[0],
                                     description="APoT quantization reproduction.")
    parser.add_argument("--version", action="version", version=f"apot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_levels, add_eval, add_export, add_prepare_data, add_train, add_stage_start,
                add_cost, add_reporting):
        add(sub)
    return parser
