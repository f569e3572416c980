"""HAND-CHECK STUB of pycairo (no wheel exists): RacksDB's drawers import it at module level.

The agent runs with `[racksdb] enabled=no`, so nothing here is ever called; any use fails loudly.
"""


def __getattr__(name: str) -> object:
    raise ImportError(f"cairo stub (tests/testbed/realagent): cairo.{name} is not available")
