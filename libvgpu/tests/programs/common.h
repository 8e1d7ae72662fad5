/* Helpers shared by the workload programs: option parsing, key=value output, CUDA setup.
 * Programs include the real cuda.h exactly as applications do (cuMemAlloc -> cuMemAlloc_v2). */
#ifndef PROGRAMS_COMMON_H
#define PROGRAMS_COMMON_H

#include <cuda.h>
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- output: one "key=value" per line, flushed so parents can read it live ---- */

__attribute__((format(printf, 2, 3))) static inline void kv(const char *key, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("%s=%s\n", key, buf);
    fflush(stdout);
}

static inline const char *err_name(CUresult r)
{
    const char *s = NULL;
    if (cuGetErrorName(r, &s) != CUDA_SUCCESS || !s) {
        static __thread char buf[32];
        snprintf(buf, sizeof buf, "CUresult(%d)", (int)r);
        return buf;
    }
    return s;
}

__attribute__((noreturn, format(printf, 1, 2))) static inline void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    printf("error=1\n");
    fflush(stdout);
    exit(1);
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        CUresult r_ = (call);                                                                      \
        if (r_ != CUDA_SUCCESS)                                                                    \
            die("%s:%d: %s -> %s", __FILE__, __LINE__, #call, err_name(r_));                     \
    } while (0)

/* ---- options: --name=value or --flag ---- */

static int g_argc;
static char **g_argv;

static inline void opts_init(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fprintf(stderr, "see the comment at the top of %s.c\n", argv[0]);
            exit(0);
        }
}

static inline const char *opt_str(const char *name, const char *def)
{
    size_t n = strlen(name);
    for (int i = 1; i < g_argc; i++) {
        const char *a = g_argv[i];
        if (strncmp(a, "--", 2) == 0 && strncmp(a + 2, name, n) == 0) {
            if (a[2 + n] == '=')
                return a + 3 + n;
            if (a[2 + n] == 0)
                return "1";
        }
    }
    return def;
}

static inline bool opt_flag(const char *name)
{
    const char *v = opt_str(name, NULL);
    return v && strcmp(v, "0") != 0 && strcmp(v, "false") != 0 && strcmp(v, "no") != 0;
}

/* sizes: bytes or with k/m/g/t (binary) suffix, e.g. 64m, 1.5g, 4GiB */
static inline bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return false;
    double mul = 1;
    switch (tolower((unsigned char)*end)) {
    case 'k': mul = 1024.0; end++; break;
    case 'm': mul = 1048576.0; end++; break;
    case 'g': mul = 1073741824.0; end++; break;
    case 't': mul = 1099511627776.0; end++; break;
    default: break;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        return false;
    *out = (uint64_t)(v * mul);
    return true;
}

static inline uint64_t opt_size(const char *name, const char *def)
{
    const char *v = opt_str(name, def);
    uint64_t out;
    if (!v || !parse_size(v, &out))
        die("--%s=%s: not a size", name, v ? v : "");
    return out;
}

static inline long long opt_int(const char *name, long long def)
{
    const char *v = opt_str(name, NULL);
    if (!v)
        return def;
    char *end;
    long long x = strtoll(v, &end, 0);
    if (*end)
        die("--%s=%s: not an integer", name, v);
    return x;
}

static inline double opt_double(const char *name, double def)
{
    const char *v = opt_str(name, NULL);
    if (!v)
        return def;
    char *end;
    double x = strtod(v, &end);
    if (*end)
        die("--%s=%s: not a number", name, v);
    return x;
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---- CUDA setup: cuInit + a current context on `dev` (primary unless --ctx=create) ---- */

static inline CUcontext setup_ctx(int dev)
{
    CK(cuInit(0));
    CUdevice d;
    CK(cuDeviceGet(&d, dev));
    CUcontext ctx;
    const char *how = opt_str("ctx", "primary");
    if (strcmp(how, "create") == 0) {
        CK(cuCtxCreate(&ctx, 0, d));
    } else {
        CK(cuDevicePrimaryCtxRetain(&ctx, d));
        CK(cuCtxSetCurrent(ctx));
    }
    return ctx;
}

/* ---- hooks of the fake driver (absent with a real driver): physical view of a device ---- */

static inline bool fake_memory(int dev, uint64_t *used, uint64_t *total)
{
    int (*fn)(int, uint64_t *, uint64_t *) =
        (int (*)(int, uint64_t *, uint64_t *))dlsym(RTLD_DEFAULT, "fake_cuda_device_memory");
    return fn && fn(dev, used, total) == 0;
}

static inline bool fake_busy(int dev, uint64_t *busy_ns, uint64_t *until_ns, uint64_t *now)
{
    int (*fn)(int, uint64_t *, uint64_t *, uint64_t *) =
        (int (*)(int, uint64_t *, uint64_t *, uint64_t *))dlsym(RTLD_DEFAULT, "fake_cuda_device_stats");
    return fn && fn(dev, busy_ns, until_ns, now) == 0;
}

/* Block until stdin reaches EOF (the parent closes it) or `seconds` pass (< 0: no limit). */
static inline void hold(double seconds)
{
    if (seconds == 0)
        return;
    if (seconds > 0) {
        struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
        nanosleep(&ts, NULL);
        return;
    }
    char buf[256];
    while (read(0, buf, sizeof buf) > 0) {
    }
}

#endif
