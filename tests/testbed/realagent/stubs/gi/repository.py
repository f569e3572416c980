"""HAND-CHECK STUB: the names RacksDB imports from gi.repository, never used with racksdb off."""

Pango = None
PangoCairo = None
