/* Memory accounting policy on top of the region and the allocation table. */
#ifndef VGPU_MEMORY_H
#define VGPU_MEMORY_H

#include "alloc.h"
#include "cuda_api.h"

#include <stdint.h>

/* Reserves SIZE bytes on DEV before the real allocation.  On success *didx is the region
 * record (-1: device unknown, not tracked).  Returns CUDA_ERROR_OUT_OF_MEMORY when the claim's
 * limit would be exceeded (after reclaiming dead processes once). */
CUresult vgpu_mem_reserve(CUdevice dev, uint64_t size, int *didx);
/* The fast half of vgpu_mem_reserve: one charge attempt, nothing reclaimed or reported.  True
 * when charged (*didx = the record); false otherwise (then call vgpu_mem_reserve, which also
 * handles unknown devices, reclaims dead processes and reports the OOM). */
bool vgpu_mem_try_reserve(CUdevice dev, uint64_t size, int *didx);
/* Returns a reservation / charge. */
void vgpu_mem_unreserve(int didx, uint64_t size);
/* Records a successful allocation (after vgpu_mem_reserve) under KEY. */
void vgpu_mem_track(uint64_t key, uint8_t kind, int didx, uint64_t size);
/* Forgets KEY; true (and *rec) if it was tracked. */
bool vgpu_mem_untrack(uint64_t key, uint8_t kind, struct vgpu_alloc_rec *rec);
/* Puts back a record after a failed free. */
void vgpu_mem_retrack(uint64_t key, const struct vgpu_alloc_rec *rec);

#endif
