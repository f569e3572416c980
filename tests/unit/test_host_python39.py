"""The host side (watchdog_daemon/) must run on Python 3.9 (RHEL 9, Debian 11).

Three layers, none of which needs a 3.9 interpreter on the workstation:
- ruff checks watchdog_daemon/ with target-version py39 (pyproject: per-file-target-version),
  which reports 3.10+ syntax such as `match`;
- vermin reports standard-library names and arguments newer than 3.9 (`tomllib`,
  `logging.getLevelNamesMapping`, `zip(strict=)`, ...);
- the AST checks below catch what both miss: PEP 604 unions evaluated at run time.
The real interpreter proof is end to end: tests/e2e/test_releases.py imports every module and
runs the tool under bullseye1's Python 3.9.
"""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST_SIDE = [ROOT / "watchdog_daemon", ROOT / "tests/testbed/standin"]
# vermin has no __main__ module: its console script, beside this interpreter.
VERMIN = str(Path(sys.executable).with_name("vermin"))
_TYPES = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)}


def host_files() -> list[Path]:
    return sorted(p for d in HOST_SIDE for p in d.rglob("*.py"))


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (never evaluated with postponed annotations)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        roots: list[ast.AST | None] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            roots += [a.annotation for a in every if a is not None]
            roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
        for root in roots:
            if root is not None:
                inside.update(id(n) for n in ast.walk(root))
    return inside


def _looks_like_type(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Subscript):  # list[int], dict[str, Any]
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _looks_like_type(node.left) or _looks_like_type(node.right)
    name = node.id if isinstance(node, ast.Name) else (
        node.attr if isinstance(node, ast.Attribute) else "")
    # Builtin types, or CamelCase class names (ALL_CAPS constants are bit flags: O_CREAT | ...).
    return name in _TYPES or (name[:1].isupper() and not name.isupper())


def runtime_py310(source: str) -> list[str]:
    """3.10+ constructs that only fail when the code runs on 3.9 (line: what)."""
    tree = ast.parse(source)
    annotations = _annotation_nodes(tree)
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                 and any(a.name == "annotations" for a in n.names) for n in tree.body)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) \
                and _looks_like_type(node):
            if id(node) not in annotations:
                found.append(f"{line}: `X | Y` of types evaluated at run time (3.10+)")
            elif not future:
                found.append(f"{line}: `X | Y` in an annotation without "
                             "`from __future__ import annotations` (3.10+)")
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            keywords = {k.arg for k in node.keywords}
            if name == "zip" and "strict" in keywords:
                found.append(f"{line}: zip(strict=) (3.10+)")
            if name == "dataclass" and keywords & {"slots", "kw_only", "match_args"}:
                found.append(f"{line}: dataclass(slots/kw_only/match_args) (3.10+)")
            if name == "get_type_hints":
                found.append(f"{line}: get_type_hints evaluates `X | Y` annotations (3.10+)")
        if sys.version_info >= (3, 10) and isinstance(node, getattr(ast, "Match", ())):
            found.append(f"{line}: match statement (3.10+)")
    return list(dict.fromkeys(found))  # a nested `A | B | C` is reported once


@pytest.mark.parametrize("path", host_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_host_side_has_no_runtime_310_constructs(path):
    assert runtime_py310(path.read_text()) == []


def test_the_ast_check_finds_what_it_is_for():
    bad = (
        "def f(x: int | None) -> None:\n"          # 1: annotation, no __future__ import
        "    isinstance(x, bytes | bytearray)\n"    # 2
        "    Alias = Path | None\n"                 # 3
        "    zip([], [], strict=True)\n"            # 4
        "    match x:\n"                            # 5
        "        case _: pass\n"
        "@dataclass(slots=True)\n"                  # 7
        "class C: pass\n"
    )
    found = runtime_py310(bad)
    assert sorted(int(f.split(":")[0]) for f in found) == [1, 2, 3, 4, 5, 7]
    good = (
        "from __future__ import annotations\n"
        "def f(x: int | None, flags: int) -> list[str] | None:\n"
        "    y: dict[str, int] | None = None\n"
        "    return isinstance(x, (bytes, bytearray)) or flags | O_CREAT | os.O_EXCL\n"
    )
    assert runtime_py310(good) == []


def test_vermin_finds_nothing_newer_than_39():
    pytest.importorskip("vermin")  # in the `test` extra: installed by scripts/bootstrap.sh
    done = subprocess.run(
        [VERMIN, "--no-tips", "--violations", "-t=3.9-",
         *(str(d) for d in HOST_SIDE)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_would_flag_a_311_module(tmp_path):
    pytest.importorskip("vermin")
    bad = tmp_path / "bad.py"
    bad.write_text("import tomllib\n")
    done = subprocess.run(
        [VERMIN, "--no-tips", "--violations", "-t=3.9-", str(bad)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode != 0 and "tomllib" in done.stdout


def test_wheelhouse_fetches_tomli_for_hosts_before_311_only():
    from slurmrestd_access.wheelhouse import requirements

    # pip download --python-version evaluates markers for the workstation's Python, not the
    # host's: the wheelhouse must do it, or a 3.9 host gets no TOML parser.
    assert "tomli>=1.1" in requirements("3.9")
    assert "tomli>=1.1" in requirements("3.10")
    assert not [r for r in requirements("3.11") if r.startswith("tomli")]
    assert not [r for r in requirements("3.14") if ";" in r]


def _wheel(path: Path, name: str, requires: list[str]) -> Path:
    import zipfile

    wheel = path / f"{name}-1.0-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n{}\n\nbody: Requires-Dist: no\n".format(
        name, "".join(f"Requires-Dist: {r}\n" for r in requires))
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}-1.0.dist-info/METADATA", meta)
    return wheel


def test_wheelhouse_closes_dependencies_for_the_hosts_python(tmp_path):
    from slurmrestd_access.wheelhouse import missing_dependencies

    # structlog 25 on 3.9 needs typing-extensions; pip, running on 3.11, skips it.
    wheels = [
        _wheel(tmp_path, "structlog", ['typing-extensions; python_version < "3.11"']),
        _wheel(tmp_path, "requests", ["urllib3<3,>=1.21.1", "PySocks!=1.5.7; extra == 'socks'"]),
        _wheel(tmp_path, "urllib3", []),
    ]
    assert missing_dependencies(wheels, "3.9") == ["typing-extensions"]
    assert missing_dependencies(wheels, "3.13") == []
