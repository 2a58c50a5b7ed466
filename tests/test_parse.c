/* tests/test_parse.c: common/parse, the flag number parsers the daemons and the CLI share. */
#include "common/parse.h"

#include <criterion/criterion.h>
#include <string.h>

Test(parse, int_in_range) {
    int v = -1;
    cr_assert_eq(bt_parse_int("--n", "12", 1, 100, &v, NULL), 0);
    cr_assert_eq(v, 12);
    cr_assert_eq(bt_parse_int("--n", "-3", -5, 5, &v, NULL), 0);
    cr_assert_eq(v, -3);
    cr_assert_eq(bt_parse_int("--n", "100", 1, 100, &v, NULL), 0);
    cr_assert_eq(v, 100);
}

Test(parse, int_rejects_and_names_the_flag) {
    const char *bad[] = {"", "abc", "12k", "1e3", "101", "0", "99999999999999999999", "3 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int v = 7;
        bt_err e = {0};
        cr_assert_eq(bt_parse_int("--max-seqs", bad[i], 1, 100, &v, &e), BT_EINVAL, "'%s'", bad[i]);
        cr_assert_eq(v, 7, "'%s' wrote the output", bad[i]);
        cr_assert(strstr(e.msg, "--max-seqs") && strstr(e.msg, "[1, 100]"), "%s", e.msg);
    }
}

Test(parse, bytes_suffixes) {
    const struct {
        const char *s;
        uint64_t want;
    } ok[] = {{"4096", 4096},     {"1k", 1024},           {"512M", 512ull << 20},
              {"8G", 8ull << 30}, {"1.5GiB", 3ull << 29}, {"2gb", 2ull << 30},
              {"1T", 1ull << 40}, {"3MiB", 3ull << 20}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t v = 0;
        cr_assert_eq(bt_parse_bytes("--mem", ok[i].s, &v, NULL), 0, "'%s'", ok[i].s);
        cr_assert_eq(v, ok[i].want, "'%s': %llu", ok[i].s, (unsigned long long)v);
    }
}

Test(parse, bytes_rejects) {
    const char *bad[] = {"", "0", "-1G", "0.5", "8X", "8GBx", "G", "nan", "inf", "1e30T"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 9;
        bt_err e = {0};
        cr_assert_eq(bt_parse_bytes("--mem", bad[i], &v, &e), BT_EINVAL, "'%s'", bad[i]);
        cr_assert_eq(v, 9u, "'%s' wrote the output", bad[i]);
        cr_assert(strstr(e.msg, "--mem"), "%s", e.msg);
    }
}

Test(parse, double_in_range) {
    double v = -1.0;
    cr_assert_eq(bt_parse_double("--f", "0.25", 0.0, 10.0, &v, NULL), 0);
    cr_assert_float_eq(v, 0.25, 1e-12);
    cr_assert_eq(bt_parse_double("--f", "3", 0.0, 10.0, &v, NULL), 0);
    cr_assert_float_eq(v, 3.0, 1e-12);
    cr_assert_eq(bt_parse_double("--f", "0", 0.0, 10.0, &v, NULL), 0);
    cr_assert_float_eq(v, 0.0, 1e-12);
}

Test(parse, double_rejects_and_names_the_flag) {
    const char *bad[] = {"", "x", "1x", "10.5", "-0.1", "nan", "inf", "1e3", "0x10", "2 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v = 7.0;
        bt_err e = {0};
        cr_assert_eq(bt_parse_double("--prefill-stall", bad[i], 0.0, 10.0, &v, &e), BT_EINVAL,
                     "'%s'", bad[i]);
        cr_assert_float_eq(v, 7.0, 0.0, "'%s' wrote the output", bad[i]);
        cr_assert(strstr(e.msg, "--prefill-stall"), "%s", e.msg);
    }
}
