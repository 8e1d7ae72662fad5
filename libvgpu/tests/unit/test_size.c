#include "check.h"
#include "size.h"

#include <stdint.h>
#include <string.h>

static void good(const char *s, uint64_t want)
{
    uint64_t v = 12345;
    bool ok = vgpu_parse_size(s, &v);
    if (!ok || v != want) {
        fprintf(stderr, "size \"%s\": ok=%d v=%llu want %llu\n", s, ok, (unsigned long long)v,
                (unsigned long long)want);
        check_failures++;
    }
}

static void bad(const char *s)
{
    uint64_t v = 777;
    if (vgpu_parse_size(s, &v)) {
        fprintf(stderr, "size \"%s\" accepted as %llu\n", s, (unsigned long long)v);
        check_failures++;
    }
    CHECK_EQ_U64(v, 777); /* output untouched on failure */
}

int main(void)
{
    const uint64_t Ki = 1024, Mi = Ki * Ki, Gi = Mi * Ki;
    good("4096m", 4096 * Mi);
    good("4096M", 4096 * Mi);
    good("4g", 4 * Gi);
    good("4G", 4 * Gi);
    good("4Gi", 4 * Gi);
    good("4GiB", 4 * Gi);
    good("4gib", 4 * Gi);
    good("4gb", 4 * Gi);
    good("10g", 10 * Gi);
    good("1k", Ki);
    good("2t", 2 * Gi * Ki);
    good("4294967296", 4 * Gi);
    good("0", 0);
    good("0m", 0);
    good("08G", 8 * Gi); /* decimal, never octal */
    good(" 4G ", 4 * Gi);
    good("123B", 123);
    good("18446744073709551615", UINT64_MAX);
    good("16777215t", 16777215ULL << 40);
    bad("");
    bad("   ");
    bad("4gb?");
    bad("-1");
    bad("+1");
    bad("1.5g");
    bad("0x10G");
    bad("50%");
    bad("abc");
    bad("4 G");
    bad("4GiBB");
    bad("4Gx");
    bad("4iB");
    bad("18446744073709551616");
    bad("16777216t");
    bad("99999999999999999999g");
    bad("4P");
    CHECK(!vgpu_parse_size(NULL, &(uint64_t){0}));

    unsigned p = 99;
    CHECK(vgpu_parse_percent("50", &p) && p == 50);
    CHECK(vgpu_parse_percent("50%", &p) && p == 50);
    CHECK(vgpu_parse_percent("0", &p) && p == 0);
    CHECK(vgpu_parse_percent("100", &p) && p == 100);
    CHECK(!vgpu_parse_percent("150", &p));
    CHECK(!vgpu_parse_percent("50.5", &p));
    CHECK(!vgpu_parse_percent("-5", &p));
    CHECK(!vgpu_parse_percent("", &p));
    CHECK(!vgpu_parse_percent("x", &p));
    CHECK_DONE();
}
