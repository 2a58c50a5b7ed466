/* common/signals.h: the signal setup every baton daemon shares. SIGINT and SIGTERM call the
 * daemon's stop handler (installed without SA_RESTART, so a blocking call it interrupts
 * returns EINTR and the loop sees the stop at once); SIGPIPE is ignored, so a peer that hangs
 * up mid-write is a write error, not the death of the process. Call once, early in main. */
#ifndef BT_COMMON_SIGNALS_H
#define BT_COMMON_SIGNALS_H

void bt_signals_install(void (*on_stop)(int sig));

#endif
