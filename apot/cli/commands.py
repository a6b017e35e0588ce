"""What each apot subcommand does: its flags handed to one library function. Each returns the
JSON that apot.cli.main prints; --out and --result files get the same JSON."""
from __future__ import annotations

import argparse
from functools import partial

from apot.data.prepare import prepare_dataset
from apot.deploy.cost import model_cost
from apot.deploy.evaluation import SOURCES, eval_model, evaluate_file
from apot.deploy.export import export_model
from apot.engine.config import FIELD_HELP, REQUIRED_FIELDS, TrainConfig
from apot.engine.evaluate import Images
from apot.engine.starts import stage_start as stage
from apot.engine.train import train as train_run
from apot.errors import UserError, flags
from apot.models import DESCRIPTION_DEFAULTS, DESCRIPTION_FIELDS
from apot.quant.schemes import levels as level_set
from apot.reporting.dvc_plots import write_offline_template
from apot.reporting.render import build_report, write_claims
from apot.reporting.summary import summarize as collect
from apot.reporting.summary import write_cost_tables
from apot.storage.jsonfile import write_result
from apot.storage.outputs import check_output_file
from apot.workflow.jobs import cost_job_settings, export_job_settings, train_job_settings
from apot.workflow.study import read_study

# apot export's settings, each a flag; with --study and --run the study file gives them all
EXPORT_SETTINGS = (*DESCRIPTION_FIELDS, "checkpoint", "out", "result", "verify_data",
                   "verify_limit_per_class")
REQUIRED_EXPORT_SETTINGS = ("arch", "bits", "checkpoint", "out")


def levels(args: argparse.Namespace) -> list:
    values = level_set(args.scheme, args.bits, signed=args.signed, k=args.k)
    return [str(v) for v in values] if args.exact else [float(v) for v in values]


def evaluate(args: argparse.Namespace) -> dict:
    source = next(name for name in SOURCES if getattr(args, name) is not None)
    model, arithmetic = eval_model(source, {f: getattr(args, f) for f in DESCRIPTION_FIELDS},
                                   args.arithmetic)
    check_output_file(args.out)
    check_output_file(args.predictions)
    images = Images(args.data, args.split, args.batch_size, args.limit_per_class, args.dataset)
    result = evaluate_file(source, getattr(args, source), model, arithmetic, images,
                           args.device, args.threads, args.predictions)
    return write_result(result, args.out)


def settings_of(args: argparse.Namespace, names, required, from_study) -> dict:
    """A command's settings: a workflow job's from its study file (``from_study``, with
    --study and --run), else its flags ``names`` (``required`` among them), the model's
    defaulting to DESCRIPTION_DEFAULTS."""
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.study or args.run_path:
        given = from_study(args.study, args.run_path, list(given))
    elif missing := [name for name in required if name not in given]:
        raise UserError(f"give {flags(missing)}, or the run's --study file and --run")
    return {**DESCRIPTION_DEFAULTS, **given}


def export(args: argparse.Namespace) -> dict:
    settings = settings_of(args, EXPORT_SETTINGS, REQUIRED_EXPORT_SETTINGS,
                           partial(export_job_settings, format=args.format))
    check_output_file(settings["out"])
    check_output_file(settings.get("result"))
    verify = (Images(settings["verify_data"],
                     limit_per_class=settings.get("verify_limit_per_class"))
              if settings.get("verify_data") else None)
    result = export_model({f: settings[f] for f in DESCRIPTION_FIELDS}, settings["checkpoint"],
                          settings["out"], args.format, args.onnx_form, verify, args.threads)
    return write_result(result, settings.get("result"))


def train(args: argparse.Namespace) -> dict:
    given = {name: getattr(args, name) for name in FIELD_HELP if getattr(args, name) is not None}
    if args.study or args.run_path:
        given = train_job_settings(args.study, args.run_path, given)
    if missing := [name for name in REQUIRED_FIELDS if name not in given]:
        raise UserError(f"give {flags(missing)}, or the run's --study file and --run")
    return train_run(TrainConfig(**given, progress=args.progress),
                     restart_if_changed=args.restart_if_changed)


def prepare_data(args: argparse.Namespace) -> dict:
    return prepare_dataset(args.dataset, args.out, mirror=args.mirror,
                           download_root=args.download_root, imagenet_root=args.imagenet_root,
                           train_per_class=args.train_per_class,
                           test_per_class=args.test_per_class, seed=args.seed,
                           synthetic_classes=args.synthetic_classes)


def stage_start(args: argparse.Namespace) -> dict:
    return stage(args.start, args.arch, args.out, checkpoint=args.checkpoint)


def cost(args: argparse.Namespace) -> dict:
    settings = settings_of(args, (*DESCRIPTION_FIELDS, "checkpoint", "out", "layers"),
                           ("arch", "bits"), cost_job_settings)
    check_output_file(settings.get("out"))
    model = {f: settings[f] for f in DESCRIPTION_FIELDS}
    return write_result(model_cost(model, settings.get("checkpoint"), settings.get("layers"),
                                   args.threads), settings.get("out"))


def cost_tables(args: argparse.Namespace) -> dict:
    study = read_study(args.study)
    check_output_file(args.out)
    return write_cost_tables(study, args.out)


def summarize(args: argparse.Namespace) -> dict:
    return collect(read_study(args.study), args.results, args.benchmarks, args.cost)


def claims(args: argparse.Namespace) -> dict:
    check_output_file(args.out)
    return write_claims(args.summary, args.out)


def report(args: argparse.Namespace) -> dict:
    return build_report(args.summary, args.out_dir, args.claims)


def dvc_plots_template(args: argparse.Namespace) -> dict:
    check_output_file(args.out)
    return write_offline_template(args.out)
