/* config.c - JSON config files via jansson, with key-naming errors and sizes. */
#include "common/config.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define MAX_KEYS 64

struct reap_config {
	json_t *root;
	char *path;
	char where[4200]; /* "path:line" of the key an error names (see where()) */
	const char *known[MAX_KEYS];
	size_t n_known;
};

/*
 * "path:line" of the first line where key appears as an object key, else
 * just the path. jansson keeps no positions for parsed values, so the file
 * is scanned again; only on the error path.
 */
static const char *where(reap_config_t *c, const char *key)
{
	char line[4096], pat[300];
	FILE *f = fopen(c->path, "r");
	int n = 0, found = 0;

	snprintf(c->where, sizeof(c->where), "%s", c->path);
	snprintf(pat, sizeof(pat), "\"%s\"", key);
	while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
		const char *p = line;
		n++;
		while (!found && (p = strstr(p, pat)) != NULL) {
			p += strlen(pat);
			while (*p == ' ' || *p == '\t')
				p++;
			found = *p == ':';
		}
	}
	if (f != NULL)
		fclose(f);
	if (found)
		snprintf(c->where, sizeof(c->where), "%s:%d", c->path, n);
	return c->where;
}

reap_config_t *reap_config_load(const char *path, reap_errbuf_t *eb)
{
	json_error_t je;
	reap_config_t *c = calloc(1, sizeof(*c));
	if (c == NULL || (c->path = strdup(path)) == NULL) {
		free(c);
		reap_errf(eb, REAP_E_NOMEM, "out of memory");
		return NULL;
	}
	c->root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (c->root == NULL) {
		reap_errf(eb, REAP_E_INVALID, "%s:%d:%d: %s", path, je.line, je.column, je.text);
		reap_config_free(c);
		return NULL;
	}
	if (!json_is_object(c->root)) {
		reap_errf(eb, REAP_E_INVALID, "%s: the configuration must be a JSON object", path);
		reap_config_free(c);
		return NULL;
	}
	return c;
}

void reap_config_free(reap_config_t *c)
{
	if (c == NULL)
		return;
	json_decref(c->root);
	free(c->path);
	free(c);
}

static json_t *take(reap_config_t *c, const char *key)
{
	if (c->n_known < MAX_KEYS)
		c->known[c->n_known++] = key;
	return json_object_get(c->root, key);
}

int reap_config_string(reap_config_t *c, const char *key, const char **out, reap_errbuf_t *eb)
{
	json_t *v = take(c, key);
	if (v == NULL)
		return REAP_OK;
	if (!json_is_string(v))
		return reap_errf(eb, REAP_E_INVALID, "%s: key \"%s\" must be a string", where(c, key), key);
	*out = json_string_value(v);
	return REAP_OK;
}

int reap_config_int(reap_config_t *c, const char *key, int64_t min, int64_t max, int64_t *out,
		    reap_errbuf_t *eb)
{
	json_t *v = take(c, key);
	if (v == NULL)
		return REAP_OK;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return reap_errf(eb, REAP_E_INVALID,
				 "%s: key \"%s\" must be an integer from %lld to %lld", where(c, key), key,
				 (long long)min, (long long)max);
	*out = json_integer_value(v);
	return REAP_OK;
}

int reap_parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		uint64_t mult;
	} units[] = {
		{"", 1}, {"B", 1}, {"K", 1ull << 10}, {"KiB", 1ull << 10}, {"KB", 1000},
		{"M", 1ull << 20}, {"MiB", 1ull << 20}, {"MB", 1000000}, {"G", 1ull << 30},
		{"GiB", 1ull << 30}, {"GB", 1000000000}, {"T", 1ull << 40}, {"TiB", 1ull << 40},
		{"TB", 1000000000000ull},
	};
	char *end = NULL;
	if (s == NULL || *s < '0' || *s > '9')
		return REAP_E_INVALID;
	unsigned long long v = strtoull(s, &end, 10);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].suffix) == 0) {
			if (v > UINT64_MAX / units[i].mult)
				return REAP_E_INVALID;
			*out = v * units[i].mult;
			return REAP_OK;
		}
	}
	return REAP_E_INVALID;
}

int reap_config_size(reap_config_t *c, const char *key, uint64_t *out, reap_errbuf_t *eb)
{
	json_t *v = take(c, key);
	if (v == NULL)
		return REAP_OK;
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return REAP_OK;
	}
	if (json_is_string(v) && reap_parse_size(json_string_value(v), out) == REAP_OK)
		return REAP_OK;
	return reap_errf(eb, REAP_E_INVALID,
			 "%s: key \"%s\" must be a size such as 1048576 or \"10GiB\"", where(c, key), key);
}

int reap_config_strings(reap_config_t *c, const char *key, const char ***out, size_t *n,
			reap_errbuf_t *eb)
{
	json_t *v = take(c, key), *e;
	size_t i;
	if (v == NULL)
		return REAP_OK;
	if (!json_is_array(v))
		goto bad;
	const char **arr = calloc(json_array_size(v) + 1, sizeof(*arr));
	if (arr == NULL)
		return REAP_E_NOMEM;
	json_array_foreach(v, i, e) {
		if (!json_is_string(e)) {
			free(arr);
			goto bad;
		}
		arr[i] = json_string_value(e);
	}
	*out = arr;
	*n = json_array_size(v);
	return REAP_OK;
bad:
	return reap_errf(eb, REAP_E_INVALID, "%s: key \"%s\" must be an array of strings", where(c, key),
			 key);
}

const struct json_t *reap_config_json(reap_config_t *c, const char *key)
{
	return take(c, key);
}

const char *reap_config_path(const reap_config_t *c)
{
	return c->path;
}

int reap_config_check_unknown(reap_config_t *c, reap_errbuf_t *eb)
{
	const char *key;
	json_t *v;
	json_object_foreach(c->root, key, v) {
		size_t i;
		for (i = 0; i < c->n_known; i++)
			if (strcmp(c->known[i], key) == 0)
				break;
		if (i == c->n_known)
			return reap_errf(eb, REAP_E_INVALID, "%s: unknown key \"%s\"", where(c, key), key);
	}
	return REAP_OK;
}
