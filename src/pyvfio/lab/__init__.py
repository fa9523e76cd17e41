"""The lab: a Linux guest under QEMU with a virtual IOMMU, where the tests meet the real kernel."""
