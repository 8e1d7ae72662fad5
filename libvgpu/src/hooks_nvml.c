/* NVML memory views of the slice: total = min(limit, physical), used = what the claim uses
 * (clamped to total), free = total - used, also clamped to the physical free (then used is
 * total - free), so free + used (+ reserved, 0, for v2) == total and nothing can wrap.
 * Devices are matched by UUID, so NVML and CUDA always talk about the same GPU. */
#include "config.h"
#include "device.h"
#include "driver.h"
#include "region.h"

#include <string.h>

/* Limit and claim usage for an NVML device; false if no limit applies. */
static bool slice_of(nvmlDevice_t device, uint64_t *limit, uint64_t *used)
{
    const struct vgpu_config *cfg = vgpu_config_get();
    if (cfg->disabled || vgpu_nvml.nvmlDeviceGetUUID == NULL)
        return false;
    char uuid[VGPU_UUID_STR];
    if (vgpu_nvml.nvmlDeviceGetUUID(device, uuid, sizeof uuid) != NVML_SUCCESS)
        return false;
    struct vgpu_mem_limit lim;
    if (vgpu_config_uuid_mode(cfg)) {
        lim = vgpu_config_device_limit(cfg, -1, uuid, NULL);
    } else {
        /* indexed variables name CUDA ordinals: find this GPU's ordinal by UUID */
        int ord = vgpu_device_ordinal_by_uuid(uuid);
        if (ord < 0 && vgpu_nvml.nvmlDeviceGetIndex != NULL) {
            unsigned idx;
            if (vgpu_nvml.nvmlDeviceGetIndex(device, &idx) == NVML_SUCCESS)
                ord = (int)idx; /* CUDA_DEVICE_ORDER=PCI_BUS_ID: same order */
        }
        lim = vgpu_config_device_limit(cfg, ord, uuid, NULL);
    }
    if (!lim.set)
        return false;
    *limit = lim.bytes;
    int didx = vgpu_region_device_find(uuid);
    *used = didx >= 0 ? vgpu_region_used(didx) : 0;
    return true;
}

static void fit(uint64_t limit, uint64_t used, uint64_t phys_total, uint64_t phys_free,
                unsigned long long *total, unsigned long long *free_b, unsigned long long *used_b)
{
    uint64_t t = limit < phys_total ? limit : phys_total;
    uint64_t u = used < t ? used : t;
    uint64_t f = t - u;
    if (f > phys_free) {
        f = phys_free;
        u = t - f;
    }
    *total = t;
    *free_b = f;
    *used_b = u;
}

nvmlReturn_t vgpu_nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    if (!vgpu_nvml_load() || vgpu_nvml.nvmlDeviceGetMemoryInfo == NULL)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t rc = vgpu_nvml.nvmlDeviceGetMemoryInfo(device, memory);
    uint64_t limit, used;
    if (rc != NVML_SUCCESS || memory == NULL || !slice_of(device, &limit, &used))
        return rc;
    fit(limit, used, memory->total, memory->free, &memory->total, &memory->free, &memory->used);
    return rc;
}
VGPU_EXPORT(nvmlDeviceGetMemoryInfo)

nvmlReturn_t vgpu_nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    if (!vgpu_nvml_load() || vgpu_nvml.nvmlDeviceGetMemoryInfo_v2 == NULL)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t rc = vgpu_nvml.nvmlDeviceGetMemoryInfo_v2(device, memory);
    uint64_t limit, used;
    if (rc != NVML_SUCCESS || memory == NULL || !slice_of(device, &limit, &used))
        return rc;
    fit(limit, used, memory->total, memory->free, &memory->total, &memory->free, &memory->used);
    memory->reserved = 0;
    return rc;
}
VGPU_EXPORT(nvmlDeviceGetMemoryInfo_v2)
