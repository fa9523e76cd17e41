"""The VM side: QEMU command lines and QMP checks, libvirt XML, persistence across reboots."""
