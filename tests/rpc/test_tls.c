/*
 * test_tls.c - TLS and mTLS end to end: a real server on 127.0.0.1 (port 0)
 * with one unary method that reports the caller's certificate identity,
 * driven by the module's own client over TLS.
 *
 * The PKI is made fresh for every test with the OpenSSL API in a temporary
 * folder (nothing is checked in): a CA; a server certificate for localhost
 * and 127.0.0.1; client certificates from that CA ("worker-1" with SANs,
 * "worker-2" with a common name only); and a second, untrusted CA with its
 * own "worker-1" client certificate. Every failure case also checks that
 * the handler never ran.
 *
 * Method /reap.test.T/Who (unary Digest -> Digest): answers the caller's
 * rpc_call_peer_cert_subject in hash ("(none)" for NULL), "uncached" if a
 * second lookup in the same call gave a different pointer.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/rpc.h"

typedef Build__Bazel__Remote__Execution__V2__Digest digest_t;
#define DIGEST_INIT BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT
#define DIGEST_DESC (&build__bazel__remote__execution__v2__digest__descriptor)

/* grpc_status_code values, so the test needs no gRPC header. */
enum { ST_OK = 0, ST_UNAVAILABLE = 14 };

#define CALL_TIMEOUT_MS 5000
#define WORKER1_SAN "spiffe://reap.test/worker/worker-1"

static atomic_int handler_calls;
static rpc_server_t *srv;
static int port;
static char dir[64];

/* ---- the PKI ---- */

static void fx_path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

/* A static path for name in the fixture folder (a few may be live at once). */
static const char *fx(const char *name)
{
	static char bufs[8][128];
	static int next;
	char *b = bufs[next++ % 8];

	fx_path(b, sizeof(bufs[0]), name);
	return b;
}

static void add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);

	cr_assert_not_null(ext, "extension %d=%s", nid, value);
	cr_assert_eq(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/*
 * A certificate for key named cn, signed by issuer/issuer_key (NULL: self-
 * signed CA). san may be NULL.
 */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
		       const char *san, long serial)
{
	X509 *x = X509_new();
	X509_NAME *name;
	X509V3_CTX ctx;
	bool ca = issuer == NULL;

	cr_assert_not_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"reap test", -1,
				   -1, 0);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, ca ? name : X509_get_subject_name(issuer));
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, ca ? x : issuer, x, NULL, NULL, 0);
	add_ext(x, &ctx, NID_subject_key_identifier, "hash");
	if (ca) {
		add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
		add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature");
		add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
	}
	if (san != NULL)
		add_ext(x, &ctx, NID_subject_alt_name, san);
	cr_assert_gt(X509_sign(x, ca ? key : issuer_key, EVP_sha256()), 0);
	return x;
}

static void write_cert(X509 *x, const char *name)
{
	FILE *f = fopen(fx(name), "w");

	cr_assert_not_null(f, "%s", fx(name));
	cr_assert_eq(PEM_write_X509(f, x), 1);
	fclose(f);
}

static void write_key(EVP_PKEY *k, const char *name)
{
	FILE *f = fopen(fx(name), "w");

	cr_assert_not_null(f, "%s", fx(name));
	cr_assert_eq(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

/* Issue a leaf from ca/ca_key into <name>.pem and <name>.key. */
static void issue(const char *name, const char *cn, const char *san, X509 *ca, EVP_PKEY *ca_key,
		  long serial)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x;
	char file[64];

	cr_assert_not_null(k);
	x = make_cert(k, cn, ca, ca_key, san, serial);
	snprintf(file, sizeof(file), "%s.pem", name);
	write_cert(x, file);
	snprintf(file, sizeof(file), "%s.key", name);
	write_key(k, file);
	X509_free(x);
	EVP_PKEY_free(k);
}

static const char *const fixture_files[] = {
	"ca.pem", "ca.key", "server.pem", "server.key", "worker1.pem", "worker1.key",
	"worker2.pem", "worker2.key", "evil_ca.pem", "evil_ca.key", "evil.pem", "evil.key",
	"garbage.pem",
};

static void make_pki(void)
{
	EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *evil_key = EVP_EC_gen("P-256");
	X509 *ca, *evil;
	FILE *f;

	cr_assert_not_null(ca_key);
	cr_assert_not_null(evil_key);
	ca = make_cert(ca_key, "reap test CA", NULL, NULL, NULL, 1);
	evil = make_cert(evil_key, "reap test CA", NULL, NULL, NULL, 1);
	write_cert(ca, "ca.pem");
	write_key(ca_key, "ca.key");
	write_cert(evil, "evil_ca.pem");
	write_key(evil_key, "evil_ca.key");
	issue("server", "localhost", "DNS:localhost,IP:127.0.0.1", ca, ca_key, 2);
	issue("worker1", "worker-1", "URI:" WORKER1_SAN ",DNS:worker-1.reap.test", ca, ca_key, 3);
	issue("worker2", "worker-2", NULL, ca, ca_key, 4);
	/* Same name as the real worker, wrong CA: must not get in. */
	issue("evil", "worker-1", "URI:" WORKER1_SAN, evil, evil_key, 3);
	f = fopen(fx("garbage.pem"), "w");
	cr_assert_not_null(f);
	fputs("not a certificate\n", f);
	fclose(f);
	X509_free(ca);
	X509_free(evil);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(evil_key);
}

/* ---- the server ---- */

static void who_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	digest_t resp = DIGEST_INIT;
	const char *s1, *s2;

	atomic_fetch_add(&handler_calls, 1);
	s1 = rpc_call_peer_cert_subject(call);
	s2 = rpc_call_peer_cert_subject(call);
	resp.hash = (char *)(s1 != s2 ? "uncached" : s1 != NULL ? s1 : "(none)");
	rpc_call_finish(call, &resp.base, REAP_OK, NULL);
}

static const rpc_method_t methods[] = {
	{.path = "/reap.test.T/Who", .kind = RPC_UNARY, .request = DIGEST_DESC,
	 .on_request = who_request},
};

static void start_server(const rpc_tls_server_t *tls)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 2, .tls = tls};
	reap_errbuf_t eb = {{0}};

	srv = rpc_server_new(&cfg, &eb);
	cr_assert_not_null(srv, "rpc_server_new: %s", eb.msg);
	cr_assert_eq(rpc_server_add_methods(srv, methods, 1), REAP_OK);
	cr_assert_eq(rpc_server_start(srv, &port, &eb), REAP_OK, "start: %s", eb.msg);
	cr_assert_gt(port, 0);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/reap-tls-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	make_pki();
	atomic_store(&handler_calls, 0);
}

static void teardown(void)
{
	rpc_server_free(srv);
	srv = NULL;
	for (size_t i = 0; i < sizeof(fixture_files) / sizeof(fixture_files[0]); i++)
		unlink(fx(fixture_files[i]));
	rmdir(dir);
}

TestSuite(tls, .init = setup, .fini = teardown, .timeout = 60);

/* ---- the client ---- */

static rpc_channel_t *tls_channel(const char *ca, const char *cert, const char *key,
				  const char *override)
{
	rpc_tls_client_t tls = {.ca_file = ca, .cert_file = cert, .key_file = key,
				.server_name_override = override};
	char target[64];
	rpc_channel_t *c;

	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	c = rpc_channel_new_tls(target, 0, &tls);
	cr_assert_not_null(c);
	return c;
}

/* Call Who on c (freed here): the status code, and the answer into out. */
static int who(rpc_channel_t *c, char *out, size_t n)
{
	digest_t req = DIGEST_INIT;
	ProtobufCMessage *resp = NULL;
	rpc_status_t st;
	int code;

	req.hash = (char *)"who";
	out[0] = '\0';
	cr_assert_eq(rpc_unary(c, "/reap.test.T/Who", &req.base, DIGEST_DESC, &resp, &st,
			       CALL_TIMEOUT_MS),
		     REAP_OK);
	code = st.code;
	if (resp != NULL) {
		snprintf(out, n, "%s", ((digest_t *)resp)->hash);
		protobuf_c_message_free_unpacked(resp, NULL);
	}
	rpc_status_destroy(&st);
	rpc_channel_free(c);
	return code;
}

/* The worker-1 client of the trusted CA, verifying the server as "localhost". */
static rpc_channel_t *worker1(void)
{
	return tls_channel(fx("ca.pem"), fx("worker1.pem"), fx("worker1.key"), "localhost");
}

/* ---- server TLS ---- */

Test(tls, server_tls_ok)
{
	rpc_tls_server_t tls = {.cert_file = fx("server.pem"), .key_file = fx("server.key")};
	char got[128];

	start_server(&tls);
	cr_assert_eq(who(tls_channel(fx("ca.pem"), NULL, NULL, "localhost"), got, sizeof(got)),
		     ST_OK);
	cr_assert_str_eq(got, "(none)");
	/* Verified against the IP SAN when no name is overridden. */
	cr_assert_eq(who(tls_channel(fx("ca.pem"), NULL, NULL, NULL), got, sizeof(got)), ST_OK);
	cr_assert_eq(atomic_load(&handler_calls), 2);
}

Test(tls, server_tls_ignores_client_cert_when_not_asking)
{
	rpc_tls_server_t tls = {.cert_file = fx("server.pem"), .key_file = fx("server.key")};
	char got[128];

	start_server(&tls);
	cr_assert_eq(who(worker1(), got, sizeof(got)), ST_OK);
	cr_assert_str_eq(got, "(none)");
}

Test(tls, untrusted_server_cert_fails)
{
	rpc_tls_server_t tls = {.cert_file = fx("server.pem"), .key_file = fx("server.key")};
	char got[128];

	start_server(&tls);
	cr_assert_eq(who(tls_channel(fx("evil_ca.pem"), NULL, NULL, "localhost"), got, sizeof(got)),
		     ST_UNAVAILABLE);
	/* Right CA, wrong name. */
	cr_assert_eq(who(tls_channel(fx("ca.pem"), NULL, NULL, "other.example"), got, sizeof(got)),
		     ST_UNAVAILABLE);
	cr_assert_eq(atomic_load(&handler_calls), 0);
}

Test(tls, plaintext_client_to_tls_port_fails)
{
	rpc_tls_server_t tls = {.cert_file = fx("server.pem"), .key_file = fx("server.key")};
	char target[64], got[128];

	start_server(&tls);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	cr_assert_eq(who(rpc_channel_new(target, 0), got, sizeof(got)), ST_UNAVAILABLE);
	cr_assert_eq(atomic_load(&handler_calls), 0);
}

Test(tls, tls_client_to_plaintext_port_fails)
{
	char got[128];

	start_server(NULL);
	cr_assert_eq(who(tls_channel(fx("ca.pem"), NULL, NULL, "localhost"), got, sizeof(got)),
		     ST_UNAVAILABLE);
	cr_assert_eq(atomic_load(&handler_calls), 0);
}

Test(tls, plaintext_has_no_subject)
{
	char target[64], got[128];

	start_server(NULL);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	cr_assert_eq(who(rpc_channel_new(target, 0), got, sizeof(got)), ST_OK);
	cr_assert_str_eq(got, "(none)");
}

/* ---- mTLS, client certificate required ---- */

static const rpc_tls_server_t *mtls(bool require)
{
	static rpc_tls_server_t tls;

	tls = (rpc_tls_server_t){.cert_file = fx("server.pem"), .key_file = fx("server.key"),
				 .client_ca_file = fx("ca.pem"), .require_client_cert = require};
	return &tls;
}

Test(tls, mtls_subject_is_first_san)
{
	char got[128];

	start_server(mtls(true));
	cr_assert_eq(who(worker1(), got, sizeof(got)), ST_OK);
	cr_assert_str_eq(got, WORKER1_SAN);
}

Test(tls, mtls_subject_falls_back_to_common_name)
{
	char got[128];

	start_server(mtls(true));
	cr_assert_eq(who(tls_channel(fx("ca.pem"), fx("worker2.pem"), fx("worker2.key"), "localhost"),
			 got, sizeof(got)),
		     ST_OK);
	cr_assert_str_eq(got, "worker-2");
}

Test(tls, mtls_untrusted_client_cert_fails)
{
	char got[128];

	start_server(mtls(true));
	cr_assert_eq(who(tls_channel(fx("ca.pem"), fx("evil.pem"), fx("evil.key"), "localhost"), got,
			 sizeof(got)),
		     ST_UNAVAILABLE);
	cr_assert_eq(atomic_load(&handler_calls), 0);
}

Test(tls, mtls_required_without_client_cert_fails)
{
	char got[128];

	start_server(mtls(true));
	cr_assert_eq(who(tls_channel(fx("ca.pem"), NULL, NULL, "localhost"), got, sizeof(got)),
		     ST_UNAVAILABLE);
	cr_assert_eq(atomic_load(&handler_calls), 0);
}

/* ---- mTLS, client certificate optional ---- */

Test(tls, mtls_optional_without_client_cert_is_anonymous)
{
	char got[128];

	start_server(mtls(false));
	cr_assert_eq(who(tls_channel(fx("ca.pem"), NULL, NULL, "localhost"), got, sizeof(got)),
		     ST_OK);
	cr_assert_str_eq(got, "(none)");
	cr_assert_eq(atomic_load(&handler_calls), 1);
}

Test(tls, mtls_optional_with_client_cert_has_subject)
{
	char got[128];

	start_server(mtls(false));
	cr_assert_eq(who(worker1(), got, sizeof(got)), ST_OK);
	cr_assert_str_eq(got, WORKER1_SAN);
}

Test(tls, mtls_optional_untrusted_client_cert_fails)
{
	char got[128];

	start_server(mtls(false));
	cr_assert_eq(who(tls_channel(fx("ca.pem"), fx("evil.pem"), fx("evil.key"), "localhost"), got,
			 sizeof(got)),
		     ST_UNAVAILABLE);
	cr_assert_eq(atomic_load(&handler_calls), 0);
}

/* The identity belongs to the call (its connection), never to the next one. */
Test(tls, subject_not_shared_across_calls)
{
	rpc_channel_t *anon, *w1;
	char got[128];

	start_server(mtls(false));
	for (int i = 0; i < 3; i++) {
		w1 = worker1();
		anon = tls_channel(fx("ca.pem"), NULL, NULL, "localhost");
		cr_assert_eq(who(w1, got, sizeof(got)), ST_OK);
		cr_assert_str_eq(got, WORKER1_SAN);
		cr_assert_eq(who(anon, got, sizeof(got)), ST_OK);
		cr_assert_str_eq(got, "(none)");
	}
	cr_assert_eq(atomic_load(&handler_calls), 6);
}

/* ---- configuration errors ---- */

static void expect_server_error(const rpc_tls_server_t *tls, const char *needle)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 1, .tls = tls};
	reap_errbuf_t eb = {{0}};

	cr_assert_null(rpc_server_new(&cfg, &eb));
	cr_assert(strstr(eb.msg, needle) != NULL, "\"%s\" not in \"%s\"", needle, eb.msg);
}

Test(tls, server_config_errors_name_the_file)
{
	rpc_tls_server_t t;

	t = (rpc_tls_server_t){.cert_file = fx("missing.pem"), .key_file = fx("server.key")};
	expect_server_error(&t, fx("missing.pem"));
	t = (rpc_tls_server_t){.cert_file = fx("garbage.pem"), .key_file = fx("server.key")};
	expect_server_error(&t, fx("garbage.pem"));
	t = (rpc_tls_server_t){.cert_file = fx("server.pem"), .key_file = fx("garbage.pem")};
	expect_server_error(&t, "no unencrypted PEM private key");
	t = (rpc_tls_server_t){.cert_file = fx("server.pem"), .key_file = fx("worker1.key")};
	expect_server_error(&t, "does not match");
	t = (rpc_tls_server_t){.cert_file = fx("server.pem"), .key_file = fx("server.key"),
			       .client_ca_file = fx("missing-ca.pem")};
	expect_server_error(&t, "client_ca_file");
	t = (rpc_tls_server_t){.cert_file = fx("server.pem"), .key_file = fx("server.key"),
			       .require_client_cert = true};
	expect_server_error(&t, "needs client_ca_file");
	t = (rpc_tls_server_t){.key_file = fx("server.key")};
	expect_server_error(&t, "cert_file and key_file");
}

Test(tls, client_config_errors)
{
	rpc_tls_client_t t;

	t = (rpc_tls_client_t){.ca_file = fx("missing.pem")};
	cr_assert_null(rpc_channel_new_tls("127.0.0.1:1", 0, &t));
	t = (rpc_tls_client_t){.ca_file = fx("garbage.pem")};
	cr_assert_null(rpc_channel_new_tls("127.0.0.1:1", 0, &t));
	t = (rpc_tls_client_t){.ca_file = fx("ca.pem"), .cert_file = fx("worker1.pem")};
	cr_assert_null(rpc_channel_new_tls("127.0.0.1:1", 0, &t));
	t = (rpc_tls_client_t){.cert_file = fx("worker1.pem"), .key_file = fx("worker2.key")};
	cr_assert_null(rpc_channel_new_tls("127.0.0.1:1", 0, &t));
	cr_assert_null(rpc_channel_new_tls("", 0, NULL));
	/* Defaults (system roots) make a channel. */
	rpc_channel_free(rpc_channel_new_tls("127.0.0.1:1", 0, NULL));
}
