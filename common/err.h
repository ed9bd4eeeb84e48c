/*
 * err.h - reap's one error space.
 *
 * Every function that can fail returns an int: 0 (REAP_OK) on success or a
 * negative REAP_E* code. A caller that wants the detailed reason passes a
 * reap_errbuf_t; functions fill it with a human-readable message only on
 * failure. Codes are mapped to gRPC status codes in exactly one place, at the
 * service edge (rpc/status.c), never inside the modules.
 */
#ifndef REAP_COMMON_ERR_H
#define REAP_COMMON_ERR_H

#include <stddef.h>

enum {
	REAP_OK = 0,
	REAP_E_INVALID = -1,      /* malformed input from the peer */
	REAP_E_NOT_FOUND = -2,    /* no such blob, entry or upload */
	REAP_E_EXISTS = -3,       /* already present (often not an error) */
	REAP_E_PERM = -4,         /* caller lacks the right */
	REAP_E_NOMEM = -5,        /* allocation failed */
	REAP_E_IO = -6,           /* storage or OS failure */
	REAP_E_EXHAUSTED = -7,    /* a limit or quota was hit */
	REAP_E_PRECONDITION = -8, /* the system is not in the needed state */
	REAP_E_RANGE = -9,        /* offset or size outside the valid range */
	REAP_E_ABORTED = -10,     /* concurrency conflict; retry may succeed */
	REAP_E_UNAVAILABLE = -11, /* shutting down or peer unreachable */
	REAP_E_CANCELLED = -12,   /* the caller went away */
	REAP_E_UNIMPLEMENTED = -13,
	REAP_E_DATA_LOSS = -14,   /* stored data failed verification */
	REAP_E_DEADLINE = -15,    /* timed out */
	REAP_E_INTERNAL = -16,    /* a bug */
	REAP_E_UNAUTHENTICATED = -17,
};

/** Detail buffer for an error: filled only when a call fails. */
typedef struct reap_errbuf {
	char msg[256];
} reap_errbuf_t;

/** Static text for a code; never NULL. */
const char *reap_strerror(int err);

/**
 * Record a failure: formats the message into eb (when eb is not NULL) and
 * returns err, so callers can write `return reap_errf(eb, REAP_E_INVALID, ...)`.
 */
int reap_errf(reap_errbuf_t *eb, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/** The message in eb, or reap_strerror(err) when eb is NULL or empty. */
const char *reap_errmsg(const reap_errbuf_t *eb, int err);

#endif
