"""The docs' tables against the code's own definitions, and every relative link of the docs.

Exit codes are what scripts act on and host data / watch.toml keys are what users write: a
code, setting or key added, renamed or removed in the code without its row in docs/ (or a row
left for one that is gone) fails here. Kept simple: the tables are read by their first column.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from slurmrestd_access.settings import Settings
from watchdog_daemon.exitcodes import ExitCode
from watchdog_daemon.watch import config as watchconfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every table of a Markdown text: (header cells, rows of cells)."""
    found: list[tuple[list[str], list[list[str]]]] = []
    block: list[str] = []
    for line in [*_prose(text), ""]:
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            found.append((_cells(block[0]), [_cells(row) for row in block[2:]]))
        block = []
    return found


def table_rows(page: Path, first_header: str) -> list[list[str]]:
    """The rows of the tables of `page` whose first column is headed `first_header`."""
    rows = [row for header, body in tables(page.read_text(encoding="utf-8"))
            if header[0] == first_header for row in body]
    assert rows, f"{page.relative_to(ROOT)}: no table headed {first_header!r}"
    return rows


def names(cell: str) -> set[str]:
    """The `code` names in a table cell."""
    return set(re.findall(r"`([^`]+)`", cell))


# --- exit codes -------------------------------------------------------------------------------

def documented_exit_codes() -> tuple[dict[int, list[str]], list[tuple[int, int]]]:
    """Exit codes of the `exit` tables of check.md and watchdog.md: single codes (`30 / 31`
    is two) with their rows, and ranges (`20-33` with an en dash: "the check's codes") apart."""
    singles: dict[int, list[str]] = {}
    ranges: list[tuple[int, int]] = []
    for page in (DOCS / "check.md", DOCS / "watchdog.md"):
        for row in table_rows(page, "exit"):
            span = re.fullmatch(r"(\d+)\s*[\u2013-]\s*(\d+)", row[0])
            if span:
                ranges.append((int(span[1]), int(span[2])))
                continue
            numbers = re.findall(r"\d+", row[0])
            assert numbers and re.fullmatch(r"[\d\s/]+", row[0]), \
                f"{page.name}: exit cell {row[0]!r} is neither codes nor a range"
            for number in numbers:
                singles.setdefault(int(number), []).append(" | ".join(row))
    return singles, ranges


def test_every_exit_code_is_documented_with_its_number():
    singles, _ = documented_exit_codes()
    missing = [f"{code.name} = {code.value}" for code in ExitCode if code.value not in singles]
    assert not missing, f"exit codes without a row in docs/check.md or docs/watchdog.md: {missing}"


def test_no_documented_exit_code_is_unknown():
    singles, ranges = documented_exit_codes()
    known = {code.value for code in ExitCode}
    unknown = sorted(set(singles) - known)
    assert not unknown, f"docs name exit codes the code does not have: {unknown}"
    bad_ranges = [r for r in ranges if r[0] not in known or r[1] not in known or r[0] > r[1]]
    assert not bad_ranges, f"exit ranges whose ends are not exit codes: {bad_ranges}"


def test_the_checks_reasons_name_their_codes():
    # docs/check.md's reason column is the lower-case name of the code (`key_missing` = 11).
    rows = table_rows(DOCS / "check.md", "exit")
    by_number = {int(row[0]): row for row in rows}
    wrong = []
    for code in ExitCode:
        want = f"`{code.name.lower()}`"
        if 10 <= code.value < 50 and code.value in by_number and by_number[code.value][1] != want:
            wrong.append(f"{code.value}: {by_number[code.value][1]} != {want}")
    for row in rows:
        for name in names(row[1]):
            if name.upper() not in ExitCode.__members__ or \
                    ExitCode[name.upper()].value != int(row[0]):
                wrong.append(f"{row[0]}: `{name}` is not the name of exit code {row[0]}")
    assert not wrong, "docs/check.md's reasons drifted from ExitCode: " + "; ".join(wrong)


# --- settings ---------------------------------------------------------------------------------

def test_every_host_data_setting_is_in_the_deploy_table_and_back():
    documented: set[str] = set()
    for row in table_rows(DOCS / "deploy.md", "host data"):
        documented |= names(row[0])
    fields = {field.name for field in dataclasses.fields(Settings)}
    assert not fields - documented, \
        f"Settings fields missing from docs/deploy.md's table: {sorted(fields - documented)}"
    assert not documented - fields, \
        f"docs/deploy.md documents host data that is no setting: {sorted(documented - fields)}"


def test_every_watch_toml_key_is_in_the_watchdog_table_and_back():
    documented: set[str] = set()
    for row in table_rows(DOCS / "watchdog.md", "key"):
        documented |= names(row[0])
    # What config_from_mapping accepts: the known keys, and the deprecated ones it ignores.
    accepted = set(watchconfig._KNOWN) | set(watchconfig.DEPRECATED)
    assert not accepted - documented, \
        f"watch.toml keys missing from docs/watchdog.md's table: {sorted(accepted - documented)}"
    assert not documented - accepted, \
        f"docs/watchdog.md documents watch.toml keys the daemon refuses: " \
        f"{sorted(documented - accepted)}"


# --- links ------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """The anchor a forge (GitHub, GitLab, Forgejo) gives a heading."""
    # lower case, punctuation (backticks, dots, commas, apostrophes) dropped, spaces -> "-"
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(line.lstrip("#")) for line in _prose(page.read_text(encoding="utf-8"))
            if re.match(r"#{1,6} ", line)}


def relative_links(page: Path) -> list[str]:
    return [target for line in _prose(page.read_text(encoding="utf-8"))
            for target in _LINK.findall(line)
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_headings(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no such heading in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_the_docs_pages_are_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    orphans = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"
