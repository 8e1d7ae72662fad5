/* alloc: allocate device memory through one allocation path and report what happened.
 *
 *   alloc [--path=P] [--size=S] [--count=N] [--until-oom] [--chunk=S] [--device=D]
 *         [--ctx=primary|create] [--hold=SECONDS|-1] [--no-free]
 *
 * Paths: v2 (cuMemAlloc_v2, default), v1 (legacy 32-bit cuMemAlloc via dlsym), pitch
 * (cuMemAllocPitch_v2: --size is width*height with --width, default width 4096), managed,
 * async (cuMemAllocAsync), pool (cuMemPoolCreate + cuMemAllocFromPoolAsync), defpool
 * (cuMemAllocFromPoolAsync on the default pool), vmm (cuMemCreate on the device + reserve + map),
 * vmm-host (cuMemCreate on host memory), array (cuArrayCreate_v2, 1-byte format), array3d,
 * mipmap, host (cuMemAllocHost_v2), hostalloc (cuMemHostAlloc), register (cuMemHostRegister_v2).
 *
 * --count allocates N blocks of --size; --until-oom allocates --chunk blocks until one fails.
 * --hold keeps the memory for SECONDS (-1: until stdin is closed) after printing ready=1.
 *
 * Prints total_mem (cuDeviceTotalMem), info_free/info_total before and after, allocated
 * (bytes obtained), count, result (CUDA_SUCCESS or the first error), fake_used (the fake's
 * physical view) and pitch where relevant. Exit: 0 all requested allocations succeeded (or
 * --until-oom stopped on CUDA_ERROR_OUT_OF_MEMORY), 3 an allocation returned OOM, 1 other error. */
#include "common.h"

struct block {
    CUdeviceptr ptr;
    void *host;
    CUarray arr;
    CUmipmappedArray mip;
    CUmemGenericAllocationHandle handle;
    uint64_t size;
};

static const char *g_path;
static int g_dev;
static CUmemoryPool g_pool;
static CUstream g_stream;

static CUresult alloc_one(struct block *b, uint64_t size)
{
    memset(b, 0, sizeof *b);
    b->size = size;
    const char *p = g_path;
    if (strcmp(p, "v2") == 0)
        return cuMemAlloc(&b->ptr, size);
    if (strcmp(p, "v1") == 0) {
        CUresult (*v1)(unsigned int *, unsigned int) =
            (CUresult (*)(unsigned int *, unsigned int))dlsym(dlopen("libcuda.so.1", RTLD_NOW), "cuMemAlloc");
        if (!v1)
            return CUDA_ERROR_NOT_FOUND;
        unsigned int d32 = 0;
        CUresult r = v1(&d32, (unsigned int)size);
        b->ptr = d32;
        return r;
    }
    if (strcmp(p, "pitch") == 0) {
        size_t width = (size_t)opt_size("width", "4096"), pitch = 0;
        size_t height = (size_t)((size + width - 1) / width);
        CUresult r = cuMemAllocPitch(&b->ptr, &pitch, width, height, 4);
        if (r == CUDA_SUCCESS) {
            kv("pitch", "%zu", pitch);
            b->size = (uint64_t)pitch * height;
        }
        return r;
    }
    if (strcmp(p, "managed") == 0)
        return cuMemAllocManaged(&b->ptr, size, CU_MEM_ATTACH_GLOBAL);
    if (strcmp(p, "async") == 0)
        return cuMemAllocAsync(&b->ptr, size, g_stream);
    if (strcmp(p, "pool") == 0 || strcmp(p, "defpool") == 0)
        return cuMemAllocFromPoolAsync(&b->ptr, size, g_pool, g_stream);
    if (strcmp(p, "vmm") == 0 || strcmp(p, "vmm-host") == 0) {
        CUmemAllocationProp prop = {0};
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = strcmp(p, "vmm") == 0 ? CU_MEM_LOCATION_TYPE_DEVICE : CU_MEM_LOCATION_TYPE_HOST;
        prop.location.id = strcmp(p, "vmm") == 0 ? g_dev : 0;
        size_t gran = 0;
        CUresult r = cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
        if (r != CUDA_SUCCESS)
            return r;
        size = (size + gran - 1) / gran * gran;
        b->size = size;
        r = cuMemCreate(&b->handle, size, &prop, 0);
        if (r != CUDA_SUCCESS)
            return r;
        r = cuMemAddressReserve(&b->ptr, size, 0, 0, 0);
        if (r == CUDA_SUCCESS)
            r = cuMemMap(b->ptr, size, 0, b->handle, 0);
        if (r == CUDA_SUCCESS) {
            CUmemAccessDesc acc = {{CU_MEM_LOCATION_TYPE_DEVICE, g_dev}, CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
            r = cuMemSetAccess(b->ptr, size, &acc, 1);
        }
        return r;
    }
    if (strcmp(p, "array") == 0) {
        CUDA_ARRAY_DESCRIPTOR d = {0};
        d.Width = 65536;
        d.Height = (size + 65535) / 65536;
        d.Format = CU_AD_FORMAT_UNSIGNED_INT8;
        d.NumChannels = 1;
        b->size = (uint64_t)d.Width * d.Height;
        return cuArrayCreate(&b->arr, &d);
    }
    if (strcmp(p, "array3d") == 0 || strcmp(p, "mipmap") == 0) {
        CUDA_ARRAY3D_DESCRIPTOR d = {0};
        d.Width = 1024;
        d.Height = 64;
        d.Depth = (size + 65535) / 65536;
        d.Format = CU_AD_FORMAT_UNSIGNED_INT8;
        d.NumChannels = 1;
        b->size = (uint64_t)d.Width * d.Height * d.Depth;
        if (strcmp(p, "array3d") == 0)
            return cuArray3DCreate(&b->arr, &d);
        return cuMipmappedArrayCreate(&b->mip, &d, 1);
    }
    if (strcmp(p, "host") == 0)
        return cuMemAllocHost(&b->host, size);
    if (strcmp(p, "hostalloc") == 0)
        return cuMemHostAlloc(&b->host, size, CU_MEMHOSTALLOC_PORTABLE);
    if (strcmp(p, "register") == 0) {
        b->host = malloc(size);
        if (!b->host)
            return CUDA_ERROR_OUT_OF_MEMORY;
        CUresult r = cuMemHostRegister(b->host, size, 0);
        if (r != CUDA_SUCCESS) {
            free(b->host);
            b->host = NULL;
        }
        return r;
    }
    die("unknown --path=%s", p);
}

static CUresult free_one(struct block *b)
{
    const char *p = g_path;
    if (strcmp(p, "v2") == 0 || strcmp(p, "pitch") == 0 || strcmp(p, "managed") == 0)
        return cuMemFree(b->ptr);
    if (strcmp(p, "v1") == 0) {
        CUresult (*v1)(unsigned int) = (CUresult (*)(unsigned int))dlsym(dlopen("libcuda.so.1", RTLD_NOW), "cuMemFree");
        return v1 ? v1((unsigned int)b->ptr) : CUDA_ERROR_NOT_FOUND;
    }
    if (strcmp(p, "async") == 0 || strcmp(p, "pool") == 0 || strcmp(p, "defpool") == 0)
        return cuMemFreeAsync(b->ptr, g_stream);
    if (strncmp(p, "vmm", 3) == 0) {
        CUresult r = cuMemUnmap(b->ptr, b->size);
        CUresult r2 = cuMemAddressFree(b->ptr, b->size);
        CUresult r3 = cuMemRelease(b->handle);
        return r != CUDA_SUCCESS ? r : r2 != CUDA_SUCCESS ? r2 : r3;
    }
    if (strcmp(p, "array") == 0 || strcmp(p, "array3d") == 0)
        return cuArrayDestroy(b->arr);
    if (strcmp(p, "mipmap") == 0)
        return cuMipmappedArrayDestroy(b->mip);
    if (strcmp(p, "host") == 0 || strcmp(p, "hostalloc") == 0)
        return cuMemFreeHost(b->host);
    if (strcmp(p, "register") == 0) {
        CUresult r = cuMemHostUnregister(b->host);
        free(b->host);
        return r;
    }
    return CUDA_ERROR_INVALID_VALUE;
}

static void print_info(const char *when)
{
    size_t f = 0, t = 0;
    char k[64];
    CUresult r = cuMemGetInfo(&f, &t);
    snprintf(k, sizeof k, "info_result_%s", when);
    kv(k, "%s", err_name(r));
    snprintf(k, sizeof k, "info_free_%s", when);
    kv(k, "%zu", f);
    snprintf(k, sizeof k, "info_total_%s", when);
    kv(k, "%zu", t);
    uint64_t used, total;
    if (fake_memory(g_dev, &used, &total)) {
        snprintf(k, sizeof k, "fake_used_%s", when);
        kv(k, "%" PRIu64, used);
    }
}

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    g_path = opt_str("path", "v2");
    g_dev = (int)opt_int("device", 0);
    uint64_t size = opt_size("size", "1m");
    long long count = opt_int("count", 1);
    bool until_oom = opt_flag("until-oom");
    uint64_t chunk = opt_size("chunk", "64m");
    double hold_s = opt_double("hold", 0);

    setup_ctx(g_dev);
    size_t total_mem = 0;
    CK(cuDeviceTotalMem(&total_mem, g_dev));
    kv("path", "%s", g_path);
    kv("total_mem", "%zu", total_mem);
    if (strcmp(g_path, "async") == 0 || strcmp(g_path, "pool") == 0 || strcmp(g_path, "defpool") == 0)
        CK(cuStreamCreate(&g_stream, CU_STREAM_NON_BLOCKING));
    if (strcmp(g_path, "pool") == 0) {
        CUmemPoolProps props = {0};
        props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        props.location.id = g_dev;
        CK(cuMemPoolCreate(&g_pool, &props));
    } else if (strcmp(g_path, "defpool") == 0) {
        CK(cuDeviceGetDefaultMemPool(&g_pool, g_dev));
    }
    print_info("before");

    size_t cap = until_oom ? 1 << 16 : (size_t)count;
    struct block *blocks = calloc(cap ? cap : 1, sizeof *blocks);
    size_t n = 0;
    uint64_t got = 0;
    CUresult first_err = CUDA_SUCCESS;
    uint64_t t0 = now_ns();
    while (n < cap) {
        CUresult r = alloc_one(&blocks[n], until_oom ? chunk : size);
        if (r != CUDA_SUCCESS) {
            first_err = r;
            break;
        }
        got += blocks[n].size;
        n++;
    }
    uint64_t t1 = now_ns();
    if (g_stream)
        CK(cuStreamSynchronize(g_stream));
    kv("count", "%zu", n);
    kv("allocated", "%" PRIu64, got);
    kv("result", "%s", err_name(first_err));
    kv("alloc_ns_avg", "%" PRIu64, n ? (t1 - t0) / n : 0);
    if (strcmp(g_path, "pool") == 0 || strcmp(g_path, "defpool") == 0 || strcmp(g_path, "async") == 0) {
        CUmemoryPool pool = g_pool;
        if (!pool)
            CK(cuDeviceGetMemPool(&pool, g_dev));
        cuuint64_t hi = 0;
        if (cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, &hi) == CUDA_SUCCESS)
            kv("pool_reserved_high", "%" PRIu64, (uint64_t)hi);
    }
    print_info("during");

    if (hold_s != 0) {
        kv("ready", "1");
        hold(hold_s);
    }

    CUresult free_err = CUDA_SUCCESS;
    if (!opt_flag("no-free")) {
        for (size_t i = 0; i < n; i++) {
            CUresult r = free_one(&blocks[i]);
            if (r != CUDA_SUCCESS && free_err == CUDA_SUCCESS)
                free_err = r;
        }
        if (g_stream)
            CK(cuStreamSynchronize(g_stream));
    }
    kv("free_result", "%s", err_name(free_err));
    print_info("after");
    free(blocks);
    if (g_pool && strcmp(g_path, "pool") == 0)
        cuMemPoolDestroy(g_pool);

    if (free_err != CUDA_SUCCESS)
        return 1;
    if (first_err == CUDA_SUCCESS)
        return 0;
    if (first_err == CUDA_ERROR_OUT_OF_MEMORY)
        return until_oom ? 0 : 3;
    return 1;
}
