/*
 * test_policy.c - identifying callers (token, certificate, anonymous),
 * the policy (longest prefix, path segments, token instances), read
 * scopes, the proof that one caller's success never lets another in, and
 * the "auth" config section.
 */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "common/config.h"

static const auth_key_t key = {.secret = "policy test key, 32 bytes long!!", .len = 32,
			       .signing = true};
static const auth_key_t forger = {.secret = "an attacker's key, 32 bytes long", .len = 32};

static char *token(const auth_key_t *k, const char *sub, auth_role_t role,
		   const char *const *inst, size_t n)
{
	auth_claims_t c = {.role = role, .n_instances = n};
	reap_errbuf_t eb = {{0}};
	char *tok = NULL, *hdr = NULL;
	c.issued_at = (int64_t)time(NULL);
	c.expires = c.issued_at + 600;
	snprintf(c.subject, sizeof(c.subject), "%s", sub);
	for (size_t i = 0; i < n; i++)
		snprintf(c.instances[i], sizeof(c.instances[i]), "%s", inst[i]);
	cr_assert_eq(auth_token_issue(k, &c, &tok, &eb), 0, "%s", eb.msg);
	cr_assert(asprintf(&hdr, "Bearer %s", tok) > 0);
	free(tok);
	return hdr;
}

static int identify(const auth_policy_t *p, const char *addr, const char *cert,
		    const char *authz, auth_identity_t *id, reap_errbuf_t *eb)
{
	auth_peer_t peer = {.addr = addr, .cert_subject = cert};
	return auth_identify(p, &peer, authz, authz ? strlen(authz) : 0, id, eb);
}

static auth_policy_t *policy(const auth_config_t *cfg)
{
	reap_errbuf_t eb = {{0}};
	auth_config_t c = *cfg;
	c.keys = &key;
	c.n_keys = 1;
	auth_policy_t *p = auth_policy_new(&c, &eb);
	cr_assert_not_null(p, "%s", eb.msg);
	return p;
}

#define R AUTH_CAS_READ
#define W AUTH_CAS_WRITE
#define AR AUTH_AC_READ
#define AW AUTH_AC_WRITE
#define X AUTH_EXECUTE

/* ---- the policy ---- */

Test(policy, defaults)
{
	reap_errbuf_t eb = {{0}};
	auth_policy_t *p = auth_policy_new(NULL, &eb);
	auth_identity_t id;
	cr_assert_not_null(p, "%s", eb.msg);
	cr_assert_eq(identify(p, "ipv4:127.0.0.1:4000", NULL, NULL, &id, &eb), 0, "%s", eb.msg);
	cr_assert_eq(id.role, AUTH_ROLE_CLIENT);
	cr_assert_eq(id.via, AUTH_VIA_ANONYMOUS);
	cr_assert_eq(auth_check(p, &id, "any/thing", R | W | AR | X, &eb), 0, "%s", eb.msg);
	cr_assert_eq(auth_check(p, &id, "x", AW, &eb), REAP_E_PERM);
	cr_assert_eq(auth_check(p, &id, "x", AUTH_WORK, &eb), REAP_E_PERM);
	cr_assert_eq(auth_check(p, &id, "x", AUTH_ADMIN, &eb), REAP_E_PERM);
	/* a token with no keys configured is refused */
	cr_assert_eq(identify(p, "ipv4:127.0.0.1:4000", NULL, "Bearer a.b.c", &id, &eb),
		     REAP_E_UNAUTHENTICATED);
	auth_policy_free(p);
	auth_policy_free(NULL);
}

Test(policy, longest_prefix_and_segments)
{
	const auth_rule_t rules[] = {
		{.prefix = "", .perms = {[AUTH_ROLE_CLIENT] = R}},
		{.prefix = "team-a", .perms = {[AUTH_ROLE_CLIENT] = R | W | AR | X,
					       [AUTH_ROLE_WRITER] = R | W | AR | AW}},
		{.prefix = "team-a/secret", .perms = {[AUTH_ROLE_WRITER] = R}},
		{.prefix = "ci/", .perms = {[AUTH_ROLE_WRITER] = AW}},
	};
	auth_config_t cfg = {.anonymous = AUTH_ANON_ANY, .rules = rules, .n_rules = 4};
	auth_policy_t *p = policy(&cfg);
	auth_identity_t client = {.role = AUTH_ROLE_CLIENT, .subject = "c", .n_prefixes = 1};
	auth_identity_t writer = {.role = AUTH_ROLE_WRITER, .subject = "w", .n_prefixes = 1};
	const struct {
		const auth_identity_t *id;
		const char *instance;
		unsigned perm;
		int want;
	} cases[] = {
		{&client, "team-a", W, REAP_OK},
		{&client, "team-a/x/y", X, REAP_OK},
		{&client, "team-ab", W, REAP_E_PERM},      /* "team-a" is not a prefix of it */
		{&client, "team-ab", R, REAP_OK},          /* the "" rule */
		{&client, "team-a/secret", R, REAP_E_PERM}, /* longest rule gives clients nothing */
		{&client, "team-a/secret/z", R, REAP_E_PERM},
		{&client, "team-a/secretive", W, REAP_OK}, /* not under "team-a/secret" */
		{&client, "", R, REAP_OK},
		{&client, "", W, REAP_E_PERM},
		{&writer, "team-a", AW, REAP_OK},
		{&writer, "team-a/secret", AW, REAP_E_PERM},
		{&writer, "team-a/secret", R, REAP_OK},
		{&writer, "ci", AW, REAP_E_PERM}, /* "ci/" covers what is below "ci", not "ci" */
		{&writer, "ci/main", AW, REAP_OK},
		{&writer, "cix", AW, REAP_E_PERM},
		{&writer, "other", R, REAP_E_PERM}, /* "" gives writers nothing */
		{&client, "team-a", R | AW, REAP_E_PERM}, /* every bit must be allowed */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		reap_errbuf_t eb = {{0}};
		int err = auth_check(p, cases[i].id, cases[i].instance, (auth_perm_t)cases[i].perm,
				     &eb);
		cr_expect_eq(err, cases[i].want, "case %zu (%s in '%s'): got %d %s", i,
			     cases[i].id->subject, cases[i].instance, err, eb.msg);
	}
	/* no rule covers the instance: refused */
	const auth_rule_t only[] = {{.prefix = "a", .perms = {[AUTH_ROLE_CLIENT] = R}}};
	auth_config_t c2 = {.rules = only, .n_rules = 1};
	auth_policy_t *p2 = policy(&c2);
	cr_expect_eq(auth_check(p2, &client, "b", R, NULL), REAP_E_PERM);
	cr_expect_eq(auth_check(p2, &client, "a", R, NULL), REAP_OK);
	auth_policy_free(p2);
	auth_policy_free(p);
}

Test(policy, token_instances_restrict)
{
	auth_config_t cfg = {.anonymous = AUTH_ANON_NONE};
	auth_policy_t *p = policy(&cfg);
	const char *inst[] = {"team-a", "ci/"};
	char *hdr = token(&key, "alice", AUTH_ROLE_WRITER, inst, 2), *none;
	auth_identity_t id;
	reap_errbuf_t eb = {{0}};

	cr_assert_eq(identify(p, "ipv4:10.1.2.3:5", NULL, hdr, &id, &eb), 0, "%s", eb.msg);
	cr_assert_eq(id.via, AUTH_VIA_TOKEN);
	cr_assert_str_eq(id.subject, "alice");
	cr_assert_gt(id.expires, 0);
	cr_expect_eq(auth_check(p, &id, "team-a", AW, &eb), REAP_OK, "%s", eb.msg);
	cr_expect_eq(auth_check(p, &id, "team-a/sub", AW, &eb), REAP_OK, "%s", eb.msg);
	cr_expect_eq(auth_check(p, &id, "ci/x", R, &eb), REAP_OK, "%s", eb.msg);
	cr_expect_eq(auth_check(p, &id, "team-ab", R, &eb), REAP_E_PERM);
	cr_expect_eq(auth_check(p, &id, "team-b", R, &eb), REAP_E_PERM);
	cr_expect(strstr(eb.msg, "may not use instance") != NULL, "%s", eb.msg);
	cr_expect_eq(auth_check(p, &id, "", R, &eb), REAP_E_PERM);
	/* an empty "instances" claim allows nothing */
	none = token(&key, "nobody", AUTH_ROLE_ADMIN, NULL, 0);
	cr_assert_eq(identify(p, "ipv4:10.1.2.3:5", NULL, none, &id, &eb), 0, "%s", eb.msg);
	cr_expect_eq(auth_check(p, &id, "", R, &eb), REAP_E_PERM);
	cr_expect_eq(auth_check(p, &id, "x", R, &eb), REAP_E_PERM);
	free(hdr);
	free(none);
	auth_policy_free(p);
}

Test(policy, anonymous_by_peer)
{
	static const struct {
		auth_anonymous_t mode;
		const char *addr;
		int want;
	} cases[] = {
		{AUTH_ANON_LOOPBACK, "ipv4:127.0.0.1:5000", REAP_OK},
		{AUTH_ANON_LOOPBACK, "ipv4:127.1.2.3:5000", REAP_OK},
		{AUTH_ANON_LOOPBACK, "ipv6:[::1]:5000", REAP_OK},
		{AUTH_ANON_LOOPBACK, "ipv6:%5B::1%5D:5000", REAP_OK}, /* gRPC >= 1.47 */
		{AUTH_ANON_LOOPBACK, "unix:/run/reap.sock", REAP_OK},
		{AUTH_ANON_LOOPBACK, "ipv4:10.0.0.1:5", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_LOOPBACK, "ipv4:128.0.0.1:5", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_LOOPBACK, "ipv4:1.127.0.0:5", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_LOOPBACK, "ipv6:%5B::2%5D:5", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_LOOPBACK, "ipv6:%5B::1:2%5D:5", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_LOOPBACK, "ipv6:[::10]:5", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_LOOPBACK, "", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_LOOPBACK, NULL, REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_NONE, "ipv4:127.0.0.1:5000", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_NONE, "unix:/run/reap.sock", REAP_E_UNAUTHENTICATED},
		{AUTH_ANON_ANY, "ipv4:10.0.0.1:5", REAP_OK},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		auth_config_t cfg = {.anonymous = cases[i].mode,
				     .anonymous_role = AUTH_ROLE_WRITER};
		auth_policy_t *p = policy(&cfg);
		auth_identity_t id;
		reap_errbuf_t eb = {{0}};
		int err = identify(p, cases[i].addr, NULL, NULL, &id, &eb);
		cr_expect_eq(err, cases[i].want, "case %zu (%s): got %d", i,
			     cases[i].addr ? cases[i].addr : "NULL", err);
		if (err == REAP_OK) {
			cr_expect_eq(id.role, AUTH_ROLE_WRITER);
			cr_expect_str_eq(id.subject, "anonymous");
			cr_expect_eq(id.via, AUTH_VIA_ANONYMOUS);
		} else {
			cr_expect_eq(id.role, AUTH_ROLE_NONE);
		}
		auth_policy_free(p);
	}
}

Test(policy, certificates)
{
	const char *ci_inst[] = {"ci"};
	const auth_cert_rule_t certs[] = {
		{.subject = "ci.example.com", .role = AUTH_ROLE_WRITER, .instances = ci_inst,
		 .n_instances = 1},
		{.subject = "ops.example.com", .role = AUTH_ROLE_ADMIN},
	};
	auth_config_t cfg = {.anonymous = AUTH_ANON_ANY, .certs = certs, .n_certs = 2,
			     .cert_default_role = AUTH_ROLE_NONE};
	auth_policy_t *p = policy(&cfg);
	auth_identity_t id;
	reap_errbuf_t eb = {{0}};

	cr_assert_eq(identify(p, "ipv4:10.0.0.9:1", "ci.example.com", NULL, &id, &eb), 0, "%s",
		     eb.msg);
	cr_expect_eq(id.via, AUTH_VIA_CERT);
	cr_expect_eq(id.role, AUTH_ROLE_WRITER);
	cr_expect_eq(auth_check(p, &id, "ci/main", AW, &eb), REAP_OK, "%s", eb.msg);
	cr_expect_eq(auth_check(p, &id, "dev", R, &eb), REAP_E_PERM);
	cr_assert_eq(identify(p, "ipv4:10.0.0.9:1", "ops.example.com", NULL, &id, &eb), 0);
	cr_expect_eq(id.role, AUTH_ROLE_ADMIN);
	cr_expect_eq(auth_check(p, &id, "anything", AUTH_ADMIN, &eb), REAP_OK, "%s", eb.msg);
	/* a verified but unlisted certificate: refused, not anonymous, with default none */
	cr_expect_eq(identify(p, "ipv4:127.0.0.1:1", "stranger.example.com", NULL, &id, &eb),
		     REAP_E_UNAUTHENTICATED);
	cr_expect(strstr(eb.msg, "no role") != NULL, "%s", eb.msg);
	/* subjects match exactly */
	cr_expect_eq(identify(p, "ipv4:127.0.0.1:1", "CI.example.com", NULL, &id, &eb),
		     REAP_E_UNAUTHENTICATED);
	cr_expect_eq(identify(p, "ipv4:127.0.0.1:1", "ci.example.com.evil", NULL, &id, &eb),
		     REAP_E_UNAUTHENTICATED);
	auth_policy_free(p);

	cfg.cert_default_role = AUTH_ROLE_CLIENT;
	p = policy(&cfg);
	cr_assert_eq(identify(p, "ipv4:10.0.0.9:1", "stranger.example.com", NULL, &id, &eb), 0);
	cr_expect_eq(id.role, AUTH_ROLE_CLIENT);
	cr_expect_eq(auth_check(p, &id, "dev", R, &eb), REAP_OK);
	/* a token wins over the certificate; a bad token does not fall back to it */
	char *hdr = token(&key, "tok", AUTH_ROLE_CLIENT, (const char *[]){""}, 1);
	cr_assert_eq(identify(p, "ipv4:10.0.0.9:1", "ops.example.com", hdr, &id, &eb), 0);
	cr_expect_eq(id.via, AUTH_VIA_TOKEN);
	cr_expect_eq(id.role, AUTH_ROLE_CLIENT);
	free(hdr);
	hdr = token(&forger, "tok", AUTH_ROLE_CLIENT, (const char *[]){""}, 1);
	cr_expect_eq(identify(p, "ipv4:10.0.0.9:1", "ops.example.com", hdr, &id, &eb),
		     REAP_E_UNAUTHENTICATED);
	free(hdr);
	auth_policy_free(p);
}

Test(policy, authorization_header_forms)
{
	auth_config_t cfg = {.anonymous = AUTH_ANON_ANY};
	auth_policy_t *p = policy(&cfg);
	char *hdr = token(&key, "alice", AUTH_ROLE_CLIENT, (const char *[]){""}, 1);
	auth_identity_t id;
	reap_errbuf_t eb = {{0}};
	const char *tok = hdr + 7;
	char *v;

	static const char *const refused[] = {"Basic YWxpY2U6cHc=", "Bearer", "Bearer ",
					      "Bearer  x.y.z", "Token abc"};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		cr_expect_eq(identify(p, "ipv4:127.0.0.1:1", NULL, refused[i], &id, &eb),
			     REAP_E_UNAUTHENTICATED, "'%s' (anonymous is allowed, still refused)",
			     refused[i]);
	cr_assert(asprintf(&v, "bearer %s", tok) > 0);
	cr_expect_eq(identify(p, "ipv4:127.0.0.1:1", NULL, v, &id, &eb), REAP_OK, "%s", eb.msg);
	free(v);
	cr_assert(asprintf(&v, "Bearer %s ", tok) > 0); /* trailing space */
	cr_expect_eq(identify(p, "ipv4:127.0.0.1:1", NULL, v, &id, &eb), REAP_E_UNAUTHENTICATED);
	free(v);
	free(hdr);
	auth_policy_free(p);
}

Test(policy, read_scopes)
{
	const auth_rule_t rules[] = {
		{.prefix = "", .perms = {[AUTH_ROLE_CLIENT] = R}},
		{.prefix = "org", .shared = true},
		{.prefix = "org/team", .shared = true},
		{.prefix = "org/team/a", .shared = false},
		{.prefix = "orgx", .shared = true},
	};
	auth_config_t cfg = {.rules = rules, .n_rules = 5};
	auth_policy_t *p = policy(&cfg);
	const char *out[8];
	size_t n;

	n = auth_read_scopes(p, "org/team/a/x", out, 8);
	cr_assert_eq(n, 3);
	cr_expect_str_eq(out[0], "org/team/a/x");
	cr_expect_str_eq(out[1], "org");
	cr_expect_str_eq(out[2], "org/team");
	n = auth_read_scopes(p, "org", out, 8); /* itself once, not twice */
	cr_assert_eq(n, 1);
	cr_expect_str_eq(out[0], "org");
	n = auth_read_scopes(p, "organic", out, 8); /* "org" is not a segment prefix */
	cr_expect_eq(n, 1);
	n = auth_read_scopes(p, "orgx/1", out, 8);
	cr_expect_eq(n, 2);
	cr_expect_str_eq(out[1], "orgx");
	n = auth_read_scopes(p, "org/team/a/x", out, 2); /* bounded by max */
	cr_expect_eq(n, 2);
	cr_expect_eq(auth_read_scopes(p, "org", out, 0), 0);
	auth_policy_free(p);
}

Test(policy, loopback_network_by_longest_rule)
{
	const auth_rule_t rules[] = {
		{.prefix = "", .perms = {[AUTH_ROLE_CLIENT] = R}},
		{.prefix = "lab", .loopback_network = true},
		{.prefix = "lab/prod", .loopback_network = false},
	};
	auth_config_t cfg = {.rules = rules, .n_rules = 3};
	auth_policy_t *p = policy(&cfg);
	cr_expect_not(auth_loopback_network(p, ""));
	cr_expect(auth_loopback_network(p, "lab"));
	cr_expect(auth_loopback_network(p, "lab/x"));
	cr_expect_not(auth_loopback_network(p, "lab/prod/x"), "a longer rule turns it off");
	cr_expect_not(auth_loopback_network(p, "labs"), "segment prefixes only");
	auth_policy_free(p);
}

/* ---- one caller's success never lets another in ---- */

Test(policy, no_cross_caller_leak)
{
	auth_config_t cfg = {.anonymous = AUTH_ANON_LOOPBACK};
	auth_policy_t *p = policy(&cfg);
	const char *peer = "ipv4:10.9.8.7:4242";
	char *good = token(&key, "alice", AUTH_ROLE_WRITER, (const char *[]){""}, 1);
	char *forged = token(&forger, "alice", AUTH_ROLE_WRITER, (const char *[]){""}, 1);
	char *admin = NULL;
	auth_identity_t a, b;
	reap_errbuf_t eb = {{0}};

	cr_assert_eq(identify(p, peer, NULL, good, &a, &eb), 0, "%s", eb.msg);
	cr_assert_eq(a.role, AUTH_ROLE_WRITER);
	/* B: same peer, same subject claim, signed with another key */
	cr_expect_eq(identify(p, peer, NULL, forged, &b, &eb), REAP_E_UNAUTHENTICATED);
	cr_expect_eq(b.role, AUTH_ROLE_NONE);
	cr_expect_eq(b.n_prefixes, 0);
	cr_expect_neq(auth_check(p, &b, "", R, NULL), REAP_OK);
	/* B: same peer, no credential (anonymous is loopback-only) */
	cr_expect_eq(identify(p, peer, NULL, NULL, &b, &eb), REAP_E_UNAUTHENTICATED);
	/* B: A's header and signature, claims swapped for admin */
	{
		static const char claims[] =
			"{\"sub\":\"alice\",\"role\":\"admin\",\"instances\":[\"\"],\"exp\":4102444800}";
		unsigned char enc[256];
		int n = EVP_EncodeBlock(enc, (const unsigned char *)claims, (int)strlen(claims));
		for (int i = 0; i < n; i++)
			enc[i] = enc[i] == '+' ? '-' : enc[i] == '/' ? '_' : enc[i];
		while (n > 0 && enc[n - 1] == '=')
			enc[--n] = '\0';
		char *first = strchr(good, '.'), *second = strchr(first + 1, '.');
		cr_assert(asprintf(&admin, "%.*s.%s%s", (int)(first - good), good, enc,
				   second) > 0);
		cr_expect_eq(identify(p, peer, NULL, admin, &b, &eb), REAP_E_UNAUTHENTICATED);
		cr_expect(strstr(eb.msg, "does not verify") != NULL, "%s", eb.msg);
		cr_expect_eq(b.role, AUTH_ROLE_NONE);
	}
	/* and A still works afterwards: nothing is remembered either way */
	cr_assert_eq(identify(p, peer, NULL, good, &a, &eb), 0, "%s", eb.msg);
	free(admin);
	free(good);
	free(forged);
	auth_policy_free(p);
}

typedef struct race {
	const auth_policy_t *p;
	const char *good, *forged;
	int start; /* which kind of call this thread makes first */
	int wrong; /* decisions that differ from what each header deserves */
} race_t;

static void *race_thread(void *arg)
{
	race_t *r = arg;
	for (int i = 0; i < 2000; i++) {
		auth_identity_t id;
		bool good = ((i + r->start) & 1) == 0;
		int err = identify(r->p, "ipv4:10.0.0.1:999", NULL, good ? r->good : r->forged, &id,
				   NULL);
		if (good != (err == REAP_OK) || (!good && id.role != AUTH_ROLE_NONE) ||
		    (good && id.role != AUTH_ROLE_CLIENT))
			r->wrong++;
	}
	return NULL;
}

Test(policy, no_cross_caller_leak_threads)
{
	auth_config_t cfg = {.anonymous = AUTH_ANON_LOOPBACK};
	auth_policy_t *p = policy(&cfg);
	char *good = token(&key, "alice", AUTH_ROLE_CLIENT, (const char *[]){""}, 1);
	char *forged = token(&forger, "alice", AUTH_ROLE_CLIENT, (const char *[]){""}, 1);
	pthread_t t[6];
	race_t r[6];
	for (int i = 0; i < 6; i++) {
		r[i] = (race_t){.p = p, .good = good, .forged = forged, .start = i % 2};
		cr_assert_eq(pthread_create(&t[i], NULL, race_thread, &r[i]), 0);
	}
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(r[i].wrong, 0, "thread %d: %d wrong decisions", i, r[i].wrong);
	}
	free(good);
	free(forged);
	auth_policy_free(p);
}

/* ---- the "auth" config section ---- */

static char dir[64];

static void mk_dir(void)
{
	strcpy(dir, "/tmp/reap-authcfg-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(authcfg, .init = mk_dir, .fini = rm_dir);

static reap_config_t *load_json(const char *json)
{
	char path[128];
	reap_errbuf_t eb = {{0}};
	snprintf(path, sizeof(path), "%s/reapd.json", dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(json, f);
	fclose(f);
	reap_config_t *c = reap_config_load(path, &eb);
	cr_assert_not_null(c, "%s", eb.msg);
	return c;
}

static void make_keys(void)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/token.key", dir);
	cr_assert_eq(auth_key_generate_file(path, NULL), 0);
	snprintf(path, sizeof(path), "%s/old.key", dir);
	cr_assert_eq(auth_key_generate_file(path, NULL), 0);
}

Test(authcfg, defaults)
{
	auth_config_t *c = NULL;
	char want[128];
	cr_assert_eq(auth_config_load(NULL, dir, &c, NULL), 0);
	cr_expect_eq(c->anonymous, AUTH_ANON_LOOPBACK);
	cr_expect_eq(c->anonymous_role, AUTH_ROLE_NONE);
	cr_expect_eq(c->n_keys, 0);
	cr_expect_null(c->rules);
	cr_expect_eq(c->n_certs, 0);
	cr_expect_eq(c->cert_default_role, AUTH_ROLE_NONE);
	snprintf(want, sizeof(want), "%s/audit.log", dir);
	cr_expect_str_eq(c->audit_path, want);
	auth_config_free(c);
	/* a config file without "auth": the same */
	reap_config_t *rc = load_json("{\"listen\": \"x\"}");
	cr_assert_eq(auth_config_load(rc, dir, &c, NULL), 0);
	cr_expect_null(c->rules);
	auth_config_free(c);
	reap_config_free(rc);
	auth_config_free(NULL);
}

Test(authcfg, full_example)
{
	make_keys();
	reap_config_t *rc = load_json(
		"{\n"
		"  \"listen\": \"127.0.0.1:8980\",\n"
		"  \"auth\": {\n"
		"    \"anonymous\": \"none\",\n"
		"    \"anonymous_role\": \"writer\",\n"
		"    \"keys\": [\"token.key\", {\"file\": \"old.key\", \"until\": "
		"\"2099-12-31T23:59:59Z\"}],\n"
		"    \"policy\": [\n"
		"      {\"prefix\": \"\", \"client\": [\"cas_read\", \"ac_read\"]},\n"
		"      {\"prefix\": \"team-a\", \"shared\": true,\n"
		"       \"client\": [\"cas_read\",\"cas_write\",\"ac_read\",\"execute\"],\n"
		"       \"writer\": [\"cas_read\",\"cas_write\",\"ac_read\",\"ac_write\"],\n"
		"       \"worker\": [\"cas_read\",\"cas_write\",\"ac_read\",\"work\"],\n"
		"       \"admin\": [\"all\"]}\n"
		"    ],\n"
		"    \"certs\": [{\"subject\": \"ci.example.com\", \"role\": \"writer\", "
		"\"instances\": [\"ci\", \"team-a/\"]},\n"
		"              {\"subject\": \"ops\", \"role\": \"admin\"}],\n"
		"    \"cert_default_role\": \"client\",\n"
		"    \"audit_log\": \"logs/audit.jsonl\"\n"
		"  }\n"
		"}\n");
	const char *listen = NULL;
	auth_config_t *c = NULL;
	reap_errbuf_t eb = {{0}};
	char want[128];

	cr_assert_eq(reap_config_string(rc, "listen", &listen, &eb), 0);
	cr_assert_eq(auth_config_load(rc, dir, &c, &eb), 0, "%s", eb.msg);
	cr_expect_eq(reap_config_check_unknown(rc, &eb), 0, "\"auth\" is known: %s", eb.msg);
	reap_config_free(rc); /* the auth config owns its memory */

	cr_expect_eq(c->anonymous, AUTH_ANON_NONE);
	cr_expect_eq(c->anonymous_role, AUTH_ROLE_WRITER);
	cr_assert_eq(c->n_keys, 2);
	cr_expect(c->keys[0].signing);
	cr_expect_eq(c->keys[0].not_after, 0);
	cr_expect_eq(c->keys[0].len, 32);
	cr_expect_not(c->keys[1].signing);
	cr_expect_eq(c->keys[1].not_after, 4102444799LL);
	cr_assert_eq(c->n_rules, 2);
	cr_expect_str_eq(c->rules[0].prefix, "");
	cr_expect_eq(c->rules[0].perms[AUTH_ROLE_CLIENT], R | AR);
	cr_expect_eq(c->rules[0].perms[AUTH_ROLE_WRITER], 0);
	cr_expect_str_eq(c->rules[1].prefix, "team-a");
	cr_expect(c->rules[1].shared);
	cr_expect_eq(c->rules[1].perms[AUTH_ROLE_CLIENT], R | W | AR | X);
	cr_expect_eq(c->rules[1].perms[AUTH_ROLE_WRITER], R | W | AR | AW);
	cr_expect_eq(c->rules[1].perms[AUTH_ROLE_WORKER], R | W | AR | AUTH_WORK);
	cr_expect_eq(c->rules[1].perms[AUTH_ROLE_ADMIN], AUTH_PERM_ALL);
	cr_assert_eq(c->n_certs, 2);
	cr_expect_str_eq(c->certs[0].subject, "ci.example.com");
	cr_expect_eq(c->certs[0].role, AUTH_ROLE_WRITER);
	cr_assert_eq(c->certs[0].n_instances, 2);
	cr_expect_str_eq(c->certs[0].instances[1], "team-a/");
	cr_expect_eq(c->certs[1].n_instances, 0);
	cr_expect_eq(c->cert_default_role, AUTH_ROLE_CLIENT);
	snprintf(want, sizeof(want), "%s/logs/audit.jsonl", dir);
	cr_expect_str_eq(c->audit_path, want);

	/* it builds a working policy */
	snprintf(want, sizeof(want), "%s/logs", dir);
	cr_assert_eq(mkdir(want, 0700), 0);
	auth_policy_t *p = auth_policy_new(c, &eb);
	cr_assert_not_null(p, "%s", eb.msg);
	auth_identity_t id;
	cr_assert_eq(identify(p, "ipv4:10.0.0.1:1", "ci.example.com", NULL, &id, &eb), 0);
	cr_expect_eq(auth_check(p, &id, "team-a/x", AW, &eb), REAP_OK, "%s", eb.msg);
	cr_expect_eq(auth_check(p, &id, "ci", AW, &eb), REAP_E_PERM); /* "" rule: no writer */
	auth_policy_free(p);
	auth_config_free(c);
}

Test(authcfg, audit_log_off_and_absolute)
{
	const char *cases[][2] = {
		{"{\"auth\": {\"audit_log\": null}}", NULL},
		{"{\"auth\": {\"audit_log\": \"\"}}", NULL},
		{"{\"auth\": {\"audit_log\": \"/var/log/reap/audit.log\"}}", "/var/log/reap/audit.log"},
	};
	for (size_t i = 0; i < 3; i++) {
		reap_config_t *rc = load_json(cases[i][0]);
		auth_config_t *c = NULL;
		reap_errbuf_t eb = {{0}};
		cr_assert_eq(auth_config_load(rc, dir, &c, &eb), 0, "%s", eb.msg);
		if (cases[i][1] == NULL)
			cr_expect_null(c->audit_path, "case %zu", i);
		else
			cr_expect_str_eq(c->audit_path, cases[i][1]);
		auth_config_free(c);
		reap_config_free(rc);
	}
}

Test(authcfg, each_bad_key_names_itself)
{
	static const struct {
		const char *auth; /* the value of "auth" */
		int err;
		const char *says;
	} cases[] = {
		{"[]", REAP_E_INVALID, "auth: must be an object"},
		{"{\"anonymus\": \"none\"}", REAP_E_INVALID, "auth: unknown key \"anonymus\""},
		{"{\"anonymous\": \"lan\"}", REAP_E_INVALID, "auth.anonymous: 'lan' is not"},
		{"{\"anonymous\": true}", REAP_E_INVALID, "auth.anonymous: must be a string"},
		{"{\"anonymous_role\": \"root\"}", REAP_E_INVALID, "auth.anonymous_role: 'root'"},
		{"{\"anonymous_role\": \"none\"}", REAP_E_INVALID, "auth.anonymous_role: 'none'"},
		{"{\"policy\": [{\"prefix\": \"\"}, {\"prefix\": \"a\", \"client\": "
		 "[\"cas_read\", \"ac_read\", \"cas_raed\"]}]}",
		 REAP_E_INVALID, "auth.policy[1].client[2]: 'cas_raed' is not a permission"},
		{"{\"policy\": [{\"prefix\": \"a\", \"client\": \"all\"}]}", REAP_E_INVALID,
		 "auth.policy[0].client: must be an array"},
		{"{\"policy\": [{\"prefix\": \"a\", \"admin\": [1]}]}", REAP_E_INVALID,
		 "auth.policy[0].admin[0]: must be a string"},
		{"{\"policy\": [{\"client\": [\"all\"]}]}", REAP_E_INVALID,
		 "auth.policy[0]: needs a \"prefix\""},
		{"{\"policy\": [{\"prefix\": \"a//b\"}]}", REAP_E_INVALID, "auth.policy[0].prefix:"},
		{"{\"policy\": [{\"prefix\": \"a\", \"shared\": \"yes\"}]}", REAP_E_INVALID,
		 "auth.policy[0].shared: must be true or false"},
		{"{\"policy\": [{\"prefix\": \"a\", \"clients\": []}]}", REAP_E_INVALID,
		 "auth.policy[0]: unknown key \"clients\""},
		{"{\"policy\": [{\"prefix\": \"a\", \"none\": []}]}", REAP_E_INVALID,
		 "auth.policy[0]: unknown key \"none\""},
		{"{\"policy\": [{\"prefix\": \"a\"}, {\"prefix\": \"a\"}]}", REAP_E_INVALID,
		 "auth.policy[1].prefix: 'a' already has a rule"},
		{"{\"policy\": []}", REAP_E_INVALID, "auth.policy: must be an array of 1"},
		{"{\"policy\": [\"a\"]}", REAP_E_INVALID, "auth.policy[0]: must be an object"},
		{"{\"keys\": []}", REAP_E_INVALID, "auth.keys: must name 1 to 8"},
		{"{\"keys\": [{\"until\": \"2030-01-01T00:00:00Z\"}]}", REAP_E_INVALID,
		 "auth.keys[0]: needs a \"file\""},
		{"{\"keys\": [{\"file\": \"token.key\", \"util\": \"x\"}]}", REAP_E_INVALID,
		 "auth.keys[0]: unknown key \"util\""},
		{"{\"keys\": [\"token.key\", {\"file\": \"old.key\", \"until\": \"2030-02-30T00:00:00Z\"}]}",
		 REAP_E_INVALID, "auth.keys[1].until: '2030-02-30T00:00:00Z' is not a UTC time"},
		{"{\"keys\": [\"token.key\", {\"file\": \"old.key\", \"until\": \"2030-01-01\"}]}",
		 REAP_E_INVALID, "auth.keys[1].until:"},
		{"{\"keys\": [{\"file\": \"old.key\", \"until\": \"2030-01-01T00:00:00Z\"}]}",
		 REAP_E_INVALID, "auth.keys: needs one entry without \"until\""},
		{"{\"keys\": [\"missing.key\"]}", REAP_E_NOT_FOUND, "auth.keys[0]: cannot open"},
		{"{\"keys\": [\"open.key\"]}", REAP_E_PERM, "auth.keys[0]: key file"},
		{"{\"keys\": [7]}", REAP_E_INVALID, "auth.keys[0]: must be a path"},
		{"{\"certs\": [{\"subject\": \"a\", \"role\": \"god\"}]}", REAP_E_INVALID,
		 "auth.certs[0].role: 'god' is not a role"},
		{"{\"certs\": [{\"subject\": \"a\"}]}", REAP_E_INVALID,
		 "auth.certs[0]: needs a \"subject\" and a \"role\""},
		{"{\"certs\": [{\"subject\": \"a\", \"role\": \"client\", \"instance\": []}]}",
		 REAP_E_INVALID, "auth.certs[0]: unknown key \"instance\""},
		{"{\"certs\": [{\"subject\": \"a\", \"role\": \"client\", \"instances\": []}]}",
		 REAP_E_INVALID, "auth.certs[0].instances: must be an array of 1 to 8"},
		{"{\"certs\": [{\"subject\": \"a\", \"role\": \"client\", \"instances\": [\"x/../y\"]}]}",
		 REAP_E_INVALID, "auth.certs[0].instances[0]:"},
		{"{\"certs\": [{\"subject\": \"a\", \"role\": \"client\"}, {\"subject\": \"a\", "
		 "\"role\": \"admin\"}]}",
		 REAP_E_INVALID, "auth.certs[1].subject: 'a' is listed twice"},
		{"{\"certs\": [{\"subject\": \"\", \"role\": \"client\"}]}", REAP_E_INVALID,
		 "auth.certs[0].subject:"},
		{"{\"cert_default_role\": \"guest\"}", REAP_E_INVALID,
		 "auth.cert_default_role: 'guest' is not a role"},
		{"{\"audit_log\": 5}", REAP_E_INVALID, "auth.audit_log: must be a string"},
	};
	char path[128];
	make_keys();
	snprintf(path, sizeof(path), "%s/open.key", dir);
	FILE *f = fopen(path, "w");
	fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f);
	fclose(f);
	chmod(path, 0644);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *json = NULL;
		cr_assert(asprintf(&json, "{\"auth\": %s}", cases[i].auth) > 0);
		reap_config_t *rc = load_json(json);
		auth_config_t *c = (auth_config_t *)1;
		reap_errbuf_t eb = {{0}};
		int err = auth_config_load(rc, dir, &c, &eb);
		cr_expect_eq(err, cases[i].err, "case %zu (%s): got %d %s", i, cases[i].auth, err,
			     eb.msg);
		cr_expect_null(c, "case %zu", i);
		cr_expect(strstr(eb.msg, cases[i].says) != NULL, "case %zu: '%s' lacks '%s'", i,
			  eb.msg, cases[i].says);
		cr_expect(strstr(eb.msg, "reapd.json") != NULL, "case %zu names the file: %s", i,
			  eb.msg);
		reap_config_free(rc);
		free(json);
	}
}
