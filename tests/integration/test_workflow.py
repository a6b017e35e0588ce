"""The study as a workflow: Snakemake's DAG for each preset, config validation, missing data,
and the smoke preset run end to end (twice: the second run must do nothing; and once killed
half-way, then finished)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import zipfile

import pytest
from helpers import REGISTER_TOY, TOY
from workflow import (BIN, SMOKE, copy_study, copy_workflow, env, job_counts, job_inputs,
                      nothing_to_do, snakemake, study_file)

from apot.layout import ResultsLayout
from apot.workflow.study import find_run, read_study, train_settings


def job_settings(workflow, output: str, run: str) -> dict:
    """What ``apot train --study <the study file> --run <run>`` of the dry run ``output``
    trains."""
    path = study_file(output)
    study = read_study(workflow / path)
    return train_settings(find_run(study["config"], run),
                          ResultsLayout.of_study_file(path))


@pytest.fixture
def workflow(tmp_path):
    return copy_workflow(tmp_path / "study")


@pytest.fixture
def fake_mirror(tmp_path):
    """A mirror whose archives exist (a dry run only checks that they are there)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("cifar-10-images.tar.gz", "cifar-100-images.tar.gz"):
        (mirror / name).write_bytes(b"not read by a dry run")
    imagenet = tmp_path / "imagenet"
    (imagenet / "train").mkdir(parents=True)
    (imagenet / "val").mkdir()
    return mirror, imagenet


@pytest.fixture
def torch_cache(tmp_path):
    """torch's hub cache holding (a stand-in for) torchvision's pretrained ResNet-18 file."""
    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / "resnet18-f37072fd.pth").write_bytes(b"not read by a dry run")
    return home


def test_paper_preset_dry_run_lists_exactly_the_study(workflow, fake_mirror, torch_cache):
    mirror, imagenet = fake_mirror
    out = snakemake(workflow, "-n", "--config", "preset=paper", f"mirror={mirror}",
                    f"imagenet_root={imagenet}", TORCH_HOME=str(torch_cache)).stdout
    # CIFAR-10: ResNet-20/56 MultiStepLR + ResNet-20 cosine = 3 chains; CIFAR-100: 2 chains;
    # each chain = FP32 + 4/3/2-bit. ImageNet: ResNet-18 FP32 (torchvision's pretrained
    # weights as they are, as the authors) + 5-bit.
    assert job_counts(out) == {"prepare_data": 3, "stage_torchvision_start": 1, "train_fp32": 6,
                               "train_quantized": 16, "run_cost": 16, "export_packed": 16,
                               "export_onnx": 16,
                               "cost_tables": 1, "summarize": 1, "claims": 1, "report": 1, "all": 1}
    imagenet_fp32 = ("results/paper/runs/imagenet/resnet18/from-torchvision/multistep/fp32-w32/"
                     "seed0/metrics.json")
    assert job_inputs(out, imagenet_fp32) == ["results/paper/data/imagenet/manifest.json",
                                              "results/paper/starts/torchvision-resnet18.pt"]
    # each train job reads its settings from the study file the Snakefile wrote
    imagenet = job_settings(workflow, out, "imagenet/resnet18/from-torchvision/multistep/"
                                           "fp32-w32/seed0")
    assert imagenet["init"] == "results/paper/starts/torchvision-resnet18.pt"
    assert imagenet["epochs"] == 0 and imagenet["quantizer_rules"] == "imagenet"
    assert re.fullmatch(r"results/paper/studies/[0-9a-f]{16}\.json", study_file(out))
    assert (f"--study {study_file(out)} --run "
            "imagenet/resnet18/from-torchvision/multistep/fp32-w32/seed0 ") in out
    assert (f"export --study {study_file(out)} --run "
            "imagenet/resnet18/from-torchvision/multistep/apot-w5/seed0 ") in out
    # progressive chains are rule inputs: 3-bit starts from 4-bit, 4-bit from FP32
    run = "results/paper/runs/cifar10/resnet56/multistep/{}/seed0/metrics.json"
    assert job_inputs(out, run.format("apot-w3")) == [
        "results/paper/data/cifar10/manifest.json", run.format("apot-w4")]
    assert job_inputs(out, run.format("apot-w4"))[1] == run.format("fp32-w32")
    assert job_inputs(out, run.format("fp32-w32")) == ["results/paper/data/cifar10/manifest.json"]
    three_bit = job_settings(workflow, out, "cifar10/resnet56/multistep/apot-w3/seed0")
    assert three_bit["init"] == ("results/paper/runs/cifar10/resnet56/multistep/apot-w4/seed0/"
                                 "best.pt")
    assert three_bit["epochs"] == 300 and three_bit["milestones"] == [150, 225]
    # the bound: no job's command fills the terminal, with room for a longer path to
    # the interpreter than this checkout's
    commands = [line for line in out.splitlines() if " -m apot " in line]
    assert len(commands) > 40 and max(map(len, commands)) <= 600 - 100
    # What a cluster needs of every job: its files under the workflow folder (the shared file
    # system), and no DVC inside (DVC runs Snakemake, never the other way round).
    written = [path for line in out.splitlines()
               if line.strip().split(": ", 1)[0] in ("output", "log", "benchmark")
               for path in line.strip().split(": ", 1)[1].split(", ")]
    assert len(written) > 100 and not [p for p in written if p.startswith("/") or ".." in p]
    assert not re.search(r"(^|[\s;&|(])dvc\s", out, re.M)


def test_imagenet_start_offline_without_the_cached_file_stops_before_any_job(
        workflow, fake_mirror, tmp_path):
    mirror, imagenet = fake_mirror
    done = snakemake(workflow, "-n", "--config", "preset=paper", f"mirror={mirror}",
                     f"imagenet_root={imagenet}", TORCH_HOME=str(tmp_path / "empty-torch"),
                     check=False)
    message = done.stdout + done.stderr
    assert done.returncode != 0 and not job_counts(message)
    assert "study imagenet starts from torchvision" in message
    assert str(tmp_path / "empty-torch/hub/checkpoints/resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_paper_preset_without_imagenet_and_with_scheme_ablation(workflow, fake_mirror):
    mirror, _ = fake_mirror
    out = snakemake(workflow, "-n", "--config", "preset=paper", f"mirror={mirror}").stdout
    assert job_counts(out) == {"prepare_data": 2, "train_fp32": 5, "train_quantized": 15,
                               "run_cost": 15, "export_packed": 15,
                               "export_onnx": 15, "cost_tables": 1,
                               "summarize": 1, "claims": 1, "report": 1, "all": 1}
    out = snakemake(workflow, "-n", "--config", "preset=paper", f"mirror={mirror}",
                    "scheme_ablation=True").stdout
    # uniform and PoT chains from the same FP32 baselines: 15 more runs each
    counts = job_counts(out)
    assert counts["train_quantized"] == counts["run_cost"] == counts["export_packed"] == 45
    assert counts["export_onnx"] == 40  # not the five 4-bit PoT runs: codes beyond 8 bits
    assert job_counts(out)["train_fp32"] == 5
    assert "cifar100/resnet56/multistep/uniform-w2/seed0/metrics.json" in out
    assert "cifar10/resnet20/cosine/pot-w3/seed0/metrics.json" in out


def test_quick_is_the_default_preset(workflow, shared_data):
    out = snakemake(workflow, "-n", "--config", "on_missing_data=skip",
                    APOT_DATA_MIRROR=str(shared_data)).stdout
    # the warm study on 10,000/10,000 CIFAR-10 images (FP32 controls from the authors' FP32
    # model; APoT 4 -> 3 -> 2 on five seeds, uniform 4 -> 3 -> 2 and PoT 4 -> 3 on three, sharing
    # the controls) and the reduced from-scratch chains (MultiStepLR, cosine)
    warm = "results/quick/runs/cifar10/resnet20/from-authors/cosine_epochs/{}/seed{}/metrics.json"
    assert job_inputs(out, warm.format("fp32-w32", 0)) == [
        "results/quick/data/cifar10/manifest.json", "results/quick/starts/authors-resnet20-w32.pt"]
    for scheme, seeds in {"apot": 5, "uniform": 3, "pot": 3}.items():
        for seed in range(seeds):  # seed s of a chain starts from seed s of its FP32 control
            assert job_inputs(out, warm.format(f"{scheme}-w4", seed))[1] == warm.format(
                "fp32-w32", seed)
            assert job_inputs(out, warm.format(f"{scheme}-w3", seed))[1] == warm.format(
                f"{scheme}-w4", seed)
        assert warm.format(f"{scheme}-w4", seeds) not in out
    assert job_inputs(out, warm.format("apot-w2", 4))[1] == warm.format("apot-w3", 4)
    assert warm.format("pot-w2", 0) not in out
    assert job_inputs(out, "results/quick/runs/cifar10/resnet20/multistep/apot-w4/seed0/"
                      "metrics.json")[0] == "results/quick/data/cifar10_small/manifest.json"
    assert "runs/cifar10/resnet56" not in out  # (the config itself, in params, names it)
    # FP32: 5 warm controls, 2 scratch baselines; quantized: 15 APoT, 9 uniform, 6 PoT warm
    # steps and 6 scratch fine-tunes
    assert job_counts(out) == {"prepare_data": 2, "stage_authors_start": 1, "train_fp32": 7,
                               "train_quantized": 36, "run_cost": 36, "export_packed": 36,
                               "export_onnx": 33,  # not PoT 4-bit: its codes exceed 8 bits
                               "cost_tables": 1, "eval_authors": 4, "summarize": 1,
                               "claims": 1, "report": 1, "all": 1}


@pytest.mark.parametrize("edit, key, words", [
    (lambda c: c["presets"]["paper"]["studies"]["cifar10"]["chain"][1].update(bits=9),
     "['chain'][1]['bits']", "9 is not one of"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"]["archs"].append("resnet99"),
     "['archs'][1]", "resnet99"),
    (lambda c: c["presets"]["quick"]["studies"]["cifar10"].update(epochs=0),
     "['epochs']", "less than the minimum"),
    (lambda c: c["presets"]["paper"]["studies"]["cifar10"].update(milestones=[150, 300]),
     "presets.paper.studies.cifar10.milestones", "milestone 300 is not before the last epoch"),
    (lambda c: c["presets"]["smoke"]["studies"]["cifar10"].update(epoch=3),
     "['cifar10']", "'epoch' was unexpected"),
    (lambda c: c.update(preset="papr"), "config key preset", "'papr' is not one of the presets"),
    (lambda c: c.update(on_missing_data="ignore"), "['on_missing_data']", "is not one of"),
    # a preset name is a folder name in every job's command: no shell may run from it
    (lambda c: c.update(preset="x$(touch PWN)", presets={**c["presets"], "x$(touch PWN)":
                                                          c["presets"]["smoke"]}),
     "x$(touch PWN)", "does not match '^[A-Za-z0-9_-]+$'"),
])
def test_invalid_config_stops_before_any_job(workflow, edit, key, words):
    import yaml
    path = workflow / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    done = snakemake(workflow, "--cores", "1", check=False)
    message = done.stdout + done.stderr
    assert done.returncode != 0
    assert key in message and words in message, message[-3000:]
    assert not (workflow / "results").exists() and not job_counts(message)
    assert not (workflow / "PWN").exists()


def test_dataset_without_source_stops_the_run_unless_skipped(workflow, tmp_path):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    done = snakemake(workflow, "-n", "--config", "preset=smoke", check=False,
                     APOT_DATA_MIRROR=str(empty))
    message = done.stdout + done.stderr
    assert done.returncode != 0
    assert "dataset cifar10 has no data source" in message
    assert "on_missing_data=skip" in message and "APOT_DATA_MIRROR" in message
    out = snakemake(workflow, "-n", "--config", "preset=smoke", "on_missing_data=skip",
                    APOT_DATA_MIRROR=str(empty)).stdout
    # nothing can run but the summary and the report, which say why
    assert job_counts(out) == {"cost_tables": 1, "summarize": 1, "claims": 1, "report": 1, "all": 1}


def test_smoke_preset_runs_end_to_end(smoke_study):
    folder, output = smoke_study.folder, smoke_study.output
    assert job_counts(output) == {"prepare_data": 1, "stage_authors_start": 1, "train_fp32": 3,
                                  "train_quantized": 9, "run_cost": 9, "export_packed": 9,
                                  "export_onnx": 9,
                                  "cost_tables": 1, "eval_authors": 4, "summarize": 1,
                                  "claims": 1, "report": 1, "all": 1}
    runs = folder / "results/smoke/runs"
    metrics = sorted(runs.rglob("metrics.json"))
    assert len(metrics) == 12
    for path in metrics:
        assert (path.parent / "checkpoint.pt").stat().st_size > 10_000
        assert (path.parent / "best.pt").is_file() and (path.parent / "history.csv").is_file()
    # one log and one benchmark per training job, mirroring the results
    assert (folder / "logs/smoke/runs/cifar10/resnet20/cosine/apot-w2/seed0.log").is_file()
    assert (folder / "benchmarks/smoke/runs/cifar10/resnet20/from-authors/cosine_steps/fp32-w32/"
                     "seed0.tsv").is_file()
    # the warm chain starts from the authors' released FP32 model, staged with its origin
    warm = json.loads((runs / "cifar10/resnet20/from-authors/cosine_steps/fp32-w32/seed0/"
                       "metrics.json").read_text())
    origin = warm["started_from"]["origin"]
    assert origin["kind"] == "authors" and origin["file"].endswith("res20_32bit.pth.tar")
    assert origin["sha256"].startswith("f2d107bcd63c")
    assert warm["started_from"]["file"] == "results/smoke/starts/authors-resnet20-w32.pt"
    html = (folder / "report/build/smoke/report.html").read_text()
    # the verdicts as data, which the report renders: every claim with its comparisons
    claims = json.loads((folder / "results/smoke/claims.json").read_text())
    assert claims["preset"] == "smoke" and "margin = sqrt(" in claims["rule"]
    assert [c["id"] for c in claims["claims"]][:2] == ["warm_within_1pt", "warm_drop_grows"]
    for claim in claims["claims"]:
        assert {"id", "verdict", "rule", "comparisons", "scale", "data", "data_source",
                "epochs", "start"} <= set(claim)
        assert claim["verdict"] in ("supported", "not supported", "inconclusive",
                                    "not testable")
    shown = re.findall(r'<span class="verdict [a-z-]+">([a-z ]+)</span>', html)
    assert shown == [c["verdict"] for c in claims["claims"]]
    # one seed each: whatever smoke measures is shown, never decided
    assert not any(c["decided"] for claim in claims["claims"] for c in claim["comparisons"])
    within = claims["claims"][0]
    summary = json.loads((folder / "results/smoke/summary.json").read_text())
    warm = {(g["scheme"], g["bits"]): g["status"] for g in summary["groups"]
            if g["start"] == "authors" and g["dataset"] == "cifar10"}
    if "collapsed" in (warm[("fp32", 32)], warm[("apot", 4)], warm[("apot", 3)]):
        # two optimizer steps leave a quantized model's BatchNorm statistics those of its
        # FP32 parent: smoke's fine-tunes can end at chance, which the verdicts must name
        assert within["verdict"] == "not testable" and not within["comparisons"]
        assert within["why"].startswith("no result: ") and "(collapsed)" in within["why"]
        assert "(collapsed)" in html
    else:
        assert [c["what"] for c in within["comparisons"]] == ["resnet20 4-bit drop",
                                                              "resnet20 3-bit drop"]
        for c in within["comparisons"]:
            assert c["seeds"] == [1, 1] and c["margin"] >= 2 * c["test_se"] > 0
            assert f"{c['difference']:+.2f}" in html
        assert within["verdict"] == "inconclusive"
    assert "Warm start: our fine-tunes" in html
    assert "staged as results/smoke/starts/authors-resnet20-w32.pt" in html  # provenance
    assert (folder / "report/build/smoke/report.pdf").read_bytes().startswith(b"%PDF")
    assert "REDUCED SCALE" in html
    assert "not run: no data source" in html  # CIFAR-100 rows
    assert "not configured: no ImageNet folder" in html
    # the cost tables: this preset's models and the paper's cost configurations
    cost = json.loads((folder / "results/smoke/cost.json").read_text())
    # (the ImageNet study counts too: operation counts need no data)
    assert {(r["arch"], r["bits"]) for r in cost["study"]} == {
        (arch, bits) for arch in ("resnet20", "resnet56") for bits in (32, 4, 3, 2)} | {
        ("resnet18", 32), ("resnet18", 5)}
    assert "Cost model" in html and "781M" in html and (
        f"{cost['study'][0]['fixops'] / 1e6:,.1f}" in html)
    assert (folder / "logs/smoke/cost_tables.log").is_file()
    # each quantized run's expected shifts over the levels its best weights use
    run_cost = json.loads((runs / "cifar10/resnet20/multistep/apot-w4/seed0/cost.json").read_text())
    assert run_cost["weight_usage"] == "checkpoint" and run_cost["bits"] == 4
    assert not (runs / "cifar10/resnet20/multistep/fp32-w32/seed0/cost.json").exists()
    per_mac = run_cost["shifts"]["expected"] / run_cost["quantized_macs"]
    assert f"{per_mac:.3f} (2)" in html
    # the authors' checkpoints from the mirror, evaluated on the smoke test split (100 images)
    authors = json.loads((folder / "results/smoke/authors/resnet20-w3.json").read_text())
    assert authors["n"] == 100 and authors["bits"] == 3
    table = html.split("<h2>The authors' released checkpoints")[1].split("</table>")[0]
    assert f"{authors['top1']:.2f}" in table.split("3-bit APoT")[1].split("</tr>")[0]
    # every quantized run exported as integer codes, read back with the checkpoint's logits
    packed = json.loads((runs / "cifar10/resnet20/multistep/apot-w2/seed0/packed.json")
                        .read_text())
    assert packed["packed_bytes"] == (runs / "cifar10/resnet20/multistep/apot-w2/seed0/"
                                             "packed.safetensors").stat().st_size
    assert packed["packed_bytes"] * 5 < packed["float32_bytes"]
    assert packed["verify"]["n"] == 100 and packed["verify"]["max_abs_logit_difference"] == 0
    assert len(list(runs.rglob("packed.safetensors"))) == 9
    table = html.split("<h2>Packed models")[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 9 and "cifar10/resnet20/multistep/apot-w2" in table
    assert f"{packed['packed_bytes'] / 1000:,.1f}" in table
    # and as ONNX models run on ONNX Runtime's integer kernels, checked against the checkpoint
    onnx = json.loads((runs / "cifar10/resnet20/multistep/apot-w2/seed0/onnx.json").read_text())
    check = onnx["verify"]
    assert onnx["onnx_form"] == "qdq" and check["n"] == 100 and check["integer_convs"] == 20
    assert check["images_per_s"] > 0 and check["float32_images_per_s"] > 0 and check["cpu"]
    assert len(list(runs.rglob("model.onnx"))) == 9
    table = html.split("<h2>ONNX models")[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 9
    row = table.split("cifar10/resnet20/multistep/apot-w2")[1].split("</tr>")[0]
    assert f"{check['onnx_top1']:.2f}" in row and f"{check['images_per_s']:,.0f}" in row
    speed = html.split("<h3>Measured: int8 inference in ONNX Runtime")[1].split("</p>")[0]
    assert check["cpu"] in speed and "×" in speed
    # the report's figures and tables as files of their own
    build = folder / "report/build/smoke"
    assert (build / "figures/levels.svg").read_text().startswith("<?xml")
    assert (build / "tables/packed-models.csv").read_text().count("\n") == 1 + 9
    assert (build / "tables/onnx-models.csv").read_text().count("\n") == 1 + 9
    assert (build / "tables/table1.csv").read_text().startswith("arch,bits,paper,repro")


def test_snakemake_report_archive_holds_the_report_figures_and_tables(smoke_study, tmp_path):
    """snakemake --report report.zip after the smoke run: Snakemake's own browsable report,
    with the HTML/PDF report, each figure and table, and their captions."""
    folder = smoke_study.folder
    archive = tmp_path / "report.zip"
    done = snakemake(folder, "--report", str(archive), *SMOKE[2:])
    assert "Report created" in done.stdout + done.stderr
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        page = zipped.read("report/report.html").decode()
    stored = {name.rsplit("/", 1)[1] for name in names if "/data/raw/" in name}
    figures = {p.name for p in (folder / "report/build/smoke/figures").glob("*.svg")}
    tables = {p.name for p in (folder / "report/build/smoke/tables").glob("*.csv")}
    assert len(figures) >= 5 and len(tables) >= 5
    assert stored == {"report.html", "report.pdf", "summary.csv", "histories.csv",
                      *figures, *tables}
    assert "apot-repro workflow" in page and "standalone SVG file" in page  # text and captions
    assert not re.search(r"<script[^>]+src=[\"']https?:", page)  # nothing from the network


def test_second_run_does_nothing(smoke_study, shared_data):
    folder = smoke_study.folder
    before = {p: p.stat().st_mtime_ns for p in (folder / "results").rglob("*") if p.is_file()}
    done = snakemake(folder, *SMOKE, APOT_DATA_MIRROR=str(shared_data))
    assert nothing_to_do(done.stdout + done.stderr)
    after = {p: p.stat().st_mtime_ns for p in (folder / "results").rglob("*") if p.is_file()}
    assert after == before
    # Reaching the (already prepared) data another way, or running on another device, changes
    # no result: still nothing to do, offline and without the mirror variable.
    done = snakemake(folder, "-n", "--config", "preset=smoke", "on_missing_data=skip",
                     "device=cpu")
    assert nothing_to_do(done.stdout + done.stderr), done.stdout[-3000:]


def test_killed_run_finishes_only_what_was_missing(smoke_study, tmp_path, shared_data):
    """On a copy of the session's smoke study whose cosine chain (4 of its 12 runs) is gone,
    SIGKILL the whole workflow once two of them have completed again, unlock, run again:
    completed runs are not trained again, and a run with a checkpoint resumes from it."""
    workflow = copy_study(smoke_study.folder, tmp_path / "study", drop=("cifar10/resnet20/cosine",))
    runs = workflow / "results/smoke/runs"
    assert len(list(runs.rglob("metrics.json"))) == 8
    process = subprocess.Popen([str(BIN / "snakemake"), *SMOKE], cwd=workflow,
                               env=env(APOT_DATA_MIRROR=str(shared_data)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while len(list(runs.rglob("metrics.json"))) < 8 + 2:
            assert process.poll() is None, "the workflow ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = {p.parent: p.stat().st_mtime_ns for p in runs.rglob("metrics.json")}
    checkpointed = {p.parent for p in runs.rglob("checkpoint.pt")}
    assert 8 + 2 <= len(finished) < 12
    snakemake(workflow, "--unlock", *SMOKE, APOT_DATA_MIRROR=str(shared_data))
    done = snakemake(workflow, *SMOKE, APOT_DATA_MIRROR=str(shared_data))
    counts = job_counts(done.stdout + done.stderr)
    trained = counts.get("train_fp32", 0) + counts.get("train_quantized", 0)
    # The job in flight when the workflow died may have written metrics.json before Snakemake
    # recorded it as done: Snakemake runs it again, and the engine resumes it at once.
    assert 12 - len(finished) <= trained <= 12 - len(finished) + 1
    assert "prepare_data" not in counts
    unchanged = [d for d, mtime in finished.items()
                 if (d / "metrics.json").stat().st_mtime_ns == mtime]
    assert len(unchanged) >= len(finished) - 1
    for folder in checkpointed - set(unchanged):
        log = workflow / "logs/smoke/runs" / f"{folder.relative_to(runs)}.log"
        assert "resuming" in log.read_text(), log
    assert len(list(runs.rglob("metrics.json"))) == 12
    assert (workflow / "report/build/smoke/report.pdf").is_file()


def test_a_scheme_registered_alone_reaches_the_workflow_dry_run(workflow, tmp_path, shared_data):
    """The real Snakemake dry run, in a process whose start-up registers the toy scheme: the
    scheme ablation plans the toy's runs and their jobs, with no rule or module edited (the
    jobs, which start up the same way, find the run in the study file's matrix)."""
    startup = tmp_path / "startup"
    startup.mkdir()
    (startup / "sitecustomize.py").write_text(REGISTER_TOY)
    path = os.pathsep.join(filter(None, [str(startup), os.environ.get("PYTHONPATH")]))
    done = snakemake(workflow, "-n", "-p", "--config", "preset=smoke", "scheme_ablation=True",
                     "on_missing_data=skip", APOT_DATA_MIRROR=str(shared_data), PYTHONPATH=path)
    assert re.search(rf"runs/cifar10/resnet20/\S+/{TOY}-w4/seed0/metrics\.json", done.stdout)
    for job in ("train", "cost", "export"):  # each job reads its run from the study file
        assert re.search(rf"-m apot {job} --study \S+ --run \S+/{TOY}-w4/seed0", done.stdout)


def test_slurm_profile_maps_resources_and_gpus(workflow, shared_data):
    """The cluster profile parses and gives each training job one GPU, 4 threads and its own
    SLURM resources; the workstation profile beside it does not cap their threads."""
    out = snakemake(workflow, "--profile", "profiles/slurm", "-n", "--config", "preset=smoke",
                    "on_missing_data=skip", APOT_DATA_MIRROR=str(shared_data)).stdout
    assert job_counts(out)["train_quantized"] == 9
    blocks = [b for b in out.split("\n\n") if "rule train_" in b]
    assert len(blocks) == 12
    for block in blocks:
        assert "threads: 4" in block and "gpu=1" in block and "slurm_partition=gpu" in block
        assert "--threads 4" in block and "runtime=720" in block
    out = snakemake(workflow, "--profile", "profiles/slurm", "-n", "--config", "preset=smoke",
                    "on_missing_data=skip", "device=cpu", APOT_DATA_MIRROR=str(shared_data)).stdout
    assert "gpu=1" not in out and "--device cpu" in out
