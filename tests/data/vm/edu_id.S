/* A multiboot payload for the nested guest of tests/lab/test_vm.py (GNU as, 32-bit).
 *
 * QEMU's -kernel loads it after SeaBIOS has enumerated PCI and assigned the BARs. It
 * finds the first 1234:11e8 (edu) by config mechanism #1 (ports 0xcf8/0xcfc), turns on
 * memory decoding, reads the ID register at offset 0 of BAR 0, prints
 * "EDU-ID=xxxxxxxx" on the first serial port and leaves through isa-debug-exit
 * (iobase 0xf4: QEMU exits with status (0x10 << 1) | 1 = 33).
 *
 * Flat binary with the multiboot "a.out kludge" (flags bit 16): the load addresses are
 * in the header, so no ELF is needed. Build:
 *   as --32 -o edu_id.o edu_id.S && ld -m elf_i386 -Ttext=0x100000 --oformat binary -o edu_id.bin edu_id.o
 */
        .code32
        .text
        .globl _start
_start:
header:
        .long 0x1BADB002                        /* magic */
        .long 0x00010000                        /* flags: addresses in the header */
        .long -(0x1BADB002 + 0x00010000)        /* checksum */
        .long header                            /* header_addr */
        .long _start                            /* load_addr */
        .long 0                                 /* load_end_addr: the whole file */
        .long 0                                 /* bss_end_addr: none */
        .long entry                             /* entry_addr */

entry:
        cli
        mov     $0x80000000, %ebx               /* enable | bus 0, device 0, function 0 */
scan:
        mov     %ebx, %eax
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        in      %dx, %eax
        cmp     $0x11e81234, %eax
        je      found
        add     $0x100, %ebx                    /* next function */
        cmp     $0x80100000, %ebx               /* buses 0..15 are plenty here */
        jb      scan
        mov     $none, %esi
        call    puts
        jmp     leave

found:
        lea     4(%ebx), %eax                   /* command register: memory space on */
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        in      %dx, %ax
        or      $0x2, %ax
        out     %ax, %dx
        lea     0x10(%ebx), %eax                /* BAR 0 */
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        in      %dx, %eax
        and     $0xfffffff0, %eax
        mov     (%eax), %edi                    /* the ID register, through VFIO */
        mov     $label, %esi
        call    puts
        mov     $8, %ecx
hex:
        rol     $4, %edi
        mov     %edi, %eax
        and     $0xf, %eax
        movb    digits(%eax), %al
        mov     $0x3f8, %dx
        out     %al, %dx
        loop    hex
        mov     $newline, %esi
        call    puts

leave:
        mov     $0xf4, %dx
        mov     $0x10, %al
        out     %al, %dx
halt:
        hlt
        jmp     halt

puts:                                           /* the NUL-terminated string at %esi */
        mov     $0x3f8, %dx
1:      lodsb
        test    %al, %al
        jz      2f
        out     %al, %dx
        jmp     1b
2:      ret

digits:  .ascii "0123456789abcdef"
label:   .asciz "EDU-ID="
newline: .asciz "\n"
none:    .asciz "EDU-ID=none\n"
