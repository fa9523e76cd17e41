"""A snapshot is somebody else's data, opened by root: unpacking one and replaying it
never touches the host, on every Python, with or without tarfile's extraction filters.

The hostile archives are data (``HOSTILE``); each is tried through ``open_root`` and
through ``pyvfio ls --root``, with ``tarfile.data_filter`` taken away (Debian 12's
Python 3.11.2 has none) and present (the real one where this Python has it, a stand-in
where it does not), and must give the same refusal, leaving nothing behind.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pyvfio.cli import app
from pyvfio.host import journal, snapshot, usage
from pyvfio.host.snapshot import SnapshotError
from pyvfio.host.sysfs import PCI_DEVICES, Sysfs, resolve_inside
from pyvfio.testing import amd_desktop, intel_server

LAB_SNAPSHOT = Path(__file__).parents[1] / "data/snapshots/lab-main.tar.gz"
REAL_FILTER = getattr(tarfile, "data_filter", None)

# -- Archives as data ----------------------------------------------------------------------------


#: One member: its header and, for a regular file, its bytes.
Member = tuple[tarfile.TarInfo, bytes]


def file(name: str, data: bytes = b"x", mode: int = 0o644, uid: int = 0) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = len(data), mode, uid, uid
    return info, data


def folder(name: str, mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def node(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, b""


def build(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def declared(path: Path, name: str, size: int) -> Path:
    """A member whose header claims ``size`` bytes, followed by 1 KiB (the rest never
    comes: a refusal must come from the header, before any data is written)."""
    info = tarfile.TarInfo(name)
    info.size = size
    with gzip.open(path, "wb") as out:
        out.write(info.tobuf(tarfile.PAX_FORMAT) + bytes(1024))
    return path


def pax_bomb(path: Path, size: int) -> Path:
    """A member whose pax header carries ``size`` bytes of comment (read into memory)."""
    info, data = file("a")
    info.pax_headers = {"comment": "x" * size}
    return build(path, [(info, data)])


def cut_short(path: Path) -> Path:
    """A real snapshot cut in the middle of its gzip stream."""
    whole = LAB_SNAPSHOT.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


@dataclass(frozen=True)
class Hostile:
    """An archive a snapshot author could hand over, and what the refusal must say."""

    id: str
    members: list[Member]
    member: str  # the member the refusal names
    why: str  # and what it says is wrong
    limits: dict[str, int] = field(default_factory=dict)  # smaller limits for the test
    raw: Callable[[Path], Path] | None = None  # built by hand instead of from members

    def write(self, path: Path) -> Path:
        return self.raw(path) if self.raw is not None else build(path, self.members)


def host_proc() -> list[Member]:
    """A link to the host's /proc that leads out only once the links after it exist:
    20 folders deep, ``hp -> q/..`` 21 times then ``..`` 20 times then ``proc`` stays
    inside while no ``q`` exists (each ``q/..`` cancels); then a ``q -> .`` in every
    folder makes each ``q/..`` one folder up, to above the snapshot, and the 20 ``..``
    climb from there to ``/``."""
    deep = [f"d{n}" for n in range(1, 21)]
    folders = ["/".join(deep[:n]) for n in range(1, 21)]
    hp = link(f"{folders[-1]}/hp", "q/../" * 21 + "../" * 20 + "proc")
    return [*map(folder, folders), hp, link("q", "."), *(link(f"{f}/q", ".") for f in folders)]


HOST_PROC = "/".join(f"d{n}" for n in range(1, 21)) + "/hp"

# fmt: off
HOSTILE = [
    # The chain: a link to ".", a link through it to "..", a file through both.
    Hostile("link chain", [link("l", "."), link("l/up", ".."), file("l/up/pwn")], "l", "second"),
    Hostile("link chain, two up", [link("l", "."), link("l/u", ".."), link("l/u/v", ".."),
            file("l/u/one-up"), file("l/u/v/two-up", mode=0o4755)], "l", "second"),
    Hostile("link chain, links only", [link("l", "."), link("l/u", ".."), link("l/u/v", "..")],
            "l/u", "on its way is not a folder"),
    Hostile("link to ..", [link("up", "..")], "up", "leads out"),
    Hostile("link climbing", [folder("a"), link("a/up", "../../etc")], "a/up", "leads out"),
    Hostile("absolute link", [link("proc", "/proc")], "proc", "absolute link"),
    Hostile("absolute link to a file", [link("sys/x", "/etc/shadow")], "sys/x", "absolute link"),
    Hostile("empty link", [link("e", "")], "e", "empty link"),
    Hostile("dotdot member", [file("../escape")], "../escape", "climbs out"),
    Hostile("dotdot inside", [file("a/../../escape")], "a/../../escape", "climbs out"),
    Hostile("absolute member", [file("/tmp/pyvfio-evil")], "/tmp/pyvfio-evil", "absolute name"),
    Hostile("hard link outside", [link("pw", "/etc/passwd", tarfile.LNKTYPE)], "pw", "hard link"),
    Hostile("hard link inside", [file("a"), link("b", "a", tarfile.LNKTYPE)], "b", "hard link"),
    Hostile("character device", [node("mem", tarfile.CHRTYPE)], "mem", "character device"),
    Hostile("block device", [node("sda", tarfile.BLKTYPE)], "sda", "block device"),
    Hostile("fifo", [node("pipe", tarfile.FIFOTYPE)], "pipe", "FIFO"),
    Hostile("out only once all links exist", [link("p", "q/.."), link("q", ".")], "p",
            "leads out once all links exist"),
    Hostile("host /proc once all links exist", host_proc(), HOST_PROC,
            "leads out once all links exist"),
    Hostile("link into a linked folder", [folder("real"), link("sys", "real"), link("sys/x", "y")],
            "sys/x", "on its way is not a folder"),
    Hostile("file through a file", [file("a"), file("a/b")], "a/b", "on its way is not a folder"),
    Hostile("file twice", [file("a"), file("a")], "a", "second entry"),
    Hostile("link over a file", [file("a"), link("a", "b")], "a", "second entry"),
    Hostile("link loop", [link("a", "b"), link("b", "a")], "b", "or loops"),
    Hostile("too deep", [file("d/" * 70 + "x")], "d/" * 70 + "x", "folders deep"),
    Hostile("newline in a name", [link("x\nerror: forged", "/")], "x\nerror: forged", "absolute"),
    Hostile("too many members", [folder(f"d{n}") for n in range(60)], "d50", "more than 50",
            limits={"MAX_MEMBERS": 50}),
    Hostile("too many folders", [file("/".join(f"d{n}" for n in range(60)))],
            "/".join(f"d{n}" for n in range(60)), "more than 50 files, folders",
            limits={"MAX_MEMBERS": 50}),
    Hostile("files too big", [file(f"f{n}", bytes(400_000)) for n in range(4)], "f2",
            "pass 1 MiB in all", limits={"MAX_FILE_BYTES": 1 << 20}),
    Hostile("declared 2 GiB", [], "big", "bytes pass 128 MiB",
            raw=lambda p: declared(p, "big", 2 << 30)),
    Hostile("gzip bomb", [file("zeros", bytes(4 << 20))], "", "unpacks to more than 1 MiB",
            limits={"MAX_STREAM_BYTES": 1 << 20}),
    Hostile("pax header bomb", [], "", "unpacks to more than 1 MiB",
            limits={"MAX_STREAM_BYTES": 1 << 20}, raw=lambda p: pax_bomb(p, 4 << 20)),
    Hostile("cut short", [], "", "is damaged", raw=lambda p: cut_short(p)),
]
# fmt: on


def _ids(cases: list[Hostile]) -> list[str]:
    return [c.id for c in cases]


# -- Both code paths: with and without tarfile.data_filter ---------------------------------------


@pytest.fixture(params=["without data_filter", "with data_filter"])
def data_filter(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> list[str] | None:
    """Which filter the unpacker finds: None for none, else a list of the members it
    was asked about."""
    if request.param == "without data_filter":  # as on Debian 12's Python 3.11.2
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        return None
    asked: list[str] = []

    def recording(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        asked.append(member.name)
        if REAL_FILTER is not None:
            return REAL_FILTER(member, dest)  # type: ignore[no-any-return]
        return member  # a stand-in that allows all: the unpacker's own checks must hold

    monkeypatch.setattr(tarfile, "data_filter", recording, raising=False)
    return asked


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder open_root unpacks into (its own, so other runs' folders do not count)."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def _refusal(
    case: Hostile, tmp_path: Path, temp: Path, monkeypatch: pytest.MonkeyPatch
) -> SnapshotError:
    for name, value in case.limits.items():
        monkeypatch.setattr(snapshot, name, value)
    evil = case.write(tmp_path / "evil.tar.gz")
    with pytest.raises(SnapshotError) as info:
        snapshot.open_root(evil)
    return info.value


def _nothing_left(tmp_path: Path, temp: Path) -> None:
    assert list(temp.iterdir()) == [], "the unpack folder was left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz", "tmp"], "wrote outside"
    assert not Path("/tmp/pyvfio-evil").exists()


@pytest.mark.parametrize("case", HOSTILE, ids=_ids(HOSTILE))
def test_a_hostile_archive_is_refused_and_leaves_nothing(
    case: Hostile,
    tmp_path: Path,
    temp: Path,
    data_filter: list[str] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    err = _refusal(case, tmp_path, temp, monkeypatch)
    message = str(err)
    assert "\n" not in message, "a refusal is one line"
    assert case.why in message, message
    if case.member:
        assert f"unsafe member {case.member!r}:" in message, message
    _nothing_left(tmp_path, temp)


@pytest.mark.parametrize("case", HOSTILE, ids=_ids(HOSTILE))
def test_both_code_paths_refuse_alike(
    case: Hostile, tmp_path: Path, temp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same refusal, word for word, with the filter taken away and with it present."""
    messages = []
    for present in (False, True):
        with monkeypatch.context() as m:
            if present:
                m.setattr(tarfile, "data_filter", REAL_FILTER or (lambda t, _: t), raising=False)
            else:
                m.delattr(tarfile, "data_filter", raising=False)
            messages.append(str(_refusal(case, tmp_path, temp, m)))
        (tmp_path / "evil.tar.gz").unlink()
    assert messages[0] == messages[1]


@pytest.mark.parametrize("case", HOSTILE, ids=_ids(HOSTILE))
def test_ls_on_a_hostile_archive_exits_2_with_one_line(
    case: Hostile,
    tmp_path: Path,
    temp: Path,
    data_filter: list[str] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in case.limits.items():
        monkeypatch.setattr(snapshot, name, value)
    monkeypatch.setenv(journal.STATE_DIR_ENV, str(tmp_path / "tmp/state"))
    evil = case.write(tmp_path / "evil.tar.gz")
    done = CliRunner().invoke(app, ["ls", "--root", str(evil)])
    assert done.exit_code == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert case.why in lines[0] and "Traceback" not in done.stdout + done.stderr
    _nothing_left(tmp_path, temp)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "sparse 1 TiB"])
def test_a_root_that_no_snapshot_could_be_is_refused_before_reading(
    tmp_path: Path, kind: str
) -> None:
    """A FIFO blocks the first read for ever; tarfile's xz probe reads /dev/zero, or the
    zeros of a sparse file, without end. In a child, so a regression fails, not hangs."""
    path = tmp_path / "root"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path = Path(kind)
    else:
        with open(path, "wb") as f:
            f.truncate(1 << 40)
    done = subprocess.run(
        [sys.executable, "-m", "pyvfio", "ls", "--root", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,  # a hang guard only: the refusal comes before any read
        env={**os.environ, journal.STATE_DIR_ENV: str(tmp_path / "state")},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "not a snapshot" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_refusal_of_the_data_filter_is_a_snapshot_error(
    tmp_path: Path, temp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the filter exists it is asked as well; what it refuses is refused as ours."""

    def picky(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        if member.name == "b":
            raise tarfile.TarError("b is not wanted")
        return member

    monkeypatch.setattr(tarfile, "data_filter", picky, raising=False)
    evil = build(tmp_path / "evil.tar.gz", [file("a"), file("b")])
    with pytest.raises(SnapshotError, match="'b': tarfile's data filter refuses it"):
        snapshot.open_root(evil)
    _nothing_left(tmp_path, temp)


# -- What is unpacked ----------------------------------------------------------------------------


def test_a_recorded_snapshot_opens(tmp_path: Path, data_filter: list[str] | None) -> None:
    intel_server(tmp_path / "host")
    snapshot.record(tmp_path / "s.tar.gz", Sysfs(tmp_path / "host"))
    opened = snapshot.open_root(tmp_path / "s.tar.gz")
    assert opened.pci_devices() == Sysfs(tmp_path / "host").pci_devices()
    if data_filter is not None:
        assert "pyvfio/snapshot.json" in data_filter, "the filter was never asked"


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            yield Path(folder, name)


def test_the_lab_snapshot_unpacks_with_links_inside_and_plain_modes(
    data_filter: list[str] | None,
) -> None:
    sysfs = snapshot.open_root(LAB_SNAPSHOT)
    links = 0
    for path in _walk(sysfs.root):
        st = path.lstat()
        assert st.st_uid == os.getuid()
        if stat.S_ISLNK(st.st_mode):
            links += 1
            rel = str(path.relative_to(sysfs.root))
            assert sysfs.resolve(rel) is not None, rel
        else:
            want = 0o755 if stat.S_ISDIR(st.st_mode) else 0o644
            assert stat.S_IMODE(st.st_mode) == want & ~_umask() | (0o700 & want), path
    assert links == 87


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_setuid_bits_and_foreign_owners_are_dropped(
    tmp_path: Path, data_filter: list[str] | None
) -> None:
    members = [
        folder("d", mode=0o1777),
        file("d/suid", mode=0o6755, uid=4242),
        file("d/sgid", mode=0o2777, uid=0),
    ]
    sysfs = snapshot.open_root(build(tmp_path / "s.tar.gz", members))
    for rel, mode in (("d", 0o755), ("d/suid", 0o644), ("d/sgid", 0o644)):
        st = os.lstat(sysfs.root / rel)
        assert stat.S_IMODE(st.st_mode) == mode, rel
        assert st.st_uid == os.getuid()


def test_names_as_tar_writes_them_from_a_folder_unpack(tmp_path: Path) -> None:
    """``tar -C snap -czf s.tar.gz .`` names members ``./sys/...``: fine."""
    members = [folder("./"), folder("./sys"), file("./sys/vendor", b"0x8086\n")]
    sysfs = snapshot.open_root(build(tmp_path / "s.tar.gz", members))
    assert sysfs.read_attr("sys/vendor") == "0x8086"


def test_the_limits_are_far_above_the_lab_snapshot() -> None:
    with tarfile.open(LAB_SNAPSHOT) as tar:
        members = tar.getmembers()
    with gzip.open(LAB_SNAPSHOT) as stream:
        stream_bytes = len(stream.read())
    meta = json.loads(snapshot.open_root(LAB_SNAPSHOT).read_attr(snapshot.META) or "{}")
    assert meta["devices"] == 21
    # Room for 250 times the lab's 21 devices (5,250: a big host with SR-IOV) in each.
    assert len(members) * 250 < snapshot.MAX_MEMBERS
    assert sum(m.size for m in members) * 250 < snapshot.MAX_FILE_BYTES
    assert stream_bytes * 250 < snapshot.MAX_STREAM_BYTES
    assert max(m.name.count("/") for m in members) * 4 < snapshot.MAX_DEPTH


# -- Replaying: every read resolved inside the root ----------------------------------------------


@pytest.fixture
def planted(tmp_path: Path) -> Sysfs:
    """A snapshot folder (given to --root as it is, no unpacking) whose links lead out,
    next to a secret it must never read."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret").write_text("host secret\n")
    (outside / "dir/secret").write_text("host secret\n")
    root = tmp_path / "root"
    (root / "sys").mkdir(parents=True)
    (root / "sys/inside").write_text("inside\n")
    os.symlink("../../outside", root / "sys/up")  # climbs out
    os.symlink(str(outside), root / "abs")  # absolute
    os.symlink("q/../q/../../outside", root / "p")  # out once q -> .
    os.symlink(".", root / "q")
    os.symlink("../root/sys", root / "back")  # out and back in: refused too
    os.symlink("sys/inside", root / "fine")
    return Sysfs(root)


ESCAPES = ["sys/up/secret", "abs/secret", "p/secret", "back/inside", "sys/up/dir/secret"]


@pytest.mark.parametrize("rel", ESCAPES)
def test_a_replay_never_reads_through_a_link_that_leads_out(planted: Sysfs, rel: str) -> None:
    assert planted.read_bytes(rel) is None
    assert planted.read_attr(rel) is None
    assert planted.exists(rel) is False
    assert planted.stat(rel) is None
    assert planted.realpath(rel) is None
    assert planted.resolve(rel) is None
    folder = rel.rsplit("/", 1)[0]
    assert planted.listdir(folder) == []
    assert planted.read_lines(rel) == []
    with pytest.raises(FileNotFoundError):
        planted.write_attr(rel, "1")
    assert (planted.root.parent / "outside/secret").read_text() == "host secret\n"


def test_a_replay_reads_links_inside_and_link_texts(planted: Sysfs) -> None:
    assert planted.read_attr("fine") == "inside"
    assert planted.realpath("fine") == "sys/inside"
    assert planted.exists("fine") and planted.stat("fine") is not None
    assert planted.listdir("q/sys") == ["inside", "up"]
    # A link's own text is data (a driver's name); reading it reads nothing outside.
    assert planted.readlink("sys/up") == "../../outside" and planted.link_name("abs") == "outside"
    assert planted.readlink("sys/up/secret") is None  # its folder leads out


def test_resolve_inside_follows_the_kernels_rules() -> None:
    links = {"a": "b/c", "b": "d", "l1": "l2", "l2": "l1", "r": "..", "s": "x/../y"}
    cases = {
        "a": "d/c",
        "a/..": "d",
        "a/../..": "",
        "a/../../..": None,
        "r": None,
        "s": "y",
        "l1": None,
        "./a//": "d/c",
        "missing/../d": "d",
    }
    for rel, want in cases.items():
        assert resolve_inside(rel, links.get) == want, rel


# -- Recording: OUT is replaced, never followed; no kernel addresses ----------------------------


def test_snapshot_replaces_a_symlink_at_out_and_leaves_its_target(tmp_path: Path) -> None:
    intel_server(tmp_path / "host")
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out.tar.gz"
    out.symlink_to(victim)
    snapshot.record(out, Sysfs(tmp_path / "host"))
    assert victim.read_text() == "precious\n"
    assert not out.is_symlink() and tarfile.is_tarfile(out)
    dangling = tmp_path / "dangling.tar.gz"
    dangling.symlink_to(tmp_path / "created-through-the-link")
    snapshot.record(dangling, Sysfs(tmp_path / "host"))
    assert not (tmp_path / "created-through-the-link").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dangling.tar.gz",
        "host",
        "out.tar.gz",
        "victim",
    ], "a temporary file was left"


def test_snapshot_cut_short_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    intel_server(tmp_path / "host")
    out = tmp_path / "out.tar.gz"
    out.write_bytes(b"the old one")

    def dies(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(snapshot, "_record", dies)
    with pytest.raises(KeyboardInterrupt):
        snapshot.record(out, Sysfs(tmp_path / "host"))
    assert out.read_bytes() == b"the old one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host", "out.tar.gz"]


def test_snapshot_of_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="is a folder"):
        snapshot.record(tmp_path)


KERNEL_LINES = (
    "00001000-0009fbff : System RAM\n"
    "00100000-7ffd6fff : System RAM\n"
    "  20c00000-21a01d31 : Kernel code\n"
    "  21c00000-224eafff : Kernel rodata\n"
    "  22600000-2284897f : Kernel data\n"
)


def test_the_snapshot_keeps_only_iomem_lines_over_pci_resources(tmp_path: Path) -> None:
    host = tmp_path / "host"
    desktop = amd_desktop(host)
    framebuffer = (host / "proc/iomem").read_text()
    (host / "proc/iomem").write_text(KERNEL_LINES + framebuffer)
    snapshot.record(tmp_path / "s.tar.gz", desktop)
    replay = snapshot.open_root(tmp_path / "s.tar.gz")
    kept = replay.read_attr("proc/iomem") or ""
    assert "Kernel" not in kept and "System RAM" not in kept
    assert kept.splitlines() == framebuffer.strip().splitlines()
    gpus = [a for a in desktop.pci_devices() if usage.boot_framebuffer_users(a, desktop)]
    assert gpus, "the synthetic desktop has a boot framebuffer over a GPU BAR"
    for addr in gpus:
        assert usage.boot_framebuffer_users(addr, replay) == usage.boot_framebuffer_users(
            addr, desktop
        )


def test_the_lab_iomem_keeps_device_lines_and_drops_the_kernels() -> None:
    lab = snapshot.open_root(LAB_SNAPSHOT)
    resources = snapshot._memory_resources(lab, lab.listdir(PCI_DEVICES))
    kept = snapshot.pci_iomem(lab.read_lines("proc/iomem"), resources)
    text = "\n".join(kept)
    assert "Kernel" not in text and "System RAM" not in text and "Reserved" not in text
    assert "  fe500000-fe503fff : 0000:00:11.0" in kept and "    fe500000-fe503fff : nvme" in kept
    assert "c0000000-febfffff : PCI Bus 0000:00" in kept
