/* err.c - text for reap's error codes and the detail-buffer helper. */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *reap_strerror(int err)
{
	switch (err) {
	case REAP_OK: return "success";
	case REAP_E_INVALID: return "invalid argument";
	case REAP_E_NOT_FOUND: return "not found";
	case REAP_E_EXISTS: return "already exists";
	case REAP_E_PERM: return "permission denied";
	case REAP_E_NOMEM: return "out of memory";
	case REAP_E_IO: return "I/O error";
	case REAP_E_EXHAUSTED: return "resource exhausted";
	case REAP_E_PRECONDITION: return "failed precondition";
	case REAP_E_RANGE: return "out of range";
	case REAP_E_ABORTED: return "aborted";
	case REAP_E_UNAVAILABLE: return "unavailable";
	case REAP_E_CANCELLED: return "cancelled";
	case REAP_E_UNIMPLEMENTED: return "unimplemented";
	case REAP_E_DATA_LOSS: return "data loss";
	case REAP_E_DEADLINE: return "deadline exceeded";
	case REAP_E_INTERNAL: return "internal error";
	case REAP_E_UNAUTHENTICATED: return "unauthenticated";
	default: return "unknown error";
	}
}

int reap_errf(reap_errbuf_t *eb, int err, const char *fmt, ...)
{
	if (eb != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(eb->msg, sizeof(eb->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}

const char *reap_errmsg(const reap_errbuf_t *eb, int err)
{
	if (eb != NULL && eb->msg[0] != '\0')
		return eb->msg;
	return reap_strerror(err);
}
