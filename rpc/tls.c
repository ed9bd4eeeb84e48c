/*
 * tls.c - TLS for the rpc module: server and channel credentials from PEM
 * files, and the verified client certificate identity of a server call.
 *
 * gRPC only parses the PEM text when a port is bound or a connection is
 * made, and then says little more than "cannot create credentials". So the
 * files are read and checked here first with OpenSSL (a certificate is
 * there, the key is an unencrypted private key matching it, a CA file holds
 * certificates), and a bad config fails at startup with an error naming the
 * setting and the file. gRPC copies the PEM text it is given; our copies of
 * key material are wiped before they are freed. Nothing read from the files
 * is ever logged.
 *
 * Identity: a server that asks for client certificates always has gRPC
 * verify them against client_ca_file (the *_AND_VERIFY request types), so
 * a handshake with an untrusted certificate fails and never reaches a
 * handler. gRPC sets the peer identity of a call only from such a
 * certificate; rpc_tls_peer_subject additionally requires the transport to
 * be "ssl" and refuses values with embedded NUL bytes, which could make two
 * different names compare equal as C strings.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/log.h"
#include "rpc/rpc_int.h"
#include "rpc/tls_int.h"

/* PEM files are small; anything bigger is a wrong path, not a certificate. */
#define RPC_TLS_MAX_PEM ((size_t)1 << 20)

/* A PEM file in memory, NUL-terminated (gRPC takes C strings). */
typedef struct rpc_pem {
	char *data;
	size_t len;
} rpc_pem_t;

static void rpc_pem_destroy(rpc_pem_t *p)
{
	if (p->data != NULL) {
		OPENSSL_cleanse(p->data, p->len);
		free(p->data);
	}
	p->data = NULL;
	p->len = 0;
}

/* Read path into p; what names the setting ("key_file") in errors. */
static int rpc_pem_read(const char *what, const char *path, rpc_pem_t *p, reap_errbuf_t *eb)
{
	struct stat st;
	size_t got = 0;
	int fd, err = REAP_OK;

	p->data = NULL;
	p->len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "rpc tls: cannot open %s %s: %s", what, path,
				 strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (size_t)st.st_size > RPC_TLS_MAX_PEM) {
		err = reap_errf(eb, REAP_E_INVALID, "rpc tls: %s %s is not a PEM file of 1 B..1 MiB",
				what, path);
		goto out;
	}
	p->len = (size_t)st.st_size;
	p->data = malloc(p->len + 1);
	if (p->data == NULL) {
		err = reap_errf(eb, REAP_E_NOMEM, "rpc tls: out of memory reading %s", what);
		goto out;
	}
	while (got < p->len) {
		ssize_t n = read(fd, p->data + got, p->len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = reap_errf(eb, REAP_E_IO, "rpc tls: cannot read %s %s: %s", what, path,
					n < 0 ? strerror(errno) : "file shrank");
			goto out;
		}
		got += (size_t)n;
	}
	p->data[p->len] = '\0';
	if (memchr(p->data, '\0', p->len) != NULL)
		err = reap_errf(eb, REAP_E_INVALID, "rpc tls: %s %s is not a PEM file", what, path);
out:
	close(fd);
	if (err != REAP_OK)
		rpc_pem_destroy(p);
	return err;
}

/* Never prompt for a passphrase: an encrypted key is a config error. */
static int rpc_pem_no_pass(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* The first certificate in p (caller frees), or NULL when there is none. */
static X509 *rpc_pem_first_cert(const rpc_pem_t *p)
{
	BIO *bio = BIO_new_mem_buf(p->data, (int)p->len);
	X509 *x = NULL;

	if (bio != NULL) {
		x = PEM_read_bio_X509(bio, NULL, rpc_pem_no_pass, NULL);
		BIO_free(bio);
	}
	return x;
}

/* Read a file that must hold at least one PEM certificate. */
static int rpc_pem_read_certs(const char *what, const char *path, rpc_pem_t *p,
			      reap_errbuf_t *eb)
{
	X509 *x;
	int err = rpc_pem_read(what, path, p, eb);

	if (err != REAP_OK)
		return err;
	x = rpc_pem_first_cert(p);
	if (x == NULL) {
		rpc_pem_destroy(p);
		err = reap_errf(eb, REAP_E_INVALID, "rpc tls: no PEM certificate in %s %s", what,
				path);
	}
	X509_free(x);
	return err;
}

/* Read a certificate chain and its private key, and check that they match. */
static int rpc_pem_read_pair(const char *cert_file, const char *key_file, rpc_pem_t *cert,
			     rpc_pem_t *key, reap_errbuf_t *eb)
{
	X509 *x = NULL;
	EVP_PKEY *pk = NULL;
	BIO *bio = NULL;
	int err;

	key->data = NULL;
	err = rpc_pem_read_certs("cert_file", cert_file, cert, eb);
	if (err != REAP_OK)
		goto out;
	err = rpc_pem_read("key_file", key_file, key, eb);
	if (err != REAP_OK)
		goto out;
	bio = BIO_new_mem_buf(key->data, (int)key->len);
	pk = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, rpc_pem_no_pass, NULL) : NULL;
	if (pk == NULL) {
		err = reap_errf(eb, REAP_E_INVALID,
				"rpc tls: no unencrypted PEM private key in key_file %s", key_file);
		goto out;
	}
	x = rpc_pem_first_cert(cert);
	if (x == NULL || X509_check_private_key(x, pk) != 1) {
		err = reap_errf(eb, REAP_E_INVALID, "rpc tls: key_file %s does not match cert_file %s",
				key_file, cert_file);
		goto out;
	}
out:
	X509_free(x);
	EVP_PKEY_free(pk);
	BIO_free(bio);
	/* Leave no OpenSSL errors behind for the next user of this thread. */
	ERR_clear_error();
	if (err != REAP_OK) {
		rpc_pem_destroy(cert);
		rpc_pem_destroy(key);
	}
	return err;
}

const char *rpc_tls_server_mode(const rpc_tls_server_t *cfg)
{
	if (cfg == NULL)
		return "plaintext";
	if (cfg->client_ca_file == NULL)
		return "tls";
	return cfg->require_client_cert ? "mtls-required" : "mtls-optional";
}

int rpc_tls_server_creds(const rpc_tls_server_t *cfg, grpc_server_credentials **out,
			 reap_errbuf_t *eb)
{
	rpc_pem_t cert = {0}, key = {0}, ca = {0};
	grpc_ssl_pem_key_cert_pair pair;
	grpc_ssl_server_certificate_config *cc;
	grpc_ssl_server_credentials_options *opts;
	grpc_ssl_client_certificate_request_type req = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
	int err;

	*out = NULL;
	if (cfg->cert_file == NULL || cfg->key_file == NULL)
		return reap_errf(eb, REAP_E_INVALID, "rpc tls: the server needs cert_file and key_file");
	if (cfg->require_client_cert && cfg->client_ca_file == NULL)
		return reap_errf(eb, REAP_E_INVALID,
				 "rpc tls: require_client_cert needs client_ca_file");
	err = rpc_pem_read_pair(cfg->cert_file, cfg->key_file, &cert, &key, eb);
	if (err != REAP_OK)
		goto out;
	if (cfg->client_ca_file != NULL) {
		err = rpc_pem_read_certs("client_ca_file", cfg->client_ca_file, &ca, eb);
		if (err != REAP_OK)
			goto out;
		req = cfg->require_client_cert
			      ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
			      : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
	}
	pair.private_key = key.data;
	pair.cert_chain = cert.data;
	/* gRPC copies the PEM text; options take the config, credentials the
	 * options. */
	cc = grpc_ssl_server_certificate_config_create(ca.data, &pair, 1);
	opts = cc != NULL ? grpc_ssl_server_credentials_create_options_using_config(req, cc) : NULL;
	*out = opts != NULL ? grpc_ssl_server_credentials_create_with_options(opts) : NULL;
	if (*out == NULL)
		err = reap_errf(eb, REAP_E_INTERNAL, "rpc tls: gRPC refused the server credentials");
out:
	rpc_pem_destroy(&cert);
	rpc_pem_destroy(&key);
	rpc_pem_destroy(&ca);
	return err;
}

int rpc_tls_channel_creds(const rpc_tls_client_t *cfg, grpc_channel_credentials **out,
			  reap_errbuf_t *eb)
{
	rpc_pem_t cert = {0}, key = {0}, ca = {0};
	grpc_ssl_pem_key_cert_pair pair;
	int err = REAP_OK;

	*out = NULL;
	if ((cfg->cert_file == NULL) != (cfg->key_file == NULL))
		return reap_errf(eb, REAP_E_INVALID,
				 "rpc tls: a client certificate needs both cert_file and key_file");
	if (cfg->ca_file != NULL) {
		err = rpc_pem_read_certs("ca_file", cfg->ca_file, &ca, eb);
		if (err != REAP_OK)
			goto out;
	}
	if (cfg->cert_file != NULL) {
		err = rpc_pem_read_pair(cfg->cert_file, cfg->key_file, &cert, &key, eb);
		if (err != REAP_OK)
			goto out;
		pair.private_key = key.data;
		pair.cert_chain = cert.data;
	}
	/* NULL roots: gRPC's defaults (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, then
	 * the system's). */
	*out = grpc_ssl_credentials_create(ca.data, cfg->cert_file != NULL ? &pair : NULL, NULL,
					   NULL);
	if (*out == NULL)
		err = reap_errf(eb, REAP_E_INTERNAL, "rpc tls: gRPC refused the channel credentials");
out:
	rpc_pem_destroy(&cert);
	rpc_pem_destroy(&key);
	rpc_pem_destroy(&ca);
	return err;
}

/* The first value of property name in ctx, or NULL. */
static const grpc_auth_property *rpc_tls_first(const grpc_auth_context *ctx, const char *name)
{
	grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, name);

	return grpc_auth_property_iterator_next(&it);
}

char *rpc_tls_peer_subject(grpc_call *call)
{
	grpc_auth_context *ctx = grpc_call_auth_context(call);
	const grpc_auth_property *p;
	char *subject = NULL;

	if (ctx == NULL)
		return NULL;
	p = rpc_tls_first(ctx, GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME);
	if (p == NULL || p->value == NULL || strcmp(p->value, GRPC_SSL_TRANSPORT_SECURITY_TYPE) != 0 ||
	    !grpc_auth_context_peer_is_authenticated(ctx))
		goto out;
	p = rpc_tls_first(ctx, GRPC_X509_SAN_PROPERTY_NAME);
	if (p == NULL)
		p = rpc_tls_first(ctx, GRPC_X509_CN_PROPERTY_NAME);
	if (p == NULL || p->value == NULL || p->value_length == 0 ||
	    memchr(p->value, '\0', p->value_length) != NULL) {
		REAP_WARN("rpc client certificate without a usable name", "peer_has_san=%d",
			  rpc_tls_first(ctx, GRPC_X509_SAN_PROPERTY_NAME) != NULL);
		goto out;
	}
	subject = strndup(p->value, p->value_length);
out:
	grpc_auth_context_release(ctx);
	return subject;
}
