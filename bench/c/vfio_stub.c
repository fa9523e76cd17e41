// SPDX-License-Identifier: MIT
/*
 * vfio_stub.so: a pretend VFIO and iommufd in user space, for counting instructions
 * (bench/instructions.py) on a host with no device, no IOMMU and no VM.
 *
 * Preloaded (LD_PRELOAD) under valgrind's callgrind, it intercepts libc's open, stat,
 * close and ioctl for the nodes a VFIO driver opens: /dev/vfio/vfio (a type1
 * container), /dev/vfio/N (a group), /dev/iommu and /dev/vfio/devices/vfioN (the
 * device cdev). Each node is a memfd; the device's memfd holds its regions (BAR0 at
 * offset 0, config space at REGION_STRIDE * 7), so mmap of a BAR and pread of config
 * space are the kernel's real memfd paths. The ioctls a driver makes on them are
 * answered here as a QEMU edu device behind vfio-pci would: API version, extensions,
 * group status, device/region/IRQ info, SET_IRQS, map/unmap (which succeed and map
 * nothing). Anything else goes to libc. Both pyvfio (ctypes calls of libc's ioctl)
 * and the plain-Python floor (fcntl.ioctl) reach these functions, since both resolve
 * ioctl through the dynamic linker, which finds the preloaded symbol first.
 *
 * Nothing signals an interrupt: the harness writes the eventfd itself, standing in
 * for the device. bench_collect()/bench_dump() are callgrind's client requests for
 * the harness to call through ctypes (no-ops outside valgrind).
 *
 * Built by bench/instructions.py: gcc -O2 -shared -fPIC -o vfio_stub.so vfio_stub.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else /* no valgrind: the floor's unit tests still run against the stub */
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_TOGGLE_COLLECT
#define CALLGRIND_DUMP_STATS_AT(label) ((void)(label))
#endif

/* Kernel ABI the installed headers may predate (iommufd since 6.2, cdev ioctls 6.6). */
#define IOMMUFD_TYPE (';')
#define NR_IOMMU_DESTROY 0x80
#define NR_IOAS_ALLOC 0x81
#define NR_IOAS_IOVA_RANGES 0x84
#define NR_IOAS_MAP 0x85
#define NR_IOAS_UNMAP 0x86
#define NR_DEVICE_BIND_IOMMUFD (VFIO_BASE + 18)
#define NR_DEVICE_ATTACH_IOMMUFD_PT (VFIO_BASE + 19)
#define NR_DEVICE_DETACH_IOMMUFD_PT (VFIO_BASE + 20)

struct stub_ioas_alloc {
	uint32_t size, flags, out_ioas_id;
};
struct stub_iova_ranges {
	uint32_t size, ioas_id, num_iovas, reserved;
	uint64_t allowed_iovas, out_iova_alignment;
};
struct stub_iova_range {
	uint64_t start, last;
};
struct stub_bind {
	uint32_t argsz, flags;
	int32_t iommufd;
	uint32_t out_devid;
};

/* The edu device: BAR0 of 1 MiB, config space of 256 bytes, MSI with one vector. */
#define REGION_STRIDE (1UL << 20)
#define BAR0_SIZE (1UL << 20)
#define CONFIG_SIZE 256UL
#define NUM_REGIONS 9 /* BAR0-5, ROM, config, VGA */
#define NUM_IRQS 5 /* INTx, MSI, MSI-X, ERR, REQ */
#define EDU_ID 0x010000edU
#define STUB_IOAS 1
#define STUB_DEVID 2

enum kind { NONE, CONTAINER, GROUP, IOMMUFD, DEVICE };
#define MAX_FDS 65536
static unsigned char kinds[MAX_FDS];

static int (*real_open64)(const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_stat64)(const char *, struct stat64 *);
static int (*real_lstat64)(const char *, struct stat64 *);
static int (*real_fstatat64)(int, const char *, struct stat64 *, int);
static int (*real_close)(int);
static int (*real_ioctl)(int, unsigned long, ...);

__attribute__((constructor)) static void resolve(void)
{
	real_open64 = dlsym(RTLD_NEXT, "open64");
	real_openat64 = dlsym(RTLD_NEXT, "openat64");
	real_stat64 = dlsym(RTLD_NEXT, "stat64");
	real_lstat64 = dlsym(RTLD_NEXT, "lstat64");
	real_fstatat64 = dlsym(RTLD_NEXT, "fstatat64");
	real_close = dlsym(RTLD_NEXT, "close");
	real_ioctl = dlsym(RTLD_NEXT, "ioctl");
}

/* Which node a path is: /dev/vfio/vfio, /dev/vfio/<digits>, /dev/iommu, /dev/vfio/devices/vfio<digits>. */
static enum kind node_kind(const char *path)
{
	if (!path)
		return NONE;
	if (!strcmp(path, "/dev/vfio/vfio"))
		return CONTAINER;
	if (!strcmp(path, "/dev/iommu"))
		return IOMMUFD;
	if (!strncmp(path, "/dev/vfio/devices/vfio", 22) && path[22])
		return DEVICE;
	if (!strncmp(path, "/dev/vfio/", 10) && path[10]) {
		for (const char *p = path + 10; *p; p++)
			if (*p < '0' || *p > '9')
				return NONE;
		return GROUP;
	}
	return NONE;
}

static int track(int fd, enum kind kind)
{
	if (fd >= 0 && fd < MAX_FDS)
		kinds[fd] = kind;
	return fd;
}

static enum kind kind_of(int fd)
{
	return fd >= 0 && fd < MAX_FDS ? kinds[fd] : NONE;
}

static int new_device(void)
{
	int fd = memfd_create("vfio-stub-device", MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	if (ftruncate(fd, REGION_STRIDE * NUM_REGIONS) < 0)
		return -1;
	uint32_t id = EDU_ID;
	pwrite(fd, &id, 4, 0);
	uint8_t config[CONFIG_SIZE] = {0};
	uint16_t ids[2] = {0x1234, 0x11e8};
	memcpy(config, ids, 4);
	config[0x0b] = 0x00; /* class 00ff00: unclassified */
	config[0x0a] = 0xff;
	config[0x06] = 0x10; /* status: capabilities list */
	config[0x34] = 0x40; /* MSI capability at 0x40, the last */
	config[0x40] = 0x05;
	config[0x42] = 0x80; /* 64-bit */
	pwrite(fd, config, sizeof(config), REGION_STRIDE * VFIO_PCI_CONFIG_REGION_INDEX);
	return track(fd, DEVICE);
}

static int open_node(enum kind kind)
{
	if (kind == DEVICE)
		return new_device();
	return track(memfd_create(kind == IOMMUFD ? "vfio-stub-iommufd" : "vfio-stub-node", MFD_CLOEXEC),
		     kind);
}

int open64(const char *path, int flags, ...)
{
	enum kind kind = node_kind(path);
	if (kind != NONE)
		return open_node(kind);
	va_list ap;
	va_start(ap, flags);
	mode_t mode = va_arg(ap, mode_t);
	va_end(ap);
	return real_open64(path, flags, mode);
}

int open(const char *path, int flags, ...) __attribute__((alias("open64")));

int openat64(int dirfd, const char *path, int flags, ...)
{
	enum kind kind = path[0] == '/' ? node_kind(path) : NONE;
	if (kind != NONE)
		return open_node(kind);
	va_list ap;
	va_start(ap, flags);
	mode_t mode = va_arg(ap, mode_t);
	va_end(ap);
	return real_openat64(dirfd, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat64")));

static void fake_stat(struct stat64 *st, enum kind kind)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFCHR | 0600;
	st->st_rdev = makedev(kind == IOMMUFD ? 10 : 511, kind);
	st->st_nlink = 1;
}

int stat64(const char *path, struct stat64 *st)
{
	enum kind kind = node_kind(path);
	if (kind != NONE) {
		fake_stat(st, kind);
		return 0;
	}
	return real_stat64(path, st);
}

int lstat64(const char *path, struct stat64 *st)
{
	enum kind kind = node_kind(path);
	if (kind != NONE) {
		fake_stat(st, kind);
		return 0;
	}
	return real_lstat64(path, st);
}

int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
	enum kind kind = path[0] == '/' ? node_kind(path) : NONE;
	if (kind != NONE) {
		fake_stat(st, kind);
		return 0;
	}
	return real_fstatat64(dirfd, path, st, flags);
}

int close(int fd)
{
	track(fd, NONE);
	return real_close(fd);
}

static int fail(int err)
{
	errno = err;
	return -1;
}

static int region_info(struct vfio_region_info *info)
{
	uint32_t index = info->index;
	if (index >= NUM_REGIONS)
		return fail(EINVAL);
	info->cap_offset = 0;
	info->offset = REGION_STRIDE * index;
	info->flags = 0;
	info->size = 0;
	if (index == VFIO_PCI_BAR0_REGION_INDEX) {
		info->size = BAR0_SIZE;
		info->flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
			      VFIO_REGION_INFO_FLAG_MMAP;
	} else if (index == VFIO_PCI_CONFIG_REGION_INDEX) {
		info->size = CONFIG_SIZE;
		info->flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
	}
	return 0;
}

static int irq_info(struct vfio_irq_info *info)
{
	if (info->index >= NUM_IRQS)
		return fail(EINVAL);
	info->flags = VFIO_IRQ_INFO_EVENTFD;
	info->count = info->index == VFIO_PCI_MSIX_IRQ_INDEX ? 0 : 1;
	if (info->index == VFIO_PCI_INTX_IRQ_INDEX)
		info->flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
	else
		info->flags |= VFIO_IRQ_INFO_NORESIZE;
	return 0;
}

static int iova_ranges(struct stub_iova_ranges *q)
{
	if (q->num_iovas < 1) {
		q->num_iovas = 1;
		return fail(EMSGSIZE);
	}
	struct stub_iova_range *r = (struct stub_iova_range *)(uintptr_t)q->allowed_iovas;
	r->start = 0;
	r->last = (1ULL << 48) - 1;
	q->num_iovas = 1;
	q->out_iova_alignment = 4096;
	return 0;
}

/* The answer to one VFIO or iommufd ioctl on a stub node. */
static int stub_ioctl(enum kind kind, unsigned long request, void *arg)
{
	if (_IOC_TYPE(request) != VFIO_TYPE)
		return fail(ENOTTY);
	unsigned int nr = _IOC_NR(request);
	switch (kind) {
	case CONTAINER:
		if (nr == VFIO_BASE + 0)
			return VFIO_API_VERSION;
		if (nr == VFIO_BASE + 1) /* CHECK_EXTENSION: type1, type1v2 */
			return (uintptr_t)arg == VFIO_TYPE1_IOMMU || (uintptr_t)arg == VFIO_TYPE1v2_IOMMU;
		if (nr == VFIO_BASE + 2) /* SET_IOMMU */
			return 0;
		if (nr == VFIO_BASE + 12) { /* IOMMU_GET_INFO, no capabilities */
			struct vfio_iommu_type1_info *info = arg;
			info->flags = VFIO_IOMMU_INFO_PGSIZES;
			info->iova_pgsizes = 4096;
			return 0;
		}
		if (nr == VFIO_BASE + 13 || nr == VFIO_BASE + 14) /* MAP_DMA, UNMAP_DMA */
			return 0;
		break;
	case GROUP:
		if (nr == VFIO_BASE + 3) {
			struct vfio_group_status *status = arg;
			status->flags = VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET;
			return 0;
		}
		if (nr == VFIO_BASE + 4 || nr == VFIO_BASE + 5) /* SET/UNSET_CONTAINER */
			return 0;
		if (nr == VFIO_BASE + 6) /* GET_DEVICE_FD */
			return new_device();
		break;
	case IOMMUFD:
		if (nr == NR_IOAS_ALLOC) {
			((struct stub_ioas_alloc *)arg)->out_ioas_id = STUB_IOAS;
			return 0;
		}
		if (nr == NR_IOAS_IOVA_RANGES)
			return iova_ranges(arg);
		if (nr == NR_IOMMU_DESTROY || nr == NR_IOAS_MAP || nr == NR_IOAS_UNMAP)
			return 0;
		break;
	case DEVICE:
		if (nr == VFIO_BASE + 7) { /* DEVICE_GET_INFO */
			struct vfio_device_info *info = arg;
			info->flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET;
			info->num_regions = NUM_REGIONS;
			info->num_irqs = NUM_IRQS;
			return 0;
		}
		if (nr == VFIO_BASE + 8)
			return region_info(arg);
		if (nr == VFIO_BASE + 9)
			return irq_info(arg);
		if (nr == VFIO_BASE + 10 || nr == VFIO_BASE + 11) /* SET_IRQS, RESET */
			return 0;
		if (nr == NR_DEVICE_BIND_IOMMUFD) {
			((struct stub_bind *)arg)->out_devid = STUB_DEVID;
			return 0;
		}
		if (nr == NR_DEVICE_ATTACH_IOMMUFD_PT || nr == NR_DEVICE_DETACH_IOMMUFD_PT)
			return 0;
		break;
	default:
		break;
	}
	return fail(ENOTTY);
}

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	va_start(ap, request);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	enum kind kind = kind_of(fd);
	if (kind != NONE)
		return stub_ioctl(kind, request, arg);
	return real_ioctl(fd, request, arg);
}

/* Callgrind's client requests, for the harness (through ctypes). */
void bench_instrument(void)
{
	CALLGRIND_START_INSTRUMENTATION;
}

void bench_collect(void)
{
	CALLGRIND_TOGGLE_COLLECT;
}

void bench_dump(const char *label)
{
	CALLGRIND_DUMP_STATS_AT(label);
}

/* 1 when this library is loaded: the harness checks it before trusting a count. */
int bench_stub_loaded(void)
{
	return 1;
}
