"""The training engine on a small generated dataset: files, resume, config checks, init."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numba
import pytest
import torch

from apot.cli import main
from apot.data.prepare import prepare_dataset
from apot.engine.config import TrainConfig
from apot.engine.predictions import read_predictions
from apot.engine.train import Run, parameter_groups, train
from apot.errors import UserError
from apot.layout import BEST, CHECKPOINT, HISTORY, HISTORY_FIELDS, METRICS, PREDICTIONS
from apot.models import build_model
from apot.storage.checkpoints import load_file

# Columns that are measurements of the machine, not results of the computation.
TIMING = ("images_per_s", "epoch_seconds")


@pytest.fixture(scope="module")
def data(synthetic_data) -> Path:
    return synthetic_data


def config(data: Path, out: Path, **changes) -> TrainConfig:
    base = TrainConfig(arch="resnet20", data=str(data), out=str(out), epochs=2, batch_size=48,
                       lr=0.05, milestones=[1], progress=False, device="cpu")
    if changes.get("epochs") == 1:
        changes.setdefault("milestones", [])  # a milestone must fall inside the run
    return replace(base, **changes)


def results(run_dir: Path) -> list[dict]:
    with open(run_dir / HISTORY) as handle:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]


def test_a_run_writes_history_metrics_and_checkpoints(data, tmp_path):
    metrics = train(config(data, tmp_path / "run"))
    run_dir = tmp_path / "run"
    rows = list(csv.DictReader(open(run_dir / HISTORY)))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert tuple(rows[0]) == HISTORY_FIELDS
    assert float(rows[0]["lr"]) == pytest.approx(0.05) and float(rows[1]["lr"]) == pytest.approx(0.005)
    tops = [float(r["test_top1"]) for r in rows]
    assert metrics["best_top1"] == max(tops) and metrics["final_top1"] == tops[-1]
    assert metrics["best_epoch"] == tops.index(max(tops))
    assert json.loads((run_dir / METRICS).read_text()) == metrics
    assert metrics["device"] == "cpu" and metrics["seed"] == 0 and metrics["epochs"] == 2
    assert metrics["dataset"] == "synthetic" and "best test top-1" in metrics["note"]
    state = load_file(run_dir / CHECKPOINT)
    assert state["epoch"] == 2 and state["config"]["lr"] == 0.05
    assert {"model", "optimizer", "scheduler", "rng", "history"} <= set(state)
    best = load_file(run_dir / BEST)
    assert best["model"]["bits"] == 32 and best["epoch"] == metrics["best_epoch"] + 1


def test_second_call_finds_the_run_complete(data, tmp_path):
    cfg = config(data, tmp_path / "run", epochs=1)
    first = train(cfg)
    stamp = os.stat(tmp_path / "run" / CHECKPOINT).st_mtime_ns
    assert train(cfg) == first
    assert os.stat(tmp_path / "run" / CHECKPOINT).st_mtime_ns == stamp


def train_command(data: Path, bits: int = 32, threads: int = 1) -> list[str]:
    return [sys.executable, "-m", "apot", "train", "--arch", "resnet20", "--data", str(data),
            "--epochs", "3", "--batch-size", "16", "--lr", "0.05", "--milestones", "2",
            "--bits", str(bits), "--device", "cpu", "--threads", str(threads), "--no-progress"]


def no_slurm_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}


CORES = len(os.sched_getaffinity(0))
# (bits, threads): the float run, and 4-bit runs (numba's activation kernel) on one thread and
# on every core: the thread count must hold from the first batch of the resumed process on.
# (a float run stopped by SIGKILL adds nothing the 4-bit one at one thread does not test)
STOPS = [((32, 1), signal.SIGTERM), ((4, 1), signal.SIGKILL), ((4, CORES), signal.SIGKILL)]


@pytest.fixture(scope="module")
def uninterrupted(request, data, tmp_path_factory) -> tuple[tuple, Path]:
    """The 3-epoch run of train_command, never stopped: what a stopped-and-resumed run must
    equal."""
    bits, threads = request.param
    out = tmp_path_factory.mktemp("uninterrupted") / "whole"
    subprocess.run(train_command(data, bits, threads) + ["--out", str(out)], check=True,
                   capture_output=True, env=no_slurm_env())
    return request.param, out


@pytest.mark.parametrize("uninterrupted,stop", STOPS, indirect=["uninterrupted"],
                         ids=[f"w{b}-threads{t}-{s.name}" for (b, t), s in STOPS])
def test_stopped_mid_epoch_then_rerun_equals_uninterrupted(data, tmp_path, stop, uninterrupted):
    """SIGKILL (a crash) and SIGTERM (a scheduler's stop) in epoch 1; the rerun, as another
    SLURM job, resumes after epoch 0 and ends bit for bit where an uninterrupted run ends, on
    the thread count it was given (recorded in the metrics)."""
    (bits, threads), whole_dir = uninterrupted
    command = train_command(data, bits, threads)
    job = no_slurm_env()

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command + ["--out", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**job, "SLURM_JOB_ID": "101"})
    deadline = time.monotonic() + 120
    while not (killed / CHECKPOINT).exists():  # epoch 0 done: now inside epoch 1
        assert proc.poll() is None and time.monotonic() < deadline, "run ended too early"
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(proc.pid, stop)
    err = proc.communicate()[1]
    assert load_file(killed / CHECKPOINT)["epoch"] == 1, "the stop did not land in epoch 1"
    assert not (killed / METRICS).exists()
    assert "(SLURM job 101)" in err and "epoch 1/3:" in err and "epoch 2/3:" not in err
    if stop == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert "apot train: stopped by SIGTERM; the run's files hold its last completed" in err
    assert not list(killed.glob(".*.tmp"))
    done = subprocess.run(command + ["--out", str(killed)], check=True, capture_output=True,
                          text=True, env={**job, "SLURM_JOB_ID": "102"})
    assert "(SLURM job 102), device cpu, resuming after epoch 1 of 3" in done.stderr

    assert results(killed) == results(whole_dir)
    whole = json.loads((whole_dir / METRICS).read_text())
    resumed = json.loads((killed / METRICS).read_text())
    measured = ("wall_seconds", "executions", "files")
    # the two runs' folders differ, and so does the config each records of it
    assert (resumed["config"].pop("out"), whole["config"].pop("out")) == (str(killed),
                                                                          str(whole_dir))
    assert {k: v for k, v in resumed.items() if k not in measured} == \
        {k: v for k, v in whole.items() if k not in measured}
    assert resumed["threads"] == {"torch": threads, "numba": threads}
    # which job trained which epochs, on how many threads
    assert [(e["slurm_job_id"], e["first_epoch"], e["epochs"], e["threads"]["torch"])
            for e in resumed["executions"]] == [("101", 0, 1, threads), ("102", 1, 2, threads)]
    assert [(e["slurm_job_id"], e["epochs"]) for e in whole["executions"]] == [(None, 3)]
    a = load_file(killed / CHECKPOINT)["state_dict"]
    b = load_file(whole_dir / CHECKPOINT)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (killed / BEST).read_bytes() == (whole_dir / BEST).read_bytes()


def test_the_thread_count_holds_after_the_activation_kernel(tmp_path):
    """numba's first parallel loop resets OpenMP's thread count to every core, and torch reads
    it: apot.engine.threads starts numba's pool first, so the count asked for holds."""
    script = (
        "import torch\n"
        "from apot.engine.threads import use_threads\n"
        "from apot.quant.functional import activation_parts, shared_projector\n"
        "print(use_threads(1))\n"
        "activation_parts(torch.rand(100000), torch.tensor(1.0), shared_projector('apot', 3, 2))\n"
        "print(torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True).stdout.split("\n")
    assert out[0] == "{'torch': 1, 'numba': 1}" and out[1] == "1"


def test_resuming_with_another_config_is_refused(data, tmp_path):
    train(config(data, tmp_path / "run", epochs=1))
    with pytest.raises(UserError, match="another config.*lr"):
        train(config(data, tmp_path / "run", epochs=1, lr=0.1))


def test_progressive_initialization_keeps_float_weights(data, tmp_path):
    train(config(data, tmp_path / "fp", epochs=1))
    run = Run(config(data, tmp_path / "q4", bits=4, init=str(tmp_path / "fp" / BEST)))
    run.initialize_from(run.cfg.init)
    fp = load_file(tmp_path / "fp" / BEST)["state_dict"]
    state = run.model.state_dict()
    assert torch.equal(state["layer1.0.conv1.weight"], fp["layer1.0.conv1.weight"])
    assert state["layer1.0.conv1.act_quantizer.alpha"].item() == 8.0  # initial threshold
    metrics = train(config(data, tmp_path / "q4", bits=4, epochs=1,
                           init=str(tmp_path / "fp" / BEST)))
    assert metrics["bits"] == 4 and metrics["init"].endswith(BEST)


def test_initialization_from_another_architecture_is_refused(data, tmp_path):
    path = tmp_path / "r32.pt"
    torch.save({"model": {"arch": "resnet32"}, "state_dict": build_model("resnet32").state_dict()},
               path)
    with pytest.raises(UserError, match="resnet32"):
        train(config(data, tmp_path / "run", init=str(path)))


def test_zero_epochs_is_the_initialization_as_it_is(data, tmp_path, capsys):
    """A chain's FP32 step can be a released model as it is (the authors start ImageNet from
    torchvision's weights): 0 epochs evaluates the --init file and keeps it as best.pt."""
    train(config(data, tmp_path / "fp", epochs=1))
    start = tmp_path / "fp" / BEST
    torch.save({"state_dict": load_file(start)["state_dict"],
                "origin": {"kind": "authors", "file": "/released/res20.pth.tar",
                           "sha256": "ab" * 32}}, tmp_path / "start.pt")
    capsys.readouterr()
    metrics = train(config(data, tmp_path / "as-is", epochs=0, init=str(tmp_path / "start.pt")))
    said = capsys.readouterr().err
    assert "0 epochs: the initialization as it is" in said and " of 0" not in said
    again = Run(config(data, tmp_path / "check", epochs=1, init=str(tmp_path / "start.pt")))
    again.initialize_from(again.cfg.init)
    expected = again.test()[0]["test_top1"]
    assert metrics["best_top1"] == metrics["final_top1"] == expected
    assert metrics["epochs"] == 0 and metrics["best_epoch"] is None
    assert not (tmp_path / "as-is" / HISTORY).read_text().strip().splitlines()[1:]
    best = load_file(tmp_path / "as-is" / BEST)["state_dict"]
    assert all(torch.equal(best[k], v) for k, v in load_file(start)["state_dict"].items())
    started = metrics["started_from"]
    assert started["file"] == str(tmp_path / "start.pt")
    assert started["origin"]["kind"] == "authors" and len(started["sha256"]) == 64
    assert train(config(data, tmp_path / "as-is", epochs=0,
                        init=str(tmp_path / "start.pt"))) == metrics  # complete: found again


def test_quantizer_rules_set_the_activation_threshold_and_are_recorded(data, tmp_path):
    cifar = Run(config(data, tmp_path / "c", bits=4))
    imagenet = Run(config(data, tmp_path / "i", bits=4, act_alpha_init=None,
                          quantizer_rules="imagenet"))
    key = "layer1.0.conv1.act_quantizer.alpha"
    assert cifar.model.state_dict()[key].item() == 8.0
    assert imagenet.model.state_dict()[key].item() == 6.0
    assert imagenet.model.layer1[0].conv1.rules == "imagenet"
    metrics = train(config(data, tmp_path / "i", bits=4, epochs=1, act_alpha_init=None,
                           quantizer_rules="imagenet"))
    assert metrics["quantizer_rules"] == "imagenet"


@pytest.mark.parametrize("change, words", [
    ({"epochs": 0}, "epochs must be at least 1 (0 only with --init"),
    ({"quantizer_rules": "tf"}, "quantizer_rules must be one of"),
    ({"bits": 9}, "bits must be 2..8 or 32"),
    ({"milestones": [2]}, "milestones [2] must lie between 1 and epochs-1"),
    ({"schedule": "step"}, "schedule must be one of"),
    ({"arch": "vgg"}, "arch 'vgg' is unknown"),
    ({"scheme": "lloyd"}, "scheme must be one of"),
    ({"first_last": "4bit"}, "first_last must be one of"),
])
def test_invalid_configs_name_the_problem(data, tmp_path, change, words):
    with pytest.raises(UserError) as info:
        train(config(data, tmp_path / "run", **change))
    assert words in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_threshold_parameter_groups_and_schedules(data, tmp_path):
    cfg = config(data, tmp_path / "run", bits=4, epochs=4, milestones=[2, 3])
    run = Run(cfg)
    groups = {g["name"]: g for g in run.optimizer.param_groups}
    assert groups["act_alpha"]["lr"] == 0.1 and groups["act_alpha"]["weight_decay"] == 1e-4
    assert groups["wgt_alpha"]["lr"] == 0.02 and groups["wgt_alpha"]["weight_decay"] == 1e-4
    assert groups["weights"]["lr"] == 0.05 and groups["weights"]["weight_decay"] == 5e-4
    assert len(groups["act_alpha"]["params"]) == len(groups["wgt_alpha"]["params"]) == 20
    lrs = []
    for _ in range(4):
        lrs.append([g["lr"] for g in run.optimizer.param_groups])
        run.scheduler.step()
    # every group, thresholds included, is divided by 10 at each milestone (authors' rule)
    assert lrs[2] == pytest.approx([x * 0.1 for x in lrs[0]])
    assert lrs[3] == pytest.approx([x * 0.01 for x in lrs[0]])
    cosine = Run(replace(cfg, schedule="cosine"))
    cosine.scheduler.step()
    assert cosine.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * (1 + 0.7071068) / 2)
    float_groups = parameter_groups(build_model("resnet20"), cfg)
    assert [g["name"] for g in float_groups] == ["weights"]


def test_cli_train_then_eval_on_the_prepared_data(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--arch", "resnet20", "--data", str(data), "--out", str(out),
                 "--epochs", "1", "--milestones", "--bits", "3", "--device", "cpu",
                 "--no-progress"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert main(["eval", "--arch", "resnet20", "--bits", "3", "--checkpoint",
                 str(out / BEST), "--data", str(data), "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["n"] == 80
    assert evaluated["top1"] == pytest.approx(metrics["best_top1"])
    # the best checkpoint records its bit-width: evaluating it as 4-bit is refused
    assert main(["eval", "--arch", "resnet20", "--bits", "4", "--checkpoint",
                 str(out / BEST), "--data", str(data), "--device", "cpu"]) == 2
    assert "bits=3 (asked for 4)" in capsys.readouterr().err


def test_imagenet_folder_streams_through_the_engine(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            folder = tmp_path / "imagenet" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray((rng.random((70, 90, 3)) * 255).astype("uint8")).save(
                    folder / f"{i}.JPEG")
    prepare_dataset("imagenet", tmp_path / "prepared", imagenet_root=str(tmp_path / "imagenet"))
    cfg = TrainConfig(arch="resnet18", data=str(tmp_path / "prepared"), out=str(tmp_path / "run"),
                      epochs=1, milestones=[], bits=5, batch_size=4, test_batch_size=4,
                      lr=0.01, act_alpha_init=6.0, workers=0, progress=False, device="cpu")
    run = Run(cfg)
    x, y = next(run.train_loader.epoch(0))
    assert x.shape == (4, 3, 224, 224) and y.tolist() != [] and run.num_classes == 2
    metrics = train(cfg)
    assert metrics["dataset"] == "imagenet" and metrics["bits"] == 5
    assert [int(r["epoch"]) for r in csv.DictReader(open(tmp_path / "run" / HISTORY))] == [0]


def test_progress_bar_reports_on_stderr(data, tmp_path, capsys):
    train(config(data, tmp_path / "run", epochs=1, progress=True))
    err = capsys.readouterr().err
    assert "epoch 0" in err and "img_s=" in err


def test_a_line_at_the_start_and_one_per_epoch_without_a_progress_bar(data, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    metrics = train(config(data, tmp_path / "run"))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"apot train: {tmp_path / 'run'} on ")
    assert lines[0].endswith("device cpu, from epoch 1 of 2") and "SLURM" not in lines[0]
    rows = list(csv.DictReader(open(tmp_path / "run" / HISTORY)))
    assert lines[1:] == [
        f"epoch {i + 1}/2: lr {float(r['lr']):.4g}, train loss {float(r['train_loss']):.4f}, "
        f"train top-1 {float(r['train_top1']):.2f}, test top-1 {float(r['test_top1']):.2f}, "
        f"{float(r['epoch_seconds']):.1f} s training" for i, r in enumerate(rows)]
    threads = {"torch": torch.get_num_threads(), "numba": numba.get_num_threads()}
    assert metrics["executions"] == [{"host": metrics["executions"][0]["host"],
                                      "slurm_job_id": None, "first_epoch": 0, "epochs": 2,
                                      "threads": threads}]
    assert metrics["threads"] == threads


def test_a_100_class_dataset_gets_a_100_way_head(tmp_path):
    prepare_dataset("synthetic", tmp_path / "data", synthetic_classes=100, train_per_class=2,
                    test_per_class=1)
    metrics = train(config(tmp_path / "data", tmp_path / "run", epochs=1, bits=2))
    assert metrics["bits"] == 2
    best = load_file(tmp_path / "run" / BEST)["state_dict"]
    assert best["fc.weight"].shape == (100, 64)


class _Stop(Exception):
    pass


def test_cosine_steps_anneals_per_batch_and_resumes_exactly(data, tmp_path, monkeypatch):
    """cosine_steps lowers the LR after every batch, to 0 at the run's last step; a run stopped
    inside epoch 1 and resumed from its checkpoint ends exactly where an uninterrupted one does
    (the scheduler's per-step state is saved with the epoch)."""
    cfg = dict(epochs=2, schedule="cosine_steps", milestones=[], bits=4, threads=1)
    whole = Run(config(data, tmp_path / "whole", **cfg))
    whole.run()
    steps = len(whole.train_loader)
    assert whole.scheduler.last_epoch == 2 * steps
    assert whole.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    rows = list(csv.DictReader(open(tmp_path / "whole" / HISTORY)))
    # epoch 1 starts halfway down the cosine: lr = 0.05 * (1 + cos(pi / 2)) / 2
    assert float(rows[0]["lr"]) == pytest.approx(0.05) and float(rows[1]["lr"]) == pytest.approx(0.025)

    original = Run.train_epoch

    def stop_in_epoch_1(self):
        if self.epoch == 1:
            raise _Stop
        return original(self)
    monkeypatch.setattr(Run, "train_epoch", stop_in_epoch_1)
    with pytest.raises(_Stop):
        Run(config(data, tmp_path / "stopped", **cfg)).run()
    monkeypatch.setattr(Run, "train_epoch", original)
    resumed = Run(config(data, tmp_path / "stopped", **cfg))
    resumed.run()
    assert results(tmp_path / "stopped") == results(tmp_path / "whole")
    a = load_file(tmp_path / "stopped" / CHECKPOINT)["state_dict"]
    b = load_file(tmp_path / "whole" / CHECKPOINT)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_another_config_is_refused_and_names_the_field(data, tmp_path):
    cfg = config(data, tmp_path / "run", epochs=1)
    train(cfg)
    with pytest.raises(UserError, match="quantizer_rules: 'cifar' there, 'imagenet' now"):
        train(replace(cfg, quantizer_rules="imagenet"))


def test_cosine_epochs_anneals_within_each_epoch_and_starts_again(data, tmp_path):
    """cosine_epochs: every epoch starts at the base LR and anneals per batch towards 0, so each
    epoch ends at a low-LR point and two epochs' test top-1 show whether the step converged."""
    run = Run(config(data, tmp_path / "run", schedule="cosine_epochs", milestones=[], bits=4,
                     threads=1))
    used, step = [], run.optimizer.step

    def recording(*args, **kwargs):
        used.append(run.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)
    run.optimizer.step = recording
    run.run()
    steps = len(run.train_loader)
    assert len(used) == 2 * steps and steps > 1
    expected = [0.05 * (1 + math.cos(math.pi * i / steps)) / 2 for i in range(steps)]
    assert used == pytest.approx(expected * 2)
    assert [float(r["lr"]) for r in results(tmp_path / "run")] == pytest.approx([0.05, 0.05])


def test_a_run_keeps_its_best_epochs_predictions(data, tmp_path):
    """predictions.npz: best.pt's per-image test predictions, recorded in metrics.json; a run
    from before they were kept gets them from best.pt when it is next asked for."""
    metrics = train(config(data, tmp_path / "run", bits=4, threads=1))
    kept = read_predictions(tmp_path / "run" / PREDICTIONS)
    assert metrics["predictions"]["file"] == PREDICTIONS
    assert metrics["predictions"]["images"] == len(kept.labels)
    assert metrics["predictions"]["identity"].startswith("test.pt sha256 ")
    assert kept.top1 == pytest.approx(metrics["best_top1"], abs=1e-3)
    # an older run: no predictions file, no record
    old = {k: v for k, v in metrics.items() if k != "predictions"}
    (tmp_path / "run" / METRICS).write_text(json.dumps(old))
    (tmp_path / "run" / PREDICTIONS).unlink()
    again = train(config(data, tmp_path / "run", bits=4, threads=1))
    assert again["predictions"] == metrics["predictions"]
    assert (read_predictions(tmp_path / "run" / PREDICTIONS).predicted == kept.predicted).all()
