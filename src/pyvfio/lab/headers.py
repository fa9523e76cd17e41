"""Find Linux UAPI headers that define everything `pyvfio._uapi` mirrors.

The ABI test compiles the mirrors against ``<linux/vfio.h>``, ``<linux/iommufd.h>`` and
``<linux/pci_regs.h>``.
Debian bookworm's own ``linux-libc-dev`` (6.1) has no ``iommufd.h`` and no vfio device
cdev ioctls, so when the system's headers lack any mirrored name this fetches
``linux-libc-dev`` from bookworm-backports (6.12) with the lab's private apt setup
(`pyvfio.lab.debian`): nothing of the system's apt configuration is changed and nothing
is installed: the package is unpacked with ``dpkg-deb -x`` into
``<cache>/linux-libc-dev_<version>/``, which later calls reuse without touching the
network.

``PYVFIO_KERNEL_HEADERS`` names an include directory to use instead of both.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sysconfig
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pyvfio._uapi import ABI
from pyvfio.lab.debian import DEBIAN_MIRROR, DEBIAN_SUITE, cache_dir, run, updated_apt

HEADERS_ENV: Final = "PYVFIO_KERNEL_HEADERS"
SYSTEM_INCLUDE: Final = Path("/usr/include")
UAPI_HEADERS: Final = ("linux/vfio.h", "linux/iommufd.h", "linux/pci_regs.h")

PACKAGE: Final = "linux-libc-dev"

_APT_TIMEOUT = 600  # seconds; the package is about 3 MB


class KernelHeadersError(RuntimeError):
    """No usable kernel headers: the message says what is missing and how to get it."""


@dataclass(frozen=True)
class KernelHeaders:
    """Include directories to put before the compiler's own, and where they came from."""

    include_dirs: tuple[Path, ...]
    origin: str

    @property
    def cflags(self) -> list[str]:
        """``-I`` options for gcc."""
        return [f"-I{directory}" for directory in self.include_dirs]

    @property
    def linux_version(self) -> str:
        """The kernel version of the headers, from ``<linux/version.h>`` ("6.12.95")."""
        for directory in (*self.include_dirs, SYSTEM_INCLUDE):
            version_h = directory / "linux" / "version.h"
            if version_h.is_file():
                macros = dict(
                    re.findall(r"#define (LINUX_VERSION_\w+) (\d+)", version_h.read_text())
                )
                parts = ("MAJOR", "PATCHLEVEL", "SUBLEVEL")
                if all(f"LINUX_VERSION_{part}" in macros for part in parts):
                    return ".".join(macros[f"LINUX_VERSION_{part}"] for part in parts)
                code = int(macros["LINUX_VERSION_CODE"])
                return f"{code >> 16}.{code >> 8 & 0xFF}.{code & 0xFF}"
        return "unknown"

    def __str__(self) -> str:
        return f"Linux {self.linux_version} UAPI headers from {self.origin}"


def kernel_headers(
    required: Collection[str] | None = None,
    *,
    cache_dir: Path | None = None,
    refresh: bool = False,
) -> KernelHeaders:
    """Headers whose ``vfio.h``, ``iommufd.h`` and ``pci_regs.h`` define every name in ``required``.

    ``required`` defaults to every name `pyvfio._uapi.ABI` mirrors.  Tried in order:
    ``$PYVFIO_KERNEL_HEADERS``, the system's ``/usr/include``, a package already
    unpacked in ``cache_dir``, and (or first, with ``refresh``) a fresh download.
    """
    if required is None:
        required = ABI.names()
    override = os.environ.get(HEADERS_ENV)
    if override:
        headers = _include_tree(Path(override), origin=f"${HEADERS_ENV}")
        missing = _missing_names(headers, required)
        if missing:
            raise KernelHeadersError(
                f"${HEADERS_ENV}={override} lacks {_sample(missing)}; point it at the include "
                f"directory of Linux >= 6.12 UAPI headers, or unset it to fetch them"
            )
        return headers

    system = KernelHeaders((), origin=f"the system ({SYSTEM_INCLUDE})")
    missing = _missing_names(system, required)
    if not missing:
        return system
    why = f"{system} lack {_sample(missing)}"

    cache = cache_dir or default_cache_dir()
    if not refresh:
        for unpacked in _unpacked_packages(cache):
            headers = _include_tree(unpacked / "usr" / "include", origin=_origin(unpacked))
            missing = _missing_names(headers, required)
            if not missing:
                return headers
            why = f"{headers} lack {_sample(missing)}"

    try:
        unpacked = _fetch_package(cache)
    except KernelHeadersError as err:
        raise KernelHeadersError(
            f"{why}, and fetching {PACKAGE} from {DEBIAN_SUITE}: {err}"
        ) from err
    headers = _include_tree(unpacked / "usr" / "include", origin=_origin(unpacked))
    missing = _missing_names(headers, required)
    if missing:
        raise KernelHeadersError(
            f"{headers} lack {_sample(missing)} too: if pyvfio._uapi misspells them, fix it; "
            f"else set ${HEADERS_ENV} to the include directory of newer UAPI headers "
            f"(make headers_install in a kernel tree)"
        )
    return headers


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pyvfio/headers``, ``~/.cache/pyvfio/headers`` without it."""
    return cache_dir("headers")


def _multiarch() -> str:
    # Debian puts <asm/...> under /usr/include/<triplet>; the backports package ships
    # every architecture's, so only the host's may go on the include path.
    return str(sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu")


def _include_tree(include: Path, *, origin: str) -> KernelHeaders:
    arch_include = include / _multiarch()
    dirs = (include, arch_include) if arch_include.is_dir() else (include,)
    return KernelHeaders(dirs, origin=origin)


def _missing_names(headers: KernelHeaders, required: Iterable[str]) -> list[str]:
    """The required names no UAPI header mentions (all of them if the headers are absent)."""
    words: set[str] = set()
    for header in UAPI_HEADERS:
        for directory in (*headers.include_dirs, SYSTEM_INCLUDE):
            path = directory / header
            if path.is_file():
                words.update(re.findall(r"\w+", path.read_text(errors="replace")))
                break
    return sorted(name for name in required if name.removeprefix("struct ") not in words)


def _sample(names: list[str]) -> str:
    shown = ", ".join(names[:5])
    return f"{shown} and {len(names) - 5} more" if len(names) > 5 else shown


_UNPACKED_PREFIX = f"{PACKAGE}_"


def _origin(unpacked: Path) -> str:
    version = unpacked.name.removeprefix(_UNPACKED_PREFIX)
    return f"{PACKAGE} {version} ({DEBIAN_SUITE}, unpacked in {unpacked.parent})"


def _unpacked_packages(cache: Path) -> list[Path]:
    """Packages unpacked earlier, newest first."""
    if not cache.is_dir():
        return []
    unpacked = [path for path in cache.glob(f"{_UNPACKED_PREFIX}*") if path.is_dir()]
    return sorted(unpacked, key=lambda path: _version_key(path.name), reverse=True)


def _version_key(name: str) -> list[tuple[int, str]]:
    # Good enough for linux-libc-dev versions ("6.12.95-1~bpo12+1"): numbers compare
    # as numbers.  A wrong order only picks an older complete copy, never a broken one.
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", name)]


def _fetch_package(cache: Path) -> Path:
    """Download and unpack the suite's linux-libc-dev; returns its unpacked root."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise KernelHeadersError(
                f"{tool} not found; set ${HEADERS_ENV} to the include directory of Linux >= 6.12 "
                f"UAPI headers instead"
            )
    apt = updated_apt(
        cache / "apt", "pyvfio-headers", timeout=_APT_TIMEOUT, error=KernelHeadersError
    )
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as download:
        _run(
            ["apt-get", *apt, "download", f"{PACKAGE}/{DEBIAN_SUITE}"],
            doing=f"apt-get download {PACKAGE}/{DEBIAN_SUITE} from {DEBIAN_MIRROR}",
            cwd=Path(download),
        )
        (deb,) = Path(download).glob(f"{PACKAGE}_*.deb")
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], doing=f"reading {deb.name}").strip()
        unpacked = cache / f"{_UNPACKED_PREFIX}{version}"
        if unpacked.is_dir():
            return unpacked
        # Unpack beside the final place and rename, so a concurrent or interrupted run
        # never sees a half-unpacked tree.
        staging = Path(download) / "root"
        _run(["dpkg-deb", "-x", str(deb), str(staging)], doing=f"unpacking {deb.name}")
        try:
            staging.rename(unpacked)
        except OSError:
            if not unpacked.is_dir():  # else a concurrent run won the race
                raise
    return unpacked


def _run(command: list[str], *, doing: str, cwd: Path | None = None) -> str:
    return run(command, doing=doing, timeout=_APT_TIMEOUT, error=KernelHeadersError, cwd=cwd)
