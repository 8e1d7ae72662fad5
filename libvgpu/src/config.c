#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "config.h"

#include "claim_env.h"
#include "limits_file.h"
#include "log.h"
#include "size.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/auxv.h>

extern char **environ;

struct vgpu_config vgpu_config_g;
atomic_bool vgpu_config_ready;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct vgpu_config g_ceiling; /* the limits files' configuration */

/* The variables we read, found in ONE pass over the environment (the first entry of a name wins,
 * as with getenv): the parse runs in every process that touches CUDA, and a lookup per name
 * (34 of them) scanned the whole environment each time. */
enum {
    E_LOG_LEVEL,
    E_DISABLE,
    E_POLICY,
    E_OOM,
    E_PRIORITY,
    E_CACHE,
    E_MEM,
    E_SM,
    E_STALL,
    E_CLAIMS_DIR,
    E_NAMED,
};

static const char *const g_names[E_NAMED] = {
    [E_LOG_LEVEL] = "LIBCUDA_LOG_LEVEL",
#ifdef VGPU_TEST_HOOKS
    /* A kill switch and a deliberate hang exist only in test builds: in the shipped library
     * these names are not even compiled in (tests/libvgpu/test_symbols.py checks). */
    [E_DISABLE] = "CUDA_DISABLE_CONTROL",
    [E_STALL] = "VGPU_TEST_STALL_IN_LOCK",
#endif
    [E_POLICY] = "GPU_CORE_UTILIZATION_POLICY",
    [E_OOM] = "VGPU_OOM_POLICY",
    [E_PRIORITY] = "CUDA_TASK_PRIORITY",
    [E_CACHE] = "CUDA_DEVICE_MEMORY_SHARED_CACHE",
    [E_MEM] = "CUDA_DEVICE_MEMORY_LIMIT",
    [E_SM] = "CUDA_DEVICE_SM_LIMIT",
    [E_CLAIMS_DIR] = VGPU_CLAIMS_DIR_ENV,
};

struct env_view {
    const char *named[E_NAMED];
    const char *mem_index[VGPU_MAX_DEVICES];
    const char *sm_index[VGPU_MAX_DEVICES];
    bool claim_vars; /* any variable a claim's CDI spec sets: limits, SM caps, UUID limits, region path */
};

/* "_<i>" with i in canonical decimal (what "%d" prints) and < VGPU_MAX_DEVICES, up to NAME_END:
 * returns i, or -1. */
static int index_suffix(const char *p, const char *name_end)
{
    if (*p != '_' || name_end - p < 2 || name_end - p > 3)
        return -1;
    p++;
    if (p[0] < '0' || p[0] > '9' || (p[0] == '0' && name_end - p > 1))
        return -1;
    int i = p[0] - '0';
    if (name_end - p == 2) {
        if (p[1] < '0' || p[1] > '9')
            return -1;
        i = i * 10 + (p[1] - '0');
    }
    return i < VGPU_MAX_DEVICES ? i : -1;
}

static void env_scan(char *const *envp, struct env_view *v)
{
    memset(v, 0, sizeof *v);
    for (char *const *e = envp; e != NULL && *e != NULL; e++) {
        const char *s = *e;
        /* cheap filter: every name we read starts with one of these letters */
        if (s[0] != 'C' && s[0] != 'L' && s[0] != 'G' && s[0] != 'V')
            continue;
        const char *eq = strchr(s, '=');
        if (eq == NULL)
            continue;
        size_t n = (size_t)(eq - s);
        static const char uuid_limit[] = "VGPU_DEVICE_LIMIT_";
        static const char mem[] = "CUDA_DEVICE_MEMORY_LIMIT", sm[] = "CUDA_DEVICE_SM_LIMIT";
        /* a claim's variables, by prefix (even a malformed index is the claim's, not "none") */
        if (strncmp(s, uuid_limit, sizeof uuid_limit - 1) == 0 || strncmp(s, mem, sizeof mem - 1) == 0 ||
            strncmp(s, sm, sizeof sm - 1) == 0)
            v->claim_vars = true;
        for (int k = 0; k < E_NAMED; k++) {
            if (g_names[k] == NULL)
                continue;
            size_t kn = strlen(g_names[k]);
            if (kn == n && memcmp(s, g_names[k], n) == 0) {
                if (v->named[k] == NULL)
                    v->named[k] = eq + 1;
                if (k == E_CACHE)
                    v->claim_vars = true;
                goto next;
            }
        }
        if (n > sizeof mem - 1 && memcmp(s, mem, sizeof mem - 1) == 0) {
            int i = index_suffix(s + sizeof mem - 1, eq);
            if (i >= 0 && v->mem_index[i] == NULL)
                v->mem_index[i] = eq + 1;
        } else if (n > sizeof sm - 1 && memcmp(s, sm, sizeof sm - 1) == 0) {
            int i = index_suffix(s + sizeof sm - 1, eq);
            if (i >= 0 && v->sm_index[i] == NULL)
                v->sm_index[i] = eq + 1;
        }
    next:;
    }
}

static void parse_mem(const char *name, const char *val, struct vgpu_mem_limit *out)
{
    uint64_t v;
    if (!vgpu_parse_size(val, &v)) {
        vgpu_error("invalid %s=\"%s\": accepted forms are %s; this device's memory limit is set "
                   "to 0 (every allocation refused) until it is fixed",
                   name, val, vgpu_size_forms);
        out->set = true;
        out->bytes = 0;
        return;
    }
    /* HAMi meaning: 0 (or 0m) means "no limit". */
    out->set = v != 0;
    out->bytes = v;
}

static unsigned parse_sm(const char *name, const char *val)
{
    unsigned v;
    if (!vgpu_parse_percent(val, &v)) {
        vgpu_error("invalid %s=\"%s\": expected an integer percentage 0-100 (0 = no cap); "
                   "no compute cap is applied for it",
                   name, val);
        return 0;
    }
    return v == 100 ? 0 : v;
}

#ifdef VGPU_TEST_HOOKS
static bool env_true(const char *v)
{
    return v != NULL && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
                         strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0);
}
#endif

/* src[0, len) without surrounding blanks/tabs, as *out and *out_len (not terminated). */
static void trim_span(const char *src, size_t len, const char **out, size_t *out_len)
{
    while (len > 0 && (*src == ' ' || *src == '\t')) {
        src++;
        len--;
    }
    while (len > 0 && (src[len - 1] == ' ' || src[len - 1] == '\t'))
        len--;
    *out = src;
    *out_len = len;
}

/* Parses the field src[0, len) (trimmed) with PARSE.  Fields are copied whole (never cut to a
 * fixed buffer: "000...01g" cut short would read as 0 = unlimited).  *empty tells whether the
 * field was empty. */
static bool parse_field(const char *src, size_t len, bool (*parse)(const char *, uint64_t *), uint64_t *out,
                        bool *empty)
{
    const char *p;
    size_t n;
    trim_span(src, len, &p, &n);
    *empty = n == 0;
    char *tmp = strndup(p, n);
    if (tmp == NULL)
        return false; /* out of memory: invalid (fails closed for memory) */
    bool ok = parse(tmp, out);
    free(tmp);
    return ok;
}

static void parse_uuid_entry(struct vgpu_config *cfg, const char *name, const char *val)
{
    if (cfg->n_uuid >= VGPU_MAX_UUID_ENTRIES) {
        vgpu_error("too many VGPU_DEVICE_LIMIT_* variables (max %d); %s ignored",
                   VGPU_MAX_UUID_ENTRIES, name);
        return;
    }
    const char *c1 = strchr(val, ',');
    const char *id;
    size_t id_len;
    trim_span(val, c1 ? (size_t)(c1 - val) : strlen(val), &id, &id_len);
    if (id_len == 0 || id_len >= VGPU_UUID_STR) {
        /* a UUID too long for the record is refused, not cut (a cut one could name another GPU) */
        vgpu_error("invalid %s=\"%s\": expected <gpu uuid>,<memory bytes>,<cores>%s; no GPU can be "
                   "identified, it is ignored (GPUs without a valid entry get a 0 memory limit)",
                   name, val, id_len == 0 ? "" : " (the UUID is too long)");
        return;
    }
    struct vgpu_uuid_limit *u = &cfg->uuid[cfg->n_uuid++];
    memset(u, 0, sizeof *u);
    memcpy(u->uuid, id, id_len);
    u->uuid[id_len] = '\0';
    const char *mem = "", *cores = "";
    size_t mem_len = 0, cores_len = 0;
    if (c1 != NULL) {
        const char *c2 = strchr(c1 + 1, ',');
        mem = c1 + 1;
        mem_len = c2 ? (size_t)(c2 - mem) : strlen(mem);
        if (c2 != NULL) {
            cores = c2 + 1;
            cores_len = strlen(cores);
        }
    }
    bool empty;
    if (!parse_field(mem, mem_len, vgpu_parse_size, &u->bytes, &empty)) {
        vgpu_error("invalid memory field in %s=\"%s\": accepted forms are %s; the memory limit of "
                   "%s is set to 0 (every allocation refused)",
                   name, val, vgpu_size_forms, u->uuid);
        u->bad_memory = true;
        u->bytes = 0;
    }
    uint64_t cv = 0;
    if (!parse_field(cores, cores_len, vgpu_parse_uint, &cv, &empty) && !empty) {
        vgpu_error("invalid cores field in %s=\"%s\": expected an integer 0-100; no compute "
                   "cap from this entry",
                   name, val);
        cv = 0;
    }
    u->cores = cv > 100 ? 100 : (unsigned)cv;
}

static int parse_policy(const char *v)
{
    if (v == NULL || *v == '\0' || strcasecmp(v, "default") == 0)
        return VGPU_POLICY_DEFAULT;
    if (strcasecmp(v, "force") == 0)
        return VGPU_POLICY_FORCE;
    if (strcasecmp(v, "disable") == 0)
        return VGPU_POLICY_DISABLE;
    vgpu_error("invalid GPU_CORE_UTILIZATION_POLICY=\"%s\": expected default, force or disable; "
               "using default",
               v);
    return VGPU_POLICY_DEFAULT;
}

bool vgpu_env_has_claim_vars(char *const *envp)
{
    struct env_view ev;
    env_scan(envp, &ev);
    return ev.claim_vars;
}

/* The configuration from envp, already scanned into *ev. */
static void parse_view(struct vgpu_config *cfg, char *const *envp, const struct env_view *ev)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->priority = 1;
    cfg->log_level = VGPU_LOG_ERROR;

    const char *v = ev->named[E_LOG_LEVEL];
    if (v != NULL && *v != '\0') {
        uint64_t lv;
        cfg->log_set = true;
        if (vgpu_parse_uint(v, &lv))
            cfg->log_level = lv > VGPU_LOG_DEBUG ? VGPU_LOG_DEBUG : (int)lv;
        else
            vgpu_error("invalid LIBCUDA_LOG_LEVEL=\"%s\": expected 0-4", v);
    }
    vgpu_log_set_level(cfg->log_level);

#ifdef VGPU_TEST_HOOKS
    cfg->disabled = env_true(ev->named[E_DISABLE]);
    cfg->test_stall_in_lock = env_true(ev->named[E_STALL]);
#endif
    cfg->policy = parse_policy(ev->named[E_POLICY]);
    cfg->policy_set = ev->named[E_POLICY] != NULL && *ev->named[E_POLICY] != '\0';

    v = ev->named[E_OOM];
    if (v != NULL && *v != '\0') {
        cfg->oom_set = true;
        if (strcasecmp(v, "kill") == 0)
            cfg->oom_policy = VGPU_OOM_KILL;
        else if (strcasecmp(v, "error") != 0)
            vgpu_error("invalid VGPU_OOM_POLICY=\"%s\": expected error or kill; using error", v);
    }

    v = ev->named[E_PRIORITY];
    if (v != NULL && *v != '\0') {
        uint64_t p;
        cfg->priority_set = true;
        if (vgpu_parse_uint(v, &p) && p <= 1)
            cfg->priority = (int)p;
        else
            vgpu_error("invalid CUDA_TASK_PRIORITY=\"%s\": expected 0 (high) or 1 (low); using 1", v);
    }

    v = ev->named[E_CACHE];
    cfg->shared_cache = (v != NULL && *v != '\0') ? v : NULL;

    v = ev->named[E_MEM];
    if (v != NULL)
        parse_mem("CUDA_DEVICE_MEMORY_LIMIT", v, &cfg->mem_global);
    v = ev->named[E_SM];
    if (v != NULL)
        cfg->sm_global = parse_sm("CUDA_DEVICE_SM_LIMIT", v);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        if (ev->mem_index[i] == NULL && ev->sm_index[i] == NULL)
            continue;
        char name[64];
        if (ev->mem_index[i] != NULL) {
            snprintf(name, sizeof name, "CUDA_DEVICE_MEMORY_LIMIT_%d", i);
            cfg->mem_index_present[i] = true;
            parse_mem(name, ev->mem_index[i], &cfg->mem_index[i]);
        }
        if (ev->sm_index[i] != NULL) {
            snprintf(name, sizeof name, "CUDA_DEVICE_SM_LIMIT_%d", i);
            cfg->sm_index_present[i] = true;
            cfg->sm_index[i] = parse_sm(name, ev->sm_index[i]);
        }
    }

    static const char prefix[] = "VGPU_DEVICE_LIMIT_";
    for (char *const *e = envp; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        char name[128];
        size_t nl = (size_t)(eq - *e);
        if (nl >= sizeof name)
            nl = sizeof name - 1;
        memcpy(name, *e, nl);
        name[nl] = '\0';
        cfg->uuid_mode = true;
        parse_uuid_entry(cfg, name, eq + 1);
    }
}

void vgpu_config_parse(struct vgpu_config *cfg, char *const *envp)
{
    struct env_view ev;
    env_scan(envp, &ev);
    parse_view(cfg, envp, &ev);
}

static int policy_rank(int policy)
{
    return policy == VGPU_POLICY_FORCE ? 2 : policy == VGPU_POLICY_DEFAULT ? 1 : 0;
}

void vgpu_config_apply_ceiling(struct vgpu_config *cfg, const struct vgpu_config *ceil)
{
    cfg->ceiling = ceil;
    cfg->shared_cache = ceil->shared_cache; /* a path the process chose is never used */
    if (!cfg->policy_set || policy_rank(ceil->policy) > policy_rank(cfg->policy))
        cfg->policy = ceil->policy;
    if (!cfg->priority_set || ceil->priority > cfg->priority)
        cfg->priority = ceil->priority; /* 1 = low: a process may lower its priority only */
    if (!cfg->oom_set)
        cfg->oom_policy = ceil->oom_policy;
    if (!cfg->log_set)
        cfg->log_level = ceil->log_level;
    vgpu_log_set_level(cfg->log_level);
}

void vgpu_config_load(struct vgpu_config *cfg, struct vgpu_config *ceiling, char *const *envp, bool secure,
                      const char *limits_dir)
{
    struct env_view ev;
    env_scan(envp, &ev);
    bool failed = false;
    char *const *limits = vgpu_limits_read(limits_dir, &failed);
    if (limits != NULL || failed) {
        static char *const none[] = {NULL};
        vgpu_config_parse(ceiling, limits != NULL ? limits : none);
        if (failed)
            ceiling->uuid_mode = true; /* a claim's limits are unknown: every GPU gets 0 */
        parse_view(cfg, envp, &ev);
        vgpu_config_apply_ceiling(cfg, ceiling);
    } else {
        /* No limits file (not in a container of ours, or a claim prepared by an older plugin):
         * the environment, or for a process without the claim variables the claim's vgpu.env. */
        const char *claims_dir = secure ? NULL : ev.named[E_CLAIMS_DIR];
        if (claims_dir == NULL || *claims_dir == '\0')
            claims_dir = VGPU_CLAIMS_DIR_DEFAULT;
        char *const *env = ev.claim_vars ? envp : vgpu_claim_env(envp, claims_dir, &failed);
        if (env == envp) {
            parse_view(cfg, envp, &ev); /* an ordinary process: one pass over its environment */
        } else {
            vgpu_config_parse(cfg, env);
            vgpu_info("no claim variables in the environment: using the claim files in %s", claims_dir);
        }
        if (failed) {
            /* a claim's limits are unknown: no GPU is left unlimited (UUID mode gives unlisted GPUs 0) */
            cfg->uuid_mode = true;
        }
        if (secure && cfg->shared_cache != NULL) {
            vgpu_warn("secure-execution process (setuid/setgid/capabilities): the region path %s comes "
                      "from its environment and is not opened; limits apply to this process only",
                      cfg->shared_cache);
            cfg->shared_cache = NULL;
        }
    }
    cfg->secure = secure;
}

static void config_once(void)
{
    /* setuid/setgid/file-capability processes run with an environment someone else chose: no
     * path from it is opened (neither VGPU_CLAIMS_DIR nor the region path). */
    vgpu_config_load(&vgpu_config_g, &g_ceiling, environ, getauxval(AT_SECURE) != 0, VGPU_LIMITS_DIR);
    atomic_store_explicit(&vgpu_config_ready, true, memory_order_release);
}

const struct vgpu_config *vgpu_config_get_slow(void)
{
    pthread_once(&g_once, config_once);
    return &vgpu_config_g;
}

static const char *strip_gpu_prefix(const char *s)
{
    if (strncasecmp(s, "GPU-", 4) == 0)
        return s + 4;
    return s;
}

bool vgpu_uuid_equal(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return false;
    return strcasecmp(strip_gpu_prefix(a), strip_gpu_prefix(b)) == 0;
}

/* The lower of two memory limits (unset = unlimited). */
static struct vgpu_mem_limit mem_min(struct vgpu_mem_limit a, struct vgpu_mem_limit b)
{
    if (!a.set)
        return b;
    if (!b.set || a.bytes <= b.bytes)
        return a;
    return b;
}

/* The lower of two compute caps (0 = no cap; 100 reads as no cap). */
static unsigned cap_min(unsigned a, unsigned b)
{
    if (a == 0 || a >= 100)
        return b >= 100 ? 0 : b;
    if (b == 0 || b >= 100)
        return a;
    return a < b ? a : b;
}

/* One source's limits for a device. */
static struct vgpu_mem_limit own_limit(const struct vgpu_config *cfg, int ordinal, const char *uuid,
                                       unsigned *cores)
{
    struct vgpu_mem_limit lim = {false, 0};
    unsigned c = 0;
    if (cfg->uuid_mode) {
        bool found = false, bad = false;
        for (size_t i = 0; i < cfg->n_uuid; i++) {
            if (!vgpu_uuid_equal(cfg->uuid[i].uuid, uuid))
                continue;
            /* several entries of one GPU: the lowest of them, never their sum (an added entry,
             * even one of UINT64_MAX bytes, cannot lift the limit or the compute cap) */
            found = true;
            bad = bad || cfg->uuid[i].bad_memory;
            struct vgpu_mem_limit e = {cfg->uuid[i].bytes != 0, cfg->uuid[i].bytes};
            lim = mem_min(lim, e);
            c = cap_min(c, cfg->uuid[i].cores);
        }
        if (!found || bad) {
            /* A GPU the claim does not list (or lists with a broken value) gets nothing. */
            lim.set = true;
            lim.bytes = 0;
            c = 0;
        }
    } else {
        if (ordinal >= 0 && ordinal < VGPU_MAX_DEVICES && cfg->mem_index_present[ordinal])
            lim = cfg->mem_index[ordinal];
        else
            lim = cfg->mem_global;
        if (ordinal >= 0 && ordinal < VGPU_MAX_DEVICES && cfg->sm_index_present[ordinal])
            c = cfg->sm_index[ordinal];
        else
            c = cfg->sm_global;
    }
    *cores = cap_min(c, 0);
    return lim;
}

struct vgpu_mem_limit vgpu_config_device_limit(const struct vgpu_config *cfg, int ordinal,
                                               const char *uuid, unsigned *cores)
{
    unsigned c;
    struct vgpu_mem_limit lim = own_limit(cfg, ordinal, uuid, &c);
    if (cfg->ceiling != NULL) {
        unsigned cc;
        lim = mem_min(lim, own_limit(cfg->ceiling, ordinal, uuid, &cc));
        c = cap_min(c, cc);
    }
    if (cores != NULL)
        *cores = c;
    return lim;
}

bool vgpu_config_uuid_mode(const struct vgpu_config *cfg)
{
    return cfg->uuid_mode || (cfg->ceiling != NULL && cfg->ceiling->uuid_mode);
}

static bool cap_in_range(unsigned c)
{
    return c > 0 && c < 100;
}

static bool own_any_cap(const struct vgpu_config *cfg)
{
    bool any = false;
    if (cfg->uuid_mode) {
        for (size_t i = 0; i < cfg->n_uuid; i++)
            any = any || cap_in_range(cfg->uuid[i].cores);
    } else {
        any = cap_in_range(cfg->sm_global);
        for (int i = 0; i < VGPU_MAX_DEVICES; i++)
            any = any || (cfg->sm_index_present[i] && cap_in_range(cfg->sm_index[i]));
    }
    return any;
}

bool vgpu_config_any_cap(const struct vgpu_config *cfg)
{
    return own_any_cap(cfg) || (cfg->ceiling != NULL && own_any_cap(cfg->ceiling));
}
