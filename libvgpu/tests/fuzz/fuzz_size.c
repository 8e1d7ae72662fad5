/* libFuzzer harness for the strict parsers of size.c (vgpu_parse_size, _uint, _percent), with an
 * independent reference parser as the oracle: any disagreement, or an output written on
 * failure, aborts.  Build: make -C libvgpu fuzz; run: libvgpu/build/fuzz/fuzz_size CORPUS_DIR.
 *
 * fuzz-sources: size.c
 */
#include "size.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Reference: [blanks] digits [unit [i|I] [b|B] | b|B] [blanks], value (with unit) < 2^64.
 * unit: k m g t in either case, powers of 1024.  Digits are accumulated in 128 bits. */
enum ref_kind { REF_SIZE, REF_UINT, REF_PERCENT };

static bool ref_parse(const char *s, enum ref_kind kind, uint64_t *out)
{
    size_t i = 0, n = strlen(s);
    while (i < n && blank(s[i]))
        i++;
    size_t d0 = i;
    unsigned __int128 v = 0;
    bool big = false;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > UINT64_MAX)
            big = true, v = (unsigned __int128)UINT64_MAX + 1; /* saturate above 2^64 */
        i++;
    }
    if (i == d0 || big)
        return false;
    unsigned shift = 0;
    if (kind == REF_SIZE && i < n) {
        static const char units[] = "kmgtKMGT";
        const char *u = memchr(units, s[i], sizeof units - 1);
        if (u != NULL) {
            shift = 10u * (unsigned)((u - units) % 4 + 1);
            i++;
            if (i < n && (s[i] == 'i' || s[i] == 'I'))
                i++;
            if (i < n && (s[i] == 'b' || s[i] == 'B'))
                i++;
        } else if (s[i] == 'b' || s[i] == 'B') {
            i++;
        }
    } else if (kind == REF_PERCENT && i < n && s[i] == '%') {
        i++;
    }
    while (i < n && blank(s[i]))
        i++;
    if (i != n)
        return false;
    v <<= shift;
    if (v > UINT64_MAX)
        return false;
    if (kind == REF_PERCENT && v > 100)
        return false;
    *out = (uint64_t)v;
    return true;
}

static void mismatch(const char *what, const char *s, bool ok, uint64_t got, bool rok, uint64_t want)
{
    fprintf(stderr, "%s(\"%s\"): parser ok=%d value=%llu, reference ok=%d value=%llu\n", what, s, ok,
            (unsigned long long)got, rok, (unsigned long long)want);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    /* exact-size heap copy, so ASan catches any read past the terminator */
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    uint64_t v = 0x5a5a5a5a5a5a5a5aULL, want = 0;
    bool ok = vgpu_parse_size(s, &v);
    bool rok = ref_parse(s, REF_SIZE, &want);
    if (ok != rok || (ok && v != want) || (!ok && v != 0x5a5a5a5a5a5a5a5aULL))
        mismatch("vgpu_parse_size", s, ok, v, rok, want);

    v = 0x5a5a5a5a5a5a5a5aULL;
    ok = vgpu_parse_uint(s, &v);
    rok = ref_parse(s, REF_UINT, &want);
    if (ok != rok || (ok && v != want) || (!ok && v != 0x5a5a5a5a5a5a5a5aULL))
        mismatch("vgpu_parse_uint", s, ok, v, rok, want);

    unsigned p = 12345;
    ok = vgpu_parse_percent(s, &p);
    rok = ref_parse(s, REF_PERCENT, &want);
    if (ok != rok || (ok && p != want) || (!ok && p != 12345))
        mismatch("vgpu_parse_percent", s, ok, p, rok, want);

    free(s);
    return 0;
}
