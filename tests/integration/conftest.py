import subprocess
import time
from typing import NamedTuple

import pytest
from workflow import BIN, SMOKE, copy_workflow, env, snakemake, write_changed_config


class SmokeStudy(NamedTuple):
    folder: object   # the workflow folder (pathlib.Path)
    output: str      # what the run printed
    beside: str      # what the dry run of another config, run while it trained, printed


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory, shared_data):
    """The acceptance command, run once per session (the workflow tests and the SLURM test
    compare against it): APOT_DATA_MIRROR=../shared/data snakemake --cores 2 --config
    preset=smoke on_missing_data=skip. Once its first training job has started, a dry run of
    another configuration (one step's learning rate, through --configfile) runs beside it, as
    a user previewing an edit would: no job of the run may read that configuration
    (tests/integration/test_faults_system.py checks what each run recorded)."""
    base = tmp_path_factory.mktemp("smoke")
    folder = copy_workflow(base / "study")
    changed = write_changed_config(base / "changed.yaml")
    mirror = {"APOT_DATA_MIRROR": str(shared_data)}
    with subprocess.Popen([str(BIN / "snakemake"), *SMOKE], cwd=folder, env=env(**mirror),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
        try:
            _wait_for_training(folder, run)
            beside = snakemake(folder, "-n", "--configfile", str(changed), *SMOKE, **mirror)
        finally:
            output, _ = run.communicate(timeout=1200)
    assert run.returncode == 0, output[-6000:]
    return SmokeStudy(folder, output, beside.stdout + beside.stderr)


def _wait_for_training(folder, run: subprocess.Popen, timeout: float = 600) -> None:
    """Until a training job's log appears (its shell opens the log as the job starts)."""
    deadline = time.monotonic() + timeout
    while not any((folder / "logs/smoke/runs").rglob("seed0.log")):
        assert run.poll() is None, "the smoke run ended before any training job started"
        assert time.monotonic() < deadline, "no training job started"
        time.sleep(0.2)
