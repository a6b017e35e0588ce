"""A check of config.yaml before Snakemake's `configfile:` reads it: for a YAML syntax error
Snakemake says only that the file "is not valid JSON or YAML", without a line or column."""
from __future__ import annotations

import os
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError


def check_yaml(path: str | os.PathLike) -> None:
    """Raise a WorkflowError naming the line and column of a YAML error in ``path``, or saying
    that its top level is not a mapping. A missing file is left to Snakemake, which names it."""
    path = Path(path)
    if not path.exists():
        return
    try:
        config = yaml.safe_load(path.read_bytes())  # bytes: PyYAML detects the encoding
    except yaml.MarkedYAMLError as exc:
        raise WorkflowError(_where(path, exc)) from None
    except yaml.YAMLError as exc:  # no position (e.g. bytes that are not text)
        raise WorkflowError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); "
                            f"fix the file") from None
    if not isinstance(config, dict):
        what = "empty" if config is None else "a list" if isinstance(config, list) else "one value"
        raise WorkflowError(f"{path} is {what}, not a mapping of settings; write it as "
                            f"'key: value' lines ('git diff {path}' shows what changed)")


def _where(path: Path, exc: yaml.MarkedYAMLError) -> str:
    """'<path> line L, column C: <problem> (<context> at line L'); fix the YAML there'."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = exc.problem or exc.context or "invalid YAML"
    # the context often points at where the broken construct began, a few lines earlier
    if exc.problem and exc.context and exc.context_mark:
        problem += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return f"{where}: {problem}; fix the YAML there"
