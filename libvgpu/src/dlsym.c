/* dlsym interposer.
 *
 * The exported dlsym is a small assembly trampoline: it asks vgpu_dlsym_decide() whether to
 * hand out one of our wrappers; if not, it TAIL-JUMPS to glibc's dlsym with the caller's return
 * address untouched, so glibc still sees the original caller (RTLD_NEXT and caller-relative
 * lookups resolve exactly as without us: no OMPT-style self-resolution, no repeat-lookup
 * failures, no recursion).
 *
 * A wrapper is returned only when NAME is exactly one of the functions we wrap and the real
 * lookup on that handle resolves to the real driver's own function (or to our export, e.g. for
 * RTLD_DEFAULT): so lookups through a driver handle are hooked, while cublas*, cudnn*, cuda*
 * and any name resolved to some other object are never touched. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "config.h"
#include "driver.h"

#include <dlfcn.h>

#define VGPU_NOSAN __attribute__((no_sanitize("address", "undefined")))
#define VGPU_HIDDEN __attribute__((visibility("hidden")))

static void *dlsym_unavailable(void *handle, const char *name)
{
    (void)handle;
    (void)name;
    return NULL;
}

VGPU_HIDDEN vgpu_dlsym_fn vgpu_real_dlsym_ptr;

VGPU_NOSAN vgpu_dlsym_fn vgpu_real_dlsym(void)
{
    vgpu_dlsym_fn f = __atomic_load_n(&vgpu_real_dlsym_ptr, __ATOMIC_ACQUIRE);
    if (f != NULL)
        return f;
    static const char *const versions[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.3",
                                           "GLIBC_2.0"};
    for (unsigned i = 0; i < sizeof versions / sizeof versions[0] && f == NULL; i++)
        f = (vgpu_dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", versions[i]);
    if (f == NULL)
        f = dlsym_unavailable;
    __atomic_store_n(&vgpu_real_dlsym_ptr, f, __ATOMIC_RELEASE);
    return f;
}

static void *decide_hooked(void *handle, const char *name, const struct vgpu_hook *h)
{
    if (vgpu_config_get()->disabled)
        return NULL;
    /* Only look at a driver the process has already loaded: never load one from here. */
    bool loaded = h->nvml ? vgpu_nvml_load_slow(true) : vgpu_cuda_load_slow(true);
    if (!loaded)
        return NULL;
    void *real = vgpu_hook_real(h);
    if (real == NULL)
        return NULL; /* the driver lacks it: the caller gets the driver's answer */
    void *r = vgpu_real_dlsym_ptr(handle, name);
    if (r != NULL && (r == real || r == h->wrapper))
        return h->wrapper;
    return NULL;
}

VGPU_HIDDEN VGPU_NOSAN void *vgpu_dlsym_decide(void *handle, const char *name)
{
    vgpu_real_dlsym();
    if (handle == RTLD_NEXT || name == NULL)
        return NULL;
    const struct vgpu_hook *h = vgpu_hook_find(name);
    if (h == NULL)
        return NULL;
    return decide_hooked(handle, name, h);
}

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl dlsym\n"
        ".type dlsym, @function\n"
        ".p2align 4\n"
        "dlsym:\n"
        ".cfi_startproc\n"
        "  pushq %rdi\n"
        ".cfi_adjust_cfa_offset 8\n"
        "  pushq %rsi\n"
        ".cfi_adjust_cfa_offset 8\n"
        "  subq $8, %rsp\n"
        ".cfi_adjust_cfa_offset 8\n"
        "  call vgpu_dlsym_decide\n"
        "  addq $8, %rsp\n"
        ".cfi_adjust_cfa_offset -8\n"
        "  popq %rsi\n"
        ".cfi_adjust_cfa_offset -8\n"
        "  popq %rdi\n"
        ".cfi_adjust_cfa_offset -8\n"
        "  testq %rax, %rax\n"
        "  jz 1f\n"
        "  ret\n"
        "1:\n"
        "  jmp *vgpu_real_dlsym_ptr(%rip)\n"
        ".cfi_endproc\n"
        ".size dlsym, .-dlsym\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl dlsym\n"
        ".type dlsym, %function\n"
        ".p2align 4\n"
        "dlsym:\n"
        ".cfi_startproc\n"
        "  stp x29, x30, [sp, #-32]!\n"
        ".cfi_def_cfa_offset 32\n"
        ".cfi_offset 29, -32\n"
        ".cfi_offset 30, -24\n"
        "  mov x29, sp\n"
        "  stp x0, x1, [sp, #16]\n"
        "  bl vgpu_dlsym_decide\n"
        "  mov x2, x0\n"
        "  ldp x0, x1, [sp, #16]\n"
        "  ldp x29, x30, [sp], #32\n"
        ".cfi_def_cfa_offset 0\n"
        "  cbz x2, 1f\n"
        "  mov x0, x2\n"
        "  ret\n"
        "1:\n"
        "  adrp x16, vgpu_real_dlsym_ptr\n"
        "  ldr x16, [x16, #:lo12:vgpu_real_dlsym_ptr]\n"
        "  br x16\n"
        ".cfi_endproc\n"
        ".size dlsym, .-dlsym\n");
#else
/* Portable fallback: caller-relative lookups (RTLD_NEXT) are relative to libvgpu here. */
__attribute__((visibility("default"))) void *dlsym(void *handle, const char *name)
{
    void *w = vgpu_dlsym_decide(handle, name);
    if (w != NULL)
        return w;
    return vgpu_real_dlsym_ptr(handle, name);
}
#endif
