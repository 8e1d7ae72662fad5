#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

int vgpu_log_level = VGPU_LOG_ERROR;

void vgpu_log_set_level(int level)
{
    if (level < 0)
        level = 0;
    if (level > VGPU_LOG_DEBUG)
        level = VGPU_LOG_DEBUG;
    vgpu_log_level = level;
}

static const char *level_name(int level)
{
    switch (level) {
    case VGPU_LOG_ERROR:
        return "ERROR";
    case VGPU_LOG_WARN:
        return "WARN";
    case VGPU_LOG_INFO:
        return "INFO";
    default:
        return "DEBUG";
    }
}

/* One write(2) per line so lines of concurrent processes do not interleave; errno is preserved. */
void vgpu_log_write(int level, const char *fmt, ...)
{
    int saved = errno;
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "[libvgpu] %s (pid %d): ", level_name(level), (int)getpid());
    if (n < 0)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m > 0 ? (size_t)m : 0);
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    buf[len++] = '\n';
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, p, len);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    errno = saved;
}
