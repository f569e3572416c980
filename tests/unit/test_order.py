"""The suite's order (tests/order.py, tests/conftest.py): unit tests first, end-to-end stories
kept whole in any order, and no end-to-end test once a unit test has failed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.order import arrange, stories

REPO = Path(__file__).resolve().parents[2]

# (name, is_unit, story): two e2e modules, the second with two module parameters.
ITEMS = [
    ("e2e_a::1", False, "a"), ("e2e_a::2", False, "a"),
    ("e2e_b::1[x]", False, "b-x"), ("e2e_b::2[x]", False, "b-x"),
    ("e2e_b::1[y]", False, "b-y"), ("e2e_b::2[y]", False, "b-y"),
    ("unit::1", True, "u"), ("unit::2", True, "u"),
]


def _arrange(order: str, seed: int | None = None) -> list[str]:
    names, units, keys = zip(*ITEMS, strict=True)
    return arrange(list(names), list(units), list(keys), order, seed)


def test_unit_tests_come_first_and_files_keep_the_collected_order():
    assert _arrange("files") == ["unit::1", "unit::2", "e2e_a::1", "e2e_a::2", "e2e_b::1[x]",
                                 "e2e_b::2[x]", "e2e_b::1[y]", "e2e_b::2[y]"]


def test_reverse_reverses_whole_stories_not_their_steps():
    assert _arrange("reverse")[2:] == ["e2e_b::1[y]", "e2e_b::2[y]", "e2e_b::1[x]",
                                       "e2e_b::2[x]", "e2e_a::1", "e2e_a::2"]


def test_a_shuffle_keeps_each_story_whole_and_is_the_same_for_a_seed():
    seen = set()
    for seed in range(30):
        order = _arrange("shuffle", seed)
        assert order == _arrange("shuffle", seed)
        assert order[:2] == ["unit::1", "unit::2"]
        blocks = [tuple(b) for b in stories(order[2:], {i: n.split("::")[0] + n[-3:]
                                                        for i, n in enumerate(order[2:])})]
        for block in blocks:  # every step of a story, in its written order
            assert list(block) == sorted(block)
        seen.add(tuple(order))
    assert len(seen) > 1


def test_an_unknown_order_is_refused():
    with pytest.raises(ValueError, match="files, reverse, shuffle"):
        _arrange("random")


def test_a_failing_unit_test_stops_the_run_before_the_first_end_to_end_test(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").write_text("")
    for name in ("conftest.py", "order.py"):
        (tmp_path / "tests" / name).write_text((REPO / "tests" / name).read_text())
    for sub in ("e2e", "unit"):
        (tmp_path / "tests" / sub).mkdir()
        (tmp_path / "tests" / sub / "__init__.py").write_text("")
    (tmp_path / "tests" / "e2e" / "test_story.py").write_text(textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.e2e
        def test_e2e(): pass
    """))
    (tmp_path / "tests" / "unit" / "test_fast.py").write_text(textwrap.dedent("""
        import os
        def test_unit(): assert os.environ.get("UNIT_OK") == "1"
    """))
    (tmp_path / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n"
                                         "markers = e2e: end-to-end\n")

    def run(unit_ok: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v"], cwd=tmp_path,
            capture_output=True, text=True, check=False,
            env={"PATH": "/usr/bin:/bin", "UNIT_OK": unit_ok, "PYTHONPATH": str(tmp_path)})

    failed = run("0")
    assert failed.returncode == 1, failed.stdout
    assert "test_unit FAILED" in failed.stdout and "test_e2e" not in failed.stdout
    assert "end-to-end tests were not run" in failed.stdout
    passed = run("1")
    assert passed.returncode == 0, passed.stdout
    lines = [ln for ln in passed.stdout.splitlines() if " PASSED" in ln]
    assert ["test_unit" in lines[0], "test_e2e" in lines[1]] == [True, True]


def test_every_end_to_end_module_is_marked_so_it_runs_after_the_unit_tests():
    # An unmarked module under tests/e2e runs among the unit tests, first (measured: it did).
    e2e = Path(__file__).resolve().parents[1] / "e2e"
    unmarked = [p.name for p in sorted(e2e.glob("test_*.py"))
                if "pytestmark = pytest.mark.e2e" not in p.read_text()]
    assert unmarked == []
