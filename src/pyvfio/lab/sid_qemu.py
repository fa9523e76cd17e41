"""A Debian sid chroot with a QEMU new enough to be a vfio-user client (QEMU >= 10.1).

Debian 12's QEMU (7.2) has no ``vfio-user-pci``; sid's has. Rather than build QEMU,
``debootstrap --variant=minbase --include=qemu-system-x86 sid`` lays a minimal sid
tree (about 400 MiB, under a minute from Debian's mirror) and QEMU runs in it with
``chroot``. The tests in ``tests/vfio_user/test_qemu.py`` attach that QEMU to
``pyvfio serve edu``; a socket the chrooted QEMU must reach lives under the tree
(see `SidQemu.host_path`).

The chroot is cached in ``$XDG_CACHE_HOME/pyvfio/sid-qemu`` (``~/.cache/...``).
It is built in a sibling folder and renamed into place only when QEMU inside it
answers, so a build that failed or was interrupted is never taken for a chroot.
``sid-qemu.json`` in the tree records what was built, from where, and how long it took.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from pyvfio.errors import LabUnavailableError
from pyvfio.host import accel
from pyvfio.lab.debian import DEBIAN_KEYRING, DEBIAN_MIRROR, cache_dir

SUITE: Final = "sid"
PACKAGES: Final = (accel.QEMU_PACKAGE,)
QEMU: Final = f"/usr/bin/{accel.QEMU}"
STAMP: Final = "sid-qemu.json"
_DEBOOTSTRAP_TIMEOUT: Final = 1800
_QEMU_TIMEOUT: Final = 60

Say = Callable[[str], None]


class SidQemuError(LabUnavailableError):
    """The sid chroot with QEMU cannot be built or does not work: the message says why."""


@dataclass(frozen=True)
class SidQemu:
    """A built chroot: where it is, the QEMU in it, and how it was made."""

    root: Path
    qemu_version: str  # "11.1.3 (Debian 1:11.1.3+ds-1)"
    suite: str
    mirror: str
    built: str  # ISO 8601, UTC
    seconds: float  # how long debootstrap and the checks took

    def command(self, *args: str) -> list[str]:
        """The command line that runs the chroot's QEMU with ``args`` (needs root)."""
        return ["chroot", str(self.root), QEMU, *args]

    def host_path(self, inside: str) -> Path:
        """Where a path as QEMU sees it (``/tmp/x.sock``) is on the host."""
        return self.root / inside.lstrip("/")

    def inside_path(self, host: Path) -> str:
        """The path QEMU sees for ``host``, a path under the chroot."""
        return "/" + str(host.resolve().relative_to(self.root.resolve()))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "root": str(self.root)}

    def __str__(self) -> str:
        return f"{self.root}: QEMU {self.qemu_version} ({self.suite}, built {self.built})"


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/pyvfio/sid-qemu``, ``~/.cache/pyvfio/sid-qemu`` without it."""
    return cache_dir("sid-qemu")


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (its first ``.../debian`` URI).

    ``$PYVFIO_DEBIAN_MIRROR`` wins; without any Debian source, Debian's CDN.
    Both the one-line (``sources.list``) and deb822 (``*.sources``) formats count.
    """
    if mirror := os.environ.get("PYVFIO_DEBIAN_MIRROR"):
        return mirror
    files = [sources / "sources.list"]
    parts = sources / "sources.list.d"
    if parts.is_dir():
        files += sorted(parts.iterdir())
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        uri: str
        for uri in re.findall(r"^\s*(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):  # not debian-security, not a third party
                return uri.rstrip("/")
    return DEBIAN_MIRROR


def find_chroot(root: Path | None = None) -> SidQemu | None:
    """The finished chroot at ``root`` (default: the cache), or None."""
    root = root or default_dir()
    try:
        data = json.loads((root / STAMP).read_text())
        chroot = SidQemu(
            root=root,
            qemu_version=str(data["qemu_version"]),
            suite=str(data["suite"]),
            mirror=str(data["mirror"]),
            built=str(data["built"]),
            seconds=float(data["seconds"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return chroot if (root / QEMU.lstrip("/")).is_file() else None


def ensure_chroot(
    root: Path | None = None,
    *,
    mirror: str | None = None,
    force: bool = False,
    say: Say = lambda line: None,
) -> SidQemu:
    """The chroot at ``root`` (default: the cache), built first when missing.

    Building needs root (debootstrap, chroot) and ``debootstrap`` (``apt-get install
    debootstrap``). Raises `SidQemuError` saying why when it cannot be built or its
    QEMU lacks ``vfio-user-pci``; nothing half-built is left where a chroot is looked for.
    """
    root = root or default_dir()
    if not force and (chroot := find_chroot(root)) is not None:
        return chroot
    if os.geteuid() != 0:
        raise SidQemuError(
            f"building the sid chroot in {root} needs root (debootstrap): run as root"
        )
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).is_file():
        raise SidQemuError(
            "debootstrap is missing: apt-get install debootstrap (or bash scripts/setup.sh)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time: a second caller waits, then takes the first one's chroot.
    with (root.parent / f".{root.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (chroot := find_chroot(root)) is not None:
            return chroot
        return _build(root, debootstrap, mirror or debian_mirror(), say)


def _build(root: Path, debootstrap: str, mirror: str, say: Say) -> SidQemu:
    partial = root.parent / f".{root.name}.partial"
    log = root.parent / f"{root.name}.debootstrap.log"
    shutil.rmtree(partial, ignore_errors=True)  # an interrupted build's leftovers
    say(f"sid-qemu: debootstrap {SUITE} with {', '.join(PACKAGES)} from {mirror} into {root}")
    start = time.monotonic()
    try:
        _debootstrap(debootstrap, partial, mirror, log, say)
        version = _check_qemu(partial)
        # The downloaded .debs (about 60 MiB) are not needed once unpacked.
        for deb in (partial / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        chroot = SidQemu(
            root=root,
            qemu_version=version,
            suite=SUITE,
            mirror=mirror,
            built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            seconds=round(time.monotonic() - start, 1),
        )
        stamp = {key: value for key, value in chroot.to_json().items() if key != "root"}
        (partial / STAMP).write_text(json.dumps(stamp, indent=2))  # the tree may move
        if root.exists():  # --force: the old tree goes only once the new one works
            old = root.parent / f".{root.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            root.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        partial.rename(root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    say(f"sid-qemu: QEMU {version} ready in {chroot.seconds:.0f} s")
    return chroot


def _debootstrap(debootstrap: str, target: Path, mirror: str, log: Path, say: Say) -> None:
    command = [
        debootstrap,
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        f"--keyring={DEBIAN_KEYRING}",
        SUITE,
        str(target),
        mirror,
    ]
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
    with log.open("w") as out:
        try:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
        except OSError as err:
            raise SidQemuError(f"cannot run {debootstrap}: {err}") from err
        assert process.stdout is not None
        lines: list[str] = []
        try:
            deadline = time.monotonic() + _DEBOOTSTRAP_TIMEOUT
            for line in process.stdout:
                out.write(line)
                lines.append(line.rstrip())
                if _is_milestone(line):
                    say(f"sid-qemu: {line.strip().removeprefix('I: ')}")
                if time.monotonic() > deadline:
                    raise SidQemuError(
                        f"debootstrap took over {_DEBOOTSTRAP_TIMEOUT} s (log: {log})"
                    )
            status = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if status != 0:
        last = " | ".join(line for line in lines[-3:] if line)
        raise SidQemuError(
            f"debootstrap {SUITE} from {mirror} failed (exit {status}): {last} "
            f"(log: {log}; another mirror: PYVFIO_DEBIAN_MIRROR=URL)"
        )


def _is_milestone(line: str) -> bool:
    """debootstrap's stage lines, not its hundreds of per-package ones."""
    text = line.strip()
    return text.startswith(("E:", "W:")) or (
        text.startswith("I: ")
        and (
            "Release" in text
            or text.endswith(("packages...", "system...", "successfully."))
            or text.startswith("I: Checking component")
        )
    )


def _check_qemu(root: Path) -> str:
    """QEMU's version, once it has been seen to run in the chroot and know vfio-user-pci."""

    def run(*args: str) -> str:
        try:
            done = subprocess.run(
                ["chroot", str(root), QEMU, *args],
                capture_output=True,
                text=True,
                timeout=_QEMU_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SidQemuError(f"QEMU in the sid chroot {root} does not run: {err}") from err
        if done.returncode != 0:
            raise SidQemuError(
                f"QEMU in the sid chroot {root} failed ({' '.join(args)}): "
                f"{(done.stderr or done.stdout).strip()[-300:]}"
            )
        return done.stdout

    first = run("--version").splitlines()[0]
    version = first.removeprefix("QEMU emulator version ").strip()
    if "socket=" not in run("-device", "vfio-user-pci,help"):
        raise SidQemuError(f"QEMU {version} in {root} has no vfio-user-pci (needs QEMU >= 10.1)")
    return version
