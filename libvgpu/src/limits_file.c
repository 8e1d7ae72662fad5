#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "limits_file.h"

#include "claim_env.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000 /* Linux 5.8 */
#endif

#define MAX_FILES 64

static char **volatile g_lines; /* the lines of the last read: live as long as the configuration */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether NAME in DFD (opened as FD) is a file the plugin mounted (a file that is not is logged as
 * an error: the log level is not known yet, and somebody put it there): a regular file on a read-only
 * mount and, where the kernel says (statx, Linux 5.8+), the root of that mount. */
static bool mounted_read_only(int dfd, const char *name, int fd, const char *dir)
{
    struct stat st;
    struct statvfs vfs;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        vgpu_error("%s/%s is not a regular file; ignored (limits files are bind mounts made by the "
                  "kubelet plugin)",
                  dir, name);
        return false;
    }
    if (fstatvfs(fd, &vfs) < 0 || (vfs.f_flag & ST_RDONLY) == 0) {
        vgpu_error("%s/%s is on a writable file system, so it was not mounted by the kubelet plugin; "
                  "ignored",
                  dir, name);
        return false;
    }
    struct statx stx;
    if (statx(dfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_TYPE, &stx) == 0 &&
        (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) != 0 &&
        (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) == 0) {
        vgpu_error("%s/%s is not a mount (a file of the image?), so it was not mounted by the kubelet "
                  "plugin; ignored",
                  dir, name);
        return false;
    }
    return true;
}

/* The whole content of FD, NUL-terminated (at most VGPU_CLAIM_ENV_MAX bytes), or NULL. */
static char *read_all(int fd)
{
    char *buf = malloc(VGPU_CLAIM_ENV_MAX + 1);
    if (buf == NULL)
        return NULL;
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, VGPU_CLAIM_ENV_MAX + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (got += (size_t)(r > 0 ? r : 0)) > VGPU_CLAIM_ENV_MAX) {
            if (r >= 0)
                errno = EFBIG;
            free(buf);
            return NULL;
        }
        if (r == 0)
            break;
    }
    buf[got] = '\0';
    char *fit = realloc(buf, got + 1); /* kept for the life of the process: keep it small */
    return fit != NULL ? fit : buf;
}

char *const *vgpu_limits_read(const char *dir, bool *failed)
{
    *failed = false;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return NULL; /* not in a container of ours, or a claim of an older plugin */
    DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return NULL;
    }
    char *names[MAX_FILES];
    size_t n_names = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        if (n_names == MAX_FILES) {
            vgpu_error("more than %d files in %s; every GPU gets a 0 memory limit", MAX_FILES, dir);
            *failed = true;
            break;
        }
        if ((names[n_names] = strdup(e->d_name)) != NULL)
            n_names++;
        else
            *failed = true;
    }
    qsort(names, n_names, sizeof names[0], by_name);

    size_t max_lines = VGPU_CLAIM_ENV_MAX / 2; /* "x=" is the shortest line */
    char **lines = malloc(sizeof *lines * (max_lines + 1));
    size_t n_lines = 0;
    bool any = false;
    for (size_t i = 0; i < n_names; i++) {
        /* O_NOFOLLOW | O_NONBLOCK: neither a symlink nor a FIFO planted here is followed or waited on */
        int fd = openat(dirfd(d), names[i], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            if (errno != ENOENT)
                vgpu_error("cannot open %s/%s (%s); ignored", dir, names[i], strerror(errno));
            free(names[i]);
            continue;
        }
        if (!mounted_read_only(dirfd(d), names[i], fd, dir)) {
            close(fd);
            free(names[i]);
            continue;
        }
        any = true;
        char *buf = lines != NULL ? read_all(fd) : NULL;
        int saved = errno;
        close(fd);
        if (buf == NULL) {
            vgpu_error("cannot read the limits file %s/%s (%s): every GPU gets a 0 memory limit "
                       "(every allocation refused)",
                       dir, names[i], lines == NULL ? strerror(ENOMEM) : strerror(saved));
            *failed = true;
        } else {
            char source[512];
            snprintf(source, sizeof source, "%s/%s", dir, names[i]);
            n_lines += vgpu_claim_env_lines(buf, source, lines + n_lines, max_lines - n_lines);
        }
        free(names[i]);
    }
    closedir(d);
    if (!any || lines == NULL) {
        free(lines);
        return NULL;
    }
    lines[n_lines] = NULL;
    g_lines = lines;
    vgpu_info("limits from %s (%zu settings); the environment may only lower them", dir, n_lines);
    return lines;
}
