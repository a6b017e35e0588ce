"""Runs -> summary -> report, on a small fixture of results written the way the engine writes
them; cited figures checked against the reproducibility report's own text."""
import copy
import csv
import json
import re
from pathlib import Path

import pytest
from summary_builder import CONFIG, cost_fixture, write_run

from apot.cli import main
from apot.reporting.render import build_report, comparison_tables, load_cited
from apot.reporting.summary import summarize
from apot.workflow.study import expand_runs, validate_config

ROOT = Path(__file__).resolve().parents[2]
REPRO_REPORT = ROOT.parent / "shared" / "paper" / "reproducibility-report.txt"

# best top-1 per (run path without seed, seed): what the fixture's runs "reached"
FIXTURE = {
    ("cifar10/resnet20/multistep/fp32-w32", 0): 80.0,
    ("cifar10/resnet20/multistep/fp32-w32", 1): 82.0,
    ("cifar10/resnet20/multistep/apot-w4", 0): 79.0,
    ("cifar10/resnet20/multistep/apot-w4", 1): 80.0,
    ("cifar10/resnet20/multistep/apot-w3", 0): 75.5,
}





@pytest.fixture
def study(tmp_path):
    config = validate_config(copy.deepcopy(CONFIG) | {"preset": "smoke"})
    config["presets"]["smoke"]["seeds"] = [0, 1]
    results = tmp_path / "results" / "smoke"
    for (path, seed), best in FIXTURE.items():
        write_run(results, f"{path}/seed{seed}", best, seed, config)
    data = results / "data" / "cifar10"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({
        "dataset": "cifar10", "source": {"kind": "mirror", "path": "/m/cifar-10-images.tar.gz",
                                         "sha256": "ab" * 32},
        "counts": {"train": 100, "test": 100},
        "subset": {"train_per_class": 10, "test_per_class": 10, "seed": 0}}))
    skipped = {"cifar100": "not run: no data source",
               "imagenet": "not configured: no ImageNet folder (set imagenet_root)"}
    return {"config": config, "skipped": skipped,
            "data_sources": {"cifar10": "mirror: /m", "cifar100": None, "imagenet": None}}, results


@pytest.fixture
def html_only(monkeypatch):
    """build_report without its PDF (WeasyPrint: about 3 s a report), for tests that read
    only the HTML and the files beside it; the two that read the PDF itself render it."""
    monkeypatch.setattr("apot.reporting.render.write_pdf", lambda html_text, path: None)


def test_a_report_goes_to_its_presets_folder_by_default(study, tmp_path, monkeypatch, html_only):
    """Each preset's report has its own folder (report/build/<preset>): rendering another
    preset's never overwrites it."""
    spec, results = study
    summarize(spec, results)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--summary", str(results / "summary.json")]) == 0
    assert (tmp_path / "report" / "build" / "smoke" / "report.html").is_file()
    assert not (tmp_path / "report" / "build" / "report.html").exists()


def test_summary_aggregates_seeds_and_computes_drops(study):
    spec, results = study
    account = summarize(spec, results)
    summary = json.loads((results / "summary.json").read_text())
    assert account["runs"] == len(expand_runs(spec["config"])) == 2 * 22
    assert account["done"] == len(FIXTURE)
    groups = {(g["arch"], g["schedule"], g["scheme"], g["bits"], g["dataset"]): g
              for g in summary["groups"]}
    fp32 = groups[("resnet20", "multistep", "fp32", 32, "cifar10")]
    four = groups[("resnet20", "multistep", "apot", 4, "cifar10")]
    three = groups[("resnet20", "multistep", "apot", 3, "cifar10")]
    assert fp32["best_top1"] == {"mean": 81.0, "std": 1.4142, "n": 2, "drop": None}
    assert four["best_top1"] == {"mean": 79.5, "std": 0.7071, "n": 2, "drop": 1.5}
    assert three["best_top1"]["n"] == 1 and three["best_top1"]["drop"] == 5.5
    assert groups[("resnet20", "multistep", "apot", 2, "cifar10")]["status"].startswith("missing")
    assert groups[("resnet56", "multistep", "apot", 4, "cifar100")]["status"] == \
        "not run: no data source"
    accuracy = json.loads((results / "accuracy.json").read_text())
    assert accuracy["cifar10/resnet20/multistep/apot-w4"] == {"best_top1": 79.5,
                                                              "final_top1": 79.0}
    rows = list(csv.DictReader(open(results / "histories.csv")))
    assert len(rows) == 2 * len(FIXTURE)
    assert {"run", "epoch", "test_top1", "scheme", "bits"} <= set(rows[0])


def test_report_tables_show_cited_and_measured_numbers_and_why_rows_did_not_run(study):
    spec, results = study
    summarize(spec, results)
    out = results.parent.parent / "build"
    build_report(results / "summary.json", out)
    html = (out / "report.html").read_text()
    table1 = html.split("<h3>Table 1: CIFAR-10")[1].split("</table>")[0]
    # this run: mean ± std (n) and the drop against this run's own FP32
    assert "81.00 ± 1.41 (n=2)" in table1 and "79.50 ± 0.71 (n=2)" in table1
    assert "+1.50" in table1 and "+5.50" in table1
    # cited: the paper's 4-bit ResNet-20 beat its FP32 by 0.7; the reproduction lost 0.34
    assert "92.30" in table1 and "-0.70" in table1 and "+0.34" in table1
    assert "missing: the run has not completed" in table1          # 2-bit of the fixture
    assert "not run: no data source" in html.split("<h3>Table 3:")[1].split("</table>")[0]
    assert "not configured: no ImageNet folder" in html.split("<h3>Table 2:")[1].split(
        "</table>")[0]
    assert "REDUCED SCALE" in html
    assert "ab" * 32 in html                                         # dataset sha256
    # nothing is fetched from anywhere
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    pdf = (out / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    from pypdf import PdfReader
    reader = PdfReader(out / "report.pdf")
    text = "".join(page.extract_text() for page in reader.pages)
    assert "Table 1: CIFAR-10" in text and "79.50" in text
    assert len(reader.pages) >= 2


def test_same_inputs_give_identical_report_files(study, tmp_path):
    spec, results = study
    summarize(spec, results)
    build_report(results / "summary.json", tmp_path / "a")
    build_report(results / "summary.json", tmp_path / "b")
    for name in ("report.html", "report.pdf"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


ARCH_NAMES = {"resnet20": "ResNet20", "resnet56": "ResNet56", "resnet18": "ResNet18"}


def report_table_rows(number: int) -> dict[tuple[str, int], list[float]]:
    """(arch, bits) -> the numbers of that row of the reproducibility report's Table N.
    A baseline row that does not name its architecture belongs to the row after it."""
    text = REPRO_REPORT.read_text().split(f"Table {number}:")[0]
    text = text[text.rindex("Architecture\tBit-precision"):]
    lines = [l for l in text.splitlines() if re.search(r"Baseline|\dbit", l)]
    rows, pending, last_arch = {}, [], None
    for line in lines:
        cells = line.split("\t")
        arch = next((a for a, name in ARCH_NAMES.items() if name in cells), None)
        bits = 32 if "Baseline (FP32)" in cells else int(next(
            c for c in cells if re.fullmatch(r"\dbit", c))[0])
        numbers = [float(c) for c in cells if re.fullmatch(r"-?\d+(\.\d+)?", c)]
        if arch is None and bits == 32:
            pending.append(numbers)
            continue
        arch = arch or last_arch
        if pending:
            rows[(arch, 32)] = pending.pop()
        rows[(arch, bits)] = numbers
        last_arch = arch
    return rows


@pytest.mark.parametrize("table", load_cited()["tables"], ids=lambda t: t["id"])
def test_cited_figures_are_those_of_the_reproducibility_report(table):
    """Each cited row equals the report's row: the paper's accuracy (when the report gives the
    paper's) and the reproduction's accuracy, in the report's column order."""
    rows = report_table_rows(int(table["id"][-1]))
    assert len(rows) == len(table["rows"])
    for row in table["rows"]:
        numbers = rows[(row["arch"], row["bits"])]
        accuracies = [n for n in numbers if n > 20]  # drops are small; accuracies are not
        assert accuracies == [v for v in (row["paper"], row["repro"]) if v is not None], row


def test_comparison_table_marks_presets_without_the_study():
    summary = {"groups": []}
    tables = comparison_tables(summary, load_cited())
    assert all(row["status"] == "not configured in this preset"
               for table in tables for row in table["rows"])


APOT_FACTS = ROOT.parent / "shared" / "paper" / "apot-facts.md"


def test_cited_cost_figures_are_those_of_the_papers_table():
    """Each cited FixOPs figure is the one in the paper's Table 3 as transcribed in
    apot-facts.md, and the abstract's 22 %."""
    text = APOT_FACTS.read_text()
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and re.fullmatch(r"\d+/\d+", cells[1]):
            scheme = {"Full prec.": "float", "APoT": "apot", "PoT": "pot",
                      "Uniform": "uniform"}.get(cells[0])
            if scheme and cells[2] in ("✓", "–"):  # with weight normalization (or FP)
                table[(scheme, int(cells[1].split("/")[0]))] = cells[6]
    cost = load_cited()["cost"]
    for row in cost["fixops"]:
        assert table[(row["scheme"], row["bits"])] == row["printed"], row
        value = float(row["printed"][:-1]) * (1000 if row["printed"].endswith("G") else 1)
        assert value == row["paper"]
    assert f"{cost['reduction']['paper_percent']} %" in text
    assert "4-bit ResNet-50" in text


def test_report_cost_section_shows_paper_and_computed_figures(study, tmp_path, html_only):
    spec, results = study
    cost = json.loads(cost_fixture(results).read_text())
    summarize(spec, results, cost=results / "cost.json")
    build_report(results / "summary.json", tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    section = html[html.index("<h2>Cost model"):html.index("Every run of this preset")]
    ours = {(r["arch"], r["bits"], r["scheme"]): r for r in cost["paper"]}
    assert f"{ours[('resnet18', 5, 'uniform')]['fixops'] / 1e6:,.1f}" in section
    assert "781M" in section and "616M" in section and "298M" in section
    assert "matches (within ±0.5M" in section
    apot50, uniform50 = ours[("resnet50", 4, "apot")], ours[("resnet50", 4, "uniform")]
    reduction = 100 * (1 - apot50["fixops"] / uniform50["fixops"])
    assert f"this project's counting rule gives {reduction:.1f} %" in section  # 14.9 %
    # beside it the paper's inferred flat factor, and the verdict that says the rule is unknown
    assert "the paper's inferred rule (a flat 0.75" in section and "gives 22." in section
    assert "verdict <strong>inconclusive</strong>: the paper does not state its counting rule" \
        in section
    study_row = next(r for r in cost["study"] if (r["bits"], r["scheme"]) == (4, "pot"))
    assert f"<td>{study_row['fixops'] / 1e6:,.1f}</td>" in section


def test_report_says_when_cost_tables_are_missing(study, tmp_path, html_only):
    spec, results = study
    summarize(spec, results)
    build_report(results / "summary.json", tmp_path / "out")
    assert "Not computed: the summary holds no cost tables" in (
        tmp_path / "out" / "report.html").read_text()


def test_run_cost_is_summarized_and_shown_per_run(study, tmp_path, html_only):
    import torch

    from apot.deploy.cost import network_cost
    from apot.models import build_model
    spec, results = study
    torch.manual_seed(0)
    cost = network_cost("resnet20", 4, model=build_model("resnet20", bits=4))
    run = results / "runs/cifar10/resnet20/multistep/apot-w4/seed0"
    (run / "cost.json").write_text(json.dumps(cost))
    summarize(spec, results)
    record = next(r for r in json.loads((results / "summary.json").read_text())["runs"]
                  if r["path"] == "cifar10/resnet20/multistep/apot-w4/seed0")
    per_mac = cost["shifts"]["expected"] / cost["quantized_macs"]
    assert record["cost"]["shifts_per_mac"] == round(per_mac, 4)
    assert record["cost"]["shifts_per_mac_worst"] == 2  # 4-bit weights: two terms at most
    build_report(results / "summary.json", tmp_path / "out")
    assert f"{round(per_mac, 4):.3f} (2)" in (tmp_path / "out" / "report.html").read_text()


def test_report_has_claims_and_figures_from_the_fixture(study, tmp_path, html_only):
    spec, results = study
    cost_fixture(results)
    summarize(spec, results, cost=results / "cost.json")
    summary = json.loads((results / "summary.json").read_text())
    run = next(r for r in summary["runs"] if r["path"] == "cifar10/resnet20/multistep/apot-w4/seed0")
    assert run["curve"] == [FIXTURE[("cifar10/resnet20/multistep/apot-w4", 0)] - 1,
                            FIXTURE[("cifar10/resnet20/multistep/apot-w4", 0)]]
    build_report(results / "summary.json", tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    claims = html[html.index("Claims and verdicts"):html.index("Accuracy against the paper")]
    # smoke is reduced in scale: accuracy claims are not testable, cost claims are computed
    # (5 warm-start claims: no warm chain in the fixture; 5 full-scale claims: reduced scale)
    assert claims.count('class="verdict not-testable"') == 10
    assert claims.count('class="verdict inconclusive"') == 1    # 22 %: the two rules disagree
    assert claims.count('class="verdict not-supported"') == 1   # 2x: 1.2-1.33x expected
    assert claims.count('class="verdict supported"') == 0
    for figure in ("levels", "curves-cifar10-resnet20-multistep", "bits-table1", "cost"):
        assert f'<figure id="fig-{figure}">' in html
    assert "fig-curves-cifar10-resnet56" not in html  # no ResNet-56 run in the fixture


def test_summary_csv_joins_accuracy_and_cost(study):
    spec, results = study
    cost = json.loads(cost_fixture(results).read_text())
    summarize(spec, results, cost=results / "cost.json")
    rows = {(r["scheme"], r["bits"]): r for r in csv.DictReader(open(results / "summary.csv"))
            if r["dataset"] == "cifar10" and r["arch"] == "resnet20" and r["schedule"] == "multistep"}
    fixops = {(r["bits"], r["scheme"]): r["fixops"] for r in cost["study"]}
    assert float(rows[("apot", "4")]["fixops"]) == fixops[(4, "apot")]
    assert float(rows[("fp32", "32")]["fixops"]) == fixops[(32, "apot")]
    assert rows[("apot", "4")]["best_top1_mean"] == "79.5" and rows[("apot", "4")]["best_top1_n"] == "2"


def test_scheme_ablation_table_when_it_ran_and_when_it_did_not(study, tmp_path, html_only):
    spec, results = study
    summarize(spec, results)
    build_report(results / "summary.json", tmp_path / "plain")
    assert "set <code>scheme_ablation: true</code>" in (tmp_path / "plain/report.html").read_text()
    spec = {**spec, "config": {**spec["config"], "scheme_ablation": True}}
    write_run(results, "cifar10/resnet20/multistep/pot-w4/seed0", 77.25, 0, spec["config"])
    summarize(spec, results)
    build_report(results / "summary.json", tmp_path / "ablation")
    html = (tmp_path / "ablation/report.html").read_text()
    table = html.split("<h2>Scheme ablation")[1].split("</table>")[0]
    row = table.split('<td class="text">scratch</td><td class="text">multistep</td><td>4</td>')[1].split("</tr>")[0]
    assert "79.50 ± 0.71 (n=2)" in row and "77.25 (n=1)" in row
    assert "missing: the run has not completed" in row  # uniform 4-bit


SHARED_DATA_README = ROOT.parent / "shared" / "data" / "README.md"


def test_cited_authors_figures_are_those_of_the_data_readme():
    text = SHARED_DATA_README.read_text()
    for bits, published in load_cited()["authors_checkpoints"]["published"].items():
        row = next(line for line in text.splitlines()
                   if line.startswith(f"| `res20_{bits}bit.pth.tar`"))
        assert f"| {published:.2f} " in row, row


def test_report_shows_the_authors_checkpoints_and_which_were_not_evaluated(study, tmp_path,
                                                                           html_only):
    spec, results = study
    (results / "authors").mkdir()
    (results / "authors" / "resnet20-w4.json").write_text(json.dumps({
        "top1": 81.25, "top5": 99.0, "n": 100, "checkpoint": "x/res20_4bit.pth.tar",
        "checkpoint_sha256": "cd" * 32, "split": "test"}))
    summarize({**spec, "authors_bits": [4, 3]}, results)
    build_report(results / "summary.json", tmp_path / "out")
    html = (tmp_path / "out/report.html").read_text()
    table = html.split("<h2>The authors' released checkpoints")[1].split("</table>")[0]
    four = table.split("4-bit APoT")[1].split("</tr>")[0]
    assert "92.45" in four and "81.25" in four and "cdcdcdcd" in four
    assert "missing: the evaluation has not completed" in table.split("3-bit APoT")[1]
    assert "not evaluated: checkpoint file not found" in table.split("FP32")[1]


def test_provenance_says_where_runs_were_trained(study, tmp_path, html_only):
    spec, results = study
    runs = sorted((results / "runs").rglob("metrics.json"))
    jobs = {0: [("node1", "7")], 1: [("node1", "8"), ("node2", "9")]}  # run 1 resumed in job 9
    for i, path in enumerate(runs):
        metrics = json.loads(path.read_text())
        metrics["executions"] = [{"host": host, "slurm_job_id": job, "first_epoch": 0,
                                  "epochs": 1} for host, job in jobs.get(i, [("laptop", None)])]
        path.write_text(json.dumps(metrics))
    summarize(spec, results)
    provenance = json.loads((results / "summary.json").read_text())["provenance"]
    assert provenance["training_hosts"] == ["laptop", "node1", "node2"]
    assert (provenance["slurm_jobs"], provenance["slurm_runs"], provenance["resumed_runs"]
            ) == (3, 2, 1)
    build_report(results / "summary.json", tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert (f"trained on laptop, node1, node2; 2 of {len(runs)} runs as SLURM jobs (3 jobs); "
            "1 run resumed from a checkpoint by a later process") in html


def test_report_writes_its_figures_and_tables_as_files_and_drops_stale_ones(study, tmp_path,
                                                                            html_only):
    spec, results = study
    cost_fixture(results)
    summarize(spec, results, cost=results / "cost.json")
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old-figure.svg").write_text("<svg/>")  # of an earlier report
    (out / "figures" / ".snakemake_timestamp").write_text("")  # not the report's: it stays
    build_report(results / "summary.json", out)
    html = (out / "report.html").read_text()
    figures = sorted(p.stem for p in (out / "figures").glob("*.svg"))
    assert figures == sorted(re.findall(r'<figure id="fig-([^"]+)">', html))
    assert (out / "figures" / ".snakemake_timestamp").is_file()
    for name in figures:
        svg = (out / "figures" / f"{name}.svg").read_text()
        assert svg.startswith("<?xml") and 'xmlns="http://www.w3.org/2000/svg"' in svg
    rows = list(csv.DictReader((out / "tables" / "table1.csv").open()))
    apot4 = next(r for r in rows if r["arch"] == "resnet20" and r["bits"] == "4")
    assert float(apot4["ours_mean"]) == 79.5 and apot4["ours_n"] == "2"  # seeds 0 and 1
    assert {p.name for p in (out / "tables").iterdir()} == {
        f"{t}.csv" for t in ("table1", "table2", "table3", "table4")}  # nothing exported


def test_packed_runs_are_summarized_and_listed(study, tmp_path, html_only):
    spec, results = study
    run = results / "runs/cifar10/resnet20/multistep/apot-w4/seed0"
    (run / "packed.json").write_text(json.dumps({
        "packed_bytes": 164056, "float32_bytes": 1150447, "size_ratio": 0.1426,
        "verify": {"n": 100, "reference_top1": 79.0, "top1": 79.0, "differing_predictions": 0,
                   "max_abs_logit_difference": 0.0, "limit_per_class": 10,
                   "data": "results/smoke/data/cifar10", "dataset": "cifar10"}}))
    summarize(spec, results)
    build_report(results / "summary.json", tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    table = html.split("<h2>Packed models")[1].split("</table>")[0]
    assert table.count("<tr>") == 2 and "cifar10/resnet20/multistep/apot-w4" in table
    assert "164.1" in table and "1,150.4" in table and "7.0×" in table
    rows = list(csv.DictReader((tmp_path / "out/tables/packed-models.csv").open()))
    assert rows == [{"run": "cifar10/resnet20/multistep/apot-w4", "seed": "0",
                     "packed_kb": "164.1", "float32_kb": "1150.4", "smaller_by": "7.01",
                     "check_n": "100", "check_reference_top1": "79.0", "check_top1": "79.0",
                     "check_differing_predictions": "0",
                     "check_max_abs_logit_difference": "0.0", "check_limit_per_class": "10"}]


def test_onnx_models_are_listed_and_their_speed_is_measured_beside_the_cost(study, tmp_path,
                                                                            html_only):
    spec, results = study
    checks = {0: (500.0, 400.0), 1: (700.0, 400.0)}  # seed: int8, float32 images/s
    for seed, (int8, float32) in checks.items():
        run = results / f"runs/cifar10/resnet20/multistep/apot-w4/seed{seed}"
        (run / "onnx.json").write_text(json.dumps({
            "onnx_form": "qdq", "onnx_bytes": 301935, "float32_bytes": 1150447,
            "verify": {"n": 1000, "checkpoint_top1": 79.0, "onnx_top1": 78.6,
                       "differing_predictions": 41, "images_per_s": int8,
                       "float32_images_per_s": float32, "speedup_over_float32": int8 / float32,
                       "integer_convs": 20, "threads": 1, "cpu": "Test CPU 9000",
                       "limit_per_class": 100, "data": "d", "dataset": "cifar10"}}))
    summarize(spec, results)
    build_report(results / "summary.json", tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    table = html.split("<h2>ONNX models")[1].split("</table>")[0]
    assert table.count("<tr>") == 3 and table.count("78.60") == 2 and "301.9" in table
    speed = html.split("<h3>Measured: int8 inference in ONNX Runtime")[1].split("</p>")[0]
    row = speed.split("<tbody>")[1].split("</tr>")[0]
    # two models; mean images/s 600 and 400; mean of the per-model speedups (1.25 + 1.75) / 2
    assert ">2<" in row and ">600<" in row and ">400<" in row and "1.50×" in row
    assert "Test CPU 9000, 1 thread(s)" in speed
    rows = list(csv.DictReader((tmp_path / "out/tables/onnx-models.csv").open()))
    assert [(r["seed"], r["check_onnx_top1"], r["check_images_per_s"]) for r in rows] == [
        ("0", "78.6", "500.0"), ("1", "78.6", "700.0")]
