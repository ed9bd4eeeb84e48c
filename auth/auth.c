/*
 * auth.c - the interim policy: anonymous callers may read and write the CAS
 * and read the ActionCache; writing the ActionCache needs the configured
 * ac_writers setting. Identity-and-trust replaces this with real identities.
 */
#include "auth/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct auth_policy {
	auth_config_t cfg;
};

auth_policy_t *auth_policy_new(const auth_config_t *cfg)
{
	auth_policy_t *p = calloc(1, sizeof(*p));
	if (p != NULL && cfg != NULL)
		p->cfg = *cfg;
	return p;
}

void auth_policy_free(auth_policy_t *p)
{
	free(p);
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
	(void)p;
	(void)authorization;
	(void)authorization_len;
	memset(out, 0, sizeof(*out));
	out->role = AUTH_ROLE_ANONYMOUS;
	snprintf(out->subject, sizeof(out->subject), "anonymous@%s",
		 peer != NULL ? peer : "unknown");
	return REAP_OK;
}

int auth_check(const auth_policy_t *p, const auth_identity_t *id, const char *instance,
	       auth_perm_t perm, reap_errbuf_t *eb)
{
	if (perm == AUTH_AC_WRITE && p->cfg.ac_writers != AUTH_AC_WRITERS_ANONYMOUS)
		return reap_errf(eb, REAP_E_PERM,
				 "%s may not write the ActionCache of instance '%s'",
				 id->subject, instance);
	if (perm == AUTH_ADMIN)
		return reap_errf(eb, REAP_E_PERM, "%s is not an admin", id->subject);
	return REAP_OK;
}
