/*
 * audit.c - the append-only audit log: one JSON object per line.
 *
 * Each line is built with jansson (so every string is escaped correctly,
 * non-ASCII as \u escapes) and written with a single write(2) on an
 * O_APPEND descriptor, so lines from concurrent threads, and from other
 * processes appending to the same file, never interleave.
 *
 * Rotation: auth_audit_reopen() (wire it to SIGHUP) opens the path again;
 * independently, at most once a second a writer compares the path's inode
 * with the open file's and reopens when they differ (renamed away by
 * logrotate, or removed), so rotation also works without a signal.
 *
 * Writers hold audit_rw shared and a reopen holds it exclusive only to swap
 * the descriptor; the inode check is done by one thread at a time
 * (audit_mu, trylock), so no writer waits on another's check. A failed
 * write never stops serving: it is counted (auth_audit_failures) and
 * logged at most every 10 seconds.
 */
#include "auth/auth_int.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define CHECK_EVERY_MS 1000
#define WARN_EVERY_MS 10000
#define FIELD_MAX 1024 /* longest field value kept; longer ones are cut */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int open_log(const char *path, int *fd_out, struct stat *st, reap_errbuf_t *eb)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "cannot open audit log %s: %s", path,
				 strerror(errno));
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		return reap_errf(eb, REAP_E_IO, "audit log %s is not a regular file", path);
	}
	*fd_out = fd;
	return REAP_OK;
}

int auth_audit_open(auth_policy_t *p, const char *path, reap_errbuf_t *eb)
{
	struct stat st;
	int fd;

	p->audit_fd = -1;
	if (pthread_mutex_init(&p->audit_mu, NULL) != 0)
		return reap_errf(eb, REAP_E_NOMEM, "cannot create the audit lock");
	if (pthread_rwlock_init(&p->audit_rw, NULL) != 0) {
		pthread_mutex_destroy(&p->audit_mu);
		return reap_errf(eb, REAP_E_NOMEM, "cannot create the audit lock");
	}
	p->audit_mu_init = true;
	if (path == NULL || path[0] == '\0')
		return REAP_OK;
	if ((p->audit_path = strdup(path)) == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	if (open_log(path, &fd, &st, eb) != REAP_OK)
		return REAP_E_IO;
	p->audit_fd = fd;
	p->audit_dev = st.st_dev;
	p->audit_ino = st.st_ino;
	atomic_store(&p->audit_checked_ms, mono_ms());
	return REAP_OK;
}

void auth_audit_close(auth_policy_t *p)
{
	if (!p->audit_mu_init) /* auth_policy_new failed before opening it */
		return;
	if (p->audit_fd >= 0)
		close(p->audit_fd);
	p->audit_fd = -1;
	free(p->audit_path);
	p->audit_path = NULL;
	pthread_rwlock_destroy(&p->audit_rw);
	pthread_mutex_destroy(&p->audit_mu);
	p->audit_mu_init = false;
}

/* Open the path again and swap descriptors. Caller holds audit_mu. */
static int reopen_locked(auth_policy_t *p, reap_errbuf_t *eb)
{
	struct stat st;
	int fd, old;
	int err = open_log(p->audit_path, &fd, &st, eb);
	if (err != REAP_OK)
		return err;
	pthread_rwlock_wrlock(&p->audit_rw);
	old = p->audit_fd;
	p->audit_fd = fd;
	p->audit_dev = st.st_dev;
	p->audit_ino = st.st_ino;
	pthread_rwlock_unlock(&p->audit_rw);
	if (old >= 0)
		close(old);
	return REAP_OK;
}

int auth_audit_reopen(auth_policy_t *p, reap_errbuf_t *eb)
{
	int err;
	if (p == NULL || !p->audit_mu_init || p->audit_path == NULL)
		return REAP_OK;
	pthread_mutex_lock(&p->audit_mu);
	err = reopen_locked(p, eb);
	pthread_mutex_unlock(&p->audit_mu);
	if (err == REAP_OK)
		atomic_store(&p->audit_checked_ms, mono_ms());
	return err;
}

uint64_t auth_audit_failures(const auth_policy_t *p)
{
	return p != NULL ? atomic_load(&p->audit_failures) : 0;
}

static void note_failure(auth_policy_t *p, const char *why)
{
	uint64_t n = atomic_fetch_add(&p->audit_failures, 1) + 1;
	int64_t now = mono_ms(), last = atomic_load(&p->audit_warned_ms);
	if ((last == 0 || now - last >= WARN_EVERY_MS) &&
	    atomic_compare_exchange_strong(&p->audit_warned_ms, &last, now))
		REAP_WARN("audit log write failed", "path=%s failures=%llu reason=\"%s\"",
			  p->audit_path != NULL ? p->audit_path : "", (unsigned long long)n, why);
}

/* At most once a second: reopen when the path no longer names the open file. */
static void maybe_reopen(auth_policy_t *p)
{
	int64_t now = mono_ms(), last = atomic_load(&p->audit_checked_ms);
	struct stat st;
	reap_errbuf_t eb = {{0}};

	if (now - last < CHECK_EVERY_MS ||
	    !atomic_compare_exchange_strong(&p->audit_checked_ms, &last, now))
		return;
	if (pthread_mutex_trylock(&p->audit_mu) != 0)
		return; /* an explicit reopen is under way */
	if (stat(p->audit_path, &st) != 0 || st.st_dev != p->audit_dev ||
	    st.st_ino != p->audit_ino) {
		if (reopen_locked(p, &eb) != REAP_OK)
			note_failure(p, eb.msg); /* keep writing to the old file */
		else
			REAP_INFO("audit log reopened", "path=%s", p->audit_path);
	}
	pthread_mutex_unlock(&p->audit_mu);
}

/* A JSON string for s, cut to FIELD_MAX bytes; invalid UTF-8 bytes become '?'. */
static json_t *jstr(const char *s)
{
	size_t n;
	json_t *j;
	char *copy;

	if (s == NULL)
		return json_null();
	n = strlen(s);
	if (n > FIELD_MAX) {
		n = FIELD_MAX;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--; /* do not split a UTF-8 sequence */
	}
	if ((j = json_stringn(s, n)) != NULL)
		return j;
	if ((copy = malloc(n + 1)) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
	j = json_stringn(copy, n);
	free(copy);
	return j;
}

static void now_rfc3339(char *buf, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 ts.tv_nsec / 1000000);
}

static const char *via_name(auth_via_t v)
{
	switch (v) {
	case AUTH_VIA_TOKEN:
		return "token";
	case AUTH_VIA_CERT:
		return "cert";
	case AUTH_VIA_ANONYMOUS:
	default:
		return "anonymous";
	}
}

/* The line for ev, with its '\n'; malloc'd, NULL on allocation failure. */
static char *build_line(const auth_audit_event_t *ev, size_t *len)
{
	const auth_identity_t *id = ev->id;
	char when[80], *s = NULL, *line = NULL;
	json_t *o = json_object();

	now_rfc3339(when, sizeof(when));
	if (o == NULL ||
	    json_object_set_new(o, "time", json_string(when)) != 0 ||
	    json_object_set_new(o, "subject", jstr(id != NULL ? id->subject : NULL)) != 0 ||
	    json_object_set_new(o, "role", jstr(id != NULL ? auth_role_name(id->role) : NULL)) ||
	    json_object_set_new(o, "via", jstr(id != NULL ? via_name(id->via) : NULL)) != 0 ||
	    json_object_set_new(o, "peer", jstr(id != NULL ? id->peer : ev->peer)) != 0 ||
	    json_object_set_new(o, "instance", jstr(ev->instance)) != 0 ||
	    json_object_set_new(o, "rpc", jstr(ev->rpc)) != 0 ||
	    json_object_set_new(o, "action", jstr(ev->action)) != 0 ||
	    json_object_set_new(o, "outcome", jstr(ev->outcome)) != 0 ||
	    json_object_set_new(o, "detail", jstr(ev->detail)) != 0)
		goto out;
	if ((s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER)) == NULL)
		goto out;
	*len = strlen(s);
	if ((line = malloc(*len + 2)) == NULL)
		goto out;
	memcpy(line, s, *len);
	line[(*len)++] = '\n';
	line[*len] = '\0';
out:
	free(s);
	json_decref(o);
	return line;
}

void auth_audit(const auth_policy_t *cp, const auth_audit_event_t *ev)
{
	/* The policy is shared read-only except for the log's own synchronized state. */
	auth_policy_t *p = (auth_policy_t *)(uintptr_t)cp;
	size_t len = 0;
	ssize_t n = -1;
	char *line;
	int saved = 0;

	if (p == NULL || ev == NULL || !p->audit_mu_init || p->audit_path == NULL)
		return;
	maybe_reopen(p);
	if ((line = build_line(ev, &len)) == NULL) {
		note_failure(p, "out of memory");
		return;
	}
	pthread_rwlock_rdlock(&p->audit_rw);
	if (p->audit_fd >= 0) {
		n = write(p->audit_fd, line, len); /* one write: O_APPEND keeps it whole */
		saved = errno;
	}
	pthread_rwlock_unlock(&p->audit_rw);
	if (n != (ssize_t)len)
		note_failure(p, n < 0 ? strerror(saved) : "short write");
	free(line);
}
