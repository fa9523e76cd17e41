"""Debian's archive as the lab fetches from it, through an apt setup of its own.

The lab kernel's source (`pyvfio.lab.kernel_build`) and the ABI test's UAPI headers
(`pyvfio.lab.headers`) come from bookworm-backports with a private apt setup: its own
sources list, package lists and archive cache under pyvfio's cache folder
(:func:`cache_dir`). Nothing of the system's apt configuration changes and nothing is
installed. The vfio-user QEMU (`pyvfio.lab.sid_qemu`) comes from sid, by debootstrap,
verified with the same keyring.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

DEBIAN_MIRROR: Final = "http://deb.debian.org/debian"
DEBIAN_SUITE: Final = "bookworm-backports"
# Debian's own sources (/etc/apt/sources.list.d/debian.sources) trust this keyring.
DEBIAN_KEYRING: Final = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

#: Makes the error a failed step raises, from its message.
Failure = Callable[[str], Exception]


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/pyvfio/NAME``, ``~/.cache/pyvfio/NAME`` without it."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyvfio" / name


def run(
    command: list[str], *, doing: str, timeout: float, error: Failure, cwd: Path | None = None
) -> str:
    """``command``'s output; ``error`` (naming ``doing`` and the last lines it wrote)
    when it fails, is missing or outlasts ``timeout`` seconds."""
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise error(f"{doing} took over {timeout:.0f} s") from err
    except FileNotFoundError as err:
        raise error(f"{doing}: {command[0]} is missing") from err
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip().splitlines()[-10:]
        raise error(f"{doing} failed (exit {done.returncode}):\n" + "\n".join(output))
    return done.stdout


def private_apt(apt_dir: Path, name: str) -> list[str]:
    """apt options for a setup of its own in ``apt_dir``, knowing only the suite's sources.

    The sources stanza (``<name>.sources``) is the one of Debian's ``debian.sources``;
    lists and downloaded archives stay in ``apt_dir``.
    """
    sources_dir = apt_dir / "sources.list.d"
    for directory in (
        sources_dir,
        apt_dir / "lists" / "partial",
        apt_dir / "cache" / "archives" / "partial",
    ):
        directory.mkdir(parents=True, exist_ok=True)
    (sources_dir / f"{name}.sources").write_text(
        f"Types: deb\n"
        f"URIs: {DEBIAN_MIRROR}\n"
        f"Suites: {DEBIAN_SUITE}\n"
        f"Components: main\n"
        f"Signed-By: {DEBIAN_KEYRING}\n"
    )
    options = [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={sources_dir}",
        "-o", f"Dir::State::Lists={apt_dir / 'lists'}",
        "-o", f"Dir::Cache={apt_dir / 'cache'}",
        "-o", "Acquire::Languages=none",
    ]  # fmt: skip
    if os.geteuid() == 0:
        # As root apt downloads as the _apt user, who cannot enter a cache like /root/.cache.
        options += ["-o", "APT::Sandbox::User=root"]
    return options


def updated_apt(apt_dir: Path, name: str, *, timeout: float, error: Failure) -> list[str]:
    """:func:`private_apt`'s options once its package lists are fresh (``apt-get
    update``); refused where Debian's keyring is missing, since nothing could be verified."""
    if not DEBIAN_KEYRING.is_file():
        raise error(
            f"{DEBIAN_KEYRING} is missing, so {DEBIAN_SUITE} cannot be verified; "
            f"apt-get install debian-archive-keyring"
        )
    apt = private_apt(apt_dir, name)
    run(
        ["apt-get", *apt, "update"],
        doing=f"apt-get update of {DEBIAN_SUITE} from {DEBIAN_MIRROR}",
        timeout=timeout,
        error=error,
    )
    return apt
