"""SecretBytes never shows its content except through reveal()."""

from __future__ import annotations

import copy
import hashlib
import pickle

import pytest

from watchdog_daemon.keys.secret import SecretBytes

SENTINEL = b"SENTINEL-KEY-0123456789abcdefghijklmnop"


def test_reveal_and_hashes():
    s = SecretBytes(SENTINEL)
    assert s.reveal() == SENTINEL
    assert s.sha256 == hashlib.sha256(SENTINEL).hexdigest()
    assert s.fingerprint == s.sha256[:12]
    assert len(s) == len(SENTINEL)


@pytest.mark.parametrize("render", [repr, str, lambda s: f"{s}", lambda s: f"{s!r}",
                                    lambda s: "%s" % s,  # noqa: UP031
                                    lambda s: "{}".format(s),  # noqa: UP032
                                    lambda s: repr([s]), lambda s: repr({"k": s})])
def test_renderings_show_only_fingerprint(render):
    s = SecretBytes(SENTINEL)
    text = render(s)
    assert "SENTINEL" not in text
    assert SENTINEL.hex() not in text
    assert f"<secret sha256:{s.fingerprint}>" in text


def test_equality_by_hash():
    assert SecretBytes(SENTINEL) == SecretBytes(SENTINEL)
    assert SecretBytes(SENTINEL) != SecretBytes(SENTINEL + b"x")
    assert SecretBytes(SENTINEL) != SENTINEL  # never equal to raw bytes
    assert hash(SecretBytes(SENTINEL)) == hash(SecretBytes(SENTINEL))


def test_not_picklable():
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(SecretBytes(SENTINEL))


def test_copy_returns_same_object():
    s = SecretBytes(SENTINEL)
    assert copy.copy(s) is s
    assert copy.deepcopy(s) is s


def test_type_error_does_not_echo_value():
    with pytest.raises(TypeError) as info:
        SecretBytes("SENTINEL-as-text")  # type: ignore[arg-type]
    assert "SENTINEL" not in str(info.value)


def test_no_instance_dict():
    with pytest.raises(AttributeError):
        SecretBytes(SENTINEL).__dict__  # noqa: B018
