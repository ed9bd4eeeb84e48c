/*
 * capabilities.c - Capabilities.GetCapabilities: what this server speaks.
 *
 * update_enabled is computed per caller from the authorization hook, so a
 * client that may not write the ActionCache is told so up front. Execution
 * is advertised only when a scheduler serves it on this server.
 */
#include <string.h>

#include "build/bazel/semver/semver.pb-c.h"
#include "cas/cas_int.h"

#define SVC "/build.bazel.remote.execution.v2.Capabilities/"

static void get_capabilities(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(GetCapabilitiesRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	RE(ServerCapabilities) caps = RE_INIT(SERVER_CAPABILITIES);
	RE(CacheCapabilities) cache = RE_INIT(CACHE_CAPABILITIES);
	RE(ActionCacheUpdateCapabilities) acu = RE_INIT(ACTION_CACHE_UPDATE_CAPABILITIES);
	Build__Bazel__Semver__SemVer low = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
	Build__Bazel__Semver__SemVer high = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
	Build__Bazel__Semver__SemVer deprecated = BUILD__BAZEL__SEMVER__SEM_VER__INIT;
	RE(DigestFunction__Value) fns[] = {BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256};
	RE(Compressor__Value) comps[] = {BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD};
	reap_errbuf_t eb = {{0}};
	auth_identity_t id;
	char name[REAP_INSTANCE_MAX + 1];
	size_t len = strlen(req->instance_name);
	int err;

	err = cas_admit(svc, call, req->instance_name, len, 0, AUTH_CAS_READ, &id, &eb);
	if (err != REAP_OK) {
		cas_finish(call, NULL, err, &eb);
		return;
	}
	memcpy(name, req->instance_name, len + 1);
	acu.update_enabled = auth_check(svc->auth, &id, name, AUTH_AC_WRITE, NULL) == REAP_OK;
	cache.n_digest_functions = 1;
	cache.digest_functions = fns;
	cache.action_cache_update_capabilities = &acu;
	cache.max_batch_total_size_bytes = (int64_t)svc->max_batch;
	cache.symlink_absolute_path_strategy =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__SYMLINK_ABSOLUTE_PATH_STRATEGY__VALUE__DISALLOWED;
	cache.n_supported_compressors = 1;
	cache.supported_compressors = comps;
	cache.n_supported_batch_update_compressors = 1;
	cache.supported_batch_update_compressors = comps;
	low.major = 2;
	deprecated.major = 2;
	high.major = 2;
	high.minor = 3;
	caps.cache_capabilities = &cache;
	RE(ExecutionCapabilities) exe = RE_INIT(EXECUTION_CAPABILITIES);
	if (svc->cfg.execution) {
		exe.digest_function = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256;
		exe.n_digest_functions = 1;
		exe.digest_functions = fns;
		exe.exec_enabled = true;
		caps.execution_capabilities = &exe;
	}
	caps.low_api_version = &low;
	caps.high_api_version = &high;
	caps.deprecated_api_version = &deprecated;
	rpc_call_finish(call, &caps.base, REAP_OK, NULL);
}

void cas_capabilities_methods(cas_service_t *svc)
{
	const rpc_method_t m = {
		.path = SVC "GetCapabilities", .kind = RPC_UNARY,
		.request = &build__bazel__remote__execution__v2__get_capabilities_request__descriptor,
		.on_request = get_capabilities};
	cas_add_method(svc, &m);
}
