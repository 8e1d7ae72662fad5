/* cuGetProcAddress / cuGetProcAddress_v2 of the fake driver.
 *
 * The table maps a base name ("cuMemAlloc") to its exported variants, each with the CUDA
 * version that introduced it and whether it is the per-thread-default-stream (_ptsz/_ptds)
 * flavour. A lookup returns the newest variant whose version <= cudaVersion; with
 * CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM the per-thread flavour is preferred where one
 * exists. Names declared in cuda.h that the fake does not implement resolve to a stub returning
 * CUDA_ERROR_NOT_SUPPORTED; anything else is CUDA_ERROR_NOT_FOUND. */
#include "fake_cuda.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct pa_entry {
    const char *base;
    int version;
    int per_thread;
    void *fn;
    const char *sym;
};

#define L(base, ver, sym) {#base, ver, 0, (void *)(sym), #sym}
#define P(base, ver, sym) {#base, ver, 1, (void *)(sym), #sym}
#define S(name, ver) L(name, ver, name)

static const struct pa_entry g_table[] = {
    S(cuInit, 2000),
    S(cuDriverGetVersion, 2020),
    S(cuGetErrorString, 6000),
    S(cuGetErrorName, 6000),
    L(cuGetProcAddress, 11030, cuGetProcAddress),
#ifndef FAKE_NO_GET_PROC_ADDRESS_V2
    L(cuGetProcAddress, 12050, cuGetProcAddress_v2),
#endif
    S(cuDeviceGet, 2000),
    S(cuDeviceGetCount, 2000),
    S(cuDeviceGetName, 2000),
    L(cuDeviceGetUuid, 9020, cuDeviceGetUuid),
    L(cuDeviceGetUuid, 11040, cuDeviceGetUuid_v2),
    L(cuDeviceTotalMem, 2000, cuDeviceTotalMem),
    L(cuDeviceTotalMem, 3020, cuDeviceTotalMem_v2),
    S(cuDeviceGetAttribute, 2000),
    S(cuDeviceGetPCIBusId, 4010),
    S(cuDeviceGetByPCIBusId, 4010),
    S(cuDeviceCanAccessPeer, 4000),
    S(cuDeviceGetDefaultMemPool, 11020),
    S(cuDeviceGetMemPool, 11020),
    S(cuDeviceSetMemPool, 11020),
    S(cuDevicePrimaryCtxRetain, 7000),
    L(cuDevicePrimaryCtxRelease, 7000, cuDevicePrimaryCtxRelease),
    L(cuDevicePrimaryCtxRelease, 11000, cuDevicePrimaryCtxRelease_v2),
    L(cuDevicePrimaryCtxReset, 7000, cuDevicePrimaryCtxReset),
    L(cuDevicePrimaryCtxReset, 11000, cuDevicePrimaryCtxReset_v2),
    L(cuDevicePrimaryCtxSetFlags, 7000, cuDevicePrimaryCtxSetFlags),
    L(cuDevicePrimaryCtxSetFlags, 11000, cuDevicePrimaryCtxSetFlags_v2),
    S(cuDevicePrimaryCtxGetState, 7000),
    L(cuCtxCreate, 2000, cuCtxCreate),
    L(cuCtxCreate, 3020, cuCtxCreate_v2),
    L(cuCtxCreate, 11040, cuCtxCreate_v3),
    L(cuCtxCreate, 12050, cuCtxCreate_v4),
    L(cuCtxDestroy, 2000, cuCtxDestroy),
    L(cuCtxDestroy, 4000, cuCtxDestroy_v2),
    L(cuCtxPushCurrent, 2000, cuCtxPushCurrent),
    L(cuCtxPushCurrent, 4000, cuCtxPushCurrent_v2),
    L(cuCtxPopCurrent, 2000, cuCtxPopCurrent),
    L(cuCtxPopCurrent, 4000, cuCtxPopCurrent_v2),
    S(cuCtxGetCurrent, 4000),
    S(cuCtxSetCurrent, 4000),
    S(cuCtxGetDevice, 2000),
    S(cuCtxSynchronize, 2000),
    S(cuCtxGetFlags, 7000),
    S(cuCtxGetId, 12000),
    S(cuCtxGetApiVersion, 3020),
    S(cuCtxGetStreamPriorityRange, 5050),
    L(cuMemGetInfo, 2000, cuMemGetInfo),
    L(cuMemGetInfo, 3020, cuMemGetInfo_v2),
    L(cuMemAlloc, 2000, cuMemAlloc),
    L(cuMemAlloc, 3020, cuMemAlloc_v2),
    L(cuMemAllocPitch, 2000, cuMemAllocPitch),
    L(cuMemAllocPitch, 3020, cuMemAllocPitch_v2),
    L(cuMemFree, 2000, cuMemFree),
    L(cuMemFree, 3020, cuMemFree_v2),
    L(cuMemGetAddressRange, 3020, cuMemGetAddressRange_v2),
    S(cuMemAllocManaged, 6000),
    S(cuPointerGetAttribute, 4000),
    L(cuMemAllocAsync, 11020, cuMemAllocAsync),
    P(cuMemAllocAsync, 11020, cuMemAllocAsync_ptsz),
    L(cuMemFreeAsync, 11020, cuMemFreeAsync),
    P(cuMemFreeAsync, 11020, cuMemFreeAsync_ptsz),
    L(cuMemAllocFromPoolAsync, 11020, cuMemAllocFromPoolAsync),
    P(cuMemAllocFromPoolAsync, 11020, cuMemAllocFromPoolAsync_ptsz),
    S(cuMemPoolCreate, 11020),
    S(cuMemPoolDestroy, 11020),
    S(cuMemPoolGetAttribute, 11020),
    S(cuMemPoolSetAttribute, 11020),
    S(cuMemPoolTrimTo, 11020),
    S(cuMemCreate, 10020),
    S(cuMemRelease, 10020),
    S(cuMemAddressReserve, 10020),
    S(cuMemAddressFree, 10020),
    S(cuMemMap, 10020),
    S(cuMemUnmap, 10020),
    S(cuMemSetAccess, 10020),
    S(cuMemGetAllocationGranularity, 10020),
    S(cuMemGetAllocationPropertiesFromHandle, 10020),
    S(cuMemRetainAllocationHandle, 11000),
    L(cuArrayCreate, 2000, cuArrayCreate),
    L(cuArrayCreate, 3020, cuArrayCreate_v2),
    L(cuArray3DCreate, 2000, cuArray3DCreate),
    L(cuArray3DCreate, 3020, cuArray3DCreate_v2),
    L(cuArray3DGetDescriptor, 3020, cuArray3DGetDescriptor_v2),
    S(cuArrayDestroy, 2000),
    S(cuMipmappedArrayCreate, 5000),
    S(cuMipmappedArrayDestroy, 5000),
    S(cuMemHostAlloc, 2020),
    L(cuMemAllocHost, 2000, cuMemAllocHost),
    L(cuMemAllocHost, 3020, cuMemAllocHost_v2),
    S(cuMemFreeHost, 2000),
    L(cuMemHostRegister, 4000, cuMemHostRegister),
    L(cuMemHostRegister, 6050, cuMemHostRegister_v2),
    S(cuMemHostUnregister, 4000),
    L(cuMemHostGetDevicePointer, 3020, cuMemHostGetDevicePointer_v2),
    L(cuMemcpyHtoD, 2000, cuMemcpyHtoD),
    L(cuMemcpyHtoD, 3020, cuMemcpyHtoD_v2),
    P(cuMemcpyHtoD, 7000, cuMemcpyHtoD_v2_ptds),
    L(cuMemcpyDtoH, 2000, cuMemcpyDtoH),
    L(cuMemcpyDtoH, 3020, cuMemcpyDtoH_v2),
    P(cuMemcpyDtoH, 7000, cuMemcpyDtoH_v2_ptds),
    L(cuMemcpyDtoD, 2000, cuMemcpyDtoD),
    L(cuMemcpyDtoD, 3020, cuMemcpyDtoD_v2),
    P(cuMemcpyDtoD, 7000, cuMemcpyDtoD_v2_ptds),
    L(cuMemcpyHtoDAsync, 3020, cuMemcpyHtoDAsync_v2),
    P(cuMemcpyHtoDAsync, 7000, cuMemcpyHtoDAsync_v2_ptsz),
    L(cuMemcpyDtoHAsync, 3020, cuMemcpyDtoHAsync_v2),
    P(cuMemcpyDtoHAsync, 7000, cuMemcpyDtoHAsync_v2_ptsz),
    L(cuMemcpyDtoDAsync, 3020, cuMemcpyDtoDAsync_v2),
    P(cuMemcpyDtoDAsync, 7000, cuMemcpyDtoDAsync_v2_ptsz),
    L(cuMemcpy, 4000, cuMemcpy),
    P(cuMemcpy, 7000, cuMemcpy_ptds),
    L(cuMemcpyAsync, 4000, cuMemcpyAsync),
    P(cuMemcpyAsync, 7000, cuMemcpyAsync_ptsz),
    L(cuMemsetD8, 2000, cuMemsetD8),
    L(cuMemsetD8, 3020, cuMemsetD8_v2),
    P(cuMemsetD8, 7000, cuMemsetD8_v2_ptds),
    L(cuMemsetD16, 3020, cuMemsetD16_v2),
    P(cuMemsetD16, 7000, cuMemsetD16_v2_ptds),
    L(cuMemsetD32, 3020, cuMemsetD32_v2),
    P(cuMemsetD32, 7000, cuMemsetD32_v2_ptds),
    L(cuMemsetD8Async, 3020, cuMemsetD8Async),
    P(cuMemsetD8Async, 7000, cuMemsetD8Async_ptsz),
    L(cuMemsetD32Async, 3020, cuMemsetD32Async),
    P(cuMemsetD32Async, 7000, cuMemsetD32Async_ptsz),
    L(cuMemAdvise, 8000, cuMemAdvise),
    L(cuMemAdvise, 12020, cuMemAdvise_v2),
    L(cuMemPrefetchAsync, 8000, cuMemPrefetchAsync),
    P(cuMemPrefetchAsync, 8000, cuMemPrefetchAsync_ptsz),
    L(cuMemPrefetchAsync, 12020, cuMemPrefetchAsync_v2),
    P(cuMemPrefetchAsync, 12020, cuMemPrefetchAsync_v2_ptsz),
    S(cuStreamCreate, 2000),
    S(cuStreamCreateWithPriority, 5050),
    L(cuStreamDestroy, 2000, cuStreamDestroy),
    L(cuStreamDestroy, 4000, cuStreamDestroy_v2),
    L(cuStreamSynchronize, 2000, cuStreamSynchronize),
    P(cuStreamSynchronize, 7000, cuStreamSynchronize_ptsz),
    L(cuStreamQuery, 2000, cuStreamQuery),
    P(cuStreamQuery, 7000, cuStreamQuery_ptsz),
    S(cuStreamGetPriority, 5050),
    S(cuStreamGetFlags, 5050),
    S(cuStreamGetCtx, 9020),
    L(cuStreamWaitEvent, 3020, cuStreamWaitEvent),
    P(cuStreamWaitEvent, 7000, cuStreamWaitEvent_ptsz),
    L(cuStreamBeginCapture, 10010, cuStreamBeginCapture_v2),
    P(cuStreamBeginCapture, 10010, cuStreamBeginCapture_v2_ptsz),
    L(cuStreamEndCapture, 10000, cuStreamEndCapture),
    P(cuStreamEndCapture, 10000, cuStreamEndCapture_ptsz),
    L(cuStreamIsCapturing, 10000, cuStreamIsCapturing),
    P(cuStreamIsCapturing, 10000, cuStreamIsCapturing_ptsz),
    S(cuEventCreate, 2000),
    L(cuEventDestroy, 2000, cuEventDestroy),
    L(cuEventDestroy, 4000, cuEventDestroy_v2),
    L(cuEventRecord, 2000, cuEventRecord),
    P(cuEventRecord, 7000, cuEventRecord_ptsz),
    S(cuEventQuery, 2000),
    S(cuEventSynchronize, 2000),
    S(cuEventElapsedTime, 2000),
    S(cuModuleLoad, 2000),
    S(cuModuleLoadData, 2000),
    S(cuModuleLoadDataEx, 2010),
    S(cuModuleLoadFatBinary, 2000),
    S(cuModuleUnload, 2000),
    S(cuModuleGetFunction, 2000),
    S(cuFuncGetAttribute, 2020),
    L(cuLaunchKernel, 4000, cuLaunchKernel),
    P(cuLaunchKernel, 7000, cuLaunchKernel_ptsz),
    L(cuLaunchKernelEx, 11060, cuLaunchKernelEx),
    P(cuLaunchKernelEx, 11060, cuLaunchKernelEx_ptsz),
    L(cuLaunchCooperativeKernel, 9000, cuLaunchCooperativeKernel),
    P(cuLaunchCooperativeKernel, 9000, cuLaunchCooperativeKernel_ptsz),
    S(cuGraphCreate, 10000),
    S(cuGraphDestroy, 10000),
    L(cuGraphAddKernelNode, 10000, cuGraphAddKernelNode),
    L(cuGraphAddKernelNode, 12000, cuGraphAddKernelNode_v2),
    L(cuGraphInstantiate, 10000, cuGraphInstantiate),
    L(cuGraphInstantiate, 11000, cuGraphInstantiate_v2),
    L(cuGraphInstantiate, 12000, cuGraphInstantiateWithFlags),
    S(cuGraphInstantiateWithFlags, 11040),
    S(cuGraphExecDestroy, 10000),
    L(cuGraphLaunch, 10000, cuGraphLaunch),
    P(cuGraphLaunch, 10000, cuGraphLaunch_ptsz),
};

#define NTABLE (sizeof g_table / sizeof g_table[0])

static const struct pa_entry *g_sorted[NTABLE];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int cmp_entry(const void *a, const void *b)
{
    const struct pa_entry *x = *(const struct pa_entry *const *)a, *y = *(const struct pa_entry *const *)b;
    int c = strcmp(x->base, y->base);
    if (c)
        return c;
    if (x->per_thread != y->per_thread)
        return x->per_thread - y->per_thread;
    return x->version - y->version;
}

static void sort_table(void)
{
    for (size_t i = 0; i < NTABLE; i++)
        g_sorted[i] = &g_table[i];
    qsort(g_sorted, NTABLE, sizeof g_sorted[0], cmp_entry);
}

/* first sorted index with base == name, or NTABLE */
static size_t first_of(const char *name)
{
    size_t lo = 0, hi = NTABLE;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(g_sorted[mid]->base, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < NTABLE && strcmp(g_sorted[lo]->base, name) == 0 ? lo : NTABLE;
}

static bool has_variant_suffix(const char *name)
{
    size_t n = strlen(name);
    if (n > 5 && (strcmp(name + n - 5, "_ptsz") == 0 || strcmp(name + n - 5, "_ptds") == 0))
        return true;
    const char *u = strrchr(name, '_');
    if (!u || u[1] != 'v' || !u[2])
        return false;
    for (const char *p = u + 2; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

static bool in_header(const char *name)
{
    size_t n;
    const char *const *names = fake_header_names(&n);
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(names[mid], name);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

CUresult fake_proc_lookup(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                          CUdriverProcAddressQueryResult *status)
{
    if (pfn)
        *pfn = NULL;
    if (status)
        *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    if (!symbol || !pfn || cudaVersion <= 0 ||
        (flags & ~(cuuint64_t)(CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_once(&g_once, sort_table);
    bool want_pt = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;

    size_t i = first_of(symbol);
    if (i == NTABLE) {
        if (!has_variant_suffix(symbol) && in_header(symbol)) {
            *pfn = (void *)fake_cuda_not_supported;
            if (status)
                *status = CU_GET_PROC_ADDRESS_SUCCESS;
            return CUDA_SUCCESS;
        }
        return CUDA_ERROR_NOT_FOUND;
    }
    const struct pa_entry *best_legacy = NULL, *best_pt = NULL;
    for (; i < NTABLE && strcmp(g_sorted[i]->base, symbol) == 0; i++) {
        const struct pa_entry *e = g_sorted[i];
        if (e->version > cudaVersion)
            continue;
        if (e->per_thread)
            best_pt = e; /* sorted by version: the last one that fits is the newest */
        else
            best_legacy = e;
    }
    const struct pa_entry *pick = want_pt && best_pt ? best_pt : best_legacy;
    if (!pick) {
        if (status)
            *status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
        return CUDA_ERROR_NOT_FOUND;
    }
    *pfn = pick->fn;
    if (status)
        *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
}
