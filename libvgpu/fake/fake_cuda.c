/* Fake CUDA driver (libcuda.so.1): devices, contexts, memory accounting against a configurable
 * physical size, streams/events/graphs over a simulated clock. See libvgpu/README.md. */
#include "fake_cuda.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fake_cuda_names.h"

#define API FAKE_EXPORT CUresult CUDAAPI

/* fault injection on every entry point: FAKE_CUDA_FAIL_<exported name>=<code>[:<count>] */
#define ENTER()                                                                                    \
    do {                                                                                           \
        int fail_ = fake_injected_failure(__func__);                                               \
        if (fail_)                                                                                 \
            return (CUresult)fail_;                                                                \
    } while (0)

#define ENTER_INIT()                                                                               \
    do {                                                                                           \
        ENTER();                                                                                   \
        if (!initialized())                                                                        \
            return CUDA_ERROR_NOT_INITIALIZED;                                                     \
    } while (0)

enum {
    MAGIC_CTX = 0x43545831,
    MAGIC_STREAM = 0x53545231,
    MAGIC_EVENT = 0x45564e31,
    MAGIC_MODULE = 0x4d4f4431,
    MAGIC_FUNC = 0x46554e31,
    MAGIC_POOL = 0x504f4f31,
    MAGIC_HANDLE = 0x484e4431,
    MAGIC_ARRAY = 0x41525231,
    MAGIC_MIPMAP = 0x4d495031,
    MAGIC_GRAPH = 0x47525031,
    MAGIC_GEXEC = 0x47455831,
    MAGIC_GNODE = 0x474e4431,
};

#define GRANULARITY (2ULL << 20)
#define ALLOC_ALIGN 512ULL
#define DEV_VA_BASE 0x100000000000ULL /* device d: [base + d * span, + span) */
#define DEV_VA_SPAN 0x010000000000ULL
#define RESERVE_VA_BASE 0x300000000000ULL
#define RESERVE_VA_SPAN 0x100000000000ULL
#define V1_VA_BASE 0x10000000ULL /* legacy 32-bit device pointers */
#define V1_VA_END 0xf0000000ULL

struct CUctx_st {
    uint32_t magic;
    int dev;
    bool primary;
    unsigned flags;
    unsigned long long id;
};

struct CUstream_st {
    uint32_t magic;
    int dev;
    CUcontext ctx;
    unsigned flags;
    int priority;
    _Atomic uint64_t last_end;
    struct CUgraph_st *capture;
};

struct CUevent_st {
    uint32_t magic;
    unsigned flags;
    uint64_t t;
    bool recorded;
};

struct CUmod_st {
    uint32_t magic;
};

struct CUfunc_st {
    uint32_t magic;
    char name[128];
};

struct CUmemPoolHandle_st {
    uint32_t magic;
    int dev;
    bool is_default;
    uint64_t used, used_high, reserved_high, release_threshold;
};

struct CUarray_st {
    uint32_t magic;
    int dev;
    uint64_t bytes;
    CUDA_ARRAY3D_DESCRIPTOR desc;
};

struct CUmipmappedArray_st {
    uint32_t magic;
    int dev;
    uint64_t bytes;
};

struct CUgraph_st {
    uint32_t magic;
    uint64_t blocks;
    unsigned nodes;
};

struct CUgraphExec_st {
    uint32_t magic;
    uint64_t blocks;
};

struct CUgraphNode_st {
    uint32_t magic;
    uint64_t blocks;
};

struct vmm_handle {
    uint32_t magic;
    int dev; /* -1: host memory, not charged */
    uint64_t size;
    _Atomic int refs; /* 1 until cuMemRelease, +1 per mapping */
    CUmemAllocationProp prop;
};

enum alloc_kind { K_MEM, K_MANAGED, K_ASYNC, K_MAPPED, K_RESERVED, K_HOST, K_HOST_REG };

/* one address range; ordered by address in a tsearch tree */
struct range {
    uint64_t base, size;
    int kind;
    int dev;
    uint64_t charged;
    void *shadow;
    struct CUmemPoolHandle_st *pool;
    struct vmm_handle *handle;
};

/* ------------------------------------------------------------------------------------------ */
/* process state                                                                                */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static void *g_dev_tree;  /* device allocations and mappings (K_MEM, K_MANAGED, K_ASYNC, K_MAPPED) */
static void *g_res_tree;  /* VA reservations */
static void *g_host_tree; /* pinned host allocations and registrations */
static uint64_t g_bump[FAKE_MAX_DEVICES];
static uint64_t g_res_bump, g_v1_bump;
static int g_inited;
static pid_t g_pid;
static struct CUctx_st g_primary[FAKE_MAX_DEVICES];
static int g_primary_refs[FAKE_MAX_DEVICES];
static unsigned g_primary_flags[FAKE_MAX_DEVICES];
static struct CUmemPoolHandle_st g_default_pool[FAKE_MAX_DEVICES];
static struct CUmemPoolHandle_st *g_cur_pool[FAKE_MAX_DEVICES];
static _Atomic uint64_t g_last_end[FAKE_MAX_DEVICES]; /* end of this process's queued work */
static _Atomic unsigned long long g_ctx_ids;

#define CTX_STACK 32
static __thread CUcontext t_stack[CTX_STACK];
static __thread int t_depth;

static int range_cmp(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    uint64_t xe = x->base + (x->size ? x->size : 1), ye = y->base + (y->size ? y->size : 1);
    if (xe <= y->base)
        return -1;
    if (ye <= x->base)
        return 1;
    return 0; /* overlapping ranges compare equal */
}

static struct range *tree_find(void **root, uint64_t addr, uint64_t size)
{
    struct range key = {.base = addr, .size = size};
    struct range **r = tfind(&key, root, range_cmp);
    return r ? *r : NULL;
}

static void free_range(void *p)
{
    struct range *r = p;
    free(r->shadow);
    free(r);
}

static void reset_process_state(bool free_records)
{
    /* after fork/clone the child starts without contexts or allocations (the parent's stay
     * charged to the parent) and must call cuInit again */
    if (free_records) {
        tdestroy(g_dev_tree, free_range);
        tdestroy(g_res_tree, free_range);
        tdestroy(g_host_tree, free);
    }
    g_dev_tree = g_res_tree = g_host_tree = NULL;
    memset(g_primary_refs, 0, sizeof g_primary_refs);
    for (int i = 0; i < FAKE_MAX_DEVICES; i++) {
        g_default_pool[i].used = g_default_pool[i].used_high = g_default_pool[i].reserved_high = 0;
        atomic_store(&g_last_end[i], 0);
    }
    t_depth = 0;
    g_inited = 0;
}

static void atfork_child(void)
{
    pthread_mutex_init(&g_mu, NULL);
    /* Another parent thread may have been inside tsearch/tdelete when fork copied the trees: walking
     * them here crashed about 1 forked child in 20,000 (SIGSEGV in tdestroy, seen in CI). The copies
     * are left unreferenced instead. */
    reset_process_state(false);
    g_pid = getpid();
}

static bool initialized(void)
{
    if (!__atomic_load_n(&g_inited, __ATOMIC_ACQUIRE))
        return false;
    if (g_pid != getpid()) { /* a clone() child that skipped the atfork handlers */
        pthread_mutex_lock(&g_mu);
        if (g_pid != getpid()) {
            reset_process_state(true); /* under g_mu: the trees are consistent */
            g_pid = getpid();
        }
        pthread_mutex_unlock(&g_mu);
        return false;
    }
    return true;
}

static int ndev(void)
{
    return fake_cfg()->device_count;
}

static CUcontext cur_ctx(void)
{
    return t_depth > 0 ? t_stack[t_depth - 1] : NULL;
}

static bool valid_ctx(CUcontext c)
{
    return c && c->magic == MAGIC_CTX;
}

/* device of the current context; CUDA_ERROR_INVALID_CONTEXT without one */
static CUresult cur_dev(int *dev)
{
    CUcontext c = cur_ctx();
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    *dev = c->dev;
    return CUDA_SUCCESS;
}

static bool is_special_stream(CUstream s)
{
    return s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD;
}

static CUresult stream_dev(CUstream s, int *dev)
{
    if (is_special_stream(s))
        return cur_dev(dev);
    if (s->magic != MAGIC_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    *dev = s->dev;
    return CUDA_SUCCESS;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* Pick a free device address range of `size` bytes; caller holds g_mu. */
static uint64_t pick_addr(void **tree, uint64_t *bump, uint64_t lo, uint64_t hi, uint64_t size, uint64_t align)
{
    uint64_t span = round_up(size ? size : 1, align);
    if (*bump < lo)
        *bump = lo;
    for (int wrapped = 0; wrapped < 2; wrapped++) {
        uint64_t a = round_up(*bump, align);
        while (a + span <= hi && a + span > a) {
            struct range *r = tree_find(tree, a, span);
            if (!r) {
                *bump = a + span;
                return a;
            }
            a = round_up(r->base + r->size, align);
        }
        *bump = lo;
    }
    return 0;
}

static struct range *insert_range(void **tree, struct range *r)
{
    struct range **slot = tsearch(r, tree, range_cmp);
    return slot ? *slot : NULL;
}

static bool charge(int dev, uint64_t bytes)
{
    return bytes == 0 || fake_mem_charge(dev, bytes);
}

static void uncharge(int dev, uint64_t bytes)
{
    if (bytes)
        fake_mem_uncharge(dev, bytes);
}

/* Charge `size` on `dev`, pick an address, record it. */
static CUresult dev_alloc(CUdeviceptr *dptr, uint64_t size, int dev, int kind, struct CUmemPoolHandle_st *pool,
                          bool v1)
{
    if (!dptr)
        return CUDA_ERROR_INVALID_VALUE;
    if (size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (!charge(dev, size))
        return CUDA_ERROR_OUT_OF_MEMORY;
    struct range *r = calloc(1, sizeof *r);
    if (!r) {
        uncharge(dev, size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    r->size = size;
    r->kind = kind;
    r->dev = dev;
    r->charged = size;
    r->pool = pool;
    if (size <= fake_cfg()->shadow_max) {
        r->shadow = calloc(1, size);
        if (!r->shadow) {
            free(r);
            uncharge(dev, size);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    }
    pthread_mutex_lock(&g_mu);
    if (v1)
        r->base = pick_addr(&g_dev_tree, &g_v1_bump, V1_VA_BASE, V1_VA_END, size, ALLOC_ALIGN);
    else
        r->base = pick_addr(&g_dev_tree, &g_bump[dev], DEV_VA_BASE + (uint64_t)dev * DEV_VA_SPAN,
                            DEV_VA_BASE + (uint64_t)(dev + 1) * DEV_VA_SPAN, size, ALLOC_ALIGN);
    if (!r->base || !insert_range(&g_dev_tree, r)) {
        pthread_mutex_unlock(&g_mu);
        free_range(r);
        uncharge(dev, size);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (pool) {
        pool->used += size;
        if (pool->used > pool->used_high)
            pool->used_high = pool->used;
        if (pool->used > pool->reserved_high)
            pool->reserved_high = pool->used;
    }
    pthread_mutex_unlock(&g_mu);
    *dptr = (CUdeviceptr)r->base;
    return CUDA_SUCCESS;
}

/* Free an allocation that starts exactly at ptr and whose kind is in kinds (bit mask). */
static CUresult dev_free(CUdeviceptr ptr, unsigned kinds)
{
    if (ptr == 0)
        return CUDA_SUCCESS;
    pthread_mutex_lock(&g_mu);
    struct range *r = tree_find(&g_dev_tree, ptr, 1);
    if (!r || r->base != ptr || !(kinds & (1u << r->kind))) {
        pthread_mutex_unlock(&g_mu);
        return CUDA_ERROR_INVALID_VALUE;
    }
    tdelete(r, &g_dev_tree, range_cmp);
    if (r->pool && r->pool->used >= r->size)
        r->pool->used -= r->size;
    pthread_mutex_unlock(&g_mu);
    uncharge(r->dev, r->charged);
    free_range(r);
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* errors, init, version                                                                        */

static const char *error_name(CUresult e)
{
    for (size_t i = 0; i < sizeof fake_cuda_error_names / sizeof fake_cuda_error_names[0]; i++)
        if (fake_cuda_error_names[i].code == (int)e)
            return fake_cuda_error_names[i].name;
    return NULL;
}

API cuGetErrorName(CUresult error, const char **pStr)
{
    if (!pStr)
        return CUDA_ERROR_INVALID_VALUE;
    const char *n = error_name(error);
    *pStr = n;
    return n ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API cuGetErrorString(CUresult error, const char **pStr)
{
    /* "out of memory" for CUDA_ERROR_OUT_OF_MEMORY and so on */
    static __thread char buf[128];
    if (!pStr)
        return CUDA_ERROR_INVALID_VALUE;
    const char *n = error_name(error);
    if (!n) {
        *pStr = NULL;
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (error == CUDA_SUCCESS) {
        *pStr = "no error";
        return CUDA_SUCCESS;
    }
    const char *s = n + strlen("CUDA_ERROR_");
    size_t i = 0;
    for (; s[i] && i < sizeof buf - 1; i++)
        buf[i] = s[i] == '_' ? ' ' : (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
    buf[i] = 0;
    *pStr = buf;
    return CUDA_SUCCESS;
}

API cuInit(unsigned int Flags)
{
    ENTER();
    if (Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    initialized(); /* resets state in a clone() child */
    if (__atomic_load_n(&g_inited, __ATOMIC_ACQUIRE))
        return CUDA_SUCCESS;
    const struct fake_config *c = fake_cfg();
    pthread_mutex_lock(&g_mu);
    if (!g_inited) {
        static bool atfork_done;
        if (!atfork_done) {
            pthread_atfork(NULL, NULL, atfork_child);
            atfork_done = true;
        }
        fake_state();
        for (int i = 0; i < FAKE_MAX_DEVICES; i++) {
            g_default_pool[i].magic = MAGIC_POOL;
            g_default_pool[i].dev = i;
            g_default_pool[i].is_default = true;
            g_cur_pool[i] = &g_default_pool[i];
            g_primary[i].magic = MAGIC_CTX;
            g_primary[i].dev = i;
            g_primary[i].primary = true;
            g_primary[i].id = (unsigned long long)i + 1;
        }
        atomic_store(&g_ctx_ids, 1000);
        g_pid = getpid();
        __atomic_store_n(&g_inited, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&g_mu);
    return c->device_count > 0 ? CUDA_SUCCESS : CUDA_ERROR_NO_DEVICE;
}

API cuDriverGetVersion(int *driverVersion)
{
    ENTER();
    if (!driverVersion)
        return CUDA_ERROR_INVALID_VALUE;
    *driverVersion = FAKE_DRIVER_VERSION;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* devices                                                                                      */

#define CHECK_DEV(d)                                                                               \
    do {                                                                                           \
        if ((d) < 0 || (d) >= ndev())                                                              \
            return CUDA_ERROR_INVALID_DEVICE;                                                      \
    } while (0)

API cuDeviceGet(CUdevice *device, int ordinal)
{
    ENTER_INIT();
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(ordinal);
    *device = ordinal;
    return CUDA_SUCCESS;
}

API cuDeviceGetCount(int *count)
{
    ENTER_INIT();
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    *count = ndev();
    return CUDA_SUCCESS;
}

API cuDeviceGetName(char *name, int len, CUdevice dev)
{
    ENTER_INIT();
    if (!name || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    snprintf(name, (size_t)len, "%s", fake_cfg()->name);
    return CUDA_SUCCESS;
}

static void uuid_bytes(int dev, CUuuid *out)
{
    const char *s = fake_cfg()->uuid[dev] + 4;
    int k = 0;
    for (; *s && k < 16; s++) {
        if (*s == '-')
            continue;
        unsigned v;
        sscanf(s, "%2x", &v);
        out->bytes[k++] = (char)v;
        s++;
    }
}

API cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    ENTER_INIT();
    if (!uuid)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    uuid_bytes(dev, uuid);
    return CUDA_SUCCESS;
}

API cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
    ENTER_INIT();
    if (!uuid)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    uuid_bytes(dev, uuid);
    return CUDA_SUCCESS;
}

API cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    ENTER_INIT();
    if (!bytes)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    *bytes = fake_cfg()->memory[dev];
    return CUDA_SUCCESS;
}

API cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
    ENTER_INIT();
    if (!bytes)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    uint64_t t = fake_cfg()->memory[dev];
    *bytes = t > UINT_MAX ? UINT_MAX : (unsigned)t;
    return CUDA_SUCCESS;
}

static bool pci_parts(int dev, unsigned *dom, unsigned *bus, unsigned *d, unsigned *fn)
{
    return sscanf(fake_cfg()->pci_bus_id[dev], "%x:%x:%x.%x", dom, bus, d, fn) == 4;
}

API cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice dev)
{
    ENTER_INIT();
    if (!pciBusId || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    unsigned dom, bus, d, fn;
    pci_parts(dev, &dom, &bus, &d, &fn);
    snprintf(pciBusId, (size_t)len, "%04x:%02x:%02x.%x", dom, bus, d, fn);
    return CUDA_SUCCESS;
}

API cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId)
{
    ENTER_INIT();
    if (!dev || !pciBusId)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned dom, bus, d, fn;
    if (sscanf(pciBusId, "%x:%x:%x.%x", &dom, &bus, &d, &fn) != 4)
        return CUDA_ERROR_INVALID_VALUE;
    for (int i = 0; i < ndev(); i++) {
        unsigned a, b, c2, e;
        pci_parts(i, &a, &b, &c2, &e);
        if (a == dom && b == bus && c2 == d && e == fn) {
            *dev = i;
            return CUDA_SUCCESS;
        }
    }
    return CUDA_ERROR_INVALID_DEVICE;
}

API cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
    ENTER_INIT();
    if (!pi)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    if ((int)attrib < 1 || attrib >= CU_DEVICE_ATTRIBUTE_MAX)
        return CUDA_ERROR_INVALID_VALUE;
    const struct fake_config *c = fake_cfg();
    unsigned dom, bus, d, fn;
    pci_parts(dev, &dom, &bus, &d, &fn);
    int v = 0;
    switch (attrib) {
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: v = c->sm_count[dev]; break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: v = (int)bus; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: v = (int)d; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: v = (int)dom; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: v = c->cc_major; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: v = c->cc_minor; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X:
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: v = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: v = INT_MAX; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: v = 49152; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: v = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_PITCH: v = INT_MAX; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK:
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: v = 65536; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: v = 1590000; break;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: v = 5001000; break;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: v = 256; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: v = 4 << 20; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: v = c->cc_major == 7 && c->cc_minor == 5 ? 1024 : 2048; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: v = 16; break;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: v = 512; break;
    case CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT: v = 32; break;
    case CU_DEVICE_ATTRIBUTE_GPU_OVERLAP:
    case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY:
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS:
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY:
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS:
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH:
    case CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED: v = 1; break;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: v = 3; break;
    case CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES: v = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR; break;
    default: v = 0; break;
    }
    *pi = v;
    return CUDA_SUCCESS;
}

API cuDeviceCanAccessPeer(int *canAccessPeer, CUdevice dev, CUdevice peerDev)
{
    ENTER_INIT();
    if (!canAccessPeer)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    CHECK_DEV(peerDev);
    *canAccessPeer = dev != peerDev;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* contexts                                                                                     */

static void push_ctx(CUcontext c)
{
    if (t_depth < CTX_STACK)
        t_stack[t_depth++] = c;
}

static CUresult primary_retain(CUcontext *pctx, CUdevice dev)
{
    pthread_mutex_lock(&g_mu);
    if (g_primary_refs[dev] == 0 && !charge(dev, fake_cfg()->context_size)) {
        pthread_mutex_unlock(&g_mu);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    g_primary_refs[dev]++;
    pthread_mutex_unlock(&g_mu);
    *pctx = &g_primary[dev];
    return CUDA_SUCCESS;
}

API cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    ENTER_INIT();
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    return primary_retain(pctx, dev);
}

static CUresult primary_release(CUdevice dev, bool reset)
{
    pthread_mutex_lock(&g_mu);
    if (g_primary_refs[dev] == 0) {
        pthread_mutex_unlock(&g_mu);
        return reset ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
    }
    g_primary_refs[dev] = reset ? 0 : g_primary_refs[dev] - 1;
    bool gone = g_primary_refs[dev] == 0;
    pthread_mutex_unlock(&g_mu);
    if (gone)
        uncharge(dev, fake_cfg()->context_size);
    return CUDA_SUCCESS;
}

FORWARD2(cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2, ENTER_INIT, (CUdevice dev), CHECK_DEV(dev),
         primary_release(dev, false))

FORWARD2(cuDevicePrimaryCtxReset, cuDevicePrimaryCtxReset_v2, ENTER_INIT, (CUdevice dev), CHECK_DEV(dev),
         primary_release(dev, true))

API cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active)
{
    ENTER_INIT();
    if (!flags || !active)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    pthread_mutex_lock(&g_mu);
    *active = g_primary_refs[dev] > 0;
    *flags = g_primary_flags[dev];
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

API cuDevicePrimaryCtxSetFlags(CUdevice dev, unsigned int flags)
{
    ENTER_INIT();
    CHECK_DEV(dev);
    g_primary_flags[dev] = flags;
    return CUDA_SUCCESS;
}

API cuDevicePrimaryCtxSetFlags_v2(CUdevice dev, unsigned int flags)
{
    ENTER_INIT();
    CHECK_DEV(dev);
    g_primary_flags[dev] = flags;
    return CUDA_SUCCESS;
}

static CUresult ctx_create(CUcontext *pctx, unsigned flags, CUdevice dev)
{
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    CUcontext c = calloc(1, sizeof *c);
    if (!c)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (!charge(dev, fake_cfg()->context_size)) {
        free(c);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    c->magic = MAGIC_CTX;
    c->dev = dev;
    c->flags = flags;
    c->id = atomic_fetch_add(&g_ctx_ids, 1);
    push_ctx(c);
    *pctx = c;
    return CUDA_SUCCESS;
}

FORWARD2(cuCtxCreate, cuCtxCreate_v2, ENTER_INIT, (CUcontext *pctx, unsigned int flags, CUdevice dev), (void)0,
         ctx_create(pctx, flags, dev))

API cuCtxCreate_v3(CUcontext *pctx, CUexecAffinityParam *paramsArray, int numParams, unsigned int flags, CUdevice dev)
{
    ENTER_INIT();
    if (numParams < 0 || (numParams > 0 && !paramsArray))
        return CUDA_ERROR_INVALID_VALUE;
    return ctx_create(pctx, flags, dev);
}

API cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *ctxCreateParams, unsigned int flags, CUdevice dev)
{
    ENTER_INIT();
    (void)ctxCreateParams;
    return ctx_create(pctx, flags, dev);
}

static CUresult ctx_destroy(CUcontext ctx)
{
    if (!valid_ctx(ctx) || ctx->primary)
        return CUDA_ERROR_INVALID_CONTEXT;
    for (int i = 0; i < t_depth; i++) {
        if (t_stack[i] == ctx) {
            memmove(&t_stack[i], &t_stack[i + 1], (size_t)(t_depth - i - 1) * sizeof t_stack[0]);
            t_depth--;
            i--;
        }
    }
    uncharge(ctx->dev, fake_cfg()->context_size);
    ctx->magic = 0;
    free(ctx);
    return CUDA_SUCCESS;
}

FORWARD2(cuCtxDestroy, cuCtxDestroy_v2, ENTER_INIT, (CUcontext ctx), (void)0, ctx_destroy(ctx))

API cuCtxGetCurrent(CUcontext *pctx)
{
    ENTER_INIT();
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = cur_ctx();
    return CUDA_SUCCESS;
}

API cuCtxSetCurrent(CUcontext ctx)
{
    ENTER_INIT();
    if (ctx && !valid_ctx(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!ctx) {
        if (t_depth > 0)
            t_depth--;
        return CUDA_SUCCESS;
    }
    if (t_depth == 0)
        push_ctx(ctx);
    else
        t_stack[t_depth - 1] = ctx;
    return CUDA_SUCCESS;
}

static CUresult ctx_push(CUcontext ctx)
{
    if (!valid_ctx(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (t_depth >= CTX_STACK)
        return CUDA_ERROR_INVALID_VALUE;
    push_ctx(ctx);
    return CUDA_SUCCESS;
}

static CUresult ctx_pop(CUcontext *pctx)
{
    if (t_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    CUcontext c = t_stack[--t_depth];
    if (pctx)
        *pctx = c;
    return CUDA_SUCCESS;
}

FORWARD2(cuCtxPushCurrent, cuCtxPushCurrent_v2, ENTER_INIT, (CUcontext ctx), (void)0, ctx_push(ctx))

FORWARD2(cuCtxPopCurrent, cuCtxPopCurrent_v2, ENTER_INIT, (CUcontext *pctx), (void)0, ctx_pop(pctx))

API cuCtxGetDevice(CUdevice *device)
{
    ENTER_INIT();
    if (!device)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = cur_dev(&dev);
    if (r == CUDA_SUCCESS)
        *device = dev;
    return r;
}

API cuCtxGetFlags(unsigned int *flags)
{
    ENTER_INIT();
    if (!flags)
        return CUDA_ERROR_INVALID_VALUE;
    CUcontext c = cur_ctx();
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    *flags = c->primary ? g_primary_flags[c->dev] : c->flags;
    return CUDA_SUCCESS;
}

API cuCtxGetId(CUcontext ctx, unsigned long long *ctxId)
{
    ENTER_INIT();
    if (!ctxId)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ctx)
        ctx = cur_ctx();
    if (!valid_ctx(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    *ctxId = ctx->id;
    return CUDA_SUCCESS;
}

API cuCtxGetApiVersion(CUcontext ctx, unsigned int *version)
{
    ENTER_INIT();
    if (!version)
        return CUDA_ERROR_INVALID_VALUE;
    if (!ctx)
        ctx = cur_ctx();
    if (!valid_ctx(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    *version = 3020;
    return CUDA_SUCCESS;
}

API cuCtxGetStreamPriorityRange(int *leastPriority, int *greatestPriority)
{
    ENTER_INIT();
    if (leastPriority)
        *leastPriority = 0;
    if (greatestPriority)
        *greatestPriority = -5;
    return CUDA_SUCCESS;
}

static void wait_until(uint64_t t)
{
    if (t > fake_now_ns())
        fake_sleep_until(t);
}

API cuCtxSynchronize(void)
{
    ENTER_INIT();
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    wait_until(atomic_load(&g_last_end[dev]));
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* device memory                                                                                */

API cuMemGetInfo_v2(size_t *free_, size_t *total)
{
    ENTER_INIT();
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    struct fake_dev *d = &fake_state()->dev[dev];
    uint64_t used = atomic_load(&d->used);
    if (free_)
        *free_ = used >= d->total ? 0 : d->total - used;
    if (total)
        *total = d->total;
    return CUDA_SUCCESS;
}

API cuMemGetInfo(unsigned int *free_, unsigned int *total)
{
    size_t f, t;
    CUresult r = cuMemGetInfo_v2(&f, &t);
    if (r != CUDA_SUCCESS)
        return r;
    if (free_)
        *free_ = f > UINT_MAX ? UINT_MAX : (unsigned)f;
    if (total)
        *total = t > UINT_MAX ? UINT_MAX : (unsigned)t;
    return CUDA_SUCCESS;
}

API cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    ENTER_INIT();
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    return dev_alloc(dptr, bytesize, dev, K_MEM, NULL, false);
}

API cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytesize)
{
    ENTER_INIT();
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    if (!dptr)
        return CUDA_ERROR_INVALID_VALUE;
    CUdeviceptr p;
    r = dev_alloc(&p, bytesize, dev, K_MEM, NULL, true);
    if (r == CUDA_SUCCESS)
        *dptr = (CUdeviceptr_v1)p;
    return r;
}

static CUresult alloc_pitch(CUdeviceptr *dptr, size_t *pPitch, size_t width, size_t height, unsigned elem, bool v1)
{
    if (!dptr || !pPitch || width == 0 || height == 0 || (elem != 4 && elem != 8 && elem != 16))
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    size_t pitch = (size_t)round_up(width, ALLOC_ALIGN);
    if (height > SIZE_MAX / pitch)
        return CUDA_ERROR_OUT_OF_MEMORY;
    r = dev_alloc(dptr, (uint64_t)pitch * height, dev, K_MEM, NULL, v1);
    if (r == CUDA_SUCCESS)
        *pPitch = pitch;
    return r;
}

API cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height, unsigned int ElementSizeBytes)
{
    ENTER_INIT();
    return alloc_pitch(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes, false);
}

API cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pPitch, unsigned int WidthInBytes, unsigned int Height,
                    unsigned int ElementSizeBytes)
{
    ENTER_INIT();
    if (!dptr || !pPitch)
        return CUDA_ERROR_INVALID_VALUE;
    CUdeviceptr p;
    size_t pitch;
    CUresult r = alloc_pitch(&p, &pitch, WidthInBytes, Height, ElementSizeBytes, true);
    if (r == CUDA_SUCCESS) {
        *dptr = (CUdeviceptr_v1)p;
        *pPitch = (unsigned)pitch;
    }
    return r;
}

API cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    ENTER_INIT();
    if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    /* managed memory is charged to the current device in full at allocation */
    return dev_alloc(dptr, bytesize, dev, K_MANAGED, NULL, false);
}

#define FREEABLE ((1u << K_MEM) | (1u << K_MANAGED) | (1u << K_ASYNC))

API cuMemFree_v2(CUdeviceptr dptr)
{
    ENTER_INIT();
    return dev_free(dptr, FREEABLE);
}

API cuMemFree(CUdeviceptr_v1 dptr)
{
    ENTER_INIT();
    return dev_free(dptr, FREEABLE);
}

API cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr)
{
    ENTER_INIT();
    pthread_mutex_lock(&g_mu);
    struct range *r = tree_find(&g_dev_tree, dptr, 1);
    if (r) {
        if (pbase)
            *pbase = r->base;
        if (psize)
            *psize = r->size;
    }
    pthread_mutex_unlock(&g_mu);
    return r ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

API cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr)
{
    ENTER_INIT();
    if (!data)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    struct range *r = tree_find(&g_dev_tree, ptr, 1);
    struct range copy = r ? *r : (struct range){0};
    pthread_mutex_unlock(&g_mu);
    if (!r)
        return CUDA_ERROR_INVALID_VALUE;
    switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext *)data = &g_primary[copy.dev]; break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: *(unsigned *)data = CU_MEMORYTYPE_DEVICE; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: *(CUdeviceptr *)data = ptr; break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: *(int *)data = copy.kind == K_MANAGED; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = copy.dev; break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *(CUdeviceptr *)data = copy.base; break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = copy.size; break;
    case CU_POINTER_ATTRIBUTE_MAPPED: *(int *)data = 1; break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

/* -- stream-ordered allocator -- */

static CUresult alloc_async(CUdeviceptr *dptr, size_t bytesize, struct CUmemPoolHandle_st *pool, CUstream hStream)
{
    int dev;
    CUresult r = stream_dev(hStream, &dev);
    if (r != CUDA_SUCCESS)
        return r;
    if (!pool) {
        pool = g_cur_pool[dev];
    } else if (pool->magic != MAGIC_POOL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    return dev_alloc(dptr, bytesize, pool->dev, K_ASYNC, pool, false);
}

FORWARD2(cuMemAllocAsync, cuMemAllocAsync_ptsz, ENTER_INIT, (CUdeviceptr *dptr, size_t bytesize, CUstream hStream),
         (void)0, alloc_async(dptr, bytesize, NULL, hStream))

API cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream)
{
    ENTER_INIT();
    if (!pool)
        return CUDA_ERROR_INVALID_VALUE;
    return alloc_async(dptr, bytesize, pool, hStream);
}

API cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool, CUstream hStream)
{
    ENTER_INIT();
    if (!pool)
        return CUDA_ERROR_INVALID_VALUE;
    return alloc_async(dptr, bytesize, pool, hStream);
}

static CUresult free_async(CUdeviceptr dptr, CUstream hStream)
{
    int dev;
    CUresult r = stream_dev(hStream, &dev);
    if (r != CUDA_SUCCESS)
        return r;
    if (dptr == 0)
        return CUDA_ERROR_INVALID_VALUE;
    return dev_free(dptr, FREEABLE);
}

FORWARD2(cuMemFreeAsync, cuMemFreeAsync_ptsz, ENTER_INIT, (CUdeviceptr dptr, CUstream hStream), (void)0,
         free_async(dptr, hStream))

API cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *poolProps)
{
    ENTER_INIT();
    if (!pool || !poolProps || poolProps->allocType != CU_MEM_ALLOCATION_TYPE_PINNED ||
        poolProps->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(poolProps->location.id);
    struct CUmemPoolHandle_st *p = calloc(1, sizeof *p);
    if (!p)
        return CUDA_ERROR_OUT_OF_MEMORY;
    p->magic = MAGIC_POOL;
    p->dev = poolProps->location.id;
    *pool = p;
    return CUDA_SUCCESS;
}

API cuMemPoolDestroy(CUmemoryPool pool)
{
    ENTER_INIT();
    if (!pool || pool->magic != MAGIC_POOL || pool->is_default)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    if (g_cur_pool[pool->dev] == pool)
        g_cur_pool[pool->dev] = &g_default_pool[pool->dev];
    pthread_mutex_unlock(&g_mu);
    pool->magic = 0; /* outstanding allocations keep a pointer: leak the struct */
    return CUDA_SUCCESS;
}

API cuDeviceGetDefaultMemPool(CUmemoryPool *pool_out, CUdevice dev)
{
    ENTER_INIT();
    if (!pool_out)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    *pool_out = &g_default_pool[dev];
    return CUDA_SUCCESS;
}

API cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    ENTER_INIT();
    if (!pool)
        return CUDA_ERROR_INVALID_VALUE;
    CHECK_DEV(dev);
    *pool = g_cur_pool[dev];
    return CUDA_SUCCESS;
}

API cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    ENTER_INIT();
    CHECK_DEV(dev);
    if (!pool || pool->magic != MAGIC_POOL || pool->dev != dev)
        return CUDA_ERROR_INVALID_VALUE;
    g_cur_pool[dev] = pool;
    return CUDA_SUCCESS;
}

API cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    ENTER_INIT();
    if (!pool || pool->magic != MAGIC_POOL || !value)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    CUresult r = CUDA_SUCCESS;
    switch (attr) {
    /* the fake's pools keep nothing cached: reserved == used */
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT:
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *(cuuint64_t *)value = pool->used; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *(cuuint64_t *)value = pool->reserved_high; break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *(cuuint64_t *)value = pool->used_high; break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *(cuuint64_t *)value = pool->release_threshold; break;
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: *(int *)value = 1; break;
    default: r = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

API cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
    ENTER_INIT();
    if (!pool || pool->magic != MAGIC_POOL || !value)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    CUresult r = CUDA_SUCCESS;
    switch (attr) {
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: pool->release_threshold = *(cuuint64_t *)value; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
        if (*(cuuint64_t *)value != 0)
            r = CUDA_ERROR_INVALID_VALUE;
        else
            pool->reserved_high = pool->used;
        break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
        if (*(cuuint64_t *)value != 0)
            r = CUDA_ERROR_INVALID_VALUE;
        else
            pool->used_high = pool->used;
        break;
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: break;
    default: r = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

API cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
    ENTER_INIT();
    (void)minBytesToKeep;
    if (!pool || pool->magic != MAGIC_POOL)
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

/* -- virtual memory management -- */

static bool vmm_prop_ok(const CUmemAllocationProp *prop)
{
    if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED)
        return false;
    switch (prop->location.type) {
    case CU_MEM_LOCATION_TYPE_DEVICE: return prop->location.id >= 0 && prop->location.id < ndev();
    case CU_MEM_LOCATION_TYPE_HOST:
    case CU_MEM_LOCATION_TYPE_HOST_NUMA:
    case CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT: return true;
    default: return false;
    }
}

API cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                  CUmemAllocationGranularity_flags option)
{
    ENTER_INIT();
    (void)option;
    if (!granularity || !vmm_prop_ok(prop))
        return CUDA_ERROR_INVALID_VALUE;
    *granularity = GRANULARITY;
    return CUDA_SUCCESS;
}

API cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                unsigned long long flags)
{
    ENTER_INIT();
    if (!handle || flags != 0 || !vmm_prop_ok(prop) || size == 0 || size % GRANULARITY)
        return CUDA_ERROR_INVALID_VALUE;
    struct vmm_handle *h = calloc(1, sizeof *h);
    if (!h)
        return CUDA_ERROR_OUT_OF_MEMORY;
    h->magic = MAGIC_HANDLE;
    h->size = size;
    h->prop = *prop;
    h->dev = prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE ? prop->location.id : -1;
    atomic_store(&h->refs, 1);
    if (h->dev >= 0 && !charge(h->dev, size)) {
        free(h);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)h;
    return CUDA_SUCCESS;
}

static struct vmm_handle *to_handle(CUmemGenericAllocationHandle v)
{
    struct vmm_handle *h = (struct vmm_handle *)(uintptr_t)v;
    return h && h->magic == MAGIC_HANDLE ? h : NULL;
}

static void handle_unref(struct vmm_handle *h)
{
    if (atomic_fetch_sub(&h->refs, 1) == 1) {
        if (h->dev >= 0)
            uncharge(h->dev, h->size);
        h->magic = 0;
        free(h);
    }
}

API cuMemRelease(CUmemGenericAllocationHandle handle)
{
    ENTER_INIT();
    struct vmm_handle *h = to_handle(handle);
    if (!h)
        return CUDA_ERROR_INVALID_VALUE;
    handle_unref(h); /* physical memory goes when the last mapping is unmapped */
    return CUDA_SUCCESS;
}

API cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop, CUmemGenericAllocationHandle handle)
{
    ENTER_INIT();
    struct vmm_handle *h = to_handle(handle);
    if (!h || !prop)
        return CUDA_ERROR_INVALID_VALUE;
    *prop = h->prop;
    return CUDA_SUCCESS;
}

API cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr)
{
    ENTER_INIT();
    if (!handle)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    struct range *r = tree_find(&g_dev_tree, (uint64_t)(uintptr_t)addr, 1);
    struct vmm_handle *h = r && r->kind == K_MAPPED ? r->handle : NULL;
    if (h)
        atomic_fetch_add(&h->refs, 1);
    pthread_mutex_unlock(&g_mu);
    if (!h)
        return CUDA_ERROR_INVALID_VALUE;
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)h;
    return CUDA_SUCCESS;
}

API cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr, unsigned long long flags)
{
    ENTER_INIT();
    (void)addr;
    if (!ptr || size == 0 || size % GRANULARITY || flags != 0 || (alignment & (alignment - 1)))
        return CUDA_ERROR_INVALID_VALUE;
    uint64_t align = alignment > GRANULARITY ? alignment : GRANULARITY;
    struct range *r = calloc(1, sizeof *r);
    if (!r)
        return CUDA_ERROR_OUT_OF_MEMORY;
    r->size = size;
    r->kind = K_RESERVED;
    r->dev = -1;
    pthread_mutex_lock(&g_mu);
    r->base = pick_addr(&g_res_tree, &g_res_bump, RESERVE_VA_BASE, RESERVE_VA_BASE + RESERVE_VA_SPAN, size, align);
    if (!r->base || !insert_range(&g_res_tree, r)) {
        pthread_mutex_unlock(&g_mu);
        free(r);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    pthread_mutex_unlock(&g_mu);
    *ptr = r->base;
    return CUDA_SUCCESS;
}

API cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    ENTER_INIT();
    pthread_mutex_lock(&g_mu);
    struct range *r = tree_find(&g_res_tree, ptr, 1);
    if (!r || r->base != ptr || r->size != size) {
        pthread_mutex_unlock(&g_mu);
        return CUDA_ERROR_INVALID_VALUE;
    }
    tdelete(r, &g_res_tree, range_cmp);
    pthread_mutex_unlock(&g_mu);
    free(r);
    return CUDA_SUCCESS;
}

API cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle, unsigned long long flags)
{
    ENTER_INIT();
    struct vmm_handle *h = to_handle(handle);
    if (!h || flags != 0 || offset != 0 || size == 0 || size % GRANULARITY || size > h->size)
        return CUDA_ERROR_INVALID_VALUE;
    struct range *m = calloc(1, sizeof *m);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->base = ptr;
    m->size = size;
    m->kind = K_MAPPED;
    m->dev = h->dev < 0 ? 0 : h->dev;
    m->handle = h;
    pthread_mutex_lock(&g_mu);
    struct range *res = tree_find(&g_res_tree, ptr, size);
    bool inside = res && ptr >= res->base && ptr + size <= res->base + res->size;
    if (!inside || tree_find(&g_dev_tree, ptr, size) || !insert_range(&g_dev_tree, m)) {
        pthread_mutex_unlock(&g_mu);
        free(m);
        return CUDA_ERROR_INVALID_VALUE;
    }
    atomic_fetch_add(&h->refs, 1);
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
}

API cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    ENTER_INIT();
    if (size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int n = 0;
    for (;;) {
        pthread_mutex_lock(&g_mu);
        struct range *m = tree_find(&g_dev_tree, ptr, size);
        if (!m || m->kind != K_MAPPED) {
            pthread_mutex_unlock(&g_mu);
            break;
        }
        tdelete(m, &g_dev_tree, range_cmp);
        pthread_mutex_unlock(&g_mu);
        handle_unref(m->handle);
        free(m);
        n++;
    }
    return n ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
    ENTER_INIT();
    if (!desc || count == 0 || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    struct range *m = tree_find(&g_dev_tree, ptr, 1);
    bool ok = m && m->kind == K_MAPPED;
    pthread_mutex_unlock(&g_mu);
    return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* -- arrays -- */

static uint64_t format_bytes(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: return 2;
    default: return 4;
    }
}

static uint64_t array_bytes(size_t w, size_t h, size_t d, CUarray_format f, unsigned ch)
{
    return (uint64_t)(w ? w : 1) * (h ? h : 1) * (d ? d : 1) * format_bytes(f) * (ch ? ch : 1);
}

static CUresult array_create(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *desc)
{
    if (!pHandle || !desc || desc->Width == 0 || (desc->NumChannels != 1 && desc->NumChannels != 2 && desc->NumChannels != 4))
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t bytes = array_bytes(desc->Width, desc->Height, desc->Depth, desc->Format, desc->NumChannels);
    struct CUarray_st *a = calloc(1, sizeof *a);
    if (!a)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (!charge(dev, bytes)) {
        free(a);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    a->magic = MAGIC_ARRAY;
    a->dev = dev;
    a->bytes = bytes;
    a->desc = *desc;
    *pHandle = a;
    return CUDA_SUCCESS;
}

API cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *pAllocateArray)
{
    ENTER_INIT();
    if (!pAllocateArray)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d = {.Width = pAllocateArray->Width,
                                 .Height = pAllocateArray->Height,
                                 .Format = pAllocateArray->Format,
                                 .NumChannels = pAllocateArray->NumChannels};
    return array_create(pHandle, &d);
}

API cuArrayCreate(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR_v1 *pAllocateArray)
{
    ENTER_INIT();
    if (!pAllocateArray)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d = {.Width = pAllocateArray->Width,
                                 .Height = pAllocateArray->Height,
                                 .Format = pAllocateArray->Format,
                                 .NumChannels = pAllocateArray->NumChannels};
    return array_create(pHandle, &d);
}

API cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *pAllocateArray)
{
    ENTER_INIT();
    return array_create(pHandle, pAllocateArray);
}

API cuArray3DCreate(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR_v1 *pAllocateArray)
{
    ENTER_INIT();
    if (!pAllocateArray)
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_ARRAY3D_DESCRIPTOR d = {.Width = pAllocateArray->Width,
                                 .Height = pAllocateArray->Height,
                                 .Depth = pAllocateArray->Depth,
                                 .Format = pAllocateArray->Format,
                                 .NumChannels = pAllocateArray->NumChannels,
                                 .Flags = pAllocateArray->Flags};
    return array_create(pHandle, &d);
}

API cuArrayDestroy(CUarray hArray)
{
    ENTER_INIT();
    if (!hArray || hArray->magic != MAGIC_ARRAY)
        return CUDA_ERROR_INVALID_HANDLE;
    uncharge(hArray->dev, hArray->bytes);
    hArray->magic = 0;
    free(hArray);
    return CUDA_SUCCESS;
}

API cuArray3DGetDescriptor_v2(CUDA_ARRAY3D_DESCRIPTOR *pArrayDescriptor, CUarray hArray)
{
    ENTER_INIT();
    if (!pArrayDescriptor || !hArray || hArray->magic != MAGIC_ARRAY)
        return CUDA_ERROR_INVALID_HANDLE;
    *pArrayDescriptor = hArray->desc;
    return CUDA_SUCCESS;
}

API cuMipmappedArrayCreate(CUmipmappedArray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *desc, unsigned int numMipmapLevels)
{
    ENTER_INIT();
    if (!pHandle || !desc || desc->Width == 0 || numMipmapLevels == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t bytes = 0;
    size_t w = desc->Width, h = desc->Height, d = desc->Depth;
    for (unsigned l = 0; l < numMipmapLevels; l++) {
        bytes += array_bytes(w, h, d, desc->Format, desc->NumChannels);
        w = w > 1 ? w / 2 : 1;
        h = h > 1 ? h / 2 : h;
        d = d > 1 ? d / 2 : d;
    }
    struct CUmipmappedArray_st *m = calloc(1, sizeof *m);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (!charge(dev, bytes)) {
        free(m);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    m->magic = MAGIC_MIPMAP;
    m->dev = dev;
    m->bytes = bytes;
    *pHandle = m;
    return CUDA_SUCCESS;
}

API cuMipmappedArrayDestroy(CUmipmappedArray hMipmappedArray)
{
    ENTER_INIT();
    if (!hMipmappedArray || hMipmappedArray->magic != MAGIC_MIPMAP)
        return CUDA_ERROR_INVALID_HANDLE;
    uncharge(hMipmappedArray->dev, hMipmappedArray->bytes);
    hMipmappedArray->magic = 0;
    free(hMipmappedArray);
    return CUDA_SUCCESS;
}

/* -- host memory (real host memory, never charged to a device) -- */

static CUresult host_alloc(void **pp, size_t size)
{
    if (!pp || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    void *p = NULL;
    if (posix_memalign(&p, 4096, size) != 0)
        return CUDA_ERROR_OUT_OF_MEMORY;
    struct range *h = calloc(1, sizeof *h);
    if (!h) {
        free(p);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    h->base = (uint64_t)(uintptr_t)p;
    h->size = size;
    h->kind = K_HOST;
    pthread_mutex_lock(&g_mu);
    insert_range(&g_host_tree, h);
    pthread_mutex_unlock(&g_mu);
    *pp = p;
    return CUDA_SUCCESS;
}

API cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
    ENTER_INIT();
    if (Flags & ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED))
        return CUDA_ERROR_INVALID_VALUE;
    return host_alloc(pp, bytesize);
}

API cuMemAllocHost_v2(void **pp, size_t bytesize)
{
    ENTER_INIT();
    return host_alloc(pp, bytesize);
}

API cuMemAllocHost(void **pp, unsigned int bytesize)
{
    ENTER_INIT();
    return host_alloc(pp, bytesize);
}

API cuMemFreeHost(void *p)
{
    ENTER_INIT();
    pthread_mutex_lock(&g_mu);
    struct range *h = tree_find(&g_host_tree, (uint64_t)(uintptr_t)p, 1);
    if (!h || h->kind != K_HOST || h->base != (uint64_t)(uintptr_t)p) {
        pthread_mutex_unlock(&g_mu);
        return CUDA_ERROR_INVALID_VALUE;
    }
    tdelete(h, &g_host_tree, range_cmp);
    pthread_mutex_unlock(&g_mu);
    free(p);
    free(h);
    return CUDA_SUCCESS;
}

static CUresult host_register(void *p, size_t size)
{
    if (!p || size == 0)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = cur_dev(&dev);
    if (r != CUDA_SUCCESS)
        return r;
    struct range *h = calloc(1, sizeof *h);
    if (!h)
        return CUDA_ERROR_OUT_OF_MEMORY;
    h->base = (uint64_t)(uintptr_t)p;
    h->size = size;
    h->kind = K_HOST_REG;
    pthread_mutex_lock(&g_mu);
    bool clash = tree_find(&g_host_tree, h->base, size) != NULL;
    if (!clash)
        insert_range(&g_host_tree, h);
    pthread_mutex_unlock(&g_mu);
    if (clash) {
        free(h);
        return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    }
    return CUDA_SUCCESS;
}

FORWARD2(cuMemHostRegister_v2, cuMemHostRegister, ENTER_INIT, (void *p, size_t bytesize, unsigned int Flags),
         (void)Flags, host_register(p, bytesize))

API cuMemHostUnregister(void *p)
{
    ENTER_INIT();
    pthread_mutex_lock(&g_mu);
    struct range *h = tree_find(&g_host_tree, (uint64_t)(uintptr_t)p, 1);
    if (!h || h->kind != K_HOST_REG || h->base != (uint64_t)(uintptr_t)p) {
        pthread_mutex_unlock(&g_mu);
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    }
    tdelete(h, &g_host_tree, range_cmp);
    pthread_mutex_unlock(&g_mu);
    free(h);
    return CUDA_SUCCESS;
}

API cuMemHostGetDevicePointer_v2(CUdeviceptr *pdptr, void *p, unsigned int Flags)
{
    ENTER_INIT();
    if (!pdptr || Flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_mu);
    bool ok = tree_find(&g_host_tree, (uint64_t)(uintptr_t)p, 1) != NULL;
    pthread_mutex_unlock(&g_mu);
    if (!ok)
        return CUDA_ERROR_INVALID_VALUE;
    *pdptr = (CUdeviceptr)(uintptr_t)p;
    return CUDA_SUCCESS;
}

/* -- copies and sets: device memory of at most FAKE_CUDA_SHADOW_MAX bytes is backed by host
 * memory, larger allocations are address ranges only (writes are dropped, reads give zeros) -- */

/* dst/src: device (looked up) or host; len bytes; for memset, src is NULL and val/width used */
static CUresult dev_span(CUdeviceptr p, size_t len, uint8_t **host, bool *found)
{
    struct range *r = tree_find(&g_dev_tree, p, len ? len : 1);
    *found = false;
    *host = NULL;
    if (!r)
        return CUDA_SUCCESS;
    if (p < r->base || p + len > r->base + r->size)
        return CUDA_ERROR_INVALID_VALUE;
    *found = true;
    if (r->shadow)
        *host = (uint8_t *)r->shadow + (p - r->base);
    return CUDA_SUCCESS;
}

static void sync_with_device_work(void)
{
    int dev;
    if (cur_dev(&dev) == CUDA_SUCCESS)
        wait_until(atomic_load(&g_last_end[dev]));
}

static CUresult copy_htod(CUdeviceptr dst, const void *src, size_t n, bool sync)
{
    if (n && !src)
        return CUDA_ERROR_INVALID_VALUE;
    if (sync)
        sync_with_device_work();
    pthread_mutex_lock(&g_mu);
    uint8_t *h;
    bool found;
    CUresult r = dev_span(dst, n, &h, &found);
    if (r == CUDA_SUCCESS && !found)
        r = CUDA_ERROR_INVALID_VALUE;
    if (r == CUDA_SUCCESS && h)
        memcpy(h, src, n);
    pthread_mutex_unlock(&g_mu);
    return r;
}

static CUresult copy_dtoh(void *dst, CUdeviceptr src, size_t n, bool sync)
{
    if (n && !dst)
        return CUDA_ERROR_INVALID_VALUE;
    if (sync)
        sync_with_device_work();
    pthread_mutex_lock(&g_mu);
    uint8_t *h;
    bool found;
    CUresult r = dev_span(src, n, &h, &found);
    if (r == CUDA_SUCCESS && !found)
        r = CUDA_ERROR_INVALID_VALUE;
    if (r == CUDA_SUCCESS) {
        if (h)
            memcpy(dst, h, n);
        else
            memset(dst, 0, n);
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

/* unified copy: either side may be device memory or host memory */
static CUresult copy_any(CUdeviceptr dst, CUdeviceptr src, size_t n, bool sync)
{
    if (sync)
        sync_with_device_work();
    pthread_mutex_lock(&g_mu);
    uint8_t *hd, *hs;
    bool fd, fs;
    CUresult r = dev_span(dst, n, &hd, &fd);
    if (r == CUDA_SUCCESS)
        r = dev_span(src, n, &hs, &fs);
    if (r == CUDA_SUCCESS) {
        uint8_t *d = fd ? hd : (uint8_t *)(uintptr_t)dst;
        const uint8_t *s = fs ? hs : (const uint8_t *)(uintptr_t)src;
        if (d && s && n)
            memmove(d, s, n);
        else if (d && !s && n)
            memset(d, 0, n);
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

static CUresult set_dev(CUdeviceptr dst, uint32_t val, unsigned width, size_t count, bool sync)
{
    if (sync)
        sync_with_device_work();
    pthread_mutex_lock(&g_mu);
    uint8_t *h;
    bool found;
    size_t n = count * width;
    CUresult r = dev_span(dst, n, &h, &found);
    if (r == CUDA_SUCCESS && !found)
        r = CUDA_ERROR_INVALID_VALUE;
    if (r == CUDA_SUCCESS && h) {
        for (size_t i = 0; i < count; i++)
            memcpy(h + i * width, &val, width); /* little endian */
    }
    pthread_mutex_unlock(&g_mu);
    return r;
}

#define COPY_FN(name, call, ...)                                                                   \
    API name(__VA_ARGS__)                                                                          \
    {                                                                                              \
        ENTER_INIT();                                                                              \
        return call;                                                                               \
    }

/* async variants: the stream is validated, the copy happens at once */
#define COPY_FN_ASYNC(name, call, ...)                                                             \
    API name(__VA_ARGS__)                                                                          \
    {                                                                                              \
        ENTER_INIT();                                                                              \
        int dev_;                                                                                  \
        CUresult r_ = stream_dev(hStream, &dev_);                                                  \
        if (r_ != CUDA_SUCCESS)                                                                    \
            return r_;                                                                             \
        return call;                                                                               \
    }

COPY_FN(cuMemcpyHtoD_v2, copy_htod(dstDevice, srcHost, ByteCount, true), CUdeviceptr dstDevice, const void *srcHost,
        size_t ByteCount)
COPY_FN(cuMemcpyHtoD_v2_ptds, copy_htod(dstDevice, srcHost, ByteCount, true), CUdeviceptr dstDevice,
        const void *srcHost, size_t ByteCount)
COPY_FN(cuMemcpyHtoD, copy_htod(dstDevice, srcHost, ByteCount, true), CUdeviceptr_v1 dstDevice, const void *srcHost,
        unsigned int ByteCount)
COPY_FN(cuMemcpyDtoH_v2, copy_dtoh(dstHost, srcDevice, ByteCount, true), void *dstHost, CUdeviceptr srcDevice,
        size_t ByteCount)
COPY_FN(cuMemcpyDtoH_v2_ptds, copy_dtoh(dstHost, srcDevice, ByteCount, true), void *dstHost, CUdeviceptr srcDevice,
        size_t ByteCount)
COPY_FN(cuMemcpyDtoH, copy_dtoh(dstHost, srcDevice, ByteCount, true), void *dstHost, CUdeviceptr_v1 srcDevice,
        unsigned int ByteCount)
COPY_FN(cuMemcpyDtoD_v2, copy_any(dstDevice, srcDevice, ByteCount, false), CUdeviceptr dstDevice,
        CUdeviceptr srcDevice, size_t ByteCount)
COPY_FN(cuMemcpyDtoD_v2_ptds, copy_any(dstDevice, srcDevice, ByteCount, false), CUdeviceptr dstDevice,
        CUdeviceptr srcDevice, size_t ByteCount)
COPY_FN(cuMemcpyDtoD, copy_any(dstDevice, srcDevice, ByteCount, false), CUdeviceptr_v1 dstDevice,
        CUdeviceptr_v1 srcDevice, unsigned int ByteCount)
COPY_FN_ASYNC(cuMemcpyHtoDAsync_v2, copy_htod(dstDevice, srcHost, ByteCount, false), CUdeviceptr dstDevice,
        const void *srcHost, size_t ByteCount, CUstream hStream)
COPY_FN_ASYNC(cuMemcpyHtoDAsync_v2_ptsz, copy_htod(dstDevice, srcHost, ByteCount, false), CUdeviceptr dstDevice,
        const void *srcHost, size_t ByteCount, CUstream hStream)
COPY_FN_ASYNC(cuMemcpyDtoHAsync_v2, copy_dtoh(dstHost, srcDevice, ByteCount, false), void *dstHost, CUdeviceptr srcDevice,
        size_t ByteCount, CUstream hStream)
COPY_FN_ASYNC(cuMemcpyDtoHAsync_v2_ptsz, copy_dtoh(dstHost, srcDevice, ByteCount, false), void *dstHost,
        CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
COPY_FN_ASYNC(cuMemcpyDtoDAsync_v2, copy_any(dstDevice, srcDevice, ByteCount, false), CUdeviceptr dstDevice,
        CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
COPY_FN_ASYNC(cuMemcpyDtoDAsync_v2_ptsz, copy_any(dstDevice, srcDevice, ByteCount, false), CUdeviceptr dstDevice,
        CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream)
COPY_FN(cuMemcpy, copy_any(dst, src, ByteCount, true), CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
COPY_FN(cuMemcpy_ptds, copy_any(dst, src, ByteCount, true), CUdeviceptr dst, CUdeviceptr src, size_t ByteCount)
COPY_FN_ASYNC(cuMemcpyAsync, copy_any(dst, src, ByteCount, false), CUdeviceptr dst, CUdeviceptr src, size_t ByteCount,
        CUstream hStream)
COPY_FN_ASYNC(cuMemcpyAsync_ptsz, copy_any(dst, src, ByteCount, false), CUdeviceptr dst, CUdeviceptr src, size_t ByteCount,
        CUstream hStream)
COPY_FN(cuMemsetD8_v2, set_dev(dstDevice, uc, 1, N, true), CUdeviceptr dstDevice, unsigned char uc, size_t N)
COPY_FN(cuMemsetD8_v2_ptds, set_dev(dstDevice, uc, 1, N, true), CUdeviceptr dstDevice, unsigned char uc, size_t N)
COPY_FN(cuMemsetD8, set_dev(dstDevice, uc, 1, N, true), CUdeviceptr_v1 dstDevice, unsigned char uc, unsigned int N)
COPY_FN(cuMemsetD16_v2, set_dev(dstDevice, us, 2, N, true), CUdeviceptr dstDevice, unsigned short us, size_t N)
COPY_FN(cuMemsetD16_v2_ptds, set_dev(dstDevice, us, 2, N, true), CUdeviceptr dstDevice, unsigned short us, size_t N)
COPY_FN(cuMemsetD32_v2, set_dev(dstDevice, ui, 4, N, true), CUdeviceptr dstDevice, unsigned int ui, size_t N)
COPY_FN(cuMemsetD32_v2_ptds, set_dev(dstDevice, ui, 4, N, true), CUdeviceptr dstDevice, unsigned int ui, size_t N)
COPY_FN_ASYNC(cuMemsetD8Async, set_dev(dstDevice, uc, 1, N, false), CUdeviceptr dstDevice, unsigned char uc, size_t N,
        CUstream hStream)
COPY_FN_ASYNC(cuMemsetD8Async_ptsz, set_dev(dstDevice, uc, 1, N, false), CUdeviceptr dstDevice, unsigned char uc, size_t N,
        CUstream hStream)
COPY_FN_ASYNC(cuMemsetD32Async, set_dev(dstDevice, ui, 4, N, false), CUdeviceptr dstDevice, unsigned int ui, size_t N,
        CUstream hStream)
COPY_FN_ASYNC(cuMemsetD32Async_ptsz, set_dev(dstDevice, ui, 4, N, false), CUdeviceptr dstDevice, unsigned int ui, size_t N,
        CUstream hStream)

/* managed-memory hints: validated, no effect */
static CUresult hint_range(CUdeviceptr p, size_t n)
{
    pthread_mutex_lock(&g_mu);
    struct range *r = tree_find(&g_dev_tree, p, n ? n : 1);
    bool ok = r && r->kind == K_MANAGED;
    pthread_mutex_unlock(&g_mu);
    return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API cuMemAdvise(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUdevice device)
{
    ENTER_INIT();
    (void)advice;
    if (device != CU_DEVICE_CPU)
        CHECK_DEV(device);
    return hint_range(devPtr, count);
}

API cuMemAdvise_v2(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUmemLocation location)
{
    ENTER_INIT();
    (void)advice;
    (void)location;
    return hint_range(devPtr, count);
}

API cuMemPrefetchAsync(CUdeviceptr devPtr, size_t count, CUdevice dstDevice, CUstream hStream)
{
    ENTER_INIT();
    (void)hStream;
    if (dstDevice != CU_DEVICE_CPU)
        CHECK_DEV(dstDevice);
    return hint_range(devPtr, count);
}

API cuMemPrefetchAsync_ptsz(CUdeviceptr devPtr, size_t count, CUdevice dstDevice, CUstream hStream)
{
    ENTER_INIT();
    (void)hStream;
    if (dstDevice != CU_DEVICE_CPU)
        CHECK_DEV(dstDevice);
    return hint_range(devPtr, count);
}

FORWARD2(cuMemPrefetchAsync_v2, cuMemPrefetchAsync_v2_ptsz, ENTER_INIT, (CUdeviceptr devPtr, size_t count,
         CUmemLocation location, unsigned int flags, CUstream hStream), (void)location; (void)flags; (void)hStream,
         hint_range(devPtr, count))

/* ------------------------------------------------------------------------------------------ */
/* streams and events                                                                           */

static CUresult stream_create(CUstream *ph, unsigned flags, int priority)
{
    if (!ph || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    CUcontext c = cur_ctx();
    if (!valid_ctx(c))
        return CUDA_ERROR_INVALID_CONTEXT;
    CUstream s = calloc(1, sizeof *s);
    if (!s)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->magic = MAGIC_STREAM;
    s->dev = c->dev;
    s->ctx = c;
    s->flags = flags;
    s->priority = priority < -5 ? -5 : priority > 0 ? 0 : priority;
    *ph = s;
    return CUDA_SUCCESS;
}

API cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
    ENTER_INIT();
    return stream_create(phStream, Flags, 0);
}

API cuStreamCreateWithPriority(CUstream *phStream, unsigned int flags, int priority)
{
    ENTER_INIT();
    return stream_create(phStream, flags, priority);
}

static CUresult stream_destroy(CUstream s)
{
    if (!s || is_special_stream(s) || s->magic != MAGIC_STREAM)
        return CUDA_ERROR_INVALID_HANDLE;
    s->magic = 0;
    free(s);
    return CUDA_SUCCESS;
}

FORWARD2(cuStreamDestroy, cuStreamDestroy_v2, ENTER_INIT, (CUstream hStream), (void)0, stream_destroy(hStream))

/* completion time of the work queued so far on a stream (the legacy/per-thread default
 * streams: all of this process's work on the current device) */
static CUresult stream_end(CUstream s, uint64_t *t)
{
    int dev;
    CUresult r = stream_dev(s, &dev);
    if (r != CUDA_SUCCESS)
        return r;
    *t = is_special_stream(s) ? atomic_load(&g_last_end[dev]) : atomic_load(&s->last_end);
    return CUDA_SUCCESS;
}

static CUresult stream_sync(CUstream s)
{
    uint64_t t;
    CUresult r = stream_end(s, &t);
    if (r == CUDA_SUCCESS)
        wait_until(t);
    return r;
}

FORWARD2(cuStreamSynchronize, cuStreamSynchronize_ptsz, ENTER_INIT, (CUstream hStream), (void)0, stream_sync(hStream))

static CUresult stream_query(CUstream s)
{
    uint64_t t;
    CUresult r = stream_end(s, &t);
    if (r != CUDA_SUCCESS)
        return r;
    return t > fake_now_ns() ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}

FORWARD2(cuStreamQuery, cuStreamQuery_ptsz, ENTER_INIT, (CUstream hStream), (void)0, stream_query(hStream))

API cuStreamGetPriority(CUstream hStream, int *priority)
{
    ENTER_INIT();
    if (!priority)
        return CUDA_ERROR_INVALID_VALUE;
    *priority = is_special_stream(hStream) ? 0 : hStream->priority;
    return CUDA_SUCCESS;
}

API cuStreamGetFlags(CUstream hStream, unsigned int *flags)
{
    ENTER_INIT();
    if (!flags)
        return CUDA_ERROR_INVALID_VALUE;
    *flags = is_special_stream(hStream) ? 0 : hStream->flags;
    return CUDA_SUCCESS;
}

API cuStreamGetCtx(CUstream hStream, CUcontext *pctx)
{
    ENTER_INIT();
    if (!pctx)
        return CUDA_ERROR_INVALID_VALUE;
    if (is_special_stream(hStream)) {
        CUcontext c = cur_ctx();
        if (!valid_ctx(c))
            return CUDA_ERROR_INVALID_CONTEXT;
        *pctx = c;
    } else {
        *pctx = hStream->ctx;
    }
    return CUDA_SUCCESS;
}

API cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    ENTER_INIT();
    (void)Flags;
    if (!hEvent || hEvent->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    int dev;
    return stream_dev(hStream, &dev); /* work is serialised per device already */
}

API cuStreamWaitEvent_ptsz(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
    ENTER_INIT();
    (void)Flags;
    if (!hEvent || hEvent->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    int dev;
    return stream_dev(hStream, &dev);
}

API cuEventCreate(CUevent *phEvent, unsigned int Flags)
{
    ENTER_INIT();
    if (!phEvent)
        return CUDA_ERROR_INVALID_VALUE;
    CUevent e = calloc(1, sizeof *e);
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->magic = MAGIC_EVENT;
    e->flags = Flags;
    *phEvent = e;
    return CUDA_SUCCESS;
}

static CUresult event_destroy(CUevent e)
{
    if (!e || e->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    e->magic = 0;
    free(e);
    return CUDA_SUCCESS;
}

FORWARD2(cuEventDestroy, cuEventDestroy_v2, ENTER_INIT, (CUevent hEvent), (void)0, event_destroy(hEvent))

static CUresult event_record(CUevent e, CUstream s)
{
    if (!e || e->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t t;
    CUresult r = stream_end(s, &t);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t now = fake_now_ns();
    e->t = t > now ? t : now;
    e->recorded = true;
    return CUDA_SUCCESS;
}

FORWARD2(cuEventRecord, cuEventRecord_ptsz, ENTER_INIT, (CUevent hEvent, CUstream hStream), (void)0,
         event_record(hEvent, hStream))

API cuEventQuery(CUevent hEvent)
{
    ENTER_INIT();
    if (!hEvent || hEvent->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    return hEvent->t > fake_now_ns() ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}

API cuEventSynchronize(CUevent hEvent)
{
    ENTER_INIT();
    if (!hEvent || hEvent->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    wait_until(hEvent->t);
    return CUDA_SUCCESS;
}

API cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd)
{
    ENTER_INIT();
    if (!pMilliseconds)
        return CUDA_ERROR_INVALID_VALUE;
    if (!hStart || hStart->magic != MAGIC_EVENT || !hEnd || hEnd->magic != MAGIC_EVENT)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!hStart->recorded || !hEnd->recorded)
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t now = fake_now_ns();
    if (hStart->t > now || hEnd->t > now)
        return CUDA_ERROR_NOT_READY;
    *pMilliseconds = (float)((double)((int64_t)hEnd->t - (int64_t)hStart->t) / 1e6);
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* modules and kernels                                                                          */

static CUresult module_new(CUmodule *m)
{
    if (!m)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_ctx(cur_ctx()))
        return CUDA_ERROR_INVALID_CONTEXT;
    CUmodule x = calloc(1, sizeof *x);
    if (!x)
        return CUDA_ERROR_OUT_OF_MEMORY;
    x->magic = MAGIC_MODULE;
    *m = x;
    return CUDA_SUCCESS;
}

API cuModuleLoad(CUmodule *module, const char *fname)
{
    ENTER_INIT();
    if (!fname)
        return CUDA_ERROR_INVALID_VALUE;
    return module_new(module);
}

API cuModuleLoadData(CUmodule *module, const void *image)
{
    ENTER_INIT();
    if (!image)
        return CUDA_ERROR_INVALID_VALUE;
    return module_new(module);
}

API cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int numOptions, CUjit_option *options,
                       void **optionValues)
{
    ENTER_INIT();
    (void)numOptions;
    (void)options;
    (void)optionValues;
    if (!image)
        return CUDA_ERROR_INVALID_VALUE;
    return module_new(module);
}

API cuModuleLoadFatBinary(CUmodule *module, const void *fatCubin)
{
    ENTER_INIT();
    if (!fatCubin)
        return CUDA_ERROR_INVALID_VALUE;
    return module_new(module);
}

API cuModuleUnload(CUmodule hmod)
{
    ENTER_INIT();
    if (!hmod || hmod->magic != MAGIC_MODULE)
        return CUDA_ERROR_INVALID_HANDLE;
    hmod->magic = 0;
    free(hmod); /* function handles stay valid (they are never freed) */
    return CUDA_SUCCESS;
}

API cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
    ENTER_INIT();
    if (!hfunc || !name)
        return CUDA_ERROR_INVALID_VALUE;
    if (!hmod || hmod->magic != MAGIC_MODULE)
        return CUDA_ERROR_INVALID_HANDLE;
    CUfunction f = calloc(1, sizeof *f);
    if (!f)
        return CUDA_ERROR_OUT_OF_MEMORY;
    f->magic = MAGIC_FUNC;
    snprintf(f->name, sizeof f->name, "%s", name);
    *hfunc = f;
    return CUDA_SUCCESS;
}

API cuFuncGetAttribute(int *pi, CUfunction_attribute attrib, CUfunction hfunc)
{
    ENTER_INIT();
    if (!pi || !hfunc)
        return CUDA_ERROR_INVALID_VALUE;
    *pi = attrib == CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK ? 1024 : 0;
    return CUDA_SUCCESS;
}

/* Queue a kernel of gx*gy*gz blocks on the device of hStream. */
static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       CUstream hStream)
{
    (void)f; /* any function handle is a kernel, NULL included (tests need no module) */
    if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if ((uint64_t)bx * by * bz > 1024)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = stream_dev(hStream, &dev);
    if (r != CUDA_SUCCESS)
        return r;
    uint64_t blocks = (uint64_t)gx * gy * gz;
    if (!is_special_stream(hStream) && hStream->capture) {
        hStream->capture->blocks += blocks; /* captured into a graph, not executed */
        hStream->capture->nodes++;
        return CUDA_SUCCESS;
    }
    uint64_t end = fake_launch(dev, blocks);
    if (!is_special_stream(hStream))
        atomic_store(&hStream->last_end, end);
    uint64_t cur = atomic_load(&g_last_end[dev]);
    while (cur < end && !atomic_compare_exchange_weak(&g_last_end[dev], &cur, end)) {
    }
    return CUDA_SUCCESS;
}

FORWARD2(cuLaunchKernel, cuLaunchKernel_ptsz, ENTER_INIT, (CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
         unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
         unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra),
         (void)sharedMemBytes; (void)kernelParams; (void)extra,
         launch(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, hStream))

API cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra)
{
    ENTER_INIT();
    (void)kernelParams;
    (void)extra;
    if (!config)
        return CUDA_ERROR_INVALID_VALUE;
    return launch(f, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX, config->blockDimY,
                  config->blockDimZ, config->hStream);
}

API cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra)
{
    ENTER_INIT();
    (void)kernelParams;
    (void)extra;
    if (!config)
        return CUDA_ERROR_INVALID_VALUE;
    return launch(f, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX, config->blockDimY,
                  config->blockDimZ, config->hStream);
}

FORWARD2(cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz, ENTER_INIT, (CUfunction f, unsigned int gridDimX,
         unsigned int gridDimY, unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
         unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream, void **kernelParams),
         (void)sharedMemBytes; (void)kernelParams,
         launch(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, hStream))

/* ------------------------------------------------------------------------------------------ */
/* graphs (minimal: a graph is the sum of its kernel nodes' blocks, launched as one kernel)     */

API cuGraphCreate(CUgraph *phGraph, unsigned int flags)
{
    ENTER_INIT();
    if (!phGraph || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    CUgraph g = calloc(1, sizeof *g);
    if (!g)
        return CUDA_ERROR_OUT_OF_MEMORY;
    g->magic = MAGIC_GRAPH;
    *phGraph = g;
    return CUDA_SUCCESS;
}

API cuGraphDestroy(CUgraph hGraph)
{
    ENTER_INIT();
    if (!hGraph || hGraph->magic != MAGIC_GRAPH)
        return CUDA_ERROR_INVALID_VALUE;
    hGraph->magic = 0;
    free(hGraph);
    return CUDA_SUCCESS;
}

static CUresult add_kernel_node(CUgraphNode *ph, CUgraph g, unsigned gx, unsigned gy, unsigned gz)
{
    if (!ph || !g || g->magic != MAGIC_GRAPH || gx == 0 || gy == 0 || gz == 0)
        return CUDA_ERROR_INVALID_VALUE;
    CUgraphNode n = calloc(1, sizeof *n);
    if (!n)
        return CUDA_ERROR_OUT_OF_MEMORY;
    n->magic = MAGIC_GNODE;
    n->blocks = (uint64_t)gx * gy * gz;
    g->blocks += n->blocks;
    g->nodes++;
    *ph = n; /* nodes are owned by nobody; a fake simplification (never freed) */
    return CUDA_SUCCESS;
}

API cuGraphAddKernelNode(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                         size_t numDependencies, const CUDA_KERNEL_NODE_PARAMS_v1 *nodeParams)
{
    ENTER_INIT();
    (void)dependencies;
    (void)numDependencies;
    if (!nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    return add_kernel_node(phGraphNode, hGraph, nodeParams->gridDimX, nodeParams->gridDimY, nodeParams->gridDimZ);
}

API cuGraphAddKernelNode_v2(CUgraphNode *phGraphNode, CUgraph hGraph, const CUgraphNode *dependencies,
                            size_t numDependencies, const CUDA_KERNEL_NODE_PARAMS *nodeParams)
{
    ENTER_INIT();
    (void)dependencies;
    (void)numDependencies;
    if (!nodeParams)
        return CUDA_ERROR_INVALID_VALUE;
    return add_kernel_node(phGraphNode, hGraph, nodeParams->gridDimX, nodeParams->gridDimY, nodeParams->gridDimZ);
}

static CUresult instantiate(CUgraphExec *ph, CUgraph g)
{
    if (!ph || !g || g->magic != MAGIC_GRAPH)
        return CUDA_ERROR_INVALID_VALUE;
    CUgraphExec e = calloc(1, sizeof *e);
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    e->magic = MAGIC_GEXEC;
    e->blocks = g->blocks;
    *ph = e;
    return CUDA_SUCCESS;
}

API cuGraphInstantiate(CUgraphExec *phGraphExec, CUgraph hGraph, CUgraphNode *phErrorNode, char *logBuffer,
                       size_t bufferSize)
{
    ENTER_INIT();
    (void)phErrorNode;
    if (logBuffer && bufferSize)
        logBuffer[0] = 0;
    return instantiate(phGraphExec, hGraph);
}

API cuGraphInstantiate_v2(CUgraphExec *phGraphExec, CUgraph hGraph, CUgraphNode *phErrorNode, char *logBuffer,
                          size_t bufferSize)
{
    ENTER_INIT();
    (void)phErrorNode;
    if (logBuffer && bufferSize)
        logBuffer[0] = 0;
    return instantiate(phGraphExec, hGraph);
}

API cuGraphInstantiateWithFlags(CUgraphExec *phGraphExec, CUgraph hGraph, unsigned long long flags)
{
    ENTER_INIT();
    (void)flags;
    return instantiate(phGraphExec, hGraph);
}

API cuGraphExecDestroy(CUgraphExec hGraphExec)
{
    ENTER_INIT();
    if (!hGraphExec || hGraphExec->magic != MAGIC_GEXEC)
        return CUDA_ERROR_INVALID_VALUE;
    hGraphExec->magic = 0;
    free(hGraphExec);
    return CUDA_SUCCESS;
}

static CUresult graph_launch(CUgraphExec e, CUstream s)
{
    if (!e || e->magic != MAGIC_GEXEC)
        return CUDA_ERROR_INVALID_VALUE;
    int dev;
    CUresult r = stream_dev(s, &dev);
    if (r != CUDA_SUCCESS)
        return r;
    if (e->blocks == 0)
        return CUDA_SUCCESS;
    static struct CUfunc_st graph_fn = {MAGIC_FUNC, "graph"};
    /* one kernel of all the blocks: grid split so each dimension fits */
    uint64_t b = e->blocks;
    unsigned gy = 1;
    while (b / gy > 0x7fffffffULL)
        gy *= 2;
    uint64_t gx = b / gy;
    r = launch(&graph_fn, (unsigned)gx, gy, 1, 1, 1, 1, s);
    uint64_t rest = b - gx * gy;
    if (r == CUDA_SUCCESS && rest)
        r = launch(&graph_fn, (unsigned)rest, 1, 1, 1, 1, 1, s);
    return r;
}

FORWARD2(cuGraphLaunch, cuGraphLaunch_ptsz, ENTER_INIT, (CUgraphExec hGraphExec, CUstream hStream), (void)0,
         graph_launch(hGraphExec, hStream))

static CUresult begin_capture(CUstream s)
{
    if (is_special_stream(s) || s->magic != MAGIC_STREAM)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    if (s->capture)
        return CUDA_ERROR_ILLEGAL_STATE;
    CUgraph g;
    CUresult r = cuGraphCreate(&g, 0);
    if (r == CUDA_SUCCESS)
        s->capture = g;
    return r;
}

FORWARD2(cuStreamBeginCapture_v2, cuStreamBeginCapture_v2_ptsz, ENTER_INIT,
         (CUstream hStream, CUstreamCaptureMode mode), (void)mode, begin_capture(hStream))

static CUresult end_capture(CUstream s, CUgraph *ph)
{
    if (!ph)
        return CUDA_ERROR_INVALID_VALUE;
    if (is_special_stream(s) || s->magic != MAGIC_STREAM || !s->capture)
        return CUDA_ERROR_ILLEGAL_STATE;
    *ph = s->capture;
    s->capture = NULL;
    return CUDA_SUCCESS;
}

FORWARD2(cuStreamEndCapture, cuStreamEndCapture_ptsz, ENTER_INIT, (CUstream hStream, CUgraph *phGraph), (void)0,
         end_capture(hStream, phGraph))

static CUresult is_capturing(CUstream s, CUstreamCaptureStatus *st)
{
    if (!st)
        return CUDA_ERROR_INVALID_VALUE;
    *st = !is_special_stream(s) && s->magic == MAGIC_STREAM && s->capture ? CU_STREAM_CAPTURE_STATUS_ACTIVE
                                                                          : CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
}

FORWARD2(cuStreamIsCapturing, cuStreamIsCapturing_ptsz, ENTER_INIT,
         (CUstream hStream, CUstreamCaptureStatus *captureStatus), (void)0, is_capturing(hStream, captureStatus))

/* ------------------------------------------------------------------------------------------ */
/* cuGetProcAddress                                                                             */

FAKE_EXPORT CUresult fake_cuda_not_supported(void)
{
    return CUDA_ERROR_NOT_SUPPORTED;
}

API cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
    ENTER();
    return fake_proc_lookup(symbol, pfn, cudaVersion, flags, NULL);
}

/* -DFAKE_NO_GET_PROC_ADDRESS_V2 builds a driver older than CUDA 12.5 (tests of wrappers whose
 * real function is missing) */
#ifndef FAKE_NO_GET_PROC_ADDRESS_V2
API cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                        CUdriverProcAddressQueryResult *symbolStatus)
{
    ENTER();
    return fake_proc_lookup(symbol, pfn, cudaVersion, flags, symbolStatus);
}
#endif

/* Test hook (not a CUDA API): simulated-time counters of a device, for workload programs that
 * want the fake's own view. Looked up with dlsym(RTLD_DEFAULT, "fake_cuda_device_stats"). */
FAKE_EXPORT int fake_cuda_device_stats(int dev, uint64_t *busy_ns_until_now, uint64_t *busy_until_ns, uint64_t *now_ns)
{
    if (dev < 0 || dev >= ndev())
        return -1;
    uint64_t now = fake_now_ns();
    if (busy_ns_until_now)
        *busy_ns_until_now = fake_busy_at(dev, now);
    if (busy_until_ns)
        *busy_until_ns = fake_busy_until(dev);
    if (now_ns)
        *now_ns = now;
    return 0;
}

/* the names list is only used by fake_procaddr.c */
FAKE_HIDDEN const char *const *fake_header_names(size_t *n)
{
    *n = sizeof fake_cuda_header_names / sizeof fake_cuda_header_names[0];
    return fake_cuda_header_names;
}

/* Test hook (not a CUDA API): physical memory of a device as the fake sees it (all processes). */
FAKE_EXPORT int fake_cuda_device_memory(int dev, uint64_t *used, uint64_t *total)
{
    if (dev < 0 || dev >= ndev())
        return -1;
    struct fake_dev *d = &fake_state()->dev[dev];
    if (used)
        *used = atomic_load(&d->used);
    if (total)
        *total = d->total;
    return 0;
}
