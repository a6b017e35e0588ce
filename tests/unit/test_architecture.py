"""The package's shape, checked: its layers and their import rules (import-linter's contracts in
pyproject.toml), a top level a reader takes in at a glance, short functions, a thin command
line."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "apot"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MIN_CONTRACTS = 4
MAX_TOP_LEVEL = 14
MAX_FUNCTION_LINES = 80
MAX_CLI_LINES = 400


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` with the contracts of ``root``'s
    pyproject.toml."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True,
                          text=True, timeout=300)


def contract_counts(output: str) -> tuple[int, int]:
    found = re.search(r"Contracts: (\d+) kept, (\d+) broken", output)
    assert found, output[-3000:]
    return int(found[1]), int(found[2])


def test_import_contracts_hold():
    result = lint_imports(ROOT)
    kept, broken = contract_counts(result.stdout)
    assert result.returncode == 0 and broken == 0, result.stdout[-4000:]
    assert kept >= MIN_CONTRACTS


@pytest.mark.parametrize("module, upward", [
    ("engine/evaluate.py", "from apot.workflow.study import read_study"),
    ("quant/levels.py", "from apot.models import ARCHS"),
    ("workflow/study.py", "import torch"),
    ("quant/functional.py", "from apot.quant.modules import WGT_ALPHA_INIT"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, upward):
    """The contracts catch what they are for: the same tree with one import added where the
    layers forbid it fails lint-imports."""
    shutil.copytree(PACKAGE, tmp_path / "apot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / "apot" / module
    target.write_text(target.read_text() + f"\n{upward}\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert contract_counts(result.stdout)[1] >= 1


def test_the_workflow_side_runs_without_torch():
    """What the Snakefile imports while it parses loads no torch (the forbidden contract checks
    the imports as written; this checks them as they run)."""
    modules = ["apot.workflow.study", "apot.workflow.configfile", "apot.workflow.gpu_hours",
               "apot.storage.integrity", "apot.layout", "apot.quant.schemes",
               "apot.data.sources", "apot.engine.settings"]
    code = f"import sys, {', '.join(modules)}; print(sorted(m for m in sys.modules " \
           f"if m.split('.')[0] in ('torch', 'torchvision', 'numba', 'onnx', 'onnxruntime')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_top_level_is_short():
    entries = [p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"]
    assert len(entries) <= MAX_TOP_LEVEL, sorted(entries)


def long_functions(folder: Path, limit: int) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(folder)}:{node.lineno} {node.name}: {lines}")
    return found


def test_no_function_is_longer_than_the_limit():
    assert not long_functions(PACKAGE, MAX_FUNCTION_LINES)


def test_long_functions_are_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    assert long_functions(tmp_path, MAX_FUNCTION_LINES) != []


def test_the_command_line_only_parses_and_calls():
    lines = sum(len(p.read_text().splitlines()) for p in (PACKAGE / "cli").rglob("*.py"))
    assert lines <= MAX_CLI_LINES
