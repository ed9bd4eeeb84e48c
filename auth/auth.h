/*
 * auth.h - who is calling, and what they may do.
 *
 * This is the single authorization choke point every RPC goes through
 * before doing work. For now a caller is anonymous, or a worker when it
 * presents the workers' shared secret, and the policy is one setting naming
 * who may write the ActionCache; the identity-and-trust work
 * (mTLS, JWT, per-tenant policy) replaces the inside of this module without
 * changing how services call it.
 *
 * No decision is cached: every call identifies its caller afresh.
 */
#ifndef REAP_AUTH_AUTH_H
#define REAP_AUTH_AUTH_H

#include <stddef.h>

#include "common/err.h"

typedef enum {
	AUTH_CAS_READ = 1 << 0,
	AUTH_CAS_WRITE = 1 << 1,
	AUTH_AC_READ = 1 << 2,
	AUTH_AC_WRITE = 1 << 3,
	AUTH_EXECUTE = 1 << 4,
	AUTH_ADMIN = 1 << 5,
	AUTH_WORK = 1 << 6, /* take leases from the WorkerQueue */
} auth_perm_t;

typedef enum {
	AUTH_ROLE_ANONYMOUS = 0,
	AUTH_ROLE_CLIENT = 1,
	AUTH_ROLE_WORKER = 2,
	AUTH_ROLE_WRITER = 3, /* trusted cache writer, e.g. CI */
	AUTH_ROLE_ADMIN = 4,
} auth_role_t;

/** Who may write the ActionCache, until real identities exist. */
typedef enum {
	AUTH_AC_WRITERS_NONE = 0,      /* nobody (default) */
	AUTH_AC_WRITERS_ANONYMOUS = 1, /* everyone: tests and single-user setups */
} auth_ac_writers_t;

typedef struct auth_config {
	auth_ac_writers_t ac_writers;
	/*
	 * The workers' shared secret: a caller presenting "Bearer <token>" is a
	 * worker. Interim, until per-worker identities; NULL = no workers.
	 */
	const char *worker_token;
} auth_config_t;

/** A new random worker token (64 hex chars + NUL) from the OS random source. */
int auth_token_generate(char out[65]);

typedef struct auth_policy auth_policy_t;

/** The caller of one RPC; caller-owned, lives for that call only. */
typedef struct auth_identity {
	auth_role_t role;
	char subject[128]; /* for logs and audit */
} auth_identity_t;

/** New policy from cfg; NULL on allocation failure. */
auth_policy_t *auth_policy_new(const auth_config_t *cfg);
void auth_policy_free(auth_policy_t *p);

/** Parse "none" or "anonymous"; REAP_E_INVALID otherwise. */
int auth_ac_writers_parse(const char *s, auth_ac_writers_t *out);

/**
 * Identify the caller of one call from its peer address and its
 * "authorization" metadata value (may be NULL). Returns 0 or
 * REAP_E_UNAUTHENTICATED.
 */
int auth_identify(const auth_policy_t *p, const char *peer, const char *authorization,
		  size_t authorization_len, auth_identity_t *out, reap_errbuf_t *eb);

/**
 * 0 when id may do perm in instance; REAP_E_PERM with the reason otherwise.
 */
int auth_check(const auth_policy_t *p, const auth_identity_t *id, const char *instance,
	       auth_perm_t perm, reap_errbuf_t *eb);

#endif
