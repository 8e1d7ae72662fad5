/* Per-CUDA-device facts of this process: UUID, region record, limits.  Limits attach to the
 * device by UUID (VGPU_DEVICE_LIMIT_*) or by CUDA ordinal (indexed HAMi variables). */
#ifndef VGPU_DEVICE_H
#define VGPU_DEVICE_H

#include "config.h"
#include "cuda_api.h"

#include <stdatomic.h>
#include <stdbool.h>

struct vgpu_device {
    int ordinal;
    char uuid[VGPU_UUID_STR];
    int didx; /* region device record, -1 if none */
    struct vgpu_mem_limit lim;
    unsigned sm; /* 0 = no cap */
};

/* Device info for a CUdevice (== CUDA ordinal); NULL if it cannot be determined.  The fast path
 * (device already set up) is inline: it runs on every allocation. */
extern struct vgpu_device vgpu_devices[VGPU_MAX_DEVICES];
extern atomic_int vgpu_device_state[VGPU_MAX_DEVICES]; /* 0 unknown, 1 ready */
const struct vgpu_device *vgpu_device_get_slow(CUdevice dev);

static inline const struct vgpu_device *vgpu_device_get(CUdevice dev)
{
    if (dev < 0 || dev >= VGPU_MAX_DEVICES)
        return NULL;
    if (__builtin_expect(atomic_load_explicit(&vgpu_device_state[dev], memory_order_acquire) == 1, 1))
        return &vgpu_devices[dev];
    return vgpu_device_get_slow(dev);
}
/* CUDA ordinal of the device with this UUID, or -1.  May call the real cuInit(0). */
int vgpu_device_ordinal_by_uuid(const char *uuid);
/* Formats a CUuuid as "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx". */
void vgpu_format_uuid(const CUuuid *u, char *out, size_t cap);
/* Device of a stream (its context's device; the current context's for the default streams). */
CUresult vgpu_stream_device(CUstream s, CUdevice *dev);
void vgpu_device_atfork_child(void);

/* 0 = not known yet, 1 = the process sees exactly one CUDA device, 2 = several (or none). */
extern atomic_int vgpu_device_single_state;
int vgpu_device_single_slow(void);

/* True when the process sees exactly one CUDA device: every context and stream is then on
 * device 0, and the hot paths need no driver call to find the device.  Known after cuInit. */
static inline bool vgpu_device_single(void)
{
    int s = atomic_load_explicit(&vgpu_device_single_state, memory_order_relaxed);
    if (__builtin_expect(s == 0, 0))
        s = vgpu_device_single_slow();
    return s == 1;
}

#endif
