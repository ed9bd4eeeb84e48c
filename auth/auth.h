/*
 * auth.h - who is calling, and what they may do.
 *
 * This is the single authorization choke point every RPC goes through
 * before doing work. A caller is identified afresh on every call, from (in
 * this order) a bearer token (JWT, HS256, signed with one of the server's
 * keys), a verified mTLS client certificate, or, where the config allows
 * it, as anonymous. No decision is cached: one caller's success can never
 * let another caller in.
 *
 * The policy maps instance-name prefixes to the permissions each role has
 * there; the longest matching prefix decides. An identity also carries the
 * instance prefixes it may use at all (a token's "instances" claim), and
 * both must allow a request.
 *
 * Tenant-scoped reads: a blob is readable in an instance only after it was
 * uploaded to, or produced in, that instance, or in a parent prefix the
 * policy marks as shared. auth_read_scopes() names those scopes; the CAS
 * keeps the records.
 *
 * Every AC write, execution and refused request is written to an
 * append-only audit log (JSON lines) with auth_audit().
 */
#ifndef REAP_AUTH_AUTH_H
#define REAP_AUTH_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "common/instance.h"

typedef enum {
	AUTH_CAS_READ = 1 << 0,
	AUTH_CAS_WRITE = 1 << 1,
	AUTH_AC_READ = 1 << 2,
	AUTH_AC_WRITE = 1 << 3,
	AUTH_EXECUTE = 1 << 4,
	AUTH_ADMIN = 1 << 5,
	AUTH_WORK = 1 << 6, /* take leases from the WorkerQueue */
	AUTH_PERM_ALL = (1 << 7) - 1,
} auth_perm_t;

typedef enum {
	AUTH_ROLE_NONE = 0, /* no role: may do nothing */
	AUTH_ROLE_CLIENT = 1,
	AUTH_ROLE_WORKER = 2,
	AUTH_ROLE_WRITER = 3, /* trusted cache writer, e.g. CI */
	AUTH_ROLE_ADMIN = 4,
	AUTH_ROLE_COUNT = 5,
} auth_role_t;

/** How a caller proved who it is. */
typedef enum {
	AUTH_VIA_ANONYMOUS = 0,
	AUTH_VIA_TOKEN = 1,
	AUTH_VIA_CERT = 2,
} auth_via_t;

/** Where anonymous callers are accepted. */
typedef enum {
	AUTH_ANON_NONE = 0,     /* nowhere: every caller needs a credential */
	AUTH_ANON_LOOPBACK = 1, /* from 127.0.0.0/8, ::1 and unix sockets only (default) */
	AUTH_ANON_ANY = 2,      /* from anywhere (tests, closed networks) */
} auth_anonymous_t;

#define AUTH_MAX_PREFIXES 8
#define AUTH_SUBJECT_MAX 128
#define AUTH_KEY_BYTES 32 /* HS256 key size reap generates */
#define AUTH_MAX_KEYS 8
#define AUTH_TOKEN_MAX 8192 /* longest bearer token accepted, in bytes */

/** One HS256 key. */
typedef struct auth_key {
	unsigned char secret[64];
	size_t len;
	int64_t not_after; /* unix s after which it no longer verifies; 0 = current */
	bool signing;      /* the key new tokens are signed with */
} auth_key_t;

/** One policy rule: what each role may do in instances under prefix. */
typedef struct auth_rule {
	const char *prefix;              /* instance-name prefix, "" = all */
	unsigned perms[AUTH_ROLE_COUNT]; /* auth_perm_t bits, indexed by auth_role_t */
	bool shared; /* blobs in exactly this prefix are readable by instances under it */
	bool loopback_network; /* actions here may ask for loopback-only networking */
} auth_rule_t;

/** The identity a verified client certificate subject maps to. */
typedef struct auth_cert_rule {
	const char *subject; /* the certificate's SAN or CN, exactly */
	auth_role_t role;
	const char *const *instances; /* prefixes; n_instances == 0 = all */
	size_t n_instances;
} auth_cert_rule_t;

typedef struct auth_config {
	auth_anonymous_t anonymous;
	auth_role_t anonymous_role; /* role of anonymous callers; NONE = client */
	const auth_key_t *keys;     /* token keys (copied); none = tokens refused */
	size_t n_keys;
	const auth_rule_t *rules; /* NULL = the default policy (see auth.c) */
	size_t n_rules;
	const auth_cert_rule_t *certs; /* verified cert subjects with a role */
	size_t n_certs;
	auth_role_t cert_default_role; /* for a verified cert not listed; NONE = refuse */
	const char *audit_path;        /* JSON-lines audit log; NULL = none */
} auth_config_t;

typedef struct auth_policy auth_policy_t;

/** The caller of one RPC; caller-owned, lives for that call only. */
typedef struct auth_identity {
	auth_role_t role;
	auth_via_t via;
	char subject[AUTH_SUBJECT_MAX]; /* token sub, cert subject, or "anonymous" */
	char peer[96];                  /* transport peer, for logs and audit */
	size_t n_prefixes;              /* instance prefixes it may use */
	char prefixes[AUTH_MAX_PREFIXES][REAP_INSTANCE_MAX + 1];
	int64_t expires; /* unix s; 0 = never (anonymous, certificates) */
} auth_identity_t;

/** The transport facts of one call. */
typedef struct auth_peer {
	const char *addr;         /* gRPC peer string, e.g. "ipv4:127.0.0.1:5000" */
	const char *cert_subject; /* verified client certificate identity, or NULL */
} auth_peer_t;

/** New policy from cfg (copied; NULL = defaults). NULL with eb on failure. */
auth_policy_t *auth_policy_new(const auth_config_t *cfg, reap_errbuf_t *eb);
void auth_policy_free(auth_policy_t *p);

/**
 * Identify the caller of one call. An "authorization" value (may be NULL)
 * must be "Bearer <JWT>" that verifies, else REAP_E_UNAUTHENTICATED; a
 * verified certificate comes next; anonymous only where allowed.
 */
int auth_identify(const auth_policy_t *p, const auth_peer_t *peer, const char *authorization,
		  size_t authorization_len, auth_identity_t *out, reap_errbuf_t *eb);

/** 0 when id may do perm in instance; REAP_E_PERM with the reason otherwise. */
int auth_check(const auth_policy_t *p, const auth_identity_t *id, const char *instance,
	       auth_perm_t perm, reap_errbuf_t *eb);

/** Whether id's instance prefixes cover instance (path-segment prefixes). */
bool auth_identity_allows(const auth_identity_t *id, const char *instance);

/** May actions of instance ask for loopback-only networking (reap-network=loopback)? */
bool auth_loopback_network(const auth_policy_t *p, const char *instance);

/**
 * The scopes whose blobs are readable in instance: instance itself first,
 * then each shared policy prefix above it. Fills up to max pointers (into
 * instance or the policy); returns how many.
 */
size_t auth_read_scopes(const auth_policy_t *p, const char *instance, const char **out,
			size_t max);

/* ---- audit ---- */

typedef struct auth_audit_event {
	const auth_identity_t *id; /* may be NULL (caller not identified) */
	const char *peer;          /* used when id is NULL */
	const char *instance;
	const char *rpc;     /* e.g. "ActionCache/UpdateActionResult" */
	const char *action;  /* "hash/size" or NULL */
	const char *outcome; /* "ok", "refused", "failed", ... */
	const char *detail;  /* free text or NULL */
} auth_audit_event_t;

/** Append one JSON line to the audit log (no-op without one). Thread-safe. */
void auth_audit(const auth_policy_t *p, const auth_audit_event_t *ev);

/** Reopen the audit log (after rotation, e.g. on SIGHUP). */
int auth_audit_reopen(auth_policy_t *p, reap_errbuf_t *eb);

/** How many audit lines could not be written since start (for metrics). */
uint64_t auth_audit_failures(const auth_policy_t *p);

/* ---- keys and tokens (reapd start-up and the `reap auth` CLI) ---- */

typedef struct auth_claims {
	char subject[AUTH_SUBJECT_MAX];
	auth_role_t role;
	size_t n_instances;
	char instances[AUTH_MAX_PREFIXES][REAP_INSTANCE_MAX + 1];
	int64_t issued_at; /* unix s */
	int64_t expires;   /* unix s; required when verifying */
} auth_claims_t;

/** Write a new random key (AUTH_KEY_BYTES from the OS) to path, mode 0600, never overwriting. */
int auth_key_generate_file(const char *path, reap_errbuf_t *eb);

/** Load a key file; refuses one readable by group or others. */
int auth_key_load_file(const char *path, auth_key_t *out, reap_errbuf_t *eb);

/** A signed HS256 token for c (malloc'd into *out). */
int auth_token_issue(const auth_key_t *key, const auth_claims_t *c, char **out,
		     reap_errbuf_t *eb);

/**
 * Verify token against keys at time now (alg must be HS256, signature
 * valid with a key not past not_after, exp present and in the future).
 * REAP_E_UNAUTHENTICATED with the reason otherwise.
 */
int auth_token_verify(const auth_key_t *keys, size_t n_keys, const char *token, size_t len,
		      int64_t now, auth_claims_t *out, reap_errbuf_t *eb);

/** Decode claims without verifying (for inspection only; never for decisions). */
int auth_token_decode_unverified(const char *token, auth_claims_t *out, reap_errbuf_t *eb);

const char *auth_role_name(auth_role_t r);
int auth_role_parse(const char *s, auth_role_t *out);
int auth_perm_parse(const char *s, auth_perm_t *out);

/**
 * Build an auth_config_t from the "auth" object of a reapd config file
 * (c may be NULL: defaults). Relative paths resolve against data_dir.
 * Free with auth_config_free.
 */
int auth_config_load(reap_config_t *c, const char *data_dir, auth_config_t **out,
		     reap_errbuf_t *eb);
void auth_config_free(auth_config_t *cfg);

#endif
