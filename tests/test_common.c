/* tests/test_common.c: error codes and dtype traits. */
#include "common/err.h"
#include "engine/dtype.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

Test(err, fail_fills_message_and_returns_code) {
    bt_err e = {0};
    int rc = bt_fail(&e, BT_EFORMAT, "tensor %s: n_dims=%u > 4", "blk.0.x", 5u);
    cr_assert_eq(rc, BT_EFORMAT);
    cr_assert_str_eq(e.msg, "tensor blk.0.x: n_dims=5 > 4");
    cr_assert_eq(bt_fail(NULL, BT_ENOKEY, "x"), BT_ENOKEY);
}

Test(err, strerror_covers_errno_and_ours) {
    cr_assert_str_eq(bt_strerror(-ENOENT), strerror(ENOENT));
    cr_assert_str_eq(bt_strerror(BT_ECHECKSUM), "checksum mismatch");
}

Test(dtype, block_geometry) {
    cr_assert_eq(dtype_row_bytes(DT_Q4_K, 4096), 16 * 144);
    cr_assert_eq(dtype_row_bytes(DT_Q8_0, 128), 4 * 34);
    cr_assert_eq(dtype_row_bytes(DT_Q6_K, 100), 0, "not a multiple of the block");
    cr_assert_eq(dtype_from_name("Q4_K"), DT_Q4_K);
    cr_assert(!dtype_supported(9));
    cr_assert(dtype_supported(DT_BF16));
}
