"""A container for key material that cannot leak by accident.

Anything that prints, logs, formats or pickles the object sees only a short fingerprint of the
SHA-256 of the content; getting the bytes takes an explicit `.reveal()`, easy to grep for.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, NoReturn

FINGERPRINT_LEN = 12


class SecretBytes:
    """Secret bytes (a JWT signing key). Immutable; compared in constant time."""

    __slots__ = ("_sha256", "_value")

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            # The message names the type only, never the value (it could be the key as text).
            raise TypeError(f"SecretBytes needs bytes, not {type(value).__name__}")
        self._value = bytes(value)
        self._sha256 = hashlib.sha256(self._value).hexdigest()

    def reveal(self) -> bytes:
        """The raw bytes. Every call site is a place where the secret leaves this wrapper."""
        return self._value

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def fingerprint(self) -> str:
        return self._sha256[:FINGERPRINT_LEN]

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"<secret sha256:{self.fingerprint}>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        # f"{key!r}" and f"{key}" both end here or in __repr__: never the bytes.
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        # Comparing digests in constant time: no timing signal about where the keys differ.
        return hmac.compare_digest(self._sha256, other._sha256)

    def __hash__(self) -> int:
        return hash(self._sha256)

    # Pickling would write the bytes to wherever the pickle goes (multiprocessing, caches, dumps).
    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")

    # Immutable, so copies can be the same object (and copy must not go through pickling hooks).
    def __copy__(self) -> SecretBytes:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretBytes:
        return self


__all__ = ["FINGERPRINT_LEN", "SecretBytes"]
