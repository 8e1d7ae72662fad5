/* The real driver: libcuda.so.1 and libnvidia-ml.so.1 loaded with dlopen, entry points resolved
 * with the real dlsym on those handles.  Also the table of the functions we wrap. */
#ifndef VGPU_DRIVER_H
#define VGPU_DRIVER_H

#include "cuda_api.h"

#include <stdatomic.h>
#include <stdbool.h>

/* Functions we export and wrap (name = exported symbol = real symbol). */
#define VGPU_CUDA_HOOKS(X)                                                                         \
    X(cuGetProcAddress)                                                                            \
    X(cuGetProcAddress_v2)                                                                         \
    X(cuMemAlloc_v2)                                                                               \
    X(cuMemAllocPitch_v2)                                                                          \
    X(cuMemAllocManaged)                                                                           \
    X(cuMemAllocAsync)                                                                             \
    X(cuMemAllocAsync_ptsz)                                                                        \
    X(cuMemAllocFromPoolAsync)                                                                     \
    X(cuMemAllocFromPoolAsync_ptsz)                                                                \
    X(cuMemFree_v2)                                                                                \
    X(cuMemFreeAsync)                                                                              \
    X(cuMemFreeAsync_ptsz)                                                                         \
    X(cuMemCreate)                                                                                 \
    X(cuMemRelease)                                                                                \
    X(cuArrayCreate_v2)                                                                            \
    X(cuArray3DCreate_v2)                                                                          \
    X(cuArrayDestroy)                                                                              \
    X(cuMipmappedArrayCreate)                                                                      \
    X(cuMipmappedArrayDestroy)                                                                     \
    X(cuMemGetInfo_v2)                                                                             \
    X(cuDeviceTotalMem_v2)                                                                         \
    X(cuLaunchKernel)                                                                              \
    X(cuLaunchKernel_ptsz)                                                                         \
    X(cuLaunchKernelEx)                                                                            \
    X(cuLaunchKernelEx_ptsz)                                                                       \
    X(cuLaunchCooperativeKernel)                                                                   \
    X(cuLaunchCooperativeKernel_ptsz)                                                              \
    X(cuGraphLaunch)                                                                               \
    X(cuGraphLaunch_ptsz)

/* Driver functions we call but do not wrap. */
#define VGPU_CUDA_HELPERS(X)                                                                       \
    X(cuInit)                                                                                      \
    X(cuCtxGetDevice)                                                                              \
    X(cuCtxGetCurrent)                                                                             \
    X(cuCtxPushCurrent_v2)                                                                         \
    X(cuCtxPopCurrent_v2)                                                                          \
    X(cuDeviceGet)                                                                                 \
    X(cuDeviceGetCount)                                                                            \
    X(cuDeviceGetUuid)                                                                             \
    X(cuDeviceGetUuid_v2)                                                                          \
    X(cuDeviceGetAttribute)                                                                        \
    X(cuStreamGetCtx)                                                                              \
    X(cuStreamGetDevice)                                                                           \
    X(cuMemPoolGetAccess)

#define VGPU_NVML_HOOKS(X)                                                                         \
    X(nvmlDeviceGetMemoryInfo)                                                                     \
    X(nvmlDeviceGetMemoryInfo_v2)

#define VGPU_NVML_HELPERS(X)                                                                       \
    X(nvmlInit_v2)                                                                                 \
    X(nvmlDeviceGetUUID)                                                                           \
    X(nvmlDeviceGetIndex)                                                                          \
    X(nvmlDeviceGetHandleByUUID)                                                                   \
    X(nvmlDeviceGetUtilizationRates)                                                               \
    X(nvmlDeviceGetProcessUtilization)

#define VGPU_FIELD(n) __typeof__(&n) n;
struct vgpu_cuda_real {
    VGPU_CUDA_HOOKS(VGPU_FIELD)
    VGPU_CUDA_HELPERS(VGPU_FIELD)
};
struct vgpu_nvml_real {
    VGPU_NVML_HOOKS(VGPU_FIELD)
    VGPU_NVML_HELPERS(VGPU_FIELD)
};
#undef VGPU_FIELD

/* Our wrappers (hidden); exported under the real names by aliases in the hook files. */
#define VGPU_DECLARE_WRAPPER(n) extern __typeof__(n) vgpu_##n;
VGPU_CUDA_HOOKS(VGPU_DECLARE_WRAPPER)
VGPU_NVML_HOOKS(VGPU_DECLARE_WRAPPER)
#undef VGPU_DECLARE_WRAPPER

#define VGPU_EXPORT(n)                                                                             \
    extern __typeof__(n) n __attribute__((alias("vgpu_" #n), visibility("default")));

extern struct vgpu_cuda_real vgpu_cu;
extern struct vgpu_nvml_real vgpu_nvml;
extern atomic_bool vgpu_cuda_ready;
extern atomic_bool vgpu_nvml_ready;

/* Loads libcuda.so.1 (noload: only if the process already has it).  Idempotent, thread-safe;
 * never holds a lock of ours across dlopen.  Returns true when the table is usable. */
bool vgpu_cuda_load_slow(bool noload);
bool vgpu_nvml_load_slow(bool noload);

static inline bool vgpu_cuda_load(void)
{
    return atomic_load_explicit(&vgpu_cuda_ready, memory_order_acquire) || vgpu_cuda_load_slow(false);
}

static inline bool vgpu_nvml_load(void)
{
    return atomic_load_explicit(&vgpu_nvml_ready, memory_order_acquire) || vgpu_nvml_load_slow(false);
}

/* The real dlsym (never ours). */
typedef void *(*vgpu_dlsym_fn)(void *, const char *);
extern vgpu_dlsym_fn vgpu_real_dlsym_ptr;
vgpu_dlsym_fn vgpu_real_dlsym(void);

struct vgpu_hook {
    const char *name;
    void *wrapper;
    size_t real_offset; /* offset of the real pointer in vgpu_cu or vgpu_nvml */
    bool nvml;
};

/* The hook whose exported name is exactly NAME, or NULL. */
const struct vgpu_hook *vgpu_hook_find(const char *name);
/* Real pointer of a hook (NULL if the driver lacks it or is not loaded). */
void *vgpu_hook_real(const struct vgpu_hook *h);
/* If P is the real driver function (or already our wrapper) of a hook, returns our wrapper;
 * otherwise returns P. */
void *vgpu_hook_wrap_ptr(void *p);

#endif
