"""DVC versions the study: `dvc repro` runs the smoke preset through Snakemake in a fresh git
repository (one that holds the session's smoke study but for one run, which it trains
again), `dvc checkout` restores a deleted checkpoint byte for byte without making
Snakemake retrain, and `dvc push` / `dvc pull` + `snakemake --touch` give a second clone the
results with nothing left to run."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
from workflow import (BIN, copy_study, dvc, edit_config, git, job_counts, nothing_to_do, run,
                      snakemake)

RUN = "results/smoke/runs/cifar10/resnet20/multistep/apot-w4/seed0"
DROPPED = "cifar10/resnet20/cosine/apot-w2"  # the run that dvc repro trains again


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, shared_data, smoke_study):
    """A git repository holding the workflow, set to the smoke preset, after `dvc repro`. Its
    folder is a copy of the session's smoke study without one run (git ignores the results;
    DVC has recorded none of them), so that `dvc repro` runs Snakemake for real, which trains
    that run again and redoes what depends on it."""
    base = tmp_path_factory.mktemp("dvc")
    repo = copy_study(smoke_study.folder, base / "repo", drop=(DROPPED,))
    edit_config(repo, preset="smoke", on_missing_data="skip")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "study")
    # the test's own remote, so that it never writes to the user's ~/.cache
    dvc(repo, "remote", "modify", "--local", "local", "url", str(base / "storage"))
    done = dvc(repo, "repro", APOT_DATA_MIRROR=str(shared_data), timeout=1200)
    return repo, done.stdout + done.stderr


def test_dvc_repro_runs_the_smoke_study(repo):
    folder, output = repo
    counts = job_counts(output)
    assert "train_fp32" not in counts and counts["train_quantized"] == 1  # the dropped run
    assert counts["summarize"] == 1
    assert len(list((folder / "results/smoke/runs").rglob("metrics.json"))) == 12
    assert (folder / "results/smoke/runs" / DROPPED / "seed0/cost.json").is_file()
    assert (folder / "dvc.lock").is_file()
    for name in ("report.html", "report.pdf"):
        assert (folder / "report/build/smoke" / name).stat().st_size > 1000
    assert (folder / RUN / "checkpoint.pt").is_file()
    lock = (folder / "dvc.lock").read_text()
    assert "results/smoke/runs" in lock and "report/build" in lock


def test_metrics_and_plots_are_declared(repo, shared_data):
    folder, _ = repo
    metrics = json.loads(dvc(folder, "metrics", "show", "--json").stdout)
    accuracy = next(iter(metrics.values()))["data"]["results/smoke/accuracy.json"]["data"]
    assert set(accuracy["cifar10/resnet20/multistep/apot-w4"]) == {"best_top1", "final_top1"}
    assert len(accuracy) == 12
    plots = dvc(folder, "plots", "show", "--json").stdout
    assert "results/smoke/histories.csv" in plots and "test_top1" in plots


def test_plots_page_draws_offline_with_the_projects_template(repo, tmp_path):
    """dvc plots show with the template of apot dvc-plots-template: a page that loads nothing
    from the network (DVC's own loads vega from a CDN), one line per run."""
    folder, _ = repo
    template = tmp_path / "dvc-plots.html"
    run([str(BIN / "apot"), "dvc-plots-template", "--out", str(template)], folder)
    dvc(folder, "plots", "show", "--html-template", str(template), "-o", str(tmp_path / "page"))
    page = (tmp_path / "page/index.html").read_text()
    assert "vegaEmbed" in page and "cdn.jsdelivr" not in page
    assert not re.search(r"""(src|href)=["']https?:""", page)
    assert '"field": "run"' in page  # .dvc/plots/by_run.json: a line per run
    default = dvc(folder, "plots", "show", "-o", str(tmp_path / "default")).stdout
    assert "cdn.jsdelivr" in (tmp_path / "default/index.html").read_text(), default


def test_checkout_restores_a_deleted_checkpoint_and_snakemake_has_nothing_to_do(repo,
                                                                               shared_data):
    folder, _ = repo
    mirror = {"APOT_DATA_MIRROR": str(shared_data)}
    assert nothing_to_do(snakemake(folder, "-n", **mirror).stdout)
    files = [folder / RUN / "checkpoint.pt", folder / RUN / "best.pt"]
    before = [sha256(p) for p in files]
    for path in files:
        path.unlink()
    dvc(folder, "checkout")
    assert [sha256(p) for p in files] == before
    assert nothing_to_do(snakemake(folder, "-n", **mirror).stdout)
    assert "up to date" in dvc(folder, "status").stdout


def test_exp_run_selects_the_preset_through_config_params(repo):
    """`dvc exp run -S config.yaml:preset=smoke` on a workspace whose config names another
    preset selects the smoke study again: same params as dvc.lock, nothing to run."""
    folder, _ = repo
    edit_config(folder, preset="quick")
    assert "modified" in dvc(folder, "status").stdout  # the quick preset has not run
    done = dvc(folder, "exp", "run", "-S", "config.yaml:preset=smoke")
    output = done.stdout + done.stderr
    assert "didn't change, skipping" in output and "Running stage" not in output
    assert "preset: smoke" in (folder / "config.yaml").read_text()
    assert "up to date" in dvc(folder, "status").stdout


def test_push_then_pull_into_a_new_clone_needs_no_training(repo, tmp_path, shared_data):
    folder, _ = repo
    mirror = {"APOT_DATA_MIRROR": str(shared_data)}
    git(folder, "add", "-A")
    git(folder, "commit", "-qm", "results")
    dvc(folder, "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(folder), str(clone))
    remote = (folder / ".dvc/config.local").read_text().split("url = ")[1].strip()
    dvc(clone, "remote", "modify", "--local", "local", "url", remote)
    dvc(clone, "pull")
    assert sha256(clone / RUN / "best.pt") == sha256(folder / RUN / "best.pt")
    assert (clone / "report/build/smoke/report.pdf").is_file()
    # Pulled files carry new modification times in no particular order; Snakemake would
    # retrain on that alone. --touch marks them as up to date, as the README says.
    snakemake(clone, "--touch", **mirror)
    assert nothing_to_do(snakemake(clone, "-n", **mirror).stdout)
    assert "up to date" in dvc(clone, "status").stdout
