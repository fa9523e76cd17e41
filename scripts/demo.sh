#!/usr/bin/env bash
# README command 1: install what is needed, then run the pyvfio demo: in the VM lab
# (a real kernel with a virtual IOMMU) it lists the IOMMU groups, binds QEMU's edu
# device to vfio-pci, reads its ID register through VFIO, sends a message to it and
# back by DMA through the IOMMU with MSI completion, and gives the device back.
# While the guest boots (minutes under TCG) it says how far the boot is on stderr; the
# guest's whole output is kept in /tmp/pyvfio-lab-logs/demo.log (PYVFIO_LAB_LOG_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/pyvfio demo "$@"
