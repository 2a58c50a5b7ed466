/* common/signals.c: see signals.h. */
#include "common/signals.h"

#include <signal.h>
#include <string.h>

void bt_signals_install(void (*on_stop)(int sig)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}
