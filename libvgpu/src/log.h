/* Logging: stderr only, prefixed "[libvgpu]", level from LIBCUDA_LOG_LEVEL.
 * 0 = silent, 1 = errors (default), 2 = warnings, 3 = info, 4 = debug. */
#ifndef VGPU_LOG_H
#define VGPU_LOG_H

enum { VGPU_LOG_ERROR = 1, VGPU_LOG_WARN = 2, VGPU_LOG_INFO = 3, VGPU_LOG_DEBUG = 4 };

extern int vgpu_log_level;

void vgpu_log_set_level(int level);
void vgpu_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define vgpu_log(level, ...)                                                                       \
    do {                                                                                           \
        if ((level) <= vgpu_log_level)                                                             \
            vgpu_log_write((level), __VA_ARGS__);                                                  \
    } while (0)

#define vgpu_error(...) vgpu_log(VGPU_LOG_ERROR, __VA_ARGS__)
#define vgpu_warn(...) vgpu_log(VGPU_LOG_WARN, __VA_ARGS__)
#define vgpu_info(...) vgpu_log(VGPU_LOG_INFO, __VA_ARGS__)
#define vgpu_debug(...) vgpu_log(VGPU_LOG_DEBUG, __VA_ARGS__)

#endif
