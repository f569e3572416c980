"""Memory used by the running testbed: RSS and PSS summed over every process of every host.

Run as root: `python -m tests.testbed.memusage`. PSS shares pages between the hosts fairly (the
hosts share one base, so their libraries are counted once overall), RSS over-counts them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tests.testbed.machine import nspawn_pids_below
from tests.testbed.testbed import Testbed


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree[ppid].append(int(entry.name))
    return tree


def _rollup(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, rest = line.partition(":")
            values[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


def usage() -> dict[str, dict[str, int]]:
    """Per host: process count, RSS and PSS in KiB (nspawn itself included)."""
    tree = _children()
    result = {}
    for pid, root in nspawn_pids_below(Testbed().hosts_dir).items():
        todo, pids = [pid], []
        while todo:
            p = todo.pop()
            pids.append(p)
            todo.extend(tree.get(p, []))
        rollups = [_rollup(p) for p in pids]
        result[root.parent.name] = {
            "processes": len(pids),
            "rss_kib": sum(r.get("Rss", 0) for r in rollups),
            "pss_kib": sum(r.get("Pss", 0) for r in rollups),
        }
    return result


def main() -> None:
    per_host = usage()
    for name, u in sorted(per_host.items()):
        print(f"{name:<12} {u['processes']:>4} processes  RSS {u['rss_kib'] / 1024:7.1f} MiB  "
              f"PSS {u['pss_kib'] / 1024:7.1f} MiB")
    rss = sum(u["rss_kib"] for u in per_host.values()) / 1024
    pss = sum(u["pss_kib"] for u in per_host.values()) / 1024
    print(f"{'total':<12} {sum(u['processes'] for u in per_host.values()):>4} processes  "
          f"RSS {rss:7.1f} MiB  PSS {pss:7.1f} MiB")


if __name__ == "__main__":
    main()
