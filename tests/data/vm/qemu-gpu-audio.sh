qemu-system-x86_64 \
    -machine q35 \
    -accel kvm \
    -accel tcg \
    -cpu max \
    -m 8192M \
    -vga none \
    -device pcie-root-port,id=rp1,bus=pcie.0,chassis=1 \
    -device vfio-pci,host=0000:0a:00.0,id=hostdev1-0,bus=rp1,addr=00.0,multifunction=on,x-vga=on,romfile=/usr/share/vgabios/gtx1080.rom \
    -device vfio-pci,host=0000:0a:00.1,id=hostdev1-1,bus=rp1,addr=00.1
