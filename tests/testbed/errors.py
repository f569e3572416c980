"""The one error type the testbed raises: its message tells the user what to do."""


class TestbedError(Exception):
    """A failure with a message meant for the person running the testbed."""

    # Not a pytest test class despite the name.
    __test__ = False
