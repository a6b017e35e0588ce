"""Where a preset's results live, and how every result file is written (atomically).

The one statement of the results layout: the rules (rules/common.smk), the training engine,
the integrity checks and the summary all build their paths here. No torch: the Snakefile
imports this when it is parsed, and on a cluster every job parses it again.

    results/<preset>/
      studies/<digest>.json           the resolved study of one invocation, named by its
                                      content (the Snakefile writes it; jobs read it)
      data/<name>/manifest.json       a prepared dataset (apot prepare-data)
      runs/<run>/                     one training run (apot train; <run>: apot.workflow.study.run_path)
        checkpoint.pt best.pt history.csv metrics.json cost.json packed.safetensors packed.json
        model.onnx onnx.json
      starts/<file>.pt                released models a warm chain starts from
      authors/resnet20-w<bits>.json   the authors' checkpoints evaluated
      cost.json                       the cost tables
      summary.json summary.csv accuracy.json histories.csv
    logs/<preset>/...  benchmarks/<preset>/...  (Snakemake's job logs and timings)
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The files of one run folder. metrics.json is written last, when the run completes.
CHECKPOINT, BEST, HISTORY, METRICS = "checkpoint.pt", "best.pt", "history.csv", "metrics.json"
# Each image's predicted class at the best epoch (apot.engine.predictions): what pairs two models' errors.
PREDICTIONS = "predictions.npz"
RUN_COST = "cost.json"
# A quantized run's best weights as a packed model (apot export), and what the export printed.
PACKED, PACKED_RESULT = "packed.safetensors", "packed.json"
# The same weights as an ONNX model (apot export --format onnx, the qdq form), and its check.
ONNX_MODEL, ONNX_RESULT = "model.onnx", "onnx.json"
# history.csv's columns: one row per completed epoch
HISTORY_FIELDS = ("epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1",
                  "test_top5", "images_per_s", "epoch_seconds")
# A new best.pt waits here until the checkpoint that records it is written (apot.engine.train).
PENDING_BEST = ".best.pt.pending"
MANIFEST = "manifest.json"  # a prepared dataset's
# the preset's own files in results/<preset> (ResultsLayout.preset_file)
COST_TABLES, CLAIMS, ACCURACY, HISTORIES = ("cost.json", "claims.json", "accuracy.json",
                                            "histories.csv")
# The rendered reports, one folder per preset (ResultsLayout.report_dir): report.html,
# report.pdf, config.yaml, figures/, tables/
REPORT_DIR = "report/build"
# Study files are named by the first hex digits of their content's sha256: a file, once
# written, never changes, so an invocation (a dry run too) cannot alter what a running job reads.
STUDIES, STUDY_DIGEST_CHARS = "studies", 16


@dataclass(frozen=True)
class ResultsLayout:
    """The paths of one preset's results, as strings relative to the workflow folder (what
    Snakemake rules name). ``results``: ``results/<preset>``."""
    results: str

    @classmethod
    def of_preset(cls, preset: str) -> "ResultsLayout":
        return cls(f"results/{preset}")

    @property
    def preset(self) -> str:
        return Path(self.results).name

    @property
    def report_dir(self) -> str:
        """The preset's rendered report (apot report): report/build/<preset>."""
        return f"{REPORT_DIR}/{self.preset}"

    @property
    def logs(self) -> str:
        """The jobs' logs, one per job (logs/<preset>/...)."""
        return f"logs/{self.preset}"

    @property
    def benchmarks(self) -> str:
        """Snakemake's job times (benchmarks/<preset>/...), which the summary reports."""
        return f"benchmarks/{self.preset}"

    @classmethod
    def of_study_file(cls, path: str | os.PathLike) -> "ResultsLayout":
        """The layout a study file belongs to: results/<preset>/studies/<digest>.json."""
        return cls(Path(path).parents[1].as_posix())

    @property
    def studies_dir(self) -> str:
        return f"{self.results}/{STUDIES}"

    def study_file(self, digest: str) -> str:
        """The study file whose content's sha256 begins with ``digest``."""
        return f"{self.studies_dir}/{digest}.json"

    def preset_file(self, name: str) -> str:
        """A file of the whole preset: COST_TABLES (apot cost-tables), CLAIMS (the verdicts as
        data, which the report renders), ACCURACY and HISTORIES (what DVC tracks)."""
        return f"{self.results}/{name}"

    def summary(self, suffix: str = "json") -> str:
        """summary.json, or with ``suffix`` csv the table of groups."""
        return f"{self.results}/summary.{suffix}"

    def data_dir(self, name: str) -> str:
        return f"{self.results}/data/{name}"

    def manifest(self, name: str) -> str:
        return f"{self.data_dir(name)}/{MANIFEST}"

    @property
    def runs_dir(self) -> str:
        return f"{self.results}/runs"

    def run_dir(self, run: str) -> str:
        return f"{self.runs_dir}/{run}"

    def run_file(self, run: str, name: str) -> str:
        return f"{self.run_dir(run)}/{name}"

    def run_benchmark(self, run: str) -> str:
        """Snakemake's timing of a run's training job."""
        return benchmark_file(self.benchmarks, run)

    def log(self, name: str) -> str:
        """A job's log: ``name`` is its output's path under results/<preset>, without the
        suffix (runs/<run>, authors/resnet20-w4, data/cifar10), or the rule's name."""
        return f"{self.logs}/{name}.log"

    @property
    def authors_dir(self) -> str:
        return f"{self.results}/authors"

    def authors_result(self, bits: int | str) -> str:
        return f"{self.authors_dir}/resnet20-w{bits}.json"

    def authors_predictions(self, bits: int | str) -> str:
        """The per-image test predictions of the authors' released model (apot.engine.predictions)."""
        return f"{self.authors_dir}/resnet20-w{bits}.{PREDICTIONS}"

    @property
    def starts_dir(self) -> str:
        return f"{self.results}/starts"

    def start(self, relative: str) -> str:
        """A staged start, from its path relative to the results (apot.workflow.study.start_file:
        starts/<file>)."""
        return f"{self.results}/{relative}"


def benchmark_file(benchmarks: str | os.PathLike, run: str) -> str:
    """A run's benchmark file under the benchmarks folder ``benchmarks``."""
    return f"{benchmarks}/runs/{run}.tsv"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    write_bytes_atomic(path, text.encode())


def write_text_if_changed(path: str | os.PathLike, text: str) -> bool:
    """write_text_atomic unless ``path`` already holds ``text`` (its time then stays, so
    nothing that depends on it runs again). Returns whether it wrote."""
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return True


def write_bytes_atomic(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename it over ``path``:
    ``path`` is the old file or the new one, never a part. On failure the temporary file is
    removed and the OSError names ``path``."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a result should read like any other
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if exc.filename is None or (tmp is not None and exc.filename == tmp):
            exc.filename = str(path)  # the file the user knows, not our temporary name
        raise
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (for provenance in results)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
