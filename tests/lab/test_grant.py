"""pyvfio grant/revoke on the real kernel: an unprivileged user drives edu, others cannot.

The guest's / is the host's, so no user is created: ``nobody`` gets the grant and
``daemon`` plays the other user. The unprivileged part runs in a forked child that
sets RLIMIT_MEMLOCK (grant's figure, as limits.conf would give at login, or less) and
drops to that user before it touches VFIO.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import resource
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pyvfio.drivers import edu as edu_mod
from pyvfio.drivers.edu import Edu
from pyvfio.errors import PyvfioError
from pyvfio.host import grant as g
from pyvfio.host.journal import STATE_DIR_ENV
from pyvfio.host.sysfs import LIVE
from pyvfio.iommu import _has_cap_ipc_lock
from pyvfio.lab.pytest_plugin import LabFixture

from .labhelp import DeviceHolder, main_lab

pytestmark = main_lab
runner = CliRunner()
GRANTED, OTHER = "nobody", "daemon"


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edu_addr: str) -> Iterator[Path]:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    # As a root pytest that already mapped DMA would: the parent has asked whether it
    # holds CAP_IPC_LOCK before the child drops to the user (pyvfio must ask again).
    assert _has_cap_ipc_lock()
    yield tmp_path / "state"
    # A failed test must not leave a grant behind for the tests that share the guest.
    for user in (GRANTED, OTHER):
        cli("revoke", edu_addr, "--user", user)


def cli(*args: str) -> tuple[int, Any, str]:
    from pyvfio.cli import app

    done = runner.invoke(app, list(args))
    data = json.loads(done.stdout) if "--json" in args and done.exit_code == 0 else None
    return done.exit_code, data, done.stderr


def cap_eff() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("CapEff:"))
    return int(line.split()[1], 16)


def round_trip(address: str) -> dict[str, Any]:
    """Open edu and send 4095 bytes to it and back by DMA; the pyvfio error if any."""
    payload = random.Random(7).randbytes(edu_mod.DMA_LIMIT)
    try:
        with Edu.open(address) as edu:
            dev = edu.device
            with (
                dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as out,
                dev.dma_alloc(4096, max_iova=edu_mod.DMA_MASK) as back,
            ):
                out.write(payload)
                edu.to_device(out)
                edu.from_device(back)
                same = back.read(0, edu_mod.DMA_LIMIT) == payload
            backend = dev.iommu.backend
    except PyvfioError as err:
        return {"ok": False, "error": type(err).__name__, "message": str(err)}
    return {"ok": True, "backend": backend, "round_trip": same}


def as_user(name: str, address: str, memlock: int) -> dict[str, Any]:
    """:func:`round_trip` in a child forked from this (root) process that sets
    RLIMIT_MEMLOCK to ``memlock`` (as limits.conf would at login), then drops every uid,
    gid and supplementary group to the user's. A fork, not a new interpreter: pyvfio is
    imported already, and a Python start-up in the TCG guest takes many seconds."""
    pw = pwd.getpwnam(name)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: leaves through os._exit, never back into pytest
        status = 1
        try:
            os.close(read)
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
            os.setgroups([])
            os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
            os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
            ids = {"uid": os.getresuid(), "gid": os.getresgid(), "cap_eff": cap_eff()}
            os.write(write, json.dumps({**ids, **round_trip(address)}).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and text, status
    result: dict[str, Any] = json.loads(text)
    # Really unprivileged: every id is the user's, no capability is left.
    assert set(result["uid"]) == {pw.pw_uid} and set(result["gid"]) == {pw.pw_gid}, result
    assert result["cap_eff"] == 0, result
    return result


def node_state(path: str) -> tuple[int, int, int, bytes | None]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, st.st_mode, g.read_acl(path)


def test_granted_user_does_dma_other_user_is_refused_revoke_puts_the_node_back(
    edu_addr: str,
) -> None:
    group_node = f"/dev/vfio/{LIVE.iommu_group(edu_addr)}"
    before = node_state(group_node)
    assert before[0] == 0 and before[2] & 0o077 == 0  # root's alone: the test means something
    before_grant = as_user(GRANTED, edu_addr, 1 << 20)
    assert before_grant["error"] == "PermissionDeniedError", before_grant

    code, data, err = cli("grant", edu_addr, "--user", GRANTED, "--memlock", "64K", "--json")
    assert code == 0, err
    actions = {n["path"]: n["action"] for n in data["nodes"]}
    assert actions[group_node] == "granted"
    assert actions["/dev/vfio/vfio"] == "open to all"  # the kernel makes it 0666
    assert data["memlock"]["need"] == 64 << 10
    assert data["memlock"]["limits_conf"] == [
        f"{GRANTED} soft memlock 64",
        f"{GRANTED} hard memlock 64",
    ]
    assert node_state(group_node)[:2] == before[:2]  # the owner stays root

    result = as_user(GRANTED, edu_addr, data["memlock"]["need"])
    assert result["ok"], result
    assert result["round_trip"] is True and result["backend"] == "type1"

    # Below what grant asked for, the second 4 KiB buffer is over the limit.
    short = as_user(GRANTED, edu_addr, 4096)
    assert short["error"] == "MemlockLimitError", short
    assert "RLIMIT_MEMLOCK of 4096 bytes" in short["message"]

    refused = as_user(OTHER, edu_addr, data["memlock"]["need"])
    assert refused["error"] == "PermissionDeniedError", refused
    assert f"pyvfio grant {edu_addr} --user {OTHER}" in refused["message"]
    assert group_node in refused["message"]

    code, again, _ = cli("grant", edu_addr, "--user", GRANTED, "--json")
    assert code == 0 and again["changed"] is False

    code, data, err = cli("revoke", edu_addr, "--user", GRANTED, "--json")
    assert code == 0 and data["revoked"] is True and data["restored"] == [group_node], err
    assert node_state(group_node) == before

    after = as_user(GRANTED, edu_addr, 1 << 20)
    assert after["error"] == "PermissionDeniedError", after

    code, data, _ = cli("revoke", edu_addr, "--user", GRANTED, "--json")
    assert code == 0 and data["revoked"] is False
    assert f"{GRANTED} holds no grant on {edu_addr}" in data["reason"]


def test_two_users_hold_grants_side_by_side_and_each_revoke_takes_only_its_own(
    edu_addr: str,
) -> None:
    group_node = f"/dev/vfio/{LIVE.iommu_group(edu_addr)}"
    before = node_state(group_node)
    for user in (GRANTED, OTHER):
        assert cli("grant", edu_addr, "--user", user)[0] == 0
    cli("revoke", edu_addr, "--user", OTHER)
    still = as_user(GRANTED, edu_addr, 1 << 20)
    assert still["ok"] and still["round_trip"] is True, still
    gone = as_user(OTHER, edu_addr, 1 << 20)
    assert gone["error"] == "PermissionDeniedError", gone
    cli("revoke", edu_addr, "--user", GRANTED)
    assert node_state(group_node) == before


def test_grant_of_a_device_on_a_host_driver_says_bind_it_first(lab: LabFixture) -> None:
    nvme = lab.address("nvme")
    code, _, err = cli("grant", nvme, "--user", GRANTED)
    assert code == 1
    assert f"pyvfio bind {nvme}" in err and "not vfio-pci" in err


def revoke_json(address: str, *flags: str) -> tuple[int, dict[str, Any], str]:
    from pyvfio.cli import app

    done = runner.invoke(app, ["revoke", address, "--user", GRANTED, "--json", *flags])
    return done.exit_code, json.loads(done.stdout), done.stderr


def test_an_open_fd_outlives_the_acl_revoke_names_it_and_kill_ends_it(edu_addr: str) -> None:
    group_node = f"/dev/vfio/{LIVE.iommu_group(edu_addr)}"
    before = node_state(group_node)
    assert cli("grant", edu_addr, "--user", GRANTED)[0] == 0
    holder = DeviceHolder(edu_addr, user=GRANTED)
    try:
        code, data, err = revoke_json(edu_addr)
        assert code == 1 and data["revoked"] is True, err
        [held] = data["holders"]
        assert (held["pid"], held["user"]) == (holder.pid, GRANTED), held
        assert group_node in held["holds"] and held["certain"] is True, held
        assert f"{GRANTED} still holds {edu_addr} open: pid {holder.pid}" in err
        assert node_state(group_node) == before  # the ACL is back as it was ...
        after = as_user(GRANTED, edu_addr, 1 << 20)
        assert after["error"] == "PermissionDeniedError", after  # ... no new open ...
        assert holder.ask("dma") == {"round_trip": True}  # ... but the open fd still works

        assert cli("grant", edu_addr, "--user", GRANTED)[0] == 0
        code, data, err = revoke_json(edu_addr, "--kill")
        assert code == 0, err
        assert data["ended"] == [{"pid": holder.pid, "outcome": "ended by SIGTERM"}], data
        assert data["remaining"] == []
    finally:
        status = holder.end()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
    assert node_state(group_node) == before
    gone = as_user(GRANTED, edu_addr, 1 << 20)
    assert gone["error"] == "PermissionDeniedError", gone


def test_a_grant_does_not_let_the_nodes_group_write(edu_addr: str) -> None:
    """The node's owning group may only read (mask r--): a grant to another user must not
    widen the mask so that the group may open the device read-write (main's mask did)."""
    group_node = f"/dev/vfio/{LIVE.iommu_group(edu_addr)}"
    other = pwd.getpwnam(OTHER)
    original = node_state(group_node)
    narrow = [
        g.AclEntry(g.ACL_USER_OBJ, g.ACL_UNDEFINED_ID, 0o6),
        g.AclEntry(g.ACL_GROUP_OBJ, g.ACL_UNDEFINED_ID, 0o6),
        g.AclEntry(g.ACL_MASK, g.ACL_UNDEFINED_ID, 0o4),
        g.AclEntry(g.ACL_OTHER, g.ACL_UNDEFINED_ID, 0),
    ]
    os.chown(group_node, 0, other.pw_gid)
    os.setxattr(group_node, g.ACL_XATTR, g.encode_acl(narrow))
    try:
        before = node_state(group_node)
        refused = as_user(OTHER, edu_addr, 1 << 20)
        assert refused.get("error") == "PermissionDeniedError", refused  # the group reads only
        assert cli("grant", edu_addr, "--user", GRANTED)[0] == 0
        still = as_user(OTHER, edu_addr, 1 << 20)
        assert still.get("error") == "PermissionDeniedError", still
        granted = g.decode_acl(g.read_acl(group_node) or b"")
        assert {(e.tag, e.id): e.perm for e in g.effective(granted)} == {
            (g.ACL_USER_OBJ, g.ACL_UNDEFINED_ID): 0o6,
            (g.ACL_USER, pwd.getpwnam(GRANTED).pw_uid): 0o6,
            (g.ACL_GROUP_OBJ, g.ACL_UNDEFINED_ID): 0o4,
            (g.ACL_OTHER, g.ACL_UNDEFINED_ID): 0,
        }
        ok = as_user(GRANTED, edu_addr, 1 << 20)
        assert ok["ok"] and ok["round_trip"] is True, ok
        code, data, err = cli("revoke", edu_addr, "--user", GRANTED, "--json")
        assert code == 0 and data["restored"] == [group_node], err
        assert node_state(group_node) == before
    finally:
        os.chown(group_node, original[0], original[1])
        with contextlib.suppress(OSError):
            os.removexattr(group_node, g.ACL_XATTR)
        os.chmod(group_node, original[2] & 0o7777)
    assert node_state(group_node) == original
