/* Strict parsers for the environment contract (no strtoul surprises: no octal, hex, sign,
 * fraction or trailing garbage). */
#ifndef VGPU_SIZE_H
#define VGPU_SIZE_H

#include <stdbool.h>
#include <stdint.h>

/* Accepted: decimal digits, optionally followed by a unit: k, m, g, t (any case; powers of
 * 1024), optionally followed by "i", optionally followed by "b" (so 4g, 4G, 4Gi, 4GiB, 4gb,
 * 4096m, 4096M), or a bare "b"/"B" for bytes.  Surrounding blanks are ignored.  Returns false on
 * empty input, any other character, or overflow of 64 bits. */
bool vgpu_parse_size(const char *s, uint64_t *out);

/* Percent 0..100, decimal digits with an optional trailing '%'.  Returns false otherwise. */
bool vgpu_parse_percent(const char *s, unsigned *out);

/* Plain unsigned decimal integer (no sign, no suffix). */
bool vgpu_parse_uint(const char *s, uint64_t *out);

/* Human description of the accepted size forms, for error messages. */
extern const char vgpu_size_forms[];

#endif
