"""Give one user a VFIO device, and take it back: ``pyvfio grant`` / ``pyvfio revoke``.

What a process needs to drive a device through VFIO without root:

* type1: ``/dev/vfio/vfio`` (the kernel creates it 0666) and the group node
  ``/dev/vfio/N`` (root, 0600);
* iommufd: ``/dev/iommu`` (the kernel creates it 0660 root) and the device's cdev
  ``/dev/vfio/devices/vfioX`` (root, 0600);
* an ``RLIMIT_MEMLOCK`` as large as the memory it maps for DMA: type1 charges pinned
  pages to the process (``locked_vm``), iommufd to the user; only ``CAP_IPC_LOCK``
  is exempt, and an ordinary user does not have it.

:func:`grant` adds one POSIX ACL entry ``user:NAME:rw-`` to each node that user cannot
open yet. An ACL leaves the owner, the mode's owner bits and every other user's access
as they were, so several users can hold grants side by side; where the filesystem has
no ACLs the node is chowned to the user instead. The ACL's mask caps every entry of the
group class (named users and groups, the owning group), so the mask grows for the
grantee only after every other entry of that class is cut to what the old mask let it
have: nobody else's effective rights change (:func:`acl_add_user`). Before its first
change to a node it records the node's owner, group, mode and ACL in ``grants.json``
beside the bind journal (``/run/pyvfio``, a tmpfs: device nodes do not survive a
reboot, neither should a record of them). :func:`revoke` removes that user's entry
and, once no grant needs the node, puts back exactly what was recorded.

An ACL is checked when a node is opened, never afterwards: a process that opened the
node while the grant lasted keeps the device (and its DMA) after the revoke, for as long
as it holds the file descriptor. :func:`revoke` therefore names the user's processes
that still hold one of the nodes or the device (:func:`pyvfio.host.usage.holders`) and,
asked to (``kill``), ends them.

A grant lives as long as the node: udev recreates ``/dev/vfio/N`` when the group goes
away and comes back (the device leaves vfio-pci, a reboot) with its default owner and
mode. Each record keeps the node's inode number, so :func:`revoke` knows a recreated
node from the one it changed and leaves the new one alone.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyvfio._limits import memlock_kib
from pyvfio._sizes import size_text
from pyvfio.errors import HostError
from pyvfio.host import usage

# The ACL codec lived here first: its names stay importable from this module.
from pyvfio.host.acl import ACL_GROUP as ACL_GROUP
from pyvfio.host.acl import ACL_GROUP_OBJ as ACL_GROUP_OBJ
from pyvfio.host.acl import ACL_MASK as ACL_MASK
from pyvfio.host.acl import ACL_OTHER as ACL_OTHER
from pyvfio.host.acl import ACL_UNDEFINED_ID as ACL_UNDEFINED_ID
from pyvfio.host.acl import ACL_USER as ACL_USER
from pyvfio.host.acl import ACL_USER_OBJ as ACL_USER_OBJ
from pyvfio.host.acl import ACL_VERSION as ACL_VERSION
from pyvfio.host.acl import ACL_XATTR as ACL_XATTR
from pyvfio.host.acl import GROUP_CLASS as GROUP_CLASS
from pyvfio.host.acl import RW as RW
from pyvfio.host.acl import AclEntry as AclEntry
from pyvfio.host.acl import acl_add_user as acl_add_user
from pyvfio.host.acl import acl_of_mode as acl_of_mode
from pyvfio.host.acl import acl_remove_user as acl_remove_user
from pyvfio.host.acl import decode_acl as decode_acl
from pyvfio.host.acl import effective as effective
from pyvfio.host.acl import encode_acl as encode_acl
from pyvfio.host.acl import read_acl as read_acl
from pyvfio.host.bind import require_root
from pyvfio.host.journal import exclusive_lock, state_dir, write_json_atomically
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.noiommu import is_noiommu_group
from pyvfio.pci.address import normalize
from pyvfio.viability import bound_group

GRANTS_NAME = "grants.json"
FORMAT_VERSION = 1
#: Nodes every VFIO user opens whatever the device: granted only when closed to others.
SHARED_NODES = ("dev/vfio/vfio", "dev/iommu")
#: What ``--memlock`` defaults to: as ``pyvfio doctor``.
DEFAULT_MEMLOCK = 64 << 20


class UnknownUserError(HostError, ValueError):
    """No such user on this host (bad input: exit 2)."""


class SharedGroupError(HostError, ValueError):
    """The device's group node opens other devices too; ``--group`` accepts that (exit 2)."""


# -- The record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeState:
    """A node as it was before pyvfio's first grant on it, and how pyvfio opens it."""

    path: str
    uid: int
    gid: int
    mode: int
    acl: str | None  # hex of the raw xattr; None: mode only
    inode: int
    method: str  # "acl" or "owner"

    def __str__(self) -> str:
        extra = " + ACL" if self.acl else ""
        return f"{self.path} (uid {self.uid}, gid {self.gid}, mode {self.mode & 0o7777:04o}{extra})"


@dataclass(frozen=True)
class GrantRecord:
    """One user's grant on one device: the nodes it opened for them."""

    address: str
    user: str
    uid: int
    nodes: tuple[str, ...]


def grants_path(directory: Path | None = None) -> Path:
    return (directory or state_dir()) / GRANTS_NAME


class GrantStore:
    """``grants.json``: the original state of every node pyvfio changed, and the grants."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / GRANTS_NAME
        self.nodes: dict[str, NodeState] = {}
        self.grants: list[GrantRecord] = []
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            raise HostError(
                f"cannot read {self.path}: {err}; fix or remove it after checking the "
                "owners and modes of /dev/vfio/* by hand (ls -l, getfacl)"
            ) from err
        if raw.get("version") != FORMAT_VERSION:
            raise HostError(
                f"{self.path} has format {raw.get('version')!r}, this pyvfio reads "
                f"{FORMAT_VERSION}: revoke with the pyvfio that wrote it"
            )
        self.nodes = {p: NodeState(**n) for p, n in raw.get("nodes", {}).items()}
        self.grants = [
            GrantRecord(g["address"], g["user"], g["uid"], tuple(g["nodes"]))
            for g in raw.get("grants", [])
        ]

    @classmethod
    @contextlib.contextmanager
    def locked(cls, directory: Path | None = None) -> Iterator[GrantStore]:
        """The store under an exclusive lock held until the block ends."""
        where = directory or state_dir()
        with exclusive_lock(where, "grants.lock", str(where / GRANTS_NAME)):
            yield cls(where)

    def save(self) -> None:
        """Replace the file atomically, as the bind journal does."""
        data = {
            "version": FORMAT_VERSION,
            "nodes": {p: asdict(n) for p, n in sorted(self.nodes.items())},
            "grants": [asdict(g) for g in self.grants],
        }
        write_json_atomically(self.path, data)

    def find(self, address: str, uid: int) -> GrantRecord | None:
        return next((g for g in self.grants if g.address == address and g.uid == uid), None)

    def users_of(self, node: str, *, besides: GrantRecord | None = None) -> set[int]:
        """The uids whose grants (other than ``besides``) need ``node``."""
        return {g.uid for g in self.grants if g is not besides and node in g.nodes}


def read_grants(directory: Path | None = None) -> list[GrantRecord]:
    """The grants as they are now, without locking (for reports)."""
    try:
        return GrantStore(directory).grants
    except HostError:
        return []


# -- Which nodes, and who may open them ------------------------------------------------------


@dataclass(frozen=True)
class NodeAccess:
    """One node a user of the device opens, and what grant did with it."""

    path: str
    action: str  # "granted", "already granted", "open to all", "missing"
    mode: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.path}: {self.action} (uid {self.uid}, mode {self.mode & 0o7777:04o})"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "action": self.action,
            "mode": f"{self.mode & 0o7777:04o}",
            "uid": self.uid,
            "gid": self.gid,
        }


def open_to_all(mode: int) -> bool:
    return mode & 0o006 == 0o006


def _lookup_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise UnknownUserError(
            f"no user {name!r} on this host (getent passwd {name} finds none): "
            "name an existing user"
        ) from None


def _check_device(address: str, sysfs: Sysfs) -> int:
    """The device's IOMMU group; refusals for a device no user could open."""
    group = bound_group(address, sysfs, then=", then grant it")
    if is_noiommu_group(group, sysfs):
        raise HostError(
            f"{address} is in VFIO's unsafe no-IOMMU group {group}: the kernel lets only "
            "CAP_SYS_RAWIO open it, since its DMA reaches all memory; no grant can change that"
        )
    return group


def _other_members(address: str, group: int, sysfs: Sysfs) -> list[str]:
    """Members the group node would open too (bridges are not opened through VFIO)."""
    from pyvfio.host import inventory

    others = []
    for member in sysfs.group_devices(group):
        if member == address:
            continue
        info = inventory.device_info(member, sysfs)
        if not (info.is_bridge or info.driver == "pcieport"):
            others.append(member)
    return others


# -- Changing a node -------------------------------------------------------------------------


def _capture(path: Path) -> NodeState:
    st = os.stat(path)
    try:
        acl = read_acl(path)
        method = "acl"
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        acl, method = None, "owner"
    return NodeState(
        str(path), st.st_uid, st.st_gid, st.st_mode, acl.hex() if acl else None, st.st_ino, method
    )


def _current_acl(path: Path, mode: int) -> list[AclEntry]:
    raw = read_acl(path)
    return decode_acl(raw) if raw else acl_of_mode(mode)


def _open_for(node: NodeState, uid: int) -> None:
    path = Path(node.path)
    if node.method == "owner":
        os.chown(path, uid, -1)
        os.chmod(path, (os.stat(path).st_mode | 0o600) & 0o7777)
        return
    entries = acl_add_user(_current_acl(path, os.stat(path).st_mode), uid)
    os.setxattr(path, ACL_XATTR, encode_acl(entries), follow_symlinks=False)


def _close_for(node: NodeState, uid: int) -> None:
    """Take one user's entry off a node others still need (ACL method only)."""
    path = Path(node.path)
    original = decode_acl(bytes.fromhex(node.acl)) if node.acl else []
    entries = acl_remove_user(_current_acl(path, os.stat(path).st_mode), uid, original)
    os.setxattr(path, ACL_XATTR, encode_acl(entries), follow_symlinks=False)


def restore_node(node: NodeState) -> None:
    """Put the node back exactly as recorded: owner, group, mode, ACL."""
    path = Path(node.path)
    os.chown(path, node.uid, node.gid)
    if node.acl is not None:
        os.setxattr(path, ACL_XATTR, bytes.fromhex(node.acl), follow_symlinks=False)
    elif node.method == "acl":
        with contextlib.suppress(OSError):  # ENODATA: no ACL to remove
            os.removexattr(path, ACL_XATTR, follow_symlinks=False)
    os.chmod(path, node.mode & 0o7777)


def _same_node(node: NodeState) -> bool:
    try:
        return os.stat(node.path).st_ino == node.inode
    except FileNotFoundError:
        return False


# -- memlock ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemlockAdvice:
    """What RLIMIT_MEMLOCK the user needs, and what pam_limits would give them now."""

    user: str
    need: int  # bytes
    soft: int | None  # bytes configured for the user (None: unlimited)
    source: str | None  # the limits.conf line that sets it (None: not configured)

    @property
    def enough(self) -> bool | None:
        """None where no limits.conf line names the user (the default applies)."""
        if self.source is None:
            return None
        return self.soft is None or self.soft >= self.need

    @property
    def limits_lines(self) -> tuple[str, str]:
        kib = memlock_kib(self.need)
        return (f"{self.user} soft memlock {kib}", f"{self.user} hard memlock {kib}")

    def __str__(self) -> str:
        lines = "\n    ".join(self.limits_lines)
        head = (
            f"memlock: {self.user} pins up to {size_text(self.need)} for DMA, so needs "
            f"RLIMIT_MEMLOCK >= {size_text(self.need)} (KiB in limits.conf)"
        )
        if self.enough:
            return f"{head}: enough already ({self.source})"
        now = (
            f"now {size_text(self.soft) if self.soft is not None else 'unlimited'} ({self.source})"
            if self.source
            else "not set in /etc/security/limits.conf, so a login gets the default"
        )
        return (
            f"{head}; {now}: add to /etc/security/limits.conf\n    {lines}\n"
            f"  (a systemd service: LimitMEMLOCK={self.need}; log in again to apply)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "need": self.need,
            "configured_soft": self.soft,
            "configured_by": self.source,
            "enough": self.enough,
            "limits_conf": list(self.limits_lines),
        }


def _limit_bytes(value: str) -> int | None:
    if value in ("unlimited", "infinity", "-1"):
        return None
    return int(value) * 1024


def configured_memlock(
    user: str, groups: Sequence[str], sysfs: Sysfs = LIVE
) -> tuple[int | None, str] | None:
    """The soft memlock pam_limits gives ``user`` at login, and the line that says so.

    pam_limits reads limits.conf, then limits.d/*.conf; an entry for the user wins over
    one for a group (@name), which wins over the wildcard (*, never for root); among
    equals the last one read wins.
    """
    files = ["etc/security/limits.conf"] + [
        f"etc/security/limits.d/{n}"
        for n in sysfs.listdir("etc/security/limits.d")
        if n.endswith(".conf")
    ]
    best: tuple[int, int | None, str] | None = None
    for rel in files:
        for line in sysfs.read_lines(rel):
            fields = line.split("#", 1)[0].split()
            if len(fields) != 4 or fields[2] != "memlock" or fields[1] not in ("soft", "-"):
                continue
            domain = fields[0]
            if domain == user:
                rank = 3
            elif domain.startswith("@") and domain[1:] in groups:
                rank = 2
            elif domain == "*" and user != "root":
                rank = 1
            else:
                continue
            try:
                value = _limit_bytes(fields[3])
            except ValueError:
                continue
            if best is None or rank >= best[0]:
                best = (rank, value, f"/{rel}: {' '.join(fields)}")
    return None if best is None else (best[1], best[2])


def memlock_advice(user: str, need: int, sysfs: Sysfs = LIVE) -> MemlockAdvice:
    pw = _lookup_user(user)
    groups = [g.gr_name for g in grp.getgrall() if pw.pw_name in g.gr_mem]
    with contextlib.suppress(KeyError):
        groups.append(grp.getgrgid(pw.pw_gid).gr_name)
    found = configured_memlock(pw.pw_name, groups, sysfs)
    if found is None:
        return MemlockAdvice(pw.pw_name, need, None, None)
    return MemlockAdvice(pw.pw_name, need, found[0], found[1])


# -- grant / revoke --------------------------------------------------------------------------


@dataclass(frozen=True)
class GrantResult:
    """What ``pyvfio grant`` did."""

    address: str
    user: str
    uid: int
    group: int
    nodes: tuple[NodeAccess, ...]
    memlock: MemlockAdvice
    members: tuple[str, ...] = ()  # other devices the group node opens too
    changed: bool = True

    def __str__(self) -> str:
        head = (
            f"granted {self.address} (IOMMU group {self.group}) to {self.user} (uid {self.uid})"
            if self.changed
            else f"{self.user} (uid {self.uid}) already holds {self.address}"
        )
        lines = [head]
        if self.members:
            lines.append(f"  the group node opens {', '.join(self.members)} too")
        lines += [f"  {n}" for n in self.nodes]
        lines.append(f"  {self.memlock}")
        lines.append(
            f"  until the node is recreated (unbind, reboot); pyvfio revoke {self.address} "
            f"--user {self.user} undoes it"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "user": self.user,
            "uid": self.uid,
            "group": self.group,
            "changed": self.changed,
            "members": list(self.members),
            "nodes": [n.to_json() for n in self.nodes],
            "memlock": self.memlock.to_json(),
        }


@dataclass(frozen=True)
class RevokeResult:
    """What ``pyvfio revoke`` did; ``revoked`` False: there was no such grant.

    ``holders``: the user's processes that still held a node of the grant or the device
    after the ACL changed (an open fd outlives the ACL); ``ended``: what ``kill`` did to
    each. :attr:`remaining` are those that still hold it."""

    address: str
    user: str
    revoked: bool
    restored: tuple[str, ...] = ()  # nodes put back as recorded
    narrowed: tuple[str, ...] = ()  # nodes others still need: only this user's entry went
    recreated: tuple[str, ...] = ()  # nodes udev made anew since: left alone
    reason: str = ""
    holders: tuple[usage.Holder, ...] = ()
    ended: tuple[usage.Ended, ...] = ()

    @property
    def remaining(self) -> tuple[usage.Holder, ...]:
        gone = {e.pid for e in self.ended if e.gone}
        return tuple(h for h in self.holders if h.pid not in gone)

    def __str__(self) -> str:
        if not self.revoked:
            return f"nothing to revoke: {self.reason}"
        lines = [f"revoked {self.address} from {self.user}"]
        lines += [f"  {p}: back to its original owner, mode and ACL" for p in self.restored]
        lines += [
            f"  {p}: {self.user}'s entry removed; other grants keep it" for p in self.narrowed
        ]
        lines += [f"  {p}: recreated since the grant; left as it is" for p in self.recreated]
        outcome = {e.pid: e.outcome for e in self.ended}
        for holder in self.holders:
            if holder.pid in outcome:
                lines.append(f"  {holder}: {outcome[holder.pid]}")
            else:
                lines.append(
                    f"  still open by {holder}: an open fd outlives the ACL "
                    f"(pyvfio revoke {self.address} --user {self.user} --kill ends it)"
                )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "user": self.user,
            "revoked": self.revoked,
            "restored": list(self.restored),
            "narrowed": list(self.narrowed),
            "recreated": list(self.recreated),
            "reason": self.reason,
            "holders": [h.to_json() for h in self.holders],
            "ended": [e.to_json() for e in self.ended],
            "remaining": [h.pid for h in self.remaining],
        }


def _node_access(path: Path, action: str) -> NodeAccess:
    st = os.stat(path)
    return NodeAccess(str(path), action, st.st_mode, st.st_uid, st.st_gid)


def grant(
    address: str,
    user: str,
    *,
    group: bool = False,
    memlock: int = DEFAULT_MEMLOCK,
    sysfs: Sysfs = LIVE,
    state: Path | None = None,
) -> GrantResult:
    """Let ``user`` open ``address`` through VFIO; record what it changes so that
    :func:`revoke` puts it back. Nothing is changed when a check fails."""
    addr = normalize(address)
    pw = _lookup_user(user)
    if pw.pw_uid == 0:
        raise UnknownUserError(f"{pw.pw_name} is root, who opens every node already")
    if memlock <= 0:
        raise ValueError(f"--memlock must be a positive size, not {memlock}")
    sysfs.device_dir(addr)
    number = _check_device(addr, sysfs)
    members = _other_members(addr, number, sysfs)
    if members and not group:
        raise SharedGroupError(
            f"/dev/vfio/{number} opens every device of IOMMU group {number}: "
            f"{', '.join(members)} besides {addr}; pass --group to grant them all"
        )
    require_root(sysfs, "granting a device")
    own = usage.vfio_nodes(addr, number, sysfs)
    for rel in own:
        if not sysfs.exists(rel):
            raise HostError(
                f"/{rel} is missing although {addr} is on vfio-pci: udev has not made it "
                "(udevadm settle), or /dev is not devtmpfs"
            )
    shared = [rel for rel in SHARED_NODES if sysfs.exists(rel)]
    advice = memlock_advice(pw.pw_name, memlock, sysfs)
    accesses: list[NodeAccess] = []
    with GrantStore.locked(state) as store:
        existing = store.find(addr, pw.pw_uid)
        if existing is not None and all(
            p in store.nodes and _same_node(store.nodes[p]) for p in existing.nodes
        ):
            nodes = tuple(_node_access(Path(p), "already granted") for p in existing.nodes)
            return GrantResult(
                addr, pw.pw_name, pw.pw_uid, number, nodes, advice, tuple(members), False
            )
        if existing is not None:  # a node was recreated since: grant afresh
            store.grants.remove(existing)
        wanted = [sysfs.path(rel) for rel in own]
        for rel in shared:
            path = sysfs.path(rel)
            if open_to_all(os.stat(path).st_mode):
                accesses.append(_node_access(path, "open to all"))
            else:
                wanted.append(path)
        todo: list[NodeState] = []
        for path in wanted:
            known = store.nodes.get(str(path))
            if known is None or not _same_node(known):
                known = _capture(path)
                store.nodes[str(path)] = known
            todo.append(known)
        record = GrantRecord(addr, pw.pw_name, pw.pw_uid, tuple(str(p) for p in wanted))
        store.grants.append(record)
        store.save()  # the originals are on disk before the first change
        started = 0
        try:
            for node in todo:
                started += 1
                _open_for(node, pw.pw_uid)
        except OSError as err:
            failed = todo[started - 1]
            # The failing node too: a chown may have gone through before its chmod failed.
            for node in reversed(todo[:started]):
                with contextlib.suppress(OSError):
                    _undo(store, node, record)
            store.grants.remove(record)
            store.save()
            raise HostError(
                f"cannot open {failed.path} to {pw.pw_name}: {err.strerror}; nothing was changed"
            ) from err
    accesses += [_node_access(Path(node.path), "granted") for node in todo]
    accesses.sort(key=lambda a: a.path)
    return GrantResult(addr, pw.pw_name, pw.pw_uid, number, tuple(accesses), advice, tuple(members))


def _undo(store: GrantStore, node: NodeState, record: GrantRecord) -> str:
    """Take ``record``'s access off one node: 'restored' when no other grant needs it,
    'narrowed' when others do, 'recreated' when the node is not the one we changed."""
    if not _same_node(node):
        if not store.users_of(node.path, besides=record):
            store.nodes.pop(node.path, None)
        return "recreated"
    others = store.users_of(node.path, besides=record)
    if not others:
        restore_node(node)
        store.nodes.pop(node.path, None)
        return "restored"
    if record.uid in others:
        return "narrowed"  # the same user holds another device through it
    if node.method == "owner":
        # One owner at a time: the node goes to another grantee, as good as it gets.
        os.chown(node.path, min(others), -1)
    else:
        _close_for(node, record.uid)
    return "narrowed"


def revoke(
    address: str,
    user: str,
    *,
    kill: bool = False,
    grace: float = 5.0,
    sysfs: Sysfs = LIVE,
    state: Path | None = None,
) -> RevokeResult:
    """Undo :func:`grant`: the user's access goes; nodes no other grant needs go back
    to exactly their recorded owner, mode and ACL. No grant: ``revoked`` is False.

    Then the user's processes that still hold what the grant opened (a node the user
    no longer may open, or the device's fd) are listed in ``holders``: the ACL does not
    reach a file already open. With ``kill`` they get SIGTERM, and SIGKILL ``grace``
    seconds later; where the kernel does not say which device a VFIO device fd is (before
    Linux 6.18), every process of the user holding one counts.
    """
    addr = normalize(address)
    pw = _lookup_user(user)
    if GrantStore(state).find(addr, pw.pw_uid) is None:
        return RevokeResult(
            addr, pw.pw_name, False, reason=f"{pw.pw_name} holds no grant on {addr}"
        )
    require_root(sysfs, "revoking a grant")
    outcome: dict[str, list[str]] = {"restored": [], "narrowed": [], "recreated": []}
    with GrantStore.locked(state) as store:
        record = store.find(addr, pw.pw_uid)
        if record is None:  # revoked by another process meanwhile
            return RevokeResult(
                addr, pw.pw_name, False, reason=f"{pw.pw_name} holds no grant on {addr}"
            )
        lost = []  # nodes the user can no longer open, whatever holds them already
        for path in record.nodes:
            if record.uid not in store.users_of(path, besides=record):
                lost.append(path)
            node = store.nodes.get(path)
            if node is None:
                continue
            outcome[_undo(store, node, record)].append(path)
        store.grants.remove(record)
        store.save()
    found = [
        h
        for h in usage.holders(lost, device=addr, sysfs=sysfs)
        if pw.pw_uid in h.uids  # real, effective, saved or filesystem uid
    ]
    ended = usage.end_processes(found, grace) if kill and found else []
    return RevokeResult(
        addr,
        pw.pw_name,
        True,
        tuple(outcome["restored"]),
        tuple(outcome["narrowed"]),
        tuple(outcome["recreated"]),
        holders=tuple(found),
        ended=tuple(ended),
    )
