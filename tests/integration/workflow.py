"""Helpers for the workflow tests: a copy of the repository's working tree in a temporary
folder (so Snakemake's and DVC's state never touch the checkout), and runners for snakemake
and dvc from the test's own virtual environment."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# What the workflow needs from the checkout (the apot package itself is installed).
WORKFLOW_FILES = ("apot", "Snakefile", "rules", "schemas", "config.yaml", "profiles",
                  "report/templates", "report/captions", "report/workflow.rst", "dvc.yaml",
                  ".dvc/config", ".dvc/.gitignore", ".dvc/plots", ".gitignore", ".dvcignore")
# The acceptance command's arguments: snakemake --cores 2 --config preset=smoke on_missing_data=skip
SMOKE = ["--cores", "2", "--config", "preset=smoke", "on_missing_data=skip"]


# Another configuration of the smoke preset, as a user previewing an edit would give it with
# --configfile: the multistep chain's 4-bit step at learning rate 0.5 instead of 0.04.
CHANGED_STEP = ("cifar10", 1, 0.5)  # study, chain step, its new learning rate
CHANGED_RUNS = tuple(f"cifar10/resnet20/multistep/apot-w{bits}/seed0" for bits in (4, 3, 2))


def write_changed_config(path: Path) -> Path:
    """A --configfile that changes CHANGED_STEP's learning rate in the smoke preset."""
    study, step, lr = CHANGED_STEP
    chain = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["smoke"]["studies"][
        study]["chain"]
    chain[step]["lr"] = lr
    path.write_text(yaml.safe_dump({"presets": {"smoke": {"studies": {study: {"chain": chain}}}}}))
    return path


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def copy_study(study: Path, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of a workflow folder where the smoke study ran (results, logs, benchmarks, report
    and Snakemake's records), without the runs under ``drop`` (folders under
    results/smoke/runs/) and their logs and benchmarks: a study whose next run of the workflow
    must train just those again, and redo what depends on them. The tests share the session's
    smoke study this way instead of training it all again."""
    shutil.copytree(study, dest, symlinks=True)
    for prefix in drop:
        for top in ("results/smoke/runs", "logs/smoke/runs", "benchmarks/smoke/runs"):
            shutil.rmtree(dest / top / prefix)
    return dest


def git(cwd: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
               cwd).stdout


def env(**extra: str) -> dict:
    result = {**os.environ, "DVC_NO_ANALYTICS": "1", "APOT_OFFLINE": "1",
              "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result.pop("APOT_DATA_MIRROR", None)
    result.update(extra)
    return result


def run(args: list[str], cwd: Path, timeout: float = 900, check: bool = True,
        **extra_env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env(**extra_env), capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def snakemake(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run([str(BIN / "snakemake"), *args], cwd, **kw)


def dvc(cwd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], cwd, **kw)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a snakemake run or dry run: rule -> number of jobs."""
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+(\d+)", output, re.S)
    if match is None:
        return {}
    counts = {}
    for line in match.group(1).splitlines():
        name, count = line.split()
        counts[name] = int(count)
    return counts


def job_inputs(output: str, target: str) -> list[str]:
    """The inputs of the job whose output is ``target``, from a dry run's printout."""
    for block in output.split("\n\n"):
        lines = {line.strip().split(": ", 1)[0]: line.strip().split(": ", 1)[1]
                 for line in block.splitlines() if ": " in line.strip()}
        if lines.get("output") == target:
            return lines.get("input", "").split(", ") if lines.get("input") else []
    raise AssertionError(f"no job writes {target}")


def study_file(output: str) -> str:
    """The study file the jobs of a dry run (-n; with -p for the summary's) read: each job
    names the same one."""
    named = set(re.findall(r" -m apot (?:train|summarize|export) (?:\S+ )*?--study (\S+)", output))
    assert len(named) == 1, named
    return named.pop()


def nothing_to_do(output: str) -> bool:
    return "Nothing to be done" in output


def edit_config(folder: Path, **changes) -> None:
    """Set top-level keys of the copy's config.yaml (the way a user edits it)."""
    path = folder / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
