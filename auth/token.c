/*
 * token.c - token keys (random, 0600 files of hex) and HS256 JWTs.
 *
 * Tokens are issued with libjwt. They are verified here, not by libjwt's
 * jwt_decode, because its 1.10 line accepts any algorithm the token names
 * (compared case-insensitively), and upstream 1.10.2 compared HMACs with
 * strcmp (CVE-2024-25189; Debian patched it, we do not rely on that).
 * Verification is strict and ordered so nothing about the token is
 * trusted before its signature checks:
 *
 *   1. at most AUTH_TOKEN_MAX bytes of base64url in exactly 3 segments;
 *   2. the header is a JSON object whose "alg" is exactly "HS256" ("typ",
 *      if present, exactly "JWT"; no other fields), checked before and
 *      independently of the signature: "none", RS256, HS384, "hs256" fail;
 *   3. the 32-byte signature equals HMAC-SHA256 under one key not past its
 *      not_after (CRYPTO_memcmp);
 *   4. the claims: "sub" (printable, 1..127 bytes), "role", integer "exp"
 *      in the future, integer "nbf" (if any) not in the future, and
 *      "instances", an array of at most AUTH_MAX_PREFIXES valid prefixes.
 *
 * Nothing is cached, and the token is never logged or echoed in errors.
 */
#include "auth/auth_int.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SIG_BYTES 32         /* HMAC-SHA256 */
#define KEY_FILE_MAX 1024    /* a key file is 65 bytes; anything much larger is wrong */
#define KEY_MIN_BYTES 32

/* ---- small helpers ---- */

static int b64url_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Strict unpadded base64url: alphabet only, no '=', and the unused low
 * bits of the last character zero (one encoding per value).
 */
static int b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap,
			 size_t *outlen)
{
	unsigned acc = 0;
	int bits = 0;
	size_t o = 0;

	if (n % 4 == 1 || (n / 4) * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
		return REAP_E_INVALID;
	for (size_t i = 0; i < n; i++) {
		int v = b64url_val((unsigned char)in[i]);
		if (v < 0)
			return REAP_E_INVALID;
		acc = ((acc << 6) | (unsigned)v) & 0xffffu;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return REAP_E_INVALID;
	*outlen = o;
	return REAP_OK;
}

/* Decode one segment as a JSON object (duplicates refused). */
static json_t *segment_json(const char *seg, size_t n)
{
	unsigned char *buf = malloc(n / 4 * 3 + 3);
	size_t len = 0;
	json_t *j = NULL;
	json_error_t je;

	if (buf == NULL)
		return NULL;
	if (b64url_decode(seg, n, buf, n / 4 * 3 + 3, &len) == REAP_OK)
		j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
	free(buf);
	if (j != NULL && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
	return j;
}

static void fmt_time(int64_t t, char *buf, size_t cap)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, cap, "%lld", (long long)t);
}

int auth_prefix_check(const char *s, size_t n, reap_errbuf_t *eb)
{
	if (n == 0)
		return REAP_OK;
	if (s[n - 1] == '/')
		n--;
	if (n == 0)
		return reap_errf(eb, REAP_E_INVALID, "instance prefix \"/\" is not valid");
	if (memchr(s, '\0', n) != NULL)
		return reap_errf(eb, REAP_E_INVALID, "instance prefix has a NUL byte");
	return reap_instance_check(s, n, eb);
}

int auth_subject_check(const char *s, size_t n, reap_errbuf_t *eb)
{
	if (n == 0)
		return reap_errf(eb, REAP_E_INVALID, "the subject is empty");
	if (n >= AUTH_SUBJECT_MAX)
		return reap_errf(eb, REAP_E_INVALID, "the subject is longer than %d bytes",
				 AUTH_SUBJECT_MAX - 1);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return reap_errf(eb, REAP_E_INVALID,
					 "the subject has a byte that is not printable ASCII");
	return REAP_OK;
}

/*
 * HMAC-SHA256 (RFC 2104) over a digest fetched once. OpenSSL 3's one-shot
 * HMAC() looks the algorithm up by name on every call (~5 us each, paid
 * per configured key); this costs well under 1 us. Keys are at most one
 * SHA-256 block (64 bytes), so they are used as they are, zero-padded.
 * tests/auth/test_tokens.c checks it against RFC 4231 and against HMAC().
 */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int auth_hmac_sha256(const unsigned char *key, size_t key_len, const void *data, size_t n,
		     unsigned char out[32])
{
	unsigned char pad[64], inner[32];
	EVP_MD_CTX *ctx = NULL;
	int ok;

	pthread_once(&sha256_once, sha256_fetch);
	if (sha256_md == NULL || key_len > sizeof(pad) || (ctx = EVP_MD_CTX_new()) == NULL)
		return REAP_E_INTERNAL;
	memset(pad, 0x36, sizeof(pad));
	for (size_t i = 0; i < key_len; i++)
		pad[i] ^= key[i];
	ok = EVP_DigestInit_ex(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, pad, sizeof(pad)) &&
	     EVP_DigestUpdate(ctx, data, n) && EVP_DigestFinal_ex(ctx, inner, NULL);
	memset(pad, 0x5c, sizeof(pad));
	for (size_t i = 0; i < key_len; i++)
		pad[i] ^= key[i];
	ok = ok && EVP_DigestInit_ex(ctx, sha256_md, NULL) &&
	     EVP_DigestUpdate(ctx, pad, sizeof(pad)) && EVP_DigestUpdate(ctx, inner, sizeof(inner)) &&
	     EVP_DigestFinal_ex(ctx, out, NULL);
	EVP_MD_CTX_free(ctx);
	OPENSSL_cleanse(pad, sizeof(pad));
	OPENSSL_cleanse(inner, sizeof(inner));
	return ok ? REAP_OK : REAP_E_INTERNAL;
}

static bool key_usable(const auth_key_t *k)
{
	return k->len >= KEY_MIN_BYTES && k->len <= sizeof(k->secret);
}

/* ---- key files ---- */

int auth_key_generate_file(const char *path, reap_errbuf_t *eb)
{
	unsigned char raw[AUTH_KEY_BYTES];
	char hex[AUTH_KEY_BYTES * 2 + 2];
	size_t got = 0;
	int fd = -1, err = REAP_OK;

	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = reap_errf(eb, REAP_E_IO, "no random bytes from the OS: %s",
					strerror(errno));
			goto out;
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	hex[2 * sizeof(raw)] = '\n';
	hex[2 * sizeof(raw) + 1] = '\0';

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = reap_errf(eb, errno == EEXIST ? REAP_E_EXISTS : REAP_E_IO,
				"cannot create key file %s: %s", path, strerror(errno));
		goto out;
	}
	if (fchmod(fd, 0600) != 0 ||
	    write(fd, hex, 2 * sizeof(raw) + 1) != (ssize_t)(2 * sizeof(raw) + 1) ||
	    fsync(fd) != 0) {
		err = reap_errf(eb, REAP_E_IO, "cannot write key file %s: %s", path,
				strerror(errno));
		unlink(path); /* ours: created with O_EXCL above */
	}
out:
	if (fd >= 0)
		close(fd);
	OPENSSL_cleanse(raw, sizeof(raw));
	OPENSSL_cleanse(hex, sizeof(hex));
	return err;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int auth_key_load_file(const char *path, auth_key_t *out, reap_errbuf_t *eb)
{
	char buf[KEY_FILE_MAX + 1];
	struct stat st;
	ssize_t n = 0;
	size_t len;
	int fd, err = REAP_OK;

	memset(out, 0, sizeof(*out));
	/* O_NONBLOCK: a FIFO planted at path must not hang start-up before fstat refuses it. */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return reap_errf(eb, errno == ENOENT ? REAP_E_NOT_FOUND : REAP_E_IO,
				 "cannot open key file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0) {
		err = reap_errf(eb, REAP_E_IO, "cannot stat key file %s: %s", path,
				strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err = reap_errf(eb, REAP_E_PERM, "key file %s is not a regular file", path);
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		err = reap_errf(eb, REAP_E_PERM,
				"key file %s is accessible by group or others (mode %04o); "
				"chmod 600 it",
				path, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	for (size_t got = 0; got < sizeof(buf);) {
		ssize_t r = read(fd, buf + got, sizeof(buf) - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = reap_errf(eb, REAP_E_IO, "cannot read key file %s: %s", path,
					strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		got += (size_t)r;
		n = (ssize_t)got;
	}
	if ((size_t)n > KEY_FILE_MAX) {
		err = reap_errf(eb, REAP_E_INVALID, "key file %s is too large", path);
		goto out;
	}
	len = (size_t)n;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
			   buf[len - 1] == ' ' || buf[len - 1] == '\t'))
		len--;
	if (len % 2 != 0 || len < 2 * KEY_MIN_BYTES || len > 2 * sizeof(out->secret)) {
		err = reap_errf(eb, REAP_E_INVALID,
				"key file %s must hold %d to %zu bytes as hex on one line", path,
				KEY_MIN_BYTES, sizeof(out->secret));
		goto out;
	}
	for (size_t i = 0; i < len; i += 2) {
		int hi = hexval((unsigned char)buf[i]), lo = hexval((unsigned char)buf[i + 1]);
		if (hi < 0 || lo < 0) {
			err = reap_errf(eb, REAP_E_INVALID, "key file %s is not hex", path);
			goto out;
		}
		out->secret[i / 2] = (unsigned char)(hi << 4 | lo);
	}
	out->len = len / 2;
out:
	if (err != REAP_OK)
		OPENSSL_cleanse(out, sizeof(*out));
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return err;
}

/* ---- issue ---- */

static int claims_check(const auth_claims_t *c, reap_errbuf_t *eb)
{
	int err;
	if ((err = auth_subject_check(c->subject, strnlen(c->subject, AUTH_SUBJECT_MAX), eb)))
		return err;
	if (c->role <= AUTH_ROLE_NONE || c->role >= AUTH_ROLE_COUNT)
		return reap_errf(eb, REAP_E_INVALID, "a token needs a role");
	if (c->n_instances > AUTH_MAX_PREFIXES)
		return reap_errf(eb, REAP_E_INVALID, "at most %d instance prefixes",
				 AUTH_MAX_PREFIXES);
	for (size_t i = 0; i < c->n_instances; i++)
		if ((err = auth_prefix_check(c->instances[i],
					     strnlen(c->instances[i], REAP_INSTANCE_MAX + 1), eb)))
			return err;
	if (c->expires <= 0 || c->expires <= c->issued_at)
		return reap_errf(eb, REAP_E_INVALID, "a token needs an expiry after its issue time");
	return REAP_OK;
}

int auth_token_issue(const auth_key_t *key, const auth_claims_t *c, char **out,
		     reap_errbuf_t *eb)
{
	jwt_t *jwt = NULL;
	json_t *inst = NULL, *arr;
	char *inst_json = NULL, *tok = NULL;
	int err;

	*out = NULL;
	if (!key_usable(key))
		return reap_errf(eb, REAP_E_INVALID, "the signing key must be %d to %zu bytes",
				 KEY_MIN_BYTES, sizeof(key->secret));
	if ((err = claims_check(c, eb)) != REAP_OK)
		return err;
	err = REAP_E_NOMEM;
	if ((arr = json_array()) == NULL || (inst = json_pack("{so}", "instances", arr)) == NULL)
		goto out;
	for (size_t i = 0; i < c->n_instances; i++)
		if (json_array_append_new(arr, json_string(c->instances[i])) != 0)
			goto out;
	if ((inst_json = json_dumps(inst, JSON_COMPACT)) == NULL || jwt_new(&jwt) != 0)
		goto out;
	if (jwt_set_alg(jwt, JWT_ALG_HS256, key->secret, (int)key->len) != 0 ||
	    jwt_add_grant(jwt, "sub", c->subject) != 0 ||
	    jwt_add_grant(jwt, "role", auth_role_name(c->role)) != 0 ||
	    jwt_add_grant_int(jwt, "iat", (long)c->issued_at) != 0 ||
	    jwt_add_grant_int(jwt, "exp", (long)c->expires) != 0 ||
	    jwt_add_grants_json(jwt, inst_json) != 0 || (tok = jwt_encode_str(jwt)) == NULL) {
		err = reap_errf(eb, REAP_E_INTERNAL, "libjwt could not build the token");
		goto out;
	}
	*out = tok;
	err = REAP_OK;
out:
	if (err == REAP_E_NOMEM)
		reap_errf(eb, err, "out of memory issuing a token");
	jwt_free(jwt); /* scrubs its copy of the key */
	free(inst_json);
	json_decref(inst);
	return err;
}

/* ---- verify ---- */

typedef struct parts {
	const char *head, *body, *sig;
	size_t head_len, body_len, sig_len;
} parts_t;

static int split(const char *tok, size_t len, parts_t *p, reap_errbuf_t *eb)
{
	const char *dots[2];
	int n = 0;

	if (tok == NULL || len == 0)
		return reap_errf(eb, REAP_E_UNAUTHENTICATED, "the token is empty");
	if (len > AUTH_TOKEN_MAX)
		return reap_errf(eb, REAP_E_UNAUTHENTICATED, "the token is longer than %d bytes",
				 AUTH_TOKEN_MAX);
	for (size_t i = 0; i < len; i++) {
		if (tok[i] == '.') {
			if (n == 2)
				return reap_errf(eb, REAP_E_UNAUTHENTICATED,
						 "the token does not have 3 segments");
			dots[n++] = tok + i;
		} else if (b64url_val((unsigned char)tok[i]) < 0) {
			return reap_errf(eb, REAP_E_UNAUTHENTICATED,
					 "the token has a byte outside base64url");
		}
	}
	if (n != 2)
		return reap_errf(eb, REAP_E_UNAUTHENTICATED, "the token does not have 3 segments");
	p->head = tok;
	p->head_len = (size_t)(dots[0] - tok);
	p->body = dots[0] + 1;
	p->body_len = (size_t)(dots[1] - p->body);
	p->sig = dots[1] + 1;
	p->sig_len = (size_t)(tok + len - p->sig);
	if (p->head_len == 0 || p->body_len == 0)
		return reap_errf(eb, REAP_E_UNAUTHENTICATED, "the token has an empty segment");
	return REAP_OK;
}

/* The header must say exactly {"alg":"HS256"} plus optionally "typ":"JWT". */
static int check_header(const parts_t *p, reap_errbuf_t *eb)
{
	json_t *h = segment_json(p->head, p->head_len), *v;
	const char *k;
	int err = REAP_OK;

	if (h == NULL)
		return reap_errf(eb, REAP_E_UNAUTHENTICATED,
				 "the token header is not base64url JSON");
	v = json_object_get(h, "alg");
	if (v == NULL)
		err = reap_errf(eb, REAP_E_UNAUTHENTICATED, "the token header names no \"alg\"");
	else if (!json_is_string(v) || json_string_length(v) != 5 ||
		 memcmp(json_string_value(v), "HS256", 5) != 0)
		err = reap_errf(eb, REAP_E_UNAUTHENTICATED,
				"the token's algorithm is not HS256 (the only one accepted)");
	json_object_foreach(h, k, v) {
		if (err != REAP_OK)
			break;
		if (strcmp(k, "alg") == 0)
			continue;
		if (strcmp(k, "typ") == 0) {
			if (!json_is_string(v) || strcmp(json_string_value(v), "JWT") != 0 ||
			    json_string_length(v) != 3)
				err = reap_errf(eb, REAP_E_UNAUTHENTICATED,
						"the token header's \"typ\" is not \"JWT\"");
			continue;
		}
		err = reap_errf(eb, REAP_E_UNAUTHENTICATED,
				"the token header has an unsupported field");
	}
	json_decref(h);
	return err;
}

static int check_signature(const auth_key_t *keys, size_t n_keys, const parts_t *p,
			   int64_t now, reap_errbuf_t *eb)
{
	unsigned char sig[SIG_BYTES + 3], mac[SIG_BYTES];
	size_t sig_len = 0, data_len = p->head_len + 1 + p->body_len;
	const auth_key_t *retired = NULL;
	bool any = false, ok = false;

	if (b64url_decode(p->sig, p->sig_len, sig, sizeof(sig), &sig_len) != REAP_OK ||
	    sig_len != SIG_BYTES)
		return reap_errf(eb, REAP_E_UNAUTHENTICATED,
				 "the token's signature is not an HS256 signature");
	for (size_t i = 0; i < n_keys && !ok; i++) {
		const auth_key_t *k = &keys[i];
		bool current = k->not_after == 0 || k->not_after >= now;
		if (!key_usable(k))
			continue;
		any |= current;
		if (auth_hmac_sha256(k->secret, k->len, p->head, data_len, mac) != REAP_OK)
			continue;
		if (CRYPTO_memcmp(mac, sig, SIG_BYTES) == 0) {
			if (current)
				ok = true;
			else
				retired = k;
		}
	}
	OPENSSL_cleanse(mac, sizeof(mac));
	if (ok)
		return REAP_OK;
	if (retired != NULL) {
		char when[32];
		fmt_time(retired->not_after, when, sizeof(when));
		return reap_errf(eb, REAP_E_UNAUTHENTICATED,
				 "the token is signed with a key retired at %s", when);
	}
	if (!any)
		return reap_errf(eb, REAP_E_UNAUTHENTICATED, "this server has no current token key");
	return reap_errf(eb, REAP_E_UNAUTHENTICATED, "the token's signature does not verify");
}

static int int_claim(json_t *root, const char *name, bool required, int64_t *out,
		     reap_errbuf_t *eb)
{
	json_t *v = json_object_get(root, name);
	if (v == NULL)
		return required ? reap_errf(eb, REAP_E_UNAUTHENTICATED,
					    "the token has no \"%s\" claim", name)
				: REAP_OK;
	if (!json_is_integer(v))
		return reap_errf(eb, REAP_E_UNAUTHENTICATED,
				 "the token's \"%s\" claim is not an integer", name);
	*out = (int64_t)json_integer_value(v);
	return REAP_OK;
}

/*
 * Fill c from the claims object. verify: also check the times against
 * now. Errors are REAP_E_UNAUTHENTICATED (the token is not acceptable).
 */
static int parse_claims(json_t *root, bool verify, int64_t now, auth_claims_t *c,
			reap_errbuf_t *eb)
{
	const int bad = REAP_E_UNAUTHENTICATED;
	json_t *v, *e;
	int64_t nbf = 0;
	bool has_nbf;
	size_t i;
	char when[32];
	int err;

	v = json_object_get(root, "sub");
	if (v == NULL || !json_is_string(v))
		return reap_errf(eb, bad, "the token has no \"sub\" string claim");
	if (auth_subject_check(json_string_value(v), json_string_length(v), NULL) != REAP_OK ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return reap_errf(eb, bad,
				 "the token's \"sub\" is not 1 to %d bytes of printable ASCII",
				 AUTH_SUBJECT_MAX - 1);
	memcpy(c->subject, json_string_value(v), json_string_length(v) + 1);

	v = json_object_get(root, "role");
	if (v == NULL || !json_is_string(v))
		return reap_errf(eb, bad, "the token has no \"role\" string claim");
	if (auth_role_parse(json_string_value(v), &c->role) != REAP_OK)
		return reap_errf(eb, bad,
				 "the token's \"role\" is not client, worker, writer or admin");

	if ((err = int_claim(root, "exp", true, &c->expires, eb)) ||
	    (err = int_claim(root, "iat", false, &c->issued_at, eb)) ||
	    (err = int_claim(root, "nbf", false, &nbf, eb)))
		return err;
	has_nbf = json_object_get(root, "nbf") != NULL;

	v = json_object_get(root, "instances");
	if (v == NULL || !json_is_array(v))
		return reap_errf(eb, bad, "the token has no \"instances\" array claim");
	if (json_array_size(v) > AUTH_MAX_PREFIXES)
		return reap_errf(eb, bad, "the token names more than %d instance prefixes",
				 AUTH_MAX_PREFIXES);
	json_array_foreach(v, i, e) {
		if (!json_is_string(e) || json_string_length(e) > REAP_INSTANCE_MAX ||
		    auth_prefix_check(json_string_value(e), json_string_length(e), NULL) != REAP_OK)
			return reap_errf(eb, bad,
					 "the token's instances[%zu] is not a valid instance prefix",
					 i);
		memcpy(c->instances[i], json_string_value(e), json_string_length(e) + 1);
	}
	c->n_instances = json_array_size(v);

	if (!verify)
		return REAP_OK;
	if (c->expires <= now) {
		fmt_time(c->expires, when, sizeof(when));
		return reap_errf(eb, bad, "the token expired at %s", when);
	}
	if (has_nbf && nbf > now) {
		fmt_time(nbf, when, sizeof(when));
		return reap_errf(eb, bad, "the token is not valid before %s", when);
	}
	return REAP_OK;
}

static int decode(const char *token, size_t len, bool verify, const auth_key_t *keys,
		  size_t n_keys, int64_t now, auth_claims_t *out, reap_errbuf_t *eb)
{
	parts_t p = {0};
	json_t *body;
	int err;

	memset(out, 0, sizeof(*out));
	if ((err = split(token, len, &p, eb)) != REAP_OK ||
	    (verify && (err = check_header(&p, eb)) != REAP_OK) ||
	    (verify && (err = check_signature(keys, n_keys, &p, now, eb)) != REAP_OK))
		goto fail;
	if ((body = segment_json(p.body, p.body_len)) == NULL) {
		err = reap_errf(eb, REAP_E_UNAUTHENTICATED,
				"the token's claims are not base64url JSON");
		goto fail;
	}
	err = parse_claims(body, verify, now, out, eb);
	json_decref(body);
	if (err == REAP_OK)
		return REAP_OK;
fail:
	memset(out, 0, sizeof(*out));
	return err;
}

int auth_token_verify(const auth_key_t *keys, size_t n_keys, const char *token, size_t len,
		      int64_t now, auth_claims_t *out, reap_errbuf_t *eb)
{
	return decode(token, len, true, keys, n_keys, now, out, eb);
}

int auth_token_decode_unverified(const char *token, auth_claims_t *out, reap_errbuf_t *eb)
{
	int err = decode(token, token != NULL ? strnlen(token, AUTH_TOKEN_MAX + 1) : 0, false,
			 NULL, 0, 0, out, eb);
	return err == REAP_E_UNAUTHENTICATED ? REAP_E_INVALID : err;
}
