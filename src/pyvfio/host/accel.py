"""Whether KVM really works on this host, for the lab and for ``vm qemu --check``.

``/dev/kvm`` existing proves little: on some hosts QEMU aborts as the vCPU starts
("failed to set MSR 0x10a") or hangs, after ``-accel kvm`` initialised fine, so QEMU's
own fallback (``-accel kvm -accel tcg``) never kicks in. The probe boots a 64 KiB
firmware of its own whose reset vector writes to QEMU's ``isa-debug-exit`` port: a
working accelerator makes QEMU exit with status 3 within milliseconds; anything else
(abort, error, no exit within the timeout) means it does not work.
"""

from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from pathlib import Path

#: The QEMU binary pyvfio runs (the lab, ``vm qemu``, this probe), and its Debian package.
QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
PROBE_TIMEOUT = 10.0

# mov al, 1; out 0xf4, al; hlt; jmp $-1 -- at the reset vector (offset 0xfff0).
_RESET_CODE = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])
_DEBUG_EXIT_OK = (1 << 1) | 1


def _probe_firmware() -> bytes:
    rom = bytearray(64 << 10)
    rom[0xFFF0 : 0xFFF0 + len(_RESET_CODE)] = _RESET_CODE
    return bytes(rom)


def probe(accel: str, timeout: float = PROBE_TIMEOUT, qemu: str = QEMU) -> tuple[bool, str]:
    """Start QEMU with ``accel`` on the probe firmware; (works, why not)."""
    cpu = "host" if accel == "kvm" else "max"
    with tempfile.NamedTemporaryFile(prefix="pyvfio-probe-", suffix=".rom") as rom:
        rom.write(_probe_firmware())
        rom.flush()
        argv = [
            qemu,
            "-accel",
            accel,
            "-machine",
            "q35",
            "-cpu",
            cpu,
            "-display",
            "none",
            "-nodefaults",
            "-no-user-config",
            "-bios",
            rom.name,
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            return False, f"QEMU with {accel} did not start within {timeout:.0f} s (hang)"
        except FileNotFoundError:
            return False, f"{qemu} is missing"
    if done.returncode == _DEBUG_EXIT_OK:
        return True, ""
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return False, f"QEMU with {accel} exited with {done.returncode}: {last}"


@functools.cache
def kvm_usable(qemu: str = QEMU) -> tuple[bool, str]:
    """Whether KVM works here, and why not (probed once per process)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        reason = "no /dev/kvm" if not Path("/dev/kvm").exists() else "/dev/kvm not accessible"
        return False, reason
    return probe("kvm", qemu=qemu)
