/* libFuzzer harness for the environment contract (config.c): vgpu_config_parse on an arbitrary
 * environment, then vgpu_config_device_limit for every ordinal and for the UUIDs it mentions,
 * checking the invariants the rest of the library relies on.  Build: make -C libvgpu fuzz.
 *
 * Input: lines separated by '\n' or NUL, each one environment entry "NAME=value".  A line whose
 * first byte is 0x01..0x0c starts with a known variable name instead of that byte (so the
 * fuzzer reaches the list and indexed formats quickly):
 *   01 CUDA_DEVICE_MEMORY_LIMIT=      02 CUDA_DEVICE_MEMORY_LIMIT_     03 CUDA_DEVICE_SM_LIMIT=
 *   04 CUDA_DEVICE_SM_LIMIT_          05 VGPU_DEVICE_LIMIT_            06 LIBCUDA_LOG_LEVEL=
 *   07 GPU_CORE_UTILIZATION_POLICY=   08 CUDA_TASK_PRIORITY=           09 VGPU_OOM_POLICY=
 *   0a CUDA_DISABLE_CONTROL=          0b CUDA_DEVICE_MEMORY_SHARED_CACHE=  0c VGPU_TEST_STALL_IN_LOCK=
 *
 * The same bytes are also read as a claim file (claim_env.c: vgpu_claim_env_lines), whose lines
 * must all be NAME=VALUE with a non-empty name, and parsed again.
 *
 * fuzz-sources: config.c claim_env.c limits_file.c size.c log.c
 */
#include "claim_env.h"
#include "config.h"
#include "log.h"
#include "size.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINES 96

/* The real stderr, taken before libFuzzer's -close_fd_mask=2 closes fd 2 (which silences the
 * library's error log lines but would also hide our invariant messages). */
static int g_err = 2;

static const char *const prefixes[] = {
    NULL,
    "CUDA_DEVICE_MEMORY_LIMIT=",
    "CUDA_DEVICE_MEMORY_LIMIT_",
    "CUDA_DEVICE_SM_LIMIT=",
    "CUDA_DEVICE_SM_LIMIT_",
    "VGPU_DEVICE_LIMIT_",
    "LIBCUDA_LOG_LEVEL=",
    "GPU_CORE_UTILIZATION_POLICY=",
    "CUDA_TASK_PRIORITY=",
    "VGPU_OOM_POLICY=",
    "CUDA_DISABLE_CONTROL=",
    "CUDA_DEVICE_MEMORY_SHARED_CACHE=",
    "VGPU_TEST_STALL_IN_LOCK=",
};
#define NPREFIX (sizeof prefixes / sizeof prefixes[0])

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            dprintf(g_err, "fuzz_env: invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

static void check_limit(const struct vgpu_config *cfg, int ordinal, const char *uuid)
{
    unsigned cores = 12345;
    struct vgpu_mem_limit l = vgpu_config_device_limit(cfg, ordinal, uuid, &cores);
    REQUIRE(cores < 100); /* 0 = no cap; 100 means no cap too and is reported as 0 */
    REQUIRE(l.set || l.bytes == 0);
    if (cfg->uuid_mode) {
        bool listed = false;
        for (size_t i = 0; i < cfg->n_uuid; i++)
            listed = listed || vgpu_uuid_equal(cfg->uuid[i].uuid, uuid);
        if (!listed) /* a GPU the claim does not list gets nothing */
            REQUIRE(l.set && l.bytes == 0 && cores == 0);
        /* no entry can raise another: the limit and the cap are at most every entry's (issue 18) */
        bool bad = false; /* a broken entry: memory 0 (cores do not matter then) */
        for (size_t i = 0; i < cfg->n_uuid; i++)
            bad = bad || (vgpu_uuid_equal(cfg->uuid[i].uuid, uuid) && cfg->uuid[i].bad_memory);
        for (size_t i = 0; i < cfg->n_uuid; i++) {
            if (!vgpu_uuid_equal(cfg->uuid[i].uuid, uuid))
                continue;
            if (cfg->uuid[i].bytes != 0 || bad)
                REQUIRE(l.set && l.bytes <= cfg->uuid[i].bytes);
            if (!bad && cfg->uuid[i].cores > 0 && cfg->uuid[i].cores < 100)
                REQUIRE(cores > 0 && cores <= cfg->uuid[i].cores);
        }
    }
    (void)vgpu_config_device_limit(cfg, ordinal, uuid, NULL); /* NULL cores is allowed */
}

/* Oracle for one VGPU_DEVICE_LIMIT_* value "<uuid>,<bytes>[,<cores>]", written from the contract
 * (fields split at the first two commas, blanks and tabs trimmed, a field is valid only as a
 * whole): nothing may be silently truncated.  Returns false when the entry must be ignored. */
struct want_entry {
    const char *uuid;
    size_t uuid_len;
    uint64_t bytes;
    bool bad;
    unsigned cores;
};

static void trim(const char **p, size_t *len)
{
    while (*len > 0 && (**p == ' ' || **p == '\t'))
        (*p)++, (*len)--;
    while (*len > 0 && ((*p)[*len - 1] == ' ' || (*p)[*len - 1] == '\t'))
        (*len)--;
}

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s == NULL)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static bool want_uuid_entry(const char *val, struct want_entry *w)
{
    const char *c1 = strchr(val, ',');
    const char *u = val;
    size_t ul = c1 ? (size_t)(c1 - val) : strlen(val);
    trim(&u, &ul);
    if (ul == 0 || ul >= VGPU_UUID_STR)
        return false;
    w->uuid = u;
    w->uuid_len = ul;
    w->bytes = 0;
    w->bad = true;
    w->cores = 0;
    const char *m = "", *c = "";
    size_t ml = 0, cl = 0;
    if (c1 != NULL) {
        const char *c2 = strchr(c1 + 1, ',');
        m = c1 + 1;
        ml = c2 ? (size_t)(c2 - m) : strlen(m);
        if (c2 != NULL)
            c = c2 + 1, cl = strlen(c);
    }
    trim(&m, &ml);
    trim(&c, &cl);
    char *ms = dup_n(m, ml);
    uint64_t b;
    if (vgpu_parse_size(ms, &b))
        w->bytes = b, w->bad = false;
    free(ms);
    char *cs = dup_n(c, cl);
    uint64_t cv;
    if (cl > 0 && vgpu_parse_uint(cs, &cv))
        w->cores = cv > 100 ? 100 : (unsigned)cv;
    free(cs);
    return true;
}

static void check_uuid_entries(const struct vgpu_config *cfg, char *const *env)
{
    static const char prefix[] = "VGPU_DEVICE_LIMIT_";
    size_t k = 0;
    for (char *const *e = env; *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0 || eq == NULL)
            continue;
        struct want_entry w;
        if (k >= VGPU_MAX_UUID_ENTRIES || !want_uuid_entry(eq + 1, &w))
            continue;
        const struct vgpu_uuid_limit *got = &cfg->uuid[k++];
        REQUIRE(k <= cfg->n_uuid);
        REQUIRE(strlen(got->uuid) == w.uuid_len && memcmp(got->uuid, w.uuid, w.uuid_len) == 0);
        REQUIRE(got->bad_memory == w.bad);
        REQUIRE(got->bytes == w.bytes);
        REQUIRE(got->cores == w.cores);
    }
    REQUIRE(k == cfg->n_uuid);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    int fd = dup(2);
    if (fd >= 0)
        g_err = fd;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    char *lines[MAX_LINES + 1];
    size_t n = 0, pos = 0;
    while (pos <= size && n < MAX_LINES) {
        size_t end = pos;
        while (end < size && data[end] != '\n' && data[end] != '\0')
            end++;
        const char *pre = NULL;
        size_t start = pos;
        if (start < end && data[start] >= 1 && data[start] < NPREFIX) {
            pre = prefixes[data[start]];
            start++;
        }
        size_t pl = pre ? strlen(pre) : 0, len = end - start;
        /* exact-size heap strings, so ASan sees any read past an entry */
        char *e = malloc(pl + len + 1);
        if (e == NULL)
            break;
        if (pl)
            memcpy(e, pre, pl);
        if (len)
            memcpy(e + pl, data + start, len);
        e[pl + len] = '\0';
        lines[n++] = e;
        if (end >= size)
            break;
        pos = end + 1;
    }
    lines[n] = NULL;

    static struct vgpu_config cfg;
    vgpu_config_parse(&cfg, lines);

    REQUIRE(cfg.n_uuid <= VGPU_MAX_UUID_ENTRIES);
    REQUIRE(cfg.priority == 0 || cfg.priority == 1);
    REQUIRE(cfg.policy >= VGPU_POLICY_DEFAULT && cfg.policy <= VGPU_POLICY_DISABLE);
    REQUIRE(cfg.oom_policy == VGPU_OOM_ERROR || cfg.oom_policy == VGPU_OOM_KILL);
    REQUIRE(cfg.log_level >= 0 && cfg.log_level <= VGPU_LOG_DEBUG);
    REQUIRE(cfg.sm_global <= 100 && cfg.sm_global != 100);
    if (cfg.shared_cache != NULL)
        REQUIRE(cfg.shared_cache[0] != '\0');
    REQUIRE(cfg.mem_global.set || cfg.mem_global.bytes == 0);
    for (int i = 0; i < VGPU_MAX_DEVICES; i++) {
        REQUIRE(cfg.sm_index[i] < 100);
        REQUIRE(cfg.sm_index_present[i] || cfg.sm_index[i] == 0);
        REQUIRE(cfg.mem_index_present[i] || !cfg.mem_index[i].set);
        REQUIRE(cfg.mem_index[i].set || cfg.mem_index[i].bytes == 0);
    }
    REQUIRE(cfg.uuid_mode || cfg.n_uuid == 0);
    check_uuid_entries(&cfg, lines);
    for (size_t i = 0; i < cfg.n_uuid; i++) {
        const struct vgpu_uuid_limit *u = &cfg.uuid[i];
        REQUIRE(terminated(u->uuid, sizeof u->uuid));
        REQUIRE(u->uuid[0] != '\0');
        REQUIRE(u->cores <= 100);
        REQUIRE(!u->bad_memory || u->bytes == 0);
    }

    static const char *const probes[] = {NULL, "", "GPU-", "GPU-fa4ec0da-0000-4000-8000-0000c0ffee00",
                                         "fa4ec0da-0000-4000-8000-0000c0ffee00"};
    for (int ord = -1; ord <= VGPU_MAX_DEVICES; ord++) {
        for (size_t p = 0; p < sizeof probes / sizeof probes[0]; p++)
            check_limit(&cfg, ord, probes[p]);
    }
    for (size_t i = 0; i < cfg.n_uuid; i++) {
        /* a listed GPU: the lowest of its entries (0 = no limit), the lowest cap (0 or 100 = no
         * cap), never a sum (issue 18); nothing at all when one of its entries is broken */
        bool bad = false;
        uint64_t want = 0;
        unsigned want_cores = 0;
        for (size_t j = 0; j < cfg.n_uuid; j++) {
            if (!vgpu_uuid_equal(cfg.uuid[j].uuid, cfg.uuid[i].uuid))
                continue;
            bad = bad || cfg.uuid[j].bad_memory;
            uint64_t b = cfg.uuid[j].bytes;
            if (b != 0 && (want == 0 || b < want))
                want = b;
            unsigned c = cfg.uuid[j].cores;
            if (c > 0 && c < 100 && (want_cores == 0 || c < want_cores))
                want_cores = c;
        }
        if (bad)
            want_cores = 0;
        unsigned cores = 12345;
        struct vgpu_mem_limit l = vgpu_config_device_limit(&cfg, 0, cfg.uuid[i].uuid, &cores);
        REQUIRE(cores == want_cores);
        if (bad)
            REQUIRE(l.set && l.bytes == 0);
        else
            REQUIRE(l.bytes == want && l.set == (want != 0));
        check_limit(&cfg, (int)i, cfg.uuid[i].uuid);
    }

    for (size_t i = 0; i < n; i++)
        free(lines[i]);

    /* the input as a claim file */
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    if (size)
        memcpy(text, data, size);
    text[size] = '\0';
    char *file_lines[MAX_LINES + 1];
    size_t k = vgpu_claim_env_lines(text, "fuzz", file_lines, MAX_LINES);
    REQUIRE(k <= MAX_LINES);
    for (size_t i = 0; i < k; i++) {
        const char *eq = strchr(file_lines[i], '=');
        REQUIRE(eq != NULL && eq != file_lines[i] && file_lines[i][0] != '#');
        REQUIRE(strchr(file_lines[i], '\n') == NULL);
        REQUIRE(file_lines[i] >= text && file_lines[i] < text + size);
    }
    file_lines[k] = NULL;
    vgpu_config_parse(&cfg, file_lines);
    REQUIRE(cfg.n_uuid <= VGPU_MAX_UUID_ENTRIES);
    free(text);
    return 0;
}
