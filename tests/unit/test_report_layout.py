"""The report as printed: every table fits an A4 page, the warm study's figure is top-1
against bit-width with the seed interval, and the resolved config lives beside the report,
not in the PDF body.

The summary is the quick preset's full DAG with three seeds, every quantized run exported,
the authors' released models evaluated and real cost tables: the widest report there is.
"""
import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from summary_builder import CONFIG, cost_fixture, write_run

from apot.reporting.render import TEMPLATES, build_report
from apot.reporting.summary import summarize
from apot.workflow.study import expand_runs, validate_config

SEEDS = [0, 1, 2]
AUTHORS_TOP1 = {32: 83.2, 4: 82.9, 3: 83.05, 2: 81.0}
PACKED = {"packed_bytes": 164056, "float32_bytes": 1150447, "size_ratio": 0.1426,
          "verify": {"n": 100, "reference_top1": 79.0, "top1": 79.0, "differing_predictions": 0,
                     "max_abs_logit_difference": 0.0, "limit_per_class": 10,
                     "data": "results/quick/data/cifar10", "dataset": "cifar10"}}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The rendered quick-preset report's folder."""
    tmp = tmp_path_factory.mktemp("layout")
    config = validate_config(copy.deepcopy(CONFIG) | {"preset": "quick"})
    config["presets"]["quick"]["seeds"] = SEEDS
    results = tmp / "results" / "quick"
    for index, run in enumerate(expand_runs(config)):
        seed = int(run.path.rsplit("seed", 1)[1])
        # distinct values per model, a spread over seeds: the figure has intervals to draw
        write_run(results, run.path, 80.0 - index % 7 + 0.3 * seed, seed, config)
        if "-w32/" not in run.path:
            (results / "runs" / run.path / "packed.json").write_text(json.dumps(PACKED))
    (results / "authors").mkdir()
    for bits, top1 in AUTHORS_TOP1.items():
        (results / "authors" / f"resnet20-w{bits}.json").write_text(json.dumps({
            "top1": top1, "top5": 99.0, "n": 10000, "split": "test",
            "checkpoint": f"x/res20_{bits}bit.pth.tar", "checkpoint_sha256": "cd" * 32}))
    cost_fixture(results)
    summarize({"config": config, "authors_bits": list(AUTHORS_TOP1)}, results,
              cost=results / "cost.json")
    build_report(results / "summary.json", tmp / "build")
    return tmp / "build"


class _Headers(HTMLParser):
    """The column headers (``thead th``) of every table, each as its whitespace-normal text."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[str]] = []
        self._in_head = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "thead":
            self._in_head = True
        elif tag == "th" and self._in_head:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag == "th" and self._cell is not None:
            self.tables[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def column_headers(html: str) -> list[list[str]]:
    parser = _Headers()
    parser.feed(html)
    return [headers for headers in parser.tables if headers]


def visible_pdf_text(pdf: Path) -> str:
    """The PDF's text, whitespace-normal, keeping only the pieces that start on the page:
    a column pushed past the page edge is in the file but not on paper."""
    from pypdf import PdfReader

    pieces = []
    for page in PdfReader(pdf).pages:
        width = float(page.mediabox.width)

        def keep(text, cm, tm, font, size):
            x = cm[0] * tm[4] + cm[2] * tm[5] + cm[4]
            if text.strip() and 0 <= x < width:
                pieces.append(text)

        page.extract_text(visitor_text=keep)
    return " ".join(" ".join(pieces).split())


def overflowing_boxes(html: str) -> list[tuple[int, str, float, float]]:
    """(page, box, right edge, content right edge) of each table, and each box inside one,
    whose right edge lies past the page's content box, as WeasyPrint lays the page out."""
    import weasyprint

    found = []
    document = weasyprint.HTML(string=html, base_url=str(TEMPLATES)).render()
    for number, page in enumerate(document.pages, start=1):
        box = page._page_box
        limit = box.content_box_x() + box.width + 0.5  # half a CSS pixel of rounding

        def walk(node, in_table):
            in_table = in_table or type(node).__name__ == "TableBox"
            if in_table and node.position_x + node.margin_width() > limit:
                found.append((number, type(node).__name__,
                              round(node.position_x + node.margin_width()), round(limit)))
            for child in getattr(node, "children", ()):
                walk(child, in_table)

        walk(box, False)
    return found


def test_every_table_fits_the_page_width(report):
    html = (report / "report.html").read_text()
    overflow = overflowing_boxes(html)
    tables = sorted({o for o in overflow if o[1] == "TableBox"})
    assert not overflow, f"tables past the right page edge (page, box, right, limit): " \
                         f"{(tables or sorted(set(overflow)))[:10]}"


def test_every_column_header_is_on_the_printed_page(report):
    html = (report / "report.html").read_text()
    tables = column_headers(html)
    assert len(tables) >= 8  # the accuracy tables, warm, authors, cost, runs, packed, data
    # without spaces: a header may wrap anywhere in its cell, and the text comes out by lines
    text = "".join(visible_pdf_text(report / "report.pdf").split())
    missing = [header for headers in tables for header in headers
               if "".join(header.split()) not in text]
    assert not missing, f"column headers not on the printed pages: {missing}"


def test_warm_study_figure_is_top1_against_bits_with_seed_intervals(report):
    html = (report / "report.html").read_text()
    ids = re.findall(r'<figure id="fig-([^"]+)">', html)
    warm = [i for i in ids if i.startswith("warm-")]
    assert len(warm) == 1 and warm[0].startswith("warm-cifar10-resnet20-"), ids
    # the per-epoch figure of one-epoch chains (every point at epoch 1) is gone
    assert not [i for i in ids if i.startswith("curves-") and "authors" in i], ids
    svg = (report / "figures" / f"{warm[0]}.svg").read_text()
    for label in ("FP32", "4-bit", "3-bit", "2-bit", "APoT", "uniform", "PoT",
                  "authors' released", "n = 3"):
        assert label in svg, label
    figure = html.split(f'<figure id="fig-{warm[0]}">')[1].split("</figure>")[0]
    assert "mean ± std over seeds" in figure


def test_resolved_config_is_a_file_beside_the_report_not_in_the_pdf(report):
    config = yaml.safe_load((report / "config.yaml").read_text())
    assert config["preset"] == "quick" and config["presets"]["quick"]["seeds"] == SEEDS
    html = (report / "report.html").read_text()
    section = html.split('<details class="config">')[1].split("</details>")[0]
    assert "<pre>" in section and "weight_decay:" in section
    css = (TEMPLATES / "report.css").read_text()
    printed = css[css.index("@media print"):]
    assert re.search(r"details\.config\s*{\s*display:\s*none", printed)
    text = visible_pdf_text(report / "report.pdf")
    assert "config.yaml" in text                      # the pointer to the file
    assert "weight_decay:" not in text                # the config itself is not printed
