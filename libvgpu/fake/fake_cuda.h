/* Internal interface of the fake libcuda.so.1 (between fake_cuda.c and fake_procaddr.c). */
#ifndef FAKE_CUDA_H
#define FAKE_CUDA_H

/* every legacy, versioned and _ptsz/_ptds prototype under its exported name */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>

#include "fake_common.h"

/* returns CUDA_ERROR_NOT_SUPPORTED; handed out by cuGetProcAddress for driver entry points
 * declared in cuda.h that the fake does not implement */
FAKE_EXPORT CUresult fake_cuda_not_supported(void);

/* the lookup behind cuGetProcAddress / cuGetProcAddress_v2 */
FAKE_HIDDEN CUresult fake_proc_lookup(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                                      CUdriverProcAddressQueryResult *status);

/* every CUresult entry point declared by cuda.h (generated list) */
FAKE_HIDDEN const char *const *fake_header_names(size_t *n);

#endif
