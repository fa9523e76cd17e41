"""Byte sizes as people read and write them, in binary units: one formatter, one parser.

Every size pyvfio prints or reads as text goes through here, so ``doctor``, ``show``,
``grant`` and ``vm qemu`` say one size the same way. :func:`size_text` is exact unless
asked to round: ``1536`` is ``1536 B`` (never ``1 KiB``), ``3 << 30`` is ``3 GiB``.
:func:`parse_size` reads what ``ulimit``-style options take: ``512M``, ``4G``, ``2GiB``.
"""

from __future__ import annotations

#: Binary (IEC) units, each 1024 times the one before.
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

#: What a suffix of :func:`parse_size` multiplies by (``B`` and ``iB`` may follow it).
SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_text(n: int, *, exact: bool = True) -> str:
    """``n`` bytes for reading.

    ``exact``: in the largest unit ``n`` is a whole number of, so nothing is lost
    (``1536 B``, ``1536 MiB``, ``3 GiB``). Otherwise in the largest unit not above ``n``,
    with one decimal where it is not whole (``1.5 KiB``, ``2 MiB``).
    """
    step = 0
    if exact:
        while step < len(UNITS) - 1 and n >= 1024 << 10 * step and n % (1024 << 10 * step) == 0:
            step += 1
        return f"{n >> 10 * step} {UNITS[step]}"
    while step < len(UNITS) - 1 and n >= 1024 << 10 * step:
        step += 1
    unit = 1 << 10 * step
    return f"{n / unit:.0f} {UNITS[step]}" if n % unit == 0 else f"{n / unit:.1f} {UNITS[step]}"


def parse_size(text: str, *, unit: int = 1, examples: str = "512M or 16G") -> int:
    """``512M``, ``4G``, ``2GiB``, ``1.5T`` as bytes; a bare number counts ``unit`` bytes.

    Case does not matter and the suffixes are binary. The range is the caller's to
    check; ValueError (naming ``examples``) for text that is no size at all.
    """
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = t[-1:] if t[-1:] in SUFFIXES else ""
    try:
        return int(float(t[: len(t) - len(suffix)]) * SUFFIXES.get(suffix, unit))
    except (ValueError, OverflowError):  # OverflowError: "inf"
        raise ValueError(f"{text!r} is not a size like {examples}") from None
