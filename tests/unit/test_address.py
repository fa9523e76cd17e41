from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvfio.errors import InvalidAddressError
from pyvfio.pci.address import normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:1f.2", "0000:00:1f.2"),
        ("0000:00:1F.2", "0000:00:1f.2"),
        (" 0000:03:00.0\n", "0000:03:00.0"),
        ("10000:e1:00.7", "10000:e1:00.7"),
        ("1:2.3", "0000:01:02.3"),
    ],
)
def test_normalize_accepts_lspci_and_sysfs_forms(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0000:00:1f.9", "function 9 is out of range"),
        ("0000:00:20.0", "device 0x20 is out of range"),
        ("zz:00.0", "is not a PCI address"),
        ("", "is not a PCI address"),
        ("00:1f", "is not a PCI address"),
        ("0000:00:1f.2.1", "is not a PCI address"),
    ],
)
def test_normalize_rejects_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(InvalidAddressError, match=why):
        normalize(text)


def test_non_strings_are_refused() -> None:
    with pytest.raises(InvalidAddressError, match="must be a string"):
        normalize(0x1F2)  # type: ignore[arg-type]


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7))
def test_round_trip(domain: int, bus: int, dev: int, fn: int) -> None:
    text = f"{domain:04x}:{bus:02x}:{dev:02x}.{fn}"
    assert normalize(text) == text
    assert normalize(normalize(text).upper()) == text


@given(st.text(max_size=20))
def test_any_text_parses_or_raises_invalid_address(text: str) -> None:
    try:
        out = normalize(text)
    except InvalidAddressError:
        return
    assert normalize(out) == out


_CANONICAL = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]")


@st.composite
def _mutated_addresses(draw: st.DrawFn) -> str:
    """A valid address with a few characters inserted, replaced or removed: near misses
    that random text almost never produces (path separators, unicode digits, NUL)."""
    text = list(draw(st.sampled_from(["0000:00:1f.2", "00:10.0", "10000:e1:00.7", "1:2.3"])))
    alphabet = st.sampled_from(list("0123456789abcdefABCDEFxg:./ \n\t\x00-+٣１"))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["insert", "replace", "delete"]))
        if how == "insert":
            text.insert(where, draw(alphabet))
        elif text and where < len(text):
            if how == "replace":
                text[where] = draw(alphabet)
            else:
                del text[where]
    return "".join(text)


@settings(max_examples=500)
@given(_mutated_addresses())
def test_a_near_miss_parses_to_a_canonical_address_or_says_why(text: str) -> None:
    """Whatever is accepted is canonical (so it is safe inside a sysfs path: no '/', no
    '..', no NUL) and a fixed point; everything else is InvalidAddressError."""
    try:
        out = normalize(text)
    except InvalidAddressError as err:
        assert "\n" not in str(err).replace(repr(text), "")
        return
    assert _CANONICAL.fullmatch(out), out
    assert normalize(out) == out
