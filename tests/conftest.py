"""The whole suite's order: unit tests first; the end-to-end tests only when they all passed.

`./run-tests` runs everything in one pytest session. The unit tests take seconds and the
end-to-end tests twenty minutes on real hosts, so a unit failure stops the run before the first
end-to-end test. `--e2e-order reverse|shuffle [--e2e-seed N]` runs the end-to-end stories in
another order (tests/order.py) to show that none depends on what ran before it.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable

import pytest

from tests.order import ORDERS, arrange

_SCOPES_OF_A_STORY = ("module", "package", "session")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("slurmrestd-access")
    group.addoption("--e2e-order", choices=ORDERS, default="files",
                    help="order of the end-to-end stories (default: files)")
    group.addoption("--e2e-seed", type=int, default=None,
                    help="seed of --e2e-order shuffle (default: a new one, printed)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--e2e-order") == "shuffle" and config.getoption("--e2e-seed") is None:
        config.option.e2e_seed = secrets.randbelow(10**6)


def pytest_report_header(config: pytest.Config) -> str | None:
    order = config.getoption("--e2e-order")
    if order == "files":
        return None
    seed = f" --e2e-seed {config.getoption('--e2e-seed')}" if order == "shuffle" else ""
    return f"end-to-end order: --e2e-order {order}{seed}"


def _is_e2e(item: pytest.Item) -> bool:
    return item.get_closest_marker("e2e") is not None


def _story(item: pytest.Item) -> Hashable:
    """The module, and the values of its parameters that outlive one test (`site[fleet]`)."""
    params: tuple[tuple[str, int], ...] = ()
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        defs = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
        params = tuple(sorted(
            (name, index) for name, index in callspec.indices.items()
            if name in defs and defs[name][-1].scope in _SCOPES_OF_A_STORY
        ))
    return (item.nodeid.split("::")[0], params)


# After pytest's own reordering, which groups the tests of one module parameter together.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items[:] = arrange(items, [not _is_e2e(i) for i in items], [_story(i) for i in items],
                       config.getoption("--e2e-order"), config.getoption("--e2e-seed"))


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    session = item.session
    if (nextitem is not None and not _is_e2e(item) and _is_e2e(nextitem)
            and session.testsfailed):
        session.shouldfail = (f"{session.testsfailed} unit test(s) failed: the end-to-end "
                              "tests were not run (fix the unit tests first)")
