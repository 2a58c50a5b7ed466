/* common/log.c: see log.h. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int level_from_env(void) {
    const char *v = getenv("BT_LOG"); /* NOLINT(concurrency-mt-unsafe): read before threads */
    if (!v) return BT_INFO;
    if (!strcmp(v, "debug")) return BT_DEBUG;
    if (!strcmp(v, "warn")) return BT_WARN;
    if (!strcmp(v, "error")) return BT_ERROR;
    return BT_INFO;
}

int bt_log_level = -1; /* -1: not read from the environment yet */
static const char *log_name = "baton";

__attribute__((constructor)) static void log_init(void) {
    if (bt_log_level < 0) bt_log_level = level_from_env();
}

void bt_log_set_level(int level) {
    bt_log_level = level;
}

void bt_log_set_name(const char *program) {
    log_name = program;
}

void bt_log_write(int level, const char *subsys, const char *fmt, ...) {
    static const char letters[] = "DIWE";
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %c %s[%d] %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), letters[level & 3], log_name, (int)getpid(), subsys);
    if (n < 0 || (size_t)n >= sizeof line) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
