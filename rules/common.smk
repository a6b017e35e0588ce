# Every helper the rules use: the preset's paths, its data sources and its runs. The matrix
# itself is expanded by apot.study from config.yaml, never restated here.
import json
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError

from apot.errors import UserError
from apot.sources import mirror_folder
from apot.study import AUTHORS_BITS as AUTHORS_BITS_ALL
from apot.study import (authors_checkpoints, check_config, check_data, data_sources, expand_runs,
                        result_config, run_path)

try:
    check_config(config)
    DATA_SOURCES = data_sources(config, prepared=f"results/{config['preset']}/data")
    SKIPPED = check_data(config, DATA_SOURCES)  # dataset -> reason it does not run
    RUNS = {run.path: run for run in expand_runs(config, skip=tuple(SKIPPED))}
except UserError as error:
    raise WorkflowError(f"config.yaml: {error}") from None

PRESET = config["preset"]
RESULTS = f"results/{PRESET}"
LOGS = f"logs/{PRESET}"
BENCHMARKS = f"benchmarks/{PRESET}"
DATASETS = sorted({run.dataset for run in RUNS.values()})
QUANTIZED_RUNS = [path for path, run in RUNS.items() if run.scheme != "fp32"]
# The authors' released CIFAR-10 ResNet-20 checkpoints, evaluated when CIFAR-10 runs: those
# found now, and those already evaluated (whose result stands without the files, as a
# prepared dataset stands without its archive). Where they were found is passed outside params
# and inputs, like the data source: a moved or unset mirror must not re-run anything.
AUTHORS = authors_checkpoints(config) if "cifar10" in DATASETS else {}
AUTHORS_DIR = shlex.quote(os.path.dirname(next(iter(AUTHORS.values())))) if AUTHORS else "''"


def authors_result(bits):
    return f"{RESULTS}/authors/resnet20-w{bits}.json"


AUTHORS_BITS = sorted(
    {*AUTHORS, *(b for b in AUTHORS_BITS_ALL if os.path.isfile(authors_result(b)))}
    if "cifar10" in DATASETS else (), reverse=True)
# The apot command line of the interpreter running Snakemake: no reliance on PATH, also in
# cluster jobs (which share this file system).
APOT = f"{shlex.quote(sys.executable)} -m apot"
REPORT_FILES = ["report/build/report.html", "report/build/report.pdf"]
TRAIN_GPUS = 0 if config["device"] == "cpu" else 1

# Light jobs, and the download (compute nodes are often offline), stay on the submitting host
# when a cluster profile is used.
localrules: prepare_data, cost_tables, run_cost, summarize, report, all

wildcard_constraints:
    dataset="cifar10|cifar100|imagenet",
    arch="resnet[0-9]+",
    schedule="multistep|cosine",
    scheme="apot|pot|uniform",
    bits="[2-8]",
    seed="[0-9]+",


def data_dir(dataset):
    return f"{RESULTS}/data/{dataset}"


def run_dir(path):
    return f"{RESULTS}/runs/{path}"


def run_metrics(path):
    return f"{run_dir(path)}/metrics.json"


def run_cost(path):
    return f"{run_dir(path)}/cost.json"


def cost_args(run):
    """apot cost flags of one trained run: its model, its best weights, where to write."""
    args = ["--arch", run.arch, "--bits", run.bits, "--scheme", run.train["scheme"],
            "--k", run.train["k"], "--first-last", run.train["first_last"],
            "--checkpoint", f"{run_dir(run.path)}/best.pt", "--layers",
            "--out", run_cost(run.path)]
    return " ".join(shlex.quote(str(a)) for a in args)


def run_of(wildcards, scheme, bits):
    path = run_path(wildcards.dataset, wildcards.arch, wildcards.schedule, scheme, bits,
                    wildcards.seed)
    if path not in RUNS:
        raise WorkflowError(f"run {path} is not part of preset {PRESET} (see config.yaml)")
    return RUNS[path]


def subset_args(wildcards):
    """apot prepare-data flags that define a prepared dataset: its class-balanced subset."""
    settings = config["presets"][PRESET]["datasets"][wildcards.dataset]
    args = ["--seed", settings["subset_seed"]]
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


def train_args(run):
    """apot train flags of one run: its settings, data, folder and progressive start."""
    args = ["--arch", run.arch, "--data", data_dir(run.dataset), "--out", run_dir(run.path)]
    for key, value in run.train.items():
        flag = "--" + key.replace("_", "-")
        args += [flag, *value] if isinstance(value, list) else [flag, value]
    if run.parent is not None:
        args += ["--init", f"{run_dir(run.parent)}/best.pt"]
    return " ".join(shlex.quote(str(a)) for a in args)


def train_inputs(scheme, bits):
    """Input function: the prepared dataset and, for a quantized run, its parent's metrics
    (written last, so a parent counts as done only when it completed)."""
    def inputs(wildcards):
        run = run_of(wildcards, scheme(wildcards), bits(wildcards))
        found = {"data": f"{data_dir(run.dataset)}/manifest.json"}
        if run.parent is not None:
            found["parent"] = run_metrics(run.parent)
        return found
    return inputs


def study_json():
    """What the summary needs to know of this invocation: the resolved config and the datasets
    left out (with the reason the report prints). Not where the data came from: that changes
    once a dataset is prepared (and would re-run the summary); the manifests record it."""
    return json.dumps({"config": result_config(config), "skipped": SKIPPED,
                       "runs": sorted(RUNS), "authors_bits": AUTHORS_BITS}, sort_keys=True)
