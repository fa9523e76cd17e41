"""grant/revoke on a synthetic q35 tree whose /dev nodes are plain files (ACLs work there
as on devtmpfs), the state file, the memlock advice, the CLI's errors, no-IOMMU refusal."""

from __future__ import annotations

import functools
import json
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pyvfio import noiommu
from pyvfio.errors import DeviceNotBoundError, HostError, UnsafeNoIommuError, UnsupportedError
from pyvfio.host import doctor
from pyvfio.host import grant as g
from pyvfio.host.journal import STATE_DIR_ENV
from pyvfio.iommu import Iommu
from pyvfio.testing import SimulatedKernel, q35_lab

EDU, EDU_GROUP = "0000:00:10.0", 2
NOBODY = pwd.getpwnam("nobody").pw_uid
DAEMON = pwd.getpwnam("daemon").pw_uid


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimulatedKernel:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    kernel = q35_lab(tmp_path / "root")
    kernel.host.bind(EDU, "vfio-pci")
    make_node(kernel, f"dev/vfio/{EDU_GROUP}", 0o600)
    make_node(kernel, "dev/vfio/vfio", 0o666)
    return kernel


def make_node(kernel: SimulatedKernel, rel: str, mode: int) -> Path:
    path = kernel.path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.chmod(path, mode)
    return path


def snapshot(path: Path) -> tuple[int, int, int, bytes | None]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, st.st_mode, g.read_acl(path)


def user_entries(path: Path) -> dict[int, int]:
    raw = g.read_acl(path)
    return {e.id: e.perm for e in g.decode_acl(raw) if e.tag == g.ACL_USER} if raw else {}


def test_acl_codec_round_trips_and_keeps_the_kernels_order() -> None:
    entries = g.acl_add_user(g.acl_of_mode(0o640), NOBODY)
    raw = g.encode_acl(entries)
    assert g.decode_acl(raw) == sorted(entries)
    mask = [e for e in entries if e.tag == g.ACL_MASK]
    assert mask == [g.AclEntry(g.ACL_MASK, g.ACL_UNDEFINED_ID, 0o6)]  # user rw | group r
    assert g.acl_remove_user(entries, NOBODY) == g.acl_of_mode(0o640)  # no mask left
    for bad in (b"", b"\x02\x00\x00\x00\x01", b"\x01\x00\x00\x00"):
        with pytest.raises(ValueError):
            g.decode_acl(bad)


def test_grant_adds_one_acl_entry_and_revoke_restores_the_node_exactly(
    kernel: SimulatedKernel,
) -> None:
    node = kernel.path(f"dev/vfio/{EDU_GROUP}")
    before = snapshot(node)
    result = g.grant(EDU, "nobody", sysfs=kernel)
    assert user_entries(node) == {NOBODY: 0o6}
    assert snapshot(node)[:2] == before[:2]  # owner and group stay
    actions = {Path(n.path).name: n.action for n in result.nodes}
    assert actions == {str(EDU_GROUP): "granted", "vfio": "open to all"}
    state = json.loads((kernel.root.parent / "state" / "grants.json").read_text())
    assert (
        state["nodes"][str(node)]["mode"] == before[2] and state["nodes"][str(node)]["acl"] is None
    )
    assert state["grants"] == [
        {"address": EDU, "user": "nobody", "uid": NOBODY, "nodes": [str(node)]}
    ]
    again = g.grant(EDU, "nobody", sysfs=kernel)
    assert not again.changed and "already holds" in str(again)
    done = g.revoke(EDU, "nobody", sysfs=kernel)
    assert done.revoked and done.restored == (str(node),)
    assert snapshot(node) == before
    assert json.loads((kernel.root.parent / "state" / "grants.json").read_text())["nodes"] == {}


def test_an_acl_the_node_had_comes_back_byte_for_byte(kernel: SimulatedKernel) -> None:
    node = kernel.path(f"dev/vfio/{EDU_GROUP}")
    own = g.encode_acl(g.acl_add_user(g.acl_of_mode(0o600), 4242, 0o4))
    os.setxattr(node, g.ACL_XATTR, own)
    before = snapshot(node)
    g.grant(EDU, "nobody", sysfs=kernel)
    assert user_entries(node) == {4242: 0o4, NOBODY: 0o6}
    g.revoke(EDU, "nobody", sysfs=kernel)
    assert snapshot(node) == before and g.read_acl(node) == own


def test_two_users_side_by_side_each_revoke_takes_only_its_own(kernel: SimulatedKernel) -> None:
    node = kernel.path(f"dev/vfio/{EDU_GROUP}")
    before = snapshot(node)
    g.grant(EDU, "nobody", sysfs=kernel)
    g.grant(EDU, "daemon", sysfs=kernel)
    assert user_entries(node) == {NOBODY: 0o6, DAEMON: 0o6}
    first = g.revoke(EDU, "daemon", sysfs=kernel)
    assert first.narrowed == (str(node),) and user_entries(node) == {NOBODY: 0o6}
    g.revoke(EDU, "nobody", sysfs=kernel)
    assert snapshot(node) == before


def test_a_closed_iommu_node_is_granted_too_and_the_device_cdev(kernel: SimulatedKernel) -> None:
    make_node(kernel, "dev/iommu", 0o660)
    kernel.host.write(f"sys/bus/pci/devices/{EDU}/vfio-dev/vfio0/dev", "511:0\n")
    cdev = make_node(kernel, "dev/vfio/devices/vfio0", 0o600)
    result = g.grant(EDU, "nobody", sysfs=kernel)
    granted = sorted(Path(n.path).name for n in result.nodes if n.action == "granted")
    assert granted == [str(EDU_GROUP), "iommu", "vfio0"]
    assert user_entries(cdev) == {NOBODY: 0o6}
    g.revoke(EDU, "nobody", sysfs=kernel)
    assert g.read_acl(cdev) is None and g.read_acl(kernel.path("dev/iommu")) is None


def test_a_node_recreated_since_the_grant_is_left_alone(kernel: SimulatedKernel) -> None:
    node = kernel.path(f"dev/vfio/{EDU_GROUP}")
    g.grant(EDU, "nobody", sysfs=kernel)
    fresh = make_node(kernel, "dev/vfio/new", 0o640)
    fresh.replace(node)  # udev made it anew (a new inode, as devtmpfs gives)
    done = g.revoke(EDU, "nobody", sysfs=kernel)
    assert done.recreated == (str(node),) and "recreated since the grant" in str(done)
    assert os.stat(node).st_mode & 0o777 == 0o640
    result = g.grant(EDU, "nobody", sysfs=kernel)  # a fresh grant records the new node
    assert result.changed


def test_a_failed_change_rolls_back_every_node_and_forgets_the_grant(
    kernel: SimulatedKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_node(kernel, "dev/iommu", 0o660)
    group_node = kernel.path(f"dev/vfio/{EDU_GROUP}")
    before = snapshot(group_node)
    real = g._open_for

    def refuse_iommu(node: g.NodeState, uid: int) -> None:
        if node.path.endswith("iommu"):
            raise OSError(1, "Operation not permitted")
        real(node, uid)

    monkeypatch.setattr(g, "_open_for", refuse_iommu)
    refused = r"cannot open \S+/dev/iommu to nobody: .*nothing was changed"
    with pytest.raises(HostError, match=refused):
        g.grant(EDU, "nobody", sysfs=kernel)
    assert snapshot(group_node) == before
    assert not g.revoke(EDU, "nobody", sysfs=kernel).revoked


def test_refusals_change_nothing(kernel: SimulatedKernel, tmp_path: Path) -> None:
    with pytest.raises(DeviceNotBoundError, match=r"pyvfio bind 0000:00:11.0"):
        g.grant("0000:00:11.0", "nobody", sysfs=kernel)
    with pytest.raises(g.UnknownUserError, match="no user 'no-such-user'"):
        g.grant(EDU, "no-such-user", sysfs=kernel)
    with pytest.raises(g.UnknownUserError, match="root"):
        g.grant(EDU, "root", sysfs=kernel)
    with pytest.raises(ValueError, match="positive"):
        g.grant(EDU, "nobody", memlock=0, sysfs=kernel)
    kernel.path(f"dev/vfio/{EDU_GROUP}").unlink()
    with pytest.raises(HostError, match="udevadm settle"):
        g.grant(EDU, "nobody", sysfs=kernel)
    assert not (tmp_path / "state" / "grants.json").exists()


def test_a_group_with_other_devices_needs_group(kernel: SimulatedKernel) -> None:
    for addr in ("0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"):
        kernel.host.bind(addr, None)
        kernel.host.bind(addr, "vfio-pci")
    make_node(kernel, "dev/vfio/9", 0o600)
    with pytest.raises(g.SharedGroupError, match=r"0000:00:1f\.0, 0000:00:1f\.3 besides"):
        g.grant("0000:00:1f.2", "nobody", sysfs=kernel)
    result = g.grant("0000:00:1f.2", "nobody", group=True, sysfs=kernel)
    assert result.members == ("0000:00:1f.0", "0000:00:1f.3")


def test_a_bridge_in_the_group_does_not_count(kernel: SimulatedKernel) -> None:
    kernel.host.bind("0000:04:00.0", "vfio-pci")  # edu behind the switch, group 8
    make_node(kernel, "dev/vfio/8", 0o600)
    assert g.grant("0000:04:00.0", "nobody", sysfs=kernel).members == ()


def test_memlock_advice_follows_pam_limits_precedence(kernel: SimulatedKernel) -> None:
    kernel.host.write(
        "etc/security/limits.conf",
        "*  soft memlock 64\n@nogroup - memlock 1024  # the group\nnobody hard memlock 9\n",
    )
    found = g.configured_memlock("nobody", ["nogroup"], kernel)
    assert found == (1024 << 10, "/etc/security/limits.conf: @nogroup - memlock 1024")
    kernel.host.write("etc/security/limits.d/50-dma.conf", "nobody soft memlock unlimited\n")
    advice = g.memlock_advice("nobody", 512 << 20, kernel)
    assert advice.soft is None and advice.enough is True
    assert "enough already" in str(advice)
    plain = g.memlock_advice("daemon", 512 << 20, kernel)
    assert plain.soft == 64 << 10 and plain.enough is False
    assert plain.limits_lines == ("daemon soft memlock 524288", "daemon hard memlock 524288")
    assert "daemon hard memlock 524288" in str(plain)
    assert g.configured_memlock("root", [], kernel) is None  # * is never for root


def test_no_iommu_group_is_refused_by_grant_and_by_open_without_the_opt_in(
    kernel: SimulatedKernel,
) -> None:
    kernel.host.write(f"sys/kernel/iommu_groups/{EDU_GROUP}/name", "vfio-noiommu\n")
    with pytest.raises(HostError, match="CAP_SYS_RAWIO"):
        g.grant(EDU, "nobody", sysfs=kernel)
    with pytest.raises(UnsafeNoIommuError, match="backend='unsafe-noiommu'") as err:
        Iommu(sysfs=kernel).open(EDU)
    assert "\n" not in str(err.value) and "any host memory" in str(err.value)
    noiommu.check_backend(EDU, EDU_GROUP, noiommu.UNSAFE_NOIOMMU, kernel)  # the opt-in passes


def test_the_opt_in_is_refused_for_a_device_an_iommu_protects(kernel: SimulatedKernel) -> None:
    with pytest.raises(UnsupportedError, match="only for no-IOMMU groups"):
        noiommu.check_backend(EDU, EDU_GROUP, noiommu.UNSAFE_NOIOMMU, kernel)


def test_doctor_warns_about_no_iommu_mode(kernel: SimulatedKernel) -> None:
    assert "not in" in doctor.check_noiommu(kernel).message
    kernel.host.write(noiommu.MODE_PARAM, "N\n")
    assert doctor.check_noiommu(kernel).status is doctor.Status.PASS
    kernel.host.write(noiommu.MODE_PARAM, "Y\n")
    kernel.host.write(f"sys/kernel/iommu_groups/{EDU_GROUP}/name", "vfio-noiommu\n")
    found = doctor.check_noiommu(kernel)
    assert found.status is doctor.Status.WARN and f"group {EDU_GROUP}: {EDU}" in found.message
    assert "echo N > /sys/module/vfio/parameters" in found.hint
    (group,) = doctor.device_checks(EDU, kernel)[:1]
    assert group.status is doctor.Status.WARN and "no-IOMMU" in group.message


# -- the CLI ------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["grant", "zz:zz.z", "--user", "nobody"], 2, "zz:zz.z"),
        (["grant", "0000:7f:00.0", "--user", "nobody"], 2, "no PCI device 0000:7f:00.0"),
        (["grant", EDU, "--user", "no-such-user"], 2, "no user 'no-such-user'"),
        (["grant", EDU, "--user", "nobody", "--memlock", "lots"], 2, "not a size like 512M"),
        (["grant", EDU, "--user", "nobody", "--memlock", "-5"], 2, "between 0 and 16E"),
        (["grant", EDU, "--user", "root"], 2, "root is root, who opens every node"),
        (["revoke", EDU, "--user", "no-such-user"], 2, "no user 'no-such-user'"),
        (["revoke", "zz:zz.z", "--user", "nobody"], 2, "zz:zz.z"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    args: list[str], code: int, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvfio.cli import app

    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    done = runner.invoke(app, args)
    assert done.exit_code == code, done.output
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "state").exists()


def test_cli_revoke_of_nothing_says_so_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyvfio.cli import app

    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    done = runner.invoke(app, ["revoke", EDU, "--user", "nobody"])
    assert done.exit_code == 0 and "nothing to revoke: nobody holds no grant" in done.stdout
    done = runner.invoke(app, ["revoke", EDU, "--user", "nobody", "--json"])
    assert json.loads(done.stdout)["revoked"] is False


def test_ls_flags_a_no_iommu_group_and_only_it(kernel: SimulatedKernel) -> None:
    from pyvfio.cli import app

    kernel.host.write(f"sys/kernel/iommu_groups/{EDU_GROUP}/name", "vfio-noiommu\n")
    done = runner.invoke(app, ["ls", "--json", "--root", str(kernel.root)])
    groups = {entry["group"]: entry for entry in json.loads(done.stdout)["groups"]}
    assert groups[EDU_GROUP]["noiommu"] is True and "UNSAFE" in groups[EDU_GROUP]["verdict"]
    assert "noiommu" not in groups[3]
    text = runner.invoke(app, ["ls", "--root", str(kernel.root)]).stdout
    assert "UNSAFE no-IOMMU group" in text


# -- The mask: a grant widens nobody's rights but the grantee's ------------------------------

R, RW_ = 0o4, 0o6
OWNER, GROUP_OBJ, OTHER, MASK = g.ACL_USER_OBJ, g.ACL_GROUP_OBJ, g.ACL_OTHER, g.ACL_MASK
NONE_ID = g.ACL_UNDEFINED_ID


def acl(*entries: tuple[int, int, int]) -> list[g.AclEntry]:
    return [g.AclEntry(tag, ident, perm) for tag, ident, perm in entries]


def rights(entries: list[g.AclEntry]) -> dict[tuple[int, int], int]:
    """What each entry lets its holders do (acl(5): the group class is capped by the mask)."""
    return {(e.tag, e.id): e.perm for e in g.effective(entries)}


#: The owning group and a named user and group hold rw- under a mask r--: each may read only.
NARROW = acl(
    (OWNER, NONE_ID, RW_),
    (g.ACL_USER, 4242, RW_),
    (GROUP_OBJ, NONE_ID, RW_),
    (g.ACL_GROUP, 100, RW_),
    (MASK, NONE_ID, R),
    (OTHER, NONE_ID, 0),
)


def test_a_grant_does_not_widen_the_owning_group_or_other_named_entries() -> None:
    before = rights(NARROW)
    granted = g.decode_acl(g.encode_acl(g.acl_add_user(NARROW, NOBODY)))
    after = rights(granted)
    assert after.pop((g.ACL_USER, NOBODY)) == RW_
    assert after == before  # on main the mask became rw-: the group and 4242 could write
    assert rights(g.acl_remove_user(granted, NOBODY, NARROW)) == before


_perm = st.integers(0, 7)
_ids = st.integers(1, 60000).filter(lambda i: i != NOBODY)


@st.composite
def acls(draw: st.DrawFn) -> list[g.AclEntry]:
    entries = acl((OWNER, NONE_ID, draw(_perm)), (GROUP_OBJ, NONE_ID, draw(_perm)))
    entries += acl((OTHER, NONE_ID, draw(_perm)))
    for ident in draw(st.sets(_ids, max_size=3)):
        entries += acl((g.ACL_USER, ident, draw(_perm)))
    for ident in draw(st.sets(_ids, max_size=2)):
        entries += acl((g.ACL_GROUP, ident, draw(_perm)))
    if draw(st.booleans()) or any(e.tag in (g.ACL_USER, g.ACL_GROUP) for e in entries):
        entries += acl((MASK, NONE_ID, draw(_perm)))
    return entries


@settings(max_examples=300)
@given(entries=acls(), own=st.one_of(st.none(), _perm))
def test_grant_and_revoke_change_only_the_grantees_rights(
    entries: list[g.AclEntry], own: int | None
) -> None:
    if own is not None:  # the grantee had an entry of their own before
        entries = [*entries, g.AclEntry(g.ACL_USER, NOBODY, own)]
    before = rights(entries)
    granted = g.acl_add_user(entries, NOBODY)
    assert g.decode_acl(g.encode_acl(granted)) == sorted(granted)
    after = rights(granted)
    assert after.pop((g.ACL_USER, NOBODY)) == RW_
    assert after == {k: v for k, v in before.items() if k != (g.ACL_USER, NOBODY)}
    # A second user's grant and its revoke, as two side by side grants do:
    both = g.acl_add_user(granted, DAEMON)
    back = g.acl_remove_user(both, DAEMON, entries)
    assert rights(back) == {
        **rights(granted),
        **{k: v for k, v in before.items() if k[1] == DAEMON},
    }
    assert rights(g.acl_remove_user(granted, NOBODY, entries)) == before


def test_a_narrowed_node_gives_the_revoked_user_back_their_own_entry(
    kernel: SimulatedKernel,
) -> None:
    node = kernel.path(f"dev/vfio/{EDU_GROUP}")
    own = g.encode_acl(g.acl_add_user(g.acl_of_mode(0o600), DAEMON, R))
    os.setxattr(node, g.ACL_XATTR, own)
    g.grant(EDU, "nobody", sysfs=kernel)
    g.grant(EDU, "daemon", sysfs=kernel)
    assert user_entries(node) == {NOBODY: RW_, DAEMON: RW_}
    g.revoke(EDU, "daemon", sysfs=kernel)
    assert user_entries(node) == {NOBODY: RW_, DAEMON: R}  # main dropped daemon's r--
    g.revoke(EDU, "nobody", sysfs=kernel)
    assert g.read_acl(node) == own


def test_a_grant_on_a_node_whose_group_may_only_read_leaves_it_so(kernel: SimulatedKernel) -> None:
    node = kernel.path(f"dev/vfio/{EDU_GROUP}")
    os.setxattr(node, g.ACL_XATTR, g.encode_acl(NARROW))
    g.grant(EDU, "nobody", sysfs=kernel)
    now = rights(g.decode_acl(g.read_acl(node) or b""))
    assert now.pop((g.ACL_USER, NOBODY)) == RW_ and now == rights(NARROW)
    g.revoke(EDU, "nobody", sysfs=kernel)
    assert g.read_acl(node) == g.encode_acl(NARROW)


# -- Revoke and the file descriptors the grant let the user open ------------------------------


#: What the fixture gives: it starts a user's process holding a node of the tree open.
HoldAs = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def hold_as(kernel: SimulatedKernel) -> Iterator[HoldAs]:
    """Start a process of ``user`` holding a node of the tree open, as a grantee's program
    that opened the device while the grant lasted does."""
    started: list[subprocess.Popen[bytes]] = []

    def hold(user: str, rel: str, *, ignore_term: bool = False) -> subprocess.Popen[bytes]:
        script = ("trap '' TERM; " if ignore_term else "") + "exec sleep 600"
        with open(kernel.path(rel), "rb") as f:
            child = subprocess.Popen(["sh", "-c", script], stdin=f, user=user)
        started.append(child)
        kernel.host.add_process(child.pid)
        return child

    yield hold
    for child in started:
        child.kill()
        child.wait()


@pytest.mark.needs_root("it starts processes as nobody and daemon")
def test_revoke_names_the_users_processes_that_still_hold_the_node(
    kernel: SimulatedKernel, hold_as: HoldAs
) -> None:
    node = str(kernel.path(f"dev/vfio/{EDU_GROUP}"))
    g.grant(EDU, "nobody", sysfs=kernel)
    child = hold_as("nobody", f"dev/vfio/{EDU_GROUP}")
    other = hold_as("daemon", f"dev/vfio/{EDU_GROUP}")  # not nobody's: not named
    done = g.revoke(EDU, "nobody", sysfs=kernel)
    [holder] = done.holders
    assert (holder.pid, holder.user, holder.holds, holder.certain) == (
        child.pid,
        "nobody",
        (node,),
        True,
    )
    assert holder.command == "sleep 600" and done.remaining == (holder,)
    assert "an open fd outlives the ACL" in str(done) and "--kill ends it" in str(done)
    data = done.to_json()
    assert data["holders"][0]["pid"] == child.pid and data["remaining"] == [child.pid]
    json.dumps(data)
    assert child.poll() is None and other.poll() is None  # nothing ended without --kill


@pytest.mark.needs_root("it starts processes as nobody and daemon")
def test_revoke_kill_ends_them_sigterm_then_sigkill(
    kernel: SimulatedKernel, hold_as: HoldAs
) -> None:
    g.grant(EDU, "nobody", sysfs=kernel)
    polite = hold_as("nobody", f"dev/vfio/{EDU_GROUP}")
    stubborn = hold_as("nobody", f"dev/vfio/{EDU_GROUP}", ignore_term=True)
    other = hold_as("daemon", f"dev/vfio/{EDU_GROUP}")
    done = g.revoke(EDU, "nobody", kill=True, grace=0.5, sysfs=kernel)
    assert {e.pid: e.outcome for e in done.ended} == {
        polite.pid: "ended by SIGTERM",
        stubborn.pid: "ended by SIGKILL",
    }
    assert done.remaining == ()
    assert polite.wait(10) == -signal.SIGTERM and stubborn.wait(10) == -signal.SIGKILL
    assert other.poll() is None, "another user's process is not revoke's to end"
    assert "ended by SIGKILL" in str(done)


def test_cli_revoke_with_a_holder_exits_1_and_kill_exits_0(
    kernel: SimulatedKernel,
    hold_as: HoldAs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyvfio.cli import app

    monkeypatch.setattr(g, "revoke", functools.partial(g.revoke, sysfs=kernel))
    g.grant(EDU, "nobody", sysfs=kernel)
    child = hold_as("nobody", f"dev/vfio/{EDU_GROUP}")
    done = runner.invoke(app, ["revoke", EDU, "--user", "nobody", "--json"])
    assert done.exit_code == 1, done.output
    assert json.loads(done.stdout)["remaining"] == [child.pid]
    [line] = done.stderr.strip().splitlines()
    assert f"nobody still holds {EDU} open: pid {child.pid}" in line and "--kill" in line
    g.grant(EDU, "nobody", sysfs=kernel)
    done = runner.invoke(app, ["revoke", EDU, "--user", "nobody", "--kill", "--grace", "5"])
    assert done.exit_code == 0, done.output
    assert f"pid {child.pid} (nobody: sleep 600)" in done.stdout and "ended by" in done.stdout
    done = runner.invoke(app, ["revoke", EDU, "--user", "nobody", "--grace", "-1"])
    assert done.exit_code == 2 and "--grace -1" in done.stderr
