"""POSIX access ACLs as the kernel stores them: the ``system.posix_acl_access`` xattr
(include/uapi/linux/posix_acl_xattr.h), and the entry arithmetic that adds or removes
one named user without changing anybody else's effective rights (acl(5): the mask caps
the group class). ``pyvfio grant`` opens a VFIO node to one user with it
(:mod:`pyvfio.host.grant`).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace

ACL_XATTR = "system.posix_acl_access"
ACL_VERSION = 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = (
    0x01,
    0x02,
    0x04,
    0x08,
    0x10,
    0x20,
)
ACL_UNDEFINED_ID = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")  # e_tag, e_perm, e_id
RW = 0o6
#: The entries the mask caps (acl(5): the group class).
GROUP_CLASS = (ACL_USER, ACL_GROUP, ACL_GROUP_OBJ)


@dataclass(frozen=True, order=True)
class AclEntry:
    """One ``posix_acl_xattr_entry``: tag, permission bits (rwx = 4 2 1), id."""

    tag: int
    id: int
    perm: int


def decode_acl(raw: bytes) -> list[AclEntry]:
    """The entries of a ``system.posix_acl_access`` value."""
    if len(raw) < _HEADER.size or (len(raw) - _HEADER.size) % _ENTRY.size:
        raise ValueError(f"an ACL of {len(raw)} bytes is not a header plus whole entries")
    (version,) = _HEADER.unpack_from(raw)
    if version != ACL_VERSION:
        raise ValueError(f"ACL version {version}, not {ACL_VERSION}")
    return [
        AclEntry(tag, ident, perm) for tag, perm, ident in _ENTRY.iter_unpack(raw[_HEADER.size :])
    ]


def encode_acl(entries: Sequence[AclEntry]) -> bytes:
    """The xattr value; the kernel wants entries sorted by tag, then id."""
    body = b"".join(_ENTRY.pack(e.tag, e.perm, e.id) for e in sorted(entries))
    return _HEADER.pack(ACL_VERSION) + body


def acl_of_mode(mode: int) -> list[AclEntry]:
    """The minimal ACL a mode stands for (owner, group, others)."""
    return [
        AclEntry(ACL_USER_OBJ, ACL_UNDEFINED_ID, (mode >> 6) & 7),
        AclEntry(ACL_GROUP_OBJ, ACL_UNDEFINED_ID, (mode >> 3) & 7),
        AclEntry(ACL_OTHER, ACL_UNDEFINED_ID, mode & 7),
    ]


def _with_mask(entries: list[AclEntry]) -> list[AclEntry]:
    """Recompute the mask as the union of the group class; an ACL with no named entries
    needs none. Callers cut the group class to its effective rights first, so the union
    widens nobody (``setfacl`` would: it recomputes the mask from the stored entries)."""
    rest = [e for e in entries if e.tag != ACL_MASK]
    if not any(e.tag in (ACL_USER, ACL_GROUP) for e in rest):
        return rest
    perm = 0
    for e in rest:
        if e.tag in GROUP_CLASS:
            perm |= e.perm
    return [*rest, AclEntry(ACL_MASK, ACL_UNDEFINED_ID, perm)]


def effective(entries: Sequence[AclEntry]) -> list[AclEntry]:
    """The entries with the rights they actually grant: a group-class entry's are
    ``perm & mask`` (acl(5)); the owner's and others' are their own. No mask entry."""
    mask = next((e.perm for e in entries if e.tag == ACL_MASK), 0o7)
    return [
        replace(e, perm=e.perm & mask) if e.tag in GROUP_CLASS else e
        for e in entries
        if e.tag != ACL_MASK
    ]


def acl_add_user(entries: Sequence[AclEntry], uid: int, perm: int = RW) -> list[AclEntry]:
    """``entries`` plus ``user:uid:perm``, with nobody else's effective rights changed:
    the mask must now let ``perm`` through, so each other group-class entry is cut to
    what the old mask let it have before the mask is recomputed (a named user ``r-`` or
    an owning group ``rw-`` under a mask ``r--`` stays ``r--``, not ``rw-``)."""
    others = [e for e in effective(entries) if not (e.tag == ACL_USER and e.id == uid)]
    return _with_mask([*others, AclEntry(ACL_USER, uid, perm)])


def acl_remove_user(
    entries: Sequence[AclEntry], uid: int, original: Sequence[AclEntry] = ()
) -> list[AclEntry]:
    """``entries`` without ``uid``'s entry, or with the one ``original`` (the ACL before
    any grant) gave it, at the rights it had then; nobody else's rights change."""
    kept = [e for e in effective(entries) if not (e.tag == ACL_USER and e.id == uid)]
    kept += [e for e in effective(original) if e.tag == ACL_USER and e.id == uid]
    return _with_mask(kept)


def read_acl(path: str | os.PathLike[str]) -> bytes | None:
    """The raw access ACL, None where the node has only its mode."""
    try:
        return os.getxattr(path, ACL_XATTR, follow_symlinks=False)
    except OSError as err:
        if err.errno == errno.ENODATA:
            return None
        raise
