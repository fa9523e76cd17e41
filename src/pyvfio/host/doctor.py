"""``pyvfio doctor``: is this host ready for VFIO, and if not, what to change.

Each check returns a :class:`CheckResult`: PASS, WARN or FAIL, what was found, and a
hint saying what to do. The checks read only through :class:`~pyvfio.host.sysfs.Sysfs`
(and the kernel log a snapshot carries), so a recorded host gets the same verdicts.
"""

from __future__ import annotations

import enum
import os
import pwd
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyvfio._limits import memlock_limits
from pyvfio._sizes import size_text
from pyvfio.host import bind, details, inventory, iommus, kcmdline, usage
from pyvfio.host.grant import MemlockAdvice
from pyvfio.host.snapshot import device_nodes, euid_of, kernel_log
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.noiommu import (
    MODE_PARAM,
    UNSAFE_NOIOMMU,
    is_noiommu_group,
    noiommu_groups,
    noiommu_mode,
)
from pyvfio.pci.address import normalize


class Status(enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    """One line of the doctor's report."""

    name: str
    status: Status
    message: str
    hint: str = ""

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL

    def __str__(self) -> str:
        text = f"{self.status.value} {self.name}: {self.message}"
        return text + (f"\n     hint: {self.hint}" if self.hint else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "hint": self.hint,
        }


# Intel VT-d Extended Capability Register, bit 3: Interrupt Remapping support.
ECAP_IR = 1 << 3

GRUB_HINT = (
    "(Debian/Ubuntu: GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub; "
    "Fedora: grubby --update-kernel=ALL --args=...) and reboot"
)


def _cpu(sysfs: Sysfs) -> tuple[str, set[str]]:
    vendor, flags = "", set[str]()
    for line in sysfs.read_lines("proc/cpuinfo"):
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return vendor, flags


def _cmdline(sysfs: Sysfs) -> list[str]:
    return kcmdline.split(sysfs.read_attr("proc/cmdline") or "")


def _iommu_option(sysfs: Sysfs) -> str:
    """What to add to the command line (:func:`pyvfio.host.kcmdline.iommu_options`)."""
    return " ".join(kcmdline.iommu_options(kcmdline.is_amd(sysfs)))


def iommu_units(sysfs: Sysfs) -> list[str]:
    return sysfs.listdir("sys/class/iommu")


def iommu_active(sysfs: Sysfs) -> bool:
    return bool(iommu_units(sysfs)) and bool(sysfs.listdir("sys/kernel/iommu_groups"))


def check_cpu(sysfs: Sysfs) -> CheckResult:
    vendor, flags = _cpu(sysfs)
    found = sorted(flags & {"vmx", "svm"})
    if found:
        return CheckResult("CPU virtualisation", Status.PASS, f"{vendor}: {', '.join(found)}")
    return CheckResult(
        "CPU virtualisation",
        Status.WARN,
        f"{vendor or 'CPU'} shows neither vmx nor svm",
        "only VMs need it (userspace drivers do not): enable VT-x/AMD-V in the firmware",
    )


def check_kvm(sysfs: Sysfs) -> CheckResult:
    if "dev/kvm" in device_nodes(sysfs):
        return CheckResult("/dev/kvm", Status.PASS, "present")
    return CheckResult(
        "/dev/kvm",
        Status.WARN,
        "missing",
        "only VMs need it: modprobe kvm_intel (or kvm_amd) after enabling virtualisation",
    )


def check_acpi(sysfs: Sysfs) -> CheckResult:
    tables = iommus.firmware_tables(sysfs)
    if tables:
        shown = ", ".join(f"{t} ({iommus.LABELS[iommus.ACPI_TABLES[t]]})" for t in tables)
        return CheckResult("ACPI IOMMU table", Status.PASS, f"{shown} present")
    return CheckResult(
        "ACPI IOMMU table",
        Status.FAIL,
        "neither DMAR (Intel VT-d), IVRS (AMD-Vi) nor VIOT (virtio-iommu) is present: "
        "the firmware offers no IOMMU",
        "enable VT-d / AMD-Vi (often 'IOMMU' or 'SVM/VT-d') in the firmware setup; in a VM, "
        "give it a virtual IOMMU (QEMU: -device intel-iommu,intremap=on with "
        "-machine q35,kernel-irqchip=split)",
    )


def _enable_hint(sysfs: Sysfs) -> str:
    option = _iommu_option(sysfs)
    if not iommus.firmware_tables(sysfs):
        return check_acpi(sysfs).hint
    return f"add {option} to the kernel command line {GRUB_HINT}"


def check_iommu(sysfs: Sysfs) -> CheckResult:
    units = iommu_units(sysfs)
    groups = sysfs.listdir("sys/kernel/iommu_groups")
    if units and groups:
        return CheckResult(
            "IOMMU active",
            Status.PASS,
            f"{len(units)} unit(s) ({', '.join(units[:4])}), {len(groups)} IOMMU groups",
        )
    return CheckResult(
        "IOMMU active",
        Status.FAIL,
        "no IOMMU is active (/sys/class/iommu is empty, no IOMMU groups)",
        _enable_hint(sysfs),
    )


_CMDLINE_KEYS = ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough", "iommu.strict")


def _vtd_default_on(sysfs: Sysfs) -> str | None:
    """The kernel config option that turns VT-d on without intel_iommu=on, if set."""
    release = sysfs.read_attr("proc/sys/kernel/osrelease") or ""
    for line in sysfs.read_lines(f"boot/config-{release}"):
        if line.startswith("CONFIG_INTEL_IOMMU_DEFAULT_ON") and line.endswith("=y"):
            return line
    return None


def check_cmdline(sysfs: Sysfs) -> CheckResult:
    args = _cmdline(sysfs)
    mine = [a for a in args if a.split("=", 1)[0] in _CMDLINE_KEYS]
    acs_override = [a for a in args if a.startswith("pcie_acs_override")]
    option = _iommu_option(sysfs)
    shown = " ".join(mine) or "no IOMMU options"
    review = kcmdline.review(args, kcmdline.is_amd(sysfs))
    if review.off is not None:
        return CheckResult(
            "kernel command line",
            Status.FAIL,
            f"{shown}: the IOMMU is switched off",
            f"remove {review.off} (add {option}) {GRUB_HINT}",
        )
    if acs_override:
        return CheckResult(
            "kernel command line",
            Status.WARN,
            f"{shown}; {acs_override[0]} fakes ACS isolation",
            "devices in a group split by pcie_acs_override can still reach each other's DMA",
        )
    if iommu_active(sysfs):
        default = _vtd_default_on(sysfs)
        if not mine and default:
            shown += f" (this kernel turns VT-d on by default: {default})"
        wants_pt = "iommu=pt" in review.add
        extra = "; iommu=pt spares host devices the translation" if wants_pt else ""
        return CheckResult("kernel command line", Status.PASS, shown + extra)
    if kcmdline.is_amd(sysfs):
        return CheckResult(
            "kernel command line",
            Status.PASS,
            f"{shown}: nothing here keeps AMD-Vi off (it follows the firmware setting)",
        )
    return CheckResult(
        "kernel command line",
        Status.FAIL,
        f"{shown}: the IOMMU stays off",
        f"add {option} {GRUB_HINT}",
    )


def check_interrupt_remapping(sysfs: Sysfs) -> CheckResult:
    name = "interrupt remapping"
    if not iommu_active(sysfs):
        return CheckResult(
            name,
            Status.FAIL,
            "not available for VFIO: it needs an active IOMMU, and vfio_iommu_type1 refuses "
            "to attach a group without it",
            _enable_hint(sysfs),
        )
    log = kernel_log(sysfs)
    unsafe = sysfs.read_attr("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")
    kinds = {u.kind for u in iommus.units(sysfs)}
    if kinds == {"virtio"}:
        return _virtio_interrupts(sysfs)
    # VT-d: "IRQ remapping was disabled"; AMD-Vi: "Disabling interrupt remapping" when the
    # IVRS lacks the IOAPIC entries (QEMU's amd-iommu with intremap=off).
    disabled = (
        r"IRQ remapping was disabled|[Ii]nterrupt remapping.*disabled|Disabling interrupt remapping"
    )
    if re.search(disabled, log):
        return CheckResult(
            name,
            Status.FAIL,
            "the kernel log says it is disabled",
            "remove intremap=off / nointremap from the kernel command line; on old firmware "
            "update it (vfio_iommu_type1.allow_unsafe_interrupts=1 works but is unsafe)",
        )
    ecaps = []
    for unit in iommu_units(sysfs):
        ecap = sysfs.read_int(f"sys/class/iommu/{unit}/intel-iommu/ecap", 16)
        if ecap is not None:
            ecaps.append((unit, bool(ecap & ECAP_IR)))
    if ecaps and not all(ok for _, ok in ecaps):
        lacking = ", ".join(u for u, ok in ecaps if not ok)
        return CheckResult(
            name,
            Status.FAIL,
            f"{lacking} cannot remap interrupts (ECAP.IR is 0)",
            "vfio_iommu_type1 refuses type1 attach without it; "
            "vfio_iommu_type1.allow_unsafe_interrupts=1 works but is unsafe"
            + (" (it is set now)" if unsafe == "Y" else ""),
        )
    enabled = re.search(r"Enabled IRQ remapping|Interrupt remapping enabled", log)
    if ecaps:
        how = "ECAP.IR set on " + ", ".join(u for u, _ in ecaps)
        return CheckResult(name, Status.PASS, how + ("; enabled (kernel log)" if enabled else ""))
    if enabled:
        return CheckResult(name, Status.PASS, "enabled (kernel log)")
    return CheckResult(
        name,
        Status.WARN,
        "cannot tell: no capability registers and no kernel log line (run as root for dmesg)",
        "if attaching a group fails with EPERM, check 'dmesg | grep -i remapping'",
    )


#: The module parameters that let VFIO take a group whose MSI the IOMMU cannot isolate.
UNSAFE_INTERRUPTS = (
    "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts",
    "sys/module/iommufd/parameters/allow_unsafe_interrupts",
)


def _virtio_interrupts(sysfs: Sysfs) -> CheckResult:
    """virtio-iommu never remaps interrupts: type1 and iommufd both refuse its groups
    (EPERM) unless their allow_unsafe_interrupts parameter is set."""
    name = "interrupt remapping"
    allowed = [p.split("/")[2] for p in UNSAFE_INTERRUPTS if sysfs.read_attr(p) in ("Y", "1")]
    what = "virtio-iommu does not remap interrupts: a device's DMA can raise any MSI"
    if allowed:
        return CheckResult(
            name,
            Status.WARN,
            f"{what}; VFIO accepts it because {', '.join(allowed)}.allow_unsafe_interrupts is set",
            "fine for a test VM; a guest that must contain its devices needs an IOMMU "
            "that remaps interrupts (QEMU: intel-iommu or amd-iommu with intremap=on)",
        )
    return CheckResult(
        name,
        Status.FAIL,
        f"{what}, so vfio_iommu_type1 and iommufd refuse its groups (EPERM)",
        "accept the risk with vfio_iommu_type1.allow_unsafe_interrupts=1 and "
        "iommufd.allow_unsafe_interrupts=1 on the kernel command line (or echo Y > "
        "/sys/module/<module>/parameters/allow_unsafe_interrupts), or give the VM an IOMMU "
        "that remaps interrupts (QEMU: intel-iommu or amd-iommu with intremap=on)",
    )


def check_iommu_driver(sysfs: Sysfs) -> CheckResult:
    """Which IOMMU translates DMA here, with what its driver said and the options it reads."""
    name = "IOMMU driver"
    found = iommus.units(sysfs)
    if not found:
        tables = iommus.firmware_tables(sysfs)
        if "VIOT" in tables and not ({"DMAR", "IVRS"} & set(tables)):
            return CheckResult(
                name,
                Status.FAIL,
                "the firmware describes a virtio-iommu (ACPI VIOT) but no driver took it",
                "use a kernel with CONFIG_VIRTIO_IOMMU and CONFIG_ACPI_VIOT (Debian's 6.1 "
                "has neither; pyvfio's lab kernel has both)",
            )
        return CheckResult(name, Status.FAIL, "none is active", _enable_hint(sysfs))
    kinds = sorted({u.kind for u in found})
    shown = ", ".join(str(u) for u in found[:4]) + (" ..." if len(found) > 4 else "")
    args = _cmdline(sysfs)
    if "virtio" in kinds:
        return CheckResult(
            name,
            Status.WARN,
            f"{shown}: translates DMA and gives IOMMU groups; lacks "
            + ", ".join(iommus.VIRTIO_LACKS),
            "VFIO needs allow_unsafe_interrupts on it (see interrupt remapping); "
            "pyvfio's type1 and iommufd backends both work once it is set",
        )
    notes = [
        a for a in args if a.split("=", 1)[0] in ("amd_iommu", "amd_iommu_intr", "iommu.strict")
    ]
    if "amd" in kinds:
        said = [
            line
            for line in iommus.amd_log(kernel_log(sysfs))
            if line.startswith(("Interrupt remapping", "Using strict mode", "Extended features"))
            or "Disabling interrupt remapping" in line
        ]
        notes += said
    detail = f"; {'; '.join(notes)}" if notes else ""
    return CheckResult(name, Status.PASS, shown + detail)


def check_modules(sysfs: Sysfs) -> CheckResult:
    loaded = [m for m in bind.VFIO_MODULES if bind.module_loaded(m, sysfs)]
    missing = [m for m in bind.VFIO_MODULES if not bind.module_available(m, sysfs)]
    if missing:
        return CheckResult(
            "VFIO modules",
            Status.FAIL,
            f"not in this kernel: {', '.join(missing)}",
            "use a kernel built with CONFIG_VFIO, CONFIG_VFIO_PCI, CONFIG_VFIO_IOMMU_TYPE1",
        )
    idle = [m for m in bind.VFIO_MODULES if m not in loaded]
    if idle:
        return CheckResult(
            "VFIO modules",
            Status.PASS,
            f"available; not loaded yet: {', '.join(idle)} (pyvfio bind loads them)",
        )
    return CheckResult("VFIO modules", Status.PASS, f"{', '.join(bind.VFIO_MODULES)} loaded")


def check_dev_vfio(sysfs: Sysfs) -> CheckResult:
    nodes = {k: v for k, v in device_nodes(sysfs).items() if k.startswith("dev/vfio/")}
    if "dev/vfio/vfio" not in nodes:
        return CheckResult(
            "/dev/vfio",
            Status.WARN,
            "/dev/vfio/vfio is missing",
            "it appears when vfio is loaded (modprobe vfio-pci, or pyvfio bind)",
        )
    groups = {k: v for k, v in nodes.items() if k.removeprefix("dev/vfio/").isdigit()}
    closed = [
        k.removeprefix("dev/vfio/")
        for k, v in groups.items()
        if v["uid"] == 0 and not v["mode"] & (stat.S_IRWXG | stat.S_IRWXO)
    ]
    text = f"container node present, {len(groups)} group node(s)"
    if closed and euid_of(sysfs) != 0:
        return CheckResult(
            "/dev/vfio",
            Status.WARN,
            f"{text}; only root may open group(s) {', '.join(sorted(closed))}",
            "as root, give your user a device: pyvfio grant BDF --user $USER",
        )
    who = "root only" if closed else "as set by their modes"
    return CheckResult("/dev/vfio", Status.PASS, f"{text}; opened by {who}")


def check_backends(sysfs: Sysfs) -> CheckResult:
    """Which of pyvfio's IOMMU backends this kernel offers (``Iommu(backend=...)``)."""
    nodes = device_nodes(sysfs)
    offered = []
    provider = iommus.vfio_container_provider(sysfs, nodes, kernel_log(sysfs))
    if provider == "iommufd":
        # The kernel selftests' iommufd_compat_type1v2 mode: the type1 ioctls, served by
        # iommufd (CONFIG_IOMMUFD_VFIO_CONTAINER); vfio_iommu_type1 is not in this kernel.
        offered.append(
            "type1 on iommufd's compatibility container (/dev/vfio/vfio served by iommufd, "
            "CONFIG_IOMMUFD_VFIO_CONTAINER; no vfio_iommu_type1) + /dev/vfio/N"
        )
    elif "dev/vfio/vfio" in nodes or bind.module_available("vfio_iommu_type1", sysfs):
        offered.append("type1 (/dev/vfio/vfio: VFIO's container, vfio_iommu_type1) + /dev/vfio/N")
    if "dev/iommu" in nodes:
        offered.append("iommufd (/dev/iommu + /dev/vfio/devices/vfioN)")
    if not offered:
        return CheckResult(
            "VFIO backends",
            Status.FAIL,
            "neither type1 nor iommufd is offered by this kernel",
            "use a kernel with CONFIG_VFIO_IOMMU_TYPE1 or CONFIG_IOMMUFD + CONFIG_VFIO_DEVICE_CDEV",
        )
    return CheckResult("VFIO backends", Status.PASS, "; ".join(offered))


def check_noiommu(sysfs: Sysfs) -> CheckResult:
    """VFIO's unsafe no-IOMMU mode: devices without an IOMMU, their DMA unconfined."""
    mode = noiommu_mode(sysfs)
    if mode is None:
        # The same words live and from a snapshot: a replay must answer as the host did.
        return CheckResult("no-IOMMU mode", Status.PASS, "not in this kernel (CONFIG_VFIO_NOIOMMU)")
    if not mode:
        return CheckResult("no-IOMMU mode", Status.PASS, "off")
    groups = noiommu_groups(sysfs)
    held = "; ".join(f"group {g}: {', '.join(sysfs.group_devices(g))}" for g in groups)
    return CheckResult(
        "no-IOMMU mode",
        Status.WARN,
        "VFIO's UNSAFE no-IOMMU mode is on: vfio-pci takes devices no IOMMU confines, "
        f"whose DMA reaches all memory ({held or 'no such device bound yet'})",
        f"turn it off: echo N > /{MODE_PARAM} (and drop vfio.enable_unsafe_noiommu_mode=1 "
        f"from the command line or modprobe.d); pyvfio opens such devices only with "
        f"backend={UNSAFE_NOIOMMU!r}",
    )


def memlock_limit(sysfs: Sysfs) -> int | None:
    """The soft RLIMIT_MEMLOCK in bytes (None: unlimited), from /proc/self/limits."""
    limits = memlock_limits(sysfs.read_lines("proc/self/limits"))
    return None if limits is None else limits[0]


def check_memlock(sysfs: Sysfs, need: int) -> CheckResult:
    limit = memlock_limit(sysfs)
    if euid_of(sysfs) == 0:
        shown = "unlimited" if limit is None else size_text(limit)
        return CheckResult(
            "RLIMIT_MEMLOCK", Status.PASS, f"{shown}, but root pins without limit (CAP_IPC_LOCK)"
        )
    if limit is None or limit >= need:
        shown = "unlimited" if limit is None else size_text(limit)
        return CheckResult("RLIMIT_MEMLOCK", Status.PASS, f"{shown}, enough for {size_text(need)}")
    name = limits_user(sysfs)
    soft, hard = MemlockAdvice(name or "NAME", need, None, None).limits_lines
    whom = "" if name else f" (NAME: the name of uid {euid_of(sysfs)} on that host)"
    return CheckResult(
        "RLIMIT_MEMLOCK",
        Status.FAIL,
        f"{size_text(limit)}: less than the {size_text(need)} to pin",
        f"raise it: 'ulimit -l unlimited' in a root shell, LimitMEMLOCK={need} in a systemd "
        f"unit, or '{soft}' and '{hard}' (KiB) in /etc/security/limits.conf{whom}, then "
        "log in again",
    )


def limits_user(sysfs: Sysfs) -> str | None:
    """The user whose limits.conf lines doctor's memlock hint writes: the one behind sudo
    (``SUDO_USER``), else whoever runs pyvfio (the real uid's name); None for a snapshot,
    whose user names are another host's."""
    if not sysfs.is_live:
        return None
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != "root":
        return sudo_user
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (a container): limits.conf cannot name it
        return None


def check_hugepages(sysfs: Sysfs) -> CheckResult:
    sizes = {}
    for size in sysfs.listdir("sys/kernel/mm/hugepages"):
        count = sysfs.read_int(f"sys/kernel/mm/hugepages/{size}/nr_hugepages") or 0
        if count:
            sizes[size.removeprefix("hugepages-")] = count
    if sizes:
        text = ", ".join(f"{n} x {s}" for s, n in sizes.items())
        return CheckResult("hugepages", Status.PASS, f"reserved: {text}")
    return CheckResult(
        "hugepages",
        Status.PASS,
        "none reserved (optional: a VM's RAM on hugepages maps faster through the IOMMU; "
        "echo N > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages)",
    )


def check_boot_framebuffer(sysfs: Sysfs) -> CheckResult:
    held = []
    for info in inventory.devices(sysfs):
        if info.class_code >> 16 == 0x03:
            for user in usage.boot_framebuffer_users(info.address, sysfs):
                held.append(f"{info.address}: {user}")
    if held:
        return CheckResult(
            "boot framebuffer",
            Status.WARN,
            "; ".join(held),
            "vfio-pci cannot claim that BAR while it is held: boot with video=efifb:off "
            "(kernel >= 5.15: initcall_blacklist=sysfb_init) for a GPU you pass through",
        )
    return CheckResult("boot framebuffer", Status.PASS, "no firmware framebuffer on a GPU BAR")


def check_reset(
    address: str,
    sysfs: Sysfs,
    hint: str = "the device keeps its state between users; a VM may need a host reboot "
    "to get it clean (pyvfio show lists what the capabilities allow)",
) -> CheckResult:
    """PASS with the resets the kernel offers for the device; WARN (``hint``) for none."""
    methods = details.reset_methods(address, sysfs)
    if methods:
        return CheckResult(f"{address} reset", Status.PASS, " ".join(methods))
    return CheckResult(f"{address} reset", Status.WARN, "the kernel offers no reset method", hint)


def device_checks(address: str, sysfs: Sysfs) -> list[CheckResult]:
    addr = normalize(address)
    sysfs.device_dir(addr)
    out = []
    group = inventory.group_of(addr, sysfs)
    if group is None:
        out.append(
            CheckResult(
                f"{addr} group",
                Status.FAIL,
                "no IOMMU group",
                _enable_hint(sysfs) if not iommu_active(sysfs) else "",
            )
        )
    elif is_noiommu_group(group.number, sysfs):
        out.append(
            CheckResult(
                f"{addr} group",
                Status.WARN,
                f"group {group.number} is a VFIO no-IOMMU group: nothing confines its DMA",
                f"pyvfio opens it only with backend={UNSAFE_NOIOMMU!r}; give the machine an "
                "IOMMU instead (pyvfio doctor's IOMMU checks)",
            )
        )
    elif group.viable:
        out.append(CheckResult(f"{addr} group", Status.PASS, f"group {group.number} is viable"))
    elif [d.address for d in group.blockers] == [addr]:  # only the device itself is in the way
        driver = group.blockers[0].driver
        out.append(
            CheckResult(
                f"{addr} group",
                Status.FAIL,
                f"{addr} is not bound to vfio-pci yet: it is on {driver} "
                + (
                    f"(alone in group {group.number})"
                    if len(group.devices) == 1
                    else f"(the rest of group {group.number} is ready)"
                ),
                f"bind it: pyvfio bind {addr}",
            )
        )
    else:
        out.append(
            CheckResult(
                f"{addr} group",
                Status.FAIL,
                f"group {group.number} {group.verdict}",
                f"bind the whole group: pyvfio bind --group {addr}",
            )
        )
    out.append(check_reset(addr, sysfs))
    users = usage.device_users(addr, sysfs)
    if users:
        out.append(
            CheckResult(
                f"{addr} in use",
                Status.FAIL,
                "; ".join(users),
                "the host needs it: pass through another device, or stop that use first",
            )
        )
    else:
        out.append(CheckResult(f"{addr} in use", Status.PASS, "not used by the host"))
    return out


HOST_CHECKS: tuple[Callable[[Sysfs], CheckResult], ...] = (
    check_cpu,
    check_kvm,
    check_acpi,
    check_iommu,
    check_iommu_driver,
    check_cmdline,
    check_interrupt_remapping,
    check_modules,
    check_dev_vfio,
    check_backends,
    check_hugepages,
    check_boot_framebuffer,
    check_noiommu,
)


def run(
    addresses: Sequence[str] = (),
    *,
    memlock_need: int = 64 << 20,
    sysfs: Sysfs = LIVE,
) -> list[CheckResult]:
    """Every host check, then the per-device checks for ``addresses``."""
    for addr in addresses:
        sysfs.device_dir(normalize(addr))  # bad input before any output
    results = [check(sysfs) for check in HOST_CHECKS]
    results.insert(HOST_CHECKS.index(check_backends) + 1, check_memlock(sysfs, memlock_need))
    for addr in addresses:
        results += device_checks(addr, sysfs)
    return results
