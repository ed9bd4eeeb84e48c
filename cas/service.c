/*
 * service.c - the cas service object: its method table and the one
 * admission step every RPC passes before touching the store.
 */
#include <stdlib.h>
#include <string.h>

#include "cas/cas_int.h"
#include "common/log.h"
#include "common/metrics.h"

#define DEFAULT_MAX_MSG ((size_t)8 << 20)

cas_service_t *cas_service_new(cas_store_t *store, const auth_policy_t *auth,
			       const cas_service_config_t *cfg)
{
	cas_service_t *svc = calloc(1, sizeof(*svc));
	if (svc == NULL)
		return NULL;
	svc->store = store;
	svc->auth = auth;
	if (cfg != NULL)
		svc->cfg = *cfg;
	if (svc->cfg.max_recv_bytes == 0)
		svc->cfg.max_recv_bytes = DEFAULT_MAX_MSG;
	if (svc->cfg.max_send_bytes == 0)
		svc->cfg.max_send_bytes = DEFAULT_MAX_MSG;
	if (svc->cfg.max_uploads == 0)
		svc->cfg.max_uploads = 1024;
	if (svc->cfg.upload_idle_s <= 0)
		svc->cfg.upload_idle_s = 600;
	if (svc->cfg.read_chunk_bytes == 0)
		svc->cfg.read_chunk_bytes = 256 << 10;
	size_t lim = svc->cfg.max_recv_bytes < svc->cfg.max_send_bytes ? svc->cfg.max_recv_bytes
									 : svc->cfg.max_send_bytes;
	if (svc->cfg.read_chunk_bytes > lim / 2)
		svc->cfg.read_chunk_bytes = lim / 2;
	/*
	 * A batch's blobs plus their digests, statuses and framing must fit in
	 * one message: advertise half the smaller limit, which leaves room for
	 * thousands of per-blob entries of overhead.
	 */
	svc->max_batch = lim / 2;
	svc->inline_budget = lim / 4;
	pthread_mutex_init(&svc->uploads_mu, NULL);
	cas_capabilities_methods(svc);
	cas_cas_methods(svc);
	cas_gettree_methods(svc);
	cas_bytestream_methods(svc);
	cas_ac_methods(svc);
	return svc;
}

void cas_service_free(cas_service_t *svc)
{
	if (svc == NULL)
		return;
	cas_uploads_clear(svc);
	pthread_mutex_destroy(&svc->uploads_mu);
	free(svc);
}

const rpc_method_t *cas_service_methods(cas_service_t *svc, size_t *n)
{
	*n = svc->n_methods;
	return svc->methods;
}

cas_store_t *cas_service_store(const cas_service_t *svc)
{
	return svc->store;
}

size_t cas_service_max_batch(const cas_service_t *svc)
{
	return svc->max_batch;
}

void cas_add_method(cas_service_t *svc, const rpc_method_t *m)
{
	if (svc->n_methods < sizeof(svc->methods) / sizeof(svc->methods[0])) {
		svc->methods[svc->n_methods] = *m;
		svc->methods[svc->n_methods].ctx = svc;
		svc->n_methods++;
	}
}

/* Accept only SHA-256 (or unspecified). */
static int check_digest_function(int fn, reap_errbuf_t *eb)
{
	if (fn == BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__UNKNOWN ||
	    fn == BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256)
		return REAP_OK;
	return reap_errf(eb, REAP_E_INVALID,
			 "digest function %d is not supported; this server uses SHA256", fn);
}

int cas_admit(cas_service_t *svc, rpc_call_t *call, const char *instance, size_t len,
	      int digest_function, auth_perm_t perm, auth_identity_t *id, reap_errbuf_t *eb)
{
	auth_identity_t local;
	auth_peer_t peer;
	const char *authz;
	size_t authz_len = 0;
	char name[REAP_INSTANCE_MAX + 1];
	int err;

	if (id == NULL)
		id = &local;
	if (instance == NULL)
		instance = "", len = 0;
	err = reap_instances_check(svc->cfg.instances, instance, len, eb);
	if (err == REAP_OK)
		err = check_digest_function(digest_function, eb);
	if (err != REAP_OK)
		return err;
	authz = rpc_call_metadata(call, "authorization", &authz_len);
	peer.addr = rpc_call_peer(call);
	peer.cert_subject = rpc_call_peer_cert_subject(call);
	memcpy(name, instance, len);
	name[len] = '\0';
	err = auth_identify(svc->auth, &peer, authz, authz_len, id, eb);
	if (err != REAP_OK) {
		id = NULL;
		goto refused;
	}
	rpc_call_set_subject(call, id->subject);
	err = auth_check(svc->auth, id, name, perm, eb);
	if (err != REAP_OK)
		goto refused;
	return REAP_OK;
refused:
	reap_metric_inc(reap_metric_labels(reap_metrics()->auth_refusals,
					   err == REAP_E_UNAUTHENTICATED ? "unauthenticated"
					   : err == REAP_E_PERM	  ? "permission_denied"
								  : "invalid"));
	REAP_INFO("refused", "peer=%s subject=%s err=\"%s\"", peer.addr,
		  id != NULL ? id->subject : "-", reap_errmsg(eb, err));
	auth_audit(svc->auth, &(auth_audit_event_t){.id = id, .peer = peer.addr,
						    .instance = name,
						    .rpc = rpc_call_method(call),
						    .outcome = "refused",
						    .detail = reap_errmsg(eb, err)});
	return err;
}

size_t cas_read_scopes(const cas_service_t *svc, const char *instance,
		       const char *out[CAS_STORE_SCOPES_MAX])
{
	if (svc->auth == NULL) {
		out[0] = instance;
		return 1;
	}
	return auth_read_scopes(svc->auth, instance, out, CAS_STORE_SCOPES_MAX);
}

int cas_visible(cas_service_t *svc, const char *instance, const reap_digest_t *ds, size_t n,
		bool *present, reap_errbuf_t *eb)
{
	const char *scopes[CAS_STORE_SCOPES_MAX];
	size_t ns;
	int err;

	ns = cas_read_scopes(svc, instance != NULL ? instance : "", scopes);
	err = cas_store_visible(svc->store, scopes, ns, ds, n, present);
	if (err == REAP_E_INVALID)
		return reap_errf(eb, err, "instance name is longer than %d bytes", REAP_INSTANCE_MAX);
	if (err != REAP_OK)
		return reap_errf(eb, err, "looking blobs up failed: %s", reap_strerror(err));
	return REAP_OK;
}

int cas_visible_one(cas_service_t *svc, const char *instance, const reap_digest_t *d)
{
	bool present = false;
	int err = cas_visible(svc, instance, d, 1, &present, NULL);

	if (err != REAP_OK)
		return err;
	return present ? REAP_OK : REAP_E_NOT_FOUND;
}

int cas_digest_from_pb(const RE(Digest) *pb, reap_digest_t *out, reap_errbuf_t *eb)
{
	memset(out, 0, sizeof(*out));
	if (pb == NULL)
		return reap_errf(eb, REAP_E_INVALID, "digest is missing");
	return reap_digest_parse(pb->hash, pb->hash ? strlen(pb->hash) : 0, pb->size_bytes, out,
				 eb);
}

void cas_digest_to_pb(const reap_digest_t *d, RE(Digest) *pb, char hex[65])
{
	RE(Digest) init = RE_INIT(DIGEST);
	*pb = init;
	reap_digest_hex(d, hex);
	pb->hash = hex;
	pb->size_bytes = d->size;
}

void cas_finish(rpc_call_t *call, const ProtobufCMessage *resp, int err,
		const reap_errbuf_t *eb)
{
	rpc_call_finish(call, resp, err, err == REAP_OK ? NULL : reap_errmsg(eb, err));
}

void cas_status_set(Google__Rpc__Status *st, int err, const char *msg)
{
	Google__Rpc__Status init = GOOGLE__RPC__STATUS__INIT;
	*st = init;
	st->code = rpc_code_from_err(err);
	if (err != REAP_OK)
		st->message = (char *)(msg != NULL ? msg : reap_strerror(err));
}

int cas_identify(cas_service_t *svc, rpc_call_t *call, auth_identity_t *id, reap_errbuf_t *eb)
{
	auth_peer_t peer = {.addr = rpc_call_peer(call),
			    .cert_subject = rpc_call_peer_cert_subject(call)};
	size_t authz_len = 0;
	const char *authz = rpc_call_metadata(call, "authorization", &authz_len);
	int err = auth_identify(svc->auth, &peer, authz, authz_len, id, eb);
	if (err == REAP_OK)
		rpc_call_set_subject(call, id->subject);
	if (err != REAP_OK) {
		reap_metric_inc(reap_metric_labels(reap_metrics()->auth_refusals, "unauthenticated"));
		REAP_INFO("refused", "peer=%s err=\"%s\"", peer.addr, reap_errmsg(eb, err));
		auth_audit(svc->auth, &(auth_audit_event_t){.peer = peer.addr,
							    .rpc = rpc_call_method(call),
							    .outcome = "refused",
							    .detail = reap_errmsg(eb, err)});
	}
	return err;
}
