/* common/log.h: one line per event on stderr, e.g.
 *   2026-03-02T10:11:12.345Z I worker[4121] loader: layers=0..15 bytes=4.1GiB gbps=1.8
 * The level is tested before the arguments are evaluated. Level from BT_LOG=debug|info|warn|error
 * (default info) or bt_log_set_level(). Thread-safe (one fprintf per line). */
#ifndef BT_COMMON_LOG_H
#define BT_COMMON_LOG_H

enum bt_log_level { BT_DEBUG, BT_INFO, BT_WARN, BT_ERROR };

extern int bt_log_level;
void bt_log_set_level(int level);
void bt_log_set_name(const char *program); /* shown as program[pid] */
void bt_log_write(int level, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define BT_LOG(lvl, subsys, ...)                                                                   \
    do {                                                                                           \
        if ((BT_##lvl) >= bt_log_level) bt_log_write(BT_##lvl, subsys, __VA_ARGS__);               \
    } while (0)

#endif
