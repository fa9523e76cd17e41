#!/usr/bin/env bash
# Install everything pyvfio needs on Debian (12 or newer) or Ubuntu, idempotently:
# the system packages the lab and the tests use, then a virtual environment in .venv
# with pyvfio and its development tools. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu-system-x86: the lab's VM; linux-image-amd64: the guest's kernel and modules;
# pciutils + pci.ids: lspci (the config-space oracle) and device names; gcc + libc6-dev:
# the ABI test's C program; file + binutils: virtme-ng calls them; kmod: modprobe in
# the guest; busybox-static: virtme-ng's initramfs for a modular kernel;
# python3-venv: the virtual environment; dpkg-dev + apt: the ABI test's
# header download; make, bc, bison, flex, libelf-dev, libssl-dev, cpio, xz-utils and
# debian-archive-keyring: building the lab kernel with IOMMUFD (docs/lab-kernel.md);
# fio: the kernel side of the NVMe benchmark (bench/nvme); debootstrap: the sid chroot whose
# QEMU is the vfio-user client the tests attach to pyvfio's server (pyvfio lab sid-qemu);
# valgrind: callgrind and its client-request headers for bench/instructions.py.
packages=(qemu-system-x86 linux-image-amd64 pciutils pci.ids gcc libc6-dev file binutils
          kmod busybox-static python3-venv python3-dev ca-certificates dpkg-dev
          make bc bison flex libelf-dev libssl-dev cpio xz-utils debian-archive-keyring
          libvirt-clients libxml2-utils fio debootstrap valgrind)  # virt-xml-validate (and its xmllint) for the vm libvirt tests
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "setup: run as root to install ${missing[*]}" >&2; exit 2; }
        sudo=sudo
    fi
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# The venv is built from the distribution's Python (/usr/bin/python3) where there is one,
# so that the tests run what a user of this distribution runs (Debian 12: 3.11.2, which has
# no tarfile extraction filters), not a newer Python first on a developer's PATH.
base_python=/usr/bin/python3
[ -x "$base_python" ] || base_python=$(command -v python3)
base_version=$("$base_python" -c 'import sys; print(sys.version.split()[0])')
if [ ! -x .venv/bin/python ] \
   || [ "$(.venv/bin/python -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)" != "$base_version" ] \
   || ! .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11)'; then
    echo "setup: creating .venv from $base_python (Python $base_version)"
    rm -rf .venv
    "$base_python" -m venv .venv
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.pyvfio-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || ! .venv/bin/python -c 'import pyvfio' 2>/dev/null; then
    echo "setup: installing pyvfio and its tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi

# Nova's own PCI config parser for the export tests (tests/unit/test_export_nova.py) in
# a virtual environment of its own, .venv-nova: Nova brings ~140 packages (eventlet among
# them, 400 MB, 3 minutes on a busy machine) that pyvfio's .venv should not carry.
# Reinstalled only when pyproject.toml's `nova` extra changes.
nova_requirement=$(.venv/bin/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["nova"]))')
nova_stamp=.venv-nova/.pyvfio-installed
if [ ! -f "$nova_stamp" ] || [ "$(cat "$nova_stamp")" != "$nova_requirement $base_version" ] \
   || ! .venv-nova/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("nova") is None)' 2>/dev/null; then
    echo "setup: installing $nova_requirement into .venv-nova (Nova's parser, for the export tests)"
    rm -rf .venv-nova
    "$base_python" -m venv .venv-nova
    .venv-nova/bin/python -m pip install -q $nova_requirement
    echo "$nova_requirement $base_version" > "$nova_stamp"
fi

# The sid chroot with QEMU >= 10.1 (vfio-user-pci) for tests/vfio_user/test_qemu.py:
# built once (about a minute) into ~/.cache/pyvfio/sid-qemu; the tests build it too when missing.
if [ "$(id -u)" -eq 0 ]; then
    .venv/bin/pyvfio lab sid-qemu >/dev/null
fi
