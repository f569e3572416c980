"""The key files as the sync pipeline uses them: `KeyStore`, an interface tests can fake, and
`RealKeyStore`, keys/keyfile.py and keys/keywrite.py behind it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from watchdog_daemon.keys.secret import SecretBytes


class KeyStore(Protocol):
    def read_key(self, path: Path) -> SecretBytes: ...

    def describe(self, path: Path) -> Any: ...  # keyfile.FileState

    def install(self, secret: SecretBytes, dest: Path, *, owner: str, group: str,
                mode: int) -> bool: ...

    def remove_stale(self, directory: Path) -> list[Path]: ...

    def owner_ids(self, owner: str, group: str, path: Path) -> tuple[int, int]: ...


class RealKeyStore:
    """keys/keyfile.py's and keywrite.py's functions; Slurm's key is read under Slurm's rule."""

    def read_key(self, path: Path) -> SecretBytes:
        from watchdog_daemon.keys.keyfile import read_key

        return read_key(path, allow_group=True, stable=True)

    def describe(self, path: Path) -> Any:
        from watchdog_daemon.keys.keyfile import describe_file

        return describe_file(path)

    def install(self, secret: SecretBytes, dest: Path, *, owner: str, group: str,
                mode: int) -> bool:
        from watchdog_daemon.keys.keywrite import install_key_atomically

        return install_key_atomically(secret, dest, owner=owner, group=group, mode=mode)

    def remove_stale(self, directory: Path) -> list[Path]:
        from watchdog_daemon.keys.keywrite import remove_stale_temp_files

        return remove_stale_temp_files(directory)

    def owner_ids(self, owner: str, group: str, path: Path) -> tuple[int, int]:
        from watchdog_daemon.keys.keywrite import resolve_owner

        return resolve_owner(owner, group, path)
