/* instance.c - instance-name grammar and the accepted set of tenants. */
#include "common/instance.h"

#include <stdlib.h>
#include <string.h>

static const char *const reserved[] = {
	"blobs", "uploads", "actions", "actionResults", "operations", "capabilities",
	"compressed-blobs",
};

bool reap_instance_reserved(const char *seg, size_t len)
{
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strlen(reserved[i]) == len && memcmp(reserved[i], seg, len) == 0)
			return true;
	return false;
}

int reap_instance_check(const char *name, size_t len, reap_errbuf_t *eb)
{
	size_t start = 0;

	if (len == 0)
		return REAP_OK;
	if (len > REAP_INSTANCE_MAX)
		return reap_errf(eb, REAP_E_INVALID, "instance name longer than %d bytes",
				 REAP_INSTANCE_MAX);
	for (size_t i = 0; i <= len; i++) {
		if (i < len && (unsigned char)name[i] < 0x20)
			return reap_errf(eb, REAP_E_INVALID,
					 "instance name has a control character");
		if (i < len && name[i] != '/')
			continue;
		size_t n = i - start;
		const char *seg = name + start;
		if (n == 0)
			return reap_errf(eb, REAP_E_INVALID,
					 "instance name has an empty segment");
		if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return reap_errf(eb, REAP_E_INVALID,
					 "instance name has a '.' or '..' segment");
		if (reap_instance_reserved(seg, n))
			return reap_errf(eb, REAP_E_INVALID,
					 "instance name segment '%.*s' is a reserved word",
					 (int)n, seg);
		start = i + 1;
	}
	return REAP_OK;
}

struct reap_instances {
	size_t n;
	bool any;
	struct pat {
		char *name;
		size_t len;
		bool prefix;
	} *pats;
};

reap_instances_t *reap_instances_new(const char *const *patterns, size_t n, reap_errbuf_t *eb)
{
	reap_instances_t *set = calloc(1, sizeof(*set));
	if (set == NULL || (n > 0 && (set->pats = calloc(n, sizeof(*set->pats))) == NULL))
		goto fail;
	for (size_t i = 0; i < n; i++) {
		const char *p = patterns[i];
		size_t len = strlen(p);
		if (strcmp(p, "*") == 0) {
			set->any = true;
			continue;
		}
		bool prefix = len >= 2 && strcmp(p + len - 2, "/*") == 0;
		if (prefix)
			len -= 2;
		if (reap_instance_check(p, len, eb) != REAP_OK)
			goto fail;
		struct pat *pt = &set->pats[set->n];
		if ((pt->name = strndup(p, len)) == NULL)
			goto fail;
		pt->len = len;
		pt->prefix = prefix;
		set->n++;
	}
	return set;
fail:
	reap_instances_free(set);
	return NULL;
}

void reap_instances_free(reap_instances_t *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->n; i++)
		free(set->pats[i].name);
	free(set->pats);
	free(set);
}

int reap_instances_check(const reap_instances_t *set, const char *name, size_t len,
			 reap_errbuf_t *eb)
{
	int err = reap_instance_check(name, len, eb);
	if (err != REAP_OK || set == NULL || set->any)
		return err;
	for (size_t i = 0; i < set->n; i++) {
		const struct pat *p = &set->pats[i];
		if (len == p->len && memcmp(name, p->name, len) == 0)
			return REAP_OK;
		if (p->prefix && len > p->len && memcmp(name, p->name, p->len) == 0 &&
		    (p->len == 0 || name[p->len] == '/'))
			return REAP_OK;
	}
	return reap_errf(eb, REAP_E_INVALID, "unknown instance name '%.*s'",
			 (int)(len > 64 ? 64 : len), name);
}
