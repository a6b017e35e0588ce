"""The reproducibility report: summary.json -> one self-contained HTML file and its PDF.

Every number comes from summary.json (written by ``apot summarize`` from the runs' own files)
or from apot/cited.yaml (the paper's and the reproducibility report's figures, with sources).
A row whose run did not happen says why; nothing is filled in.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from .checkpoints import write_text_atomic
from .errors import UserError
from .study import FLOAT_BITS, FLOAT_SCHEME

TEMPLATES = Path(__file__).resolve().parents[1] / "report" / "templates"
CITED = Path(__file__).with_name("cited.yaml")


def load_cited() -> dict:
    return yaml.safe_load(CITED.read_text())


def _drop(base: float | None, value: float | None) -> float | None:
    return None if base is None or value is None else round(base - value, 2)


def comparison_tables(summary: dict, cited: dict) -> list[dict]:
    """The reproducibility report's Tables 1-4, each row with three column groups: the paper,
    the reproducibility report, this run (accuracy and drop against the matching FP32)."""
    groups = {(g["dataset"], g["arch"], g["schedule"], g["scheme"], g["bits"]): g
              for g in summary["groups"]}
    tables = []
    for table in cited["tables"]:
        base_rows = {r["arch"]: r for r in table["rows"] if r["bits"] == FLOAT_BITS}
        rows = []
        for cited_row in table["rows"]:
            arch, bits = cited_row["arch"], cited_row["bits"]
            scheme = FLOAT_SCHEME if bits == FLOAT_BITS else "apot"
            group = groups.get((table["dataset"], arch, table["schedule"], scheme, bits))
            base = base_rows.get(arch, {})
            row = {"arch": arch, "bits": bits,
                   "paper": cited_row["paper"], "repro": cited_row["repro"],
                   "paper_drop": None if bits == FLOAT_BITS else _drop(base.get("paper"), cited_row["paper"]),
                   "repro_drop": None if bits == FLOAT_BITS else _drop(base.get("repro"), cited_row["repro"])}
            if group is None:
                row["status"] = "not configured in this preset"
            elif group["status"] != "done":
                row["status"] = group["status"]
            else:
                row["status"] = "done"
                row["ours"] = group["best_top1"]
            rows.append(row)
        tables.append({**table, "rows": rows})
    return tables


def render_html(summary: dict) -> str:
    """The report as one HTML string: inline CSS, no external references."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["pct"] = lambda v: "—" if v is None else f"{v:.2f}"
    env.filters["signed"] = lambda v: "—" if v is None else f"{v:+.2f}"
    cited = load_cited()
    preset = summary["config"]["presets"][summary["preset"]]
    context = {"summary": summary, "cited": cited, "preset": preset,
               "tables": comparison_tables(summary, cited),
               "css": (TEMPLATES / "report.css").read_text(),
               "config_yaml": yaml.safe_dump({"preset": summary["preset"], **{
                   k: v for k, v in summary["config"].items() if k not in ("presets", "preset")},
                   "presets": {summary["preset"]: preset}}, sort_keys=True)}
    return env.get_template("report.html.j2").render(**context)


def write_pdf(html_text: str, path: Path) -> None:
    """PDF of the same HTML through WeasyPrint (print CSS: page numbers, unsplit rows)."""
    import weasyprint

    tmp = path.with_name(f".{path.name}.tmp")
    # Embedded font subsets carry a "modified" timestamp (fontTools) unless SOURCE_DATE_EPOCH
    # fixes it: without this, the same report would give a different PDF every time.
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ.setdefault("SOURCE_DATE_EPOCH", "0")
    try:
        weasyprint.HTML(string=html_text, base_url=str(TEMPLATES)).write_pdf(str(tmp))
    finally:
        if saved is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
    tmp.replace(path)


def build_report(summary_path: str | Path, out_dir: str | Path) -> dict:
    """Render report.html and report.pdf from summary.json into ``out_dir``."""
    summary_path, out_dir = Path(summary_path), Path(out_dir)
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {summary_path} ({exc}); run 'apot summarize' "
                        f"(the summarize rule) first") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    text = render_html(summary)
    write_text_atomic(out_dir / "report.html", text)
    write_pdf(text, out_dir / "report.pdf")
    return {"html": str(out_dir / "report.html"), "pdf": str(out_dir / "report.pdf"),
            "preset": summary["preset"]}
