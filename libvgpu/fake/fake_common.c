/* Configuration, shared device state and simulated time of the fake driver (see fake_common.h). */
#include "fake_common.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------------------------------------ */
/* configuration                                                                              */

static struct fake_config g_cfg;
static pthread_once_t g_cfg_once = PTHREAD_ONCE_INIT;

__attribute__((noreturn, format(printf, 3, 4))) static void cfg_die(const char *var, const char *val,
                                                                      const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fake-cuda: invalid %s=\"%s\": %s\n", var, val ? val : "", msg);
    fflush(stderr);
    _exit(2);
}

/* "123", "16g", "16G", "16GiB", "512MB", "1.5g", "4096k"; binary units. */
static bool parse_size(const char *s, uint64_t *out)
{
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    double num = strtod(s, &end);
    if (errno || end == s || num < 0)
        return false;
    uint64_t mul = 1;
    switch (tolower((unsigned char)*end)) {
    case 'k': mul = 1ULL << 10; end++; break;
    case 'm': mul = 1ULL << 20; end++; break;
    case 'g': mul = 1ULL << 30; end++; break;
    case 't': mul = 1ULL << 40; end++; break;
    default: break;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    while (isspace((unsigned char)*end))
        end++;
    if (*end)
        return false;
    double v = num * (double)mul;
    if (v >= 18446744073709551615.0)
        return false;
    *out = (uint64_t)v;
    if ((double)*out != v && mul == 1)
        return false; /* fractional byte count */
    return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* Split a comma list into at most FAKE_MAX_DEVICES items (copied into buf). */
static int split_list(const char *var, const char *val, char items[][96], int max)
{
    int n = 0;
    const char *p = val;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (n == max)
            cfg_die(var, val, "more than %d items", max);
        if (len == 0 || len >= 96)
            cfg_die(var, val, "empty or overlong item %d", n + 1);
        memcpy(items[n], p, len);
        items[n][len] = 0;
        n++;
        if (!c)
            break;
        p = c + 1;
    }
    return n;
}

/* A list with one item applies to every device; otherwise one item per device. */
static int list_for_devices(const char *var, const char *val, char items[][96], int ndev)
{
    int n = split_list(var, val, items, FAKE_MAX_DEVICES);
    if (n != 1 && n != ndev)
        cfg_die(var, val, "%d items for %d devices (give 1 or %d)", n, ndev, ndev);
    return n;
}

static bool valid_uuid(const char *s)
{
    /* GPU-8-4-4-4-12 hex digits */
    static const int groups[] = {8, 4, 4, 4, 12};
    if (strncmp(s, "GPU-", 4) != 0)
        return false;
    s += 4;
    for (int g = 0; g < 5; g++) {
        for (int i = 0; i < groups[g]; i++, s++)
            if (!isxdigit((unsigned char)*s))
                return false;
        if (g < 4 && *s++ != '-')
            return false;
    }
    return *s == 0;
}

static bool valid_pci(const char *s, char *norm, size_t normlen)
{
    unsigned dom, bus, dev, fn;
    char tail;
    if (sscanf(s, "%x:%x:%x.%x%c", &dom, &bus, &dev, &fn, &tail) != 4)
        return false;
    if (bus > 0xff || dev > 0x1f || fn > 7 || dom > 0xffff)
        return false;
    snprintf(norm, normlen, "%04x:%02x:%02x.%x", dom, bus, dev, fn);
    return true;
}

static void cfg_load(void)
{
    struct fake_config *c = &g_cfg;
    char items[FAKE_MAX_DEVICES][96];
    const char *v;
    uint64_t u;

    c->device_count = 1;
    if ((v = getenv("FAKE_CUDA_DEVICE_COUNT")) && *v) {
        if (!parse_u64(v, &u) || u > FAKE_MAX_DEVICES)
            cfg_die("FAKE_CUDA_DEVICE_COUNT", v, "expected an integer 0..%d", FAKE_MAX_DEVICES);
        c->device_count = (int)u;
    }
    int nd = c->device_count;

    for (int i = 0; i < FAKE_MAX_DEVICES; i++) {
        c->memory[i] = 16ULL << 30;
        c->sm_count[i] = 80;
        snprintf(c->uuid[i], sizeof c->uuid[i], "GPU-fa4ec0da-%04x-4000-8000-%012x", i, 0xc0ffee00u + (unsigned)i);
        snprintf(c->pci_bus_id[i], sizeof c->pci_bus_id[i], "0000:%02x:00.0", i + 1);
    }
    if ((v = getenv("FAKE_CUDA_MEMORY")) && *v) {
        int n = list_for_devices("FAKE_CUDA_MEMORY", v, items, nd);
        for (int i = 0; i < FAKE_MAX_DEVICES; i++) {
            const char *it = items[n == 1 ? 0 : (i < n ? i : 0)];
            if (!parse_size(it, &u) || u == 0)
                cfg_die("FAKE_CUDA_MEMORY", v, "\"%s\" is not a size (bytes, or with k/m/g/t suffix, e.g. 16g)", it);
            c->memory[i] = u;
        }
    }
    if ((v = getenv("FAKE_CUDA_SM_COUNT")) && *v) {
        int n = list_for_devices("FAKE_CUDA_SM_COUNT", v, items, nd);
        for (int i = 0; i < FAKE_MAX_DEVICES; i++) {
            const char *it = items[n == 1 ? 0 : (i < n ? i : 0)];
            if (!parse_u64(it, &u) || u == 0 || u > 4096)
                cfg_die("FAKE_CUDA_SM_COUNT", v, "\"%s\" is not an SM count 1..4096", it);
            c->sm_count[i] = (int)u;
        }
    }
    if ((v = getenv("FAKE_CUDA_UUIDS")) && *v) {
        int n = split_list("FAKE_CUDA_UUIDS", v, items, FAKE_MAX_DEVICES);
        if (n != nd)
            cfg_die("FAKE_CUDA_UUIDS", v, "%d UUIDs for %d devices", n, nd);
        for (int i = 0; i < n; i++) {
            if (!valid_uuid(items[i]))
                cfg_die("FAKE_CUDA_UUIDS", v, "\"%s\" is not GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", items[i]);
            for (int j = 0; j < i; j++)
                if (strcasecmp(items[i], items[j]) == 0)
                    cfg_die("FAKE_CUDA_UUIDS", v, "duplicate UUID %s", items[i]);
            snprintf(c->uuid[i], sizeof c->uuid[i], "%.95s", items[i]);
        }
    }
    if ((v = getenv("FAKE_CUDA_PCI_BUS_IDS")) && *v) {
        int n = split_list("FAKE_CUDA_PCI_BUS_IDS", v, items, FAKE_MAX_DEVICES);
        if (n != nd)
            cfg_die("FAKE_CUDA_PCI_BUS_IDS", v, "%d bus ids for %d devices", n, nd);
        for (int i = 0; i < n; i++) {
            if (!valid_pci(items[i], c->pci_bus_id[i], sizeof c->pci_bus_id[i]))
                cfg_die("FAKE_CUDA_PCI_BUS_IDS", v, "\"%s\" is not domain:bus:device.function (hex)", items[i]);
            for (int j = 0; j < i; j++)
                if (strcmp(c->pci_bus_id[i], c->pci_bus_id[j]) == 0)
                    cfg_die("FAKE_CUDA_PCI_BUS_IDS", v, "duplicate bus id %s", items[i]);
        }
    }
    snprintf(c->name, sizeof c->name, "%s", "Tesla T4");
    if ((v = getenv("FAKE_CUDA_NAME")) && *v) {
        if (strlen(v) >= 64)
            cfg_die("FAKE_CUDA_NAME", v, "longer than 63 characters");
        snprintf(c->name, sizeof c->name, "%s", v);
    }
    c->cc_major = 7;
    c->cc_minor = 5;
    if ((v = getenv("FAKE_CUDA_COMPUTE_CAPABILITY")) && *v) {
        unsigned ma, mi;
        char tail;
        if (sscanf(v, "%u.%u%c", &ma, &mi, &tail) != 2 || ma == 0 || ma > 20 || mi > 9)
            cfg_die("FAKE_CUDA_COMPUTE_CAPABILITY", v, "expected MAJOR.MINOR, e.g. 8.0");
        c->cc_major = (int)ma;
        c->cc_minor = (int)mi;
    }
    c->ns_per_block = 10000;
    if ((v = getenv("FAKE_CUDA_NS_PER_BLOCK")) && *v) {
        if (!parse_u64(v, &u) || u > 1000000000000ULL)
            cfg_die("FAKE_CUDA_NS_PER_BLOCK", v, "expected nanoseconds as an integer");
        c->ns_per_block = u;
    }
    c->context_size = 0;
    if ((v = getenv("FAKE_CUDA_CONTEXT_SIZE")) && *v) {
        if (!parse_size(v, &u))
            cfg_die("FAKE_CUDA_CONTEXT_SIZE", v, "not a size");
        c->context_size = u;
    }
    c->util_window_ns = 500ULL * 1000 * 1000;
    if ((v = getenv("FAKE_CUDA_UTIL_WINDOW_MS")) && *v) {
        if (!parse_u64(v, &u) || u == 0 || u > 4000)
            cfg_die("FAKE_CUDA_UTIL_WINDOW_MS", v, "expected milliseconds 1..4000");
        c->util_window_ns = u * 1000 * 1000;
    }
    c->shadow_max = 1ULL << 20;
    if ((v = getenv("FAKE_CUDA_SHADOW_MAX")) && *v) {
        if (!parse_size(v, &u) && strcmp(v, "0") != 0)
            cfg_die("FAKE_CUDA_SHADOW_MAX", v, "not a size");
        c->shadow_max = u;
    }
    c->state_path = getenv("FAKE_CUDA_STATE");
    if (c->state_path && !*c->state_path)
        c->state_path = NULL;

    /* fault injection: FAKE_CUDA_FAIL_<function>=<code>[:<count>] */
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "FAKE_CUDA_FAIL_", 15) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e + 15)
            continue;
        char var[128];
        snprintf(var, sizeof var, "%.*s", (int)(eq - *e), *e);
        char *end;
        long code = strtol(eq + 1, &end, 10);
        long count = -1;
        if (*end == ':') {
            count = strtol(end + 1, &end, 10);
            if (count < 0)
                cfg_die(var, eq + 1, "count must be >= 0");
        }
        if (*end || end == eq + 1 || code <= 0 || code > 100000)
            cfg_die(var, eq + 1, "expected <positive error code>[:<count>]");
    }
}

const struct fake_config *fake_cfg(void)
{
    pthread_once(&g_cfg_once, cfg_load);
    return &g_cfg;
}

/* ------------------------------------------------------------------------------------------ */
/* fault injection                                                                             */

struct fail_rule {
    char name[96];
    int code;
    _Atomic long remaining; /* -1: forever */
};
static struct fail_rule g_fail[32];
static int g_nfail = -1;
static pthread_mutex_t g_fail_mu = PTHREAD_MUTEX_INITIALIZER;

static void fail_load(void)
{
    int n = 0;
    for (char **e = environ; e && *e && n < 32; e++) {
        if (strncmp(*e, "FAKE_CUDA_FAIL_", 15) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e + 15 || (size_t)(eq - *e - 15) >= sizeof g_fail[n].name)
            continue;
        snprintf(g_fail[n].name, sizeof g_fail[n].name, "%.*s", (int)(eq - *e - 15), *e + 15);
        char *end;
        g_fail[n].code = (int)strtol(eq + 1, &end, 10);
        long count = -1;
        if (*end == ':')
            count = strtol(end + 1, &end, 10);
        atomic_store(&g_fail[n].remaining, count);
        n++;
    }
    g_nfail = n;
}

int fake_injected_failure(const char *name)
{
    int n = __atomic_load_n(&g_nfail, __ATOMIC_ACQUIRE);
    if (n < 0) {
        fake_cfg(); /* validates the variables */
        pthread_mutex_lock(&g_fail_mu);
        if (g_nfail < 0) {
            fail_load();
        }
        n = g_nfail;
        pthread_mutex_unlock(&g_fail_mu);
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(g_fail[i].name, name) != 0)
            continue;
        long r = atomic_load(&g_fail[i].remaining);
        while (r != -1) {
            if (r == 0)
                return 0;
            if (atomic_compare_exchange_weak(&g_fail[i].remaining, &r, r - 1))
                break;
        }
        return g_fail[i].code;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* time                                                                                        */

uint64_t fake_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void fake_sleep_until(uint64_t t_ns)
{
    struct timespec ts = {(time_t)(t_ns / 1000000000ULL), (long)(t_ns % 1000000000ULL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ------------------------------------------------------------------------------------------ */
/* state                                                                                       */

static struct fake_state *g_state;
static pthread_mutex_t g_state_mu = PTHREAD_MUTEX_INITIALIZER;
#ifdef FAKE_LIB_NVML
static bool g_state_private; /* NVML without a state file and without a loaded libcuda */
#endif

static void state_init_fresh(struct fake_state *s, const struct fake_config *c)
{
    s->magic = FAKE_STATE_MAGIC;
    s->version = FAKE_STATE_VERSION;
    s->device_count = (uint32_t)c->device_count;
    s->size = sizeof *s;
    for (int i = 0; i < FAKE_MAX_DEVICES; i++)
        s->dev[i].total = c->memory[i];
    atomic_store(&s->init_done, 1);
}

static struct fake_state *state_anon(void)
{
    void *p = mmap(NULL, sizeof(struct fake_state), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "fake-cuda: cannot map the device state: %s\n", strerror(errno));
        _exit(2);
    }
    state_init_fresh(p, fake_cfg());
    return p;
}

static struct fake_state *state_file(const char *path)
{
    const struct fake_config *c = fake_cfg();
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        cfg_die("FAKE_CUDA_STATE", path, "cannot open: %s", strerror(errno));
    while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {
    }
    struct stat st;
    if (fstat(fd, &st) != 0)
        cfg_die("FAKE_CUDA_STATE", path, "cannot stat: %s", strerror(errno));
    bool fresh = st.st_size == 0;
    if (fresh && ftruncate(fd, (off_t)sizeof(struct fake_state)) != 0)
        cfg_die("FAKE_CUDA_STATE", path, "cannot size: %s", strerror(errno));
    if (!fresh && (uint64_t)st.st_size != sizeof(struct fake_state))
        cfg_die("FAKE_CUDA_STATE", path, "size %lld is not a fake-cuda state (%zu); delete it", (long long)st.st_size,
                sizeof(struct fake_state));
    void *p = mmap(NULL, sizeof(struct fake_state), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        cfg_die("FAKE_CUDA_STATE", path, "cannot map: %s", strerror(errno));
    struct fake_state *s = p;
    if (fresh) {
        state_init_fresh(s, c);
    } else {
        if (s->magic != FAKE_STATE_MAGIC || s->version != FAKE_STATE_VERSION)
            cfg_die("FAKE_CUDA_STATE", path, "not a fake-cuda state file (magic/version); delete it");
        if ((int)s->device_count != c->device_count)
            cfg_die("FAKE_CUDA_STATE", path, "made for %u devices, FAKE_CUDA_DEVICE_COUNT says %d", s->device_count,
                    c->device_count);
        for (int i = 0; i < c->device_count; i++)
            if (s->dev[i].total != c->memory[i])
                cfg_die("FAKE_CUDA_STATE", path, "device %d has %" PRIu64 " bytes there, FAKE_CUDA_MEMORY says %" PRIu64,
                        i, s->dev[i].total, c->memory[i]);
    }
    flock(fd, LOCK_UN);
    close(fd);
    return s;
}

#ifdef FAKE_LIB_CUDA
/* The NVML fake finds the in-process state of the CUDA fake through this (no FAKE_CUDA_STATE). */
FAKE_EXPORT void *fake_cuda_internal_state(void)
{
    return fake_state();
}
#endif

struct fake_state *fake_state(void)
{
    struct fake_state *s = __atomic_load_n(&g_state, __ATOMIC_ACQUIRE);
#ifdef FAKE_LIB_NVML
    if (s && !__atomic_load_n(&g_state_private, __ATOMIC_RELAXED))
        return s;
#else
    if (s)
        return s;
#endif
    const struct fake_config *c = fake_cfg();
    pthread_mutex_lock(&g_state_mu);
    s = g_state;
#ifdef FAKE_LIB_NVML
    if (!s || g_state_private) {
        struct fake_state *found = NULL;
        if (c->state_path) {
            found = state_file(c->state_path);
        } else {
            void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
            if (h) {
                void *(*get)(void) = (void *(*)(void))dlsym(h, "fake_cuda_internal_state");
                if (get)
                    found = get();
                dlclose(h);
            }
        }
        if (found) {
            s = found; /* a previous private state is leaked on purpose: handles may point into it */
            __atomic_store_n(&g_state_private, false, __ATOMIC_RELAXED);
        } else if (!s) {
            s = state_anon();
            __atomic_store_n(&g_state_private, true, __ATOMIC_RELAXED);
        }
        __atomic_store_n(&g_state, s, __ATOMIC_RELEASE);
    }
#else
    if (!s) {
        s = c->state_path ? state_file(c->state_path) : state_anon();
        __atomic_store_n(&g_state, s, __ATOMIC_RELEASE);
    }
#endif
    pthread_mutex_unlock(&g_state_mu);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* processes                                                                                   */

bool fake_pid_alive(int32_t pid)
{
    if (pid <= 0)
        return false;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return false;
    /* a zombie has released its GPU memory already */
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno != ENOENT;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = 0;
    const char *rp = strrchr(buf, ')');
    if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
        return false;
    return true;
}

static void release_slot(struct fake_state *s, struct fake_proc *p)
{
    for (int d = 0; d < FAKE_MAX_DEVICES; d++) {
        uint64_t u = atomic_exchange(&p->dev[d].used, 0);
        if (u)
            atomic_fetch_sub(&s->dev[d].used, u);
        atomic_store(&p->dev[d].sched, 0);
        p->dev[d].count = 0;
        p->dev[d].head = 0;
    }
}

void fake_reap_dead(void)
{
    struct fake_state *s = fake_state();
    for (int i = 0; i < FAKE_MAX_PROCS; i++) {
        int32_t pid = atomic_load(&s->proc_pid[i]);
        if (pid <= 0 || fake_pid_alive(pid))
            continue;
        if (!atomic_compare_exchange_strong(&s->proc_pid[i], &pid, -1))
            continue;
        release_slot(s, &s->procs[i]);
        atomic_store(&s->proc_pid[i], 0);
    }
}

static struct fake_proc *g_my_proc;
static int32_t g_my_pid;

struct fake_proc *fake_my_proc(void)
{
    int32_t me = (int32_t)getpid();
    if (__atomic_load_n(&g_my_pid, __ATOMIC_ACQUIRE) == me)
        return g_my_proc;
    struct fake_state *s = fake_state();
    pthread_mutex_lock(&g_state_mu);
    if (g_my_pid == me) {
        pthread_mutex_unlock(&g_state_mu);
        return g_my_proc;
    }
    struct fake_proc *mine = NULL;
    /* a slot still carrying our pid belongs to a dead process whose pid we reuse */
    for (int i = 0; i < FAKE_MAX_PROCS; i++) {
        int32_t pid = me;
        if (atomic_load(&s->proc_pid[i]) == me && atomic_compare_exchange_strong(&s->proc_pid[i], &pid, -1)) {
            release_slot(s, &s->procs[i]);
            atomic_store(&s->proc_pid[i], 0);
        }
    }
    for (int pass = 0; pass < 2 && !mine; pass++) {
        for (int i = 0; i < FAKE_MAX_PROCS; i++) {
            int32_t zero = 0;
            if (atomic_load(&s->proc_pid[i]) == 0 && atomic_compare_exchange_strong(&s->proc_pid[i], &zero, -1)) {
                struct fake_proc *p = &s->procs[i];
                release_slot(s, p);
                atomic_store(&p->start_ns, fake_now_ns());
                atomic_store(&s->proc_pid[i], me);
                mine = p;
                break;
            }
        }
        if (!mine)
            fake_reap_dead();
    }
    g_my_proc = mine;
    __atomic_store_n(&g_my_pid, me, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_state_mu);
    return mine;
}

/* This process exits: like a real driver, give its device memory back. */
__attribute__((destructor)) static void fake_proc_exit(void)
{
#ifdef FAKE_LIB_CUDA
    if (g_state && g_my_proc && g_my_pid == (int32_t)getpid()) {
        int32_t me = g_my_pid;
        _Atomic int32_t *slot = &g_state->proc_pid[g_my_proc - g_state->procs];
        if (atomic_compare_exchange_strong(slot, &me, -1)) {
            release_slot(g_state, g_my_proc);
            atomic_store(slot, 0);
        }
        g_my_proc = NULL;
        g_my_pid = 0;
    }
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* memory                                                                                      */

bool fake_mem_charge(int dev, uint64_t bytes)
{
    struct fake_state *s = fake_state();
    struct fake_dev *d = &s->dev[dev];
    for (int attempt = 0; attempt < 2; attempt++) {
        uint64_t cur = atomic_load(&d->used);
        bool ok = true;
        while (1) {
            if (bytes > d->total || cur > d->total - bytes) {
                ok = false;
                break;
            }
            if (atomic_compare_exchange_weak(&d->used, &cur, cur + bytes))
                break;
        }
        if (ok) {
            struct fake_proc *p = fake_my_proc();
            if (p)
                atomic_fetch_add(&p->dev[dev].used, bytes);
            return true;
        }
        fake_reap_dead(); /* memory of dead processes comes back, then try once more */
    }
    return false;
}

void fake_mem_uncharge(int dev, uint64_t bytes)
{
    struct fake_state *s = fake_state();
    struct fake_proc *p = fake_my_proc();
    if (p) {
        /* never below zero: a forked child may free what its parent charged */
        uint64_t cur = atomic_load(&p->dev[dev].used);
        uint64_t take;
        do {
            take = cur < bytes ? cur : bytes;
        } while (!atomic_compare_exchange_weak(&p->dev[dev].used, &cur, cur - take));
    }
    uint64_t cur = atomic_load(&s->dev[dev].used);
    uint64_t take;
    do {
        take = cur < bytes ? cur : bytes;
    } while (!atomic_compare_exchange_weak(&s->dev[dev].used, &cur, cur - take));
}

/* ------------------------------------------------------------------------------------------ */
/* simulated time                                                                              */

static void dev_lock(struct fake_dev *d)
{
    int32_t me = (int32_t)getpid();
    unsigned spins = 0;
    uint64_t since = 0;
    for (;;) {
        int32_t cur = 0;
        if (atomic_compare_exchange_weak(&d->lock, &cur, me))
            return;
        if (++spins < 200)
            continue;
        if (!since)
            since = fake_now_ns();
        if (fake_now_ns() - since > 50000000ULL && cur != 0 && cur != me && !fake_pid_alive(cur)) {
            /* the holder died inside the critical section: take the lock over */
            if (atomic_compare_exchange_strong(&d->lock, &cur, me))
                return;
        }
        sched_yield();
    }
}

static void dev_unlock(struct fake_dev *d)
{
    atomic_store(&d->lock, 0);
}

uint64_t fake_launch(int dev, uint64_t blocks)
{
    const struct fake_config *c = fake_cfg();
    struct fake_state *s = fake_state();
    struct fake_dev *d = &s->dev[dev];
    struct fake_proc *p = fake_my_proc();
    unsigned __int128 cost128 = (unsigned __int128)blocks * c->ns_per_block;
    uint64_t sm = (uint64_t)c->sm_count[dev];
    uint64_t cost = (uint64_t)((cost128 + sm - 1) / sm);
    if (cost == 0 && blocks)
        cost = 1;
    uint64_t now = fake_now_ns();

    dev_lock(d);
    uint64_t start = d->busy_until > now ? d->busy_until : now;
    d->busy_until = start + cost;
    d->sched += cost;
    d->launches++;
    struct fake_sample *smp = d->count ? &d->samples[d->head] : NULL;
    if (!smp || now - smp->t0 >= 1000000ULL) {
        d->head = d->count ? (d->head + 1) % FAKE_DEV_SAMPLES : 0;
        if (d->count < FAKE_DEV_SAMPLES)
            d->count++;
        smp = &d->samples[d->head];
        smp->t0 = now;
    }
    smp->t = now;
    smp->sched = d->sched;
    smp->until = d->busy_until;
    if (p) {
        struct fake_proc_dev *pd = &p->dev[dev];
        uint64_t ps = atomic_fetch_add(&pd->sched, cost) + cost;
        struct fake_proc_sample *q = pd->count ? &pd->samples[pd->head] : NULL;
        if (!q || now - q->t0 >= 40000000ULL) {
            pd->head = pd->count ? (pd->head + 1) % FAKE_PROC_SAMPLES : 0;
            if (pd->count < FAKE_PROC_SAMPLES)
                pd->count++;
            q = &pd->samples[pd->head];
            q->t0 = now;
        }
        q->sched = ps;
    }
    uint64_t until = d->busy_until;
    dev_unlock(d);
    return until;
}

uint64_t fake_busy_until(int dev)
{
    struct fake_dev *d = &fake_state()->dev[dev];
    return __atomic_load_n(&d->busy_until, __ATOMIC_ACQUIRE);
}

static uint64_t busy_formula(uint64_t sched, uint64_t until, uint64_t t)
{
    uint64_t pending = until > t ? until - t : 0;
    return sched > pending ? sched - pending : 0;
}

/* caller holds the device lock */
static uint64_t busy_at_locked(struct fake_dev *d, uint64_t t)
{
    if (!d->count)
        return 0;
    /* newest sample with sample.t <= t; samples are in time order from oldest to newest */
    uint32_t n = d->count;
    uint32_t oldest = (d->head + FAKE_DEV_SAMPLES - (n - 1)) % FAKE_DEV_SAMPLES;
    if (d->samples[oldest].t > t) {
        if (n < FAKE_DEV_SAMPLES)
            return 0; /* nothing had been launched yet */
        const struct fake_sample *o = &d->samples[oldest];
        return busy_formula(o->sched, o->until, o->t);
    }
    uint32_t lo = 0, hi = n - 1; /* offsets from oldest */
    while (lo < hi) {
        uint32_t mid = (lo + hi + 1) / 2;
        if (d->samples[(oldest + mid) % FAKE_DEV_SAMPLES].t <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    const struct fake_sample *smp = &d->samples[(oldest + lo) % FAKE_DEV_SAMPLES];
    return busy_formula(smp->sched, smp->until, t);
}

uint64_t fake_busy_at(int dev, uint64_t t)
{
    struct fake_dev *d = &fake_state()->dev[dev];
    dev_lock(d);
    uint64_t b = busy_at_locked(d, t);
    dev_unlock(d);
    return b;
}

unsigned fake_util_percent(int dev, uint64_t window_ns)
{
    struct fake_dev *d = &fake_state()->dev[dev];
    uint64_t now = fake_now_ns();
    if (window_ns == 0 || window_ns > now)
        window_ns = now ? now : 1;
    dev_lock(d);
    uint64_t b1 = busy_formula(d->sched, d->busy_until, now);
    uint64_t b0 = busy_at_locked(d, now - window_ns);
    dev_unlock(d);
    uint64_t busy = b1 > b0 ? b1 - b0 : 0;
    unsigned pct = (unsigned)((busy * 100 + window_ns / 2) / window_ns);
    return pct > 100 ? 100 : pct;
}

unsigned fake_proc_util_percent(struct fake_proc *p, int dev, uint64_t since_ns, uint64_t now_ns)
{
    struct fake_dev *d = &fake_state()->dev[dev];
    if (now_ns <= since_ns)
        return 0;
    dev_lock(d);
    struct fake_proc_dev *pd = &p->dev[dev];
    uint64_t s1 = atomic_load(&pd->sched), s0 = 0;
    uint32_t n = pd->count;
    for (uint32_t k = 0; k < n; k++) {
        const struct fake_proc_sample *q = &pd->samples[(pd->head + FAKE_PROC_SAMPLES - k) % FAKE_PROC_SAMPLES];
        if (q->t0 <= since_ns) {
            s0 = q->sched;
            break;
        }
        if (k == n - 1 && n == FAKE_PROC_SAMPLES)
            s0 = q->sched; /* history ends: best effort */
    }
    dev_unlock(d);
    uint64_t win = now_ns - since_ns;
    uint64_t busy = s1 > s0 ? s1 - s0 : 0;
    unsigned pct = (unsigned)((busy * 100 + win / 2) / win);
    return pct > 100 ? 100 : pct;
}
