"""A workflow job's settings, read from the study file the Snakefile wrote (``--study``) for
one run (``--run``): every setting that defines the job comes from there, so that a job never
mixes the configuration it was started with and another one written since."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from apot.engine.settings import RUNTIME_FIELDS
from apot.errors import UserError, flags
from apot.layout import ResultsLayout
from apot.workflow.study import (RunSpec, check_parent, check_trained, cost_settings,
                                 export_settings, find_run, read_study, train_settings)

# apot export's and apot cost's settings that name files
PATH_FLAGS = ("checkpoint", "out", "result", "verify_data")


def study_run(study: str | os.PathLike | None, run_path: str | None
              ) -> tuple[RunSpec, ResultsLayout, dict]:
    """(run, results layout, config) of a workflow job: the run ``run_path`` of the study file
    ``study``, whose results folder holds the preset's results, and the study's config."""
    if not (study and run_path):
        raise UserError("--study and --run go together: the study file the Snakefile writes "
                        "and a run folder under its runs/")
    config = read_study(study)["config"]
    return find_run(config, run_path), ResultsLayout.of_study_file(study), config


def train_job_settings(study, run_path, given: dict[str, Any]) -> dict[str, Any]:
    """apot train's settings of a workflow job (apot.workflow.study.train_settings) and the
    ``given`` ones that say where it runs (RUNTIME_FIELDS; any other is refused). The run it
    starts from must have completed with the study's settings of it."""
    defining = [name for name in given if name not in RUNTIME_FIELDS]
    if defining:
        raise UserError(f"{flags(defining)}: the study file defines the run; leave them out, "
                        f"or give every setting without --study")
    run, layout, config = study_run(study, run_path)
    check_parent(config, run, layout, study)
    return {**train_settings(run, layout), **given}


def export_job_settings(study, run_path, given: list[str], format: str) -> dict[str, Any]:
    """apot export's settings of a workflow job in ``format`` (apot.workflow.study.
    export_settings); ``given``: the defining flags also given, refused."""
    return trained_run_settings(study, run_path, given, "export",
                                lambda run, layout: export_settings(run, layout, format))


def cost_job_settings(study, run_path, given: list[str]) -> dict[str, Any]:
    """apot cost's settings of a workflow job (apot.workflow.study.cost_settings)."""
    return trained_run_settings(study, run_path, given, "cost", cost_settings)


def trained_run_settings(study, run_path, given: list[str], job: str,
                         settings) -> dict[str, Any]:
    """``settings(run, layout)`` of a ``job`` that reads a trained run, paths as Paths. The run
    must have completed with the study's settings; the flags ``given`` are refused (the
    study file defines the job)."""
    if given:
        raise UserError(f"{flags(given)}: the study file defines the {job}; leave them out, "
                        f"or give every setting without --study")
    run, layout, _ = study_run(study, run_path)
    check_trained(run, layout, study)
    return {name: Path(value) if name in PATH_FLAGS else value
            for name, value in settings(run, layout).items()}
