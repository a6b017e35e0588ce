"""The study on a real SLURM cluster through profiles/slurm and Snakemake's SLURM executor
plugin: a single-node cluster started on this machine (tests/integration/slurm.py), the smoke
preset run on it (CPU only), and a training job cancelled with scancel, then resumed."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml

from slurm import PARTITION, LocalSlurm, install
from workflow import BIN, copy_workflow, env, job_counts, snakemake

pytestmark = pytest.mark.slurm

# The study on the cluster: the SLURM profile, CPU jobs, and status checks every 2 s instead
# of the profile's polite cluster defaults (the smoke jobs take seconds each).
ON_SLURM = ["--profile", "profiles/slurm", "--seconds-between-status-checks", "2",
            "--slurm-init-seconds-before-status-checks", "1"]
SMOKE_CPU = ["--config", "preset=smoke", "device=cpu", "on_missing_data=skip"]
TRAIN_RULES = ("train_fp32", "train_quantized")
RUN = "runs/cifar10/resnet20/multistep/fp32-w32/seed0"
EPOCHS = 20  # of the run that is cancelled: about half a second each


@pytest.fixture(scope="module")
def cluster():
    reason = install()
    if reason:
        pytest.skip(reason)
    with LocalSlurm() as running:
        yield running


def cluster_workflow(folder, cluster: LocalSlurm):
    """A copy of the workflow whose SLURM profile names this cluster's partition, with one CPU
    per job (the test node has as few as 2): the settings a user edits once."""
    folder = copy_workflow(folder)
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


def test_smoke_preset_on_slurm_matches_a_local_run(cluster, tmp_path, shared_data, smoke_study):
    folder = cluster_workflow(tmp_path / "study", cluster)
    before = set(cluster.job_states())
    done = snakemake(folder, *ON_SLURM, *SMOKE_CPU, timeout=1500,
                     APOT_DATA_MIRROR=str(shared_data), check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{output[-5000:]}\n{cluster.logs()}"
    counts = job_counts(output)
    assert counts["train_fp32"] == 3 and counts["train_quantized"] == 9

    # every training job ran as its own, completed SLURM job of this workflow
    states = cluster.job_states()
    logs = sorted((folder / "logs/smoke/runs").rglob("seed0.log"))
    assert len(logs) == 12
    ids = [slurm_job_ids(log.read_text()) for log in logs]
    assert all(len(found) == 1 for found in ids), ids
    ids = [found[0] for found in ids]
    assert len(set(ids)) == 12
    assert all(states.get(job) == "COMPLETED" and job not in before for job in ids), states
    assert all(cluster.job_gpus(job) == 0 for job in ids)  # device=cpu: no GPU asked for
    for metrics in (folder / "results/smoke/runs").rglob("metrics.json"):
        executions = json.loads(metrics.read_text())["executions"]
        assert [e["slurm_job_id"] for e in executions] in [[job] for job in ids]
    # the jobs the plugin submitted, and nothing else: SLURM jobs = cluster rules' jobs
    cluster_jobs = sum(n for rule, n in counts.items() if rule in (*TRAIN_RULES, "eval_authors"))
    assert len(set(states) - before) == cluster_jobs

    # the same files as the local run of the same preset, and the report says where runs ran
    local, _ = smoke_study
    assert tree(folder) == tree(local)
    html = (folder / "report/build/report.html").read_text()
    assert "12 of 12 runs as SLURM jobs (12 jobs)" in html
    assert (folder / "report/build/report.pdf").read_bytes().startswith(b"%PDF")


def test_scancel_then_rerun_resumes_from_the_last_checkpoint(cluster, tmp_path, shared_data):
    """One longer training run with the default device (auto), so that its job asks for a GPU
    as on a GPU cluster; the job is cancelled after a few epochs. Snakemake reports the failure;
    running the workflow again resumes the run after its last completed epoch, in a new SLURM
    job, and finishes it."""
    folder = cluster_workflow(tmp_path / "study", cluster)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["presets"]["smoke"]["studies"]["cifar10"]["epochs"] = EPOCHS
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    target = f"results/smoke/{RUN}/metrics.json"
    # --retries 0: the profile's one automatic retry would resume the run by itself; here the
    # user runs the workflow again
    command = [str(BIN / "snakemake"), target, *ON_SLURM, "--retries", "0",
               "--config", "preset=smoke", "on_missing_data=skip"]
    workflow_env = env(APOT_DATA_MIRROR=str(shared_data))
    first = subprocess.Popen(command, cwd=folder, env=workflow_env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    log = folder / f"logs/smoke/{RUN}.log"
    history = folder / f"results/smoke/{RUN}/history.csv"
    deadline = time.monotonic() + 600
    while not (history.is_file() and len(history.read_text().splitlines()) > 3):
        assert first.poll() is None, first.stdout.read()[-5000:]
        assert time.monotonic() < deadline, "the run did not complete 3 epochs in time"
        time.sleep(0.2)
    [job] = slurm_job_ids(log.read_text())
    assert cluster.job_gpus(job) == 1  # the profile's gpu resource, as sbatch --gpus=1
    subprocess.run(["scancel", job], check=True, timeout=30)
    output = first.communicate(timeout=300)[0]
    assert first.returncode != 0 and f"SLURM-job '{job}' failed" in output, output[-5000:]
    assert cluster.job_states()[job] == "CANCELLED"
    stopped = log.read_text()
    assert "apot train: stopped by SIGTERM" in stopped, stopped
    completed = len(re.findall(rf"^epoch \d+/{EPOCHS}:", stopped, re.M))
    assert 3 <= completed < EPOCHS
    assert not (folder / target).exists()

    done = subprocess.run(command, cwd=folder, env=workflow_env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    # Snakemake starts a job's log afresh: it now tells the second job's story
    text = log.read_text()
    [second] = slurm_job_ids(text)
    assert second != job and cluster.job_states()[second] == "COMPLETED"
    assert cluster.job_gpus(second) == 1
    # no CUDA behind the stand-in GPU: --device auto trains on the CPU
    assert f"(SLURM job {second}), device cpu, resuming after epoch {completed} of {EPOCHS}" in text
    resumed = [int(n) for n in re.findall(rf"^epoch (\d+)/{EPOCHS}:", text, re.M)]
    assert resumed == list(range(completed + 1, EPOCHS + 1))
    # the run's own record: epochs 1..completed in the cancelled job, the rest in the second
    metrics = json.loads((folder / target).read_text())
    assert [(e["slurm_job_id"], e["first_epoch"], e["epochs"]) for e in metrics["executions"]] \
        == [(job, 0, completed), (second, completed, EPOCHS - completed)]
    assert [int(row.split(",")[0]) for row in history.read_text().splitlines()[1:]] == list(
        range(EPOCHS))
