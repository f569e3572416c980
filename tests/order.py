"""The order the suite runs in: unit tests first, then the end-to-end tests in one of three
orders, to show that no end-to-end story depends on what ran before it (issue 18).

An end-to-end module tells one or more stories (a first deploy, then its re-run, then a
rotation...), one per value of its module-scoped parameters (`site[split]`, `site[fleet]`). The
steps of a story run in the order they are written; whole stories can run in any order:
  files    as collected (file order, the way pytest groups module parameters)
  reverse  the stories in reverse order
  shuffle  the stories shuffled by a seed (printed, so a failing order can be run again)

Pure: works on keys; tests/conftest.py applies it to pytest's items.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")

ORDERS = ("files", "reverse", "shuffle")


def stories(items: Sequence[T], key: dict[int, Hashable]) -> list[list[T]]:
    """Consecutive items with the same key (by position), as blocks kept in their order."""
    blocks: list[list[T]] = []
    last: object = object()
    for i, item in enumerate(items):
        if not blocks or key[i] != last:
            blocks.append([])
            last = key[i]
        blocks[-1].append(item)
    return blocks


def arrange(items: Sequence[T], is_unit: Sequence[bool], story_key: Sequence[Hashable],
            order: str = "files", seed: int | None = None) -> list[T]:
    """Unit tests first (in their order), then the end-to-end stories in `order`."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    unit = [it for it, u in zip(items, is_unit, strict=True) if u]
    rest = [(it, k) for it, u, k in zip(items, is_unit, story_key, strict=True) if not u]
    blocks = stories([it for it, _ in rest], {i: k for i, (_, k) in enumerate(rest)})
    if order == "reverse":
        blocks.reverse()
    elif order == "shuffle":
        random.Random(seed).shuffle(blocks)
    return unit + [it for block in blocks for it in block]
