qemu-system-x86_64 \
    -machine q35 \
    -accel kvm \
    -cpu max \
    -m 4096M \
    -object memory-backend-file,id=ram0,size=4096M,mem-path=/dev/hugepages,prealloc=on \
    -machine memory-backend=ram0 \
    -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1 \
    -device vfio-pci,host=0000:03:00.0,id=hostdev1-0,bus=rp1,addr=00.0 \
    -drive file=disk.qcow2,if=virtio
