"""The training engine: one run = one model trained (or fine-tuned) on one prepared dataset, in
its own folder (apot.engine.run_folder).

Running the same command again resumes after the last completed epoch; on the CPU the result is
identical to an uninterrupted run (each epoch's data order and augmentation come from a
generator seeded by (seed, epoch), and the rest of the state is in the checkpoint).
SIGTERM (a scheduler's stop) or SIGINT ends a run between two saves (apot.engine.stopping). Each
process that trained a run is recorded with its host and SLURM job id ("executions"), so a run
resumed on a cluster shows which job trained which epochs. Progress goes to stderr: one line
when the run starts and one per epoch.
"""
from __future__ import annotations

import math
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from apot import __version__
from apot.data.datasets import FOLDER
from apot.data.loader import ImageFolderLoader, TensorLoader
from apot.data.manifest import load_manifest, manifest_dataset
from apot.data.prepare import load_prepared
from apot.engine.config import PER_STEP_SCHEDULES, TrainConfig
from apot.engine.device import resolve_device
from apot.engine.predictions import images_identity, write_predictions
from apot.engine.run_folder import Changed, Damaged, RunFolder, data_identity
from apot.engine.stopping import StopOnSignals
from apot.engine.threads import threads_in_use, use_threads
from apot.errors import UserError
from apot.layout import CHECKPOINT, METRICS, PREDICTIONS, file_sha256
from apot.models import DESCRIPTION_FIELDS, build_model
from apot.storage.checkpoints import ACT_ALPHA_SUFFIX, WEIGHT_ALPHA_SUFFIX, load_file, restore_model
from apot.storage.integrity import check_run, run_files_record
from apot.storage.jsonfile import read_json, write_json
from apot.storage.lock import exclusive

CALIBRATION_BATCHES = 2
CHECK_EVERY_STEPS = 50  # how often a diverging loss is looked for within an epoch


class Diverged(UserError):
    """The training loss became NaN or infinite."""


def make_loaders(cfg: TrainConfig, manifest: dict, device: torch.device):
    """(train, test) loaders: in-memory tensors for prepared small datasets, streamed folders
    for ImageNet (its manifest points at the folder)."""
    dataset = manifest_dataset(manifest, cfg.data)
    mean, std = dataset.mean, dataset.std
    if dataset.kind == FOLDER:
        root = Path(manifest["source"]["path"])
        return (ImageFolderLoader(str(root / "train"), cfg.batch_size, True, device, cfg.seed,
                                  cfg.workers, mean=mean, std=std),
                ImageFolderLoader(str(root / "val"), cfg.test_batch_size, False, device,
                                  workers=cfg.workers, mean=mean, std=std))
    train_images, train_labels, _ = load_prepared(cfg.data, "train")
    test_images, test_labels, _ = load_prepared(cfg.data, "test")
    return (TensorLoader(train_images, train_labels, cfg.batch_size, True, device, cfg.seed,
                         mean=mean, std=std),
            TensorLoader(test_images, test_labels, cfg.test_batch_size, False, device,
                         mean=mean, std=std))


def model_description(cfg: TrainConfig) -> dict:
    """The model a run trains, as checkpoints describe it (apot.models.DESCRIPTION_FIELDS)."""
    return {field: getattr(cfg, field) for field in DESCRIPTION_FIELDS}


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Weights with the base lr/wd; activation and weight clipping thresholds with their own."""
    act, wgt, rest = [], [], []
    for name, param in model.named_parameters():
        if name.endswith(ACT_ALPHA_SUFFIX):
            act.append(param)
        elif name.endswith(WEIGHT_ALPHA_SUFFIX):
            wgt.append(param)
        else:
            rest.append(param)
    groups = [{"params": rest, "name": "weights"}]
    if act:
        groups.append({"params": act, "lr": cfg.act_alpha_lr, "weight_decay": cfg.act_alpha_wd,
                       "name": "act_alpha"})
    if wgt:
        groups.append({"params": wgt, "lr": cfg.wgt_alpha_lr, "weight_decay": cfg.wgt_alpha_wd,
                       "name": "wgt_alpha"})
    return groups


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Stepped once per epoch, or once per step for PER_STEP_SCHEDULES; MultiStepLR scales every
    group (thresholds too), as the authors."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    if cfg.schedule == "cosine_steps":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, cfg.epochs * steps_per_epoch))
    if cfg.schedule == "cosine_epochs":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=max(1, steps_per_epoch))
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones, cfg.gamma)


class Run:
    """A training run in a folder: builds everything from the config, resumes if it can."""

    def __init__(self, cfg: TrainConfig, stop: StopOnSignals | None = None):
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.folder = RunFolder(self.out)
        self.device = resolve_device(cfg.device)
        self.threads = use_threads(cfg.threads)  # before any kernel runs (apot.engine.threads)
        self.manifest = load_manifest(cfg.data)
        self.num_classes = len(self.manifest["classes"])
        self.train_loader, self.test_loader = make_loaders(cfg, self.manifest, self.device)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.arch, self.num_classes, cfg.bits, cfg.scheme, cfg.k,
                                 cfg.first_last, rules=cfg.quantizer_rules,
                                 act_alpha=cfg.act_alpha_init,
                                 wgt_alpha=cfg.wgt_alpha_init).to(self.device)
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, cfg), lr=cfg.lr,
                                         momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg, len(self.train_loader))
        self.per_step = cfg.schedule in PER_STEP_SCHEDULES
        self.epoch = 0  # next epoch to run
        self.history: list[dict] = []
        self.best = {"top1": -1.0, "epoch": None}
        self.wall_seconds = 0.0
        self.executions: list[dict] = []  # one per process that completed an epoch of this run
        self.started_from: dict | None = None  # the --init file: path, sha256, its origin
        self.start_eval: dict | None = None    # test metrics of a 0-epoch run's initialization
        self.calibrated: dict | None = None    # activation thresholds set from data, by layer
        self.best_file: dict | None = None     # file_record of best.pt, as last written
        # best.pt's per-image test predictions {"predicted", "labels"}: int16 (N,) tensors
        self.best_predictions: dict | None = None
        self.predictions: dict | None = None   # predictions.npz's record, once written
        self.init_has_act_alpha = False
        self.stop = stop or StopOnSignals()

    # ---------------------------------------------------------------- state
    def initialize_from(self, path: str) -> None:
        """Progressive initialization: weights (and thresholds, if any) of another run."""
        stored = load_file(path)
        # bits and scheme may differ (that is the point); the architecture may not
        state = restore_model(self.model, stored, {"arch": self.cfg.arch}, progressive=True,
                              source=f"--init {path}")
        self.init_has_act_alpha = any(k.endswith(ACT_ALPHA_SUFFIX) for k in state)
        origin = stored.get("origin") if isinstance(stored, dict) else None
        self.started_from = {"file": str(path), "sha256": file_sha256(path),
                             **({"origin": origin} if isinstance(origin, dict) else {})}

    def state(self) -> dict:
        return {"model": model_description(self.cfg), "state_dict": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": self.epoch,
                "history": self.history, "best": self.best, "wall_seconds": self.wall_seconds,
                "executions": self.executions, "config": self.cfg.result_fields(),
                "started_from": self.started_from, "act_alpha_calibrated": self.calibrated,
                "data_identity": data_identity(self.manifest), "best_file": self.best_file,
                "start_eval": self.start_eval, "apot_version": __version__,
                "best_predictions": self.best_predictions,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}

    def resume(self) -> bool:
        """Continue from the folder's checkpoint if there is one; False for a fresh run. Raises
        Damaged when the folder's files cannot be resumed from, Changed when they hold another
        run."""
        stored = self.folder.read_checkpoint()
        if stored is None:
            return False
        self.folder.check_same_run(stored, self.cfg, self.manifest)
        path = self.out / CHECKPOINT
        try:
            restore_model(self.model, stored, model_description(self.cfg), source=str(path))
            self.optimizer.load_state_dict(stored["optimizer"])
            self.scheduler.load_state_dict(stored["scheduler"])
        except (UserError, ValueError, KeyError, RuntimeError) as exc:
            # the same config, another model or optimizer state: made by other code
            raise Changed(f"{path} does not fit the model this version builds ({exc})") from None
        self.epoch, self.history = stored["epoch"], stored["history"]
        self.best, self.wall_seconds = stored["best"], stored["wall_seconds"]
        self.executions, self.best_file = stored["executions"], stored["best_file"]
        self.started_from = stored.get("started_from")
        self.calibrated = stored.get("act_alpha_calibrated")
        self.start_eval = stored.get("start_eval")
        self.best_predictions = stored.get("best_predictions")
        self.folder.settle_best(self.best_file)
        torch.set_rng_state(stored["rng"]["torch"])
        if stored["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(stored["rng"]["cuda"])
        return True

    def save(self, improved: bool) -> None:
        """The epoch just completed: checkpoint.pt, best.pt if it improved, history.csv."""
        best = ({"model": model_description(self.cfg), "state_dict": self.model.state_dict(),
                 "epoch": self.epoch, "best_top1": self.best["top1"]} if improved else None)
        state = self.state()
        self.folder.save(state, best)
        self.best_file = state["best_file"]
        self.folder.write_history(self.history)

    # ---------------------------------------------------------------- loops
    def train_epoch(self) -> dict:
        self.model.train()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, correct, n
        start = time.perf_counter()
        bar = progress_bar(len(self.train_loader), f"epoch {self.epoch}", self.cfg.progress)
        for step, (x, y) in enumerate(self.train_loader.epoch(self.epoch)):
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.per_step:
                self.scheduler.step()
            with torch.no_grad():
                totals += torch.stack([loss.detach().double() * len(y),
                                       (logits.argmax(1) == y).sum().double(),
                                       torch.tensor(len(y), dtype=torch.float64,
                                                    device=self.device)])
            if step % CHECK_EVERY_STEPS == 0:
                self.check_finite(totals[0].item(), "the training loss")
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    loss_sum, correct, n = totals.tolist()
                    bar.set_postfix(loss=f"{loss_sum / n:.3f}", acc=f"{100 * correct / n:.1f}",
                                    img_s=f"{n / (time.perf_counter() - start):.0f}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - start
        loss_sum, correct, n = totals.tolist()
        self.check_finite(loss_sum, "the training loss")
        return {"train_loss": loss_sum / n, "train_top1": 100 * correct / n,
                "images_per_s": n / seconds, "epoch_seconds": seconds}

    @torch.no_grad()
    def test(self) -> tuple[dict, dict]:
        """The test split's metrics (history fields) and per-image predictions (int16 (N,)
        tensors "predicted" and "labels")."""
        from apot.engine.evaluate import evaluate
        result = evaluate(self.model, self.test_loader.epoch(), self.device,
                          keep_predictions=True)
        predictions = {k: result[k].to(torch.int16) for k in ("predicted", "labels")}
        return ({"test_loss": result["loss"], "test_top1": result["top1"],
                 "test_top5": result["top5"]}, predictions)

    def run(self, resumed: bool | None = None) -> dict:
        """Train from where ``resume`` left the run (``resumed``; None: resume now) to its
        last epoch. Unlocked: ``train`` is the entry point that locks the folder."""
        if resumed is None:
            self.out.mkdir(parents=True, exist_ok=True)
            resumed = self.resume()
        with self.stop.active():
            return self._run(resumed)

    def _run(self, resumed: bool) -> dict:
        if not resumed and self.cfg.init:
            self.initialize_from(self.cfg.init)
        if not resumed and self.cfg.act_alpha_calibration == "mse" and not self.init_has_act_alpha:
            self.calibrate()
        execution = {**execution_context(), "first_epoch": self.epoch, "epochs": 0}
        print(f"apot train: {self.out} on {describe(execution)}, device {self.device}, "
              + (f"resuming after epoch {self.epoch} of {self.cfg.epochs}" if resumed
                 else f"from epoch 1 of {self.cfg.epochs}" if self.cfg.epochs
                 else "0 epochs: the initialization as it is")
              + (f", initialized from {self.cfg.init}" if self.cfg.init and not resumed else ""),
              file=sys.stderr, flush=True)
        if self.cfg.epochs == 0 and self.start_eval is None:
            self.evaluate_start()
        while self.epoch < self.cfg.epochs:
            lr = self.optimizer.param_groups[0]["lr"]
            started = time.perf_counter()
            trained = self.train_epoch()
            tested, predictions = self.test()
            row = {"epoch": self.epoch, "lr": lr, **trained, **tested}
            self.wall_seconds += time.perf_counter() - started
            self.check_finite(row["test_loss"], "the test loss")
            self.history.append(row)
            improved = row["test_top1"] > self.best["top1"]
            if improved:
                self.best = {"top1": row["test_top1"], "epoch": self.epoch}
                self.best_predictions = predictions
            if not self.per_step:
                self.scheduler.step()
            self.epoch += 1
            if execution["epochs"] == 0:
                self.executions.append(execution)
            execution["epochs"] += 1
            execution["threads"] = threads_in_use()  # as the epoch's kernels left them
            with self.stop.atomic():  # a stop lands before or after, never inside
                self.save(improved)
                print(epoch_line(row, self.cfg.epochs), file=sys.stderr, flush=True)
        self.folder.write_history(self.history)  # also if the last save stopped short
        self.predictions = self.write_predictions()
        metrics = self.metrics()
        write_json(self.out / METRICS, metrics)
        return metrics

    def check_finite(self, value: float, what: str) -> None:
        """Stop the run before it saves anything once ``value`` is NaN or infinite: the files
        keep the last completed epoch."""
        if not math.isfinite(value):
            kept = (f"its files keep epoch {self.epoch}, the last finite one" if self.epoch
                    else "no epoch completed, so nothing of it was saved")
            raise Diverged(f"run {self.out} diverged in epoch {self.epoch + 1}: {what} is "
                           f"{value}; {kept}. Lower --lr (or the thresholds' --act-alpha-lr), "
                           f"or check the data")

    def calibrate(self) -> None:
        """Activation thresholds from the first training batches (apot.quant.calibrate); the
        batches are epoch 0's, drawn again by its own generator, so training is unchanged."""
        from itertools import islice

        from apot.quant.calibrate import calibrate_activation_alphas
        batches = islice(self.train_loader.epoch(0), CALIBRATION_BATCHES)
        found = calibrate_activation_alphas(self.model, batches, seed=self.cfg.seed)
        self.calibrated = {name: round(alpha, 6) for name, alpha in found.items()} or None
        if found:
            print(f"apot train: activation thresholds calibrated on {CALIBRATION_BATCHES} "
                  f"batches: {min(found.values()):.3g} to {max(found.values()):.3g}",
                  file=sys.stderr, flush=True)

    def evaluate_start(self) -> None:
        """0 epochs: the run is its initialization as it is (a released model taken as the
        chain's FP32 step, as the authors start ImageNet from torchvision's weights)."""
        started = time.perf_counter()
        self.start_eval, self.best_predictions = self.test()
        self.wall_seconds += time.perf_counter() - started
        self.check_finite(self.start_eval["test_loss"], "the test loss of the initialization")
        self.best = {"top1": self.start_eval["test_top1"], "epoch": None}
        print(f"apot train: 0 epochs: the initialization as it is, test top-1 "
              f"{self.start_eval['test_top1']:.2f}", file=sys.stderr, flush=True)
        with self.stop.atomic():
            self.save(improved=True)

    def write_predictions(self) -> dict:
        """predictions.npz of best.pt; returns the file's record."""
        kept = self.best_predictions
        return write_predictions(self.out / PREDICTIONS, kept["predicted"].numpy(),
                                 kept["labels"].numpy(), images_identity(self.manifest))

    def metrics(self) -> dict:
        last = self.history[-1] if self.history else self.start_eval
        return {"best_top1": self.best["top1"], "best_epoch": self.best["epoch"],
                "final_top1": last["test_top1"], "final_top5": last["test_top5"],
                "final_test_loss": last["test_loss"], "epochs": self.cfg.epochs,
                "wall_seconds": round(self.wall_seconds, 2), "device": str(self.device),
                # the threads that trained the run (its last process), not those of a process
                # that only rewrote its metrics
                "threads": (self.executions[-1].get("threads") if self.executions
                            else None) or threads_in_use(),
                "seed": self.cfg.seed, "dataset": self.manifest.get("dataset"),
                "data_source": self.manifest.get("source", {}).get("kind"),
                **model_description(self.cfg), "init": self.cfg.init,
                "started_from": self.started_from, "quantizer_rules": self.cfg.quantizer_rules,
                "act_alpha_calibrated": self.calibrated,
                "schedule": self.cfg.schedule, "executions": self.executions,
                "files": run_files_record(self.out),
                # what the run was trained with: the workflow and `apot summarize` compare it
                # with the study's settings of the run (apot.workflow.study.recorded_differences)
                "config": self.cfg.result_fields(),
                "predictions": self.predictions,
                "note": ("best_top1: best test top-1 over epochs (the authors' reporting, which "
                         "selects on the test set); final_top1: the last epoch's test top-1")}


def execution_context() -> dict:
    """Where this process runs: host name, the SLURM job id when it is a SLURM job, and the
    CPU threads torch and numba use."""
    return {"host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "threads": threads_in_use()}


def describe(execution: dict) -> str:
    job = execution.get("slurm_job_id")
    return execution["host"] + (f" (SLURM job {job})" if job else "")


def epoch_line(row: dict, epochs: int) -> str:
    """One line per completed epoch, for logs that are read while a job runs."""
    return (f"epoch {row['epoch'] + 1}/{epochs}: lr {row['lr']:.4g}, train loss "
            f"{row['train_loss']:.4f}, train top-1 {row['train_top1']:.2f}, test top-1 "
            f"{row['test_top1']:.2f}, {row['epoch_seconds']:.1f} s training")


def progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 30.0)


def train(cfg: TrainConfig, restart_if_changed: bool = False) -> dict:
    """Train (or resume, or find complete) the run described by ``cfg``; returns its metrics.

    One process at a time: the run folder is locked (apot.storage.lock). A folder whose files are
    damaged is set aside (``damaged-*``) and the run starts over; one holding another run
    (config, data or start) is an error, or with ``restart_if_changed`` is set aside
    (``superseded-*``) too. A run folder this call created is removed again if it fails
    before writing anything into it.
    """
    cfg.validate()
    with exclusive(cfg.out, "run"):
        return _train_locked(cfg, restart_if_changed)


def _train_locked(cfg: TrainConfig, restart_if_changed: bool) -> dict:
    stop = StopOnSignals()
    with stop.active():  # a stop while resuming or setting aside is a clean stop too
        run = Run(cfg, stop)
        try:
            resumed = run.resume()
        except (Damaged, Changed) as problem:
            if isinstance(problem, Changed) and not restart_if_changed:
                raise UserError(f"{problem}; use a new --out folder, or pass "
                                f"--restart-if-changed to set its files aside and start over"
                                ) from None
            with stop.atomic():
                aside = run.folder.set_aside("damaged" if isinstance(problem, Damaged)
                                             else "superseded")
            print(f"apot train: {run.out}: {problem}; its files were moved to {aside} and the "
                  f"run starts over", file=sys.stderr, flush=True)
            run, resumed = Run(cfg, stop), False
        metrics_path = run.out / METRICS
        if (resumed and run.epoch >= cfg.epochs and metrics_path.exists()
                and not check_run(run.out)):
            return read_json(metrics_path, "delete the run folder and train again")
        return run.run(resumed)
