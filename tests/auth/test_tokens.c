/*
 * test_tokens.c - key files and HS256 tokens: every way a token can be
 * wrong (algorithm confusion, alg "none", bad signature, retired key,
 * times, claims, malformed encodings) and the exact error each gets.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/auth_int.h"

#define NOW 1800000000LL

static const auth_key_t k1 = {.secret = "key one: 32 bytes of test secret", .len = 32,
			      .signing = true};
static const auth_key_t k_other = {.secret = "some other key, never configured", .len = 32};

/* ---- helpers ---- */

static char *b64url(const void *data, size_t n)
{
	static const char al[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *d = data;
	char *out = malloc(n * 4 / 3 + 4), *o = out;
	size_t i;
	for (i = 0; i + 2 < n; i += 3) {
		*o++ = al[d[i] >> 2];
		*o++ = al[(d[i] & 3) << 4 | d[i + 1] >> 4];
		*o++ = al[(d[i + 1] & 15) << 2 | d[i + 2] >> 6];
		*o++ = al[d[i + 2] & 63];
	}
	if (n - i == 1) {
		*o++ = al[d[i] >> 2];
		*o++ = al[(d[i] & 3) << 4];
	} else if (n - i == 2) {
		*o++ = al[d[i] >> 2];
		*o++ = al[(d[i] & 3) << 4 | d[i + 1] >> 4];
		*o++ = al[(d[i + 1] & 15) << 2];
	}
	*o = '\0';
	return out;
}

/* header.payload.MAC(md, key) — md NULL gives an empty signature. */
static char *craft(const char *header, const char *payload, const EVP_MD *md,
		   const auth_key_t *key)
{
	char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
	char *signing, *sig, *tok;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;

	cr_assert(asprintf(&signing, "%s.%s", h, p) > 0);
	if (md != NULL)
		HMAC(md, key->secret, (int)key->len, (unsigned char *)signing, strlen(signing), mac,
		     &mac_len);
	sig = b64url(mac, mac_len);
	cr_assert(asprintf(&tok, "%s.%s", signing, sig) > 0);
	free(h);
	free(p);
	free(signing);
	free(sig);
	return tok;
}

static const char hs256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static char *good_payload(void)
{
	char *s;
	cr_assert(asprintf(&s,
			   "{\"sub\":\"alice\",\"role\":\"client\",\"instances\":[\"team-a\"],"
			   "\"iat\":%lld,\"exp\":%lld}",
			   NOW - 10, NOW + 3600) > 0);
	return s;
}

static int verify(const auth_key_t *keys, size_t n, const char *tok, auth_claims_t *c,
		  reap_errbuf_t *eb)
{
	return auth_token_verify(keys, n, tok, strlen(tok), NOW, c, eb);
}

static char *issue(const auth_key_t *key, const char *sub, auth_role_t role, int64_t exp)
{
	auth_claims_t c = {.role = role, .issued_at = NOW - 10, .expires = exp, .n_instances = 2};
	reap_errbuf_t eb = {{0}};
	char *tok = NULL;
	snprintf(c.subject, sizeof(c.subject), "%s", sub);
	strcpy(c.instances[0], "team-a");
	strcpy(c.instances[1], "ci/");
	cr_assert_eq(auth_token_issue(key, &c, &tok, &eb), 0, "%s", eb.msg);
	return tok;
}

/* ---- valid tokens and keys ---- */

Test(tokens, valid_round_trip)
{
	auth_claims_t c;
	reap_errbuf_t eb = {{0}};
	char *tok = issue(&k1, "alice", AUTH_ROLE_WRITER, NOW + 60);

	cr_assert_null(strchr(tok, '='), "unpadded base64url");
	cr_assert_eq(verify(&k1, 1, tok, &c, &eb), 0, "%s", eb.msg);
	cr_assert_str_eq(c.subject, "alice");
	cr_assert_eq(c.role, AUTH_ROLE_WRITER);
	cr_assert_eq(c.expires, NOW + 60);
	cr_assert_eq(c.issued_at, NOW - 10);
	cr_assert_eq(c.n_instances, 2);
	cr_assert_str_eq(c.instances[0], "team-a");
	cr_assert_str_eq(c.instances[1], "ci/");
	/* the header libjwt wrote is the one we demand */
	char *dot = strchr(tok, '.');
	char *want = b64url(hs256, strlen(hs256));
	cr_assert_eq((size_t)(dot - tok), strlen(want));
	cr_assert_eq(strncmp(tok, want, strlen(want)), 0);
	free(want);
	free(tok);
}

Test(tokens, length_is_honoured_without_nul)
{
	auth_claims_t c;
	char *tok = issue(&k1, "alice", AUTH_ROLE_CLIENT, NOW + 60);
	size_t n = strlen(tok);
	char *buf = malloc(n + 8);
	memcpy(buf, tok, n);
	memcpy(buf + n, ".garbage", 8); /* no NUL: the length bounds the token */
	cr_assert_eq(auth_token_verify(&k1, 1, buf, n, NOW, &c, NULL), 0);
	cr_assert_eq(auth_token_verify(&k1, 1, buf, n - 1, NOW, &c, NULL), REAP_E_UNAUTHENTICATED);
	free(buf);
	free(tok);
}

Test(tokens, crafted_valid_token_verifies)
{
	auth_claims_t c;
	reap_errbuf_t eb = {{0}};
	char *p = good_payload(), *tok = craft(hs256, p, EVP_sha256(), &k1);
	cr_assert_eq(verify(&k1, 1, tok, &c, &eb), 0, "%s", eb.msg);
	free(p);
	free(tok);
	/* typ is optional, nbf in the past is fine, unknown claims are ignored */
	p = NULL;
	cr_assert(asprintf(&p,
			   "{\"sub\":\"a\",\"role\":\"admin\",\"instances\":[],\"exp\":%lld,"
			   "\"nbf\":%lld,\"jti\":\"x\"}",
			   NOW + 1, NOW) > 0);
	tok = craft("{\"alg\":\"HS256\"}", p, EVP_sha256(), &k1);
	cr_assert_eq(verify(&k1, 1, tok, &c, &eb), 0, "%s", eb.msg);
	cr_assert_eq(c.n_instances, 0);
	free(p);
	free(tok);
}

Test(tokens, key_rotation)
{
	auth_key_t keys[2] = {k1, k_other};
	auth_claims_t c;
	reap_errbuf_t eb = {{0}};
	char *old = issue(&k_other, "bob", AUTH_ROLE_WORKER, NOW + 600);

	keys[1].signing = false;
	keys[1].not_after = NOW + 100; /* grace: still verifies */
	cr_assert_eq(verify(keys, 2, old, &c, &eb), 0, "%s", eb.msg);
	keys[1].not_after = NOW; /* the last second of grace */
	cr_assert_eq(verify(keys, 2, old, &c, &eb), 0, "%s", eb.msg);
	keys[1].not_after = NOW - 1; /* past its grace */
	cr_assert_eq(verify(keys, 2, old, &c, &eb), REAP_E_UNAUTHENTICATED);
	cr_assert(strstr(eb.msg, "retired") != NULL, "%s", eb.msg);
	cr_assert_eq(c.role, AUTH_ROLE_NONE, "claims are cleared on failure");
	/* the current key is unaffected */
	char *cur = issue(&k1, "bob", AUTH_ROLE_WORKER, NOW + 600);
	cr_assert_eq(verify(keys, 2, cur, &c, &eb), 0, "%s", eb.msg);
	/* only retired keys: nothing verifies */
	keys[0].not_after = NOW - 1;
	cr_assert_eq(verify(keys, 2, cur, &c, &eb), REAP_E_UNAUTHENTICATED);
	cr_assert_eq(verify(keys, 0, cur, &c, &eb), REAP_E_UNAUTHENTICATED);
	cr_assert(strstr(eb.msg, "no current token key") != NULL, "%s", eb.msg);
	free(old);
	free(cur);
}

/* ---- refused tokens, table-driven ---- */

typedef struct bad_case {
	const char *name;
	const char *header;  /* NULL = HS256 */
	const char *payload; /* printf format with NOW-relative %lld slots, NULL = good */
	int md;              /* 0 = HMAC-SHA256 with k1, 1 = none, 2 = SHA384, 3 = other key */
	const char *reason;  /* substring of the message */
} bad_case_t;

#define P(claims) "{" claims "}"
#define EXP "\"exp\":1800003600"
#define INST "\"instances\":[\"a\"]"

static const bad_case_t bad_cases[] = {
	/* algorithm */
	{"alg none, empty sig", "{\"alg\":\"none\",\"typ\":\"JWT\"}", NULL, 1, "not HS256"},
	{"alg none, HS256 sig", "{\"alg\":\"none\"}", NULL, 0, "not HS256"},
	{"alg None", "{\"alg\":\"None\"}", NULL, 1, "not HS256"},
	{"alg RS256 + HMAC with the key", "{\"alg\":\"RS256\",\"typ\":\"JWT\"}", NULL, 0,
	 "not HS256"},
	{"alg ES256 + HMAC with the key", "{\"alg\":\"ES256\"}", NULL, 0, "not HS256"},
	{"alg HS384 + HMAC-SHA384", "{\"alg\":\"HS384\",\"typ\":\"JWT\"}", NULL, 2, "not HS256"},
	{"alg HS512", "{\"alg\":\"HS512\"}", NULL, 0, "not HS256"},
	{"alg hs256", "{\"alg\":\"hs256\"}", NULL, 0, "not HS256"},
	{"alg 'HS256 '", "{\"alg\":\"HS256 \"}", NULL, 0, "not HS256"},
	{"alg HS256 NUL", "{\"alg\":\"HS256\\u0000\"}", NULL, 0, "header"},
	{"alg number", "{\"alg\":256}", NULL, 0, "not HS256"},
	{"alg missing", "{\"typ\":\"JWT\"}", NULL, 0, "no \"alg\""},
	{"alg twice", "{\"alg\":\"HS256\",\"alg\":\"none\"}", NULL, 0, "header"},
	{"typ JWS", "{\"alg\":\"HS256\",\"typ\":\"JWS\"}", NULL, 0, "typ"},
	{"crit header", "{\"alg\":\"HS256\",\"crit\":[\"b64\"]}", NULL, 0, "unsupported"},
	{"header array", "[\"HS256\"]", NULL, 0, "header"},
	{"header not JSON", "HS256", NULL, 0, "header"},
	/* signature */
	{"wrong key", NULL, NULL, 3, "does not verify"},
	{"empty signature", NULL, NULL, 1, "not an HS256 signature"},
	/* claims (correctly signed) */
	{"no sub", NULL, P("\"role\":\"client\"," INST "," EXP), 0, "\"sub\""},
	{"empty sub", NULL, P("\"sub\":\"\",\"role\":\"client\"," INST "," EXP), 0, "\"sub\""},
	{"sub control char", NULL, P("\"sub\":\"a\\nb\",\"role\":\"client\"," INST "," EXP), 0,
	 "\"sub\""},
	{"sub NUL", NULL, P("\"sub\":\"a\\u0000b\",\"role\":\"client\"," INST "," EXP), 0,
	 "claims"},
	{"sub not string", NULL, P("\"sub\":7,\"role\":\"client\"," INST "," EXP), 0, "\"sub\""},
	{"no role", NULL, P("\"sub\":\"a\"," INST "," EXP), 0, "\"role\""},
	{"role root", NULL, P("\"sub\":\"a\",\"role\":\"root\"," INST "," EXP), 0, "\"role\""},
	{"role none", NULL, P("\"sub\":\"a\",\"role\":\"none\"," INST "," EXP), 0, "\"role\""},
	{"role Admin", NULL, P("\"sub\":\"a\",\"role\":\"Admin\"," INST "," EXP), 0, "\"role\""},
	{"role twice", NULL,
	 P("\"sub\":\"a\",\"role\":\"client\",\"role\":\"admin\"," INST "," EXP), 0, "claims"},
	{"no exp", NULL, P("\"sub\":\"a\",\"role\":\"client\"," INST), 0, "\"exp\""},
	{"exp string", NULL, P("\"sub\":\"a\",\"role\":\"client\"," INST ",\"exp\":\"2030\""), 0,
	 "\"exp\""},
	{"exp real", NULL, P("\"sub\":\"a\",\"role\":\"client\"," INST ",\"exp\":1.9e9"), 0,
	 "\"exp\""},
	{"expired", NULL, P("\"sub\":\"a\",\"role\":\"client\"," INST ",\"exp\":1799999999"), 0,
	 "expired"},
	{"expires now", NULL, P("\"sub\":\"a\",\"role\":\"client\"," INST ",\"exp\":1800000000"),
	 0, "expired"},
	{"not yet valid", NULL,
	 P("\"sub\":\"a\",\"role\":\"client\"," INST "," EXP ",\"nbf\":1800000060"), 0,
	 "not valid before"},
	{"nbf string", NULL, P("\"sub\":\"a\",\"role\":\"client\"," INST "," EXP ",\"nbf\":\"0\""),
	 0, "\"nbf\""},
	{"no instances", NULL, P("\"sub\":\"a\",\"role\":\"client\"," EXP), 0, "\"instances\""},
	{"instances string", NULL, P("\"sub\":\"a\",\"role\":\"client\",\"instances\":\"a\"," EXP),
	 0, "\"instances\""},
	{"too many instances", NULL,
	 P("\"sub\":\"a\",\"role\":\"client\",\"instances\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\","
	   "\"7\",\"8\",\"9\"]," EXP),
	 0, "more than 8"},
	{"instance not string", NULL, P("\"sub\":\"a\",\"role\":\"client\",\"instances\":[1]," EXP),
	 0, "instances[0]"},
	{"instance a//b", NULL,
	 P("\"sub\":\"a\",\"role\":\"client\",\"instances\":[\"ok\",\"a//b\"]," EXP), 0,
	 "instances[1]"},
	{"instance ..", NULL, P("\"sub\":\"a\",\"role\":\"client\",\"instances\":[\"..\"]," EXP), 0,
	 "instances[0]"},
	{"instance reserved word", NULL,
	 P("\"sub\":\"a\",\"role\":\"client\",\"instances\":[\"x/blobs\"]," EXP), 0,
	 "instances[0]"},
	{"claims array", NULL, "[1,2]", 0, "claims"},
	{"claims not JSON", NULL, "sub=alice", 0, "claims"},
};

Test(tokens, refused_table)
{
	char *good = good_payload(), *longsub = NULL, *longinst = NULL;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const bad_case_t *t = &bad_cases[i];
		const EVP_MD *md = t->md == 1 ? NULL : t->md == 2 ? EVP_sha384() : EVP_sha256();
		char *tok = craft(t->header ? t->header : hs256, t->payload ? t->payload : good, md,
				  t->md == 3 ? &k_other : &k1);
		auth_claims_t c;
		reap_errbuf_t eb = {{0}};
		int err = verify(&k1, 1, tok, &c, &eb);
		cr_expect_eq(err, REAP_E_UNAUTHENTICATED, "%s: got %d", t->name, err);
		cr_expect(strstr(eb.msg, t->reason) != NULL, "%s: message '%s' lacks '%s'", t->name,
			  eb.msg, t->reason);
		cr_expect_eq(c.role, AUTH_ROLE_NONE, "%s: claims cleared", t->name);
		free(tok);
	}
	/* lengths at the limits */
	char sub[200];
	memset(sub, 'x', 128);
	sub[128] = '\0';
	cr_assert(asprintf(&longsub, "{\"sub\":\"%s\",\"role\":\"client\"," INST "," EXP "}", sub) >
		  0);
	char *tok = craft(hs256, longsub, EVP_sha256(), &k1);
	auth_claims_t c;
	cr_expect_eq(verify(&k1, 1, tok, &c, NULL), REAP_E_UNAUTHENTICATED, "128-byte sub");
	free(tok);
	char inst[300];
	memset(inst, 'i', 256);
	inst[256] = '\0';
	cr_assert(asprintf(&longinst, "{\"sub\":\"a\",\"role\":\"client\",\"instances\":[\"%s\"],"
				      EXP "}",
			   inst) > 0);
	tok = craft(hs256, longinst, EVP_sha256(), &k1);
	cr_expect_eq(verify(&k1, 1, tok, &c, NULL), REAP_E_UNAUTHENTICATED, "256-byte instance");
	free(tok);
	free(longsub);
	free(longinst);
	free(good);
}

Test(tokens, tampering)
{
	auth_claims_t c;
	reap_errbuf_t eb = {{0}};
	char *tok = issue(&k1, "alice", AUTH_ROLE_CLIENT, NOW + 60);
	char *first = strchr(tok, '.'), *second = strchr(first + 1, '.');
	char *p = NULL, *forged;

	/* same signature, claims upgraded to admin */
	cr_assert(asprintf(&p,
			   "{\"sub\":\"alice\",\"role\":\"admin\",\"instances\":[\"\"],"
			   "\"exp\":%lld}",
			   NOW + 60) > 0);
	char *pb = b64url(p, strlen(p));
	cr_assert(asprintf(&forged, "%.*s.%s%s", (int)(first - tok), tok, pb, second) > 0);
	cr_assert_eq(verify(&k1, 1, forged, &c, &eb), REAP_E_UNAUTHENTICATED);
	cr_assert(strstr(eb.msg, "does not verify") != NULL, "%s", eb.msg);
	free(forged);
	/* one signature character changed (last char: flip to a canonical neighbour) */
	forged = strdup(tok);
	size_t n = strlen(forged);
	forged[n - 1] = forged[n - 1] == 'A' ? 'E' : 'A';
	cr_assert_eq(verify(&k1, 1, forged, &c, &eb), REAP_E_UNAUTHENTICATED);
	free(forged);
	free(pb);
	free(p);
	free(tok);
}

Test(tokens, malformed)
{
	auth_claims_t c;
	reap_errbuf_t eb = {{0}};
	char *tok = issue(&k1, "alice", AUTH_ROLE_CLIENT, NOW + 60), *t;
	char *last = strrchr(tok, '.');
	const char *simple[] = {
		"",  "abc", "abc.def", "a.b.c.d", "..", "abc..def", ".abc.def",
		"a!c.def.ghi", "eyJhbGciOiJIUzI1NiJ9=.e30.abc", "a b.c.d",
	};
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
		cr_expect_eq(verify(&k1, 1, simple[i], &c, &eb), REAP_E_UNAUTHENTICATED, "'%s'",
			     simple[i]);
	cr_expect_eq(auth_token_verify(&k1, 1, NULL, 0, NOW, &c, &eb), REAP_E_UNAUTHENTICATED);

	/* two segments: the signature cut off */
	t = strndup(tok, (size_t)(last - tok));
	cr_expect_eq(verify(&k1, 1, t, &c, &eb), REAP_E_UNAUTHENTICATED);
	cr_expect(strstr(eb.msg, "3 segments") != NULL, "%s", eb.msg);
	free(t);
	/* a fourth segment */
	cr_assert(asprintf(&t, "%s.e30", tok) > 0);
	cr_expect_eq(verify(&k1, 1, t, &c, &eb), REAP_E_UNAUTHENTICATED);
	free(t);
	/* signature one byte short, and with non-canonical trailing bits */
	t = strdup(tok);
	t[strlen(t) - 2] = '\0';
	cr_expect_eq(verify(&k1, 1, t, &c, &eb), REAP_E_UNAUTHENTICATED);
	free(t);
	t = strdup(tok);
	{
		/* 43 chars encode 32 bytes + 2 spare bits: set a spare bit */
		static const char al[] =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		char *e = t + strlen(t) - 1;
		int v = (int)(strchr(al, *e) - al);
		*e = al[v ^ 1];
	}
	cr_expect_eq(verify(&k1, 1, t, &c, &eb), REAP_E_UNAUTHENTICATED);
	free(t);
	/* huge: over AUTH_TOKEN_MAX, even if otherwise well-formed */
	size_t big = AUTH_TOKEN_MAX + 1;
	t = malloc(big + 1);
	memset(t, 'A', big);
	t[10] = '.';
	t[20] = '.';
	t[big] = '\0';
	cr_expect_eq(verify(&k1, 1, t, &c, &eb), REAP_E_UNAUTHENTICATED);
	cr_expect(strstr(eb.msg, "longer") != NULL, "%s", eb.msg);
	free(t);
	/* errors never echo the token */
	cr_expect_null(strstr(eb.msg, "AAAA"));
	free(tok);
}

Test(tokens, decode_unverified)
{
	auth_claims_t c;
	reap_errbuf_t eb = {{0}};
	char *tok = issue(&k_other, "worker-7", AUTH_ROLE_WORKER, NOW + 5); /* not our key */
	cr_assert_eq(verify(&k1, 1, tok, &c, &eb), REAP_E_UNAUTHENTICATED);
	cr_assert_eq(auth_token_decode_unverified(tok, &c, &eb), 0, "%s", eb.msg);
	cr_assert_str_eq(c.subject, "worker-7");
	cr_assert_eq(c.role, AUTH_ROLE_WORKER);
	cr_assert_eq(c.expires, NOW + 5);
	cr_assert_eq(auth_token_decode_unverified("nope", &c, &eb), REAP_E_INVALID);
	cr_assert_eq(auth_token_decode_unverified(NULL, &c, &eb), REAP_E_INVALID);
	free(tok);
}

Test(tokens, issue_refuses_bad_claims)
{
	auth_claims_t c = {.role = AUTH_ROLE_CLIENT, .issued_at = NOW, .expires = NOW + 1};
	auth_key_t short_key = k1;
	char *tok = (char *)1;
	strcpy(c.subject, "a");
	short_key.len = 16;
	cr_assert_eq(auth_token_issue(&short_key, &c, &tok, NULL), REAP_E_INVALID);
	cr_assert_null(tok);
	c.role = AUTH_ROLE_NONE;
	cr_assert_eq(auth_token_issue(&k1, &c, &tok, NULL), REAP_E_INVALID);
	c.role = AUTH_ROLE_CLIENT;
	c.expires = 0;
	cr_assert_eq(auth_token_issue(&k1, &c, &tok, NULL), REAP_E_INVALID);
	c.expires = NOW + 1;
	c.subject[0] = '\0';
	cr_assert_eq(auth_token_issue(&k1, &c, &tok, NULL), REAP_E_INVALID);
	strcpy(c.subject, "a");
	c.n_instances = 1;
	strcpy(c.instances[0], "a//b");
	cr_assert_eq(auth_token_issue(&k1, &c, &tok, NULL), REAP_E_INVALID);
	c.n_instances = AUTH_MAX_PREFIXES + 1;
	cr_assert_eq(auth_token_issue(&k1, &c, &tok, NULL), REAP_E_INVALID);
	c.n_instances = 0;
	cr_assert_eq(auth_token_issue(&k1, &c, &tok, NULL), 0);
	free(tok);
}

/* ---- key files ---- */

static char tmpdir[64];

static void mk_tmp(void)
{
	strcpy(tmpdir, "/tmp/reap-auth-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(keyfile, .init = mk_tmp, .fini = rm_tmp);

Test(keyfile, generate_load)
{
	char path[128], buf[200];
	struct stat st;
	auth_key_t k;
	reap_errbuf_t eb = {{0}};
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/token.key", tmpdir);
	umask(0); /* 0600 even so */
	cr_assert_eq(auth_key_generate_file(path, &eb), 0, "%s", eb.msg);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 07777, 0600, "mode %o", st.st_mode & 07777);
	fd = open(path, O_RDONLY);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	cr_assert_eq(n, 65);
	cr_assert_eq(buf[64], '\n');
	for (int i = 0; i < 64; i++)
		cr_assert((buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f'));
	cr_assert_eq(auth_key_load_file(path, &k, &eb), 0, "%s", eb.msg);
	cr_assert_eq(k.len, AUTH_KEY_BYTES);
	/* never overwrites */
	cr_assert_eq(auth_key_generate_file(path, &eb), REAP_E_EXISTS);
	auth_key_t k2;
	cr_assert_eq(auth_key_load_file(path, &k2, &eb), 0);
	cr_assert_eq(memcmp(k.secret, k2.secret, k.len), 0);
	/* two generated keys differ */
	snprintf(path, sizeof(path), "%s/second.key", tmpdir);
	cr_assert_eq(auth_key_generate_file(path, &eb), 0);
	cr_assert_eq(auth_key_load_file(path, &k2, &eb), 0);
	cr_assert_neq(memcmp(k.secret, k2.secret, k.len), 0);
	/* a token issued with a loaded key verifies */
	k.signing = true;
	char *tok = issue(&k, "a", AUTH_ROLE_CLIENT, NOW + 5);
	auth_claims_t c;
	cr_assert_eq(verify(&k, 1, tok, &c, &eb), 0, "%s", eb.msg);
	free(tok);
}

static void write_file(const char *path, const char *data, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	cr_assert_eq(fchmod(fd, mode), 0);
	close(fd);
}

Test(keyfile, refused)
{
	static const char hex64[] =
		"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
	char path[128], link[128];
	auth_key_t k;
	reap_errbuf_t eb = {{0}};
	static const struct {
		const char *content;
		mode_t mode;
		int err;
	} cases[] = {
		{hex64, 0644, REAP_E_PERM}, {hex64, 0640, REAP_E_PERM}, {hex64, 0604, REAP_E_PERM},
		{hex64, 0600, REAP_OK},     {hex64, 0400, REAP_OK},
		{"00112233445566778899aabbccddeeff\n", 0600, REAP_E_INVALID}, /* 16 bytes */
		{"0011223344556677889 aabbccddeeff00112233445566778899aabbccddeeff\n", 0600,
		 REAP_E_INVALID},
		{"zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 0600,
		 REAP_E_INVALID},
		{"", 0600, REAP_E_INVALID},
	};
	snprintf(path, sizeof(path), "%s/k", tmpdir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unlink(path);
		write_file(path, cases[i].content, cases[i].mode);
		cr_expect_eq(auth_key_load_file(path, &k, &eb), cases[i].err, "case %zu: %s", i,
			     eb.msg);
		if (cases[i].err != REAP_OK)
			cr_expect_eq(k.len, 0);
	}
	/* a symlink to a good key file, a FIFO, a folder, a missing file */
	unlink(path);
	write_file(path, hex64, 0600);
	snprintf(link, sizeof(link), "%s/link", tmpdir);
	cr_assert_eq(symlink(path, link), 0);
	cr_expect_eq(auth_key_load_file(link, &k, &eb), REAP_E_IO, "%s", eb.msg);
	snprintf(link, sizeof(link), "%s/fifo", tmpdir);
	cr_assert_eq(mkfifo(link, 0600), 0);
	cr_expect_eq(auth_key_load_file(link, &k, &eb), REAP_E_PERM, "%s", eb.msg);
	cr_expect_eq(auth_key_load_file(tmpdir, &k, &eb), REAP_E_PERM, "%s", eb.msg);
	snprintf(link, sizeof(link), "%s/missing", tmpdir);
	cr_expect_eq(auth_key_load_file(link, &k, &eb), REAP_E_NOT_FOUND);
	/* generate refuses to follow a symlink into an existing file */
	snprintf(link, sizeof(link), "%s/link", tmpdir);
	cr_expect_neq(auth_key_generate_file(link, &eb), REAP_OK);
}

/* ---- the HMAC ---- */

Test(tokens, hmac_sha256)
{
	/* RFC 4231 test case 2 */
	static const unsigned char want[32] = {
		0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
		0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
	unsigned char out[32], ref[EVP_MAX_MD_SIZE], key[64];
	unsigned int ref_len;
	char data[300];
	cr_assert_eq(auth_hmac_sha256((const unsigned char *)"Jefe", 4,
				      "what do ya want for nothing?", 28, out), 0);
	cr_assert_eq(memcmp(out, want, 32), 0);
	/* against OpenSSL's HMAC() for every key length 0..64 and a few data lengths */
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (unsigned char)(i * 7 + 1);
	memset(data, 'q', sizeof(data));
	for (size_t kl = 0; kl <= 64; kl++)
		for (size_t dl = 0; dl < sizeof(data); dl += 37) {
			cr_assert_eq(auth_hmac_sha256(key, kl, data, dl, out), 0);
			HMAC(EVP_sha256(), key, (int)kl, (unsigned char *)data, dl, ref, &ref_len);
			cr_assert_eq(memcmp(out, ref, 32), 0, "key %zu data %zu", kl, dl);
		}
	cr_assert_neq(auth_hmac_sha256(key, 65, data, 1, out), 0);
}

/* ---- cost ---- */

Test(tokens, verify_cost)
{
	auth_key_t keys[3] = {k1, k_other, k_other};
	auth_claims_t c;
	char *tok = issue(&k1, "bench", AUTH_ROLE_CLIENT, NOW + 60);
	struct timespec a, b;
	const int n = 20000;

	keys[1].not_after = NOW + 100;
	keys[2].secret[0] ^= 1;
	int bad = 0; /* criterion reports every assertion to its runner: keep them out of the loop */
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < n; i++)
		bad += auth_token_verify(keys, 1, tok, strlen(tok), NOW, &c, NULL) != 0;
	clock_gettime(CLOCK_MONOTONIC, &b);
	cr_assert_eq(bad, 0);
	double one = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / n /
		     1000.0;
	free(tok);
	/* the worst case: signed by the last of three keys */
	tok = issue(&keys[2], "bench", AUTH_ROLE_CLIENT, NOW + 60);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < n; i++)
		bad += auth_token_verify(keys, 3, tok, strlen(tok), NOW, &c, NULL) != 0;
	clock_gettime(CLOCK_MONOTONIC, &b);
	cr_assert_eq(bad, 0);
	double three = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) /
		       n / 1000.0;
	fprintf(stderr, "token verify: %.2f us (1 key), %.2f us (3rd of 3 keys), %zu-byte token\n",
		one, three, strlen(tok));
	free(tok);
}
