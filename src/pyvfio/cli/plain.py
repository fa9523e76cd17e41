"""The part of the CLI that needs neither typer nor rich: JSON output, and what
``pyvfio ls`` lists.

Importing typer alone costs several times Python's own start (issue 19), so
``pyvfio ls --json``, the command scripts call most, is answered by
:func:`fast_ls_json` before typer is imported, through the same :func:`listing` and
:meth:`Listing.to_json` the ``ls`` command uses. Anything it does not recognise, and
every error, goes to the typer command, which then says what it always said.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pyvfio.host.inventory import IommuGroup
    from pyvfio.host.journal import JournalEntry, JournalError
    from pyvfio.host.sriov import SriovEntry, SriovError

CLASS_FILTERS = {
    "gpu": (0x03,),
    "nvme": (0x01, 0x08),
    "net": (0x02,),
    "usb": (0x0C, 0x03),
    "audio": (0x04,),
}

UNSAFE_VERDICT = "UNSAFE no-IOMMU group: nothing confines its DMA (backend='unsafe-noiommu')"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@dataclass(frozen=True)
class Listing:
    """What ``pyvfio ls`` shows: the groups its filters chose, and what it says of them."""

    groups: list[IommuGroup]
    unsafe: frozenset[int]  # the no-IOMMU groups
    journal: dict[str, JournalEntry]
    damaged: (
        JournalError | SriovError | None
    )  # a journal could not be read: show the rest, then exit 2
    host_has_groups: bool  # before the filters: none at all means the IOMMU is off
    vf_relations: dict[str, dict[str, Any]]  # PFs and VFs: their SR-IOV fields
    vf_journal: dict[str, SriovEntry]  # VF counts pyvfio changed

    def to_json(self) -> dict[str, Any]:
        from pyvfio.host.inventory import listing_json

        data = listing_json(self.groups, self.journal)
        for entry in data["groups"]:
            if entry["group"] in self.unsafe:  # only there, so the schema stays as it was
                entry["noiommu"] = True
                entry["verdict"] = UNSAFE_VERDICT
            for dev in entry["devices"]:  # PFs and VFs only: the others stay as they were
                dev.update(self.vf_relations.get(dev["address"], {}))
        if self.vf_journal:  # only then, so the schema stays as it was
            data["sriov_journal"] = [e.to_json() for e in self.vf_journal.values()]
        if self.damaged is not None:  # only then, so the schema stays as it was
            data["journal_error"] = str(self.damaged)
        return data


def listing(
    group: int | None = None,
    klass: str | None = None,
    vendor: str | None = None,
    root: str = "/",
) -> Listing:
    """The IOMMU groups of ``root`` that the filters of ``pyvfio ls`` choose (ValueError
    for a filter that cannot be one)."""
    from pyvfio.host import sriov
    from pyvfio.host.inventory import iommu_groups
    from pyvfio.host.journal import JournalError, journal_of
    from pyvfio.host.sysfs import LIVE, Sysfs
    from pyvfio.noiommu import noiommu_groups

    if klass is not None and klass not in CLASS_FILTERS:
        raise ValueError(f"unknown class {klass!r}: use one of {', '.join(CLASS_FILTERS)}")
    try:
        vendor_id = int(vendor, 16) if vendor is not None else None
    except ValueError:
        vendor_id = -1
    if vendor_id is not None and not 0 <= vendor_id <= 0xFFFF:
        raise ValueError(f"vendor {vendor!r} is not a hex ID like 8086 (at most 4 hex digits)")
    if group is not None and group < 0:
        raise ValueError(f"--group {group}: IOMMU groups count from 0 (pyvfio ls lists them)")
    sysfs: Sysfs
    if root == "/":  # the live host: the snapshot reader (tarfile, config parsers) not needed
        sysfs = LIVE
    else:
        from pyvfio.host.snapshot import open_root

        sysfs = open_root(root)
    groups = iommu_groups(sysfs)
    host_has_groups = bool(groups)
    damaged: JournalError | sriov.SriovError | None = None
    try:
        journal = journal_of(sysfs)
    except JournalError as err:  # the groups are still worth showing; then exit 2
        journal, damaged = {}, err
    if group is not None:
        groups = [g for g in groups if g.number == group]
    if klass is not None or vendor_id is not None:
        want = CLASS_FILTERS.get(klass or "", ())

        def match(code: int, vid: int) -> bool:
            parts = (code >> 16, (code >> 8) & 0xFF)
            return parts[: len(want)] == want and vendor_id in (None, vid)

        groups = [g for g in groups if any(match(d.class_code, d.vendor_id) for d in g.devices)]
    unsafe = frozenset(noiommu_groups(sysfs))
    vf_relations = sriov.relations(sysfs)
    try:
        vf_journal = sriov.journal_entries() if sysfs.is_live else {}
    except sriov.SriovError as err:
        vf_journal, damaged = {}, damaged or err
    return Listing(groups, unsafe, journal, damaged, host_has_groups, vf_relations, vf_journal)


#: ``pyvfio ls``'s options that take a value, and how the fast path reads each: only
#: spellings whose meaning is beyond doubt (click's conversions agree on them).
_VALUE_OPTIONS = {
    "--group": re.compile(r"[0-9]+"),
    "--class": re.compile(r"[a-z]+"),
    "--vendor": re.compile(r"[0-9A-Fa-f]{1,4}"),
    "--root": re.compile(r"[^-].*", re.DOTALL),
}


def parse_ls_json(argv: Sequence[str]) -> dict[str, Any] | None:
    """The arguments of ``ls --json [--group N] [--class C] [--vendor V] [--root R]`` as
    click would read them, or None for anything else (help, another command, a value
    it would refuse or read differently): typer then takes the command line."""
    if not argv or argv[0] != "ls":
        return None
    found: dict[str, Any] = {}
    rest = list(argv[1:])
    while rest:
        token = rest.pop(0)
        if token == "--json":
            found["json"] = True
            continue
        name, eq, value = token.partition("=")
        if name not in _VALUE_OPTIONS:
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        if not _VALUE_OPTIONS[name].fullmatch(value):
            return None
        found[name] = value  # the last one counts, as in click
    if not found.pop("json", False):
        return None
    return {
        "group": int(found["--group"]) if "--group" in found else None,
        "klass": found.get("--class"),
        "vendor": found.get("--vendor"),
        "root": found.get("--root", "/"),
    }


class _QuietFlush:
    """A stream whose flush ignores a closed pipe (click's PacifyFlushWrapper)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as err:
            if err.errno != errno.EPIPE:
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def fast_ls_json(argv: Sequence[str]) -> bool:
    """Answer ``pyvfio ls --json ...`` without typer; False (nothing printed) when typer
    must: another command line, shell completion, or any error, which the typer
    command then reports as it always did (``ls`` changes nothing: reading twice is safe).
    """
    args = parse_ls_json(argv)
    if args is None or any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return False
    try:
        try:
            result = listing(**args)
        except Exception:  # typer's path says what it was, as it always did
            return False
        if result.damaged is not None:  # an error to report: typer's path prints it
            return False
        print_json(result.to_json())
    except KeyboardInterrupt:  # as click and the typer app say it
        sys.stderr.write("\naborted\n")
        sys.exit(1)
    except OSError as err:  # as click does when the reader went away (| head)
        if err.errno != errno.EPIPE:
            raise
        sys.stdout = _QuietFlush(sys.stdout)
        sys.stderr = _QuietFlush(sys.stderr)
        sys.exit(1)
    return True
