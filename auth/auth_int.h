/*
 * auth_int.h - the policy's layout, shared by auth.c (policy core),
 * token.c (keys and JWTs), audit.c (the audit log) and config.c.
 */
#ifndef REAP_AUTH_AUTH_INT_H
#define REAP_AUTH_AUTH_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "auth/auth.h"

typedef struct auth_cert_entry {
	char subject[AUTH_SUBJECT_MAX];
	auth_role_t role;
	size_t n_prefixes;
	char prefixes[AUTH_MAX_PREFIXES][REAP_INSTANCE_MAX + 1];
} auth_cert_entry_t;

struct auth_policy {
	auth_anonymous_t anonymous;
	auth_role_t anonymous_role;
	auth_role_t cert_default_role;
	auth_key_t keys[AUTH_MAX_KEYS]; /* wiped on free */
	size_t n_keys;
	auth_rule_t *rules; /* prefixes owned */
	size_t n_rules;
	auth_cert_entry_t *certs;
	size_t n_certs;
	/* audit log (audit.c) */
	pthread_mutex_t audit_mu;
	bool audit_mu_init;
	char *audit_path;
	int audit_fd; /* -1 = none */
	/* additions for audit.c: writers hold audit_rw shared, a reopen holds it exclusive */
	pthread_rwlock_t audit_rw;
	dev_t audit_dev; /* of the open file, to notice rotation */
	ino_t audit_ino;
	_Atomic int64_t audit_checked_ms; /* last time the path's inode was compared */
	_Atomic uint64_t audit_failures;  /* lines not written */
	_Atomic int64_t audit_warned_ms;  /* last warning about a failure */
};

/** Open the audit log at path (NULL = none). Called once by auth_policy_new. */
int auth_audit_open(auth_policy_t *p, const char *path, reap_errbuf_t *eb);
void auth_audit_close(auth_policy_t *p);

/** 0 when s (n bytes) is "" or an instance name, optionally ending in '/'. */
int auth_prefix_check(const char *s, size_t n, reap_errbuf_t *eb);

/** HMAC-SHA256 of data under key (at most 64 bytes) into out; token.c. */
int auth_hmac_sha256(const unsigned char *key, size_t key_len, const void *data, size_t n,
		     unsigned char out[32]);

/** 0 when s (n bytes) is 1..AUTH_SUBJECT_MAX-1 bytes of printable ASCII. */
int auth_subject_check(const char *s, size_t n, reap_errbuf_t *eb);

#endif
