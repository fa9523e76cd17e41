"""pyvfio grant/revoke on the real kernel: an unprivileged user drives edu, others cannot.

The guest's / is the host's, so no user is created: ``nobody`` gets the grant and
``daemon`` plays the other user. The unprivileged part runs in ``as_user.py``, one
process per user for the module, which drops to that user before it touches VFIO and
then tries each round trip with the soft RLIMIT_MEMLOCK asked for (grant's figure, as
limits.conf would give at login, or less).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labhelp import main_lab
from typer.testing import CliRunner

from pyvfio.host import grant as g
from pyvfio.host.journal import STATE_DIR_ENV
from pyvfio.host.sysfs import LIVE

pytestmark = main_lab
runner = CliRunner()
AS_USER = Path(__file__).with_name("as_user.py")
GRANTED, OTHER = "nobody", "daemon"
#: The hard RLIMIT_MEMLOCK each user process gets (limits.conf's hard line).
HARD_MEMLOCK = 1 << 20


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    return tmp_path / "state"


def cli(*args: str) -> tuple[int, Any, str]:
    from pyvfio.cli import app

    done = runner.invoke(app, list(args))
    data = json.loads(done.stdout) if "--json" in args and done.exit_code == 0 else None
    return done.exit_code, data, done.stderr


class UserProcess:
    """``as_user.py`` running as one user, answering requests until closed."""

    def __init__(self, name: str) -> None:
        pw = pwd.getpwnam(name)
        self.proc = subprocess.Popen(
            [sys.executable, str(AS_USER), str(pw.pw_uid), str(pw.pw_gid), str(HARD_MEMLOCK)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ids = self._answer()
        # Really unprivileged: every id is the user's, no capability is left.
        assert set(ids["uid"]) == {pw.pw_uid} and ids["cap_eff"] == 0, ids

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"as_user.py died with {self.proc.wait()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def round_trip(self, address: str, memlock: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"address": address, "memlock": memlock}) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def users() -> Iterator[Callable[[str], UserProcess]]:
    """One as_user.py per user for the whole module, started on first use."""
    started: dict[str, UserProcess] = {}

    def get(name: str) -> UserProcess:
        if name not in started:
            started[name] = UserProcess(name)
        return started[name]

    yield get
    for process in started.values():
        process.close()


def node_state(path: str) -> tuple[int, int, int, bytes | None]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, st.st_mode, g.read_acl(path)


def test_granted_user_does_dma_other_user_is_refused_revoke_puts_the_node_back(
    edu_addr: str, users: Callable[[str], UserProcess]
) -> None:
    group_node = f"/dev/vfio/{LIVE.iommu_group(edu_addr)}"
    before = node_state(group_node)
    assert before[0] == 0 and before[2] & 0o077 == 0  # root's alone: the test means something
    before_grant = users(GRANTED).round_trip(edu_addr, 1 << 20)
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

    result = users(GRANTED).round_trip(edu_addr, data["memlock"]["need"])
    assert result["ok"], result
    assert result["round_trip"] is True and result["backend"] == "type1"

    # Below what grant asked for, the second 4 KiB buffer is over the limit.
    short = users(GRANTED).round_trip(edu_addr, 4096)
    assert short["error"] == "MemlockLimitError", short
    assert "RLIMIT_MEMLOCK of 4096 bytes" in short["message"]

    refused = users(OTHER).round_trip(edu_addr, data["memlock"]["need"])
    assert refused["error"] == "PermissionDeniedError", refused
    assert f"pyvfio grant {edu_addr} --user {OTHER}" in refused["message"]
    assert group_node in refused["message"]

    code, again, _ = cli("grant", edu_addr, "--user", GRANTED, "--json")
    assert code == 0 and again["changed"] is False

    code, data, err = cli("revoke", edu_addr, "--user", GRANTED, "--json")
    assert code == 0 and data["revoked"] is True and data["restored"] == [group_node], err
    assert node_state(group_node) == before

    after = users(GRANTED).round_trip(edu_addr, 1 << 20)
    assert after["error"] == "PermissionDeniedError", after

    code, data, _ = cli("revoke", edu_addr, "--user", GRANTED, "--json")
    assert code == 0 and data["revoked"] is False
    assert f"{GRANTED} holds no grant on {edu_addr}" in data["reason"]


def test_two_users_hold_grants_side_by_side_and_each_revoke_takes_only_its_own(
    edu_addr: str, users: Callable[[str], UserProcess]
) -> None:
    group_node = f"/dev/vfio/{LIVE.iommu_group(edu_addr)}"
    before = node_state(group_node)
    for user in (GRANTED, OTHER):
        assert cli("grant", edu_addr, "--user", user)[0] == 0
    cli("revoke", edu_addr, "--user", OTHER)
    still = users(GRANTED).round_trip(edu_addr, 1 << 20)
    assert still["ok"] and still["round_trip"] is True, still
    gone = users(OTHER).round_trip(edu_addr, 1 << 20)
    assert gone["error"] == "PermissionDeniedError", gone
    cli("revoke", edu_addr, "--user", GRANTED)
    assert node_state(group_node) == before


def test_grant_of_a_device_on_a_host_driver_says_bind_it_first(lab) -> None:
    nvme = lab.address("nvme")
    code, _, err = cli("grant", nvme, "--user", GRANTED)
    assert code == 1
    assert f"pyvfio bind {nvme}" in err and "not vfio-pci" in err
