/*
 * auth.c - the interim policy: anonymous callers may read and write the CAS,
 * read the ActionCache and execute; writing the ActionCache needs the
 * configured ac_writers setting; taking leases needs the workers' secret.
 * An authorization header that is not that secret is refused outright
 * rather than treated as anonymous. Identity-and-trust replaces this with
 * real identities.
 */
#include "auth/auth.h"

#include <stdbool.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct auth_policy {
	auth_config_t cfg;
	char *worker_token; /* owned copy, wiped on free */
};

auth_policy_t *auth_policy_new(const auth_config_t *cfg)
{
	auth_policy_t *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	if (cfg != NULL)
		p->cfg = *cfg;
	p->cfg.worker_token = NULL;
	if (cfg != NULL && cfg->worker_token != NULL && cfg->worker_token[0] != '\0' &&
	    (p->worker_token = strdup(cfg->worker_token)) == NULL) {
		free(p);
		return NULL;
	}
	return p;
}

void auth_policy_free(auth_policy_t *p)
{
	if (p == NULL)
		return;
	if (p->worker_token != NULL) {
		OPENSSL_cleanse(p->worker_token, strlen(p->worker_token));
		free(p->worker_token);
	}
	free(p);
}

int auth_token_generate(char out[65])
{
	unsigned char raw[32];
	static const char hex[] = "0123456789abcdef";
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return REAP_E_INTERNAL;
	for (size_t i = 0; i < sizeof(raw); i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[64] = '\0';
	OPENSSL_cleanse(raw, sizeof(raw));
	return REAP_OK;
}

/* Does the authorization value present the worker secret? Constant time in its content. */
static bool is_worker(const auth_policy_t *p, const char *authz, size_t len)
{
	static const char prefix[] = "Bearer ";
	size_t plen = sizeof(prefix) - 1, tlen;
	if (p->worker_token == NULL || authz == NULL || len <= plen ||
	    strncmp(authz, prefix, plen) != 0)
		return false;
	tlen = strlen(p->worker_token);
	return len - plen == tlen && CRYPTO_memcmp(authz + plen, p->worker_token, tlen) == 0;
}

int auth_ac_writers_parse(const char *s, auth_ac_writers_t *out)
{
	if (strcmp(s, "none") == 0)
		*out = AUTH_AC_WRITERS_NONE;
	else if (strcmp(s, "anonymous") == 0)
		*out = AUTH_AC_WRITERS_ANONYMOUS;
	else
		return REAP_E_INVALID;
	return REAP_OK;
}

int auth_identify(const auth_policy_t *p, const char *peer, const char *authorization,
		  size_t authorization_len, auth_identity_t *out, reap_errbuf_t *eb)
{
	memset(out, 0, sizeof(*out));
	if (is_worker(p, authorization, authorization_len)) {
		out->role = AUTH_ROLE_WORKER;
		snprintf(out->subject, sizeof(out->subject), "worker@%s",
			 peer != NULL ? peer : "unknown");
		return REAP_OK;
	}
	if (authorization != NULL && authorization_len > 0)
		return reap_errf(eb, REAP_E_UNAUTHENTICATED,
				 "the authorization header is not a credential this server knows");
	out->role = AUTH_ROLE_ANONYMOUS;
	snprintf(out->subject, sizeof(out->subject), "anonymous@%s",
		 peer != NULL ? peer : "unknown");
	return REAP_OK;
}

int auth_check(const auth_policy_t *p, const auth_identity_t *id, const char *instance,
	       auth_perm_t perm, reap_errbuf_t *eb)
{
	if (perm == AUTH_WORK && id->role != AUTH_ROLE_WORKER)
		return reap_errf(eb, REAP_E_PERM, "%s is not a worker", id->subject);
	if (perm == AUTH_AC_WRITE && p->cfg.ac_writers != AUTH_AC_WRITERS_ANONYMOUS)
		return reap_errf(eb, REAP_E_PERM,
				 "%s may not write the ActionCache of instance '%s'",
				 id->subject, instance);
	if (perm == AUTH_ADMIN)
		return reap_errf(eb, REAP_E_PERM, "%s is not an admin", id->subject);
	return REAP_OK;
}
