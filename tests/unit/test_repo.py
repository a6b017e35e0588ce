"""The repository's promises about itself: CI runs exactly the README's test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)?\n(.*?)\n```", section, flags=re.S)


def test_quickstart_has_two_commands_and_ci_runs_the_test_one():
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "pytest" in tests
    # the main job runs the default preset of the workflow, offline through the mirror
    assert "snakemake" in main_job and "preset=" not in main_job
    assert "APOT_DATA_MIRROR=../shared/data" in main_job
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith("#")]
    assert ci_lines[-1] == tests


# The documentation is split by reader: a short README and pages under docs/, all reachable.
README_MAX_LINES = 160
FENCED_CODE = re.compile(r"^(```|~~~).*?^\1", flags=re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", flags=re.M)


def markdown_links(path: Path) -> list[str]:
    """The targets of the inline and reference links of a markdown file, code left out."""
    text = INLINE_CODE.sub("", FENCED_CODE.sub("", path.read_text()))
    return INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)


def relative_targets(path: Path) -> list[tuple[str, Path]]:
    """Each relative link of `path` with the file it points at (anchor and query left out);
    links to a URL (scheme:) and links to an anchor of the same page are not files."""
    targets = []
    for link in markdown_links(path):
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", link) or link.startswith("#"):
            continue
        file = link.split("#", 1)[0].split("?", 1)[0]
        targets.append((link, (path.parent / file).resolve()))
    return targets


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, more than {README_MAX_LINES}: move detail to docs/")


def test_every_docs_page_is_linked_from_the_readme_and_every_relative_link_resolves():
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages, "no docs/*.md pages"
    linked = {target for _, target in relative_targets(ROOT / "README.md")}
    unlinked = [page.relative_to(ROOT).as_posix() for page in pages if page.resolve() not in linked]
    assert not unlinked, f"docs pages not linked from README.md: {unlinked}"
    broken = [f"{path.relative_to(ROOT).as_posix()}: {link}"
              for path in [ROOT / "README.md", *pages]
              for link, target in relative_targets(path) if not target.exists()]
    assert not broken, f"relative links to files that do not exist: {broken}"
