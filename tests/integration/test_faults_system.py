"""Fault injection in processes and the file system: a dry run of another config beside a
running workflow, two writers on one run, a writer killed
while holding its lock, a full disk (a real 3 MB tmpfs where one can be mounted, an injected
ENOSPC everywhere), bad --out paths, failures that must leave no empty folder, a diverging
loss, moved and re-spelled run folders, a changed start, damaged run files, and the workflow
redoing a run whose files were lost. tests/unit/test_faults_inputs.py injects faults in inputs
(archives, checkpoints, summary.json, config.yaml); tests/unit/test_train.py kills runs
mid-epoch (SIGKILL, SIGTERM) at one thread and at the core count."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from workflow import (CHANGED_RUNS, CHANGED_STEP, REPO, SMOKE, job_counts, nothing_to_do, snakemake,
                      study_file, write_changed_config)

from apot import layout
from apot.cli import main
from apot.engine.config import TrainConfig
from apot.engine.train import Run, train
from apot.errors import UserError
from apot.layout import BEST, CHECKPOINT, HISTORY, METRICS, PENDING_BEST
from apot.storage.checkpoints import load_file
from apot.storage.integrity import check_run
from apot.storage.lock import LOCK_NAME, exclusive


@pytest.fixture(scope="module")
def data(synthetic_data) -> Path:
    return synthetic_data


def config(data: Path, out: Path, **changes) -> TrainConfig:
    base = TrainConfig(arch="resnet20", data=str(data), out=str(out), epochs=1, batch_size=48,
                       lr=0.05, milestones=[], progress=False, device="cpu", threads=1)
    return replace(base, **changes)


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--arch", "resnet20", "--data", str(data), "--out", str(out),
            "--batch-size", "48", "--milestones", "--device", "cpu", "--threads", "1",
            "--no-progress", *extra]


def apot(*args: str) -> list[str]:
    return [sys.executable, "-m", "apot", *args]


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if ": error: " in line]


def wait_for_holder(lock: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (lock.is_file() and lock.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, "no lock was taken"
        time.sleep(0.02)


class _Stop(Exception):
    pass


# ---------------------------------------------------------------- one writer per folder

def test_two_writers_on_one_run_one_trains_the_other_names_the_holder(data, tmp_path):
    """The second writer stops at once; the first (long enough to be still training, then
    stopped by SIGTERM) is the only one that wrote into the folder."""
    out = tmp_path / "run"
    first = subprocess.Popen(apot(*train_args(data, out, "--epochs", "50", "--lr", "0.05")),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_holder(out / LOCK_NAME, first)
        second = subprocess.run(apot(*train_args(data, out, "--epochs", "50", "--lr", "0.1")),
                                capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first writer ended too early"
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT).exists():  # it has saved an epoch of its own
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGTERM)
        first_err = first.communicate(timeout=300)[1]
    assert second.returncode == 2
    [line] = error_lines(second.stderr)
    assert f"run folder {out} is in use by host {socket.gethostname()}, pid {first.pid}" in line
    assert first.returncode == 128 + signal.SIGTERM, first_err
    assert "error" not in first_err
    assert load_file(out / CHECKPOINT)["config"]["lr"] == 0.05  # the first writer's run only
    assert (out / LOCK_NAME).read_text() == ""  # released


def test_a_killed_writers_lock_is_taken_over(data, tmp_path):
    out = tmp_path / "run"
    command = apot(*train_args(data, out, "--epochs", "1"))
    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_holder(out / LOCK_NAME, killed)
    killed.kill()
    killed.wait()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (f"taking over the lock of {out} left by host {socket.gethostname()}, pid "
            f"{killed.pid}") in done.stderr
    assert json.loads((out / METRICS).read_text())["epochs"] == 1


def test_a_dataset_being_prepared_is_locked(tmp_path, capsys):
    out = tmp_path / "prepared"
    with exclusive(out, "prepared dataset"):
        assert main(["prepare-data", "--dataset", "synthetic", "--out", str(out),
                     "--train-per-class", "2", "--test-per-class", "2"]) == 2
        [line] = error_lines(capsys.readouterr().err)
        assert f"pid {os.getpid()}" in line and "prepared dataset folder" in line
        assert not (out / "manifest.json").exists()
    assert main(["prepare-data", "--dataset", "synthetic", "--out", str(out),
                 "--train-per-class", "2", "--test-per-class", "2"]) == 0


# ---------------------------------------------------------------- the file system

@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A tmpfs mounted at ``folder`` with ``options`` (the test is skipped where mounting is
    not allowed: it needs root)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def tmpfs_3mb(tmp_path):
    with tmpfs(tmp_path / "tmpfs", "size=3m") as folder:
        yield folder


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(data, tmpfs_3mb):
    """A float ResNet-20 without momentum: checkpoint.pt and best.pt (about 1.1 MB each) fit
    in 3 MB once; the second epoch's new files do not."""
    out = tmpfs_3mb / "run"
    done = subprocess.run(apot(*train_args(data, out, "--epochs", "2", "--momentum", "0")),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    [line] = error_lines(done.stderr)
    assert line.startswith("apot train: error: no space left on device (")
    assert str(out) in line and "files written before are intact" in line
    assert load_file(out / CHECKPOINT)["epoch"] == 1
    load_file(out / BEST)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [LOCK_NAME, CHECKPOINT, BEST, HISTORY])  # no temporary or pending file left


def test_a_read_only_file_system_is_one_line(data, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        done = subprocess.run(apot(*train_args(data, folder / "run", "--epochs", "1")),
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    [line] = error_lines(done.stderr)
    assert line == (f"apot train: error: read-only file system ({folder / 'run'}); that file "
                    f"system is read-only: write elsewhere")


def test_no_space_left_at_any_write_is_one_line_and_cleaned_up(data, tmp_path, capsys,
                                                                  monkeypatch):
    """The same, injected (no mount needed): the fourth fsync of the run (epoch 2's first
    file) fails as a full disk does."""
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)
    monkeypatch.setattr(layout.os, "fsync", fsync)
    out = tmp_path / "run"
    assert main(train_args(data, out, "--epochs", "2")) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith("apot train: error: no space left on device (")
    assert str(out) in line
    assert load_file(out / CHECKPOINT)["epoch"] == 1
    assert not list(out.glob(".*.tmp")) and not (out / PENDING_BEST).exists()
    monkeypatch.setattr(layout.os, "fsync", real_fsync)
    assert main(train_args(data, out, "--epochs", "2")) == 0  # space again: it resumes
    assert "resuming after epoch 1 of 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    train(config(data, out))
    return out


def eval_args(data: Path, trained: Path, out: Path) -> list[str]:
    return ["eval", "--arch", "resnet20", "--bits", "32", "--checkpoint", str(trained / BEST),
            "--data", str(data), "--device", "cpu", "--out", str(out)]


def test_eval_out_is_checked_before_the_evaluation(data, trained, tmp_path, capsys):
    assert main(eval_args(data, trained, tmp_path / "no/such/dir/x.json")) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert f"folder {tmp_path / 'no/such/dir'} does not exist" in line
    assert not (tmp_path / "no").exists() and list(tmp_path.iterdir()) == []
    assert main(eval_args(data, trained, tmp_path)) == 2
    assert "is a folder; name a file" in capsys.readouterr().err
    existing = tmp_path / "x.json"
    existing.write_text("old")
    assert main(eval_args(data, trained, existing)) == 0
    assert json.loads(existing.read_text())["checkpoint"] == str(trained / BEST)


def test_an_evaluation_whose_write_fails_is_printed(data, trained, tmp_path, capsys,
                                                    monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.json"))
    monkeypatch.setattr(layout, "write_bytes_atomic", full)
    assert main(eval_args(data, trained, tmp_path / "x.json")) == 1
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # the result, not lost: the run's best, evaluated again
    recorded = json.loads((trained / METRICS).read_text())
    assert printed["checkpoint"] == str(trained / BEST) and printed["n"] > 0
    assert printed["top1"] == pytest.approx(recorded["best_top1"], abs=1e-9)
    [line] = error_lines(captured.err)
    assert f"no space left on device ({tmp_path / 'x.json'})" in line


def test_out_naming_a_file_is_one_line(data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["prepare-data", "--dataset", "synthetic", "--out", str(blocker)]) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert line == (f"apot prepare-data: error: file exists ({blocker}); a file is in the "
                    f"way: remove it or choose another path")
    assert main(train_args(data, blocker / "run", "--epochs", "1")) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert "not a directory" in line and str(blocker) in line
    assert blocker.read_text() == "not a folder"


def test_failures_leave_no_empty_output_folder(data, tmp_path, capsys):
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    assert main(["prepare-data", "--dataset", "cifar10", "--mirror", str(empty_mirror),
                 "--out", str(tmp_path / "prepared")]) == 2
    assert "has no cifar-10-images.tar.gz" in capsys.readouterr().err
    assert not (tmp_path / "prepared").exists()
    assert main(train_args(tmp_path / "nothing", tmp_path / "run", "--epochs", "1")) == 2
    assert "is not a prepared dataset" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- divergence

def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_epoch(data, tmp_path, capsys,
                                                                      monkeypatch):
    real_test = Run.test

    def nan_in_epoch_2(self):
        result, predictions = real_test(self)
        return ({**result, "test_loss": float("nan")} if self.epoch == 1 else result,
                predictions)
    monkeypatch.setattr(Run, "test", nan_in_epoch_2)
    out = tmp_path / "run"
    assert main(train_args(data, out, "--epochs", "3")) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert f"run {out} diverged in epoch 2: the test loss is nan" in line
    assert "its files keep epoch 1" in line
    assert load_file(out / CHECKPOINT)["epoch"] == 1 and not (out / METRICS).exists()


def test_a_real_divergence_exits_non_zero_and_writes_no_nan(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(data, out, "--epochs", "2", "--lr", "1e30")) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert "diverged in epoch 1: the training loss is" in line
    # nothing was saved, and the folder this call made is gone: no "files keep epoch 0"
    assert "no epoch completed, so nothing of it was saved" in line and "keep" not in line
    assert not out.exists()


# ---------------------------------------------------------------- what a run is

def stop_after_epoch_1(monkeypatch) -> None:
    original = Run.train_epoch

    def stop(self):
        if self.epoch == 1:
            raise _Stop
        return original(self)
    monkeypatch.setattr(Run, "train_epoch", stop)


def test_a_moved_and_respelled_run_resumes(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(data, "syn")
    with monkeypatch.context() as patch:
        stop_after_epoch_1(patch)
        with pytest.raises(_Stop):
            train(config(Path("syn"), Path("first"), epochs=2))
    shutil.move("first", "moved")
    capsys.readouterr()
    metrics = train(config(Path("./syn/"), tmp_path / "moved", epochs=2))
    assert "resuming after epoch 1 of 2" in capsys.readouterr().err
    whole = train(config(Path("syn"), Path("whole"), epochs=2))
    assert metrics["final_top1"] == whole["final_top1"]
    assert metrics["final_test_loss"] == whole["final_test_loss"]


def test_a_changed_start_is_refused_or_restarted(data, tmp_path, capsys):
    parent_a, parent_b = tmp_path / "a", tmp_path / "b"
    train(config(data, parent_a))
    train(config(data, parent_b, seed=1))
    start = tmp_path / "start.pt"
    shutil.copy(parent_a / BEST, start)
    child = config(data, tmp_path / "child", bits=4, init=str(start))
    first = train(child)
    shutil.copy(parent_b / BEST, start)  # the same path, another file
    with pytest.raises(UserError, match=r"another config \(init: 'a file of sha256 .*"
                                        r"--restart-if-changed"):
        train(child)
    again = train(child, restart_if_changed=True)
    assert "its files were moved to" in capsys.readouterr().err
    [aside] = (tmp_path / "child").glob("superseded-*")
    assert json.loads((aside / METRICS).read_text()) == first
    assert again["started_from"]["sha256"] != first["started_from"]["sha256"]
    assert check_run(tmp_path / "child") == []


@pytest.mark.parametrize("damage", ["truncate checkpoint", "truncate best", "delete checkpoint"])
def test_a_damaged_run_is_set_aside_and_trained_again(data, tmp_path, capsys, damage):
    cfg = config(data, tmp_path / "run")
    first = train(cfg)
    action, name = damage.split()
    path = tmp_path / "run" / (CHECKPOINT if name == "checkpoint" else BEST)
    if action == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(1000)
    else:
        path.unlink()
    assert check_run(tmp_path / "run")
    capsys.readouterr()
    again = train(cfg)
    err = capsys.readouterr().err
    assert "the run starts over" in err and "from epoch 1 of 1" in err
    [aside] = (tmp_path / "run").glob("damaged-*")
    assert (aside / METRICS).is_file()
    assert check_run(tmp_path / "run") == []
    measured = ("wall_seconds", "executions", "files")
    assert {k: v for k, v in again.items() if k not in measured} == \
        {k: v for k, v in first.items() if k not in measured}
    assert again["files"]["best.pt"] == first["files"]["best.pt"]  # the same weights again


def test_a_read_error_is_not_taken_for_damage(data, tmp_path, monkeypatch):
    """An I/O error while reading the checkpoint (a network file system, a bad disk) is an
    error of the system: the run's files stay where they are."""
    cfg = config(data, tmp_path / "run")
    train(cfg)
    real = Path.read_bytes

    def failing(self):
        if self.name == CHECKPOINT:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", failing)
    (tmp_path / "run" / METRICS).unlink()
    with pytest.raises(OSError, match="Input/output error"):
        train(cfg)
    assert not list((tmp_path / "run").glob("damaged-*"))
    assert (tmp_path / "run" / CHECKPOINT).is_file()


def test_a_checkpoint_without_what_a_release_writes_is_set_aside(data, tmp_path, capsys):
    """A checkpoint lacking a field that every released apot writes (here best.pt's record) is
    another program's: the run's files are set aside (damaged-*) and it trains again, to the
    same result."""
    cfg = config(data, tmp_path / "run")
    first = train(cfg)
    state = load_file(tmp_path / "run" / CHECKPOINT)
    del state["best_file"]
    torch.save(state, tmp_path / "run" / CHECKPOINT)
    (tmp_path / "run" / METRICS).unlink()
    again = train(cfg)
    assert "is not a run's checkpoint of this apot" in capsys.readouterr().err
    assert len(list((tmp_path / "run").glob("damaged-*"))) == 1
    assert again["best_top1"] == first["best_top1"]


def test_a_file_system_without_locks_runs_unlocked_with_a_warning(data, tmp_path, capsys,
                                                                  monkeypatch):
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    train(config(data, tmp_path / "run"))
    assert "the file system has no locks" in capsys.readouterr().err
    assert (tmp_path / "run" / METRICS).is_file()


def test_set_aside_twice_in_one_second_keeps_both(tmp_path):
    from apot.engine.run_folder import RunFolder
    folder = RunFolder(tmp_path)
    (tmp_path / METRICS).write_text("{}")
    first = folder.set_aside("damaged")
    (tmp_path / METRICS).write_text("{}")
    second = folder.set_aside("damaged")
    assert first != second and (first / METRICS).is_file() and (second / METRICS).is_file()


def test_summarize_refuses_a_run_with_damaged_files(trained, tmp_path):
    from apot.layout import ResultsLayout
    from apot.reporting.summary import check_whole
    results = tmp_path / "results"
    shutil.copytree(trained, results / "runs" / "x" / "run")
    layout = ResultsLayout(str(results))
    check_whole([{"path": "x/run", "status": "done"}], layout)
    with open(results / "runs/x/run" / BEST, "r+b") as handle:
        handle.truncate(10)
    with pytest.raises(UserError, match=r"1 run\(s\) .* cannot be summarized: x/run \(best.pt has 10 "
                                        r"bytes.*run the workflow again"):
        check_whole([{"path": "x/run", "status": "done"}], layout)


# ---------------------------------------------------------------- the workflow

def test_a_dry_run_of_another_config_beside_a_run_changes_none_of_its_jobs(
        smoke_study, shared_data, tmp_path):
    """The session's smoke run had a dry run of another config (one step's learning rate,
    through --configfile) beside it once its first training job had started. Every run
    recorded the first invocation's settings, and so did the summary; afterwards a plain dry
    run has nothing to do, and one with the other config redoes that step's runs and what
    depends on them, nothing else."""
    import yaml

    from apot.workflow.study import expand_runs, recorded_differences, validate_config

    folder = smoke_study.folder
    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text())
                             | {"preset": "smoke"})
    results = layout.ResultsLayout.of_preset("smoke")
    studies = sorted((folder / results.studies_dir).glob("*.json"))
    assert len(studies) >= 2  # the run's and the dry run's (at least), side by side
    assert "train_quantized" in job_counts(smoke_study.beside)
    done = [run for run in expand_runs(config)
            if (folder / results.run_file(run.path, METRICS)).is_file()]
    assert len(done) == 12
    for run in done:
        recorded = json.loads((folder / results.run_file(run.path, METRICS)).read_text())
        assert recorded_differences(run, results, recorded["config"]) == {}, run.path
    study, step, lr = CHANGED_STEP
    first_lr = config["presets"]["smoke"]["studies"][study]["chain"][step]["lr"]
    summary = json.loads((folder / results.summary("json")).read_text())
    assert summary["config"]["presets"]["smoke"]["studies"][study]["chain"][step]["lr"] \
        == first_lr != lr
    assert nothing_to_do(snakemake(folder, "-n", *SMOKE, APOT_DATA_MIRROR=str(shared_data)).stdout)
    changed = write_changed_config(tmp_path / "changed.yaml")
    out = snakemake(folder, "-n", "--configfile", str(changed), *SMOKE,
                    APOT_DATA_MIRROR=str(shared_data)).stdout
    assert job_counts(out) == {"train_quantized": 3, "run_cost": 3, "export_packed": 3,
                               "export_onnx": 3, "cost_tables": 1, "summarize": 1, "claims": 1, "report": 1, "all": 1}
    assert sorted(line.split("--run ")[1].split()[0] for line in out.splitlines()
                  if " train --study " in line) == sorted(CHANGED_RUNS)


def test_a_run_recorded_with_other_settings_is_trained_again(smoke_study, tmp_path):
    """A metrics.json whose config is not the study's (as the race of a dry run rewriting the
    study file left them before study files were named by content) is never summarized: the
    workflow finds it and trains the run again, with what depends on it."""
    folder = tmp_path / "study"
    shutil.copytree(smoke_study.folder, folder, symlinks=True)
    run = folder / "results/smoke/runs" / CHANGED_RUNS[-1]
    metrics = json.loads((run / METRICS).read_text())
    metrics["config"]["lr"] = 0.5
    (run / METRICS).write_text(json.dumps(metrics))
    done = snakemake(folder, "-n", "-p", *SMOKE)
    out = done.stdout + done.stderr
    assert (f"apot: results/smoke/runs/{CHANGED_RUNS[-1]}: it was trained with other settings "
            f"than the study's (lr 0.5 there, 0.04 in the study): it is made again") in out
    assert job_counts(out)["train_quantized"] == 1
    summarize = ["summarize", "--results", str(folder / "results/smoke"), "--study",
                 str(folder / study_file(out))]
    done = subprocess.run(apot(*summarize), cwd=folder, capture_output=True, text=True)
    assert done.returncode == 2 and len(error_lines(done.stderr)) == 1
    assert (f"cannot be summarized: {CHANGED_RUNS[-1]} (it was trained with other settings "
            f"than the study's (lr 0.5 there, 0.04 in the study))") in done.stderr


def test_the_workflow_redoes_a_run_whose_files_were_lost(smoke_study, shared_data, tmp_path):
    """Delete one run's metrics.json, truncate another's best.pt and a third's packed model:
    the next run of the workflow trains the second again, rewrites the first's metrics from
    its checkpoint, exports the third again, re-checks what depends on them, and the report's
    numbers come from the redone files."""
    folder = tmp_path / "study"
    shutil.copytree(smoke_study.folder, folder, symlinks=True)
    runs = folder / "results/smoke/runs/cifar10/resnet20"
    lost, truncated = runs / "multistep/apot-w3/seed0", runs / "cosine/apot-w4/seed0"
    packed = runs / "from-authors/cosine_steps/apot-w4/seed0"
    (lost / METRICS).unlink()
    with open(truncated / BEST, "r+b") as handle:
        handle.truncate(1000)
    with open(packed / layout.PACKED, "r+b") as handle:
        handle.truncate(5000)
    logs = folder / "logs/smoke/runs/cifar10/resnet20"
    # the training jobs' logs (seed0.log), not the cost and export jobs' (seed0.cost.log ...)
    before = {p: (p.stat().st_mtime_ns, p.read_text()) for p in logs.rglob("*.log")
              if p.suffixes == [".log"]}
    done = snakemake(folder, *SMOKE, APOT_DATA_MIRROR=str(shared_data))
    out = done.stdout + done.stderr
    assert "apot: results/smoke/runs/cifar10/resnet20/cosine/apot-w4/seed0: best.pt has " \
           "1000 bytes" in out
    assert ("apot: results/smoke/runs/cifar10/resnet20/from-authors/cosine_steps/apot-w4/seed0: "
            "packed.safetensors has 5000 bytes") in out
    counts = job_counts(out)
    # the two runs and the rest of their chains (w2 after w3; w3 and w2 after w4), and their
    # exports and the truncated one's
    assert counts["train_quantized"] == 5 and "train_fp32" not in counts
    assert counts["export_packed"] == 6 and counts["run_cost"] == 5
    assert counts["export_onnx"] == 5
    assert "prepare_data" not in counts and counts["summarize"] == 1
    # only the run whose best.pt was lost trains again; the others resume, complete
    # (each job's log as this run left it: Snakemake starts it anew, or it was appended to)
    appended = {p.relative_to(logs).as_posix(): p.read_text().removeprefix(before[p][1])
                for p in before if p.stat().st_mtime_ns != before[p][0]}
    assert sorted(appended) == sorted(f"{chain}/seed0.log" for chain in (
        "multistep/apot-w3", "multistep/apot-w2", "cosine/apot-w4", "cosine/apot-w3",
        "cosine/apot-w2"))
    assert [name for name, text in appended.items() if "from epoch 1 of" in text] == \
        ["cosine/apot-w4/seed0.log"]
    assert all("resuming after epoch 1 of 1" in text for name, text in appended.items()
               if name != "cosine/apot-w4/seed0.log")
    assert list(truncated.glob("damaged-*")) and check_run(truncated) == []
    summary = json.loads((folder / "results/smoke/summary.json").read_text())
    by_path = {r["path"]: r for r in summary["runs"]}
    for run_dir in (lost, truncated):
        metrics = json.loads((run_dir / METRICS).read_text())
        record = by_path[run_dir.relative_to(folder / "results/smoke/runs").as_posix()]
        assert record["executions"] == metrics["executions"]
        assert record["best_top1"] == metrics["best_top1"]
    assert layout.file_sha256(packed / layout.PACKED) == json.loads(
        (packed / layout.PACKED_RESULT).read_text())["packed_sha256"]
    again = snakemake(folder, *SMOKE, "-n", APOT_DATA_MIRROR=str(shared_data))
    assert "Nothing to be done" in again.stdout + again.stderr
