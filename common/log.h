/*
 * log.h - structured logging (logfmt lines on stderr).
 *
 * One line per event: `ts=... level=... msg="..." key=value ...`. The caller
 * formats the key/value tail; values that may contain spaces must be quoted
 * by the caller with %s inside "...". Thread-safe: each line is written with
 * one write(2).
 */
#ifndef REAP_COMMON_LOG_H
#define REAP_COMMON_LOG_H

typedef enum {
	REAP_LOG_DEBUG = 0,
	REAP_LOG_INFO = 1,
	REAP_LOG_WARN = 2,
	REAP_LOG_ERROR = 3,
} reap_log_level_t;

/** Set the lowest level that is written (default INFO). */
void reap_log_set_level(reap_log_level_t level);

/** Parse "debug", "info", "warn" or "error"; returns -1 if unknown. */
int reap_log_level_parse(const char *s);

/** True when a message of this level would be written. */
int reap_log_enabled(reap_log_level_t level);

/** Write one line: msg is the event name, fmt/... the key=value tail (may be ""). */
void reap_log(reap_log_level_t level, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define REAP_DEBUG(msg, ...) do { if (reap_log_enabled(REAP_LOG_DEBUG)) reap_log(REAP_LOG_DEBUG, msg, __VA_ARGS__); } while (0)
#define REAP_INFO(msg, ...) reap_log(REAP_LOG_INFO, msg, __VA_ARGS__)
#define REAP_WARN(msg, ...) reap_log(REAP_LOG_WARN, msg, __VA_ARGS__)
#define REAP_ERROR(msg, ...) reap_log(REAP_LOG_ERROR, msg, __VA_ARGS__)

#endif
