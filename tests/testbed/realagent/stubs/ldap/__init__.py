"""HAND-CHECK STUB of python-ldap (no wheel exists): Slurm-web 6.x's unified `slurm-web`
command imports its gateway, which imports RFL's LDAP authentication, even to run `agent` or
`connect-check` (5.x's separate agent executables never import it). RFL's class annotations
name `ldap.ldapobject.LDAPObject` at import time; nothing else is used unless LDAP is. The agent
never calls LDAP; any other use fails loudly."""

from . import filter, ldapobject  # noqa: F401  (RFL reaches them as ldap.filter, ldap.ldapobject)


def __getattr__(name: str) -> object:
    raise ImportError(f"ldap stub (tests/testbed/realagent): ldap.{name} is not available")
