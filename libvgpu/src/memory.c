#include "memory.h"

#include "config.h"
#include "device.h"
#include "log.h"
#include "region.h"

#include <stdlib.h>

static void out_of_memory(const struct vgpu_device *d, uint64_t size)
{
    const struct vgpu_config *cfg = vgpu_config_get();
    uint64_t used = vgpu_region_used(d->didx);
    if (cfg->oom_policy == VGPU_OOM_KILL) {
        vgpu_error("CUDA device %d (%s): out of memory: request %llu bytes, claim uses %llu of "
                   "%llu; VGPU_OOM_POLICY=kill: aborting the process",
                   d->ordinal, d->uuid, (unsigned long long)size, (unsigned long long)used,
                   (unsigned long long)d->lim.bytes);
        abort();
    }
    vgpu_warn("CUDA device %d (%s): out of memory: request %llu bytes, claim uses %llu of %llu",
              d->ordinal, d->uuid, (unsigned long long)size, (unsigned long long)used,
              (unsigned long long)d->lim.bytes);
}

CUresult vgpu_mem_reserve(CUdevice dev, uint64_t size, int *didx)
{
    *didx = -1;
    const struct vgpu_device *d = vgpu_device_get(dev);
    if (d == NULL || d->didx < 0) {
        /* unknown device: cannot be accounted; fail closed only if a limit would apply */
        if (d != NULL && d->lim.set) {
            vgpu_error("CUDA device %d has a limit but no accounting record; refusing", dev);
            return CUDA_ERROR_OUT_OF_MEMORY;
        }
        return CUDA_SUCCESS;
    }
    if (vgpu_region_charge(d->didx, size, d->lim.set, d->lim.bytes)) {
        *didx = d->didx;
        return CUDA_SUCCESS;
    }
    /* Maybe dead processes still hold charges: reclaim them and retry once. */
    if (vgpu_region_reclaim_dead() > 0 && vgpu_region_charge(d->didx, size, d->lim.set, d->lim.bytes)) {
        *didx = d->didx;
        return CUDA_SUCCESS;
    }
    out_of_memory(d, size);
    return CUDA_ERROR_OUT_OF_MEMORY;
}

bool vgpu_mem_try_reserve(CUdevice dev, uint64_t size, int *didx)
{
    *didx = -1;
    const struct vgpu_device *d = vgpu_device_get(dev);
    if (d == NULL || d->didx < 0 || !vgpu_region_charge(d->didx, size, d->lim.set, d->lim.bytes))
        return false;
    *didx = d->didx;
    return true;
}

void vgpu_mem_unreserve(int didx, uint64_t size)
{
    if (didx >= 0 && size > 0)
        vgpu_region_uncharge(didx, size);
}

void vgpu_mem_track(uint64_t key, uint8_t kind, int didx, uint64_t size)
{
    if (didx < 0)
        return;
    struct vgpu_alloc_rec rec = {size, (int16_t)didx, kind}, old;
    bool replaced = false;
    if (!vgpu_alloc_insert(key, rec, &replaced, &old)) {
        vgpu_error("cannot record an allocation of %llu bytes in the allocation table (out of host "
                   "memory); it is left unaccounted", (unsigned long long)size);
        vgpu_mem_unreserve(didx, size);
        return;
    }
    if (replaced) {
        /* The driver reused an address we still had: it was freed behind our back (context
         * destroyed, ...).  Drop the stale charge. */
        vgpu_debug("stale record for %#llx replaced", (unsigned long long)key);
        vgpu_mem_unreserve(old.didx, old.size);
    }
}

bool vgpu_mem_untrack(uint64_t key, uint8_t kind, struct vgpu_alloc_rec *rec)
{
    return vgpu_alloc_remove(key, kind, rec);
}

void vgpu_mem_retrack(uint64_t key, const struct vgpu_alloc_rec *rec)
{
    bool replaced = false;
    struct vgpu_alloc_rec old;
    if (!vgpu_alloc_insert(key, *rec, &replaced, &old))
        vgpu_mem_unreserve(rec->didx, rec->size);
    else if (replaced)
        vgpu_mem_unreserve(old.didx, old.size);
}
