/* digest.c - SHA-256 digests via OpenSSL EVP, strict hex parsing and store keys. */
#include "common/digest.h"

#include <openssl/evp.h>
#include <string.h>

static const uint8_t empty_sha256[REAP_HASH_LEN] = {
	0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4,
	0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b,
	0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
};

/* Lowercase hex digit values plus one; 0 for every other byte. */
static const uint8_t hexval1[256] = {
	['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,
	['6'] = 7,  ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
	['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
};

int reap_digest_parse(const char *hex, size_t hexlen, int64_t size,
		      reap_digest_t *out, reap_errbuf_t *eb)
{
	const unsigned char *h = (const unsigned char *)hex;
	uint8_t bad = 0;

	memset(out, 0, sizeof(*out));
	if (hex == NULL || hexlen != REAP_HASH_HEX_LEN)
		return reap_errf(eb, REAP_E_INVALID,
				 "digest hash must be %d lowercase hex characters, got %zu",
				 REAP_HASH_HEX_LEN, hex == NULL ? (size_t)0 : hexlen);
	/* Hot in FindMissingBlobs (10k digests a request): no branch per digit. */
	for (size_t i = 0; i < REAP_HASH_LEN; i++) {
		uint8_t hi = (uint8_t)(hexval1[h[2 * i]] - 1), lo = (uint8_t)(hexval1[h[2 * i + 1]] - 1);
		bad |= hi | lo; /* 0xff for a non-digit */
		out->hash[i] = (uint8_t)(hi << 4 | (lo & 15));
	}
	if (bad & 0x10) {
		size_t at = 0;
		while (hexval1[h[at]] != 0)
			at++;
		memset(out->hash, 0, sizeof(out->hash));
		return reap_errf(eb, REAP_E_INVALID,
				 "digest hash has a character that is not lowercase hex at %zu", at);
	}
	if (size < 0)
		return reap_errf(eb, REAP_E_INVALID, "digest size is negative (%lld)",
				 (long long)size);
	out->size = size;
	return REAP_OK;
}

void reap_digest_hex(const reap_digest_t *d, char out[REAP_HASH_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < REAP_HASH_LEN; i++) {
		out[2 * i] = digits[d->hash[i] >> 4];
		out[2 * i + 1] = digits[d->hash[i] & 15];
	}
	out[REAP_HASH_HEX_LEN] = '\0';
}

bool reap_digest_eq(const reap_digest_t *a, const reap_digest_t *b)
{
	return a->size == b->size && memcmp(a->hash, b->hash, REAP_HASH_LEN) == 0;
}

bool reap_digest_is_empty(const reap_digest_t *d)
{
	return d->size == 0 && memcmp(d->hash, empty_sha256, REAP_HASH_LEN) == 0;
}

void reap_digest_empty(reap_digest_t *out)
{
	memcpy(out->hash, empty_sha256, REAP_HASH_LEN);
	out->size = 0;
}

void reap_digest_key(const reap_digest_t *d, uint8_t out[REAP_DIGEST_KEY_LEN])
{
	memcpy(out, d->hash, REAP_HASH_LEN);
	uint64_t s = (uint64_t)d->size;
	for (int i = 0; i < 8; i++)
		out[REAP_HASH_LEN + i] = (uint8_t)(s >> (56 - 8 * i));
}

void reap_digest_from_key(const uint8_t key[REAP_DIGEST_KEY_LEN], reap_digest_t *out)
{
	uint64_t s = 0;
	memcpy(out->hash, key, REAP_HASH_LEN);
	for (int i = 0; i < 8; i++)
		s = s << 8 | key[REAP_HASH_LEN + i];
	out->size = (int64_t)s;
}

int reap_hasher_init(reap_hasher_t *h)
{
	EVP_MD_CTX *ctx = h->ctx != NULL ? h->ctx : EVP_MD_CTX_new();
	h->ctx = NULL;
	h->n = 0;
	if (ctx == NULL)
		return REAP_E_NOMEM;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return REAP_E_INTERNAL;
	}
	h->ctx = ctx;
	return REAP_OK;
}

void reap_hasher_update(reap_hasher_t *h, const void *data, size_t len)
{
	if (len == 0)
		return;
	EVP_DigestUpdate(h->ctx, data, len);
	h->n += (int64_t)len;
}

void reap_hasher_final(reap_hasher_t *h, reap_digest_t *out)
{
	unsigned int n = 0;
	EVP_DigestFinal_ex(h->ctx, out->hash, &n);
	out->size = h->n;
}

int reap_hasher_copy(reap_hasher_t *dst, const reap_hasher_t *src)
{
	if (EVP_MD_CTX_copy_ex(dst->ctx, src->ctx) != 1)
		return REAP_E_INTERNAL;
	dst->n = src->n;
	return REAP_OK;
}

void reap_hasher_destroy(reap_hasher_t *h)
{
	EVP_MD_CTX_free(h->ctx);
	h->ctx = NULL;
}

int reap_digest_of(const void *data, size_t len, reap_digest_t *out)
{
	reap_hasher_t h = {0};
	int err = reap_hasher_init(&h);
	if (err != REAP_OK)
		return err;
	reap_hasher_update(&h, data, len);
	reap_hasher_final(&h, out);
	reap_hasher_destroy(&h);
	return REAP_OK;
}
