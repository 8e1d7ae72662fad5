/* cuGetProcAddress / cuGetProcAddress_v2.
 *
 * We ask the real driver first, with the caller's symbol, cudaVersion and flags, and only then
 * swap the answer for our wrapper if the driver handed out the real function of one we wrap.
 * So the version and per-thread-stream semantics are exactly the driver's: cuMemAlloc asked at
 * cudaVersion < 3020 gets the legacy 32-bit entry (not wrapped), CU_GET_PROC_ADDRESS_PER_THREAD_
 * DEFAULT_STREAM gets the _ptsz wrapper, cuGetProcAddress itself comes back wrapped, and
 * symbolStatus is the driver's. */
#include "config.h"
#include "driver.h"

CUresult vgpu_cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
    if (!vgpu_cuda_load() || vgpu_cu.cuGetProcAddress == NULL)
        return CUDA_ERROR_NOT_FOUND;
    CUresult rc = vgpu_cu.cuGetProcAddress(symbol, pfn, cudaVersion, flags);
    if (rc == CUDA_SUCCESS && pfn != NULL && !vgpu_config_get()->disabled)
        *pfn = vgpu_hook_wrap_ptr(*pfn);
    return rc;
}
VGPU_EXPORT(cuGetProcAddress)

CUresult vgpu_cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                  CUdriverProcAddressQueryResult *symbolStatus)
{
    if (!vgpu_cuda_load() || vgpu_cu.cuGetProcAddress_v2 == NULL)
        return CUDA_ERROR_NOT_FOUND;
    CUresult rc = vgpu_cu.cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, symbolStatus);
    if (rc == CUDA_SUCCESS && pfn != NULL && !vgpu_config_get()->disabled)
        *pfn = vgpu_hook_wrap_ptr(*pfn);
    return rc;
}
VGPU_EXPORT(cuGetProcAddress_v2)
