"""The results layout and the study file: one statement of where results live, a study file
rewritten only when it changes, and `apot train --study --run` and `apot export --study --run`
resolving a run from it."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from apot.cli import main
from apot.layout import (BEST, METRICS, PACKED, PACKED_RESULT, ResultsLayout,
                         write_text_if_changed)
from apot.quant.schemes import FLOAT
from apot.study import (PACKED_CHECK_PER_CLASS, expand_runs, export_settings, train_settings,
                        validate_config)

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
    assert (layout.logs, layout.benchmarks, layout.study) == (
        "logs/smoke", "benchmarks/smoke", "results/smoke/study.json")


def test_the_study_file_is_rewritten_only_when_its_content_changes(tmp_path):
    path = tmp_path / "results" / "p" / "study.json"
    assert write_text_if_changed(path, "{}\n")
    os.utime(path, ns=(1, 1))
    assert not write_text_if_changed(path, "{}\n")
    assert path.stat().st_mtime_ns == 1  # the same content: Snakemake sees nothing new
    assert write_text_if_changed(path, '{"a": 1}\n')
    assert path.read_text() == '{"a": 1}\n' and path.stat().st_mtime_ns != 1
    assert not list(path.parent.glob(".*.tmp"))


@pytest.fixture
def study_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = validate_config(copy.deepcopy(CONFIG) | {"preset": "smoke"})
    path = Path("results/smoke/study.json")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"config": config, "skipped": {}}))
    return path, expand_runs(config)


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


def test_export_resolves_its_run_from_the_study_file(study_file, capsys):
    path, runs = study_file
    run = next(run for run in runs if run.scheme != FLOAT)
    Path(f"results/smoke/runs/{run.path}").mkdir(parents=True)
    assert main(["export", "--study", str(path), "--run", run.path]) == 2
    # the checkpoint it looked for is the run's best weights, under the study file's folder
    assert (f"checkpoint results/smoke/runs/{run.path}/{BEST} does not exist"
            in capsys.readouterr().err)
    assert not Path(f"results/smoke/runs/{run.path}/{PACKED}").exists()


@pytest.mark.parametrize("extra, wanted", [
    (["--bits", "4"], "--bits: the study file defines the export"),
    (["--out", "x.safetensors", "--k", "1"], "--k, --out: the study file defines the export"),
    (["--no-study"], "--study and --run go together"),
])
def test_export_with_a_study_file_refuses_what_does_not_fit(study_file, capsys, extra, wanted):
    path, runs = study_file
    run = next(run for run in runs if run.scheme != FLOAT)
    args = ["--run", run.path] if extra == ["--no-study"] else [
        "--study", str(path), "--run", run.path, *extra]
    assert main(["export", *args]) == 2
    assert wanted in capsys.readouterr().err


def test_export_without_a_study_names_the_missing_flags(capsys):
    assert main(["export", "--arch", "resnet20", "--out", "x.safetensors"]) == 2
    assert ("give --bits, --checkpoint, or the run's --study file and --run"
            in capsys.readouterr().err)


@pytest.mark.parametrize("content, wanted", [
    (None, "cannot read --study"),
    ("{not json", "is not the study file the Snakefile writes"),
    ('{"skipped": {}}', "is not the study file the Snakefile writes"),
])
def test_a_bad_study_file_is_named(tmp_path, capsys, content, wanted):
    path = tmp_path / "study.json"
    if content is not None:
        path.write_text(content)
    assert main(["cost-tables", "--study", str(path), "--out", str(tmp_path / "c.json")]) == 2
    assert wanted in capsys.readouterr().err
