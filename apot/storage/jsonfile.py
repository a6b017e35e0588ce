"""JSON files, read and written one way: a file that cannot be read or parsed is one line naming
it, why and what to do; every file apot writes is standard JSON (a NaN or an infinity, the loss
of a diverged model, becomes null), indented by one space, written atomically."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from apot.errors import UserError, first_line
from apot.layout import write_text_atomic

INDENT = 1


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON value in ``path``; a UserError naming ``path``, the reason and ``fix`` (what
    the user should do, e.g. "re-run apot claims") when it cannot be read or is not JSON."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or first_line(exc)}); {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is damaged: not text; {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is damaged: not valid JSON ({exc}); {fix}") from None


def read_record(path: str | os.PathLike) -> tuple[Any, str | None]:
    """(the JSON value of a record file, None), or (None, why it cannot be read) named by the
    file's name: for checks that collect problems rather than stop at the first."""
    path = Path(path)
    try:
        return json.loads(path.read_text()), None
    except (ValueError, UnicodeDecodeError):
        return None, f"{path.name} is not JSON"
    except OSError as exc:
        return None, f"{path.name} cannot be read ({exc.strerror})"


def json_text(value: Any, indent: int | None = INDENT, sort_keys: bool = False) -> str:
    """``value`` as standard JSON (non-finite floats as null); ``indent=None``: one line."""
    return json.dumps(finite(value), allow_nan=False, indent=indent, sort_keys=sort_keys)


def write_json(path: str | os.PathLike, value: Any, sort_keys: bool = False) -> None:
    """Write ``value`` to ``path`` (json_text and a final newline), atomically."""
    write_text_atomic(path, json_text(value, sort_keys=sort_keys) + "\n")


def write_result(result: dict, path: str | os.PathLike | None) -> dict:
    """A command's ``result``, also written to ``path`` if given (write_json, keys sorted). If
    that write fails, the result is printed before the error: finished work is never lost."""
    if path is not None:
        try:
            write_json(path, result, sort_keys=True)
        except OSError:
            print(json_text(result, indent=None))
            raise
    return result


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float, however deeply nested, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
