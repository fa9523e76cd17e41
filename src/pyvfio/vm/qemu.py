"""``pyvfio vm qemu``: a q35 QEMU command line for passed devices, run and checked.

:func:`build` turns PCI addresses into a :class:`QemuPlan` (the argv and what it needs
of the host) and changes nothing. :func:`run` carries it out the way libvirt's
"managed" hostdevs do: pre-flight checks, journaled bind to vfio-pci, QEMU with a QMP
socket, ``query-pci`` to confirm each device is in the guest with its IDs and BARs, and
when QEMU exits the devices go back to their original drivers.

QEMU is started by root, so it is confined the way libvirt does it where this QEMU can:
a seccomp filter (``-sandbox on``) and a change to an unprivileged user once its
devices are open (``-runas``, ``-run-with user=`` since QEMU 9.1). Every value that
goes inside a QEMU option string passes :func:`option_value` (commas doubled).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from pyvfio import _sizes
from pyvfio._limits import CAP_IPC_LOCK as CAP_IPC_LOCK  # where it was defined before
from pyvfio._limits import holds_cap_ipc_lock, memlock_limits
from pyvfio._sizes import size_text
from pyvfio.errors import HostError, MemlockLimitError, PyvfioError
from pyvfio.host import accel as host_accel
from pyvfio.host import bind, doctor
from pyvfio.host.accel import QEMU as QEMU  # the binary; callers name it vm.qemu.QEMU
from pyvfio.host.accel import QEMU_PACKAGE
from pyvfio.host.bind import Restored
from pyvfio.host.doctor import CheckResult, Status
from pyvfio.host.snapshot import euid_of
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.viability import is_vfio_driver
from pyvfio.vm.layout import PassedDevice, layout
from pyvfio.vm.qmp import GuestPciDevice, Monitor, QmpError, walk_query_pci

MIB = 1 << 20
GIB = 1 << 30

#: Guest RAM of a VM that is run (``--memory`` changes it).
DEFAULT_MEMORY = "4G"
#: Guest RAM of ``--check``: SeaBIOS numbers the root ports with 16 MiB already; the
#: check needs no more, and VFIO pins all of it (a 2 GiB host cannot give 4 GiB).
CHECK_MEMORY = "64M"

#: What a VM with VFIO devices pins beyond its RAM: libvirt's rule for x86
#: (qemuDomainGetMemLockLimitBytes: guest memory + 1 GiB for BAR and ROM mappings).
MEMLOCK_SLACK = GIB


class QemuError(PyvfioError):
    """QEMU did not start, or died before it answered on QMP; the message has its stderr."""


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"2GiB"`` -> bytes (QEMU's ``-m`` units: binary, MiB bare)."""
    size = _sizes.parse_size(text, unit=MIB, examples="512M or 4G")
    if size < 16 * MIB or size % MIB:
        raise ValueError(f"{text!r}: guest memory is a whole number of MiB, at least 16M")
    return size


# -- Values inside QEMU option strings -----------------------------------------------------

#: C0 controls and DEL: a newline or an escape sequence in a path is never meant, and a
#: value that holds one would also break the one-line messages and the printed command.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_text(value: str, what: str) -> str:
    """``value`` if it can go into a QEMU option or libvirt XML as is; else ValueError.

    Refused: the empty string (QEMU would read ``romfile=`` as "no ROM at all", not as a
    file) and control characters (C0, DEL), which no file or user name needs.
    """
    if not value:
        raise ValueError(f"{what} is empty: give a value, or leave the option out")
    if _CONTROL.search(value):
        raise ValueError(f"{what} {value!r} holds a control character: refused")
    return value


def option_value(value: str, what: str) -> str:
    """``value`` as it goes after ``key=`` in a QEMU option string, commas doubled.

    QEMU splits ``-device``/``-chardev``/``-mon`` options (QemuOpts, get_opt_value in
    util/qemu-option.c) and ``-object``/``-machine`` (keyval_parse_one in
    util/keyval.c) at a single ``,`` and reads ``,,`` as one comma in a value, so a
    ``romfile=card.rom,host=0000:00:14.0`` would otherwise pass another device. Nothing
    else is special inside a value. ``what`` names the value in the refusal.
    """
    return check_text(value, what).replace(",", ",,")


def _unmangle(text: str) -> str:
    """A /proc/mounts field as the path it is: the kernel writes space, tab, newline and
    backslash as octal escapes (fs/proc_namespace.c, mangle)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


@dataclass(frozen=True)
class Memlock:
    """RLIMIT_MEMLOCK against what QEMU will pin: all guest RAM, for the device's DMA."""

    need: int
    soft: int | None  # None: unlimited
    hard: int | None
    privileged: bool  # CAP_IPC_LOCK: vfio_iommu_type1 does not count pinned pages

    @property
    def enough(self) -> bool:
        return self.privileged or self.soft is None or self.soft >= self.need

    @property
    def can_raise(self) -> bool:
        """pyvfio raises the soft limit up to the hard one for QEMU (both, as root)."""
        return self.enough or self.hard is None or self.hard >= self.need

    def __str__(self) -> str:
        def shown(v: int | None) -> str:
            return "unlimited" if v is None else size_text(v)

        text = f"QEMU needs RLIMIT_MEMLOCK >= {size_text(self.need)} (guest RAM + 1 GiB); "
        text += f"now {shown(self.soft)} soft, {shown(self.hard)} hard"
        if self.privileged:
            return text + "; with CAP_IPC_LOCK the limit does not apply"
        if self.enough:
            return text + ": enough"
        if self.can_raise:
            return text + ": pyvfio raises the soft limit for QEMU"
        return text + ": too low, and only root can raise the hard limit"

    def to_json(self) -> dict[str, Any]:
        return {
            "need": self.need,
            "soft": self.soft,
            "hard": self.hard,
            "privileged": self.privileged,
            "enough": self.enough,
            "can_raise": self.can_raise,
        }


def memlock_for(memory: int, sysfs: Sysfs = LIVE) -> Memlock:
    soft, hard = memlock_limits(sysfs.read_lines("proc/self/limits")) or (None, None)
    privileged = holds_cap_ipc_lock(sysfs.read_lines("proc/self/status"), euid_of(sysfs))
    return Memlock(memory + MEMLOCK_SLACK, soft, hard, privileged)


@dataclass(frozen=True)
class GpuOptions:
    """Options for display-class functions (base class 0x03) only.

    ``x_vga``: hand the legacy VGA ranges to the device (a VGA-class GPU as the guest's
    primary display under SeaBIOS; needs CONFIG_VFIO_PCI_VGA). ``romfile``: a ROM image
    to expose instead of the device's own (a GPU whose ROM was shadowed or modified).
    ``rombar=False``: no ROM BAR at all.
    """

    x_vga: bool = False
    romfile: str | None = None
    rombar: bool = True

    @property
    def any(self) -> bool:
        return self.x_vga or self.romfile is not None or not self.rombar


#: No GPU options: QEMU's defaults (ROM BAR on, the device's own ROM, no legacy VGA).
NO_GPU_OPTIONS = GpuOptions()


# -- Confinement: a seccomp filter and an unprivileged user ----------------------------------


def sandbox_option(drop: bool) -> str:
    """``-sandbox``'s value: libvirt's filter (qemuBuildSandboxCommandLine).

    Obsolete system calls, fork/exec and scheduler changes are denied. set*uid/set*gid
    are denied too unless QEMU drops root itself: QEMU installs the filter with its early
    options and changes user only in os_setup_post (softmmu/vl.c), so with a drop they
    must stay allowed ("deny" and "children" both kill QEMU with SIGSYS at the drop).
    """
    elevate = "allow" if drop else "deny"
    return f"on,obsolete=deny,elevateprivileges={elevate},spawn=deny,resourcecontrol=deny"


#: The user QEMU becomes unless ``run_as`` says otherwise: it owns no files, so QEMU
#: keeps only what it opened as root. (libvirt's ``libvirt-qemu``/``qemu`` users own the
#: disk images of libvirt's running VMs: a pyvfio QEMU should not reach those.)
DEFAULT_RUN_AS = "nobody"
#: ``run_as=KEEP_ROOT`` (``--run-as root``): QEMU keeps root.
KEEP_ROOT = "root"
#: A QEMU start that only prints (``-help``); the first start in the lab guest reads
#: QEMU and its libraries over 9p, which takes many seconds.
FEATURE_PROBE_TIMEOUT = 120.0


@dataclass(frozen=True)
class QemuFeatures:
    """What a QEMU binary offers for confinement, from its ``-help``.

    ``sandbox``: built with seccomp (a build without it refuses ``-sandbox``).
    ``drop``: the option that changes its user, ``-runas`` (until 9.0; deprecated since)
    or ``-run-with`` (``user=`` since QEMU 9.1); None when it has neither.
    """

    found: bool
    sandbox: bool = False
    drop: str | None = None


def drop_option(help_text: str) -> str | None:
    """Which option changes QEMU's user, from ``qemu-system-x86_64 -help``."""
    lines = help_text.splitlines()
    if any(line.startswith("-run-with") and "user=" in line for line in lines):
        return "-run-with"
    if any(line.startswith("-runas ") for line in lines):
        return "-runas"
    return None


@functools.cache
def qemu_features(qemu: str = QEMU) -> QemuFeatures:
    """Probe ``qemu`` once per process (it starts nothing: it prints and exits).

    QEMU parses ``-sandbox`` as it reads its options and stops at ``-help``; a build
    without seccomp exits 1 ("-sandbox support is not enabled in this QEMU binary").
    """

    def ask(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                [qemu, *args],
                capture_output=True,
                text=True,
                timeout=FEATURE_PROBE_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    helped = ask("-help")
    if helped is None or helped.returncode != 0:
        return QemuFeatures(found=False)
    sandboxed = ask("-sandbox", sandbox_option(drop=True), "-help")
    return QemuFeatures(
        found=True,
        sandbox=sandboxed is not None and sandboxed.returncode == 0,
        drop=drop_option(helped.stdout),
    )


@dataclass(frozen=True)
class Confinement:
    """How QEMU runs: under a seccomp filter or not, and the user it becomes.

    ``user``/``uid``: who QEMU is once its devices are open (None: it stays whoever
    started it). ``args``: the options that say so; ``notes``: what could not be had.
    """

    sandbox: bool = False
    user: str | None = None
    uid: int | None = None
    args: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    euid: int = 0  # who starts QEMU

    def check(self) -> CheckResult:
        """The pre-flight line: PASS when QEMU is filtered and not root, WARN otherwise."""
        as_root = self.user is None and self.euid == 0
        if self.user is not None:
            who = f"runs as {self.user} (uid {self.uid}) once its devices are open"
        else:
            who = "runs as root" if as_root else f"runs as uid {self.euid}, not root"
        filtered = "a seccomp filter" if self.sandbox else "no seccomp filter"
        status = Status.PASS if self.sandbox and not as_root else Status.WARN
        hint = "" if status is Status.PASS else "; ".join(self.notes)
        return CheckResult("QEMU confinement", status, f"{filtered}; {who}", hint)

    def to_json(self) -> dict[str, Any]:
        return {"sandbox": self.sandbox, "user": self.user, "uid": self.uid}


def confinement(
    features: QemuFeatures, *, run_as: str | None = None, sandbox: bool = True, euid: int = 0
) -> Confinement:
    """The confinement QEMU gets here; a ``run_as`` that cannot be had raises ValueError.

    ``run_as``: None for :data:`DEFAULT_RUN_AS` (where that user exists and pyvfio is
    root), :data:`KEEP_ROOT`, or a user name, which must exist.
    """
    notes = []
    user: pwd.struct_passwd | None = None
    if run_as is not None and run_as != KEEP_ROOT:
        check_text(run_as, "--run-as")
        if euid != 0:
            raise ValueError(
                f"--run-as {run_as!r}: only root can make QEMU change user (pyvfio runs as "
                f"uid {euid}, and so will QEMU): leave --run-as out"
            )
        try:
            user = pwd.getpwnam(run_as)
        except KeyError:
            raise ValueError(
                f"--run-as {run_as!r}: no such user on this host; name an existing "
                f"unprivileged user (or leave it out: {DEFAULT_RUN_AS})"
            ) from None
        if features.found and features.drop is None:
            raise ValueError(
                f"--run-as {run_as!r}: this QEMU cannot change user (neither -runas nor "
                "-run-with user=); leave --run-as out to run it as root"
            )
    elif run_as == KEEP_ROOT:
        notes.append("--run-as root: QEMU keeps root")
    elif euid != 0:
        notes.append(f"pyvfio runs as uid {euid}, not root: so does QEMU, with nothing to drop")
    else:
        try:
            user = pwd.getpwnam(DEFAULT_RUN_AS)
        except KeyError:
            notes.append(f"no user {DEFAULT_RUN_AS!r} here: QEMU keeps root (--run-as USER)")
        if features.found and features.drop is None:
            notes.append(
                "this QEMU cannot change user (no -runas, no -run-with user=): it keeps root"
            )
            user = None
    if user is not None and user.pw_uid == 0:
        notes.append(f"{user.pw_name} is uid 0: QEMU keeps root")
        user = None
    args: list[str] = []
    if not features.found:
        notes.append("QEMU did not answer -help (is it installed?): no -sandbox, no -runas")
        user = None
    elif user is not None and features.drop == "-run-with":
        args += ["-run-with", f"user={option_value(user.pw_name, '--run-as')}"]
    elif user is not None:
        args += ["-runas", user.pw_name]
    filtered = sandbox and features.sandbox
    if filtered:
        args[:0] = ["-sandbox", sandbox_option(drop=user is not None)]
    elif not sandbox:
        notes.append("--no-sandbox: QEMU runs without a system call filter")
    elif features.found:
        notes.append("this QEMU is built without seccomp: it runs without -sandbox")
    return Confinement(
        sandbox=filtered,
        user=None if user is None else user.pw_name,
        uid=None if user is None else user.pw_uid,
        args=tuple(args),
        notes=tuple(notes),
        euid=euid,
    )


def hugepage_mount(sysfs: Sysfs = LIVE) -> str | None:
    """Where hugetlbfs is mounted (the first mount; Debian's systemd: /dev/hugepages)."""
    for line in sysfs.read_lines("proc/mounts"):
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "hugetlbfs":
            return _unmangle(parts[1])
    return None


def free_hugepages(sysfs: Sysfs = LIVE) -> int:
    """Bytes of free reserved hugepages, all sizes."""
    total = 0
    for size in sysfs.listdir("sys/kernel/mm/hugepages"):
        kib = int(size.removeprefix("hugepages-").removesuffix("kB"))
        total += (
            (sysfs.read_int(f"sys/kernel/mm/hugepages/{size}/free_hugepages") or 0) * kib * 1024
        )
    return total


@dataclass(frozen=True)
class QemuPlan:
    """The QEMU command line for the passed devices, and what the host must give it."""

    argv: tuple[str, ...]
    devices: tuple[PassedDevice, ...]
    memory: int
    hugepages: str | None  # the hugetlbfs mount QEMU's RAM comes from
    memlock: Memlock
    notes: tuple[str, ...] = ()
    accel: str = "auto"  # kvm, tcg, or auto (QEMU takes KVM if it initialises, else TCG)
    confinement: Confinement = field(default_factory=Confinement)

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(d.address for d in self.devices)

    def command(self) -> str:
        """The argv as one shell line."""
        return shlex.join(self.argv)

    def shell(self) -> str:
        """The argv as a readable shell command: one option and its value per line."""
        lines: list[str] = [shlex.quote(self.argv[0])]
        args = list(self.argv[1:])
        while args:
            arg = args.pop(0)
            if arg.startswith("-") and args and not args[0].startswith("-"):
                lines.append(f"{shlex.quote(arg)} {shlex.quote(args.pop(0))}")
            else:
                lines.append(shlex.quote(arg))
        return " \\\n    ".join(lines)

    def __str__(self) -> str:
        out = [self.shell(), ""]
        out += [f"# {d}" for d in self.devices]
        out.append(f"# {self.memlock}")
        out += [f"# note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "command": self.command(),
            "devices": [
                {
                    **d.info.to_json(),
                    "guest_port": d.port,
                    "guest_function": d.function,
                    "qdev_id": d.qdev_id,
                }
                for d in self.devices
            ],
            "memory": self.memory,
            "hugepages": self.hugepages,
            "memlock": self.memlock.to_json(),
            "accel": self.accel,
            "confinement": self.confinement.to_json(),
            "notes": list(self.notes),
        }


def _accel_args(accel: str) -> list[str]:
    if accel == "auto":
        # QEMU tries each -accel in order: KVM where /dev/kvm works, TCG elsewhere.
        return ["-accel", "kvm", "-accel", "tcg"]
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"accel {accel!r}: use kvm, tcg or auto")
    return ["-accel", accel]


def vf_token_users(
    devices: Sequence[PassedDevice], vf_token: str | None, sysfs: Sysfs = LIVE
) -> frozenset[str]:
    """The VFs that need ``vf_token`` (their PF is on vfio-pci: vfio-pci opens them only
    with the token the PF's user set); ValueError for a token none of them needs, or a
    VF that needs one when none is given."""
    needing = frozenset(
        d.address
        for d in devices
        if d.physical_function is not None and sysfs.driver(d.physical_function) == "vfio-pci"
    )
    if vf_token is None and needing:
        first = next(d for d in devices if d.address in needing)
        raise ValueError(
            f"{first.address} is a VF of {first.physical_function}, which is on vfio-pci: "
            "vfio-pci opens it only with the VF token the PF's user set; add --vf-token UUID"
        )
    if vf_token is not None and not needing:
        raise ValueError(
            "--vf-token is for SR-IOV VFs whose PF is on vfio-pci; none of these is one "
            "(vfio-pci would refuse the token)"
        )
    return needing


def _device_arg(dev: PassedDevice, gpu: GpuOptions, vf_token: str | None = None) -> str:
    # host, id and bus are pyvfio's own (a normalized address, hostdevN-F, rpN).
    opts = [
        "vfio-pci",
        f"host={dev.address}",
        f"id={dev.qdev_id}",
        f"bus=rp{dev.port}",
        f"addr=00.{dev.function}",
    ]
    if dev.multifunction:
        opts.append("multifunction=on")
    if vf_token is not None:
        opts.append(f"vf-token={option_value(vf_token, '--vf-token')}")
    if dev.is_gpu:
        if gpu.x_vga and dev.is_vga:
            opts.append("x-vga=on")
        if gpu.romfile is not None:
            opts.append(f"romfile={option_value(gpu.romfile, '--romfile')}")
        if not gpu.rombar:
            opts.append("rombar=0")
    return ",".join(opts)


def _check_accel(qemu: str) -> tuple[str, list[str]]:
    """For ``--check`` with accel auto: KVM only if it runs a vCPU here, else TCG.

    QEMU's own fallback (``-accel kvm -accel tcg``) only catches a KVM that fails to
    initialise, not one that aborts as the vCPU starts; the question is passthrough,
    which TCG answers as well (VFIO does not depend on the accelerator).
    """
    works, why = host_accel.kvm_usable(qemu)
    if works:
        return "kvm", []
    return "tcg", [f"KVM does not work here ({why}): the check runs QEMU on TCG"]


def build(
    addresses: Sequence[str],
    *,
    memory: str | None = None,
    hugepages: bool = False,
    accel: str = "auto",
    gpu: GpuOptions = NO_GPU_OPTIONS,
    extra: Sequence[str] = (),
    qemu: str = QEMU,
    check: bool = False,
    run_as: str | None = None,
    sandbox: bool = True,
    features: QemuFeatures | None = None,
    vf_token: str | None = None,
    sysfs: Sysfs = LIVE,
) -> QemuPlan:
    """The QEMU command line; reads sysfs, changes nothing. Bad input raises ValueError.

    ``memory``: guest RAM, :data:`DEFAULT_MEMORY`, or :data:`CHECK_MEMORY` for a plan
    made for ``check`` (which also probes KVM when ``accel`` is auto, see
    :func:`_check_accel`). ``run_as``, ``sandbox``: see :func:`confinement`;
    ``features`` are probed from ``qemu`` (:func:`qemu_features`) unless given.
    ``extra`` goes to QEMU as is: those are QEMU options already, in QEMU's syntax.
    ``vf_token``: the VF token for VFs whose PF is on vfio-pci (QEMU's ``vf-token``).
    """
    token = None
    if vf_token is not None:
        from pyvfio.device import parse_vf_token  # the core's one parser, when one is given

        token = parse_vf_token(vf_token)
    devices = layout(addresses, sysfs)
    tokened = vf_token_users(devices, token, sysfs)
    size = parse_size(memory or (CHECK_MEMORY if check else DEFAULT_MEMORY))
    notes = []
    jail = confinement(
        qemu_features(qemu) if features is None else features,
        run_as=run_as,
        sandbox=sandbox,
        euid=euid_of(sysfs),
    )
    if gpu.any and not any(d.is_gpu for d in devices):
        raise ValueError(
            "--x-vga, --romfile and --no-rombar apply to GPUs; none of these is a display "
            "controller (PCI class 03)"
        )
    if gpu.x_vga and not any(d.is_vga for d in devices):
        raise ValueError("--x-vga needs a VGA-compatible GPU (PCI class 0300)")
    accel_args = _accel_args(accel)
    if check and accel == "auto":
        accel, accel_notes = _check_accel(qemu)
        accel_args = _accel_args(accel)
        notes += accel_notes
    argv = [qemu, "-machine", "q35", *accel_args, "-cpu", "max", "-m", f"{size // MIB}M"]
    argv += jail.args
    notes += jail.notes
    mount = None
    if hugepages:
        mount = hugepage_mount(sysfs) or "/dev/hugepages"
        path = option_value(mount, "the hugetlbfs mount point")
        # prealloc: pages are taken now, not at the guest's first touch; VFIO pins all of
        # guest RAM at start anyway.
        argv += [
            "-object",
            f"memory-backend-file,id=ram0,size={size // MIB}M,mem-path={path},prealloc=on",
            "-machine",
            "memory-backend=ram0",
        ]
    if any(d.is_vga and gpu.x_vga for d in devices):
        argv += ["-vga", "none"]
        notes.append("x-vga: the GPU is the guest's VGA; the emulated VGA is off (-vga none)")
    for port in sorted({d.port for d in devices}):
        argv += ["-device", f"pcie-root-port,id=rp{port},bus=pcie.0,chassis={port}"]
    for dev in devices:
        argv += ["-device", _device_arg(dev, gpu, token if dev.address in tokened else None)]
        if dev.info.driver is not None and not is_vfio_driver(dev.info.driver):
            notes.append(f"{dev.address} is on {dev.info.driver}: pyvfio binds it to vfio-pci")
    argv += list(extra)
    memlock = memlock_for(size, sysfs)
    return QemuPlan(
        tuple(argv), devices, size, mount, memlock, tuple(notes), accel=accel, confinement=jail
    )


# -- Pre-flight -------------------------------------------------------------------------------


def _group_checks(plan: QemuPlan, sysfs: Sysfs) -> list[CheckResult]:
    try:
        bplan = bind.plan_bind(plan.addresses, sysfs=sysfs)
    except HostError as err:
        return [CheckResult("IOMMU groups", Status.FAIL, str(err))]
    out = []
    blocked: dict[int, list[str]] = {}
    for group, addr, driver in bplan.blockers:
        blocked.setdefault(group, []).append(f"{addr} on {driver}")
    for dev in plan.devices:
        number = sysfs.iommu_group(dev.address)
        name = f"{dev.address} group"
        if number in blocked:
            peers = blocked[number]
            out.append(
                CheckResult(
                    name,
                    Status.FAIL,
                    f"group {number} is not viable: {', '.join(peers)} stay(s) on host drivers",
                    "every endpoint of a group goes to VFIO together: pass the peers too, or "
                    "unbind them (pyvfio bind --group); a group of the host's own chipset "
                    "cannot be passed through",
                )
            )
        else:
            out.append(CheckResult(name, Status.PASS, f"group {number} is viable once bound"))
    for action in bplan.in_use:
        out.append(
            CheckResult(
                f"{action.address} in use",
                Status.FAIL,
                "; ".join(action.users),
                "the host needs it: stop that use first, or pass another device",
            )
        )
    return out


def preflight(plan: QemuPlan, sysfs: Sysfs = LIVE) -> list[CheckResult]:
    """What must hold before anything is bound: the host's IOMMU, the groups, memlock."""
    results = [
        doctor.check_iommu(sysfs),
        doctor.check_interrupt_remapping(sysfs),
        doctor.check_modules(sysfs),
        doctor.check_kvm(sysfs),
    ]
    if sysfs.is_live:
        found = shutil.which(plan.argv[0])
        results.append(
            CheckResult("QEMU", Status.PASS, found)
            if found
            else CheckResult(
                "QEMU",
                Status.FAIL,
                f"{plan.argv[0]} is not on PATH",
                f"Debian: apt-get install {QEMU_PACKAGE}",
            )
        )
    results.append(plan.confinement.check())
    lock = plan.memlock
    results.append(
        CheckResult(
            "RLIMIT_MEMLOCK",
            Status.PASS if lock.can_raise else Status.FAIL,
            str(lock),
            ""
            if lock.can_raise
            else "run as root, or raise the hard limit: LimitMEMLOCK= in a systemd unit, "
            f"'{doctor.limits_user(sysfs) or 'NAME'} hard memlock unlimited' in "
            "/etc/security/limits.conf",
        )
    )
    if plan.hugepages is not None:
        free = free_hugepages(sysfs)
        mounted = hugepage_mount(sysfs) is not None
        ok = mounted and free >= plan.memory
        results.append(
            CheckResult(
                "hugepages",
                Status.PASS if ok else Status.FAIL,
                f"{size_text(free)} free in hugepages, guest RAM {size_text(plan.memory)}"
                + ("" if mounted else "; no hugetlbfs is mounted"),
                ""
                if ok
                else "reserve them: echo N > /sys/kernel/mm/hugepages/hugepages-2048kB/"
                "nr_hugepages (N = RAM / 2 MiB), and mount hugetlbfs on /dev/hugepages",
            )
        )
    results += _group_checks(plan, sysfs)
    results += [
        doctor.check_reset(d.address, sysfs, "the device keeps its state from one VM to the next")
        for d in plan.devices
    ]
    return results


# -- Running QEMU ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Confirmation:
    """What QMP ``query-pci`` showed of one passed device."""

    device: PassedDevice
    guest: GuestPciDevice | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.guest is not None and not self.problems

    def __str__(self) -> str:
        if self.guest is None:
            return f"{self.device.address}: not in the guest ({'; '.join(self.problems)})"
        head = f"{self.device.address}: guest {self.guest}"
        if self.problems:
            return f"{head}: {'; '.join(self.problems)}"
        bars = ", ".join(f"BAR {b.index} {b.size:#x}" for b in self.guest.bars) or "no BARs"
        return f"{head}, {bars}"

    def to_json(self) -> dict[str, Any]:
        g = self.guest
        return {
            "address": self.device.address,
            "ok": self.ok,
            "guest": None
            if g is None
            else {
                "bus": g.bus,
                "slot": g.slot,
                "function": g.function,
                "ids": g.ids,
                "qdev_id": g.qdev_id,
                "bars": [{"index": b.index, "type": b.kind, "size": b.size} for b in g.bars],
            },
            "problems": list(self.problems),
        }


def confirm(devices: Sequence[PassedDevice], answer: Any) -> tuple[Confirmation, ...]:
    """Match ``query-pci``'s answer against the host's view of each device."""
    seen = {d.qdev_id: d for d in walk_query_pci(answer)}
    out = []
    for dev in devices:
        guest = seen.get(dev.qdev_id)
        if guest is None:
            out.append(Confirmation(dev, None, (f"query-pci has no {dev.qdev_id}",)))
            continue
        problems = []
        if (guest.vendor_id, guest.device_id) != (dev.info.vendor_id, dev.info.device_id):
            problems.append(f"guest sees {guest.ids}, the host has {dev.info.ids}")
        guest_bars = {b.index: b for b in guest.bars}
        for bar in dev.bars:
            got = guest_bars.get(bar.index)
            kind = "io" if bar.kind == "io" else "memory"
            if got is None:
                problems.append(f"BAR {bar.index} ({bar.size:#x} bytes) is missing")
            elif got.size != bar.size or got.kind != kind:
                problems.append(
                    f"BAR {bar.index}: guest {got.kind} {got.size:#x}, host {kind} {bar.size:#x}"
                )
        out.append(Confirmation(dev, guest, tuple(problems)))
    return tuple(out)


def query_devices(
    monitor: Monitor, devices: Sequence[PassedDevice], deadline: float
) -> tuple[Any, bool]:
    """``query-pci``'s answer once it lists every passed device; whether the CPUs ran.

    QEMU lists a bridge's devices only once the bridge has a secondary bus number
    (hw/pci/pci.c, qmp_query_pci_bridge), and with ``-S`` no firmware has numbered the
    root ports yet. Devices on the root bus answer at once; for those below a root
    port the CPUs run (``cont``) until SeaBIOS has numbered the buses, a fraction of a
    second of guest time. Returns the last answer at the deadline, whatever it holds.
    """
    wanted = {d.qdev_id for d in devices}
    answer = monitor.execute("query-pci", timeout=60)
    resumed = False
    while not wanted <= {d.qdev_id for d in walk_query_pci(answer)}:
        if time.monotonic() > deadline:
            break
        if not resumed:
            monitor.execute("cont")
            resumed = True
        time.sleep(0.1)
        answer = monitor.execute("query-pci", timeout=60)
    return answer, resumed


@dataclass(frozen=True)
class QemuProcess:
    """QEMU as the kernel shows it (/proc/PID/status) once QMP answered.

    By then QEMU has dropped root: the drop comes at the end of its start-up
    (os_setup_post), before its main loop serves QMP. ``uids``: real, effective, saved
    and filesystem uid; ``seccomp``: 0 none, 2 a filter (None: unreadable).
    """

    pid: int
    uids: tuple[int, ...] = ()
    seccomp: int | None = None

    def problems(self, jail: Confinement) -> list[str]:
        """How QEMU differs from what its command line asked for."""
        out = []
        if jail.uid is not None and set(self.uids) != {jail.uid}:
            out.append(
                f"QEMU runs with uids {self.uids or 'unknown'}, not only {jail.user} "
                f"({jail.uid}): it did not drop root as -runas/-run-with asked"
            )
        if jail.sandbox and self.seccomp != 2:
            out.append(f"QEMU has seccomp mode {self.seccomp}, not 2: -sandbox is not in force")
        return out

    def __str__(self) -> str:
        who = f"uid {self.uids[1]}" if len(self.uids) > 1 else "an unknown uid"
        if self.uids and self.uids[1] == 0:
            who += " (root)"
        else:
            with contextlib.suppress(KeyError, IndexError):
                who += f" ({pwd.getpwuid(self.uids[1]).pw_name})"
        filtered = "a seccomp filter" if self.seccomp == 2 else "no seccomp filter"
        return f"QEMU (pid {self.pid}) runs as {who} with {filtered}"

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "uids": list(self.uids), "seccomp": self.seccomp}


def read_process(pid: int, proc: Path = Path("/proc")) -> QemuProcess:
    """What /proc/PID/status says of ``pid``'s users and seccomp mode."""
    uids: tuple[int, ...] = ()
    seccomp = None
    with contextlib.suppress(OSError):
        for line in (proc / str(pid) / "status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Uid":
                uids = tuple(int(v) for v in value.split())
            elif key == "Seccomp":
                seccomp = int(value)
    return QemuProcess(pid, uids, seccomp)


@dataclass(frozen=True)
class PassthroughReport:
    """The answer of ``vm qemu --check`` (and of a run): yes or no, with the reasons."""

    checks: tuple[CheckResult, ...]
    confirmations: tuple[Confirmation, ...] = ()
    started: bool = False
    error: str | None = None
    restored: tuple[Restored, ...] = ()
    qemu_exit: int | None = None
    seconds: float = 0.0
    argv: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = ()
    accel: str = "auto"
    process: QemuProcess | None = None
    #: Ctrl-C (SIGINT) ended the run. The terminal sends it to QEMU too, which exits 0 on
    #: it as on a clean shutdown, so only this tells an interrupted run from a finished one.
    interrupted: bool = False

    @property
    def preflight_failed(self) -> bool:
        return any(c.failed for c in self.checks)

    @property
    def ok(self) -> bool:
        return not self.preflight_failed and self.started and self.error is None and self.confirmed

    @property
    def confirmed(self) -> bool:
        """Every device was confirmed over QMP (whatever happened after)."""
        return bool(self.confirmations) and all(c.ok for c in self.confirmations)

    def reasons(self) -> list[str]:
        out = [f"{c.name}: {c.message}" for c in self.checks if c.failed]
        if self.error:
            out.append(self.error)
        if self.interrupted and not self.confirmed:
            out.append("interrupted (Ctrl-C) before QEMU confirmed the devices")
        out += [str(c) for c in self.confirmations if not c.ok]
        return out

    def __str__(self) -> str:
        lines = [str(c) for c in self.checks]
        lines += [f"note: {n}" for n in self.notes]
        if self.preflight_failed:
            lines.append("pre-flight failed: nothing was bound and QEMU was not started")
        lines += [f"QMP {c}" for c in self.confirmations]
        if self.process is not None:
            lines.append(str(self.process))
        lines += [f"restored {r}" for r in self.restored]
        if self.ok and self.interrupted:  # confirmed, then the guest ran until Ctrl-C
            lines.append(
                f"stopped by Ctrl-C after {self.seconds:.1f} s: QEMU had the devices "
                f"(confirmed over QMP) and exited with status {self.qemu_exit}"
            )
        elif self.ok:
            lines.append(f"yes: passthrough works for these devices ({self.seconds:.1f} s)")
        else:
            lines.append("no: " + "; ".join(self.reasons() or ["QEMU gave no answer"]))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reasons": self.reasons(),
            "checks": [c.to_json() for c in self.checks],
            "started": self.started,
            "devices": [c.to_json() for c in self.confirmations],
            "error": self.error,
            "restored": [r.to_json() for r in self.restored],
            "qemu_exit": self.qemu_exit,
            "seconds": round(self.seconds, 2),
            "argv": list(self.argv),
            "accel": self.accel,
            "qemu_process": None if self.process is None else self.process.to_json(),
            "notes": list(self.notes),
            "interrupted": self.interrupted,
        }


class _Stderr:
    """QEMU's stderr: kept (the last lines explain a failed start), echoed when asked."""

    def __init__(self, stream: IO[bytes], echo: bool) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream, echo), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes], echo: bool) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if echo:
                sys.stderr.write(line + "\n")

    def tail(self, wait: float = 2.0) -> str:
        self._thread.join(wait)
        return " / ".join(line for line in self.lines[-6:] if line.strip())


def _raise_memlock(need: int) -> Callable[[], None]:
    def preexec() -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft == resource.RLIM_INFINITY or soft >= need:
            return
        if hard != resource.RLIM_INFINITY and hard < need:
            hard = need  # needs CAP_SYS_RESOURCE; without it the limit stays
        # With CAP_IPC_LOCK vfio_iommu_type1 does not count pinned pages against the
        # limit at all, so a refusal here is no reason to stop QEMU (pre-flight judged).
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (need, hard))

    return preexec


#: sun_path of struct sockaddr_un: 108 bytes, the last one NUL.
UNIX_PATH_MAX = 108


#: The id of the QMP socket's chardev.
QMP_CHARDEV = "pyvfio-qmp"


def qmp_args(path: Path) -> list[str]:
    """QMP served on a UNIX socket at ``path`` (in a private folder under $TMPDIR).

    Not ``-qmp unix:PATH``: there PATH is the implied first option, which QEMU reads as
    a key when it holds a ``=`` before its first comma (get_opt_name_value), and no
    escape exists for that. ``path=`` is a key of its own.
    """
    text = str(path)
    if len(os.fsencode(text)) >= UNIX_PATH_MAX:
        raise ValueError(
            f"the QMP socket path {text} is longer than a UNIX socket allows "
            f"({UNIX_PATH_MAX - 1} bytes): set TMPDIR to a shorter folder"
        )
    where = option_value(text, "the QMP socket path (in TMPDIR)")
    return [
        "-chardev",
        f"socket,id={QMP_CHARDEV},path={where},server=on,wait=off",
        "-mon",
        f"chardev={QMP_CHARDEV},mode=control",
    ]


def _wait_for_socket(proc: subprocess.Popen[bytes], path: Path, deadline: float) -> None:
    while not path.exists():
        if proc.poll() is not None:
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], monitor: Monitor | None) -> int:
    """Ask QEMU to quit over QMP, then SIGTERM, then SIGKILL; its exit status."""
    if proc.poll() is None and monitor is not None:
        with contextlib.suppress(QmpError):
            monitor.execute("quit", timeout=10)
    for signal_it in (None, proc.terminate, proc.kill):
        if signal_it is not None and proc.poll() is None:
            signal_it()
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


@contextlib.contextmanager
def _bound_devices(
    addresses: Sequence[str], sysfs: Sysfs, journal_dir: Path | None
) -> Iterator[list[Restored]]:
    """The devices on vfio-pci for the block (journaled); after it, whatever happened,
    those pyvfio moved go back to their original drivers (devices already on vfio-pci
    stay). The list yielded holds what was given back once the block is over."""
    bplan = bind.plan_bind(addresses, sysfs=sysfs)
    changed = bind.bind_devices(bplan, sysfs=sysfs, journal_dir=journal_dir)
    restored: list[Restored] = []
    try:
        yield restored
    finally:
        if changed:
            restored += bind.restore(
                [a.address for a in changed], sysfs=sysfs, journal_dir=journal_dir
            )


class _Qemu:
    """A QEMU that :func:`run` started: the process, its stderr, its QMP monitor."""

    def __init__(self, proc: subprocess.Popen[bytes], echo_stderr: bool) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self.stderr = _Stderr(proc.stderr, echo=echo_stderr)
        self.monitor: Monitor | None = None

    def connect(self, path: Path, deadline: float) -> Monitor:
        self.monitor = Monitor(
            str(path),
            timeout=max(deadline - time.monotonic(), 1),
            alive=lambda: self.proc.poll() is None,
        )
        return self.monitor

    def exit_error(self) -> str | None:
        """Why QEMU is gone, in its own last words (None: it still runs)."""
        status = self.proc.poll()
        if status is None:
            return None
        error = f"QEMU exited with status {status} before it was confirmed: " + (
            self.stderr.tail() or "no message"
        )
        if status == -signal.SIGSYS:
            error += (
                " (killed by its seccomp filter: a system call it made is denied by "
                "-sandbox, e.g. spawn=deny stops -netdev tap scripts and the bridge "
                "helper; --no-sandbox runs it without the filter)"
            )
        return error

    def stop(self) -> int:
        """Ask QEMU to quit over QMP, then SIGTERM, then SIGKILL; its exit status."""
        return _stop(self.proc, self.monitor)

    def run_on(self, resumed: bool) -> tuple[int, bool]:
        """The guest runs (``cont``, unless its CPUs run already) until QEMU exits, or
        until Ctrl-C stops it; QEMU's exit status, and whether Ctrl-C stopped it."""
        assert self.monitor is not None
        try:
            if not resumed:
                self.monitor.execute("cont")
            return self.proc.wait(), False
        except KeyboardInterrupt:
            return self.stop(), True


@contextlib.contextmanager
def _qemu_process(
    argv: Sequence[str], *, check: bool, memlock: int, echo_stderr: bool
) -> Iterator[_Qemu]:
    """QEMU started with ``argv`` (RLIMIT_MEMLOCK raised to ``memlock`` where it can be);
    after the block its monitor is closed and, if it still runs, it is stopped."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if check else None,
            stdout=subprocess.DEVNULL if check else None,
            stderr=subprocess.PIPE,
            preexec_fn=_raise_memlock(memlock),  # before the stderr thread starts
        )
    except OSError as err:
        raise QemuError(
            f"cannot start {argv[0]}: {err.strerror} (Debian: apt-get install "
            f"{QEMU_PACKAGE}); the devices were given back"
        ) from err
    qemu = _Qemu(proc, echo_stderr)
    try:
        yield qemu
    finally:
        if qemu.monitor is not None:
            qemu.monitor.close()
        if proc.poll() is None:
            _stop(proc, None)


@dataclass(frozen=True)
class _Answer:
    """What QEMU showed before :func:`run` stops it or lets the guest run."""

    started: bool  # QMP answered and QEMU still ran
    confirmations: tuple[Confirmation, ...] = ()
    process: QemuProcess | None = None
    error: str | None = None
    resumed: bool = False  # the CPUs run already (see query_devices)


def _ask(qemu: _Qemu, plan: QemuPlan, qmp_path: Path, deadline: float, timeout: float) -> _Answer:
    """Wait for QMP (until ``deadline``, ``timeout`` after the start), confirm the
    devices over it, and read how QEMU runs."""
    _wait_for_socket(qemu.proc, qmp_path, deadline)
    answer = _Answer(started=False)
    if qemu.proc.poll() is None and qmp_path.exists():
        try:
            monitor = qemu.connect(qmp_path, deadline)
            pci, resumed = query_devices(monitor, plan.devices, deadline)
            process = read_process(qemu.proc.pid)
            problems = "; ".join(process.problems(plan.confinement)) or None
            answer = _Answer(True, confirm(plan.devices, pci), process, problems, resumed)
        except QmpError as err:
            answer = _Answer(True, error=str(err))
    exited = qemu.exit_error()
    if exited is not None:
        return replace(answer, started=False, error=exited)
    if not answer.started:
        return replace(answer, error=f"QEMU did not open its QMP socket in {timeout:.0f} s")
    return answer


def run(
    plan: QemuPlan,
    *,
    check: bool = False,
    timeout: float = 120.0,
    sysfs: Sysfs = LIVE,
    journal_dir: Path | None = None,
    echo_stderr: bool = False,
) -> PassthroughReport:
    """Pre-flight, bind (journaled), start QEMU, confirm over QMP, give the devices back.

    QEMU starts with its CPUs stopped (``-S``): devices are realized (group attached,
    guest RAM mapped for DMA, BARs mapped) before any CPU runs, and the CPUs run only as
    long as the firmware needs to number the root ports (see :func:`query_devices`).
    With ``check`` QEMU quits as soon as the devices are confirmed; otherwise its CPUs
    run on (QMP ``cont``) and this returns when QEMU exits.
    Devices pyvfio moved go back to their original drivers in every case; devices
    already on vfio-pci stay there.
    """
    began = time.monotonic()
    checks = tuple(preflight(plan, sysfs))
    if any(c.failed for c in checks):
        return PassthroughReport(
            checks,
            argv=plan.argv,
            seconds=time.monotonic() - began,
            notes=plan.notes,
            accel=plan.accel,
        )
    lock = plan.memlock
    if not lock.can_raise:  # pre-flight failed above; kept for callers of run() alone
        raise MemlockLimitError(str(lock), limit=lock.hard or 0, requested=lock.need)
    with tempfile.TemporaryDirectory(prefix="pyvfio-vm-", ignore_cleanup_errors=True) as work:
        qmp_path = Path(work) / "qmp.sock"
        # -S: the CPUs wait while QMP confirms the devices (they are realized by then).
        argv = [*plan.argv, *qmp_args(qmp_path), "-S"]  # a refused TMPDIR: nothing bound
        if check:
            argv += ["-nodefaults", "-display", "none"]
        restored: list[Restored] = []
        answer, interrupted = _Answer(started=False), False
        status: int | None = None
        started: list[_Qemu] = []  # the QEMU, once there is one: its status after Ctrl-C
        try:
            with (
                _bound_devices(plan.addresses, sysfs, journal_dir) as restored,
                _qemu_process(
                    argv, check=check, memlock=lock.need, echo_stderr=echo_stderr
                ) as qemu,
            ):
                started.append(qemu)
                answer = _ask(qemu, plan, qmp_path, began + timeout, timeout)
                confirmed = all(c.ok for c in answer.confirmations)
                if check or answer.error is not None or not confirmed:
                    status = qemu.stop()
                else:
                    status, interrupted = qemu.run_on(answer.resumed)
        except KeyboardInterrupt:  # before the run: QEMU stopped, devices back (finally)
            interrupted = True
            status = started[0].proc.returncode if started else None
    return PassthroughReport(
        checks,
        answer.confirmations,
        answer.started,
        answer.error,
        tuple(restored),
        status,
        time.monotonic() - began,
        tuple(argv),
        notes=plan.notes,
        accel=plan.accel,
        process=answer.process,
        interrupted=interrupted,
    )
