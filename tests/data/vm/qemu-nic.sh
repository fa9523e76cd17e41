qemu-system-x86_64 \
    -machine q35 \
    -accel tcg \
    -cpu max \
    -m 2048M \
    -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1 \
    -device vfio-pci,host=0000:01:00.0,id=hostdev1-0,bus=rp1,addr=00.0
