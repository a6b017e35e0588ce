"""Aggregation: every run's metrics, histories and benchmarks of one preset -> tidy tables.

Writes into ``results/<preset>/``:
  summary.json   preset, resolved config, data provenance, one record per expected run (done,
                 or why not) and one per group of seeds (mean, std, n, drop against FP32)
  summary.csv    the groups as a table
  accuracy.json  best/final top-1 per group: the file ``dvc metrics show`` lists
  histories.csv  every run's per-epoch history in long form: the file ``dvc plots`` draws
Only files the pipeline produced are read; a run without metrics.json is "missing", a run of a
left-out dataset carries the reason it was left out.
"""
from __future__ import annotations

import copy
import csv
import io
from pathlib import Path

from apot.data.manifest import load_manifest
from apot.errors import UserError
from apot.layout import (ACCURACY, HISTORIES, HISTORY, HISTORY_FIELDS, MANIFEST, ONNX_RESULT,
                         PACKED_RESULT, PREDICTIONS, RUN_COST, ResultsLayout, benchmark_file,
                         write_text_atomic)
from apot.layout import METRICS as RUN_METRICS
from apot.quant.schemes import APOT, FLOAT, FLOAT_BITS
from apot.reporting.noise import chance_margin
from apot.storage.integrity import check_onnx, check_packed, check_run
from apot.storage.jsonfile import read_json, write_json
from apot.workflow.study import (SCRATCH, expand_runs, group_path, result_config, run_problems,
                                 validate_config)

# A group: the runs of one model, differing only in their seed. "start" tells a chain trained
# from scratch from one that starts from a released model (a warm chain).
GROUP_KEYS = ("dataset", "arch", "start", "schedule", "scheme", "bits")
BASE_KEYS = ("dataset", "arch", "start", "schedule")  # a group's FP32 baseline shares these
RUN_KEYS = ("study", *GROUP_KEYS, "seed", "data")


def _read_json(path: Path) -> dict:
    return read_json(path, "re-run the job that writes it")


def _benchmark_seconds(path: Path) -> float | None:
    """Wall seconds from a Snakemake benchmark file (column ``s``), if there is one."""
    if not path.is_file():
        return None
    rows = list(csv.DictReader(io.StringIO(path.read_text()), delimiter="\t"))
    return float(rows[-1]["s"]) if rows and rows[-1].get("s") not in (None, "", "NA") else None


def run_records(study: dict, results: ResultsLayout, benchmarks: Path | None) -> list[dict]:
    """One record per run the preset defines, in matrix order."""
    config, skipped = study["config"], study.get("skipped", {})
    skipped_studies = study.get("skipped_studies", {})
    records = []
    for run in expand_runs(config):
        record = {key: getattr(run, key) for key in RUN_KEYS}
        record["path"] = run.path
        metrics_path = Path(results.run_file(run.path, RUN_METRICS))
        if run.data in skipped:
            record["status"] = skipped[run.data]
        elif run.study in skipped_studies:
            record["status"] = skipped_studies[run.study]
        elif metrics_path.is_file():
            metrics = _read_json(metrics_path)
            record["status"] = "done"
            for key in ("best_top1", "best_epoch", "final_top1", "final_top5", "epochs",
                        "wall_seconds", "device", "init", "data_source", "started_from",
                        "quantizer_rules"):
                record[key] = metrics.get(key)
            # which processes (host, SLURM job) trained which epochs; absent before 0.1
            record["executions"] = metrics.get("executions", [])
            kept = metrics.get("predictions") or {}
            # best.pt's per-image test predictions (apot.engine.predictions), for paired comparisons
            record["predictions"] = str(metrics_path.with_name(PREDICTIONS)) if kept else None
            record["test_images"] = kept.get("images")
            bench = Path(benchmark_file(benchmarks, run.path)) if benchmarks else None
            record["job_seconds"] = _benchmark_seconds(bench) if bench else None
            cost_path = metrics_path.with_name(RUN_COST)
            record["cost"] = _run_cost(_read_json(cost_path)) if cost_path.is_file() else None
            packed_path = metrics_path.with_name(PACKED_RESULT)
            record["packed"] = (_packed(_read_json(packed_path)) if packed_path.is_file()
                                else None)
            onnx_path = metrics_path.with_name(ONNX_RESULT)
            record["onnx"] = _onnx(_read_json(onnx_path)) if onnx_path.is_file() else None
        else:
            record["status"] = "missing: the run has not completed"
        records.append(record)
    return records


def _packed(export: dict) -> dict:
    """A run's packed model (``apot export``): its size against the float32 state dict, and
    the check of its predictions against the checkpoint's."""
    return {"packed_bytes": export["packed_bytes"], "float32_bytes": export["float32_bytes"],
            "size_ratio": export["size_ratio"], "verify": export.get("verify")}


def _onnx(export: dict) -> dict:
    """A run's ONNX model (``apot export --format onnx``): its form and size, and its check in
    ONNX Runtime (top-1 beside the checkpoint's, speed against float32, the CPU)."""
    return {"onnx_form": export["onnx_form"], "onnx_bytes": export["onnx_bytes"],
            "float32_bytes": export["float32_bytes"], "verify": export.get("verify")}


def authors_evaluations(study: dict, results: ResultsLayout) -> dict:
    """The authors' checkpoints as evaluated by the eval_authors rule: which were found, and
    per bit-width top-1/top-5 on this preset's CIFAR-10 test split."""
    found = study.get("authors_bits", [])
    data = study.get("authors_data")
    # always there (maybe empty), so that DVC can version it as an output of the study stage
    Path(results.authors_dir).mkdir(parents=True, exist_ok=True)
    Path(results.starts_dir).mkdir(parents=True, exist_ok=True)  # likewise the staged starts
    evals = []
    for bits in found:
        path = Path(results.authors_result(bits))
        if path.is_file():
            result = _read_json(path)
            predictions = Path(results.authors_predictions(bits))
            evals.append({"bits": bits, **{k: result.get(k) for k in (
                "top1", "top5", "n", "checkpoint", "checkpoint_sha256", "split")},
                "predictions": str(predictions) if predictions.is_file() else None})
    return {"found": found, "evals": evals, "data": data}


def _run_cost(cost: dict) -> dict:
    """Per quantized MAC, over the levels the run's best weights use (``apot cost``)."""
    macs = cost["quantized_macs"]
    return {"fixops": cost["fixops"], "weight_usage": cost["weight_usage"],
            "shifts_per_mac": round(cost["shifts"]["expected"] / macs, 4),
            "shifts_per_mac_worst": round(cost["shifts"]["worst"] / macs, 4),
            "adds_per_mac": round(cost["adds"]["expected"] / macs, 4)}


METRICS = ("best_top1", "final_top1")


def group_records(records: list[dict]) -> list[dict]:
    """Runs grouped over seeds (mean, sample std, n of each metric), with the accuracy drop
    against the group's FP32 baseline (positive drop = the quantized model is worse), and the
    evidence behind them: prepared dataset, data source kinds, seeds. Groups keep the order of
    their first run; a group with no completed run carries that run's status."""
    import pandas as pd

    runs = pd.DataFrame([{**{k: r.get(k) for k in (*GROUP_KEYS, *METRICS)},
                          "status": _usable_status(r)} for r in records],
                        columns=[*GROUP_KEYS, "status", *METRICS])
    if runs.empty:
        return []
    keys = list(GROUP_KEYS)
    done = runs[runs["status"] == "done"].astype({m: float for m in METRICS})
    stats = done.groupby(keys, sort=False)[list(METRICS)].agg(["mean", "std", "count"])
    base_at = [GROUP_KEYS.index(k) for k in BASE_KEYS]
    base_mean = {tuple(key[i] for i in base_at): row for key, row in stats.iterrows()
                 if key[GROUP_KEYS.index("scheme")] == FLOAT
                 and key[GROUP_KEYS.index("bits")] == FLOAT_BITS}
    rows = []
    for key, first in runs.drop_duplicates(keys).set_index(keys)["status"].items():
        row = {**dict(zip(GROUP_KEYS, key)), "bits": int(key[GROUP_KEYS.index("bits")])}
        members = [r for r in records if tuple(r[k] for k in GROUP_KEYS) == key]
        failed = _failed_seeds(members)
        row["status"] = ("done" if key in stats.index and not failed
                         else _partial(failed, members) if key in stats.index else first)
        row["failed_seeds"] = failed
        is_base = row["scheme"] == FLOAT and row["bits"] == FLOAT_BITS
        ref = None if is_base else base_mean.get(tuple(key[i] for i in base_at))
        for metric in METRICS:
            if key not in stats.index:
                row[metric] = {"mean": None, "std": None, "n": 0, "drop": None}
                continue
            mean, std, n = (stats.loc[key, (metric, part)] for part in ("mean", "std", "count"))
            ref_mean = None if ref is None else ref[(metric, "mean")]
            row[metric] = {"mean": round(float(mean), 4),
                           "std": round(float(std), 4) if n > 1 else 0.0, "n": int(n),
                           "drop": None if ref_mean is None else round(float(ref_mean - mean), 4)}
        row.update(_group_evidence(members))
        rows.append(row)
    return rows


def _usable_status(record: dict) -> str:
    """A run's status for its group's statistics: a collapsed run is left out."""
    return "collapsed" if record.get("collapsed") else record["status"]


def _failed_seeds(members: list[dict]) -> list[dict]:
    """The seeds of a group that ran but give no result: not completed, or collapsed. Runs of
    a left-out dataset or study did not fail (they were not run), nor does a group whose runs
    all wait to be trained."""
    if not any(r["status"] == "done" for r in members):
        return []
    return [{"seed": r["seed"], "why": r.get("collapse") or r["status"]} for r in members
            if r["status"] != "done" or r.get("collapsed")]


def _partial(failed: list[dict], members: list[dict]) -> str:
    seeds = ", ".join(str(f["seed"]) for f in failed)
    return (f"partial: {len(members) - len(failed)} of {len(members)} seeds usable "
            f"(seed {seeds}: {'; '.join(f['why'] for f in failed)})")


def mark_collapsed(records: list[dict], data: dict) -> None:
    """Flag each completed run whose best top-1 is at or below chance plus 2 binomial standard
    errors of its test images (apot.reporting.noise): it learnt nothing measurable (a run can collapse
    without a NaN), and its group's statistics leave it out."""
    for record in records:
        classes = len((data.get(record["data"]) or {}).get("classes") or [])
        images = record.get("test_images") or (
            ((data.get(record["data"]) or {}).get("counts") or {}).get("test"))
        if record["status"] != "done" or not classes or not images:
            continue
        limit = chance_margin(classes, images)
        record["collapsed"] = record["best_top1"] <= limit
        if record["collapsed"]:
            record["collapse"] = (f"collapsed: best top-1 {record['best_top1']:.2f} is at or "
                                  f"below chance plus noise ({limit:.2f} for {classes} classes "
                                  f"and {images} test images)")


def _group_evidence(members: list[dict]) -> dict:
    """What a group's numbers rest on: its prepared dataset(s), the kinds of data source its
    completed runs read (mirror = the offline JPEG copy, download = the official files), their
    seeds and epochs, and the released model the chain started from."""
    done = [r for r in members if r["status"] == "done"]
    starts = {(r.get("started_from") or {}).get("origin", {}).get("kind") for r in done}
    return {"data": sorted({r["data"] for r in members}),
            "data_source": sorted({r.get("data_source") or "unknown" for r in done}),
            "seeds": sorted(r["seed"] for r in done),
            "epochs": sorted({r.get("epochs") for r in done if r.get("epochs") is not None}),
            "started_from": sorted(s for s in starts if s)}


def tracked_accuracy(records: list[dict]) -> dict:
    """accuracy.json, the file `dvc metrics` tracks: the mean best and final top-1 of every
    group's completed runs, as measured (a collapsed run too: the verdicts leave it out, a
    record of what each run reached keeps it)."""
    by_group: dict[str, list[dict]] = {}
    for record in records:
        if record["status"] == "done":
            by_group.setdefault(group_name(record), []).append(record)
    return {name: {metric: round(sum(r[metric] for r in done) / len(done), 4)
                   for metric in METRICS} for name, done in by_group.items()}


def group_name(row: dict) -> str:
    """A summary row's (group or run) chain step: apot.workflow.study.group_path."""
    return group_path(row["dataset"], row["arch"], row["schedule"], row["scheme"], row["bits"],
                      row.get("start", SCRATCH))


def histories(records: list[dict], results: ResultsLayout) -> list[dict]:
    rows = []
    for record in records:
        path = Path(results.run_file(record["path"], HISTORY))
        if record["status"] != "done" or not path.is_file():
            continue
        for entry in csv.DictReader(io.StringIO(path.read_text())):
            rows.append({"run": record["path"], **{k: record[k] for k in RUN_KEYS}, **entry})
    return rows


def _csv_text(rows: list[dict], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def check_whole(records: list[dict], results: ResultsLayout, runs: dict | None = None) -> None:
    """Refuse to aggregate a completed run whose files fail their checks (apot.storage.integrity), or
    whose recorded config is not the study's (``runs``: path -> RunSpec): results of two
    configurations are never mixed."""
    refused = []
    for record in records:
        if record["status"] != "done":
            continue
        folder = results.run_dir(record["path"])
        run = (runs or {}).get(record["path"])
        problems = [*(run_problems(run, results) if run is not None else check_run(folder)),
                    *check_packed(folder), *check_onnx(folder)]
        if problems:
            refused.append(f"{record['path']} ({'; '.join(problems)})")
    if refused:
        raise UserError(f"{len(refused)} run(s) under {results.runs_dir} cannot be summarized: "
                        f"{', '.join(refused)}; run the workflow again: it redoes them")


def summarize(study: dict, results: str | Path, benchmarks: str | Path | None = None,
              cost: str | Path | None = None) -> dict:
    """Write summary.json/.csv, accuracy.json and histories.csv under ``results``; returns a
    short account (counts) for the command line. ``cost``: the cost tables (``apot
    cost-tables``), copied into the summary so that the report reads one file."""
    results = ResultsLayout(str(results))
    # fills any default the caller left out (runtime keys too: dropped again below)
    config = validate_config(copy.deepcopy(study["config"]))
    preset = config["presets"][config["preset"]]
    records = run_records(study, results, Path(benchmarks) if benchmarks else None)
    check_whole(records, results, {run.path: run for run in expand_runs(config)})
    data = {}
    for dataset in preset["datasets"]:
        folder = Path(results.data_dir(dataset))
        data[dataset] = (load_manifest(folder) if (folder / MANIFEST).is_file()
                         else {"status": study.get("skipped", {}).get(dataset, "not prepared")})
    mark_collapsed(records, data)
    groups = group_records(records)
    history_rows = histories(records, results)
    curves: dict[str, list[float]] = {}
    for row in history_rows:
        curves.setdefault(row["run"], []).append(float(row["test_top1"]))
    for record in records:
        record["curve"] = curves.get(record["path"])  # test top-1 per epoch, for the figures
        curve = record["curve"] or []
        # what the last epoch still gained (points): a model still improving has not converged
        record["last_gain"] = round(curve[-1] - curve[-2], 4) if len(curve) > 1 else None
    summary = {"preset": config["preset"], "description": preset["description"],
               "full_scale": preset["full_scale"], "config": result_config(config),
               "data": data,
               "runs": records, "groups": groups, "provenance": provenance(records),
               "cost": _read_json(Path(cost)) if cost else None,
               "authors": authors_evaluations(study, results)}
    write_json(results.summary("json"), summary, sort_keys=True)
    flat = [{**{k: g[k] for k in (*GROUP_KEYS, "status")},
             **{f"{m}_{s}": g[m][s] for m in METRICS for s in ("mean", "std", "n", "drop")},
             # the cost model's FixOPs per image beside the accuracy
             "fixops": group_fixops(g, summary["cost"])}
            for g in groups]
    write_text_atomic(results.summary("csv"), _csv_text(flat, list(flat[0]) if flat else []))
    accuracy = tracked_accuracy(records)
    write_json(results.preset_file(ACCURACY), accuracy)
    write_text_atomic(results.preset_file(HISTORIES),
                      _csv_text(history_rows, ["run", *RUN_KEYS, *sorted(HISTORY_FIELDS)]))
    done = sum(r["status"] == "done" for r in records)
    return {"runs": len(records), "done": done, "not_run": len(records) - done,
            "summary": results.summary("json")}


def group_fixops(group: dict, cost: dict | None) -> float | None:
    """The cost model's FixOPs per image of a group's model (``cost``: cost.json), or None. An
    FP32 group's model is its architecture's float model, which the study table lists once,
    under apot (apot.deploy.cost.cost_tables)."""
    if cost is None:
        return None
    scheme = APOT if group["scheme"] == FLOAT else group["scheme"]
    return next((r["fixops"] for r in cost["study"]
                 if (r["arch"], r["bits"], r["scheme"]) == (group["arch"], group["bits"], scheme)),
                None)


def provenance(records: list[dict]) -> dict:
    """Code, software and hardware facts of this summary, and the compute the runs used."""
    import os
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    from apot import __version__

    def installed(package: str) -> str:
        try:  # the installed version, without importing the package (torchvision: seconds)
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    done = [r for r in records if r["status"] == "done"]
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD") or "unknown (not a git checkout)",
            "git_dirty": bool(status) if status is not None else None,
            "apot_version": __version__, "python": platform.python_version(),
            "torch": installed("torch"), "torchvision": installed("torchvision"),
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "training_devices": sorted({r["device"] for r in done if r.get("device")}),
            "runs_done": len(done),
            "train_seconds": round(sum(r.get("wall_seconds") or 0 for r in done), 1),
            "job_seconds": round(sum(r.get("job_seconds") or 0 for r in done), 1),
            "starts": released_starts(done), **where_trained(done)}


def released_starts(done: list[dict]) -> list[dict]:
    """The released models the completed chains started from: the staged file, its sha256 and
    its origin (the released file or URL and its sha256), once each."""
    found = {}
    for record in done:
        started = record.get("started_from") or {}
        origin = started.get("origin")
        if origin:
            found[started["sha256"]] = {
                "staged": started["file"], "staged_sha256": started["sha256"],
                **{k: origin.get(k) for k in ("kind", "file", "url", "sha256", "weights")}}
    return sorted(found.values(), key=lambda s: s["staged"])


def where_trained(done: list[dict]) -> dict:
    """Hosts and SLURM jobs that trained the completed runs, from their recorded executions."""
    executions = [e for r in done for e in r.get("executions", [])]
    return {"training_hosts": sorted({e["host"] for e in executions}),
            "slurm_jobs": len({e["slurm_job_id"] for e in executions if e["slurm_job_id"]}),
            "slurm_runs": sum(any(e["slurm_job_id"] for e in r.get("executions", []))
                              for r in done),
            "resumed_runs": sum(len(r.get("executions", [])) > 1 for r in done)}


def write_cost_tables(study: dict, out: Path) -> dict:
    """results/<preset>/cost.json: the report's cost tables (apot.deploy.cost.cost_tables) of
    every model the study ``study`` (read_study) trains."""
    from apot.deploy.cost import cost_tables  # torch: only this job needs it

    config = study["config"]
    preset = config["presets"][config["preset"]]
    models = {(run.arch, run.bits) for run in expand_runs(config)}
    tables = cost_tables(sorted(models), preset["k"], preset["first_last"])
    write_json(out, tables, sort_keys=True)
    return {"out": str(out), "paper_rows": len(tables["paper"]),
            "study_rows": len(tables["study"])}
