"""The scheme and dataset registries: one entry is all a new scheme needs, scheme names are
written nowhere else, and the config schema's name lists are the registries'."""
from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import REGISTER_TOY, TOY
from summary_builder import CONFIG, write_run

from apot.cli import main
from apot.cli.parser import build_parser
from apot.data.datasets import dataset_names, study_datasets
from apot.deploy.cost import cost_tables
from apot.quant import schemes
from apot.quant.levels import apot_magnitudes
from apot.reporting.render import render_html
from apot.reporting.summary import summarize
from apot.workflow.study import expand_runs, validate_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())


@pytest.fixture
def toy_scheme():
    exec(REGISTER_TOY, {})
    yield schemes.get_scheme(TOY)
    schemes.unregister(TOY)


def test_a_scheme_registered_alone_reaches_the_cli(toy_scheme, capsys):
    assert main(["levels", "--scheme", TOY, "--bits", "3", "--exact"]) == 0
    assert json.loads(capsys.readouterr().out) == [str(v) for v in apot_magnitudes(3, 1)]
    for command in (["eval", "--checkpoint", "c", "--data", "d"], ["cost"]):
        args = build_parser().parse_args([*command, "--arch", "resnet20", "--bits", "4",
                                          "--scheme", TOY])
        assert args.scheme == TOY
    assert main(["cost", "--arch", "resnet20", "--bits", "4", "--scheme", TOY]) == 0
    cost = json.loads(capsys.readouterr().out)
    assert cost["scheme"] == TOY and cost["fixops"] > 0


def test_a_scheme_registered_alone_reaches_the_study_cost_tables_and_report(toy_scheme,
                                                                           tmp_path):
    config = validate_config(copy.deepcopy(CONFIG) | {"preset": "smoke",
                                                      "scheme_ablation": True})
    runs = {run.path: run for run in expand_runs(config)}
    toy_runs = [run for run in runs.values() if run.scheme == TOY]
    assert toy_runs and {run.train["scheme"] for run in toy_runs} == {TOY}
    # each toy chain starts from its study's FP32 step, as APoT's does
    assert {runs[run.parent].scheme for run in toy_runs} == {TOY, schemes.FLOAT}

    tables = cost_tables([("resnet20", 4)])
    study = {row["scheme"]: row for row in tables["study"] if row["bits"] == 4}
    # the same levels as uniform, as sums of powers of two: the same FixOPs
    assert study[TOY]["fixops"] == study["uniform"]["fixops"]

    results = tmp_path / "results" / "smoke"
    base = toy_runs[0].path.split("/" + TOY + "-w")[0]
    write_run(results, f"{base}/fp32-w32/seed0", 80.0, 0, config)
    write_run(results, f"{base}/{TOY}-w4/seed0", 71.25, 0, config)
    summarize({"config": config, "skipped": {}}, results)
    html = render_html(json.loads((results / "summary.json").read_text()))
    table = html.split("<h2>Scheme ablation")[1].split("</table>")[0]
    assert "<th>Toy</th>" in table and "71.25 (n=1)" in table
    levels_figure = html.split('<figure id="fig-levels">')[1].split("</figure>")[0]
    assert ">Toy<" in levels_figure


def test_scheme_names_are_written_only_in_the_registry():
    names = {*schemes.scheme_names(), schemes.FLOAT}
    found = []
    for path in sorted((ROOT / "apot").rglob("*.py")):
        if path == ROOT / "apot" / "quant" / "schemes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    quoted = re.compile(r"""(["'])(%s)\1""" % "|".join(map(re.escape, names)))
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk")),
                 *sorted((ROOT / "report" / "templates").glob("*.j2"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if quoted.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "scheme names outside apot/quant/schemes.py:\n" + "\n".join(found)


def test_the_schema_lists_the_registered_schemes_and_datasets():
    study = SCHEMA["$defs"]["study"]["properties"]
    assert study["schemes"]["items"]["enum"] == list(schemes.scheme_names())
    assert study["dataset"]["enum"] == list(study_datasets())
    assert SCHEMA["$defs"]["dataset"]["properties"]["dataset"]["enum"] == list(study_datasets())
    parser = build_parser()
    prepare = next(a for a in parser._subparsers._group_actions[0].choices["prepare-data"]._actions
                   if a.dest == "dataset")
    assert list(prepare.choices) == list(dataset_names())


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        schemes.register(schemes.Scheme("pot", "again", lambda bits, k: (), None, "#000000"))
    with pytest.raises(ValueError, match="already registered"):
        schemes.register(schemes.Scheme(schemes.FLOAT, "float", lambda bits, k: (), None, "#0"))


def test_the_schema_lists_the_bit_widths_a_model_can_have():
    bits = SCHEMA["$defs"]["chain_step"]["properties"]["bits"]["enum"]
    assert bits == [*schemes.MODEL_BITS, schemes.FLOAT_BITS]
