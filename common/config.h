/*
 * config.h - reading JSON configuration files (jansson) with errors that
 * name the file, the line and the key, and human sizes ("8MiB", "10GB").
 *
 * Usage: reap_config_load() the file, then take each known key with the
 * typed getters (which record the key as known), then reap_config_check_unknown()
 * refuses any key that was not taken, so typos never pass silently.
 */
#ifndef REAP_COMMON_CONFIG_H
#define REAP_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct reap_config reap_config_t;

/** Load path; NULL with eb ("file:line:col: reason") on failure. */
reap_config_t *reap_config_load(const char *path, reap_errbuf_t *eb);
void reap_config_free(reap_config_t *c);

/*
 * Getters: 0 when the key is absent (out untouched) or valid (out set);
 * REAP_E_INVALID naming the key when it has the wrong type or value.
 * Strings returned stay valid until reap_config_free.
 */
int reap_config_string(reap_config_t *c, const char *key, const char **out, reap_errbuf_t *eb);
int reap_config_int(reap_config_t *c, const char *key, int64_t min, int64_t max, int64_t *out,
		    reap_errbuf_t *eb);
/** A size: a non-negative integer or a string like "512MiB", "10GB", "4096". */
int reap_config_size(reap_config_t *c, const char *key, uint64_t *out, reap_errbuf_t *eb);
/** An array of strings; *out is a new NULL-terminated array of borrowed strings (free() it). */
int reap_config_strings(reap_config_t *c, const char *key, const char ***out, size_t *n,
			reap_errbuf_t *eb);

struct json_t;

/**
 * The raw JSON value of key (borrowed, valid until reap_config_free), or
 * NULL when absent; records the key as known. For sections another module
 * parses itself with jansson (e.g. "auth", see auth/config.c).
 */
const struct json_t *reap_config_json(reap_config_t *c, const char *key);

/** The path c was loaded from, for error messages. */
const char *reap_config_path(const reap_config_t *c);

/** REAP_E_INVALID naming the first key no getter asked for. */
int reap_config_check_unknown(reap_config_t *c, reap_errbuf_t *eb);

/** Parse a size string ("64MiB", "1.5GB" is refused, "1G" = 2^30). */
int reap_parse_size(const char *s, uint64_t *out);

#endif
