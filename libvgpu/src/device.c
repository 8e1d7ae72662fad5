#include "device.h"

#include "driver.h"
#include "log.h"
#include "region.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
struct vgpu_device vgpu_devices[VGPU_MAX_DEVICES];
atomic_int vgpu_device_state[VGPU_MAX_DEVICES];
#define g_dev vgpu_devices
#define g_state vgpu_device_state

void vgpu_format_uuid(const CUuuid *u, char *out, size_t cap)
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, cap,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

static bool query_uuid(CUdevice dev, char *out, size_t cap)
{
    CUuuid u;
    memset(&u, 0, sizeof u);
    CUresult rc = CUDA_ERROR_NOT_FOUND;
    if (vgpu_cu.cuDeviceGetUuid_v2 != NULL)
        rc = vgpu_cu.cuDeviceGetUuid_v2(&u, dev);
    if (rc != CUDA_SUCCESS && vgpu_cu.cuDeviceGetUuid != NULL)
        rc = vgpu_cu.cuDeviceGetUuid(&u, dev);
    if (rc != CUDA_SUCCESS)
        return false;
    vgpu_format_uuid(&u, out, cap);
    return true;
}

const struct vgpu_device *vgpu_device_get_slow(CUdevice dev)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES)
        return NULL;
    if (atomic_load_explicit(&g_state[dev], memory_order_acquire) == 1)
        return &g_dev[dev];
    if (!vgpu_cuda_load())
        return NULL;
    /* No such ordinal (e.g. a garbage cuMemCreate location.id): nothing to account, the driver
     * reports the error, and no shared device record is spent on it. */
    CUdevice probe;
    if (vgpu_cu.cuDeviceGet != NULL && vgpu_cu.cuDeviceGet(&probe, dev) == CUDA_ERROR_INVALID_DEVICE)
        return NULL;
    const struct vgpu_config *cfg = vgpu_config_get();
    pthread_mutex_lock(&g_mu);
    if (atomic_load(&g_state[dev]) != 1) {
        struct vgpu_device *d = &g_dev[dev];
        memset(d, 0, sizeof *d);
        d->ordinal = dev;
        bool have_uuid = query_uuid(dev, d->uuid, sizeof d->uuid);
        if (!have_uuid)
            snprintf(d->uuid, sizeof d->uuid, "ORDINAL-%d", dev);
        d->lim = vgpu_config_device_limit(cfg, dev, have_uuid ? d->uuid : NULL, &d->sm);
        if (vgpu_config_uuid_mode(cfg) && !have_uuid)
            vgpu_error("cannot read the UUID of CUDA device %d; its memory limit is 0", dev);
        else if (vgpu_config_uuid_mode(cfg) && d->lim.set && d->lim.bytes == 0)
            vgpu_warn("CUDA device %d (%s) is not in this claim's VGPU_DEVICE_LIMIT_* list (or "
                      "its entry is invalid); its memory limit is 0",
                      dev, d->uuid);
        /* Register now (O(1), no shared lock; the first memory report of the process reclaims
         * the memory of dead processes, so even a first cuMemGetInfo reports what is in use). */
        vgpu_region_slot();
        d->didx = vgpu_region_device_index(d->uuid);
        vgpu_region_publish_limit(d->didx, d->lim.set, d->lim.bytes, d->sm);
        vgpu_info("CUDA device %d: %s, memory limit %s%llu, sm cap %u", dev, d->uuid,
                  d->lim.set ? "" : "none/", (unsigned long long)d->lim.bytes, d->sm);
        atomic_store_explicit(&g_state[dev], 1, memory_order_release);
    }
    pthread_mutex_unlock(&g_mu);
    return &g_dev[dev];
}

int vgpu_device_ordinal_by_uuid(const char *uuid)
{
    if (uuid == NULL || !vgpu_cuda_load())
        return -1;
    int n = 0;
    if (vgpu_cu.cuDeviceGetCount == NULL)
        return -1;
    if (vgpu_cu.cuDeviceGetCount(&n) == CUDA_ERROR_NOT_INITIALIZED && vgpu_cu.cuInit != NULL) {
        if (vgpu_cu.cuInit(0) != CUDA_SUCCESS || vgpu_cu.cuDeviceGetCount(&n) != CUDA_SUCCESS)
            return -1;
    }
    for (int i = 0; i < n && i < VGPU_MAX_DEVICES; i++) {
        const struct vgpu_device *d = vgpu_device_get(i);
        if (d != NULL && vgpu_uuid_equal(d->uuid, uuid))
            return i;
    }
    return -1;
}

CUresult vgpu_stream_device(CUstream s, CUdevice *dev)
{
    if (s != NULL && s != CU_STREAM_LEGACY && s != CU_STREAM_PER_THREAD) {
        if (vgpu_cu.cuStreamGetDevice != NULL && vgpu_cu.cuStreamGetDevice(s, dev) == CUDA_SUCCESS)
            return CUDA_SUCCESS;
        CUcontext ctx = NULL, old = NULL;
        if (vgpu_cu.cuStreamGetCtx != NULL && vgpu_cu.cuCtxPushCurrent_v2 != NULL &&
            vgpu_cu.cuCtxPopCurrent_v2 != NULL && vgpu_cu.cuStreamGetCtx(s, &ctx) == CUDA_SUCCESS &&
            ctx != NULL && vgpu_cu.cuCtxPushCurrent_v2(ctx) == CUDA_SUCCESS) {
            CUresult rc = vgpu_cu.cuCtxGetDevice(dev);
            vgpu_cu.cuCtxPopCurrent_v2(&old);
            return rc;
        }
    }
    if (vgpu_cu.cuCtxGetDevice == NULL)
        return CUDA_ERROR_NOT_FOUND;
    return vgpu_cu.cuCtxGetDevice(dev);
}

atomic_int vgpu_device_single_state;

int vgpu_device_single_slow(void)
{
    int n = 0;
    if (!vgpu_cuda_load() || vgpu_cu.cuDeviceGetCount == NULL ||
        vgpu_cu.cuDeviceGetCount(&n) != CUDA_SUCCESS)
        return 0; /* not initialized yet: ask again next time */
    int s = n == 1 ? 1 : 2;
    atomic_store_explicit(&vgpu_device_single_state, s, memory_order_relaxed);
    return s;
}

void vgpu_device_atfork_child(void)
{
    atomic_store(&vgpu_device_single_state, 0);
    pthread_mutex_init(&g_mu, NULL);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++)
        atomic_store(&g_state[i], 0); /* region record indexes are re-resolved after re-attach */
}
