"""HAND-CHECK STUB: the class RFL names in annotations (see ldap/__init__.py)."""


class LDAPObject:
    pass
