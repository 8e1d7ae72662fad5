/* forkexec: children that allocate device memory, created in the ways real programs do.
 *
 *   forkexec --mode=M [--size=S] [--device=D] [--hold=SECONDS]
 *
 * Modes:
 *   fork-before  fork before any CUDA call; the child initializes and allocates
 *   fork-after   the parent initializes and allocates, then forks; the child calls cuInit
 *                again and allocates (the fake resets CUDA state in a forked child)
 *   clone        like fork-after but the child is made with clone(2) without CLONE_VM
 *                (no atfork handlers run), and exits with _exit
 *   exec         fork + execv of the alloc program (--alloc=path, default next to this one)
 *   spawn        posix_spawn of the alloc program
 *   exec-self    the process allocates, then execv()s itself with --mode=child (memory of
 *                the old image is released at exec), which allocates again
 *
 * Prints parent.* and child.* lines: child.result (CUDA error name of the child's allocation,
 * or its exit status for exec/spawn), child.used_during (device memory in use seen by the
 * child while holding), parent.used_before / parent.used_after_child (the fake's view in the
 * parent, or cuMemGetInfo total-free without the fake). Exit 0 when every child succeeded. */
#include "common.h"

#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

static int g_dev;
static uint64_t g_size;

static uint64_t used_now(void)
{
    uint64_t used;
    if (fake_memory(g_dev, &used, NULL))
        return used;
    size_t f = 0, t = 0;
    if (cuMemGetInfo(&f, &t) != CUDA_SUCCESS)
        return 0;
    return t - f;
}

/* in a child: init, allocate, report, free; returns the exit status */
static int child_alloc(const char *tag)
{
    char k[64];
    CUresult r = cuInit(0);
    CUdevice d;
    CUcontext ctx;
    CUdeviceptr p = 0;
    if (r == CUDA_SUCCESS)
        r = cuDeviceGet(&d, g_dev);
    if (r == CUDA_SUCCESS)
        r = cuDevicePrimaryCtxRetain(&ctx, d);
    if (r == CUDA_SUCCESS)
        r = cuCtxSetCurrent(ctx);
    if (r == CUDA_SUCCESS)
        r = cuMemAlloc(&p, g_size);
    snprintf(k, sizeof k, "%s.result", tag);
    kv(k, "%s", err_name(r));
    snprintf(k, sizeof k, "%s.used_during", tag);
    kv(k, "%" PRIu64, used_now());
    hold(opt_double("hold", 0));
    if (r == CUDA_SUCCESS)
        r = cuMemFree(p);
    return r == CUDA_SUCCESS ? 0 : 1;
}

static int wait_child(pid_t pid, const char *tag)
{
    int st = 0;
    char k[64];
    if (waitpid(pid, &st, 0) < 0)
        die("waitpid: %s", strerror(errno));
    snprintf(k, sizeof k, "%s.exit", tag);
    kv(k, "%d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

static char g_stack[256 * 1024] __attribute__((aligned(16)));

static int clone_child(void *arg)
{
    (void)arg;
    int rc = child_alloc("child");
    fflush(stdout);
    _exit(rc);
}

static const char *alloc_path(char *buf, size_t n)
{
    const char *a = opt_str("alloc", NULL);
    if (a)
        return a;
    ssize_t len = readlink("/proc/self/exe", buf, n - 16);
    if (len < 0)
        die("readlink");
    buf[len] = 0;
    char *slash = strrchr(buf, '/');
    strcpy(slash ? slash + 1 : buf, "alloc");
    return buf;
}

int main(int argc, char **argv)
{
    opts_init(argc, argv);
    const char *mode = opt_str("mode", "fork-before");
    g_dev = (int)opt_int("device", 0);
    g_size = opt_size("size", "64m");
    char sizebuf[64], devbuf[32];
    snprintf(sizebuf, sizeof sizebuf, "--size=%" PRIu64, g_size);
    snprintf(devbuf, sizeof devbuf, "--device=%d", g_dev);

    if (strcmp(mode, "child") == 0)
        return child_alloc("child");

    if (strcmp(mode, "fork-before") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            int rc = child_alloc("child");
            fflush(stdout);
            _exit(rc);
        }
        int rc = wait_child(pid, "child");
        setup_ctx(g_dev);
        kv("parent.used_after_child", "%" PRIu64, used_now());
        return rc;
    }

    setup_ctx(g_dev);
    CUdeviceptr mine = 0;
    if (strcmp(mode, "exec-self") != 0 && strcmp(mode, "exec") != 0 && strcmp(mode, "spawn") != 0)
        CK(cuMemAlloc(&mine, g_size));
    kv("parent.used_before", "%" PRIu64, used_now());
    int rc = 0;
    char exe[4096];
    if (strcmp(mode, "fork-after") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            int r = child_alloc("child");
            fflush(stdout);
            _exit(r);
        }
        rc = wait_child(pid, "child");
    } else if (strcmp(mode, "clone") == 0) {
        fflush(stdout);
        pid_t pid = clone(clone_child, g_stack + sizeof g_stack, SIGCHLD, NULL);
        if (pid < 0)
            die("clone: %s", strerror(errno));
        rc = wait_child(pid, "child");
    } else if (strcmp(mode, "exec") == 0) {
        const char *a = alloc_path(exe, sizeof exe);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            execl(a, a, sizebuf, devbuf, (char *)NULL);
            _exit(127);
        }
        rc = wait_child(pid, "child");
    } else if (strcmp(mode, "spawn") == 0) {
        const char *a = alloc_path(exe, sizeof exe);
        char *args[] = {(char *)a, sizebuf, devbuf, NULL};
        pid_t pid;
        fflush(stdout);
        if (posix_spawn(&pid, a, NULL, NULL, args, environ) != 0)
            die("posix_spawn %s", a);
        rc = wait_child(pid, "child");
    } else if (strcmp(mode, "exec-self") == 0) {
        CK(cuMemAlloc(&mine, g_size));
        kv("parent.used_before_exec", "%" PRIu64, used_now());
        if (readlink("/proc/self/exe", exe, sizeof exe - 1) < 0)
            die("readlink");
        fflush(stdout);
        execl("/proc/self/exe", exe, "--mode=child", sizebuf, devbuf, (char *)NULL);
        die("exec: %s", strerror(errno));
    } else {
        die("unknown --mode=%s", mode);
    }
    kv("parent.used_after_child", "%" PRIu64, used_now());
    if (mine)
        CK(cuMemFree(mine));
    return rc;
}
