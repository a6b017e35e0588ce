# Every helper the rules use: the preset's paths, its data sources and its runs. The matrix
# itself is expanded by apot.workflow.study from config.yaml, never restated here.
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError

from apot.errors import UserError
from apot.storage.integrity import check_onnx, check_packed, check_prepared
from apot.layout import (ACCURACY, CLAIMS, COST_TABLES, HISTORIES, METRICS, ONNX_MODEL, ONNX_RESULT,
                         PACKED, PACKED_RESULT, RUN_COST, ResultsLayout)
from apot.quant.schemes import FLOAT, FLOAT_BITS, MODEL_BITS, integer_range_problem
from apot.data.sources import mirror_folder
from apot.workflow.study import AUTHORS_BITS as AUTHORS_BITS_ALL
from apot.workflow.study import (AUTHORS_ARCH, AUTHORS_FILE, STUDY_ENV, authors_checkpoints,
                                 check_config, check_data, check_starts, cost_settings,
                                 data_sources, dataset_of, expand_runs, export_settings,
                                 run_problems, start_file, start_path, study_digest, study_record,
                                 study_text, train_settings, write_study)

PRESET = config["preset"]
LAYOUT = ResultsLayout.of_preset(PRESET)
try:
    check_config(config)
    DATA_SOURCES = data_sources(config, prepared=LAYOUT.data_dir(""))
    SKIPPED = check_data(config, DATA_SOURCES)  # prepared dataset -> reason it does not run
    # studies whose start (a released model) cannot be had -> reason
    SKIPPED_STUDIES = check_starts(config, expand_runs(config, skip=tuple(SKIPPED)),
                                   LAYOUT.results)
    RUNS = {run.path: run for run in expand_runs(config, skip=tuple(SKIPPED),
                                                 skip_studies=tuple(SKIPPED_STUDIES))}
except UserError as error:
    raise WorkflowError(f"config.yaml: {error}") from None

DATA_NAMES = sorted({run.data for run in RUNS.values()})
QUANTIZED_RUNS = [path for path, run in RUNS.items() if run.scheme != FLOAT]
# the quantized runs whose level sets fit int8 weights and uint8 codes: exported to ONNX
# (the others, PoT from 4 bits, are listed in the report with the integers they would need)
ONNX_RUNS = [path for path in QUANTIZED_RUNS
             if integer_range_problem(RUNS[path].train["scheme"], RUNS[path].bits,
                                      RUNS[path].train["k"]) is None]


def path_pattern(paths):
    """A wildcard constraint matching exactly these run paths (none: matches nothing)."""
    return "|".join(re.escape(p) for p in sorted(paths)) or "(?!x)x"


FP32_PATTERN = path_pattern(p for p, run in RUNS.items() if run.scheme == FLOAT)
QUANTIZED_PATTERN = path_pattern(QUANTIZED_RUNS)
ONNX_PATTERN = path_pattern(ONNX_RUNS)
# The authors' released CIFAR-10 ResNet-20 checkpoints: evaluated on the preset's prepared
# "cifar10" dataset (else the first prepared CIFAR-10 one) when CIFAR-10 runs, and staged as a
# chain's start where a study starts from them. Those found now count, and those already
# evaluated (whose result stands without the files, as a prepared dataset stands without its
# archive). Where they were found is passed outside params and inputs, like the data source: a
# moved or unset mirror must not re-run anything.
_CIFAR10_DATA = [d for d in DATA_NAMES if dataset_of(config["presets"][PRESET], d) == "cifar10"]
AUTHORS_DATA = ("cifar10" if "cifar10" in _CIFAR10_DATA
                else _CIFAR10_DATA[0] if _CIFAR10_DATA else None)
AUTHORS = authors_checkpoints(config)
AUTHORS_DIR = shlex.quote(os.path.dirname(next(iter(AUTHORS.values())))) if AUTHORS else "''"


authors_result = LAYOUT.authors_result

AUTHORS_BITS = sorted(
    {*AUTHORS, *(b for b in AUTHORS_BITS_ALL if os.path.isfile(authors_result(b)))}
    if AUTHORS_DATA else (), reverse=True)
# The apot command line of the interpreter running Snakemake: no reliance on PATH, also in
# cluster jobs (which share this file system).
APOT = f"{shlex.quote(sys.executable)} -m apot"
REPORT_FILES = [f"{LAYOUT.report_dir}/report.html", f"{LAYOUT.report_dir}/report.pdf"]
# The report's figures (SVG) and tables (CSV), also as files of their own (apot report).
REPORT_FIGURES, REPORT_TABLES = f"{LAYOUT.report_dir}/figures", f"{LAYOUT.report_dir}/tables"
TRAIN_GPUS = 0 if config["device"] == "cpu" else 1

# Light jobs, and the download (compute nodes are often offline), stay on the submitting host
# when a cluster profile is used.
localrules: prepare_data, stage_authors_start, stage_torchvision_start, cost_tables, run_cost, summarize, claims, report, study, all

# The bit-widths a released model can have: a quantized model's, or float.
BITS_PATTERN = "|".join(str(b) for b in (FLOAT_BITS, *MODEL_BITS))

wildcard_constraints:
    data="[A-Za-z0-9_-]+",
    arch="resnet[0-9]+",
    bits=BITS_PATTERN,


data_dir, run_dir = LAYOUT.data_dir, LAYOUT.run_dir


def run_metrics(path):
    return LAYOUT.run_file(path, METRICS)


def run_cost(path):
    return LAYOUT.run_file(path, RUN_COST)


def run_packed(path):
    return LAYOUT.run_file(path, PACKED)


def run_packed_result(path):
    return LAYOUT.run_file(path, PACKED_RESULT)


def run_onnx(path):
    return LAYOUT.run_file(path, ONNX_MODEL)


def run_onnx_result(path):
    return LAYOUT.run_file(path, ONNX_RESULT)


def export_settings_of(wildcards):
    """Params of an export_packed job: its apot export settings (apot.workflow.study.export_settings).
    The job reads them from the study file (apot export --study --run); stated here too, so
    that a change to them makes Snakemake run it again."""
    return export_settings(run_of(wildcards), LAYOUT)


def onnx_settings_of(wildcards):
    """The same for an export_onnx job (apot export --format onnx)."""
    return export_settings(run_of(wildcards), LAYOUT, "onnx")


def cost_settings_of(wildcards):
    """The same for a run_cost job (apot cost --study --run, apot.workflow.study.cost_settings)."""
    return cost_settings(run_of(wildcards), LAYOUT)


def run_of(wildcards):
    if wildcards.run not in RUNS:
        raise WorkflowError(f"run {wildcards.run} is not part of preset {PRESET} "
                            f"(see config.yaml)")
    return RUNS[wildcards.run]


def subset_args(wildcards):
    """apot prepare-data flags that define a prepared dataset: its source dataset and its
    class-balanced subset."""
    settings = config["presets"][PRESET]["datasets"][wildcards.data]
    args = ["--dataset", dataset_of(config["presets"][PRESET], wildcards.data),
            "--seed", settings["subset_seed"]]
    for key in ("train_per_class", "test_per_class"):
        if settings[key] is not None:
            args += [f"--{key.replace('_', '-')}", settings[key]]
    return " ".join(shlex.quote(str(a)) for a in args)


def source_args():
    """Where prepare-data reads from: the mirror (config, else APOT_DATA_MIRROR), else the
    download folder; and the ImageNet folder. Kept out of the rule's params on purpose: the
    same data reached another way (a moved mirror, the variable unset once prepared) must not
    make Snakemake prepare it, and retrain everything after it, again. The manifest records
    the actual source."""
    mirror = mirror_folder(config["mirror"] or None)
    args = (["--mirror", mirror.resolve()] if mirror is not None
            else ["--download-root", config["download_root"]])
    if config["imagenet_root"]:
        args += ["--imagenet-root", config["imagenet_root"]]
    return " ".join(shlex.quote(str(a)) for a in args)


SOURCE_ARGS = source_args()
# Where training runs is not a param either: switching --config device=cpu must not retrain.
DEVICE_ARGS = f"--device {shlex.quote(config['device'])}"


def train_inputs(wildcards):
    """Input function: the prepared dataset; for a quantized run its parent's metrics (written
    last, so a parent counts as done only when it completed); for a warm chain's first step
    the staged start."""
    run = run_of(wildcards)
    found = {"data": LAYOUT.manifest(run.data)}
    if run.parent is not None:
        found["parent"] = run_metrics(run.parent)
    elif start_path(run, LAYOUT) is not None:
        found["start"] = start_path(run, LAYOUT)
    return found


def train_settings_of(wildcards):
    """Params of a train job: its apot train settings (apot.workflow.study.train_settings). The job
    reads them from the study file (apot train --study --run); stated here too, so that a
    change to them, and only to them, makes Snakemake run it again."""
    return train_settings(run_of(wildcards), LAYOUT)


# results/<preset>/studies/<digest>.json: what the jobs of this invocation read (the resolved
# config, the datasets and studies left out, the authors' checkpoints found), named by its
# content (apot.workflow.study.write_study). Every invocation writes its own, dry runs and those the
# lock then refuses included, and none can change another's: a job reads the file its
# command names, whatever was run beside it. Cluster jobs parse the workflow again; they take
# the submitting process's file from the environment it passes on (SLURM exports it), so that
# a config.yaml edited meanwhile changes no job of this run. As an input of the cost tables
# and the summary, its name tells Snakemake when they must run again (a training job's params
# are its own settings). Not where the data came from: that changes once a dataset is
# prepared (and would re-run the summary); the manifests record it.
STUDY = study_record(config, SKIPPED, SKIPPED_STUDIES, AUTHORS_BITS, AUTHORS_DATA)
if workflow.is_main_process:
    STUDY_FILE = write_study(STUDY, LAYOUT)
    os.environ[STUDY_ENV] = STUDY_FILE
else:  # a cluster job: the submitting process's file, if it is one of this preset's
    STUDY_FILE = os.environ.get(STUDY_ENV, "")
    if os.path.dirname(STUDY_FILE) != LAYOUT.studies_dir:
        STUDY_FILE = LAYOUT.study_file(study_digest(study_text(STUDY)))


def damaged_results():
    """{output whose files fail their checks: the problems}, over the preset's prepared
    datasets (tensors against the manifest's sha256), completed runs (checkpoint.pt, best.pt,
    history.csv against the record in metrics.json, and the config it records against this
    study's settings of the run) and packed and ONNX models (against packed.json's and
    onnx.json's records; apot.storage.integrity)."""
    found = {}
    for name in DATA_NAMES:
        problems = check_prepared(data_dir(name))
        if problems:
            found[LAYOUT.manifest(name)] = problems
    for path, run in RUNS.items():
        problems = run_problems(run, LAYOUT)
        if problems:
            found[run_metrics(path)] = problems
        elif path in QUANTIZED_RUNS:
            if problems := check_packed(run_dir(path)):
                found[run_packed_result(path)] = problems
            if path in ONNX_RUNS and (problems := check_onnx(run_dir(path))):
                found[run_onnx_result(path)] = problems
    return found


# Snakemake sees only whether an output exists and how old it is. Outputs whose files fail
# their checks are found once, here, by the process that plans the DAG (not again in each
# cluster job), and forced to run again, with everything that depends on them, as
# --forcerun would: the rules `all` and `study` take force_damaged as an input function,
# which runs while the DAG is built, after Snakemake's own --forcerun list has been read.
# Nothing is moved or deleted here: a dry run only shows the plan; the job itself (apot train,
# apot prepare-data) sets the damaged files aside.
DAMAGED = damaged_results() if workflow.is_main_process else {}
for _output, _problems in DAMAGED.items():
    print(f"apot: {os.path.dirname(_output)}: {'; '.join(_problems)}: it is made again, with "
          f"everything that depends on it", file=sys.stderr)


def force_damaged(wildcards):
    """Input function of `all` and `study`: adds the damaged outputs to the DAG's forced
    files; asks for no file itself."""
    if DAMAGED:
        forced = getattr(workflow.dag, "forcefiles", None)
        if forced is None:  # a Snakemake whose DAG keeps them elsewhere: say what to do
            raise WorkflowError("damaged results (above) cannot be forced to run again by this "
                                "Snakemake; run again with --forcerun " + " ".join(DAMAGED))
        forced.update(DAMAGED)
    return []
