"""apot train's settings that a study shares with the engine: their defaults, stated once in the
config schema (schemas/config.schema.yaml) and read from it here, and how paths among them
compare. No torch: the workflow reads these while it parses."""
from __future__ import annotations

from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
# Training settings that name files: a run is keyed on what they hold (the prepared tensors,
# the --init file's sha256), not on how the path is spelled; a run's own folder may move.
PATH_SETTINGS = ("out", "data", "init")
# Config fields that do not change the result: a resumed run may differ in these.
RUNTIME_FIELDS = ("device", "threads", "workers", "progress")

# apot train's settings whose defaults the schema states, for a study: TrainConfig field ->
# where its default is in the schema's $defs. apot train run by hand takes the same defaults.
SCHEMA_DEFAULTS = {
    "k": ("preset", "k"), "first_last": ("preset", "first_last"),
    "batch_size": ("study", "batch_size"), "test_batch_size": ("study", "test_batch_size"),
    "momentum": ("study", "momentum"), "gamma": ("study", "gamma"),
    "act_alpha_calibration": ("study", "act_alpha_calibration"),
    "act_alpha_lr": ("study", "alpha", "act_lr"), "act_alpha_wd": ("study", "alpha", "act_wd"),
    "wgt_alpha_lr": ("study", "alpha", "wgt_lr"), "wgt_alpha_wd": ("study", "alpha", "wgt_wd"),
}


def train_defaults() -> dict[str, Any]:
    """The defaults of SCHEMA_DEFAULTS, read from the schema."""
    import yaml

    definitions = yaml.safe_load(SCHEMA.read_text())["$defs"]
    found = {}
    for name, (where, *keys) in SCHEMA_DEFAULTS.items():
        node = definitions[where]
        for key in keys:
            node = node["properties"][key]
        found[name] = node["default"]
    return found


def same_path(a: str | None, b: str | None) -> bool:
    """Whether two spellings name the same path (resolved against this working folder)."""
    if a is None or b is None:
        return a == b
    return Path(a).resolve() == Path(b).resolve()
