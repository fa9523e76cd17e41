"""``pyvfio vm qemu``: a q35 QEMU command line for passed devices, run and checked.

:func:`build` turns PCI addresses into a :class:`QemuPlan` (the argv and what it needs
of the host) and changes nothing. :func:`run` carries it out the way libvirt's
"managed" hostdevs do: pre-flight checks, journaled bind to vfio-pci, QEMU with a QMP
socket, ``query-pci`` to confirm each device is in the guest with its IDs and BARs, and
when QEMU exits the devices go back to their original drivers.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pyvfio.errors import HostError, MemlockLimitError, PyvfioError
from pyvfio.host import bind, doctor
from pyvfio.host.bind import Restored
from pyvfio.host.doctor import CheckResult, Status
from pyvfio.host.snapshot import META
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.vm.layout import PassedDevice, layout
from pyvfio.vm.qmp import GuestPciDevice, Monitor, QmpError, walk_query_pci

QEMU = "qemu-system-x86_64"
MIB = 1 << 20
GIB = 1 << 30

#: What a VM with VFIO devices pins beyond its RAM: libvirt's rule for x86
#: (qemuDomainGetMemLockLimitBytes: guest memory + 1 GiB for BAR and ROM mappings).
MEMLOCK_SLACK = GIB


class QemuError(PyvfioError):
    """QEMU did not start, or died before it answered on QMP; the message has its stderr."""


def parse_size(text: str) -> int:
    """``"4G"``, ``"512M"``, ``"2GiB"`` -> bytes (QEMU's ``-m`` units, binary)."""
    units = {"": MIB, "K": 1 << 10, "M": MIB, "G": GIB, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units and not t[-1:].isdigit() else ""
    try:
        size = int(float(t[: len(t) - len(unit)]) * units[unit])
    except (ValueError, OverflowError):  # OverflowError: "inf"
        raise ValueError(f"{text!r} is not a size like 512M or 4G") from None
    if size < 16 * MIB or size % MIB:
        raise ValueError(f"{text!r}: guest memory is a whole number of MiB, at least 16M")
    return size


def _size(n: int) -> str:
    return f"{n // GIB} GiB" if n % GIB == 0 else f"{n // MIB} MiB"


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
            return "unlimited" if v is None else _size(v)

        text = f"QEMU needs RLIMIT_MEMLOCK >= {_size(self.need)} (guest RAM + 1 GiB); "
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


def _limit(text: str) -> int | None:
    return None if text == "unlimited" else int(text)


def memlock_for(memory: int, sysfs: Sysfs = LIVE) -> Memlock:
    need = memory + MEMLOCK_SLACK
    soft = hard = None
    for line in sysfs.read_lines("proc/self/limits"):
        if line.startswith("Max locked memory"):
            fields = line[26:].split()
            soft, hard = _limit(fields[0]), _limit(fields[1])
    return Memlock(need, soft, hard, _ipc_lock(sysfs))


#: include/uapi/linux/capability.h
CAP_IPC_LOCK = 14


def _ipc_lock(sysfs: Sysfs) -> bool:
    """Whether this process holds CAP_IPC_LOCK (CapEff in /proc/self/status; else root)."""
    for line in sysfs.read_lines("proc/self/status"):
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    if sysfs.is_live:
        return os.geteuid() == 0
    meta = sysfs.read_attr(META)
    return int(json.loads(meta).get("euid", 0)) == 0 if meta else True


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


def hugepage_mount(sysfs: Sysfs = LIVE) -> str | None:
    """Where hugetlbfs is mounted (the first mount; Debian's systemd: /dev/hugepages)."""
    for line in sysfs.read_lines("proc/mounts"):
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "hugetlbfs":
            return parts[1]
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
            "notes": list(self.notes),
        }


def _accel_args(accel: str) -> list[str]:
    if accel == "auto":
        # QEMU tries each -accel in order: KVM where /dev/kvm works, TCG elsewhere.
        return ["-accel", "kvm", "-accel", "tcg"]
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"accel {accel!r}: use kvm, tcg or auto")
    return ["-accel", accel]


def _device_arg(dev: PassedDevice, gpu: GpuOptions) -> str:
    opts = [
        "vfio-pci",
        f"host={dev.address}",
        f"id={dev.qdev_id}",
        f"bus=rp{dev.port}",
        f"addr=00.{dev.function}",
    ]
    if dev.multifunction:
        opts.append("multifunction=on")
    if dev.is_gpu:
        if gpu.x_vga and dev.is_vga:
            opts.append("x-vga=on")
        if gpu.romfile is not None:
            opts.append(f"romfile={gpu.romfile}")
        if not gpu.rombar:
            opts.append("rombar=0")
    return ",".join(opts)


def build(
    addresses: Sequence[str],
    *,
    memory: str = "4G",
    hugepages: bool = False,
    accel: str = "auto",
    gpu: GpuOptions = NO_GPU_OPTIONS,
    extra: Sequence[str] = (),
    qemu: str = QEMU,
    sysfs: Sysfs = LIVE,
) -> QemuPlan:
    """The QEMU command line; reads sysfs, changes nothing. Bad input raises ValueError."""
    devices = layout(addresses, sysfs)
    size = parse_size(memory)
    notes = []
    if gpu.any and not any(d.is_gpu for d in devices):
        raise ValueError(
            "--x-vga, --romfile and --no-rombar apply to GPUs; none of these is a display "
            "controller (PCI class 03)"
        )
    if gpu.x_vga and not any(d.is_vga for d in devices):
        raise ValueError("--x-vga needs a VGA-compatible GPU (PCI class 0300)")
    argv = [qemu, "-machine", "q35", *_accel_args(accel), "-cpu", "max", "-m", f"{size // MIB}M"]
    mount = None
    if hugepages:
        mount = hugepage_mount(sysfs) or "/dev/hugepages"
        # prealloc: pages are taken now, not at the guest's first touch; VFIO pins all of
        # guest RAM at start anyway.
        argv += [
            "-object",
            f"memory-backend-file,id=ram0,size={size // MIB}M,mem-path={mount},prealloc=on",
            "-machine",
            "memory-backend=ram0",
        ]
    if any(d.is_vga and gpu.x_vga for d in devices):
        argv += ["-vga", "none"]
        notes.append("x-vga: the GPU is the guest's VGA; the emulated VGA is off (-vga none)")
    for port in sorted({d.port for d in devices}):
        argv += ["-device", f"pcie-root-port,id=rp{port},bus=pcie.0,chassis={port}"]
    for dev in devices:
        argv += ["-device", _device_arg(dev, gpu)]
        if dev.info.driver not in (None, bind.VFIO_PCI):
            notes.append(f"{dev.address} is on {dev.info.driver}: pyvfio binds it to vfio-pci")
    argv += list(extra)
    memlock = memlock_for(size, sysfs)
    return QemuPlan(tuple(argv), devices, size, mount, memlock, tuple(notes))


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


def _reset_check(dev: PassedDevice, sysfs: Sysfs) -> CheckResult:
    methods = (sysfs.read_attr(f"{sysfs.device_dir(dev.address)}/reset_method") or "").split()
    if methods:
        return CheckResult(f"{dev.address} reset", Status.PASS, " ".join(methods))
    return CheckResult(
        f"{dev.address} reset",
        Status.WARN,
        "the kernel offers no reset method",
        "the device keeps its state from one VM to the next",
    )


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
                "Debian: apt-get install qemu-system-x86",
            )
        )
    lock = plan.memlock
    results.append(
        CheckResult(
            "RLIMIT_MEMLOCK",
            Status.PASS if lock.can_raise else Status.FAIL,
            str(lock),
            ""
            if lock.can_raise
            else "run as root, or raise the hard limit: LimitMEMLOCK= in a systemd unit, "
            "'@USER hard memlock unlimited' in /etc/security/limits.conf",
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
                f"{_size(free)} free in hugepages, guest RAM {_size(plan.memory)}"
                + ("" if mounted else "; no hugetlbfs is mounted"),
                ""
                if ok
                else "reserve them: echo N > /sys/kernel/mm/hugepages/hugepages-2048kB/"
                "nr_hugepages (N = RAM / 2 MiB), and mount hugetlbfs on /dev/hugepages",
            )
        )
    results += _group_checks(plan, sysfs)
    results += [_reset_check(d, sysfs) for d in plan.devices]
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

    @property
    def preflight_failed(self) -> bool:
        return any(c.failed for c in self.checks)

    @property
    def ok(self) -> bool:
        return (
            not self.preflight_failed
            and self.started
            and self.error is None
            and bool(self.confirmations)
            and all(c.ok for c in self.confirmations)
        )

    def reasons(self) -> list[str]:
        out = [f"{c.name}: {c.message}" for c in self.checks if c.failed]
        if self.error:
            out.append(self.error)
        out += [str(c) for c in self.confirmations if not c.ok]
        return out

    def __str__(self) -> str:
        lines = [str(c) for c in self.checks]
        if self.preflight_failed:
            lines.append("pre-flight failed: nothing was bound and QEMU was not started")
        lines += [f"QMP {c}" for c in self.confirmations]
        lines += [f"restored {r}" for r in self.restored]
        if self.ok:
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
        return PassthroughReport(checks, argv=plan.argv, seconds=time.monotonic() - began)
    lock = plan.memlock
    if not lock.can_raise:  # pre-flight failed above; kept for callers of run() alone
        raise MemlockLimitError(str(lock), limit=lock.hard or 0, requested=lock.need)
    bplan = bind.plan_bind(plan.addresses, sysfs=sysfs)
    changed = bind.bind_devices(bplan, sysfs=sysfs, journal_dir=journal_dir)
    workdir = Path(tempfile.mkdtemp(prefix="pyvfio-vm-"))
    qmp_path = workdir / "qmp.sock"
    argv = list(plan.argv)
    # -S: the CPUs wait while QMP confirms the devices (they are realized by then).
    argv += ["-qmp", f"unix:{qmp_path},server=on,wait=off", "-S"]
    if check:
        argv += ["-nodefaults", "-display", "none"]
    confirmations: tuple[Confirmation, ...] = ()
    resumed = False
    error = None
    started = False
    status: int | None = None
    restored: list[Restored] = []
    monitor = None
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL if check else None,
                stdout=subprocess.DEVNULL if check else None,
                stderr=subprocess.PIPE,
                preexec_fn=_raise_memlock(lock.need),  # before the stderr thread starts
            )
        except OSError as err:
            raise QemuError(
                f"cannot start {argv[0]}: {err.strerror} (Debian: apt-get install "
                "qemu-system-x86); the devices were given back"
            ) from err
        assert proc.stderr is not None
        stderr = _Stderr(proc.stderr, echo=echo_stderr)
        try:
            deadline = began + timeout
            _wait_for_socket(proc, qmp_path, deadline)
            if proc.poll() is None and qmp_path.exists():
                started = True
                try:
                    monitor = Monitor(
                        str(qmp_path),
                        timeout=max(deadline - time.monotonic(), 1),
                        alive=lambda: proc.poll() is None,
                    )
                    answer, resumed = query_devices(monitor, plan.devices, deadline)
                    confirmations = confirm(plan.devices, answer)
                except QmpError as err:
                    error = str(err)
            if proc.poll() is not None:
                status = proc.returncode
                error = f"QEMU exited with status {status} before it was confirmed: " + (
                    stderr.tail() or "no message"
                )
                started = False
            elif not started:
                error = f"QEMU did not open its QMP socket in {timeout:.0f} s"
            if check or error is not None or not all(c.ok for c in confirmations):
                status = _stop(proc, monitor)
            else:
                try:
                    assert monitor is not None
                    if not resumed:
                        monitor.execute("cont")
                    status = proc.wait()
                except KeyboardInterrupt:
                    status = _stop(proc, monitor)
        finally:
            if monitor is not None:
                monitor.close()
            if proc.poll() is None:
                status = _stop(proc, None)
    finally:
        with contextlib.suppress(OSError):
            qmp_path.unlink()
        with contextlib.suppress(OSError):
            workdir.rmdir()
        if changed:
            restored = bind.restore(
                [a.address for a in changed], sysfs=sysfs, journal_dir=journal_dir
            )
    return PassthroughReport(
        checks,
        confirmations,
        started,
        error,
        tuple(restored),
        status,
        time.monotonic() - began,
        tuple(argv),
    )
