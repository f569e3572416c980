"""HAND-CHECK STUB of python-ldap's ldap.filter (see ldap/__init__.py)."""


def __getattr__(name: str) -> object:
    raise ImportError(f"ldap stub (tests/testbed/realagent): ldap.filter.{name} is not available")
