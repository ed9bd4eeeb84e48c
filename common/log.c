/* log.c - logfmt lines to stderr, one write(2) each so threads never interleave. */
#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = REAP_LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

void reap_log_set_level(reap_log_level_t level)
{
	atomic_store(&min_level, (int)level);
}

int reap_log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

int reap_log_enabled(reap_log_level_t level)
{
	return (int)level >= atomic_load(&min_level);
}

void reap_log(reap_log_level_t level, const char *msg, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	if (!reap_log_enabled(level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	r = snprintf(line, sizeof(line),
		     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=\"%s\" ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ts.tv_nsec / 1000000, names[level & 3], msg);
	n = r < 0 ? 0 : ((size_t)r < sizeof(line) ? (size_t)r : sizeof(line) - 1);
	if (n < sizeof(line) - 1) {
		va_list ap;
		va_start(ap, fmt);
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
		if (r > 0)
			n += (size_t)r < sizeof(line) - n ? (size_t)r : sizeof(line) - n - 1;
	}
	if (n > 0 && line[n - 1] == ' ')
		n--;
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}
