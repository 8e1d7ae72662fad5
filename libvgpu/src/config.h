/* Configuration contract (read once per process, lazily, by vgpu_config_get()).
 *
 * Two sources, and every limit is the LOWEST of them (a source can lower a limit, never raise it):
 *   - the claims' limits files (limits_file.h): written by the kubelet plugin, bind-mounted
 *     read-only under VGPU_LIMITS_DIR; when one is present its limits are the ceiling (`ceiling`)
 *     and the path of the shared region comes from it alone;
 *   - the process's environment (what the CDI spec set, or what the process set itself): may only
 *     lower the ceiling.  Without a limits file it is the only source (HAMi-style use).
 * Several entries of one GPU also give the lowest of them, never a sum. */
#ifndef VGPU_CONFIG_H
#define VGPU_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VGPU_MAX_DEVICES 16
#define VGPU_MAX_UUID_ENTRIES 64
#define VGPU_UUID_STR 96

enum vgpu_policy { VGPU_POLICY_DEFAULT = 0, VGPU_POLICY_FORCE = 1, VGPU_POLICY_DISABLE = 2 };
enum vgpu_oom_policy { VGPU_OOM_ERROR = 0, VGPU_OOM_KILL = 1 };

/* A memory limit. set == false: unlimited. set && bytes == 0: every allocation is refused
 * (what an unparsable value becomes: fail closed). */
struct vgpu_mem_limit {
    bool set;
    uint64_t bytes;
};

struct vgpu_uuid_limit {
    char uuid[VGPU_UUID_STR];
    uint64_t bytes;
    unsigned cores;
    bool bad_memory; /* memory field unparsable: this GPU fails closed */
};

struct vgpu_config {
    bool disabled;   /* CUDA_DISABLE_CONTROL=true, honoured only by a test build (VGPU_TEST_HOOKS) */
    int log_level;   /* LIBCUDA_LOG_LEVEL */
    int policy;      /* GPU_CORE_UTILIZATION_POLICY */
    int oom_policy;  /* VGPU_OOM_POLICY */
    int priority;    /* CUDA_TASK_PRIORITY: 0 high, 1 low (default) */
    const char *shared_cache; /* CUDA_DEVICE_MEMORY_SHARED_CACHE or NULL */
    /* which of the four above the source set itself (an unset one leaves the ceiling's) */
    bool policy_set, priority_set, oom_set, log_set;
    bool secure; /* AT_SECURE (setuid/setgid/capabilities): path variables are ignored */

    /* Indexed (HAMi-style) variables, by CUDA ordinal. */
    struct vgpu_mem_limit mem_global;
    struct vgpu_mem_limit mem_index[VGPU_MAX_DEVICES];
    bool mem_index_present[VGPU_MAX_DEVICES];
    unsigned sm_global; /* 0 = no cap */
    unsigned sm_index[VGPU_MAX_DEVICES];
    bool sm_index_present[VGPU_MAX_DEVICES];

    /* VGPU_DEVICE_LIMIT_<suffix>=<uuid>,<bytes>,<cores>: when any is present it wins. */
    bool uuid_mode;
    size_t n_uuid;
    struct vgpu_uuid_limit uuid[VGPU_MAX_UUID_ENTRIES];

    bool test_stall_in_lock; /* VGPU_TEST_STALL_IN_LOCK=1 (test build only, see region.c) */

    /* The limits files' configuration (NULL: none): every limit is at most the ceiling's. */
    const struct vgpu_config *ceiling;
};

/* Parses the environment (once, thread-safe) and returns the process-wide configuration.  The
 * fast path is one acquire load (it runs on every intercepted call). */
extern struct vgpu_config vgpu_config_g;
extern atomic_bool vgpu_config_ready;
const struct vgpu_config *vgpu_config_get_slow(void);

static inline const struct vgpu_config *vgpu_config_get(void)
{
    if (__builtin_expect(atomic_load_explicit(&vgpu_config_ready, memory_order_acquire), 1))
        return &vgpu_config_g;
    return vgpu_config_get_slow();
}

/* Parses into *cfg from an explicit environment array (used by the unit tests). */
void vgpu_config_parse(struct vgpu_config *cfg, char *const *envp);

/* The whole configuration of a process (what vgpu_config_get() holds): the limits files under
 * LIMITS_DIR as the ceiling (kept in *ceiling) when there is one, else envp or, for an envp
 * without claim variables, the claim files of an older plugin.  SECURE (AT_SECURE): no path from
 * envp is used (VGPU_CLAIMS_DIR, the region path). */
void vgpu_config_load(struct vgpu_config *cfg, struct vgpu_config *ceiling, char *const *envp, bool secure,
                      const char *limits_dir);

/* Makes CEIL the ceiling of CFG (see the top of this file): limits become the lower of the two,
 * the region path is CEIL's, the compute policy the stricter one (force > default > disable),
 * the task priority the lower one; the OOM policy and log level stay CFG's where it sets them
 * (they only concern the process itself). */
void vgpu_config_apply_ceiling(struct vgpu_config *cfg, const struct vgpu_config *ceil);

/* Whether any source names GPUs by UUID (VGPU_DEVICE_LIMIT_*): then an unlisted GPU gets 0. */
bool vgpu_config_uuid_mode(const struct vgpu_config *cfg);

/* Whether any source sets a compute cap strictly between 0 and 100 on some GPU. */
bool vgpu_config_any_cap(const struct vgpu_config *cfg);

/* Whether envp sets any variable of a claim's CDI spec (limits, SM caps, UUID limits, the shared
 * region path); without one, the claim files stand in (claim_env.h). */
bool vgpu_env_has_claim_vars(char *const *envp);

/* Limits for a device, given its CUDA ordinal and its UUID string ("GPU-..."; may be NULL when
 * unknown): the lowest of every source's (the ceiling's included).  Returns the memory limit and
 * sets *cores (0 = no cap). */
struct vgpu_mem_limit vgpu_config_device_limit(const struct vgpu_config *cfg, int ordinal,
                                               const char *uuid, unsigned *cores);

/* UUID equality ignoring case and an optional "GPU-" prefix on either side. */
bool vgpu_uuid_equal(const char *a, const char *b);

#endif
