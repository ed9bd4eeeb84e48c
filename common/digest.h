/*
 * digest.h - content digests (SHA-256) and streaming hashing.
 *
 * A digest is the REAPI pair (hash, size). reap stores the hash raw; the
 * wire form is 64 lowercase hex characters. Parsing is strict: anything that
 * is not exactly that, or a negative size, is refused, because a digest is
 * the key under which untrusted content is stored.
 */
#ifndef REAP_COMMON_DIGEST_H
#define REAP_COMMON_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define REAP_HASH_LEN 32     /* SHA-256 */
#define REAP_HASH_HEX_LEN 64
#define REAP_DIGEST_KEY_LEN (REAP_HASH_LEN + 8)

typedef struct reap_digest {
	uint8_t hash[REAP_HASH_LEN];
	int64_t size;
} reap_digest_t;

/**
 * Parse hex (hexlen chars, not necessarily NUL-terminated) and size into out.
 * Returns 0 or REAP_E_INVALID (message in eb) for a wrong length, a non
 * lowercase-hex character, or a negative size.
 */
int reap_digest_parse(const char *hex, size_t hexlen, int64_t size,
		      reap_digest_t *out, reap_errbuf_t *eb);

/** Write the 64 hex chars and a NUL into out. */
void reap_digest_hex(const reap_digest_t *d, char out[REAP_HASH_HEX_LEN + 1]);

/** True when both hash and size are equal. */
bool reap_digest_eq(const reap_digest_t *a, const reap_digest_t *b);

/** True when d is the digest of the empty blob (which always exists). */
bool reap_digest_is_empty(const reap_digest_t *d);

/** The digest of the empty blob. */
void reap_digest_empty(reap_digest_t *out);

/**
 * Fixed-width store key: the raw hash then the size as big-endian 64 bits,
 * so keys sort by hash and compare with memcmp.
 */
void reap_digest_key(const reap_digest_t *d, uint8_t out[REAP_DIGEST_KEY_LEN]);

/** Inverse of reap_digest_key. */
void reap_digest_from_key(const uint8_t key[REAP_DIGEST_KEY_LEN], reap_digest_t *out);

/** Streaming SHA-256. Caller-owned: _init before use, _destroy after. */
typedef struct reap_hasher {
	void *ctx; /* EVP_MD_CTX */
	int64_t n; /* bytes hashed so far */
} reap_hasher_t;

/** Returns 0 or REAP_E_NOMEM. */
int reap_hasher_init(reap_hasher_t *h);
void reap_hasher_update(reap_hasher_t *h, const void *data, size_t len);
/** Finish into out (hash and the byte count as size). The hasher may be reset with _init again. */
void reap_hasher_final(reap_hasher_t *h, reap_digest_t *out);
/** Copy the running state of src into dst (dst must be _init'ed). */
int reap_hasher_copy(reap_hasher_t *dst, const reap_hasher_t *src);
void reap_hasher_destroy(reap_hasher_t *h);

/** One-shot digest of a buffer. */
int reap_digest_of(const void *data, size_t len, reap_digest_t *out);

#endif
