/*
 * test_reflection.c - grpc.reflection.v1alpha and v1 ServerReflection
 * through real gRPC, the way grpcurl uses it: list the services, then fetch
 * the file (with its imports) that defines a symbol, on one bidi stream.
 *
 * The server carries health, reflection and stub ActionCache methods (the
 * real service needs storage; reflection only cares that they are
 * registered).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "rpc/rpc.h"

#define V1ALPHA "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
#define V1 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define AC "build.bazel.remote.execution.v2.ActionCache"
#define REAPI_FILE "build/bazel/remote/execution/v2/remote_execution.proto"

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest req_t;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse resp_t;
typedef Google__Protobuf__FileDescriptorProto fdp_t;
#define REQ_INIT GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__INIT
#define RESP_DESC (&grpc__reflection__v1alpha__server_reflection_response__descriptor)
#define R(x) GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_##x

static rpc_server_t *srv;
static rpc_health_t *health;
static rpc_reflection_t *refl;
static rpc_channel_t *ch;

static void stub(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	rpc_call_finish(call, NULL, REAP_E_UNIMPLEMENTED, NULL);
}

static const rpc_method_t ac_methods[] = {
	{.path = "/" AC "/GetActionResult", .kind = RPC_UNARY,
	 .request = &google__protobuf__file_descriptor_proto__descriptor, .on_request = stub},
	{.path = "/" AC "/UpdateActionResult", .kind = RPC_UNARY,
	 .request = &google__protobuf__file_descriptor_proto__descriptor, .on_request = stub},
};

static void setup(void)
{
	rpc_server_config_t cfg = {.listen = "127.0.0.1:0", .threads = 2};
	reap_errbuf_t eb = {{0}};
	const rpc_method_t *ms;
	char target[64];
	size_t n;
	int port;

	srv = rpc_server_new(&cfg, &eb);
	cr_assert_not_null(srv, "%s", eb.msg);
	health = rpc_health_new();
	refl = rpc_reflection_new(srv, &eb);
	cr_assert_not_null(refl, "%s", eb.msg);
	ms = rpc_health_methods(health, &n);
	cr_assert_eq(rpc_server_add_methods(srv, ms, n), 0);
	cr_assert_eq(rpc_server_add_methods(srv, ac_methods, 2), 0);
	ms = rpc_reflection_methods(refl, &n);
	cr_assert_eq(n, 2);
	cr_assert_eq(rpc_server_add_methods(srv, ms, n), 0);
	cr_assert_eq(rpc_server_start(srv, &port, &eb), 0, "%s", eb.msg);
	snprintf(target, sizeof(target), "127.0.0.1:%d", port);
	ch = rpc_channel_new(target, 0);
}

static void teardown(void)
{
	rpc_channel_free(ch);
	rpc_server_free(srv);
	rpc_reflection_free(refl);
	rpc_health_free(health);
}

TestSuite(reflection, .init = setup, .fini = teardown, .timeout = 30);

/* One request, one response on stream s (v1alpha types; wire-identical to v1). */
static resp_t *ask(rpc_stream_t *s, req_t *req)
{
	ProtobufCMessage *m = NULL;

	cr_assert_eq(rpc_stream_send(s, &req->base), 0);
	cr_assert_eq(rpc_stream_recv(s, RESP_DESC, &m), 1);
	return (resp_t *)m;
}

static resp_t *ask_symbol(rpc_stream_t *s, const char *symbol)
{
	req_t req = REQ_INIT;

	req.message_request_case = R(REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL);
	req.file_containing_symbol = (char *)symbol;
	return ask(s, &req);
}

static void end_ok(rpc_stream_t *s)
{
	rpc_status_t st;

	cr_assert_eq(rpc_stream_close_send(s), 0);
	cr_assert_eq(rpc_stream_finish(s, &st), 0);
	cr_assert_eq(st.code, 0, "status %d %s", st.code, st.msg);
	rpc_status_destroy(&st);
}

/* Decoded files of a file_descriptor_response (NULL-terminated array). */
static fdp_t **files_of(const resp_t *r, size_t *n)
{
	const Grpc__Reflection__V1alpha__FileDescriptorResponse *f;
	fdp_t **out;

	cr_assert_eq(r->message_response_case, R(RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE),
		     "case %d", r->message_response_case);
	f = r->file_descriptor_response;
	out = calloc(f->n_file_descriptor_proto + 1, sizeof(*out));
	for (size_t i = 0; i < f->n_file_descriptor_proto; i++) {
		out[i] = google__protobuf__file_descriptor_proto__unpack(
			NULL, f->file_descriptor_proto[i].len, f->file_descriptor_proto[i].data);
		cr_assert_not_null(out[i]);
	}
	*n = f->n_file_descriptor_proto;
	return out;
}

static void files_free(fdp_t **fs)
{
	for (size_t i = 0; fs[i] != NULL; i++)
		google__protobuf__file_descriptor_proto__free_unpacked(fs[i], NULL);
	free(fs);
}

static const fdp_t *file_named(fdp_t **fs, const char *name)
{
	for (size_t i = 0; fs[i] != NULL; i++)
		if (strcmp(fs[i]->name, name) == 0)
			return fs[i];
	return NULL;
}

/* Each file once, and every import of every file is in the answer. */
static void check_closed(fdp_t **fs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = i + 1; j < n; j++)
			cr_assert_str_neq(fs[i]->name, fs[j]->name, "%s sent twice", fs[i]->name);
		for (size_t d = 0; d < fs[i]->n_dependency; d++)
			cr_assert_not_null(file_named(fs, fs[i]->dependency[d]), "%s imports %s",
					   fs[i]->name, fs[i]->dependency[d]);
	}
}

static bool has_service(const fdp_t *f, const char *name, const char *method)
{
	for (size_t i = 0; i < f->n_service; i++) {
		if (strcmp(f->service[i]->name, name) != 0)
			continue;
		for (size_t j = 0; j < f->service[i]->n_method; j++)
			if (strcmp(f->service[i]->method[j]->name, method) == 0)
				return true;
	}
	return false;
}

static void check_list(const char *path)
{
	rpc_stream_t *s = rpc_stream_open(ch, path, 10000);
	req_t req = REQ_INIT;
	resp_t *r;
	const char *want[] = {"grpc.health.v1.Health", AC,
			      "grpc.reflection.v1alpha.ServerReflection",
			      "grpc.reflection.v1.ServerReflection"};

	req.host = (char *)"localhost";
	req.message_request_case = R(REQUEST__MESSAGE_REQUEST_LIST_SERVICES);
	req.list_services = (char *)"*";
	r = ask(s, &req);
	cr_assert_str_eq(r->valid_host, "localhost");
	cr_assert_not_null(r->original_request);
	cr_assert_str_eq(r->original_request->list_services, "*");
	cr_assert_eq(r->message_response_case, R(RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE));
	cr_assert_eq(r->list_services_response->n_service, 4);
	for (size_t i = 0; i < 4; i++) {
		bool found = false;

		for (size_t j = 0; j < 4; j++)
			found |= strcmp(r->list_services_response->service[j]->name, want[i]) == 0;
		cr_assert(found, "%s not listed", want[i]);
	}
	protobuf_c_message_free_unpacked(&r->base, NULL);
	end_ok(s);
}

Test(reflection, list_services_v1alpha)
{
	check_list(V1ALPHA);
}

Test(reflection, list_services_v1)
{
	check_list(V1);
}

static void check_action_cache(const char *path)
{
	rpc_stream_t *s = rpc_stream_open(ch, path, 10000);
	const char *deps[] = {"build/bazel/semver/semver.proto", "google/longrunning/operations.proto",
			      "google/protobuf/any.proto", "google/protobuf/duration.proto",
			      "google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto",
			      "google/rpc/status.proto", "google/protobuf/empty.proto"};
	resp_t *r = ask_symbol(s, AC);
	size_t n;
	fdp_t **fs = files_of(r, &n);

	cr_assert_str_eq(fs[0]->name, REAPI_FILE, "the requested file comes first");
	cr_assert_str_eq(fs[0]->package, "build.bazel.remote.execution.v2");
	cr_assert(has_service(fs[0], "ActionCache", "GetActionResult"));
	cr_assert(has_service(fs[0], "ActionCache", "UpdateActionResult"));
	for (size_t i = 0; i < sizeof(deps) / sizeof(deps[0]); i++)
		cr_assert_not_null(file_named(fs, deps[i]), "%s missing", deps[i]);
	cr_assert_eq(n, 1 + sizeof(deps) / sizeof(deps[0]), "n=%zu", n);
	check_closed(fs, n);
	files_free(fs);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	end_ok(s);
}

Test(reflection, describe_action_cache_v1alpha)
{
	check_action_cache(V1ALPHA);
}

Test(reflection, describe_action_cache_v1)
{
	check_action_cache(V1);
}

Test(reflection, symbols_of_every_kind)
{
	struct {
		const char *symbol, *file;
	} cases[] = {
		{AC ".GetActionResult", REAPI_FILE},                                /* method */
		{"build.bazel.remote.execution.v2.Digest", REAPI_FILE},             /* message */
		{"build.bazel.remote.execution.v2.Command.EnvironmentVariable", REAPI_FILE}, /* nested */
		{"build.bazel.remote.execution.v2.DigestFunction.Value", REAPI_FILE}, /* nested enum */
		{"build.bazel.remote.execution.v2.Digest.hash", REAPI_FILE},        /* field */
		{".google.longrunning.Operation", "google/longrunning/operations.proto"},
		{"google.longrunning.Operations", "google/longrunning/operations.proto"},
		{"google.rpc.Code", "google/rpc/code.proto"},                       /* enum */
		{"google.bytestream.ByteStream", "google/bytestream/bytestream.proto"},
		{"reap.v1.WorkerQueue", "reap/v1/worker.proto"},
		{"grpc.health.v1.Health", "grpc/health/v1/health.proto"},
		{"grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"},
		{"grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"},
		{"build.bazel.remote.execution.v2.Capabilities", REAPI_FILE},
		{"build.bazel.remote.execution.v2.Execution", REAPI_FILE},
		{"build.bazel.remote.execution.v2.ContentAddressableStorage", REAPI_FILE},
	};
	rpc_stream_t *s = rpc_stream_open(ch, V1ALPHA, 10000);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		resp_t *r = ask_symbol(s, cases[i].symbol);
		size_t n;
		fdp_t **fs = files_of(r, &n);

		cr_assert_str_eq(fs[0]->name, cases[i].file, "%s", cases[i].symbol);
		check_closed(fs, n);
		files_free(fs);
		protobuf_c_message_free_unpacked(&r->base, NULL);
	}
	end_ok(s);
}

static void expect_error(resp_t *r, int code)
{
	cr_assert_eq(r->message_response_case, R(RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE),
		     "case %d", r->message_response_case);
	cr_assert_eq(r->error_response->error_code, code, "code %d",
		     r->error_response->error_code);
	protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(reflection, not_found_is_in_band_and_the_stream_goes_on)
{
	rpc_stream_t *s = rpc_stream_open(ch, V1ALPHA, 10000);
	Grpc__Reflection__V1alpha__ExtensionRequest ext =
		GRPC__REFLECTION__V1ALPHA__EXTENSION_REQUEST__INIT;
	req_t req = REQ_INIT;
	resp_t *r;
	size_t n;
	fdp_t **fs;

	expect_error(ask_symbol(s, "no.such.Symbol"), 5);
	expect_error(ask_symbol(s, ""), 5);
	expect_error(ask_symbol(s, "build.bazel.remote.execution"), 5); /* a package prefix */

	req.message_request_case = R(REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME);
	req.file_by_filename = (char *)"no/such.proto";
	expect_error(ask(s, &req), 5);

	ext.containing_type = (char *)"build.bazel.remote.execution.v2.Digest";
	ext.extension_number = 1000;
	req.message_request_case = R(REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION);
	req.file_containing_extension = &ext;
	expect_error(ask(s, &req), 5);

	req.message_request_case = R(REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE);
	req.all_extension_numbers_of_type = (char *)"no.such.Type";
	expect_error(ask(s, &req), 5);
	/* a known message simply has no extensions */
	req.all_extension_numbers_of_type = (char *)"build.bazel.remote.execution.v2.Digest";
	r = ask(s, &req);
	cr_assert_eq(r->message_response_case,
		     R(RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE));
	cr_assert_str_eq(r->all_extension_numbers_response->base_type_name,
			 "build.bazel.remote.execution.v2.Digest");
	cr_assert_eq(r->all_extension_numbers_response->n_extension_number, 0);
	protobuf_c_message_free_unpacked(&r->base, NULL);

	/* an empty request */
	req.message_request_case = R(REQUEST__MESSAGE_REQUEST__NOT_SET);
	expect_error(ask(s, &req), 3);

	/* and the stream still answers */
	req.message_request_case = R(REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME);
	req.file_by_filename = (char *)"google/rpc/status.proto";
	r = ask(s, &req);
	fs = files_of(r, &n);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(fs[0]->name, "google/rpc/status.proto");
	cr_assert_str_eq(fs[1]->name, "google/protobuf/any.proto");
	files_free(fs);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	end_ok(s);
}

/* A v1 client with v1 types: the wire format really is the same. */
Test(reflection, v1_types)
{
	rpc_stream_t *s = rpc_stream_open(ch, V1, 10000);
	Grpc__Reflection__V1__ServerReflectionRequest req =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
	Grpc__Reflection__V1__ServerReflectionResponse *r = NULL;
	fdp_t *f;

	req.message_request_case =
		GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
	req.file_containing_symbol = (char *)AC;
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	cr_assert_eq(rpc_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor,
				     (ProtobufCMessage **)&r), 1);
	cr_assert_eq(r->message_response_case,
		     GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
	cr_assert_str_eq(r->original_request->file_containing_symbol, AC);
	f = google__protobuf__file_descriptor_proto__unpack(
		NULL, r->file_descriptor_response->file_descriptor_proto[0].len,
		r->file_descriptor_response->file_descriptor_proto[0].data);
	cr_assert(has_service(f, "ActionCache", "GetActionResult"));
	google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
	protobuf_c_message_free_unpacked(&r->base, NULL);

	req.file_containing_symbol = (char *)"nope.Nope";
	cr_assert_eq(rpc_stream_send(s, &req.base), 0);
	cr_assert_eq(rpc_stream_recv(s, &grpc__reflection__v1__server_reflection_response__descriptor,
				     (ProtobufCMessage **)&r), 1);
	cr_assert_eq(r->message_response_case,
		     GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
	cr_assert_eq(r->error_response->error_code, 5);
	protobuf_c_message_free_unpacked(&r->base, NULL);
	end_ok(s);
}

Test(reflection, cancel_mid_stream)
{
	rpc_stream_t *s = rpc_stream_open(ch, V1ALPHA, 10000);

	expect_error(ask_symbol(s, "x.Y"), 5);
	rpc_stream_cancel(s);
	/* the server is still fine */
	s = rpc_stream_open(ch, V1ALPHA, 10000);
	expect_error(ask_symbol(s, "x.Y"), 5);
	end_ok(s);
}

static void count_svc(void *ctx, const char *name)
{
	(*(int *)ctx)++;
	cr_assert_neq(name[0], '/');
	cr_assert_null(strchr(name, '/'));
}

Test(reflection, each_service)
{
	int n = 0;

	cr_assert_eq(rpc_server_each_service(srv, count_svc, &n), 4);
	cr_assert_eq(n, 4);
	cr_assert_eq(rpc_server_each_service(srv, NULL, NULL), 4);
}
