/*
 * notify.c - sd_notify(3) wrappers for reapd and reap-worker (see
 * notify.h). Kept out of the modules: only the programs' main() knows it
 * runs under a service manager. The NOTIFY_SOCKET test comes first so a
 * process started by hand does no work and touches no socket at all.
 */
#include "cmd/notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "common/log.h"

/* One line, no control characters: systemd splits assignments on newlines. */
static void clean_status(const char *in, char *out, size_t cap)
{
	size_t i = 0;
	for (; in[i] != '\0' && i + 1 < cap; i++)
		out[i] = (in[i] == '\n' || in[i] == '\r' || (unsigned char)in[i] < 0x20) ? ' ' : in[i];
	out[i] = '\0';
}

static void send_state(const char *state)
{
	int r;
	if (getenv("NOTIFY_SOCKET") == NULL)
		return;
	/* unset_environment = 0: a later notification (STOPPING) still finds the socket. */
	if ((r = sd_pid_notify(getpid(), 0, state)) < 0)
		REAP_DEBUG("sd_notify failed", "err=\"%s\"", strerror(-r));
}

void reap_notify_ready(const char *status)
{
	char clean[256], msg[512];
	if (getenv("NOTIFY_SOCKET") == NULL)
		return;
	if (status != NULL) {
		clean_status(status, clean, sizeof(clean));
		snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%ld\nSTATUS=%s", (long)getpid(), clean);
	} else {
		snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%ld", (long)getpid());
	}
	send_state(msg);
}

void reap_notify_stopping(void)
{
	send_state("STOPPING=1\nSTATUS=draining");
}

void reap_notify_status(const char *status)
{
	char clean[256], msg[300];
	if (status == NULL || getenv("NOTIFY_SOCKET") == NULL)
		return;
	clean_status(status, clean, sizeof(clean));
	snprintf(msg, sizeof(msg), "STATUS=%s", clean);
	send_state(msg);
}
