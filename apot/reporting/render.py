"""The reproducibility report: summary.json -> one self-contained HTML file and its PDF, and
its figures (SVG) and tables (CSV) as files of their own (for ``snakemake --report``).

Every number comes from summary.json (written by ``apot summarize`` from the runs' own files)
or from apot/reporting/cited.yaml (the paper's and the reproducibility report's figures, with sources).
A row whose run did not happen says why; nothing is filled in.
"""
from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import yaml

from apot.errors import UserError
from apot.layout import ResultsLayout, write_text_atomic
from apot.quant.schemes import (APOT, FLOAT, FLOAT_BITS, REGISTRY, integer_range_problem,
                                scheme_names)
from apot.reporting.claims import VERDICTS, claims_document, group_index
from apot.reporting.cost_claims import cost_section
from apot.reporting.summary import group_fixops, group_name
from apot.storage.jsonfile import read_json, write_json
from apot.workflow.study import SCRATCH, start_label

TEMPLATES = Path(__file__).resolve().parents[2] / "report" / "templates"
CITED = Path(__file__).with_name("cited.yaml")
FIGURES, TABLES = "figures", "tables"  # folders beside report.html
CONFIG_FILE = "config.yaml"  # the resolved config, beside report.html: too long to print
WARM_START = "authors"  # the warm study: chains from the authors' released FP32 model


def load_cited() -> dict:
    return yaml.safe_load(CITED.read_text())


def _drop(base: float | None, value: float | None) -> float | None:
    return None if base is None or value is None else round(base - value, 2)


def comparison_tables(summary: dict, cited: dict) -> list[dict]:
    """The reproducibility report's Tables 1-4, each row with three column groups: the paper,
    the reproducibility report, this run (accuracy and drop against the matching FP32)."""
    groups = group_index(summary)
    tables = []
    for table in cited["tables"]:
        base_rows = {r["arch"]: r for r in table["rows"] if r["bits"] == FLOAT_BITS}
        rows = []
        for cited_row in table["rows"]:
            arch, bits = cited_row["arch"], cited_row["bits"]
            scheme = FLOAT if bits == FLOAT_BITS else APOT
            group = groups.get((table["dataset"], arch, table["schedule"], scheme, bits, SCRATCH))
            base = base_rows.get(arch, {})
            row = {"arch": arch, "bits": bits,
                   "paper": cited_row["paper"], "repro": cited_row["repro"],
                   "paper_drop": None if bits == FLOAT_BITS else _drop(base.get("paper"), cited_row["paper"]),
                   "repro_drop": None if bits == FLOAT_BITS else _drop(base.get("repro"), cited_row["repro"])}
            if group is None:
                row["status"] = "not configured in this preset"
            elif not _measured(group):
                row["status"] = group["status"]
            else:  # done, or partial: the usable seeds' numbers, their count (n) beside them
                row["status"] = "done"
                row["ours"] = group["best_top1"]
            rows.append(row)
        tables.append({**table, "rows": rows})
    return tables


def authors_rows(summary: dict, cited: dict) -> list[dict]:
    """The authors' released checkpoints: published top-1 and ours on this preset's test split,
    one row per bit-width the authors released; a row that did not run says why."""
    authors = summary.get("authors") or {"found": [], "evals": []}
    evals = {e["bits"]: e for e in authors["evals"]}
    rows = []
    for bits, published in cited["authors_checkpoints"]["published"].items():
        row = {"bits": bits, "published": published, "eval": evals.get(bits)}
        if row["eval"] is None:
            row["status"] = ("not evaluated: checkpoint file not found (config key "
                             "authors_checkpoints)" if bits not in authors["found"]
                             else "missing: the evaluation has not completed")
        rows.append(row)
    return rows


def _measured(group: dict) -> bool:
    """The group has a result: every seed done, or some (a partial group, whose n and status
    say how many)."""
    return group["best_top1"]["n"] > 0


def scheme_ablation_rows(summary: dict) -> list[dict]:
    """Every registered scheme side by side for every (dataset, arch, schedule, bits) the
    scheme ablation covers (where a scheme other than APoT ran); each cell is a group (best
    top-1 over seeds) or the reason it is missing."""
    groups = group_index(summary)
    keys = dict.fromkeys((d, a, s, b, start) for (d, a, s, scheme, b, start) in groups
                         if scheme not in (APOT, FLOAT))
    rows = []
    for dataset, arch, schedule, bits, start in keys:
        cells = {}
        for scheme in scheme_names():
            group = groups.get((dataset, arch, schedule, scheme, bits, start))
            cells[scheme] = (group["best_top1"] if group and _measured(group)
                             else {"status": group["status"] if group else "not in this preset"})
        rows.append({"dataset": dataset, "arch": arch, "schedule": schedule, "bits": bits,
                     "start": start, **cells})
    return rows


def warm_rows(summary: dict, cited: dict) -> list[dict]:
    """Our fine-tunes of the authors' released FP32 ResNet-20 (the FP32 control and APoT
    4/3/2-bit) beside the authors' own released models of each bit-width, evaluated by the
    same code on the same test images; one row per bit-width of each warm chain."""
    groups = group_index(summary)
    authors = summary.get("authors") or {}
    evals = {e["bits"]: e for e in authors.get("evals", [])}
    published = cited["authors_checkpoints"]["published"]
    rows = []
    for (dataset, arch, schedule, scheme, bits, start), group in groups.items():
        if dataset != "cifar10" or start != "authors" or scheme not in (FLOAT, APOT):
            continue
        ours = group["best_top1"] if _measured(group) else None
        theirs = evals.get(bits)
        same = theirs is not None and group.get("data") == [authors.get("data")]
        rows.append({"arch": arch, "schedule": schedule, "bits": bits, "status": group["status"],
                     "jpeg": "mirror" in group.get("data_source", []),
                     "ours": ours, "epochs": group.get("epochs"), "authors": theirs,
                     "same_images": same, "published": published.get(bits),
                     "diff": (round(ours["mean"] - theirs["top1"], 2)
                              if ours and theirs and same else None)})
    return sorted(rows, key=lambda r: (r["arch"], r["schedule"], -r["bits"]))






def _run_label(record: dict, seeds: int) -> str:
    name = "FP32" if record["bits"] == FLOAT_BITS else f"{record['scheme']} {record['bits']}-bit"
    return f"{name}, seed {record['seed']}" if seeds > 1 else name


def figures(summary: dict, tables: list[dict], cost: dict | None) -> list[dict]:
    """Every figure of the report: {"id", "caption", "svg"}; only from data that exist."""
    from apot.reporting import figures as fig

    levels = {"id": "levels", "svg": fig.level_sets_svg(),
              "caption": "Levels of uniform, PoT and APoT quantization of unsigned data at 3 "
                         "and 4 bits (α = 1), from apot.quant.levels (the reproducibility "
                         "report's Figure 1)."}
    return [levels, *_curve_figures(summary), *_warm_figures(summary),
            *_bits_figures(tables), *_cost_figures(summary, cost)]


def _curve_figures(summary: dict) -> list[dict]:
    """Test top-1 per epoch, one figure per study (dataset, arch, schedule, start). The warm
    study (start "authors") has its bit-width figure instead: its one-epoch steps would put
    every point at epoch 1."""
    from apot.reporting import figures as fig

    done = [r for r in summary["runs"] if r["status"] == "done" and r.get("curve")
            and r.get("start", SCRATCH) != WARM_START]
    seeds = len(summary["config"]["presets"][summary["preset"]]["seeds"])
    result = []
    for key in dict.fromkeys((r["dataset"], r["arch"], r["schedule"], r.get("start", SCRATCH))
                             for r in done):
        runs = sorted((r for r in done
                       if (r["dataset"], r["arch"], r["schedule"], r.get("start", SCRATCH)) == key),
                      key=lambda r: (r["scheme"] != FLOAT, -r["bits"], r["scheme"], r["seed"]))
        title = f"{key[0]}, {key[1]}, {key[2]}" + (
            "" if key[3] == SCRATCH else f", from {start_label(key[3])}")
        result.append({"id": "curves-" + "-".join(
            [*key[:3], *(() if key[3] == SCRATCH else (start_label(key[3]),))]),
                       "svg": fig.curves_svg(title, [(_run_label(r, seeds), r["bits"], r["curve"])
                                                     for r in runs]),
                       "caption": f"Test top-1 per epoch, {title}: every completed run of this "
                                  f"preset (the reproducibility report's Figures 2-5)."})
    return result


def _warm_figures(summary: dict) -> list[dict]:
    """The warm study: best top-1 against bit-width per scheme, with the seed interval, beside
    the authors' released models; one figure per (dataset, arch, schedule)."""
    from apot.reporting import figures as fig

    warm = [g for g in summary["groups"] if g.get("start") == WARM_START and _measured(g)]
    result = []
    for key in dict.fromkeys((g["dataset"], g["arch"], g["schedule"]) for g in warm):
        groups = [g for g in warm if (g["dataset"], g["arch"], g["schedule"]) == key]
        if all(g["scheme"] == FLOAT for g in groups):
            continue  # only the FP32 control: nothing against bit-width yet
        authors, images = _authors_series(summary, groups)
        title = f"{key[0]}, {key[1]}, {key[2]}, from the authors' FP32 model"
        beside = (f"; beside them the authors' released models, evaluated by this code on "
                  f"{images}" if authors else "")
        result.append({"id": "warm-" + "-".join(key),
                       "svg": fig.warm_bits_svg(title, _warm_series(groups) + authors),
                       "caption": f"Best test top-1 against bit-width, {title}: each scheme's "
                                  f"chain (FP32 control → 4 → 3 → 2 bits), mean ± std over "
                                  f"seeds as error bars, n seeds in the legend (one seed: no "
                                  f"bar){beside}."})
    return result


def _warm_series(groups: list[dict]) -> list[dict]:
    """One series per scheme of the warm groups (the FP32 control as its own), as the figure
    takes them: points (bits, mean, std, n) of best top-1 over seeds."""
    series = []
    for scheme in (FLOAT, *scheme_names()):
        points = [(g["bits"], g["best_top1"]["mean"], g["best_top1"]["std"], g["best_top1"]["n"])
                  for g in groups if g["scheme"] == scheme]
        if points:
            entry = None if scheme == FLOAT else REGISTRY.entry(scheme)
            series.append({"label": entry.label if entry else "FP32 control",
                           "color": entry.color if entry else "#222222", "points": points})
    return series


def _authors_series(summary: dict, groups: list[dict]) -> tuple[list[dict], str]:
    """The authors' released models as one series of the warm figure (no seeds: n is None),
    and which test images they were evaluated on against the chains'."""
    authors = summary.get("authors") or {}
    points = [(e["bits"], e["top1"], 0.0, None) for e in authors.get("evals", [])
              if e.get("top1") is not None]
    if not points:
        return [], ""
    same = all(g.get("data") == [authors.get("data")] for g in groups)
    images = "the same test images" if same else "other test images than the chains'"
    return [{"label": "authors' released models", "color": "#8c8c8c", "marker": "s",
             "points": points}], images


def _bits_figures(tables: list[dict]) -> list[dict]:
    from apot.reporting import figures as fig

    result = []
    for table in tables:
        panels = []
        for arch in dict.fromkeys(r["arch"] for r in table["rows"]):
            rows = [{"bits": r["bits"], "paper": r["paper"], "repro": r["repro"],
                     "ours": r["ours"]["mean"] if r["status"] == "done" else None}
                    for r in table["rows"] if r["arch"] == arch]
            panels.append((arch, rows))
        result.append({"id": f"bits-{table['id']}",
                       "svg": fig.accuracy_by_bits_svg(table["title"], panels),
                       "caption": f"Top-1 against bit-width, {table['title']}: the paper, the "
                                  f"reproducibility report and this run (points exist only where "
                                  f"a value does)."})
    return result


def _cost_figures(summary: dict, cost: dict | None) -> list[dict]:
    from apot.reporting import figures as fig

    if cost is None:
        return []
    series: dict[tuple, list] = {}
    for g in summary["groups"]:
        value = group_fixops(g, cost)
        if not _measured(g) or value is None:
            continue
        value /= 1e6
        for line_scheme in (scheme_names() if g["scheme"] == FLOAT else (g["scheme"],)):
            start = g.get("start", SCRATCH)
            series.setdefault((g["dataset"], g["arch"], g["schedule"], line_scheme,
                               *(() if start == SCRATCH else (f"from {start_label(start)}",))), []
                              ).append((value, g["best_top1"]["mean"], g["bits"]))
    lines = [(" ".join(k), points) for k, points in sorted(series.items())
             if any(b != FLOAT_BITS for _, _, b in points)]
    if not lines:
        return []
    return [{"id": "cost", "svg": fig.accuracy_vs_cost_svg("Accuracy against computation", lines),
             "caption": "Best test top-1 (mean over seeds) against FixOPs per image from the "
                        "cost model, every completed model of this preset; each line starts "
                        "at its FP32 baseline."}]


def packed_rows(summary: dict) -> list[dict]:
    """The exported quantized runs (``apot export``): sizes against the float32 state dict,
    and the packed file's predictions against the checkpoint's."""
    rows = []
    for run in summary["runs"]:
        packed = run.get("packed")
        if run["status"] == "done" and packed:
            rows.append({"run": group_name(run), "seed": run["seed"],
                         "bits": run["bits"], "scheme": run["scheme"],
                         "packed_kb": packed["packed_bytes"] / 1000,
                         "float32_kb": packed["float32_bytes"] / 1000,
                         "smaller": packed["float32_bytes"] / packed["packed_bytes"],
                         "verify": packed.get("verify")})
    return rows


def onnx_rows(summary: dict) -> list[dict]:
    """The quantized runs exported to ONNX (``apot export --format onnx``): size, ONNX
    Runtime's top-1 beside the checkpoint's on the same images, and its speed against the
    same network in float32."""
    rows = []
    for run in summary["runs"]:
        onnx = run.get("onnx")
        if run["status"] == "done" and onnx:
            rows.append({"run": group_name(run), "seed": run["seed"], "bits": run["bits"],
                         "scheme": run["scheme"], "arch": run["arch"],
                         "form": onnx["onnx_form"], "onnx_kb": onnx["onnx_bytes"] / 1000,
                         "fixops": (run.get("cost") or {}).get("fixops"),
                         "verify": onnx.get("verify")})
    return rows


def onnx_skipped(summary: dict) -> list[str]:
    """The completed quantized steps not exported to ONNX, each with the integers its level
    sets would need (apot.quant.schemes.integer_range_problem)."""
    skipped = {}
    for run in summary["runs"]:
        if run["status"] != "done" or run["scheme"] == FLOAT or run.get("onnx"):
            continue
        problem = integer_range_problem(run["scheme"], run["bits"], run.get("k", 2))
        if problem:
            skipped[group_name(run)] = problem
    return [f"{step} ({problem})" for step, problem in sorted(skipped.items())]


def onnx_speed(rows: list[dict]) -> list[dict]:
    """onnx_rows by architecture, scheme and bits: mean images/s in int8 and float32, the
    mean of each run's speedup (measured interleaved with its float32 twin), FixOPs per
    image, and where it was measured."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["verify"]:
            groups.setdefault((row["arch"], row["scheme"], row["bits"]), []).append(row)
    out = []
    for (arch, scheme, bits), members in sorted(groups.items()):
        checks = [m["verify"] for m in members]
        fixops = [m["fixops"] for m in members if m["fixops"] is not None]
        out.append({"arch": arch, "scheme": scheme, "bits": bits, "models": len(members),
                    "fixops": sum(fixops) / len(fixops) if fixops else None,
                    "int8": sum(c["images_per_s"] for c in checks) / len(checks),
                    "float32": sum(c["float32_images_per_s"] for c in checks) / len(checks),
                    "speedup": sum(c["speedup_over_float32"] for c in checks) / len(checks),
                    "integer_convs": sorted({c["integer_convs"] for c in checks}),
                    "where": sorted({f"{c.get('cpu', 'unknown CPU')}, {c.get('threads') or 'all'} "
                                     f"thread(s)" for c in checks})})
    return out


def claims_for(summary: dict) -> dict:
    """The claims document (claims.json's content) of a summary."""
    cited = load_cited()
    return claims_document(summary, cited, cost_section(summary, cited))


def write_claims(summary_path: str | Path, out: str | Path) -> dict:
    """results/<preset>/claims.json from summary.json: the verdicts as data."""
    summary = read_summary(Path(summary_path))
    try:
        document = claims_for(summary)
    except KeyError as exc:
        raise UserError(f"{summary_path}: an entry lacks the field {exc}: {NOT_A_SUMMARY}"
                        ) from None
    write_json(Path(out), document)
    counts = {v: sum(c["verdict"] == v for c in document["claims"]) for v in VERDICTS}
    return {"claims": str(out), **{v: n for v, n in counts.items() if n}}


def read_claims(path: Path, summary: dict) -> dict:
    """claims.json as written by write_claims, for the summary's preset."""
    document = read_json(path, "re-run `apot claims`")
    if not isinstance(document, dict) or not isinstance(document.get("claims"), list):
        raise UserError(f"{path} is not a claims file (no claims list); re-run `apot claims`")
    if document.get("preset") != summary["preset"]:
        raise UserError(f"{path} holds the claims of preset {document.get('preset')!r}, not "
                        f"{summary['preset']!r}; re-run `apot claims` on this summary")
    return document


def report_context(summary: dict, claims: dict | None = None) -> dict:
    """Everything the template reads: the tables, figures, claims and the summary itself.
    ``claims``: the claims document (claims.json); computed from the summary when None."""
    cited = load_cited()
    preset = summary["config"]["presets"][summary["preset"]]
    cost = cost_section(summary, cited)
    tables = comparison_tables(summary, cited)
    document = claims if claims is not None else claims_document(summary, cited, cost)
    claims = document["claims"]
    return {"summary": summary, "cited": cited, "preset": preset, "rule": document["rule"],
            "tables": tables, "cost": cost, "figures": figures(summary, tables, cost),
            "claims": claims, "verdicts": {c["id"]: c["verdict"] for c in claims},
            "schemes": scheme_ablation_rows(summary), "scheme_columns": list(REGISTRY.values()),
            "warm": warm_rows(summary, cited),
            "authors": authors_rows(summary, cited),
            "packed": packed_rows(summary),
            "onnx": (onnx := onnx_rows(summary)), "onnx_speed": (speed := onnx_speed(onnx)),
            "onnx_where": sorted({w for row in speed for w in row["where"]}),
            "onnx_skipped": onnx_skipped(summary),
            "css": (TEMPLATES / "report.css").read_text(),
            "config_yaml": yaml.safe_dump({"preset": summary["preset"], **{
                k: v for k, v in summary["config"].items() if k not in ("presets", "preset")},
                "presets": {summary["preset"]: preset}}, sort_keys=True)}


def render_html(summary: dict, context: dict | None = None) -> str:
    """The report as one HTML string: inline CSS, no external references."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["pct"] = lambda v: "—" if v is None else f"{v:.2f}"
    env.filters["signed"] = lambda v: "—" if v is None else f"{v:+.2f}"
    env.filters["mega"] = lambda v: "—" if v is None else f"{v / 1e6:,.1f}"
    env.filters["num"] = lambda v, d=2: "—" if v is None else f"{v:,.{d}f}"
    return env.get_template("report.html.j2").render(**(context or report_context(summary)))


def _file_name(identifier: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", identifier).strip("-")


def table_files(context: dict) -> dict[str, str]:
    """The report's tables as CSV texts by file name: the accuracy tables against the paper
    and the reproducibility report, and the packed models."""
    files = {}
    for table in context["tables"]:
        rows = [{"arch": r["arch"], "bits": r["bits"], "paper": r["paper"], "repro": r["repro"],
                 "ours_mean": (r.get("ours") or {}).get("mean"),
                 "ours_std": (r.get("ours") or {}).get("std"),
                 "ours_n": (r.get("ours") or {}).get("n"), "status": r["status"]}
                for r in table["rows"]]
        files[f"{_file_name(table['id'])}.csv"] = _csv(rows)
    if context["packed"]:
        files["packed-models.csv"] = _csv([
            {"run": r["run"], "seed": r["seed"], "packed_kb": round(r["packed_kb"], 1),
             "float32_kb": round(r["float32_kb"], 1), "smaller_by": round(r["smaller"], 2),
             **{f"check_{k}": v for k, v in (r["verify"] or {}).items()
                if k not in ("data", "dataset")}} for r in context["packed"]])
    if context["onnx"]:
        files["onnx-models.csv"] = _csv([
            {"run": r["run"], "seed": r["seed"], "form": r["form"],
             "onnx_kb": round(r["onnx_kb"], 1),
             **{f"check_{k}": v for k, v in (r["verify"] or {}).items()
                if k not in ("data", "dataset")}} for r in context["onnx"]])
    return files


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_folder(folder: Path, files: dict[str, str], suffix: str) -> None:
    """Write ``files`` (name -> text, each name ending in ``suffix``) into ``folder``, each
    atomically, and remove the ``suffix`` files of an earlier report that this one no longer
    has (other files, such as Snakemake's timestamp, stay)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        write_text_atomic(folder / name, text)
    for stale in folder.glob(f"*{suffix}"):
        if stale.is_file() and stale.name not in files:
            stale.unlink()


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


# The top-level keys of summary.json that the report reads and their types (apot summarize
# writes them all); "cost" and "authors" may be null or absent (no cost tables, no authors'
# checkpoints in the preset). Deeper structure is the summarizer's, not restated here.
SUMMARY_KEYS = {"preset": str, "description": str, "full_scale": bool, "config": dict,
                "data": dict, "runs": list, "groups": list, "provenance": dict}
SUMMARY_OPTIONAL_KEYS = {"cost": dict, "authors": dict}
WRITE_AGAIN = ("write it again with 'snakemake --cores 1 --forcerun summarize summarize' "
               "(add --config preset=NAME for another preset)")
NOT_A_SUMMARY = f"it is not a summary written by 'apot summarize'; {WRITE_AGAIN}"
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
               float: "number", type(None): "null"}


def read_summary(path: Path) -> dict:
    """summary.json, checked for the top-level keys the report reads (UserError otherwise)."""
    summary = read_json(path, WRITE_AGAIN)
    if not isinstance(summary, dict):
        raise UserError(f"{path} holds a JSON {_JSON_TYPES[type(summary)]}, not an object: "
                        f"{NOT_A_SUMMARY}")
    for key, kind in SUMMARY_KEYS.items():
        if key not in summary:
            raise UserError(f"{path} has no {key!r} key: {NOT_A_SUMMARY}")
        _check_type(summary, key, kind, path)
    for key, kind in SUMMARY_OPTIONAL_KEYS.items():
        if summary.get(key) is not None:
            _check_type(summary, key, kind, path)
    for key in ("runs", "groups"):
        for index, entry in enumerate(summary[key]):
            if not isinstance(entry, dict) or not isinstance(entry.get("status"), str):
                raise UserError(f"{path}: {key}[{index}] has no 'status' (a string): "
                                f"{NOT_A_SUMMARY}")
    presets = summary["config"].get("presets")
    if not isinstance(presets, dict) or not isinstance(presets.get(summary["preset"]), dict):
        raise UserError(f"{path}: its 'config' has no preset {summary['preset']!r} under "
                        f"'presets': {NOT_A_SUMMARY}")
    return summary


def _check_type(summary: dict, key: str, kind: type, path: Path) -> None:
    if not isinstance(summary[key], kind):
        raise UserError(f"{path}: {key!r} is a JSON {_JSON_TYPES[type(summary[key])]}, not "
                        f"a JSON {_JSON_TYPES[kind]}: {NOT_A_SUMMARY}")


def build_report(summary_path: str | Path, out_dir: str | Path | None = None,
                 claims_path: str | Path | None = None) -> dict:
    """Render report.html and report.pdf from summary.json (and the verdicts of claims.json,
    computed from the summary when ``claims_path`` is None) into ``out_dir`` (None: the
    summary's preset's report folder, ResultsLayout.report_dir), with the resolved config
    (config.yaml) and the figures and tables as files beside them."""
    summary_path = Path(summary_path)
    summary = read_summary(summary_path)
    out_dir = Path(out_dir or ResultsLayout.of_preset(summary["preset"]).report_dir)
    claims = None if claims_path is None else read_claims(Path(claims_path), summary)
    try:
        context = report_context(summary, claims)
        text = render_html(summary, context)
    except KeyError as exc:  # an entry the top-level checks cannot see into
        raise UserError(f"{summary_path}: an entry lacks the field {exc}: {NOT_A_SUMMARY}"
                        ) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "report.html", text)
    write_pdf(text, out_dir / "report.pdf")
    # The resolved config: pages of YAML that the PDF points to instead of printing them
    write_text_atomic(out_dir / CONFIG_FILE, context["config_yaml"])
    # The figures and tables also as files of their own: Snakemake's report (snakemake
    # --report) shows them one by one, with captions from report/captions/.
    _write_folder(out_dir / FIGURES, {f"{_file_name(f['id'])}.svg": _svg_file(f["svg"])
                                      for f in context["figures"]}, ".svg")
    _write_folder(out_dir / TABLES, table_files(context), ".csv")
    return {"html": str(out_dir / "report.html"), "pdf": str(out_dir / "report.pdf"),
            "figures": str(out_dir / FIGURES), "tables": str(out_dir / TABLES),
            "config": str(out_dir / CONFIG_FILE), "preset": summary["preset"]}


def _svg_file(svg: str) -> str:
    """An inline ``<svg>`` element as a standalone SVG file."""
    return '<?xml version="1.0" encoding="utf-8" standalone="no"?>\n' + svg.strip() + "\n"
