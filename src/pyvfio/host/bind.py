"""Move a device between its host driver and vfio-pci through sysfs.

Binding uses the per-device ``driver_override`` (kernel 3.16+): it names the one
driver allowed to take that device, so identical cards elsewhere are untouched,
unlike ``new_id`` which claims every device with the same IDs.
"""

from __future__ import annotations

import errno
import subprocess

from pyvfio.errors import HostError
from pyvfio.host.sysfs import LIVE, Sysfs
from pyvfio.pci.address import normalize

VFIO_PCI = "vfio-pci"


def module_loaded(name: str, sysfs: Sysfs = LIVE) -> bool:
    """A module is usable when /sys/module/NAME exists: loaded, or built in."""
    return sysfs.exists(f"sys/module/{name.replace('-', '_')}")


def load_module(name: str, sysfs: Sysfs = LIVE) -> None:
    """``modprobe NAME`` unless it is loaded or built in; HostError with the reason."""
    if module_loaded(name, sysfs):
        return
    try:
        done = subprocess.run(["modprobe", name], capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise HostError(
            f"cannot load {name}: modprobe is missing (Debian: apt-get install kmod)"
        ) from err
    if done.returncode != 0 or not module_loaded(name, sysfs):
        why = done.stderr.strip() or f"modprobe exited with {done.returncode}"
        raise HostError(f"cannot load {name}: {why}; is this kernel built with CONFIG_VFIO_PCI?")


def _write(sysfs: Sysfs, rel: str, value: str, doing: str) -> None:
    try:
        sysfs.write_attr(rel, value)
    except PermissionError as err:
        raise HostError(f"{doing}: permission denied writing /{rel}; run as root") from err
    except OSError as err:
        # drivers_probe and bind answer ENODEV/EINVAL... when no driver accepts the device.
        if err.errno in (errno.ENODEV, errno.EINVAL) and rel.endswith(("/bind", "drivers_probe")):
            return
        raise HostError(f"{doing}: writing /{rel} failed: {err.strerror}") from err


def bind_to(address: str, driver: str | None, sysfs: Sysfs = LIVE) -> str | None:
    """Give ``address`` to ``driver`` (None: no driver); return the driver it had.

    Steps, each a single sysfs write: set driver_override, unbind from the current
    driver, probe. A device already on ``driver`` is left alone (a no-op).
    """
    addr = normalize(address)
    dev = sysfs.device_dir(addr)
    before = sysfs.driver(addr)
    if before == driver:
        return before
    if driver == VFIO_PCI:
        load_module(VFIO_PCI, sysfs)
    _write(sysfs, f"{dev}/driver_override", (driver or "\n"), f"binding {addr}")
    if before is not None:
        _write(
            sysfs, f"sys/bus/pci/drivers/{before}/unbind", addr, f"unbinding {addr} from {before}"
        )
    if driver is not None:
        _write(sysfs, "sys/bus/pci/drivers_probe", addr, f"probing {addr}")
        after = sysfs.driver(addr)
        if after != driver:
            raise HostError(
                f"{addr} did not bind to {driver} (it is on "
                f"{after or 'no driver'}); see dmesg for the driver's reason"
            )
    return before


def bind_vfio(address: str, sysfs: Sysfs = LIVE) -> str | None:
    """Bind ``address`` to vfio-pci; return the driver it had (None: none)."""
    return bind_to(address, VFIO_PCI, sysfs)


def give_back(address: str, original: str | None, sysfs: Sysfs = LIVE) -> None:
    """Return ``address`` to ``original`` (None: leave it driverless) and clear the override."""
    addr = normalize(address)
    dev = sysfs.device_dir(addr)
    current = sysfs.driver(addr)
    _write(sysfs, f"{dev}/driver_override", "\n", f"restoring {addr}")
    if current == original:
        return
    if current is not None:
        _write(
            sysfs, f"sys/bus/pci/drivers/{current}/unbind", addr, f"unbinding {addr} from {current}"
        )
    if original is not None:
        _write(
            sysfs,
            f"sys/bus/pci/drivers/{original}/bind",
            addr,
            f"binding {addr} back to {original}",
        )
        if sysfs.driver(addr) != original:
            raise HostError(
                f"{addr} did not go back to {original}; try "
                f"'echo {addr} > /sys/bus/pci/drivers_probe'"
            )
