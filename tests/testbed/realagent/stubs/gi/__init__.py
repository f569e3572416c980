"""HAND-CHECK STUB of PyGObject (no wheel exists): RacksDB's drawers call
gi.require_version and import Pango and PangoCairo at module level. The agent runs with
`[racksdb] enabled=no`, so no drawing ever happens."""


def require_version(namespace: str, version: str) -> None:
    return None
