"""What the kernel lets a process pin for DMA: RLIMIT_MEMLOCK and CAP_IPC_LOCK.

vfio_iommu_type1 charges pinned pages to the process (``locked_vm``) and iommufd to
the user, against RLIMIT_MEMLOCK, unless the process holds CAP_IPC_LOCK. Both are read
here from the lines of ``/proc/PID/limits`` and ``/proc/PID/status`` (the caller reads
them: the live process, or the copies a snapshot recorded), and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable

#: include/uapi/linux/capability.h
CAP_IPC_LOCK = 14

#: The row of /proc/PID/limits for RLIMIT_MEMLOCK (fs/proc/base.c, lnames).
MEMLOCK_ROW = "Max locked memory"


def _limit(text: str) -> int | None:
    return None if text == "unlimited" else int(text)


def memlock_limits(limits: Iterable[str]) -> tuple[int | None, int | None] | None:
    """The soft and hard RLIMIT_MEMLOCK in bytes (None: unlimited), from the lines of
    /proc/PID/limits; None when they have no such row (the file was not readable)."""
    for line in limits:
        if line.startswith(MEMLOCK_ROW):
            soft, hard = line[len(MEMLOCK_ROW) :].split()[:2]
            return _limit(soft), _limit(hard)
    return None


def holds_cap_ipc_lock(status: Iterable[str], euid: int) -> bool:
    """Whether pinning is exempt from RLIMIT_MEMLOCK: CAP_IPC_LOCK in CapEff of the
    lines of /proc/PID/status; where they have no CapEff, whether ``euid`` is root."""
    for line in status:
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    return euid == 0


def memlock_kib(size: int) -> int:
    """``size`` bytes as ``ulimit -l`` and limits.conf count memlock: KiB, rounded up."""
    return (size + 1023) // 1024
