/* Real CUDA and NVML headers with every versioned, legacy and _ptsz/_ptds prototype visible
 * under its exact exported name (no cuMemAlloc -> cuMemAlloc_v2 renaming). */
#ifndef VGPU_CUDA_API_H
#define VGPU_CUDA_API_H

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <nvml.h>

#endif
