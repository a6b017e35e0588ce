"""The study on a real SLURM cluster through profiles/slurm and Snakemake's SLURM executor
plugin: a single-node cluster started on this machine (tests/integration/slurm.py), the smoke
preset run on it (CPU only) and compared with a local run, and a training job that asks for
the node's (stand-in) GPU cancelled with scancel: resumed by the profile's retry, then, after a
second cancel, by running the workflow again."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
import yaml
from slurm import PARTITION, LocalSlurm, install
from workflow import BIN, copy_study, copy_workflow, env, job_counts, snakemake

pytestmark = pytest.mark.slurm

# The SLURM profile, with job states checked from 1 s after submission and every 2 s instead of
# the plugin's cluster defaults (40 s, 10 s): the smoke jobs take seconds each.
ON_SLURM = ["--profile", "profiles/slurm", "--seconds-between-status-checks", "2",
            "--slurm-init-seconds-before-status-checks", "1"]
SMOKE_CPU = ["--config", "preset=smoke", "device=cpu", "on_missing_data=skip"]
TRAIN_RULES = ("train_fp32", "train_quantized")
RUN = "runs/cifar10/resnet20/multistep/fp32-w32/seed0"
EPOCHS = 24  # of the run that is cancelled twice: about half a second each


@pytest.fixture(scope="module")
def cluster():
    reason = install()
    if reason:
        pytest.skip(reason)
    with LocalSlurm() as running:
        yield running


def cluster_workflow(folder, cluster: LocalSlurm, study=None, drop: tuple[str, ...] = ()):
    """A copy of the workflow (or of the folder ``study`` where it ran, without the runs under
    ``drop``: workflow.copy_study) whose SLURM profile names this cluster's partition, with one
    CPU per job (the test node has as few as 2): the settings a user edits once."""
    folder = copy_study(study, folder, drop) if study is not None else copy_workflow(folder)
    path = folder / "profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"]["slurm_partition"] = PARTITION
    assert set(profile["set-resources"]) == set(profile["set-threads"]) == {*TRAIN_RULES,
                                                                            "eval_authors"}
    for rule in profile["set-resources"]:
        profile["set-resources"][rule]["cpus_per_task"] = 1
        profile["set-threads"][rule] = 1
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def slurm_job_ids(log: str) -> list[str]:
    """The SLURM jobs a training log says it ran in (apot train's first line per process)."""
    return re.findall(r"\(SLURM job (\d+)\)", log)


def tree(folder) -> set[str]:
    return {str(p.relative_to(folder)) for top in ("results", "logs", "benchmarks", "report/build")
            for p in (folder / top).rglob("*") if p.is_file()}


def test_the_cluster_runs_jobs(cluster):
    nodes = subprocess.run(["sinfo", "-h", "-o", "%P %a %T %D"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert nodes == [f"{PARTITION}*", "up", "idle", "1"]
    host = subprocess.run(["srun", "--partition", PARTITION, "hostname"], capture_output=True,
                          text=True, timeout=60, check=True).stdout.strip()
    assert host.split(".")[0] == cluster.node


# What the SLURM run redoes of the session's smoke study: the last step of a chain (2 bits: one
# training job, nothing after it but its exports) and one evaluation of the authors'
# checkpoints. (train_fp32 runs on the cluster in the scancel test below.)
CHAIN = "cifar10/resnet20/multistep"
DROPPED = f"{CHAIN}/apot-w2"
DROPPED_AUTHORS = "authors/resnet20-w2"


def test_smoke_preset_on_slurm_matches_a_local_run(cluster, tmp_path, shared_data, smoke_study):
    """The session's smoke study, less one run and one evaluation, finished on the cluster:
    every job of a cluster rule runs as its own SLURM job, and the files are the local run's."""
    local = smoke_study.folder
    folder = cluster_workflow(tmp_path / "study", cluster, local, drop=(DROPPED,))
    (folder / f"results/smoke/{DROPPED_AUTHORS}.json").unlink()
    (folder / f"logs/smoke/{DROPPED_AUTHORS}.log").unlink()
    before = set(cluster.job_states())
    done = snakemake(folder, *ON_SLURM, *SMOKE_CPU, timeout=1500,
                     APOT_DATA_MIRROR=str(shared_data), check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output[-5000:]}\n{cluster.logs()}"
    counts = job_counts(output)
    assert "train_fp32" not in counts and counts["train_quantized"] == 1
    assert counts["eval_authors"] == 1 and counts["export_packed"] == counts["export_onnx"] == 1

    # the training job ran as its own, completed SLURM job of this workflow
    states = cluster.job_states()
    log = folder / "logs/smoke/runs" / DROPPED / "seed0.log"
    [job] = slurm_job_ids(log.read_text())
    assert states.get(job) == "COMPLETED" and job not in before, states
    assert cluster.job_gpus(job) == 0  # device=cpu: no GPU asked for
    metrics = folder / "results/smoke/runs" / DROPPED / "seed0/metrics.json"
    assert [e["slurm_job_id"] for e in json.loads(metrics.read_text())["executions"]] == [job]
    # the jobs the plugin submitted, and nothing else: SLURM jobs = cluster rules' jobs
    cluster_jobs = sum(n for rule, n in counts.items()
                       if rule in (*TRAIN_RULES, "eval_authors", "export_packed", "export_onnx"))
    assert len(set(states) - before) == cluster_jobs

    # the same files as the local run of the same preset, and the report says where runs ran
    assert tree(folder) == tree(local)
    html = (folder / "report/build/smoke/report.html").read_text()
    assert "1 of 12 runs as SLURM jobs (1 job)" in html
    assert (folder / "report/build/smoke/report.pdf").read_bytes().startswith(b"%PDF")


def read(path) -> str:
    """A log that Snakemake may be replacing (it removes a job's log before each attempt)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def epochs_done(history) -> int:
    return max(len(read(history).splitlines()) - 1, 0)


def wait_for(condition, what: str, process: subprocess.Popen, output, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the workflow ended before {what}:\n" + read(output)[-5000:]
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.2)


def test_scancel_then_rerun_resumes_from_the_last_checkpoint(cluster, tmp_path, shared_data,
                                                             smoke_study):
    """One longer training run with the default device (auto), so that its job asks for a GPU
    as on a GPU cluster. Its job is cancelled after a few epochs: the profile's one retry
    resubmits it and the new job resumes the run. That job is cancelled too: Snakemake reports
    the failure, and running the workflow again resumes the run once more and finishes it.
    The smoke study's prepared data is copied in (it is not what this test is about)."""
    folder = cluster_workflow(tmp_path / "study", cluster)
    shutil.copytree(smoke_study.folder / "results/smoke/data", folder / "results/smoke/data")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["presets"]["smoke"]["studies"]["cifar10"]["epochs"] = EPOCHS
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert yaml.safe_load((folder / "profiles/slurm/config.yaml").read_text())["retries"] == 1
    target = f"results/smoke/{RUN}/metrics.json"
    command = [str(BIN / "snakemake"), target, *ON_SLURM, "--config", "preset=smoke",
               "on_missing_data=skip"]
    workflow_env = env(APOT_DATA_MIRROR=str(shared_data))
    log = folder / f"logs/smoke/{RUN}.log"
    history = folder / f"results/smoke/{RUN}/history.csv"
    output = tmp_path / "first.out"
    with open(output, "w") as sink:
        first = subprocess.Popen(command, cwd=folder, env=workflow_env, stdout=sink,
                                 stderr=subprocess.STDOUT)
    try:
        # attempt 1: cancelled after 3 epochs
        wait_for(lambda: epochs_done(history) >= 3, "3 epochs", first, output)
        [job1] = slurm_job_ids(read(log))
        assert cluster.job_gpus(job1) == 1  # the profile's gpu resource, as sbatch --gpus=1
        subprocess.run(["scancel", job1], check=True, timeout=30)
        # attempt 2, the profile's retry: a new job resumes the run; cancelled 3 epochs later
        wait_for(lambda: re.search(r"\(SLURM job (?!%s\))\d+\).*resuming after epoch" % job1,
                                   read(log)), "resumed second attempt", first, output)
        text = read(log)
        [job2] = slurm_job_ids(text)
        after1 = int(re.search(r"resuming after epoch (\d+) of", text).group(1))
        assert 3 <= after1 < EPOCHS - 6
        wait_for(lambda: epochs_done(history) >= after1 + 3, "3 more epochs", first, output)
        subprocess.run(["scancel", job2], check=True, timeout=30)
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    out = read(output)
    assert first.returncode != 0 and f"SLURM-job '{job2}' failed" in out, out[-5000:]
    assert f"SLURM-job '{job1}' failed" in out
    states = cluster.job_states()
    assert states[job1] == states[job2] == "CANCELLED"
    stopped = read(log)
    assert "apot train: stopped by SIGTERM" in stopped, stopped
    after2 = after1 + len(re.findall(rf"^epoch \d+/{EPOCHS}:", stopped, re.M))
    assert after2 < EPOCHS and not (folder / target).exists()

    # the user runs the workflow again
    done = subprocess.run(command, cwd=folder, env=workflow_env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    text = read(log)  # Snakemake started the job's log afresh: the third job's story
    [job3] = slurm_job_ids(text)
    assert job3 not in (job1, job2) and cluster.job_states()[job3] == "COMPLETED"
    assert cluster.job_gpus(job3) == 1
    # no CUDA behind the stand-in GPU: --device auto trains on the CPU
    assert f"(SLURM job {job3}), device cpu, resuming after epoch {after2} of {EPOCHS}" in text
    resumed = [int(n) for n in re.findall(rf"^epoch (\d+)/{EPOCHS}:", text, re.M)]
    assert resumed == list(range(after2 + 1, EPOCHS + 1))
    # the run's own record: which job trained which epochs, none twice
    metrics = json.loads((folder / target).read_text())
    assert [(e["slurm_job_id"], e["first_epoch"], e["epochs"]) for e in metrics["executions"]] \
        == [(job1, 0, after1), (job2, after1, after2 - after1), (job3, after2, EPOCHS - after2)]
    assert [int(row.split(",")[0]) for row in history.read_text().splitlines()[1:]] == list(
        range(EPOCHS))
