"""The results layout and the study file: one statement of where results live, a study file
named by its content (so that no invocation can change what another's jobs read), and `apot
train --study --run` and `apot export --study --run` resolving a run from it."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from apot.cli import main
from apot.engine.predictions import write_predictions
from apot.layout import BEST, METRICS, PACKED, PACKED_RESULT, PREDICTIONS, ResultsLayout
from apot.quant.schemes import FLOAT
from apot.workflow.study import (PACKED_CHECK_PER_CLASS, expand_runs, export_settings, read_study,
                                 study_record, train_settings, validate_config, write_study)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def test_a_run_and_its_start_are_where_the_layout_says():
    layout = ResultsLayout.of_preset("smoke")
    config = validate_config(copy.deepcopy(CONFIG) | {"preset": "smoke"})
    runs = expand_runs(config)
    child = next(run for run in runs if run.parent is not None)
    settings = train_settings(child, layout)
    assert settings["out"] == f"results/smoke/runs/{child.path}" == layout.run_dir(child.path)
    assert settings["init"] == layout.run_file(child.parent, BEST)
    assert settings["data"] == "results/smoke/data/" + child.data
    assert layout.run_file(child.path, METRICS) == f"results/smoke/runs/{child.path}/metrics.json"
    assert (layout.logs, layout.benchmarks, layout.study_file("0123")) == (
        "logs/smoke", "benchmarks/smoke", "results/smoke/studies/0123.json")
    assert ResultsLayout.of_study_file(layout.study_file("0123")) == layout


def smoke_record(**changes) -> dict:
    config = validate_config(copy.deepcopy(CONFIG) | {"preset": "smoke", **changes})
    return study_record(config, {}, {}, [], None)


def test_a_study_file_is_named_by_its_content_and_never_rewritten(tmp_path, monkeypatch):
    """Two configurations give two files; writing one again leaves it as it was (its time
    too: Snakemake sees nothing new), and the other is untouched."""
    monkeypatch.chdir(tmp_path)
    layout = ResultsLayout.of_preset("smoke")
    first = write_study(smoke_record(), layout)
    os.utime(first, ns=(1, 1))
    other = write_study(smoke_record(scheme_ablation=True), layout)
    assert other != first and Path(first).parent == Path(other).parent
    assert write_study(smoke_record(), layout) == first
    assert Path(first).stat().st_mtime_ns == 1
    assert read_study(first)["config"]["scheme_ablation"] is False
    assert read_study(other)["config"]["scheme_ablation"] is True
    assert not list(Path(first).parent.glob(".*.tmp"))


@pytest.fixture
def study_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = smoke_record()
    path = Path(write_study(record, ResultsLayout.of_preset("smoke")))
    return path, expand_runs(record["config"])


def test_train_resolves_its_run_from_the_study_file(study_file, capsys):
    path, runs = study_file
    code = main(["train", "--study", str(path), "--run", runs[0].path, "--device", "cpu"])
    # the settings came from the study: its prepared data, under the study file's folder
    assert code == 2
    assert f"results/smoke/data/{runs[0].data} is not a prepared dataset" in capsys.readouterr().err


@pytest.mark.parametrize("extra, wanted", [
    (["--run", None], "--study and --run go together"),
    (["--epochs", "3"], "--epochs: the study file defines the run"),
    (["--lr", "0.5", "--seed", "2"], "--lr, --seed: the study file defines the run"),
])
def test_train_with_a_study_file_refuses_what_does_not_fit(study_file, capsys, extra, wanted):
    path, runs = study_file
    extra = [] if extra == ["--run", None] else ["--run", runs[0].path, *extra]
    assert main(["train", "--study", str(path), *extra]) == 2
    assert wanted in capsys.readouterr().err


def test_train_names_a_run_the_study_does_not_have(study_file, capsys):
    path, _ = study_file
    assert main(["train", "--study", str(path), "--run", "cifar10/resnet99/x/seed0"]) == 2
    assert "run cifar10/resnet99/x/seed0 is not part of preset smoke" in capsys.readouterr().err


def test_train_without_a_study_names_the_missing_flags(capsys):
    assert main(["train", "--arch", "resnet20", "--data", "d"]) == 2
    assert "give --out, --epochs, or the run's --study file and --run" in capsys.readouterr().err


def test_an_export_is_of_the_run_folder_its_model_and_its_data():
    layout = ResultsLayout.of_preset("smoke")
    config = validate_config(copy.deepcopy(CONFIG) | {"preset": "smoke"})
    run = next(run for run in expand_runs(config) if run.scheme != FLOAT)
    settings = export_settings(run, layout)
    folder = f"results/smoke/runs/{run.path}"
    assert (settings["checkpoint"], settings["out"], settings["result"]) == (
        f"{folder}/{BEST}", f"{folder}/{PACKED}", f"{folder}/{PACKED_RESULT}")
    assert settings["verify_data"] == f"results/smoke/data/{run.data}"
    assert settings["verify_limit_per_class"] == PACKED_CHECK_PER_CLASS
    assert (settings["arch"], settings["bits"]) == (run.arch, run.bits)
    assert {settings[key] for key in ("scheme", "k", "first_last")} == {
        run.train[key] for key in ("scheme", "k", "first_last")}


def complete(run, **changes) -> None:
    """Write the metrics.json of a completed ``run`` (no files recorded), recording the
    study's settings of it with ``changes`` and its per-image predictions, as training does."""
    config = {**train_settings(run, ResultsLayout.of_preset("smoke")), **changes}
    path = Path(ResultsLayout.of_preset("smoke").run_file(run.path, METRICS))
    path.parent.mkdir(parents=True, exist_ok=True)
    predictions = write_predictions(path.with_name(PREDICTIONS), [0, 1, 2, 3], [0, 1, 3, 3],
                                    "test.pt sha256 0")
    path.write_text(json.dumps({"best_top1": 10.0, "files": {}, "config": config,
                                "predictions": predictions}))


def test_export_resolves_its_run_from_the_study_file(study_file, capsys):
    path, runs = study_file
    run = next(run for run in runs if run.scheme != FLOAT)
    complete(run)
    assert main(["export", "--study", str(path), "--run", run.path]) == 2
    # the checkpoint it looked for is the run's best weights, under the study file's folder
    assert (f"checkpoint results/smoke/runs/{run.path}/{BEST} does not exist"
            in capsys.readouterr().err)
    assert not Path(f"results/smoke/runs/{run.path}/{PACKED}").exists()


@pytest.mark.parametrize("command, extra, wanted", [
    ("export", ["--bits", "4"], "--bits: the study file defines the export"),
    ("export", ["--out", "x.safetensors", "--k", "1"],
     "--k, --out: the study file defines the export"),
    ("export", ["--no-study"], "--study and --run go together"),
    ("cost", ["--layers", "--scheme", "pot"], "--scheme, --layers: the study file defines the cost"),
    ("cost", ["--no-study"], "--study and --run go together"),
])
def test_a_job_with_a_study_file_refuses_what_does_not_fit(study_file, capsys, command, extra,
                                                            wanted):
    path, runs = study_file
    run = next(run for run in runs if run.scheme != FLOAT)
    args = ["--run", run.path] if extra == ["--no-study"] else [
        "--study", str(path), "--run", run.path, *extra]
    assert main([command, *args]) == 2
    assert wanted in capsys.readouterr().err


def test_a_cost_job_reads_its_run_from_the_study_file(study_file, capsys):
    """apot cost --study --run reads a trained run, as an export does: one that has not
    completed is refused (the smoke study's run_cost jobs run it on trained ones)."""
    path, runs = study_file
    run = next(run for run in runs if run.scheme != FLOAT)
    assert main(["cost", "--study", str(path), "--run", run.path]) == 2
    assert (f"run {run.path} has not completed (no metrics.json): train it first"
            in capsys.readouterr().err)


def test_export_without_a_study_names_the_missing_flags(capsys):
    assert main(["export", "--arch", "resnet20", "--out", "x.safetensors"]) == 2
    assert ("give --bits, --checkpoint, or the run's --study file and --run"
            in capsys.readouterr().err)


def named(folder: Path, text: str) -> Path:
    """A file under ``folder``/studies named as the Snakefile names ``text``."""
    from apot.workflow.study import study_digest
    path = folder / "studies" / f"{study_digest(text)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("make, wanted", [
    (lambda d: d / "studies" / "0123456789abcdef.json", "cannot read --study"),
    (lambda d: named(d, "{not json"), "is not the study file the Snakefile writes"),
    (lambda d: named(d, '{"skipped": {}}'), "is not the study file the Snakefile writes"),
    (lambda d: named(d, "\xff".encode("latin-1").decode("latin-1")),
     "is not the study file the Snakefile writes"),
    # a study file edited by hand: its content is no longer the one its name records
    (lambda d: Path(str(named(d, "{}\n"))).write_text("{ }\n") and
     next((d / "studies").glob("*.json")), "does not hold the content its name records"),
    # any other name, the old results/<preset>/study.json among them
    (lambda d: (d / "study.json", (d / "study.json").write_text("{}"))[0], "is not a study file"),
])
def test_a_bad_study_file_is_named(tmp_path, capsys, make, wanted):
    path = make(tmp_path)
    assert main(["cost-tables", "--study", str(path), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert wanted in err and len(err.strip().splitlines()) == 1, err


def test_export_refuses_a_run_trained_with_other_settings(study_file, capsys):
    path, runs = study_file
    run = next(run for run in runs if run.scheme != FLOAT)
    assert main(["export", "--study", str(path), "--run", run.path]) == 2
    assert f"run {run.path} has not completed (no metrics.json)" in capsys.readouterr().err
    complete(run, lr=0.5, seed=7)
    assert main(["export", "--study", str(path), "--run", run.path]) == 2
    err = capsys.readouterr().err
    assert (f"run {run.path}: it was trained with other settings than the study's (lr 0.5 "
            f"there, {run.train['lr']!r} in the study, seed 7 there, 0 in the study)") in err
    assert f"--study {path}; run snakemake again" in err


def test_export_refuses_a_run_that_kept_no_predictions(study_file, capsys):
    """A run completed before apot kept per-image predictions is not exported (nor started
    from) until `apot train` has written them: the verdicts pair models image by image."""
    path, runs = study_file
    run = next(run for run in runs if run.scheme != FLOAT)
    complete(run)
    metrics = Path(ResultsLayout.of_preset("smoke").run_file(run.path, METRICS))
    old = json.loads(metrics.read_text())
    del old["predictions"]
    metrics.write_text(json.dumps(old))
    assert main(["export", "--study", str(path), "--run", run.path]) == 2
    assert (f"run {run.path}: its metrics.json records no per-image predictions"
            in capsys.readouterr().err)


def test_train_refuses_to_start_from_a_run_of_other_settings(study_file, capsys):
    """A chain's step starts from its parent's best weights only if the parent completed with
    the study's settings of it (a dry run of another config cannot slip a parent in)."""
    path, runs = study_file
    child = next(run for run in runs if run.parent is not None)
    parent = next(run for run in runs if run.path == child.parent)
    args = ["train", "--study", str(path), "--run", child.path, "--device", "cpu"]
    assert main(args) == 2
    assert (f"run {parent.path} has not completed (no metrics.json): train it first"
            in capsys.readouterr().err)
    complete(parent, epochs=parent.train["epochs"] + 1)
    assert main(args) == 2
    assert (f"run {parent.path}: it was trained with other settings than the study's (epochs "
            f"{parent.train['epochs'] + 1} there, {parent.train['epochs']} in the study)"
            in capsys.readouterr().err)
    complete(parent)
    assert main(args) == 2  # past the check: now its prepared data is what is missing
    assert "is not a prepared dataset" in capsys.readouterr().err


@pytest.mark.parametrize("change, differing", [
    ({}, set()),
    ({"lr": 0.5}, {"lr"}),
    ({"milestones": [1]}, {"milestones"}),
    ({"out": "/elsewhere/run"}, set()),  # the folder the record is in
    ({"data": "./results/smoke/data/../data/cifar10"}, set()),  # the same folder, respelled
    ({"data": "results/smoke/data/cifar100"}, {"data"}),
    ({"init": None}, {"init"}),
    ({"init": "results/smoke/runs/other/best.pt"}, {"init"}),
])
def test_a_recorded_config_is_compared_by_value_and_paths_by_place(change, differing):
    from apot.workflow.study import recorded_differences
    layout = ResultsLayout.of_preset("smoke")
    config = smoke_record()["config"]
    run = next(run for run in expand_runs(config) if run.parent is not None
               and run.data == "cifar10")
    recorded = {**train_settings(run, layout), **change}
    assert set(recorded_differences(run, layout, recorded)) == differing
