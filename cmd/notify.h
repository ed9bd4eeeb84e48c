/*
 * notify.h - service-manager readiness for reapd and reap-worker: tells
 * systemd (Type=notify units, see deploy/systemd/) when the process is
 * ready, what it is doing and when it starts stopping, via sd_notify(3).
 *
 * Every function is a no-op when NOTIFY_SOCKET is unset (run by hand, by
 * scripts/run.sh or by tests), never fails the caller and never blocks
 * for long: a notification that cannot be sent is only logged at debug
 * level. Safe to call from any thread; not async-signal-safe.
 */
#ifndef REAP_CMD_NOTIFY_H
#define REAP_CMD_NOTIFY_H

/**
 * READY=1 plus STATUS=status (status may be NULL) and MAINPID: call once,
 * after every listening socket is bound and serving (reapd) or the daemon
 * started (reap-worker), right where the "listening"/"ready" line is printed.
 */
void reap_notify_ready(const char *status);

/** STOPPING=1: call once when a stop signal arrives, before draining. */
void reap_notify_stopping(void);

/** STATUS=status, a one-line human-readable state for `systemctl status`. NULL is ignored. */
void reap_notify_status(const char *status);

#endif
