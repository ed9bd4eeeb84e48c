/*
 * reflection.c - gRPC server reflection (grpc.reflection.v1alpha and v1
 * ServerReflection), so grpcurl and similar tools can list reap's services
 * and describe their messages without a copy of the .proto files.
 *
 * The source is the FileDescriptorSet the build produces with protoc
 * --include_imports and embeds in reap_proto (reap_proto_descriptor_set).
 * rpc_reflection_new parses it once and builds an index: per file its
 * serialized FileDescriptorProto and its dependencies (as file indexes), and
 * a sorted table of fully-qualified symbols (services, methods, messages at
 * any depth, enums, fields, extensions) pointing at their file. After that
 * the object is read-only, so calls on any thread share it without a lock.
 *
 * ServerReflectionInfo is a bidi stream: each request gets exactly one
 * response (sent before the next request is read); half-close ends the call
 * with OK. Lookups that find nothing are answered in-band with an
 * error_response, as the protocol wants, never with a call status. The v1
 * and v1alpha messages are wire-identical, so both services use the
 * v1alpha C types.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "common/log.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "reap_descriptor_set.h"
#include "rpc/rpc_int.h"

#define REFL_V1ALPHA "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
#define REFL_V1 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"

/* grpc_status_code values carried in ErrorResponse.error_code. */
enum { REFL_INVALID_ARGUMENT = 3, REFL_NOT_FOUND = 5, REFL_UNIMPLEMENTED = 12 };

typedef Grpc__Reflection__V1alpha__ServerReflectionRequest refl_req_t;
typedef Grpc__Reflection__V1alpha__ServerReflectionResponse refl_resp_t;
typedef Google__Protobuf__FileDescriptorProto file_proto_t;
typedef Google__Protobuf__DescriptorProto msg_proto_t;
typedef Google__Protobuf__FieldDescriptorProto field_proto_t;

typedef struct refl_file {
	const file_proto_t *fd; /* inside r->set */
	uint8_t *bytes;         /* the serialized FileDescriptorProto */
	size_t len;
	size_t *deps; /* indexes into r->files */
	size_t ndeps;
} refl_file_t;

typedef struct refl_sym {
	char *name; /* fully qualified, no leading dot */
	size_t file;
	bool is_message;
} refl_sym_t;

typedef struct refl_ext {
	char *extendee; /* fully qualified, no leading dot */
	int32_t number;
	size_t file;
} refl_ext_t;

struct rpc_reflection {
	const rpc_server_t *srv;
	Google__Protobuf__FileDescriptorSet *set;
	refl_file_t *files;
	size_t nfiles;
	refl_sym_t *syms;
	size_t nsyms, cap_syms;
	refl_ext_t *exts;
	size_t nexts, cap_exts;
	rpc_method_t methods[2];
};

/* ---- registered services (rpc.h) ---- */

/* The service part of "/pkg.Service/Method": *len bytes from the return value. */
static const char *service_of(const char *path, size_t *len)
{
	const char *slash = strchr(path + 1, '/');

	*len = slash != NULL ? (size_t)(slash - path - 1) : 0;
	return path + 1;
}

size_t rpc_server_each_service(const rpc_server_t *s, void (*fn)(void *ctx, const char *name),
			       void *ctx)
{
	size_t count = 0;

	for (size_t i = 0; i < s->nregs; i++) {
		size_t len, olen;
		const char *name = service_of(s->regs[i].m->path, &len);
		bool seen = false;
		char *copy;

		for (size_t j = 0; j < i && !seen; j++) {
			const char *other = service_of(s->regs[j].m->path, &olen);

			seen = olen == len && memcmp(other, name, len) == 0;
		}
		if (seen || len == 0)
			continue;
		count++;
		if (fn == NULL)
			continue;
		if ((copy = strndup(name, len)) == NULL) {
			REAP_ERROR("rpc service listing incomplete", "reason=\"out of memory\"");
			continue;
		}
		fn(ctx, copy);
		free(copy);
	}
	return count;
}

/* ---- the index ---- */

/* "prefix.name" (or "name" when prefix is empty), malloc'd; NULL on ENOMEM. */
static char *qualify(const char *prefix, const char *name)
{
	size_t pl = prefix != NULL ? strlen(prefix) : 0, nl = strlen(name);
	char *out = malloc(pl + 1 + nl + 1);

	if (out == NULL)
		return NULL;
	if (pl != 0) {
		memcpy(out, prefix, pl);
		out[pl++] = '.';
	}
	memcpy(out + pl, name, nl + 1);
	return out;
}

/* Add prefix.name; returns the stored name (owned by r) or NULL on ENOMEM. */
static const char *add_sym(rpc_reflection_t *r, const char *prefix, const char *name, size_t file,
			   bool is_message)
{
	char *q;

	if (name == NULL)
		return "";
	if (r->nsyms == r->cap_syms) {
		size_t cap = r->cap_syms ? 2 * r->cap_syms : 256;
		refl_sym_t *n = realloc(r->syms, cap * sizeof(*n));

		if (n == NULL)
			return NULL;
		r->syms = n;
		r->cap_syms = cap;
	}
	if ((q = qualify(prefix, name)) == NULL)
		return NULL;
	r->syms[r->nsyms++] = (refl_sym_t){q, file, is_message};
	return q;
}

static int add_ext(rpc_reflection_t *r, const field_proto_t *f, size_t file)
{
	const char *e = f->extendee != NULL ? f->extendee : "";
	char *copy;

	if (r->nexts == r->cap_exts) {
		size_t cap = r->cap_exts ? 2 * r->cap_exts : 16;
		refl_ext_t *n = realloc(r->exts, cap * sizeof(*n));

		if (n == NULL)
			return REAP_E_NOMEM;
		r->exts = n;
		r->cap_exts = cap;
	}
	if ((copy = strdup(e[0] == '.' ? e + 1 : e)) == NULL)
		return REAP_E_NOMEM;
	r->exts[r->nexts++] = (refl_ext_t){copy, f->number, file};
	return REAP_OK;
}

/* Fields and extensions declared in scope (a message or a file). */
static int index_fields(rpc_reflection_t *r, const char *scope, field_proto_t *const *fs, size_t n,
			size_t file, bool extensions)
{
	for (size_t i = 0; i < n; i++) {
		if (add_sym(r, scope, fs[i]->name, file, false) == NULL)
			return REAP_E_NOMEM;
		if (extensions && add_ext(r, fs[i], file) != REAP_OK)
			return REAP_E_NOMEM;
	}
	return REAP_OK;
}

static int index_message(rpc_reflection_t *r, const char *scope, const msg_proto_t *m, size_t file)
{
	const char *q = add_sym(r, scope, m->name, file, true);

	if (q == NULL)
		return REAP_E_NOMEM;
	for (size_t i = 0; i < m->n_enum_type; i++)
		if (add_sym(r, q, m->enum_type[i]->name, file, false) == NULL)
			return REAP_E_NOMEM;
	if (index_fields(r, q, m->field, m->n_field, file, false) != REAP_OK ||
	    index_fields(r, q, m->extension, m->n_extension, file, true) != REAP_OK)
		return REAP_E_NOMEM;
	for (size_t i = 0; i < m->n_nested_type; i++)
		if (index_message(r, q, m->nested_type[i], file) != REAP_OK)
			return REAP_E_NOMEM;
	return REAP_OK;
}

static int index_file(rpc_reflection_t *r, size_t file)
{
	const file_proto_t *fd = r->files[file].fd;
	const char *pkg = fd->package;

	for (size_t i = 0; i < fd->n_message_type; i++)
		if (index_message(r, pkg, fd->message_type[i], file) != REAP_OK)
			return REAP_E_NOMEM;
	for (size_t i = 0; i < fd->n_enum_type; i++)
		if (add_sym(r, pkg, fd->enum_type[i]->name, file, false) == NULL)
			return REAP_E_NOMEM;
	for (size_t i = 0; i < fd->n_service; i++) {
		const Google__Protobuf__ServiceDescriptorProto *sv = fd->service[i];
		const char *q = add_sym(r, pkg, sv->name, file, false);

		if (q == NULL)
			return REAP_E_NOMEM;
		for (size_t j = 0; j < sv->n_method; j++)
			if (add_sym(r, q, sv->method[j]->name, file, false) == NULL)
				return REAP_E_NOMEM;
	}
	return index_fields(r, pkg, fd->extension, fd->n_extension, file, true);
}

static int sym_cmp(const void *a, const void *b)
{
	return strcmp(((const refl_sym_t *)a)->name, ((const refl_sym_t *)b)->name);
}

static ssize_t find_file(const rpc_reflection_t *r, const char *name)
{
	for (size_t i = 0; i < r->nfiles; i++)
		if (strcmp(r->files[i].fd->name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static const refl_sym_t *find_sym(const rpc_reflection_t *r, const char *name)
{
	refl_sym_t key = {.name = (char *)name};

	if (name[0] == '.')
		key.name++;
	return bsearch(&key, r->syms, r->nsyms, sizeof(key), sym_cmp);
}

/* Serialize each file and resolve its dependencies to indexes. */
static int load_file(rpc_reflection_t *r, size_t i, reap_errbuf_t *eb)
{
	refl_file_t *f = &r->files[i];
	const file_proto_t *fd = r->set->file[i];

	f->fd = fd;
	if (fd->name == NULL)
		return reap_errf(eb, REAP_E_INVALID, "reflection: file %zu has no name", i);
	f->len = protobuf_c_message_get_packed_size(&fd->base);
	f->bytes = malloc(f->len ? f->len : 1);
	f->deps = calloc(fd->n_dependency ? fd->n_dependency : 1, sizeof(*f->deps));
	if (f->bytes == NULL || f->deps == NULL)
		return reap_errf(eb, REAP_E_NOMEM, "reflection: out of memory");
	protobuf_c_message_pack(&fd->base, f->bytes);
	return REAP_OK;
}

static int link_deps(rpc_reflection_t *r, size_t i, reap_errbuf_t *eb)
{
	refl_file_t *f = &r->files[i];

	for (size_t j = 0; j < f->fd->n_dependency; j++) {
		ssize_t d = find_file(r, f->fd->dependency[j]);

		if (d < 0)
			return reap_errf(eb, REAP_E_INVALID,
					 "reflection: %s imports %s, which is not in the set",
					 f->fd->name, f->fd->dependency[j]);
		f->deps[f->ndeps++] = (size_t)d;
	}
	return REAP_OK;
}

/* ---- answering ---- */

typedef struct {
	const rpc_reflection_t *r;
	bool *seen;
	ProtobufCBinaryData *out; /* nfiles entries */
	size_t n;
} closure_t;

/* Add file and, depth first, everything it imports; each file once. */
static void add_closure(closure_t *c, size_t file)
{
	const refl_file_t *f = &c->r->files[file];

	if (c->seen[file])
		return;
	c->seen[file] = true;
	c->out[c->n].data = f->bytes;
	c->out[c->n].len = f->len;
	c->n++;
	for (size_t i = 0; i < f->ndeps; i++)
		add_closure(c, f->deps[i]);
}

static void set_error(refl_resp_t *resp, Grpc__Reflection__V1alpha__ErrorResponse *er, int code,
		      const char *msg)
{
	er->error_code = code;
	er->error_message = (char *)msg;
	resp->message_response_case =
		GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
	resp->error_response = er;
}

/* Everything one response points at; lives for the callback. */
typedef struct {
	refl_resp_t resp;
	Grpc__Reflection__V1alpha__ErrorResponse err;
	Grpc__Reflection__V1alpha__FileDescriptorResponse files;
	Grpc__Reflection__V1alpha__ListServiceResponse list;
	Grpc__Reflection__V1alpha__ExtensionNumberResponse extnums;
	closure_t closure;
	Grpc__Reflection__V1alpha__ServiceResponse *svc_items;
	Grpc__Reflection__V1alpha__ServiceResponse **svcs;
	char **svc_names;
	size_t nsvcs;
	int32_t *numbers;
} answer_t;

static void answer_init(answer_t *a, const rpc_reflection_t *r, const refl_req_t *req)
{
	memset(a, 0, sizeof(*a));
	grpc__reflection__v1alpha__server_reflection_response__init(&a->resp);
	grpc__reflection__v1alpha__error_response__init(&a->err);
	grpc__reflection__v1alpha__file_descriptor_response__init(&a->files);
	grpc__reflection__v1alpha__list_service_response__init(&a->list);
	grpc__reflection__v1alpha__extension_number_response__init(&a->extnums);
	a->resp.valid_host = req->host;
	a->resp.original_request = (refl_req_t *)req;
	a->closure.r = r;
}

static void answer_destroy(answer_t *a)
{
	for (size_t i = 0; i < a->nsvcs; i++)
		free(a->svc_names[i]);
	free(a->svc_names);
	free(a->svc_items);
	free(a->svcs);
	free(a->closure.seen);
	free(a->closure.out);
	free(a->numbers);
}

/* A file descriptor response with file and its transitive imports. */
static int answer_files(answer_t *a, size_t file)
{
	closure_t *c = &a->closure;
	size_t n = c->r->nfiles;

	c->seen = calloc(n, sizeof(*c->seen));
	c->out = calloc(n, sizeof(*c->out));
	if (c->seen == NULL || c->out == NULL)
		return REAP_E_NOMEM;
	add_closure(c, file);
	a->files.n_file_descriptor_proto = c->n;
	a->files.file_descriptor_proto = c->out;
	a->resp.message_response_case =
		GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
	a->resp.file_descriptor_response = &a->files;
	return REAP_OK;
}

static void collect_service(void *ctx, const char *name)
{
	answer_t *a = ctx;
	char *copy = strdup(name);

	if (copy == NULL)
		return;
	grpc__reflection__v1alpha__service_response__init(&a->svc_items[a->nsvcs]);
	a->svc_items[a->nsvcs].name = copy;
	a->svc_names[a->nsvcs] = copy;
	a->svcs[a->nsvcs] = &a->svc_items[a->nsvcs];
	a->nsvcs++;
}

static int answer_list(answer_t *a, const rpc_server_t *s)
{
	size_t n = rpc_server_each_service(s, NULL, NULL);

	a->svc_items = calloc(n ? n : 1, sizeof(*a->svc_items));
	a->svcs = calloc(n ? n : 1, sizeof(*a->svcs));
	a->svc_names = calloc(n ? n : 1, sizeof(*a->svc_names));
	if (a->svc_items == NULL || a->svcs == NULL || a->svc_names == NULL)
		return REAP_E_NOMEM;
	rpc_server_each_service(s, collect_service, a);
	a->list.n_service = a->nsvcs;
	a->list.service = a->svcs;
	a->resp.message_response_case =
		GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
	a->resp.list_services_response = &a->list;
	return REAP_OK;
}

static int answer_extension(answer_t *a, const Grpc__Reflection__V1alpha__ExtensionRequest *er)
{
	const rpc_reflection_t *r = a->closure.r;
	const char *type = er != NULL && er->containing_type != NULL ? er->containing_type : "";

	if (type[0] == '.')
		type++;
	for (size_t i = 0; er != NULL && i < r->nexts; i++)
		if (r->exts[i].number == er->extension_number && strcmp(r->exts[i].extendee, type) == 0)
			return answer_files(a, r->exts[i].file);
	set_error(&a->resp, &a->err, REFL_NOT_FOUND, "extension not found");
	return REAP_OK;
}

static int answer_extension_numbers(answer_t *a, const char *type)
{
	const rpc_reflection_t *r = a->closure.r;
	const refl_sym_t *sym = find_sym(r, type);
	const char *bare = type[0] == '.' ? type + 1 : type;

	if (sym == NULL || !sym->is_message) {
		set_error(&a->resp, &a->err, REFL_NOT_FOUND, "type not found");
		return REAP_OK;
	}
	a->numbers = calloc(r->nexts ? r->nexts : 1, sizeof(*a->numbers));
	if (a->numbers == NULL)
		return REAP_E_NOMEM;
	for (size_t i = 0; i < r->nexts; i++)
		if (strcmp(r->exts[i].extendee, bare) == 0)
			a->numbers[a->extnums.n_extension_number++] = r->exts[i].number;
	a->extnums.base_type_name = sym->name;
	a->extnums.extension_number = a->numbers;
	a->resp.message_response_case =
		GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
	a->resp.all_extension_numbers_response = &a->extnums;
	return REAP_OK;
}

static int answer(answer_t *a, const rpc_reflection_t *r, const refl_req_t *req)
{
	const refl_sym_t *sym;
	ssize_t file;

	switch (req->message_request_case) {
	case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
		return answer_list(a, r->srv);
	case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
		if ((file = find_file(r, req->file_by_filename)) >= 0)
			return answer_files(a, (size_t)file);
		set_error(&a->resp, &a->err, REFL_NOT_FOUND, "file not found");
		return REAP_OK;
	case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
		if ((sym = find_sym(r, req->file_containing_symbol)) != NULL)
			return answer_files(a, sym->file);
		set_error(&a->resp, &a->err, REFL_NOT_FOUND, "symbol not found");
		return REAP_OK;
	case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
		return answer_extension(a, req->file_containing_extension);
	case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
		return answer_extension_numbers(a, req->all_extension_numbers_of_type);
	case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET:
		set_error(&a->resp, &a->err, REFL_INVALID_ARGUMENT, "empty request");
		return REAP_OK;
	default:
		set_error(&a->resp, &a->err, REFL_UNIMPLEMENTED, "request kind not supported");
		return REAP_OK;
	}
}

/* ---- the bidi handler ---- */

static void refl_message(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const rpc_reflection_t *r = rpc_call_ctx(call);
	answer_t a;
	int err;

	answer_init(&a, r, (const refl_req_t *)m);
	err = answer(&a, r, (const refl_req_t *)m);
	if (err == REAP_OK)
		rpc_call_send(call, &a.resp.base);
	else
		rpc_call_finish(call, NULL, err, NULL);
	answer_destroy(&a);
}

/* One response per request: read the next one once it is out. */
static void refl_sent(rpc_call_t *call, void *state)
{
	rpc_call_recv(call);
}

static void refl_half_close(rpc_call_t *call, void *state)
{
	rpc_call_finish(call, NULL, REAP_OK, NULL);
}

/* ---- lifecycle ---- */

rpc_reflection_t *rpc_reflection_new(const rpc_server_t *s, reap_errbuf_t *eb)
{
	rpc_reflection_t *r = calloc(1, sizeof(*r));
	const refl_sym_t *dup = NULL;

	if (r == NULL) {
		reap_errf(eb, REAP_E_NOMEM, "reflection: out of memory");
		return NULL;
	}
	r->srv = s;
	r->set = google__protobuf__file_descriptor_set__unpack(NULL, reap_proto_descriptor_set_len,
							       reap_proto_descriptor_set);
	if (r->set == NULL) {
		reap_errf(eb, REAP_E_INVALID, "reflection: embedded descriptor set does not parse");
		goto fail;
	}
	r->files = calloc(r->set->n_file ? r->set->n_file : 1, sizeof(*r->files));
	if (r->files == NULL) {
		reap_errf(eb, REAP_E_NOMEM, "reflection: out of memory");
		goto fail;
	}
	r->nfiles = r->set->n_file;
	for (size_t i = 0; i < r->nfiles; i++)
		if (load_file(r, i, eb) != REAP_OK)
			goto fail;
	for (size_t i = 0; i < r->nfiles; i++) {
		if (link_deps(r, i, eb) != REAP_OK)
			goto fail;
		if (index_file(r, i) != REAP_OK) {
			reap_errf(eb, REAP_E_NOMEM, "reflection: out of memory");
			goto fail;
		}
	}
	if (r->nsyms != 0)
		qsort(r->syms, r->nsyms, sizeof(*r->syms), sym_cmp);
	for (size_t i = 1; i < r->nsyms && dup == NULL; i++)
		if (strcmp(r->syms[i - 1].name, r->syms[i].name) == 0)
			dup = &r->syms[i];
	if (dup != NULL)
		REAP_WARN("reflection symbol defined twice", "symbol=%s", dup->name);

	r->methods[0] = (rpc_method_t){
		.path = REFL_V1ALPHA,
		.kind = RPC_BIDI_STREAMING,
		.request = &grpc__reflection__v1alpha__server_reflection_request__descriptor,
		.ctx = r,
		.on_message = refl_message,
		.on_sent = refl_sent,
		.on_half_close = refl_half_close,
	};
	r->methods[1] = r->methods[0];
	r->methods[1].path = REFL_V1;
	return r;
fail:
	rpc_reflection_free(r);
	return NULL;
}

void rpc_reflection_free(rpc_reflection_t *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->nfiles; i++) {
		free(r->files[i].bytes);
		free(r->files[i].deps);
	}
	free(r->files);
	for (size_t i = 0; i < r->nsyms; i++)
		free(r->syms[i].name);
	free(r->syms);
	for (size_t i = 0; i < r->nexts; i++)
		free(r->exts[i].extendee);
	free(r->exts);
	if (r->set != NULL)
		google__protobuf__file_descriptor_set__free_unpacked(r->set, NULL);
	free(r);
}

const rpc_method_t *rpc_reflection_methods(rpc_reflection_t *r, size_t *n)
{
	*n = 2;
	return r->methods;
}
