/* CUDA driver wrappers: memory accounting, virtualized memory reports, launch throttling.
 * Every wrapper forwards to the real driver; when the driver lacks the entry point the wrapper
 * returns CUDA_ERROR_NOT_FOUND (never calls NULL). */
#include "alloc.h"
#include "config.h"
#include "device.h"
#include "driver.h"
#include "limiter.h"
#include "log.h"
#include "memory.h"
#include "region.h"

#include <stdint.h>

#define REAL_OR_FAIL(n)                                                                            \
    do {                                                                                           \
        if (!vgpu_cuda_load() || vgpu_cu.n == NULL)                                               \
            return CUDA_ERROR_NOT_FOUND;                                                           \
    } while (0)

static inline bool passthrough(void)
{
    return vgpu_config_get()->disabled;
}

static inline bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* ---- bookkeeping around the driver's call -------------------------------------------------- */

/* After an allocation: keeps the reservation when the driver allocated (the caller then tracks it),
 * gives it back when the driver failed. */
static bool kept(CUresult rc, int didx, uint64_t bytes)
{
    if (rc == CUDA_SUCCESS)
        return true;
    vgpu_mem_unreserve(didx, bytes);
    return false;
}

/* After the driver's free of a record untracked just before it: a successful free returns the
 * record's bytes, a failed one puts the record back as it was. */
static void settle_free(bool tracked, uint64_t key, const struct vgpu_alloc_rec *rec, CUresult rc)
{
    if (!tracked)
        return;
    if (rc == CUDA_SUCCESS)
        vgpu_mem_unreserve(rec->didx, rec->size);
    else
        vgpu_mem_retrack(key, rec);
}

/* ---- plain device allocations ------------------------------------------------------------ */

/* Charges SIZE to the device the allocation goes to: that of stream S when USE_STREAM, else
 * that of the current context.  With a single visible device that is device 0 whatever the
 * context or stream, so the charge is tried first without asking the driver (a driver call per
 * allocation); only when it fails is the device asked for, so that a call without a context
 * still gets the driver's error rather than our OOM.  Returns CUDA_SUCCESS (charged to record
 * *didx, or *didx < 0: not accounted), CUDA_ERROR_OUT_OF_MEMORY, or CUDA_ERROR_INVALID_CONTEXT
 * when the device cannot be determined (the caller forwards the call unaccounted). */
static CUresult reserve_for(bool use_stream, CUstream s, uint64_t size, CUdevice *dev, int *didx)
{
    if (vgpu_device_single()) {
        *dev = 0;
        if (vgpu_mem_try_reserve(0, size, didx))
            return CUDA_SUCCESS;
    }
    *didx = -1;
    CUresult rc = use_stream ? vgpu_stream_device(s, dev) : vgpu_cu.cuCtxGetDevice(dev);
    if (rc != CUDA_SUCCESS)
        return CUDA_ERROR_INVALID_CONTEXT;
    return vgpu_mem_reserve(*dev, size, didx);
}

CUresult vgpu_cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
    REAL_OR_FAIL(cuMemAlloc_v2);
    if (passthrough() || dptr == NULL || bytesize == 0)
        return vgpu_cu.cuMemAlloc_v2(dptr, bytesize);
    CUdevice dev;
    int didx;
    CUresult rc = reserve_for(false, NULL, bytesize, &dev, &didx);
    if (rc == CUDA_ERROR_INVALID_CONTEXT)
        return vgpu_cu.cuMemAlloc_v2(dptr, bytesize);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vgpu_cu.cuMemAlloc_v2(dptr, bytesize);
    if (kept(rc, didx, bytesize))
        vgpu_mem_track(*dptr, VGPU_KIND_MEM, didx, bytesize);
    return rc;
}
VGPU_EXPORT(cuMemAlloc_v2)

/* Managed memory is charged in full to the current device (policy: it can all become resident
 * there, so it counts against the slice like cuMemAlloc). */
CUresult vgpu_cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
    REAL_OR_FAIL(cuMemAllocManaged);
    if (passthrough() || dptr == NULL || bytesize == 0)
        return vgpu_cu.cuMemAllocManaged(dptr, bytesize, flags);
    CUdevice dev;
    int didx;
    CUresult rc = reserve_for(false, NULL, bytesize, &dev, &didx);
    if (rc == CUDA_ERROR_INVALID_CONTEXT)
        return vgpu_cu.cuMemAllocManaged(dptr, bytesize, flags);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vgpu_cu.cuMemAllocManaged(dptr, bytesize, flags);
    if (kept(rc, didx, bytesize))
        vgpu_mem_track(*dptr, VGPU_KIND_MEM, didx, bytesize);
    return rc;
}
VGPU_EXPORT(cuMemAllocManaged)

/* Pitched allocations are charged pitch * height as returned by the driver: the row width is
 * reserved first (a lower bound), the padding is charged after the call. */
CUresult vgpu_cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
                                 unsigned int ElementSizeBytes)
{
    REAL_OR_FAIL(cuMemAllocPitch_v2);
    CUdevice dev;
    uint64_t est;
    if (passthrough() || dptr == NULL || pPitch == NULL || !mul_ok(WidthInBytes, Height, &est) || est == 0)
        return vgpu_cu.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    int didx;
    CUresult rc = reserve_for(false, NULL, est, &dev, &didx);
    if (rc == CUDA_ERROR_INVALID_CONTEXT)
        return vgpu_cu.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vgpu_cu.cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    if (rc != CUDA_SUCCESS) {
        vgpu_mem_unreserve(didx, est);
        return rc;
    }
    uint64_t actual;
    if (!mul_ok(*pPitch, Height, &actual))
        actual = est;
    if (actual > est && didx >= 0) {
        int d2;
        if (vgpu_mem_reserve(dev, actual - est, &d2) != CUDA_SUCCESS) {
            if (vgpu_cu.cuMemFree_v2 != NULL)
                vgpu_cu.cuMemFree_v2(*dptr);
            vgpu_mem_unreserve(didx, est);
            *dptr = 0;
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
    } else if (actual < est) {
        vgpu_mem_unreserve(didx, est - actual);
    }
    vgpu_mem_track(*dptr, VGPU_KIND_MEM, didx, actual);
    return rc;
}
VGPU_EXPORT(cuMemAllocPitch_v2)

CUresult vgpu_cuMemFree_v2(CUdeviceptr dptr)
{
    REAL_OR_FAIL(cuMemFree_v2);
    if (dptr == 0 || passthrough())
        return vgpu_cu.cuMemFree_v2(dptr);
    struct vgpu_alloc_rec rec;
    bool tracked = vgpu_mem_untrack(dptr, VGPU_KIND_MEM, &rec);
    CUresult rc = vgpu_cu.cuMemFree_v2(dptr); /* untracked pointers are forwarded too */
    settle_free(tracked, dptr, &rec, rc);
    return rc;
}
VGPU_EXPORT(cuMemFree_v2)

/* ---- stream-ordered allocations ---------------------------------------------------------
 * Charged the full request at allocation and returned at cuMemFreeAsync (memory kept reserved
 * by the pool after a free is not charged). */

typedef CUresult (*alloc_async_fn)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*alloc_pool_fn)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
typedef CUresult (*free_async_fn)(CUdeviceptr, CUstream);

static CUresult alloc_async(alloc_async_fn fa, alloc_pool_fn fp, CUdeviceptr *dptr, size_t size,
                            CUmemoryPool pool, CUstream s)
{
#define CALL() (fa != NULL ? fa(dptr, size, s) : fp(dptr, size, pool, s))
    if (fa == NULL && fp == NULL)
        return CUDA_ERROR_NOT_FOUND;
    if (passthrough() || dptr == NULL || size == 0)
        return CALL();
    CUdevice dev;
    int didx;
    CUresult rc = reserve_for(true, s, size, &dev, &didx);
    if (rc == CUDA_ERROR_INVALID_CONTEXT)
        return CALL();
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = CALL();
    if (kept(rc, didx, size))
        vgpu_mem_track(*dptr, VGPU_KIND_MEM, didx, size);
    return rc;
#undef CALL
}

static CUresult free_async(free_async_fn f, CUdeviceptr dptr, CUstream s)
{
    if (f == NULL)
        return CUDA_ERROR_NOT_FOUND;
    if (dptr == 0 || passthrough())
        return f(dptr, s);
    struct vgpu_alloc_rec rec;
    bool tracked = vgpu_mem_untrack(dptr, VGPU_KIND_MEM, &rec);
    CUresult rc = f(dptr, s);
    settle_free(tracked, dptr, &rec, rc);
    return rc;
}

CUresult vgpu_cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    if (!vgpu_cuda_load())
        return CUDA_ERROR_NOT_FOUND;
    return alloc_async(vgpu_cu.cuMemAllocAsync, NULL, dptr, bytesize, NULL, hStream);
}
VGPU_EXPORT(cuMemAllocAsync)

CUresult vgpu_cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
    if (!vgpu_cuda_load())
        return CUDA_ERROR_NOT_FOUND;
    return alloc_async(vgpu_cu.cuMemAllocAsync_ptsz, NULL, dptr, bytesize, NULL, hStream);
}
VGPU_EXPORT(cuMemAllocAsync_ptsz)

/* Pool allocations are charged to the device of the stream they are ordered on. */
CUresult vgpu_cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                      CUstream hStream)
{
    if (!vgpu_cuda_load())
        return CUDA_ERROR_NOT_FOUND;
    return alloc_async(NULL, vgpu_cu.cuMemAllocFromPoolAsync, dptr, bytesize, pool, hStream);
}
VGPU_EXPORT(cuMemAllocFromPoolAsync)

CUresult vgpu_cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
                                           CUstream hStream)
{
    if (!vgpu_cuda_load())
        return CUDA_ERROR_NOT_FOUND;
    return alloc_async(NULL, vgpu_cu.cuMemAllocFromPoolAsync_ptsz, dptr, bytesize, pool, hStream);
}
VGPU_EXPORT(cuMemAllocFromPoolAsync_ptsz)

CUresult vgpu_cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
    if (!vgpu_cuda_load())
        return CUDA_ERROR_NOT_FOUND;
    return free_async(vgpu_cu.cuMemFreeAsync, dptr, hStream);
}
VGPU_EXPORT(cuMemFreeAsync)

CUresult vgpu_cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream)
{
    if (!vgpu_cuda_load())
        return CUDA_ERROR_NOT_FOUND;
    return free_async(vgpu_cu.cuMemFreeAsync_ptsz, dptr, hStream);
}
VGPU_EXPORT(cuMemFreeAsync_ptsz)

/* ---- virtual memory management ----------------------------------------------------------
 * cuMemCreate on a device location is charged its size to THAT device (prop->location.id, not
 * the current context); host / host-NUMA locations are not device memory and pass through. */

CUresult vgpu_cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                          const CUmemAllocationProp *prop, unsigned long long flags)
{
    REAL_OR_FAIL(cuMemCreate);
    if (passthrough() || handle == NULL || prop == NULL || size == 0 ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return vgpu_cu.cuMemCreate(handle, size, prop, flags);
    int didx;
    CUresult rc = vgpu_mem_reserve((CUdevice)prop->location.id, size, &didx);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vgpu_cu.cuMemCreate(handle, size, prop, flags);
    if (kept(rc, didx, size))
        vgpu_mem_track((uint64_t)*handle, VGPU_KIND_VMM, didx, size);
    return rc;
}
VGPU_EXPORT(cuMemCreate)

CUresult vgpu_cuMemRelease(CUmemGenericAllocationHandle handle)
{
    REAL_OR_FAIL(cuMemRelease);
    if (passthrough())
        return vgpu_cu.cuMemRelease(handle);
    struct vgpu_alloc_rec rec;
    bool tracked = vgpu_mem_untrack((uint64_t)handle, VGPU_KIND_VMM, &rec);
    CUresult rc = vgpu_cu.cuMemRelease(handle);
    settle_free(tracked, (uint64_t)handle, &rec, rc);
    return rc;
}
VGPU_EXPORT(cuMemRelease)

/* ---- arrays -------------------------------------------------------------------------------
 * Charged width * max(height,1) * max(depth,1) * channels * bytes per channel of the format
 * (a descriptor-derived estimate: the driver's tiling padding is not visible); mipmapped arrays
 * charge the sum over their levels. */

static uint64_t format_bytes(CUarray_format f)
{
    switch ((unsigned)f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8:
    case CU_AD_FORMAT_UNORM_INT8X1:
    case CU_AD_FORMAT_SNORM_INT8X1:
    case CU_AD_FORMAT_NV12:
        return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF:
    case CU_AD_FORMAT_UNORM_INT16X1:
    case CU_AD_FORMAT_SNORM_INT16X1:
    case CU_AD_FORMAT_UNORM_INT8X2:
    case CU_AD_FORMAT_SNORM_INT8X2:
        return 2;
    case CU_AD_FORMAT_UNORM_INT16X2:
    case CU_AD_FORMAT_SNORM_INT16X2:
    case CU_AD_FORMAT_UNORM_INT8X4:
    case CU_AD_FORMAT_SNORM_INT8X4:
        return 4;
    case CU_AD_FORMAT_UNORM_INT16X4:
    case CU_AD_FORMAT_SNORM_INT16X4:
        return 8;
    default:
        return 4; /* 32-bit types and the rest */
    }
}

static uint64_t array_bytes(size_t w, size_t h, size_t d, CUarray_format f, unsigned ch)
{
    uint64_t n = 1, t;
    if (!mul_ok(w ? w : 1, h ? h : 1, &t) || !mul_ok(t, d ? d : 1, &n))
        return UINT64_MAX;
    if (!mul_ok(n, format_bytes(f), &t) || !mul_ok(t, ch ? ch : 1, &n))
        return UINT64_MAX;
    return n;
}

static CUresult array_create_common(uint64_t bytes, CUdevice *dev, int *didx)
{
    *didx = -1;
    if (vgpu_cu.cuCtxGetDevice(dev) != CUDA_SUCCESS)
        return CUDA_SUCCESS; /* no context: the driver reports the error */
    return vgpu_mem_reserve(*dev, bytes, didx);
}

CUresult vgpu_cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *desc)
{
    REAL_OR_FAIL(cuArrayCreate_v2);
    if (passthrough() || pHandle == NULL || desc == NULL)
        return vgpu_cu.cuArrayCreate_v2(pHandle, desc);
    uint64_t bytes = array_bytes(desc->Width, desc->Height, 1, desc->Format, desc->NumChannels);
    CUdevice dev;
    int didx;
    CUresult rc = array_create_common(bytes, &dev, &didx);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vgpu_cu.cuArrayCreate_v2(pHandle, desc);
    if (kept(rc, didx, bytes))
        vgpu_mem_track((uint64_t)(uintptr_t)*pHandle, VGPU_KIND_ARRAY, didx, bytes);
    return rc;
}
VGPU_EXPORT(cuArrayCreate_v2)

CUresult vgpu_cuArray3DCreate_v2(CUarray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *desc)
{
    REAL_OR_FAIL(cuArray3DCreate_v2);
    if (passthrough() || pHandle == NULL || desc == NULL)
        return vgpu_cu.cuArray3DCreate_v2(pHandle, desc);
    uint64_t bytes =
        array_bytes(desc->Width, desc->Height, desc->Depth, desc->Format, desc->NumChannels);
    CUdevice dev;
    int didx;
    CUresult rc = array_create_common(bytes, &dev, &didx);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vgpu_cu.cuArray3DCreate_v2(pHandle, desc);
    if (kept(rc, didx, bytes))
        vgpu_mem_track((uint64_t)(uintptr_t)*pHandle, VGPU_KIND_ARRAY, didx, bytes);
    return rc;
}
VGPU_EXPORT(cuArray3DCreate_v2)

CUresult vgpu_cuArrayDestroy(CUarray hArray)
{
    REAL_OR_FAIL(cuArrayDestroy);
    if (passthrough())
        return vgpu_cu.cuArrayDestroy(hArray);
    struct vgpu_alloc_rec rec;
    uint64_t key = (uint64_t)(uintptr_t)hArray;
    bool tracked = vgpu_mem_untrack(key, VGPU_KIND_ARRAY, &rec);
    CUresult rc = vgpu_cu.cuArrayDestroy(hArray);
    settle_free(tracked, key, &rec, rc);
    return rc;
}
VGPU_EXPORT(cuArrayDestroy)

CUresult vgpu_cuMipmappedArrayCreate(CUmipmappedArray *pHandle, const CUDA_ARRAY3D_DESCRIPTOR *desc,
                                     unsigned int numMipmapLevels)
{
    REAL_OR_FAIL(cuMipmappedArrayCreate);
    if (passthrough() || pHandle == NULL || desc == NULL)
        return vgpu_cu.cuMipmappedArrayCreate(pHandle, desc, numMipmapLevels);
    uint64_t bytes = 0;
    size_t w = desc->Width, h = desc->Height, d = desc->Depth;
    unsigned levels = numMipmapLevels ? numMipmapLevels : 1;
    for (unsigned l = 0; l < levels && l < 64; l++) {
        uint64_t b = array_bytes(w, h, d, desc->Format, desc->NumChannels);
        bytes = (UINT64_MAX - bytes < b) ? UINT64_MAX : bytes + b;
        w = w > 1 ? w / 2 : w;
        h = h > 1 ? h / 2 : h;
        d = d > 1 ? d / 2 : d;
    }
    CUdevice dev;
    int didx;
    CUresult rc = array_create_common(bytes, &dev, &didx);
    if (rc != CUDA_SUCCESS)
        return rc;
    rc = vgpu_cu.cuMipmappedArrayCreate(pHandle, desc, numMipmapLevels);
    if (kept(rc, didx, bytes))
        vgpu_mem_track((uint64_t)(uintptr_t)*pHandle, VGPU_KIND_MIPMAP, didx, bytes);
    return rc;
}
VGPU_EXPORT(cuMipmappedArrayCreate)

CUresult vgpu_cuMipmappedArrayDestroy(CUmipmappedArray h)
{
    REAL_OR_FAIL(cuMipmappedArrayDestroy);
    if (passthrough())
        return vgpu_cu.cuMipmappedArrayDestroy(h);
    struct vgpu_alloc_rec rec;
    uint64_t key = (uint64_t)(uintptr_t)h;
    bool tracked = vgpu_mem_untrack(key, VGPU_KIND_MIPMAP, &rec);
    CUresult rc = vgpu_cu.cuMipmappedArrayDestroy(h);
    settle_free(tracked, key, &rec, rc);
    return rc;
}
VGPU_EXPORT(cuMipmappedArrayDestroy)

/* ---- reports ------------------------------------------------------------------------------
 * With a limit: total = min(limit, physical total); free = min(total - used by the claim (>= 0),
 * physical free).  NULL out-pointers are allowed.  Without a limit: the driver's answer. */

CUresult vgpu_cuMemGetInfo_v2(size_t *free_out, size_t *total_out)
{
    REAL_OR_FAIL(cuMemGetInfo_v2);
    CUdevice dev;
    const struct vgpu_device *d = NULL;
    if (!passthrough() && vgpu_cu.cuCtxGetDevice(&dev) == CUDA_SUCCESS)
        d = vgpu_device_get(dev);
    if (d == NULL || !d->lim.set)
        return vgpu_cu.cuMemGetInfo_v2(free_out, total_out);
    size_t rf = 0, rt = 0;
    CUresult rc = vgpu_cu.cuMemGetInfo_v2(&rf, &rt);
    if (rc != CUDA_SUCCESS)
        return rc;
    uint64_t total = d->lim.bytes < rt ? d->lim.bytes : rt;
    uint64_t used = vgpu_region_used(d->didx);
    uint64_t free_b = used < total ? total - used : 0;
    if (free_b > rf)
        free_b = rf;
    if (free_out != NULL)
        *free_out = (size_t)free_b;
    if (total_out != NULL)
        *total_out = (size_t)total;
    return CUDA_SUCCESS;
}
VGPU_EXPORT(cuMemGetInfo_v2)

CUresult vgpu_cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    REAL_OR_FAIL(cuDeviceTotalMem_v2);
    CUresult rc = vgpu_cu.cuDeviceTotalMem_v2(bytes, dev);
    if (rc != CUDA_SUCCESS || bytes == NULL || passthrough())
        return rc;
    const struct vgpu_device *d = vgpu_device_get(dev);
    if (d != NULL && d->lim.set && d->lim.bytes < *bytes)
        *bytes = (size_t)d->lim.bytes;
    return rc;
}
VGPU_EXPORT(cuDeviceTotalMem_v2)

/* ---- launches ---------------------------------------------------------------------------- */

#define LAUNCH_GATE(stream, blocks)                                                                \
    do {                                                                                           \
        if (vgpu_limiter_maybe_active())                                                           \
            vgpu_limiter_launch((stream), (blocks));                                               \
    } while (0)

static inline uint64_t grid(unsigned x, unsigned y, unsigned z)
{
    return (uint64_t)x * (uint64_t)y * (uint64_t)z;
}

CUresult vgpu_cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                             unsigned int bx, unsigned int by, unsigned int bz, unsigned int shm,
                             CUstream s, void **params, void **extra)
{
    REAL_OR_FAIL(cuLaunchKernel);
    LAUNCH_GATE(s, grid(gx, gy, gz));
    return vgpu_cu.cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shm, s, params, extra);
}
VGPU_EXPORT(cuLaunchKernel)

CUresult vgpu_cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                  unsigned int bx, unsigned int by, unsigned int bz, unsigned int shm,
                                  CUstream s, void **params, void **extra)
{
    REAL_OR_FAIL(cuLaunchKernel_ptsz);
    LAUNCH_GATE(s == NULL ? CU_STREAM_PER_THREAD : s, grid(gx, gy, gz));
    return vgpu_cu.cuLaunchKernel_ptsz(f, gx, gy, gz, bx, by, bz, shm, s, params, extra);
}
VGPU_EXPORT(cuLaunchKernel_ptsz)

CUresult vgpu_cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
{
    REAL_OR_FAIL(cuLaunchKernelEx);
    if (config != NULL)
        LAUNCH_GATE(config->hStream, grid(config->gridDimX, config->gridDimY, config->gridDimZ));
    return vgpu_cu.cuLaunchKernelEx(config, f, params, extra);
}
VGPU_EXPORT(cuLaunchKernelEx)

CUresult vgpu_cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **params,
                                    void **extra)
{
    REAL_OR_FAIL(cuLaunchKernelEx_ptsz);
    if (config != NULL)
        LAUNCH_GATE(config->hStream == NULL ? CU_STREAM_PER_THREAD : config->hStream,
                    grid(config->gridDimX, config->gridDimY, config->gridDimZ));
    return vgpu_cu.cuLaunchKernelEx_ptsz(config, f, params, extra);
}
VGPU_EXPORT(cuLaunchKernelEx_ptsz)

CUresult vgpu_cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy,
                                        unsigned int gz, unsigned int bx, unsigned int by,
                                        unsigned int bz, unsigned int shm, CUstream s, void **params)
{
    REAL_OR_FAIL(cuLaunchCooperativeKernel);
    LAUNCH_GATE(s, grid(gx, gy, gz));
    return vgpu_cu.cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, shm, s, params);
}
VGPU_EXPORT(cuLaunchCooperativeKernel)

CUresult vgpu_cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                                             unsigned int gz, unsigned int bx, unsigned int by,
                                             unsigned int bz, unsigned int shm, CUstream s,
                                             void **params)
{
    REAL_OR_FAIL(cuLaunchCooperativeKernel_ptsz);
    LAUNCH_GATE(s == NULL ? CU_STREAM_PER_THREAD : s, grid(gx, gy, gz));
    return vgpu_cu.cuLaunchCooperativeKernel_ptsz(f, gx, gy, gz, bx, by, bz, shm, s, params);
}
VGPU_EXPORT(cuLaunchCooperativeKernel_ptsz)

/* A graph launch is gated like one launch (its kernels are not visible here). */
CUresult vgpu_cuGraphLaunch(CUgraphExec g, CUstream s)
{
    REAL_OR_FAIL(cuGraphLaunch);
    LAUNCH_GATE(s, 1);
    return vgpu_cu.cuGraphLaunch(g, s);
}
VGPU_EXPORT(cuGraphLaunch)

CUresult vgpu_cuGraphLaunch_ptsz(CUgraphExec g, CUstream s)
{
    REAL_OR_FAIL(cuGraphLaunch_ptsz);
    LAUNCH_GATE(s == NULL ? CU_STREAM_PER_THREAD : s, 1);
    return vgpu_cu.cuGraphLaunch_ptsz(g, s);
}
VGPU_EXPORT(cuGraphLaunch_ptsz)
