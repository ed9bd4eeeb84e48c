/*
 * config.c - the "auth" object of reapd's config file, as an auth_config_t.
 *
 *   "auth": {
 *     "anonymous": "loopback",              none | loopback | any
 *     "anonymous_role": "client",
 *     "keys": ["token.key", {"file": "old.key", "until": "2026-12-31T00:00:00Z"}],
 *     "policy": [{"prefix": "team-a", "shared": false,
 *                 "client": ["cas_read", "cas_write", "ac_read", "execute"],
 *                 "writer": [...], "worker": [...], "admin": ["all"]}],
 *     "certs": [{"subject": "ci.example.com", "role": "writer", "instances": ["ci"]}],
 *     "cert_default_role": "none",
 *     "audit_log": "audit.log"              null or "" = no audit log
 *   }
 *
 * Every key is optional and unknown keys are refused at every level, so a
 * typo never silently weakens the policy. Errors name the file and the key
 * path ("auth.policy[1].client[2]"); jansson keeps no line per value, so
 * there is no line number. Key files are loaded (and their permissions
 * checked) here. The result owns all its memory; the reap_config_t may be
 * freed first.
 */
#include "auth/auth_int.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

typedef struct owned {
	auth_config_t cfg; /* first: auth_config_free casts back */
	auth_key_t keys[AUTH_MAX_KEYS];
	void **allocs; /* everything else this config owns */
	size_t n_allocs, cap_allocs;
} owned_t;

typedef struct ctx {
	owned_t *o;
	const char *file;
	const char *data_dir;
	reap_errbuf_t *eb;
} ctx_t;

#define MAX_RULES 1024
#define MAX_CERTS 1024

static int bad(ctx_t *x, const char *where, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* REAP_E_INVALID with "file: auth.key.path: what". */
static int bad(ctx_t *x, const char *where, const char *fmt, ...)
{
	char what[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return reap_errf(x->eb, REAP_E_INVALID, "%s: %s: %s", x->file, where, what);
}

/* Record p as owned (freed with the config); p on success, NULL on failure. */
static void *own(ctx_t *x, void *p)
{
	owned_t *o = x->o;
	if (p == NULL)
		return NULL;
	if (o->n_allocs == o->cap_allocs) {
		size_t cap = o->cap_allocs ? 2 * o->cap_allocs : 16;
		void **a = realloc(o->allocs, cap * sizeof(*a));
		if (a == NULL) {
			free(p);
			return NULL;
		}
		o->allocs = a;
		o->cap_allocs = cap;
	}
	o->allocs[o->n_allocs++] = p;
	return p;
}

static int nomem(ctx_t *x)
{
	return reap_errf(x->eb, REAP_E_NOMEM, "out of memory reading the auth config");
}

static char *resolve(ctx_t *x, const char *path)
{
	char *s;
	if (path[0] == '/' || x->data_dir == NULL)
		return own(x, strdup(path));
	if (asprintf(&s, "%s/%s", x->data_dir, path) < 0)
		return NULL;
	return own(x, s);
}

static int get_string(ctx_t *x, const char *where, const json_t *v, const char **out)
{
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
		return bad(x, where, "must be a string%s", "");
	*out = json_string_value(v);
	return REAP_OK;
}

static int get_role(ctx_t *x, const char *where, const json_t *v, bool none_ok,
		    auth_role_t *out)
{
	const char *s;
	int err;
	if ((err = get_string(x, where, v, &s)) != REAP_OK)
		return err;
	if (none_ok && strcmp(s, "none") == 0) {
		*out = AUTH_ROLE_NONE;
		return REAP_OK;
	}
	if (auth_role_parse(s, out) != REAP_OK)
		return bad(x, where,
			   none_ok ? "'%s' is not a role (client, worker, writer, admin or none)"
				   : "'%s' is not a role (client, worker, writer or admin)",
			   s);
	return REAP_OK;
}

/* "YYYY-MM-DDTHH:MM:SSZ" to unix seconds. */
static int parse_time(const char *s, int64_t *out)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";
	struct tm tm = {0}, back;
	time_t t;
	int f[6], k = 0, acc = 0;

	if (strlen(s) != sizeof(shape) - 1)
		return REAP_E_INVALID;
	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		if (shape[i] == 'd') {
			if (s[i] < '0' || s[i] > '9')
				return REAP_E_INVALID;
			acc = acc * 10 + (s[i] - '0');
		} else {
			if (s[i] != shape[i])
				return REAP_E_INVALID;
			f[k++] = acc;
			acc = 0;
		}
	}
	tm.tm_year = f[0] - 1900;
	tm.tm_mon = f[1] - 1;
	tm.tm_mday = f[2];
	tm.tm_hour = f[3];
	tm.tm_min = f[4];
	tm.tm_sec = f[5];
	back = tm;
	t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_year != back.tm_year || tm.tm_mon != back.tm_mon ||
	    tm.tm_mday != back.tm_mday || tm.tm_hour != back.tm_hour || tm.tm_min != back.tm_min ||
	    tm.tm_sec != back.tm_sec)
		return REAP_E_INVALID; /* e.g. February 30th */
	*out = (int64_t)t;
	return REAP_OK;
}

static int load_key(ctx_t *x, const char *where, const char *path, auth_key_t *k)
{
	reap_errbuf_t keb = {{0}};
	char *full = resolve(x, path);
	int err;
	if (full == NULL)
		return nomem(x);
	if ((err = auth_key_load_file(full, k, &keb)) != REAP_OK)
		return reap_errf(x->eb, err, "%s: %s: %s", x->file, where, keb.msg);
	return REAP_OK;
}

static int parse_keys(ctx_t *x, const json_t *v)
{
	auth_config_t *c = &x->o->cfg;
	char where[64];
	const json_t *e;
	size_t i;
	bool have_signing = false;
	int err;

	if (!json_is_array(v))
		return bad(x, "auth.keys", "must be an array of key files%s", "");
	if (json_array_size(v) == 0 || json_array_size(v) > AUTH_MAX_KEYS)
		return reap_errf(x->eb, REAP_E_INVALID, "%s: auth.keys: must name 1 to %d key files",
				 x->file, AUTH_MAX_KEYS);
	json_array_foreach(v, i, e) {
		auth_key_t *k = &x->o->keys[i];
		const char *path = NULL, *until = NULL, *name;
		const json_t *f;
		snprintf(where, sizeof(where), "auth.keys[%zu]", i);
		if (json_is_string(e)) {
			if ((err = get_string(x, where, e, &path)) != REAP_OK)
				return err;
		} else if (json_is_object(e)) {
			json_object_foreach((json_t *)e, name, f) {
				char sub[96];
				snprintf(sub, sizeof(sub), "%s.%s", where, name);
				if (strcmp(name, "file") == 0)
					err = get_string(x, sub, f, &path);
				else if (strcmp(name, "until") == 0)
					err = get_string(x, sub, f, &until);
				else
					err = bad(x, where, "unknown key \"%s\" (file, until)", name);
				if (err != REAP_OK)
					return err;
			}
			if (path == NULL)
				return bad(x, where, "needs a \"file\"%s", "");
		} else {
			return bad(x, where, "must be a path or {\"file\": ..., \"until\": ...}%s", "");
		}
		if (path[0] == '\0')
			return bad(x, where, "the key file path is empty%s", "");
		if ((err = load_key(x, where, path, k)) != REAP_OK)
			return err;
		if (until != NULL) {
			snprintf(where + strlen(where), sizeof(where) - strlen(where), ".until");
			if (parse_time(until, &k->not_after) != REAP_OK)
				return bad(x, where,
					   "'%s' is not a UTC time like \"2026-12-31T00:00:00Z\"",
					   until);
			if (k->not_after < (int64_t)time(NULL))
				REAP_WARN("token key past its grace period",
					  "key=auth.keys[%zu] until=%s", i, until);
		} else if (!have_signing) {
			k->signing = true; /* the first plain entry signs new tokens */
			have_signing = true;
		}
	}
	if (!have_signing)
		return bad(x, "auth.keys",
			   "needs one entry without \"until\": the key new tokens are signed with%s",
			   "");
	c->keys = x->o->keys;
	c->n_keys = json_array_size(v);
	return REAP_OK;
}

static int parse_perms(ctx_t *x, const char *where, const json_t *v, unsigned *out)
{
	char sub[160];
	const json_t *e;
	size_t i;
	if (!json_is_array(v))
		return bad(x, where, "must be an array of permissions%s", "");
	*out = 0;
	json_array_foreach(v, i, e) {
		const char *s;
		auth_perm_t perm;
		int err;
		snprintf(sub, sizeof(sub), "%s[%zu]", where, i);
		if ((err = get_string(x, sub, e, &s)) != REAP_OK)
			return err;
		if (auth_perm_parse(s, &perm) != REAP_OK)
			return bad(x, sub,
				   "'%s' is not a permission (cas_read, cas_write, ac_read, ac_write, "
				   "execute, admin, work, all)",
				   s);
		*out |= (unsigned)perm;
	}
	return REAP_OK;
}

static int parse_rule(ctx_t *x, size_t i, const json_t *v, auth_rule_t *r)
{
	char where[64], sub[128];
	const char *name;
	const json_t *f;
	bool have_prefix = false;
	int err = REAP_OK;

	snprintf(where, sizeof(where), "auth.policy[%zu]", i);
	if (!json_is_object(v))
		return bad(x, where, "must be an object with a \"prefix\"%s", "");
	json_object_foreach((json_t *)v, name, f) {
		auth_role_t role;
		snprintf(sub, sizeof(sub), "%s.%s", where, name);
		if (strcmp(name, "prefix") == 0) {
			const char *p;
			reap_errbuf_t peb = {{0}};
			if ((err = get_string(x, sub, f, &p)) != REAP_OK)
				return err;
			if (auth_prefix_check(p, strlen(p), &peb) != REAP_OK)
				return bad(x, sub, "%s", peb.msg);
			if ((r->prefix = own(x, strdup(p))) == NULL)
				return nomem(x);
			have_prefix = true;
		} else if (strcmp(name, "shared") == 0) {
			if (!json_is_boolean(f))
				return bad(x, sub, "must be true or false%s", "");
			r->shared = json_is_true(f);
		} else if (strcmp(name, "loopback_network") == 0) {
			if (!json_is_boolean(f))
				return bad(x, sub, "must be true or false%s", "");
			r->loopback_network = json_is_true(f);
		} else if (auth_role_parse(name, &role) == REAP_OK) {
			err = parse_perms(x, sub, f, &r->perms[role]);
		} else {
			err = bad(x, where,
				  "unknown key \"%s\" (prefix, shared, loopback_network, client, "
				  "worker, writer, admin)",
				  name);
		}
		if (err != REAP_OK)
			return err;
	}
	if (!have_prefix)
		return bad(x, where, "needs a \"prefix\" (\"\" for every instance)%s", "");
	return REAP_OK;
}

static int parse_policy(ctx_t *x, const json_t *v)
{
	auth_rule_t *rules;
	const json_t *e;
	size_t i;
	int err;

	if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > MAX_RULES)
		return bad(x, "auth.policy",
			   "must be an array of 1 to 1024 rules (omit it for the default policy)%s",
			   "");
	if ((rules = own(x, calloc(json_array_size(v), sizeof(*rules)))) == NULL)
		return nomem(x);
	json_array_foreach(v, i, e) {
		if ((err = parse_rule(x, i, e, &rules[i])) != REAP_OK)
			return err;
		for (size_t j = 0; j < i; j++)
			if (strcmp(rules[j].prefix, rules[i].prefix) == 0) {
				char where[64];
				snprintf(where, sizeof(where), "auth.policy[%zu].prefix", i);
				return bad(x, where, "'%s' already has a rule", rules[i].prefix);
			}
	}
	x->o->cfg.rules = rules;
	x->o->cfg.n_rules = json_array_size(v);
	return REAP_OK;
}

static int parse_cert(ctx_t *x, size_t i, const json_t *v, auth_cert_rule_t *c)
{
	char where[64], sub[128];
	const char *name, *s;
	const json_t *f, *e;
	size_t j;
	int err = REAP_OK;

	snprintf(where, sizeof(where), "auth.certs[%zu]", i);
	if (!json_is_object(v))
		return bad(x, where, "must be an object with a \"subject\" and a \"role\"%s", "");
	json_object_foreach((json_t *)v, name, f) {
		snprintf(sub, sizeof(sub), "%s.%s", where, name);
		if (strcmp(name, "subject") == 0) {
			if ((err = get_string(x, sub, f, &s)) != REAP_OK)
				return err;
			if (auth_subject_check(s, strlen(s), NULL) != REAP_OK)
				return bad(x, sub, "'%s' is not 1 to 127 bytes of printable ASCII", s);
			if ((c->subject = own(x, strdup(s))) == NULL)
				return nomem(x);
		} else if (strcmp(name, "role") == 0) {
			err = get_role(x, sub, f, false, &c->role);
		} else if (strcmp(name, "instances") == 0) {
			const char **arr;
			if (!json_is_array(f) || json_array_size(f) == 0 ||
			    json_array_size(f) > AUTH_MAX_PREFIXES)
				return reap_errf(x->eb, REAP_E_INVALID,
						 "%s: %s: must be an array of 1 to %d instance "
						 "prefixes (omit it for all)",
						 x->file, sub, AUTH_MAX_PREFIXES);
			if ((arr = own(x, calloc(json_array_size(f), sizeof(*arr)))) == NULL)
				return nomem(x);
			json_array_foreach(f, j, e) {
				char isub[160];
				reap_errbuf_t peb = {{0}};
				snprintf(isub, sizeof(isub), "%s[%zu]", sub, j);
				if ((err = get_string(x, isub, e, &s)) != REAP_OK)
					return err;
				if (auth_prefix_check(s, strlen(s), &peb) != REAP_OK)
					return bad(x, isub, "%s", peb.msg);
				if ((arr[j] = own(x, strdup(s))) == NULL)
					return nomem(x);
			}
			c->instances = arr;
			c->n_instances = json_array_size(f);
		} else {
			err = bad(x, where, "unknown key \"%s\" (subject, role, instances)", name);
		}
		if (err != REAP_OK)
			return err;
	}
	if (c->subject == NULL || c->role == AUTH_ROLE_NONE)
		return bad(x, where, "needs a \"subject\" and a \"role\"%s", "");
	return REAP_OK;
}

static int parse_certs(ctx_t *x, const json_t *v)
{
	auth_cert_rule_t *certs;
	const json_t *e;
	size_t i;
	int err;

	if (!json_is_array(v) || json_array_size(v) > MAX_CERTS)
		return bad(x, "auth.certs", "must be an array of at most 1024 subjects%s", "");
	if (json_array_size(v) == 0)
		return REAP_OK;
	if ((certs = own(x, calloc(json_array_size(v), sizeof(*certs)))) == NULL)
		return nomem(x);
	json_array_foreach(v, i, e) {
		if ((err = parse_cert(x, i, e, &certs[i])) != REAP_OK)
			return err;
		for (size_t j = 0; j < i; j++)
			if (strcmp(certs[j].subject, certs[i].subject) == 0) {
				char where[64];
				snprintf(where, sizeof(where), "auth.certs[%zu].subject", i);
				return bad(x, where, "'%s' is listed twice", certs[i].subject);
			}
	}
	x->o->cfg.certs = certs;
	x->o->cfg.n_certs = json_array_size(v);
	return REAP_OK;
}

static int parse_auth(ctx_t *x, const json_t *a)
{
	auth_config_t *c = &x->o->cfg;
	const char *key, *s;
	const json_t *v;
	int err = REAP_OK;

	if (!json_is_object(a))
		return bad(x, "auth", "must be an object%s", "");
	json_object_foreach((json_t *)a, key, v) {
		char where[96];
		snprintf(where, sizeof(where), "auth.%s", key);
		if (strcmp(key, "anonymous") == 0) {
			if ((err = get_string(x, where, v, &s)) != REAP_OK)
				return err;
			if (strcmp(s, "none") == 0)
				c->anonymous = AUTH_ANON_NONE;
			else if (strcmp(s, "loopback") == 0)
				c->anonymous = AUTH_ANON_LOOPBACK;
			else if (strcmp(s, "any") == 0)
				c->anonymous = AUTH_ANON_ANY;
			else
				return bad(x, where, "'%s' is not none, loopback or any", s);
		} else if (strcmp(key, "anonymous_role") == 0) {
			err = get_role(x, where, v, false, &c->anonymous_role);
		} else if (strcmp(key, "keys") == 0) {
			err = parse_keys(x, v);
		} else if (strcmp(key, "policy") == 0) {
			err = parse_policy(x, v);
		} else if (strcmp(key, "certs") == 0) {
			err = parse_certs(x, v);
		} else if (strcmp(key, "cert_default_role") == 0) {
			err = get_role(x, where, v, true, &c->cert_default_role);
		} else if (strcmp(key, "audit_log") == 0) {
			if (json_is_null(v)) {
				c->audit_path = NULL;
				continue;
			}
			if ((err = get_string(x, where, v, &s)) != REAP_OK)
				return err;
			if (s[0] == '\0')
				c->audit_path = NULL;
			else if ((c->audit_path = resolve(x, s)) == NULL)
				return nomem(x);
		} else {
			err = bad(x, "auth",
				  "unknown key \"%s\" (anonymous, anonymous_role, keys, policy, "
				  "certs, cert_default_role, audit_log)",
				  key);
		}
		if (err != REAP_OK)
			return err;
	}
	return REAP_OK;
}

int auth_config_load(reap_config_t *c, const char *data_dir, auth_config_t **out,
		     reap_errbuf_t *eb)
{
	owned_t *o = calloc(1, sizeof(*o));
	ctx_t x = {.o = o, .data_dir = data_dir, .eb = eb};
	const json_t *a;
	int err = REAP_OK;

	*out = NULL;
	if (o == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory reading the auth config");
	o->cfg.anonymous = AUTH_ANON_LOOPBACK;
	o->cfg.cert_default_role = AUTH_ROLE_NONE;
	if ((o->cfg.audit_path = resolve(&x, "audit.log")) == NULL) {
		err = nomem(&x);
		goto out;
	}
	if (c != NULL && (a = reap_config_json(c, "auth")) != NULL) {
		x.file = reap_config_path(c);
		err = parse_auth(&x, a);
	}
out:
	if (err != REAP_OK) {
		auth_config_free(&o->cfg);
		return err;
	}
	*out = &o->cfg;
	return REAP_OK;
}

void auth_config_free(auth_config_t *cfg)
{
	owned_t *o = (owned_t *)cfg;
	if (o == NULL)
		return;
	for (size_t i = 0; i < o->n_allocs; i++)
		free(o->allocs[i]);
	free(o->allocs);
	OPENSSL_cleanse(o->keys, sizeof(o->keys));
	free(o);
}
