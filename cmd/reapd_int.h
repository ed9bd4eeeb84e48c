/* reapd_int.h - reapd's start-up helpers (cmd/ only). */
#ifndef REAP_CMD_REAPD_INT_H
#define REAP_CMD_REAPD_INT_H

#include <stddef.h>

#include "auth/auth.h"

/**
 * When the config names no token key: load DATA/token.key, creating it
 * (0600) on first start, as keys[0], the signing key.
 */
int reapd_bootstrap_keys(const char *data, auth_key_t *keys, size_t *n_keys, size_t max_keys,
			 reap_errbuf_t *eb);

/**
 * Make sure path holds a valid worker token for worker_name (role worker,
 * all instances), issuing a new one (0600) when missing, expiring or no
 * longer verifying with keys.
 */
int reapd_bootstrap_worker_token(const char *path, const char *worker_name,
				 const auth_key_t *keys, size_t n_keys, reap_errbuf_t *eb);

#endif
