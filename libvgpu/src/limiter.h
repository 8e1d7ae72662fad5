/* Compute (SM) cap: a per-device token bucket on the launch path, refilled at a rate steered by
 * measured utilization.  No thread and no polling: when no device has a cap (or the policy is
 * "disable") the launch hooks cost one predictable branch. */
#ifndef VGPU_LIMITER_H
#define VGPU_LIMITER_H

#include "cuda_api.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

extern atomic_int vgpu_limiter_state; /* 0 unknown, 1 off, 2 on */
int vgpu_limiter_init_state(void);

static inline bool vgpu_limiter_maybe_active(void)
{
    int s = atomic_load_explicit(&vgpu_limiter_state, memory_order_relaxed);
    if (__builtin_expect(s == 1, 1))
        return false;
    if (s == 0)
        s = vgpu_limiter_init_state();
    return s == 2;
}

/* Called before a launch of BLOCKS thread blocks on stream S; may sleep. */
void vgpu_limiter_launch(CUstream s, uint64_t blocks);
void vgpu_limiter_atfork_child(void);

#endif
