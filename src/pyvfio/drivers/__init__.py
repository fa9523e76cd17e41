"""Drivers built on the public API: QEMU's edu device and NVMe, each beside its register map."""
