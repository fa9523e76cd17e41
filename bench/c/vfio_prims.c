/*
 * vfio_prims: the primitives pyvfio's bench/primitives.py times, done with the raw
 * VFIO type1 ioctls and mmap, as the C baseline for the pyvfio/C ratios.
 *
 *   gcc -O2 -Wall -o vfio_prims vfio_prims.c
 *   vfio_prims [--backend type1|iommufd] [--budget-ms N] [--max-iters N]
 *              [--live 1,1000,30000] BDF
 *
 * BDF must be QEMU's edu device (1234:11e8), already bound to vfio-pci, with nothing
 * else holding its group. type1 goes through /dev/vfio/vfio and the group; iommufd
 * through /dev/iommu and the device cdev /dev/vfio/devices/vfioN (Linux 6.6+). Prints one JSON object on stdout: for each operation the
 * median and best nanoseconds per operation over ROUNDS rounds, and the iterations.
 *
 * Timing mirrors primitives.py: double the batch size until one batch takes a fiftieth
 * of the budget (or reaches --max-iters), scale it to a fifth of the budget, then run
 * ROUNDS batches of that size.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/*
 * iommufd and the VFIO device cdev, for kernels newer than the installed headers
 * (linux/iommufd.h since 6.2, the cdev ioctls since 6.6); layouts as in those headers.
 */
#ifndef IOMMUFD_TYPE
#define IOMMUFD_TYPE (';')
struct iommu_ioas_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
struct iommu_ioas_map {
	uint32_t size;
	uint32_t flags;
	uint32_t ioas_id;
	uint32_t __reserved;
	uint64_t user_va;
	uint64_t length;
	uint64_t iova;
};
#define IOMMU_IOAS_MAP_FIXED_IOVA (1 << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1 << 1)
#define IOMMU_IOAS_MAP_READABLE (1 << 2)
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
struct iommu_ioas_unmap {
	uint32_t size;
	uint32_t ioas_id;
	uint64_t iova;
	uint64_t length;
};
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
#endif
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
	uint32_t argsz;
	uint32_t flags;
	int32_t iommufd;
	uint32_t out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
struct vfio_device_attach_iommufd_pt {
	uint32_t argsz;
	uint32_t flags;
	uint32_t pt_id;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif

#define ROUNDS 5
#define PAGE 4096UL
#define EDU_ID 0x00
#define EDU_LIVENESS 0x04
#define EDU_IRQ_RAISE 0x60
#define EDU_IRQ_ACK 0x64
#define PCI_COMMAND 0x04
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
/* IOVAs below edu's 28-bit DMA mask, above the first MiB; the live mappings follow. */
#define IOVA_ONE 0x100000UL
#define IOVA_EXTRA 0x200000UL
#define IOVA_LIVE 0x400000UL
#define MAX_LIVE 60000

enum backend { TYPE1, IOMMUFD };

struct vfio {
	enum backend backend;
	int container, group, device, eventfd; /* container: /dev/iommu for iommufd */
	uint32_t ioas;
	volatile uint32_t *bar0;
	size_t bar0_size;
	off_t config_offset;
};

struct result {
	double median_ns, best_ns;
	unsigned long iterations, batch;
};

static void die(const char *fmt, ...)
{
	va_list ap;
	int err = errno;

	va_start(ap, fmt);
	fprintf(stderr, "vfio_prims: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", strerror(err));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int group_of(const char *bdf)
{
	char path[PATH_MAX], target[PATH_MAX];
	ssize_t n;
	const char *slash;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		die("readlink %s", path);
	target[n] = '\0';
	slash = strrchr(target, '/');
	return atoi(slash ? slash + 1 : target);
}

static void open_type1(struct vfio *v, const char *bdf)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	char path[64];

	v->container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (v->container < 0)
		die("open /dev/vfio/vfio");
	if (ioctl(v->container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		die("VFIO_GET_API_VERSION");
	if (ioctl(v->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
		die("no VFIO_TYPE1v2_IOMMU");
	snprintf(path, sizeof(path), "/dev/vfio/%d", group_of(bdf));
	v->group = open(path, O_RDWR | O_CLOEXEC);
	if (v->group < 0)
		die("open %s", path);
	if (ioctl(v->group, VFIO_GROUP_GET_STATUS, &status) < 0)
		die("VFIO_GROUP_GET_STATUS");
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		errno = EBUSY;
		die("group %s is not viable", path);
	}
	if (ioctl(v->group, VFIO_GROUP_SET_CONTAINER, &v->container) < 0)
		die("VFIO_GROUP_SET_CONTAINER");
	if (ioctl(v->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) < 0)
		die("VFIO_SET_IOMMU");
	v->device = ioctl(v->group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (v->device < 0)
		die("VFIO_GROUP_GET_DEVICE_FD %s", bdf);
}

static void open_iommufd(struct vfio *v, const char *bdf)
{
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	char path[PATH_MAX], cdev[PATH_MAX];
	struct dirent *entry;
	DIR *dir;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	dir = opendir(path);
	if (!dir)
		die("opendir %s (no VFIO device cdev: CONFIG_VFIO_DEVICE_CDEV)", path);
	cdev[0] = '\0';
	while ((entry = readdir(dir)))
		if (!strncmp(entry->d_name, "vfio", 4))
			snprintf(cdev, sizeof(cdev), "/dev/vfio/devices/%s", entry->d_name);
	closedir(dir);
	if (!cdev[0]) {
		errno = ENOENT;
		die("no vfioN below %s", path);
	}
	v->group = -1;
	v->container = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (v->container < 0)
		die("open /dev/iommu");
	v->device = open(cdev, O_RDWR | O_CLOEXEC);
	if (v->device < 0)
		die("open %s", cdev);
	bind.iommufd = v->container;
	if (ioctl(v->device, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
		die("VFIO_DEVICE_BIND_IOMMUFD");
	if (ioctl(v->container, IOMMU_IOAS_ALLOC, &alloc) < 0)
		die("IOMMU_IOAS_ALLOC");
	v->ioas = alloc.out_ioas_id;
	attach.pt_id = v->ioas;
	if (ioctl(v->device, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) < 0)
		die("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
}

static void open_device(struct vfio *v, const char *bdf)
{
	struct vfio_region_info bar = { .argsz = sizeof(bar) };
	struct vfio_region_info cfg = { .argsz = sizeof(cfg) };
	void *map;

	if (v->backend == IOMMUFD)
		open_iommufd(v, bdf);
	else
		open_type1(v, bdf);

	bar.index = VFIO_PCI_BAR0_REGION_INDEX;
	if (ioctl(v->device, VFIO_DEVICE_GET_REGION_INFO, &bar) < 0)
		die("VFIO_DEVICE_GET_REGION_INFO BAR0");
	if (!(bar.flags & VFIO_REGION_INFO_FLAG_MMAP)) {
		errno = ENOTSUP;
		die("BAR0 cannot be mmap'd");
	}
	map = mmap(NULL, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, v->device,
		   (off_t)bar.offset);
	if (map == MAP_FAILED)
		die("mmap BAR0");
	v->bar0 = map;
	v->bar0_size = bar.size;

	cfg.index = VFIO_PCI_CONFIG_REGION_INDEX;
	if (ioctl(v->device, VFIO_DEVICE_GET_REGION_INFO, &cfg) < 0)
		die("VFIO_DEVICE_GET_REGION_INFO config");
	v->config_offset = (off_t)cfg.offset;
}

static void close_device(struct vfio *v)
{
	/* Reverse order of acquisition: BAR, device, group, container (or iommufd). */
	munmap((void *)v->bar0, v->bar0_size);
	close(v->device);
	if (v->group >= 0) {
		ioctl(v->group, VFIO_GROUP_UNSET_CONTAINER, &v->container);
		close(v->group);
	}
	close(v->container);
}

static uint32_t config_read32(struct vfio *v, unsigned int offset)
{
	uint32_t value;

	if (pread(v->device, &value, 4, v->config_offset + offset) != 4)
		die("pread config %#x", offset);
	return value;
}

static void config_write16(struct vfio *v, unsigned int offset, uint16_t value)
{
	if (pwrite(v->device, &value, 2, v->config_offset + offset) != 2)
		die("pwrite config %#x", offset);
}

static void enable_msi(struct vfio *v)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
	struct vfio_irq_set *set = (struct vfio_irq_set *)buf;
	uint16_t cmd = (uint16_t)config_read32(v, PCI_COMMAND);
	int32_t fd;

	/* QEMU drops a device's MSI write while Bus Master Enable is clear. */
	config_write16(v, PCI_COMMAND, cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	v->eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (v->eventfd < 0)
		die("eventfd");
	fd = v->eventfd;
	set->argsz = sizeof(buf);
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = VFIO_PCI_MSI_IRQ_INDEX;
	set->start = 0;
	set->count = 1;
	memcpy(set->data, &fd, sizeof(fd));
	if (ioctl(v->device, VFIO_DEVICE_SET_IRQS, set) < 0)
		die("VFIO_DEVICE_SET_IRQS MSI");
}

static void disable_msi(struct vfio *v)
{
	struct vfio_irq_set set = {
		.argsz = sizeof(set),
		.flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
		.index = VFIO_PCI_MSI_IRQ_INDEX,
	};

	ioctl(v->device, VFIO_DEVICE_SET_IRQS, &set);
	close(v->eventfd);
}

static void map_dma(struct vfio *v, void *vaddr, uint64_t iova)
{
	if (v->backend == IOMMUFD) {
		struct iommu_ioas_map map = {
			.size = sizeof(map),
			.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
				 IOMMU_IOAS_MAP_WRITEABLE,
			.ioas_id = v->ioas,
			.user_va = (uint64_t)(uintptr_t)vaddr,
			.length = PAGE,
			.iova = iova,
		};

		if (ioctl(v->container, IOMMU_IOAS_MAP, &map) < 0)
			die("IOMMU_IOAS_MAP iova %#lx", (unsigned long)iova);
		return;
	}
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uint64_t)(uintptr_t)vaddr,
		.iova = iova,
		.size = PAGE,
	};

	if (ioctl(v->container, VFIO_IOMMU_MAP_DMA, &map) < 0)
		die("VFIO_IOMMU_MAP_DMA iova %#lx", (unsigned long)iova);
}

static void unmap_dma(struct vfio *v, uint64_t iova)
{
	if (v->backend == IOMMUFD) {
		struct iommu_ioas_unmap unmap = {
			.size = sizeof(unmap),
			.ioas_id = v->ioas,
			.iova = iova,
			.length = PAGE,
		};

		if (ioctl(v->container, IOMMU_IOAS_UNMAP, &unmap) < 0)
			die("IOMMU_IOAS_UNMAP iova %#lx", (unsigned long)iova);
		return;
	}
	struct vfio_iommu_type1_dma_unmap unmap = {
		.argsz = sizeof(unmap),
		.iova = iova,
		.size = PAGE,
	};

	if (ioctl(v->container, VFIO_IOMMU_UNMAP_DMA, &unmap) < 0)
		die("VFIO_IOMMU_UNMAP_DMA iova %#lx", (unsigned long)iova);
}

/* -- the operations, each run `n` times ------------------------------------------- */

static struct vfio dev;
static void *page_one, *page_extra;
static volatile uint32_t sink;

static void op_mmio_read32(unsigned long n)
{
	while (n--)
		sink = dev.bar0[EDU_ID / 4];
}

static void op_mmio_write32(unsigned long n)
{
	/* edu's liveness register: any value, no side effect but the next read. */
	while (n--)
		dev.bar0[EDU_LIVENESS / 4] = (uint32_t)n;
}

static void op_config_read32(unsigned long n)
{
	while (n--)
		sink = config_read32(&dev, 0);
}

static void op_dma_map_unmap(unsigned long n)
{
	while (n--) {
		map_dma(&dev, page_one, IOVA_ONE);
		unmap_dma(&dev, IOVA_ONE);
	}
}

static void op_live_map_unmap(unsigned long n)
{
	while (n--) {
		map_dma(&dev, page_extra, IOVA_EXTRA);
		unmap_dma(&dev, IOVA_EXTRA);
	}
}

static void op_irq_round_trip(unsigned long n)
{
	struct pollfd pfd = { .fd = dev.eventfd, .events = POLLIN };
	uint64_t count;

	while (n--) {
		dev.bar0[EDU_IRQ_RAISE / 4] = 1;
		for (;;) {
			if (read(dev.eventfd, &count, sizeof(count)) == sizeof(count))
				break;
			if (errno != EAGAIN)
				die("read eventfd");
			if (poll(&pfd, 1, 5000) == 0) {
				errno = ETIMEDOUT;
				die("MSI did not fire within 5 s");
			}
		}
		dev.bar0[EDU_IRQ_ACK / 4] = 1;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static struct result measure(void (*op)(unsigned long), uint64_t budget_ns,
			     unsigned long max_iters)
{
	struct result r = { 0 };
	double per_op[ROUNDS];
	unsigned long n = 1;
	uint64_t t0, took;
	int i;

	op(1); /* warm up: page faults, first-use paths */
	for (;;) {
		t0 = now_ns();
		op(n);
		took = now_ns() - t0;
		if (took >= budget_ns / 50 || n >= max_iters)
			break;
		n = n * 2 > max_iters ? max_iters : n * 2;
	}
	/* A stall while calibrating shortens the rounds rather than ending calibration early. */
	n = (unsigned long)((uint64_t)n * (budget_ns / ROUNDS) / (took ? took : 1));
	n = n < 1 ? 1 : n > max_iters ? max_iters : n;
	for (i = 0; i < ROUNDS; i++) {
		t0 = now_ns();
		op(n);
		per_op[i] = (double)(now_ns() - t0) / (double)n;
	}
	qsort(per_op, ROUNDS, sizeof(per_op[0]), cmp_double);
	r.median_ns = per_op[ROUNDS / 2];
	r.best_ns = per_op[0];
	r.batch = n;
	r.iterations = n * ROUNDS;
	return r;
}

static void print_result(const char *name, struct result r, int *first)
{
	printf("%s\n  \"%s\": {\"ns_per_op\": %.1f, \"best_ns_per_op\": %.1f, "
	       "\"iterations\": %lu, \"rounds\": %d, \"batch\": %lu}",
	       *first ? "" : ",", name, r.median_ns, r.best_ns, r.iterations, ROUNDS, r.batch);
	*first = 0;
	fflush(stdout);
}

static void *alloc_pages(size_t count)
{
	void *p = mmap(NULL, count * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	if (p == MAP_FAILED)
		die("mmap %zu pages", count);
	return p;
}

static void usage(void)
{
	fprintf(stderr, "usage: vfio_prims [--backend type1|iommufd] [--budget-ms N] "
			"[--max-iters N] [--live N,N,...] BDF\n");
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t budget_ns = 1000ULL * 1000000ULL;
	unsigned long max_iters = 10000000, live[16];
	int nlive = 0, first = 1, i;
	const char *bdf = NULL, *live_arg = "1,1000,30000";
	char name[64], *spec, *tok, *save;
	unsigned char *pages;
	uint32_t ident;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "iommufd"))
				dev.backend = IOMMUFD;
			else if (strcmp(argv[i], "type1"))
				usage();
		} else if (!strcmp(argv[i], "--budget-ms") && i + 1 < argc)
			budget_ns = strtoull(argv[++i], NULL, 0) * 1000000ULL;
		else if (!strcmp(argv[i], "--max-iters") && i + 1 < argc)
			max_iters = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--live") && i + 1 < argc)
			live_arg = argv[++i];
		else if (argv[i][0] != '-' && !bdf)
			bdf = argv[i];
		else
			usage();
	}
	if (!bdf || !max_iters)
		usage();
	spec = strdup(live_arg);
	for (tok = strtok_r(spec, ",", &save); tok && nlive < 16; tok = strtok_r(NULL, ",", &save)) {
		live[nlive] = strtoul(tok, NULL, 0);
		if (live[nlive] < 1 || live[nlive] > MAX_LIVE)
			usage();
		nlive++;
	}

	open_device(&dev, bdf);
	if (config_read32(&dev, 0) != 0x11e81234) {
		errno = ENODEV;
		die("%s is not QEMU's edu device", bdf);
	}
	ident = dev.bar0[EDU_ID / 4];
	enable_msi(&dev);
	page_one = alloc_pages(1);
	page_extra = alloc_pages(1);

	printf("{\"tool\": \"c\", \"backend\": \"%s\", \"device\": \"%s\", "
	       "\"edu_ident\": %u, \"rounds\": %d, \"ops\": {",
	       dev.backend == IOMMUFD ? "iommufd" : "type1", bdf, ident, ROUNDS);
	print_result("mmio_read32", measure(op_mmio_read32, budget_ns, max_iters), &first);
	print_result("mmio_write32", measure(op_mmio_write32, budget_ns, max_iters), &first);
	print_result("config_read32", measure(op_config_read32, budget_ns, max_iters), &first);
	print_result("dma_map_unmap_4k", measure(op_dma_map_unmap, budget_ns, max_iters),
		     &first);
	print_result("irq_round_trip", measure(op_irq_round_trip, budget_ns, max_iters), &first);

	for (i = 0; i < nlive; i++) {
		unsigned long k;

		pages = alloc_pages(live[i]);
		for (k = 0; k < live[i]; k++)
			map_dma(&dev, pages + k * PAGE, IOVA_LIVE + k * PAGE);
		snprintf(name, sizeof(name), "map_unmap_live_%lu", live[i]);
		print_result(name, measure(op_live_map_unmap, budget_ns, max_iters), &first);
		for (k = 0; k < live[i]; k++)
			unmap_dma(&dev, IOVA_LIVE + k * PAGE);
		munmap(pages, live[i] * PAGE);
	}
	printf("\n}}\n");

	disable_msi(&dev);
	close_device(&dev);
	free(spec);
	return 0;
}
