"""What every tier of the tests shares: pytester, and markers that say what a test needs.

Most tests need nothing: no root, no device, no tool beyond Python. A test that needs
more says so with a marker (registered in pyproject.toml), and where the need is not met
it is skipped with the reason; CI runs with ``--no-skips`` (pyvfio's pytest plugin), so
there a skip fails the run.

* ``needs_root(why)``: runs only as root (``why``: what root is needed for).
* ``needs_tool(program, package=program)``: runs ``program``, found on PATH; the reason
  names the Debian package that has it (scripts/setup.sh installs them all).
* ``sid_qemu``: runs QEMU >= 10.1 (``vfio-user-pci``) from the Debian sid chroot in
  ~/.cache/pyvfio/sid-qemu, built on first use (about a minute) or by ``pyvfio lab
  sid-qemu``; such a test also needs root, for chroot, and fails if the chroot cannot
  be built.
* ``lab``: runs as root in the lab guest, on the real kernel (pyvfio's pytest plugin).
"""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# Hypothesis's per-example deadline (200 ms) is a timed assertion: on a loaded 2-CPU
# host a grant round trip once took 486 ms and failed the run. Properties are checked
# for what they assert, never for how fast an example ran (nor how slow data generation was).
settings.register_profile("pyvfio", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pyvfio")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark skipped, with the reason, each test whose ``needs_*`` this machine does not meet."""
    for item in items:
        why = unmet_need(item)
        if why is not None:
            item.add_marker(pytest.mark.skip(reason=why))


def unmet_need(item: pytest.Item) -> str | None:
    root = item.get_closest_marker("needs_root")
    if root is not None and os.geteuid() != 0:
        return f"needs root: {root.args[0]}" if root.args else "needs root"
    for tool in item.iter_markers("needs_tool"):
        program, package = tool.args[0], tool.args[-1]
        if shutil.which(program) is None:
            return f"needs {program}, which is missing: apt-get install {package}"
    return None
