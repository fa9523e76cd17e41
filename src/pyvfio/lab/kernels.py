"""Which kernel the lab boots.

``stock`` is the distribution's newest installed kernel (Debian: linux-image-amd64)
with its modules; ``iommufd`` is the lab's own build with IOMMUFD (built on first use,
see `pyvfio.lab.kernel_build`); a path names any bzImage.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pyvfio.errors import LabUnavailableError

BOOT = Path("/boot")
MODULES = Path("/lib/modules")


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def stock_kernels() -> list[Path]:
    """Installed kernel images that have their modules, newest first."""
    found = [
        p for p in BOOT.glob("vmlinuz-*") if (MODULES / p.name.removeprefix("vmlinuz-")).is_dir()
    ]
    return sorted(found, key=lambda p: _version_key(p.name), reverse=True)


def resolve_kernel(kernel: str | None) -> Path:
    """The kernel image for ``stock`` (default), ``iommufd`` or a path; explain what is missing.

    ``iommufd`` builds the lab kernel when the cache has no build of the current config
    fragment (minutes; progress goes to stderr).
    """
    if kernel == "iommufd":
        from pyvfio.lab.kernel_build import lab_kernel

        image = lab_kernel().image
    elif kernel in (None, "stock"):
        images = stock_kernels()
        if not images:
            raise LabUnavailableError(
                "no kernel with modules in /boot for the lab guest: install one "
                "(Debian: apt-get install linux-image-amd64)"
            )
        image = images[0]
    else:
        image = Path(kernel)
        if not image.is_file():
            raise LabUnavailableError(
                f"lab kernel {kernel!r} does not exist: give a bzImage path, 'stock' or 'iommufd'"
            )
    if not os.access(image, os.R_OK):
        raise LabUnavailableError(
            f"cannot read {image}: run as root, or make it readable (sudo chmod a+r {image})"
        )
    return image
