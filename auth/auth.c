/*
 * auth.c - the policy core: identify a caller, check a permission against
 * the longest matching policy rule and the identity's own instance
 * prefixes, and name the scopes whose blobs an instance may read.
 *
 * Tokens (token.c), keys, the config loader (config.c) and the audit log
 * (audit.c) live beside it; the policy struct is shared through auth_int.h.
 */
#include "auth/auth_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

/* The default policy: one rule for every instance. */
static const unsigned default_perms[AUTH_ROLE_COUNT] = {
	[AUTH_ROLE_NONE] = 0,
	[AUTH_ROLE_CLIENT] = AUTH_CAS_READ | AUTH_CAS_WRITE | AUTH_AC_READ | AUTH_EXECUTE,
	[AUTH_ROLE_WORKER] = AUTH_CAS_READ | AUTH_CAS_WRITE | AUTH_AC_READ | AUTH_WORK,
	[AUTH_ROLE_WRITER] =
		AUTH_CAS_READ | AUTH_CAS_WRITE | AUTH_AC_READ | AUTH_AC_WRITE | AUTH_EXECUTE,
	[AUTH_ROLE_ADMIN] = AUTH_PERM_ALL,
};

static char *dup_or_empty(const char *s)
{
	return strdup(s != NULL ? s : "");
}

auth_policy_t *auth_policy_new(const auth_config_t *cfg, reap_errbuf_t *eb)
{
	static const auth_config_t defaults = {.anonymous = AUTH_ANON_LOOPBACK};
	auth_policy_t *p = calloc(1, sizeof(*p));
	size_t n_rules;

	if (cfg == NULL)
		cfg = &defaults;
	if (p == NULL)
		goto nomem;
	p->anonymous = cfg->anonymous;
	p->anonymous_role =
		cfg->anonymous_role == AUTH_ROLE_NONE ? AUTH_ROLE_CLIENT : cfg->anonymous_role;
	p->cert_default_role = cfg->cert_default_role;
	if (cfg->n_keys > AUTH_MAX_KEYS) {
		reap_errf(eb, REAP_E_INVALID, "at most %d token keys", AUTH_MAX_KEYS);
		goto fail;
	}
	if (cfg->n_keys > 0) /* keys may be NULL with none: memcpy(NULL) is undefined */
		memcpy(p->keys, cfg->keys, cfg->n_keys * sizeof(auth_key_t));
	p->n_keys = cfg->n_keys;

	n_rules = cfg->rules != NULL ? cfg->n_rules : 1;
	if ((p->rules = calloc(n_rules, sizeof(*p->rules))) == NULL)
		goto nomem;
	p->n_rules = n_rules;
	for (size_t i = 0; i < n_rules; i++) {
		auth_rule_t *r = &p->rules[i];
		if (cfg->rules != NULL) {
			*r = cfg->rules[i];
		} else {
			r->prefix = "";
			memcpy(r->perms, default_perms, sizeof(r->perms));
		}
		if ((r->prefix = dup_or_empty(r->prefix)) == NULL)
			goto nomem;
	}
	if (cfg->n_certs > 0) {
		if ((p->certs = calloc(cfg->n_certs, sizeof(*p->certs))) == NULL)
			goto nomem;
		p->n_certs = cfg->n_certs;
		for (size_t i = 0; i < cfg->n_certs; i++) {
			auth_cert_entry_t *c = &p->certs[i];
			const auth_cert_rule_t *src = &cfg->certs[i];
			if (src->n_instances > AUTH_MAX_PREFIXES) {
				reap_errf(eb, REAP_E_INVALID,
					  "certificate subject '%s': at most %d instance prefixes",
					  src->subject, AUTH_MAX_PREFIXES);
				goto fail;
			}
			snprintf(c->subject, sizeof(c->subject), "%s", src->subject);
			c->role = src->role;
			c->n_prefixes = src->n_instances == 0 ? 1 : src->n_instances;
			for (size_t j = 0; j < src->n_instances; j++)
				snprintf(c->prefixes[j], sizeof(c->prefixes[j]), "%s",
					 src->instances[j]);
		}
	}
	if (auth_audit_open(p, cfg->audit_path, eb) != REAP_OK)
		goto fail;
	return p;
nomem:
	reap_errf(eb, REAP_E_NOMEM, "out of memory building the auth policy");
fail:
	auth_policy_free(p);
	return NULL;
}

void auth_policy_free(auth_policy_t *p)
{
	if (p == NULL)
		return;
	auth_audit_close(p);
	for (size_t i = 0; i < p->n_rules; i++)
		free((char *)p->rules[i].prefix);
	free(p->rules);
	free(p->certs);
	OPENSSL_cleanse(p->keys, sizeof(p->keys));
	free(p);
}

/*
 * Is the gRPC peer string a loopback address or a unix socket? gRPC since
 * 1.47 percent-encodes the brackets of IPv6 peers ("ipv6:%5B::1%5D:5000");
 * older releases wrote them plainly. Both are accepted, nothing looser.
 */
static bool peer_is_loopback(const char *addr)
{
	static const char *const prefixes[] = {
		"unix:",          "ipv4:127.",           "ipv6:[::1]:",
		"ipv6:%5B::1%5D:", "ipv6:[::ffff:127.", "ipv6:%5B::ffff:127.",
	};
	if (addr == NULL)
		return false;
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(addr, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

static void set_all_prefixes(auth_identity_t *id)
{
	id->n_prefixes = 1;
	id->prefixes[0][0] = '\0';
}

int auth_identify(const auth_policy_t *p, const auth_peer_t *peer, const char *authorization,
		  size_t authorization_len, auth_identity_t *out, reap_errbuf_t *eb)
{
	static const char bearer[] = "Bearer ";
	const size_t blen = sizeof(bearer) - 1;
	const char *addr = peer != NULL ? peer->addr : NULL;

	memset(out, 0, sizeof(*out));
	snprintf(out->peer, sizeof(out->peer), "%s", addr != NULL ? addr : "unknown");

	if (authorization != NULL && authorization_len > 0) {
		auth_claims_t c;
		int err;
		if (authorization_len <= blen || strncasecmp(authorization, bearer, blen) != 0)
			return reap_errf(eb, REAP_E_UNAUTHENTICATED,
					 "the authorization header is not \"Bearer <token>\"");
		err = auth_token_verify(p->keys, p->n_keys, authorization + blen,
					authorization_len - blen, (int64_t)time(NULL), &c, eb);
		if (err != REAP_OK)
			return err;
		out->via = AUTH_VIA_TOKEN;
		out->role = c.role;
		out->expires = c.expires;
		memcpy(out->subject, c.subject, sizeof(out->subject));
		out->n_prefixes = c.n_instances;
		memcpy(out->prefixes, c.instances, sizeof(out->prefixes));
		return REAP_OK;
	}
	if (peer != NULL && peer->cert_subject != NULL) {
		out->via = AUTH_VIA_CERT;
		snprintf(out->subject, sizeof(out->subject), "%s", peer->cert_subject);
		for (size_t i = 0; i < p->n_certs; i++) {
			const auth_cert_entry_t *c = &p->certs[i];
			if (strcmp(c->subject, peer->cert_subject) != 0)
				continue;
			out->role = c->role;
			out->n_prefixes = c->n_prefixes;
			memcpy(out->prefixes, c->prefixes, sizeof(out->prefixes));
			return REAP_OK;
		}
		if (p->cert_default_role == AUTH_ROLE_NONE)
			return reap_errf(eb, REAP_E_UNAUTHENTICATED,
					 "certificate subject '%s' has no role here",
					 peer->cert_subject);
		out->role = p->cert_default_role;
		set_all_prefixes(out);
		return REAP_OK;
	}
	if (p->anonymous == AUTH_ANON_ANY ||
	    (p->anonymous == AUTH_ANON_LOOPBACK && peer_is_loopback(addr))) {
		out->via = AUTH_VIA_ANONYMOUS;
		out->role = p->anonymous_role;
		snprintf(out->subject, sizeof(out->subject), "anonymous");
		set_all_prefixes(out);
		return REAP_OK;
	}
	return reap_errf(eb, REAP_E_UNAUTHENTICATED, "this server needs a credential from %s",
			 addr != NULL ? addr : "this peer");
}

/* Is prefix a path-segment prefix of name ("" covers all; "a" covers "a", "a/b", not "ab")? */
static bool prefix_covers(const char *prefix, const char *name)
{
	size_t n = strlen(prefix);
	if (n == 0)
		return true;
	if (strncmp(prefix, name, n) != 0)
		return false;
	return name[n] == '\0' || name[n] == '/' || prefix[n - 1] == '/';
}

bool auth_identity_allows(const auth_identity_t *id, const char *instance)
{
	for (size_t i = 0; i < id->n_prefixes && i < AUTH_MAX_PREFIXES; i++)
		if (prefix_covers(id->prefixes[i], instance))
			return true;
	return false;
}

/* The rule with the longest prefix covering instance, or NULL. */
static const auth_rule_t *rule_for(const auth_policy_t *p, const char *instance)
{
	const auth_rule_t *best = NULL;
	for (size_t i = 0; i < p->n_rules; i++) {
		const auth_rule_t *r = &p->rules[i];
		if (prefix_covers(r->prefix, instance) &&
		    (best == NULL || strlen(r->prefix) > strlen(best->prefix)))
			best = r;
	}
	return best;
}

static const char *perm_name(auth_perm_t perm)
{
	switch (perm) {
	case AUTH_CAS_READ:
		return "read the CAS";
	case AUTH_CAS_WRITE:
		return "write the CAS";
	case AUTH_AC_READ:
		return "read the ActionCache";
	case AUTH_AC_WRITE:
		return "write the ActionCache";
	case AUTH_EXECUTE:
		return "execute";
	case AUTH_ADMIN:
		return "administer";
	case AUTH_WORK:
		return "take work";
	case AUTH_PERM_ALL:
	default:
		return "do that";
	}
}

int auth_check(const auth_policy_t *p, const auth_identity_t *id, const char *instance,
	       auth_perm_t perm, reap_errbuf_t *eb)
{
	const auth_rule_t *r;
	if (id->role <= AUTH_ROLE_NONE || id->role >= AUTH_ROLE_COUNT)
		return reap_errf(eb, REAP_E_PERM, "%s has no role", id->subject);
	if (!auth_identity_allows(id, instance))
		return reap_errf(eb, REAP_E_PERM, "%s may not use instance '%s'", id->subject,
				 instance);
	r = rule_for(p, instance);
	if (r == NULL || (r->perms[id->role] & (unsigned)perm) != (unsigned)perm)
		return reap_errf(eb, REAP_E_PERM, "%s (%s) may not %s in instance '%s'",
				 id->subject, auth_role_name(id->role), perm_name(perm), instance);
	return REAP_OK;
}

bool auth_loopback_network(const auth_policy_t *p, const char *instance)
{
	const auth_rule_t *r = rule_for(p, instance);
	return r != NULL && r->loopback_network;
}

size_t auth_read_scopes(const auth_policy_t *p, const char *instance, const char **out,
			size_t max)
{
	size_t n = 0;
	if (max == 0)
		return 0;
	out[n++] = instance;
	for (size_t i = 0; i < p->n_rules && n < max; i++) {
		const auth_rule_t *r = &p->rules[i];
		if (r->shared && strcmp(r->prefix, instance) != 0 &&
		    prefix_covers(r->prefix, instance))
			out[n++] = r->prefix;
	}
	return n;
}

const char *auth_role_name(auth_role_t r)
{
	switch (r) {
	case AUTH_ROLE_CLIENT:
		return "client";
	case AUTH_ROLE_WORKER:
		return "worker";
	case AUTH_ROLE_WRITER:
		return "writer";
	case AUTH_ROLE_ADMIN:
		return "admin";
	case AUTH_ROLE_NONE:
	case AUTH_ROLE_COUNT:
	default:
		return "none";
	}
}

int auth_role_parse(const char *s, auth_role_t *out)
{
	for (int r = AUTH_ROLE_CLIENT; r < AUTH_ROLE_COUNT; r++)
		if (strcmp(s, auth_role_name((auth_role_t)r)) == 0) {
			*out = (auth_role_t)r;
			return REAP_OK;
		}
	return REAP_E_INVALID;
}

int auth_perm_parse(const char *s, auth_perm_t *out)
{
	static const struct {
		const char *name;
		auth_perm_t perm;
	} names[] = {
		{"cas_read", AUTH_CAS_READ}, {"cas_write", AUTH_CAS_WRITE},
		{"ac_read", AUTH_AC_READ},   {"ac_write", AUTH_AC_WRITE},
		{"execute", AUTH_EXECUTE},   {"admin", AUTH_ADMIN},
		{"work", AUTH_WORK},         {"all", AUTH_PERM_ALL},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i].name) == 0) {
			*out = names[i].perm;
			return REAP_OK;
		}
	return REAP_E_INVALID;
}
