"""A training run's folder: the files a completed epoch writes and a resumed run reads, kept in
agreement across stops at any instant.

  checkpoint.pt  the full state after the last completed epoch (written atomically)
  best.pt        the model of the epoch with the best test top-1; a new one waits in
                 best.pt.pending until the checkpoint that records it is written
  history.csv    one row per completed epoch
  metrics.json   written when the run completes
  predictions.npz  best.pt's per-image test predictions

A folder whose files cannot be resumed from is Damaged, one holding another run is Changed;
either is set aside (never deleted) when the run starts over.
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

from apot.engine.config import TrainConfig
from apot.engine.settings import PATH_SETTINGS, same_path
from apot.errors import UserError
from apot.layout import (BEST, CHECKPOINT, HISTORY, HISTORY_FIELDS, METRICS, PENDING_BEST,
                         PREDICTIONS, file_sha256, write_text_atomic)
from apot.storage.checkpoints import load_file, save_atomic
from apot.storage.integrity import file_record

# metrics.json first: see RunFolder.set_aside
RUN_FILES = (METRICS, CHECKPOINT, BEST, HISTORY, PREDICTIONS, PENDING_BEST)
# what every checkpoint of a released apot holds; one without them is another program's
CHECKPOINT_KEYS = frozenset({"state_dict", "optimizer", "scheduler", "epoch", "history", "best",
                             "wall_seconds", "executions", "config", "data_identity",
                             "best_file", "rng"})


class Damaged(Exception):
    """A run folder's files cannot be resumed from (missing, truncated, not what they record)."""


class Changed(Exception):
    """A run folder holds a run of another config or start."""


class RunFolder:
    """The files of one run, in folder ``out``."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    def read_checkpoint(self) -> dict | None:
        """checkpoint.pt's content, None in a folder with no run yet. Raises Damaged when the
        files cannot be resumed from."""
        path = self.out / CHECKPOINT
        if not path.exists():
            (self.out / PENDING_BEST).unlink(missing_ok=True)  # from a first epoch cut short
            left = [name for name in (BEST, HISTORY, METRICS) if (self.out / name).exists()]
            if left:
                raise Damaged(f"{CHECKPOINT} is missing beside {', '.join(left)}")
            return None
        try:
            stored = load_file(path)
        except UserError as exc:
            raise Damaged(str(exc)) from None
        if not isinstance(stored, dict) or not CHECKPOINT_KEYS <= set(stored):
            raise Damaged(f"{path} is not a run's checkpoint of this apot")
        return stored

    def check_same_run(self, stored: dict, cfg: TrainConfig, manifest: dict) -> None:
        """Raise Changed if the checkpoint was made by another config, on other data or from
        another start. Paths count by what they hold: a moved folder, or the same file spelled
        another way, is the same run."""
        saved = stored["config"]
        differ = {k: (saved.get(k), v) for k, v in cfg.result_fields().items()
                  if k not in PATH_SETTINGS and saved.get(k) != v}
        if stored["data_identity"] != data_identity(manifest):
            differ["data"] = ("other prepared tensors", f"{cfg.data}")
        recorded = (stored.get("started_from") or {}).get("sha256")
        if (saved.get("init") is None) != (cfg.init is None):
            differ["init"] = (saved.get("init"), cfg.init)
        elif cfg.init is not None and Path(cfg.init).is_file():
            now = file_sha256(cfg.init)
            if now != recorded:
                differ["init"] = (f"a file of sha256 {str(recorded)[:12]}",
                                  f"{cfg.init} of sha256 {now[:12]}")
        elif cfg.init is not None and not same_path(saved["init"], cfg.init):
            differ["init"] = (saved.get("init"), cfg.init)
        if differ:
            listed = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
            raise Changed(f"{self.out} holds a run with another config ({listed})")

    def settle_best(self, best_file: dict) -> None:
        """Make best.pt the file the checkpoint records (``best_file``): a pending one it names
        is moved in (the process stopped between the two renames of save); one it does not
        name is from an epoch that was not completed, and goes. Raises Damaged if best.pt is
        not the recorded file."""
        pending = self.out / PENDING_BEST
        if pending.exists():
            if file_record(pending) == best_file:
                os.replace(pending, self.out / BEST)
            else:
                pending.unlink()
        best = self.out / BEST
        if not best.is_file():
            raise Damaged(f"{BEST} is missing")
        if file_record(best) != best_file:
            raise Damaged(f"{BEST} is not the file its checkpoint records (truncated or "
                          f"replaced: {os.path.getsize(best)} bytes, "
                          f"{best_file['bytes']} when written)")

    def save(self, state: dict, best: dict | None) -> None:
        """Write checkpoint.pt (``state``) and, when ``best`` is given, best.pt, so that the
        two always agree: the new best.pt is written aside first, recorded in the state's
        "best_file", and renamed in after the checkpoint; a stop between leaves a pending file
        that settle_best settles. On failure ``state`` is left as it was."""
        pending = self.out / PENDING_BEST
        recorded = state["best_file"]
        try:
            if best is not None:
                save_atomic(best, pending)
                state["best_file"] = file_record(pending)
            save_atomic(state, self.out / CHECKPOINT)
        except BaseException:
            pending.unlink(missing_ok=True)  # the epoch is not saved: nor is its best
            state["best_file"] = recorded
            raise
        if best is not None:
            os.replace(pending, self.out / BEST)

    def write_history(self, history: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in HISTORY_FIELDS})
        write_text_atomic(self.out / HISTORY, buffer.getvalue())

    def set_aside(self, kind: str) -> Path:
        """Move the run's files into ``<out>/<kind>-<UTC time>/`` (kept, never deleted).
        metrics.json goes first: a folder seen halfway through is an incomplete run, not a
        complete one missing its files."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.out / f"{kind}-{stamp}"
        for n in range(2, 100):
            try:
                aside.mkdir()
                break
            except FileExistsError:
                aside = self.out / f"{kind}-{stamp}-{n}"
        for name in RUN_FILES:
            try:
                os.replace(self.out / name, aside / name)
            except FileNotFoundError:
                pass
        return aside


def data_identity(manifest: dict) -> dict:
    """What a prepared dataset holds: its tensors' sha256 (small datasets), or the fingerprint
    of the image folder it points at (ImageNet)."""
    return manifest.get("files") or {"listing_sha256": manifest.get("source", {}).get(
        "listing_sha256")}
