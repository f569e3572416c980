"""End-to-end fixtures: real Slurm hosts from the testbed (tests/testbed).

`testbed` is a session-scoped factory: `topo = testbed.up("single")` boots (or reuses) the
topology and returns a RunningTopology (see tests/testbed/pytest_support.py for its API);
`testbed.up("single", fresh=True)` rebuilds its hosts to the start state first. Every topology
brought up during the session is taken down at its end (unless SRA_TESTBED_KEEP=1). A testbed that
cannot come up FAILS the test, in CI and elsewhere: end-to-end tests are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testbed.pytest_support import RunningTopology, TestbedFactory
from tests.testbed.testbed import Testbed


@pytest.fixture(scope="session")
def testbed() -> Iterator[TestbedFactory]:
    factory = TestbedFactory(Testbed(), pytest.fail)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def single(testbed: TestbedFactory) -> RunningTopology:
    return testbed.up("single")


@pytest.fixture(scope="session")
def split(testbed: TestbedFactory) -> RunningTopology:
    return testbed.up("split")
