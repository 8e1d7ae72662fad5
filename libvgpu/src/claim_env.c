#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "claim_env.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_CLAIMS 64

/* the last merged environment: lives as long as the configuration using it (volatile: a store
 * to a variable nobody reads would be dropped, and the leak checker would then see a leak) */
static char **volatile g_merged;

size_t vgpu_claim_env_lines(char *buf, const char *source, char **out, size_t max)
{
    size_t n = 0;
    unsigned lineno = 0;
    for (char *line = buf; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        lineno++;
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        if (len > 0 && line[0] != '#') {
            const char *eq = strchr(line, '=');
            if (eq == NULL || eq == line)
                vgpu_error("%s line %u: expected NAME=VALUE, got \"%s\"; line ignored", source, lineno, line);
            else if (n < max)
                out[n++] = line;
            else
                vgpu_error("%s: more than %zu variables; line %u and later ignored", source, max, lineno);
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    return n;
}

/* The whole file at PATH, NUL-terminated, or NULL (errno set; EFBIG when over the limit). */
static char *read_small_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    char *buf = malloc(VGPU_CLAIM_ENV_MAX + 1);
    size_t got = 0;
    ssize_t r = 1;
    while (buf != NULL && got <= VGPU_CLAIM_ENV_MAX &&
           (r = read(fd, buf + got, VGPU_CLAIM_ENV_MAX + 1 - got)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        got += (size_t)r;
        if (got > VGPU_CLAIM_ENV_MAX) {
            errno = EFBIG;
            r = -1;
            break;
        }
    }
    int saved = errno;
    close(fd);
    if (buf == NULL || r < 0) {
        free(buf);
        errno = buf == NULL ? ENOMEM : saved;
        return NULL;
    }
    buf[got] = '\0';
    char *fit = realloc(buf, got + 1); /* kept for the life of the process: keep it small */
    return fit != NULL ? fit : buf;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char *const *vgpu_claim_env(char *const *envp, const char *claims_dir, bool *failed)
{
    *failed = false;
    DIR *dir = opendir(claims_dir);
    if (dir == NULL)
        return envp; /* not in a container of ours, or no claim: nothing to stand in */
    char *names[MAX_CLAIMS];
    size_t n_names = 0;
    for (struct dirent *d; (d = readdir(dir)) != NULL;) {
        if (d->d_name[0] == '.')
            continue;
        if (n_names == MAX_CLAIMS) {
            vgpu_error("more than %d claim directories in %s; every GPU gets a 0 memory limit", MAX_CLAIMS,
                       claims_dir);
            *failed = true;
            break;
        }
        if ((names[n_names] = strdup(d->d_name)) != NULL)
            n_names++;
        else
            *failed = true; /* out of memory: that claim's limits would be lost */
    }
    closedir(dir);
    qsort(names, n_names, sizeof names[0], by_name);

    size_t n_env = 0;
    while (envp != NULL && envp[n_env] != NULL)
        n_env++;
    size_t max_lines = VGPU_CLAIM_ENV_MAX / 2; /* "x=" is the shortest line */
    char **lines = malloc(sizeof *lines * max_lines);
    size_t n_lines = 0;
    for (size_t i = 0; i < n_names; i++) {
        char path[4096];
        int len = snprintf(path, sizeof path, "%s/%s/%s", claims_dir, names[i], VGPU_CLAIM_ENV_FILE);
        free(names[i]);
        if (len < 0 || (size_t)len >= sizeof path) {
            vgpu_error("claim path under %s too long; every GPU gets a 0 memory limit", claims_dir);
            *failed = true;
            continue;
        }
        char *buf = lines != NULL ? read_small_file(path) : NULL;
        if (buf == NULL && lines != NULL && (errno == ENOENT || errno == ENOTDIR))
            continue; /* a directory without the file is not a claim of ours */
        if (buf == NULL) {
            vgpu_error("cannot read %s (%s): this process has no environment of its claims, so every GPU "
                       "gets a 0 memory limit (every allocation refused)",
                       path, lines == NULL ? strerror(ENOMEM) : strerror(errno));
            *failed = true;
            continue;
        }
        n_lines += vgpu_claim_env_lines(buf, path, lines + n_lines, max_lines - n_lines);
    }
    if (n_lines == 0) {
        free(lines);
        return envp;
    }
    char **merged = malloc(sizeof *merged * (n_env + n_lines + 1));
    if (merged == NULL) {
        vgpu_error("out of memory reading the claim files; every GPU gets a 0 memory limit");
        *failed = true;
        free(lines);
        return envp;
    }
    if (n_env > 0)
        memcpy(merged, envp, sizeof *merged * n_env); /* the process's own variables win (first wins) */
    memcpy(merged + n_env, lines, sizeof *merged * n_lines);
    merged[n_env + n_lines] = NULL;
    free(lines);
    g_merged = merged;
    return merged;
}
