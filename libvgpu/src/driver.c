#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "driver.h"

#include "log.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>

struct vgpu_cuda_real vgpu_cu;
struct vgpu_nvml_real vgpu_nvml;
atomic_bool vgpu_cuda_ready;
atomic_bool vgpu_nvml_ready;

static pthread_mutex_t g_load_mu = PTHREAD_MUTEX_INITIALIZER;

static const struct vgpu_hook g_hooks[] = {
#define CU_HOOK(n) {#n, (void *)vgpu_##n, offsetof(struct vgpu_cuda_real, n), false},
#define NV_HOOK(n) {#n, (void *)vgpu_##n, offsetof(struct vgpu_nvml_real, n), true},
    VGPU_CUDA_HOOKS(CU_HOOK) VGPU_NVML_HOOKS(NV_HOOK)
#undef CU_HOOK
#undef NV_HOOK
};
#define NHOOKS (sizeof g_hooks / sizeof g_hooks[0])

static void *load_lib(const char *soname, bool noload)
{
    int flags = RTLD_NOW | RTLD_NODELETE | (noload ? RTLD_NOLOAD : 0);
    void *h = dlopen(soname, flags);
    if (h == NULL && !noload)
        vgpu_error("cannot load the real driver %s: %s", soname, dlerror());
    return h;
}

bool vgpu_cuda_load_slow(bool noload)
{
    if (atomic_load_explicit(&vgpu_cuda_ready, memory_order_acquire))
        return true;
    vgpu_dlsym_fn sym = vgpu_real_dlsym();
    void *h = load_lib("libcuda.so.1", noload);
    if (h == NULL || sym == NULL)
        return false;
    /* Resolve outside any lock of ours (dlopen/dlsym take the loader lock; a constructor running
     * under it may call back into us). */
    struct vgpu_cuda_real t;
#define RESOLVE(n) t.n = (__typeof__(t.n))sym(h, #n);
    VGPU_CUDA_HOOKS(RESOLVE)
    VGPU_CUDA_HELPERS(RESOLVE)
#undef RESOLVE
    pthread_mutex_lock(&g_load_mu);
    if (!atomic_load_explicit(&vgpu_cuda_ready, memory_order_relaxed)) {
        vgpu_cu = t;
        atomic_store_explicit(&vgpu_cuda_ready, true, memory_order_release);
    }
    pthread_mutex_unlock(&g_load_mu);
    return true;
}

bool vgpu_nvml_load_slow(bool noload)
{
    if (atomic_load_explicit(&vgpu_nvml_ready, memory_order_acquire))
        return true;
    vgpu_dlsym_fn sym = vgpu_real_dlsym();
    void *h = load_lib("libnvidia-ml.so.1", noload);
    if (h == NULL || sym == NULL)
        return false;
    struct vgpu_nvml_real t;
#define RESOLVE(n) t.n = (__typeof__(t.n))sym(h, #n);
    VGPU_NVML_HOOKS(RESOLVE)
    VGPU_NVML_HELPERS(RESOLVE)
#undef RESOLVE
    pthread_mutex_lock(&g_load_mu);
    if (!atomic_load_explicit(&vgpu_nvml_ready, memory_order_relaxed)) {
        vgpu_nvml = t;
        atomic_store_explicit(&vgpu_nvml_ready, true, memory_order_release);
    }
    pthread_mutex_unlock(&g_load_mu);
    return true;
}

/* No sanitizer instrumentation: dlsym may be reached from a sanitizer runtime before it is set
 * up (it resolves its interceptors with dlsym(RTLD_NEXT, ...)). */
#define VGPU_NOSAN __attribute__((no_sanitize("address", "undefined")))

VGPU_NOSAN static bool name_eq(const char *a, const char *b)
{
    while (*a != '\0' && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

VGPU_NOSAN const struct vgpu_hook *vgpu_hook_find(const char *name)
{
    if (name == NULL)
        return NULL;
    bool cu = name[0] == 'c' && name[1] == 'u';
    bool nv = name[0] == 'n' && name[1] == 'v' && name[2] == 'm' && name[3] == 'l';
    if (!cu && !nv)
        return NULL;
    for (size_t i = 0; i < NHOOKS; i++) {
        if (g_hooks[i].nvml == nv && name_eq(g_hooks[i].name, name))
            return &g_hooks[i];
    }
    return NULL;
}

void *vgpu_hook_real(const struct vgpu_hook *h)
{
    if (h->nvml) {
        if (!atomic_load_explicit(&vgpu_nvml_ready, memory_order_acquire))
            return NULL;
        return *(void **)((char *)&vgpu_nvml + h->real_offset);
    }
    if (!atomic_load_explicit(&vgpu_cuda_ready, memory_order_acquire))
        return NULL;
    return *(void **)((char *)&vgpu_cu + h->real_offset);
}

void *vgpu_hook_wrap_ptr(void *p)
{
    if (p == NULL)
        return p;
    for (size_t i = 0; i < NHOOKS; i++) {
        if (g_hooks[i].nvml)
            continue;
        if (p == g_hooks[i].wrapper)
            return p;
        void *real = vgpu_hook_real(&g_hooks[i]);
        if (real != NULL && p == real)
            return g_hooks[i].wrapper;
    }
    return p;
}
