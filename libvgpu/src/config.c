#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "config.h"

#include "log.h"
#include "size.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

static struct vgpu_config g_cfg;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Looks NAME up in envp (exact name). */
static const char *env_lookup(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (char *const *e = envp; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    }
    return NULL;
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

static bool env_true(const char *v)
{
    return v != NULL && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
                         strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0);
}

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

void vgpu_config_parse(struct vgpu_config *cfg, char *const *envp)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->priority = 1;
    cfg->log_level = VGPU_LOG_ERROR;

    const char *v = env_lookup(envp, "LIBCUDA_LOG_LEVEL");
    if (v != NULL && *v != '\0') {
        uint64_t lv;
        if (vgpu_parse_uint(v, &lv))
            cfg->log_level = lv > VGPU_LOG_DEBUG ? VGPU_LOG_DEBUG : (int)lv;
        else
            vgpu_error("invalid LIBCUDA_LOG_LEVEL=\"%s\": expected 0-4", v);
    }
    vgpu_log_set_level(cfg->log_level);

    cfg->disabled = env_true(env_lookup(envp, "CUDA_DISABLE_CONTROL"));
    cfg->policy = parse_policy(env_lookup(envp, "GPU_CORE_UTILIZATION_POLICY"));

    v = env_lookup(envp, "VGPU_OOM_POLICY");
    if (v != NULL && *v != '\0') {
        if (strcasecmp(v, "kill") == 0)
            cfg->oom_policy = VGPU_OOM_KILL;
        else if (strcasecmp(v, "error") != 0)
            vgpu_error("invalid VGPU_OOM_POLICY=\"%s\": expected error or kill; using error", v);
    }

    v = env_lookup(envp, "CUDA_TASK_PRIORITY");
    if (v != NULL && *v != '\0') {
        uint64_t p;
        if (vgpu_parse_uint(v, &p) && p <= 1)
            cfg->priority = (int)p;
        else
            vgpu_error("invalid CUDA_TASK_PRIORITY=\"%s\": expected 0 (high) or 1 (low); using 1", v);
    }

    v = env_lookup(envp, "CUDA_DEVICE_MEMORY_SHARED_CACHE");
    cfg->shared_cache = (v != NULL && *v != '\0') ? v : NULL;

    v = env_lookup(envp, "CUDA_DEVICE_MEMORY_LIMIT");
    if (v != NULL)
        parse_mem("CUDA_DEVICE_MEMORY_LIMIT", v, &cfg->mem_global);
    v = env_lookup(envp, "CUDA_DEVICE_SM_LIMIT");
    if (v != NULL)
        cfg->sm_global = parse_sm("CUDA_DEVICE_SM_LIMIT", v);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        char name[64];
        snprintf(name, sizeof name, "CUDA_DEVICE_MEMORY_LIMIT_%d", i);
        v = env_lookup(envp, name);
        if (v != NULL) {
            cfg->mem_index_present[i] = true;
            parse_mem(name, v, &cfg->mem_index[i]);
        }
        snprintf(name, sizeof name, "CUDA_DEVICE_SM_LIMIT_%d", i);
        v = env_lookup(envp, name);
        if (v != NULL) {
            cfg->sm_index_present[i] = true;
            cfg->sm_index[i] = parse_sm(name, v);
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

    cfg->test_stall_in_lock = env_true(env_lookup(envp, "VGPU_TEST_STALL_IN_LOCK"));
}

static void config_once(void)
{
    vgpu_config_parse(&g_cfg, environ);
}

const struct vgpu_config *vgpu_config_get(void)
{
    pthread_once(&g_once, config_once);
    return &g_cfg;
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

struct vgpu_mem_limit vgpu_config_device_limit(const struct vgpu_config *cfg, int ordinal,
                                               const char *uuid, unsigned *cores)
{
    struct vgpu_mem_limit lim = {false, 0};
    unsigned c = 0;
    if (cfg->uuid_mode) {
        bool found = false, bad = false;
        uint64_t sum = 0;
        for (size_t i = 0; i < cfg->n_uuid; i++) {
            if (!vgpu_uuid_equal(cfg->uuid[i].uuid, uuid))
                continue;
            found = true;
            bad = bad || cfg->uuid[i].bad_memory;
            uint64_t b = cfg->uuid[i].bytes;
            sum = (UINT64_MAX - sum < b) ? UINT64_MAX : sum + b;
            c += cfg->uuid[i].cores;
        }
        if (!found || bad) {
            /* A GPU the claim does not list (or lists with a broken value) gets nothing. */
            lim.set = true;
            lim.bytes = 0;
            c = 0;
        } else {
            lim.set = sum != 0;
            lim.bytes = sum;
        }
        if (c > 100)
            c = 100;
        if (c == 100)
            c = 0;
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
    if (cores != NULL)
        *cores = c;
    return lim;
}
