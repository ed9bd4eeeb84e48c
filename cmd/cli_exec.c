/*
 * cli_exec.c - `reap execute [options] -- CMD ARGS...`: the quickest way to
 * try the service. The current folder is uploaded as the input root (only
 * what the CAS is missing), a Command (argv as given, PATH=/usr/bin:/bin,
 * the requested output paths, the platform) and an Action are uploaded,
 * Execution.Execute is called and its Operation stream read until done;
 * the command's stdout and stderr are copied to ours, the outputs asked
 * for are fetched back into the current folder, and reap exits with the
 * command's exit code (124 when it timed out, 125 when it could not run).
 *
 * The server is not trusted with local paths: only outputs whose path is
 * exactly one that was requested are written, and those were checked to
 * be relative and free of "..".
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "google/longrunning/operations.pb-c.h"
#include "worker/worker_int.h"

#define EXEC_SVC "/build.bazel.remote.execution.v2.Execution/"
#define MAX_ITEMS 64
#define GRPC_DEADLINE_EXCEEDED 4

typedef struct exec_opts {
	int64_t timeout_s;
	bool no_cache;
	WRK_RE(Platform__Property) props[MAX_ITEMS];
	WRK_RE(Platform__Property) *propp[MAX_ITEMS];
	size_t n_props;
	char *outputs[MAX_ITEMS];
	size_t n_outputs;
} exec_opts_t;

static int cmp_prop(const void *a, const void *b)
{
	const WRK_RE(Platform__Property) *x = *(WRK_RE(Platform__Property) *const *)a;
	const WRK_RE(Platform__Property) *y = *(WRK_RE(Platform__Property) *const *)b;
	int r = strcmp(x->name, y->name);
	return r != 0 ? r : strcmp(x->value, y->value);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Relative, not empty, no "", "." or ".." component. */
static bool good_rel_path(const char *p)
{
	if (p[0] == '\0' || p[0] == '/')
		return false;
	for (;;) {
		size_t len = strcspn(p, "/");
		if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (p[len] == '\0')
			return true;
		p += len + 1;
	}
}

static int parse_opts(int argc, char **argv, exec_opts_t *o)
{
	static const struct option longopts[] = {
		{"timeout", required_argument, NULL, 't'}, {"platform", required_argument, NULL, 'p'},
		{"output", required_argument, NULL, 'o'},  {"no-cache", no_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
	};
	static const char use[] = "usage: reap execute [--timeout S] [--platform K=V]... "
				  "[--output PATH]... [--no-cache] -- CMD ARGS...\n";
	int opt;

	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		char *eq, *end;
		switch (opt) {
		case 't':
			errno = 0;
			o->timeout_s = strtoll(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || o->timeout_s <= 0) {
				fprintf(stderr, "reap: --timeout '%s' is not a number of seconds\n", optarg);
				return -1;
			}
			break;
		case 'p':
			if ((eq = strchr(optarg, '=')) == NULL || eq == optarg || o->n_props == MAX_ITEMS) {
				fprintf(stderr, "reap: --platform '%s' is not NAME=VALUE\n", optarg);
				return -1;
			}
			*eq = '\0';
			WRK_RE_FN(platform__property__init)(&o->props[o->n_props]);
			o->props[o->n_props].name = optarg;
			o->props[o->n_props].value = eq + 1;
			o->propp[o->n_props] = &o->props[o->n_props];
			o->n_props++;
			break;
		case 'o':
			if (!good_rel_path(optarg) || o->n_outputs == MAX_ITEMS) {
				fprintf(stderr, "reap: --output '%s' must be a relative path without "
						"'.' or '..'\n", optarg);
				return -1;
			}
			o->outputs[o->n_outputs++] = optarg;
			break;
		case 'n': o->no_cache = true; break;
		case 'h': fputs(use, stdout); return 1;
		default: fputs(use, stderr); return -1;
		}
	}
	if (optind >= argc) {
		fputs(use, stderr);
		return -1;
	}
	qsort(o->propp, o->n_props, sizeof(o->propp[0]), cmp_prop);
	qsort(o->outputs, o->n_outputs, sizeof(o->outputs[0]), cmp_str);
	return 0;
}

/* Pack msg into a blob (heap data) with its digest. */
static int pack_blob(const ProtobufCMessage *msg, wrk_blob_t *b)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = malloc(len + 1);
	if (buf == NULL)
		return REAP_E_NOMEM;
	protobuf_c_message_pack(msg, buf);
	b->data = buf;
	b->len = len;
	return reap_digest_of(buf, len, &b->digest);
}

/* Upload the Command and Action for argv; *ad gets the Action's digest. */
static int upload_action(cli_t *c, const exec_opts_t *o, char **argv, size_t argn,
			 const reap_digest_t *root, reap_digest_t *ad, reap_errbuf_t *eb)
{
	WRK_RE(Command) cmd = WRK_RE_INIT(COMMAND);
	WRK_RE(Command__EnvironmentVariable) path = WRK_RE_INIT(COMMAND__ENVIRONMENT_VARIABLE);
	WRK_RE(Command__EnvironmentVariable) *envp = &path;
	WRK_RE(Platform) platform = WRK_RE_INIT(PLATFORM);
	WRK_RE(Action) action = WRK_RE_INIT(ACTION);
	WRK_RE(Digest) cd = WRK_RE_INIT(DIGEST), rd = WRK_RE_INIT(DIGEST);
	Google__Protobuf__Duration timeout = GOOGLE__PROTOBUF__DURATION__INIT;
	char chex[REAP_HASH_HEX_LEN + 1], rhex[REAP_HASH_HEX_LEN + 1];
	wrk_blob_t blobs[2] = {{0}};
	int err;

	path.name = (char *)"PATH";
	path.value = (char *)"/usr/bin:/bin";
	cmd.arguments = argv;
	cmd.n_arguments = argn;
	cmd.environment_variables = &envp;
	cmd.n_environment_variables = 1;
	cmd.output_paths = (char **)o->outputs;
	cmd.n_output_paths = o->n_outputs;
	platform.properties = (WRK_RE(Platform__Property) **)o->propp;
	platform.n_properties = o->n_props;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* for servers before REAPI 2.2 */
	if (o->n_props > 0)
		cmd.platform = &platform;
#pragma GCC diagnostic pop
	if ((err = pack_blob(&cmd.base, &blobs[0])) != REAP_OK)
		goto out;
	reap_digest_hex(&blobs[0].digest, chex);
	cd.hash = chex;
	cd.size_bytes = blobs[0].digest.size;
	reap_digest_hex(root, rhex);
	rd.hash = rhex;
	rd.size_bytes = root->size;
	action.command_digest = &cd;
	action.input_root_digest = &rd;
	action.do_not_cache = o->no_cache;
	if (o->n_props > 0)
		action.platform = &platform;
	if (o->timeout_s > 0) {
		timeout.seconds = o->timeout_s;
		action.timeout = &timeout;
	}
	if ((err = pack_blob(&action.base, &blobs[1])) != REAP_OK)
		goto out;
	*ad = blobs[1].digest;
	err = wrk_cas_put_many(c->cas, blobs, 2, eb);
out:
	free((void *)blobs[0].data);
	free((void *)blobs[1].data);
	return err;
}

/* Execute and read the stream until the done Operation: its ExecuteResponse in *out. */
static int execute(cli_t *c, const reap_digest_t *ad, const exec_opts_t *o,
		   WRK_RE(ExecuteResponse) **out, reap_errbuf_t *eb)
{
	WRK_RE(ExecuteRequest) req = WRK_RE_INIT(EXECUTE_REQUEST);
	WRK_RE(Digest) pd = WRK_RE_INIT(DIGEST);
	Google__Longrunning__Operation *op = NULL;
	rpc_status_t st = {0};
	char hex[REAP_HASH_HEX_LEN + 1];
	rpc_stream_t *s;
	int r = 0, err = REAP_OK;

	*out = NULL;
	reap_digest_hex(ad, hex);
	pd.hash = hex;
	pd.size_bytes = ad->size;
	req.instance_name = (char *)c->instance;
	req.action_digest = &pd;
	req.skip_cache_lookup = o->no_cache;
	if ((s = rpc_stream_open(c->ch, EXEC_SVC "Execute", 0)) == NULL)
		return reap_errf(eb, REAP_E_UNAVAILABLE, "Execute: could not start the call");
	if (rpc_stream_send(s, &req.base) != REAP_OK || rpc_stream_close_send(s) != REAP_OK)
		r = -1; /* the status says why */
	while (r == 0 && *out == NULL && err == REAP_OK &&
	       rpc_stream_recv(s, &google__longrunning__operation__descriptor,
			       (ProtobufCMessage **)&op) == 1) {
		if (op->done && op->result_case == GOOGLE__LONGRUNNING__OPERATION__RESULT_ERROR) {
			int e = rpc_err_from_code(op->error != NULL ? op->error->code : 2);
			err = reap_errf(eb, e, "Execute: %s",
					op->error != NULL && op->error->message != NULL
						? op->error->message : reap_strerror(e));
		} else if (op->done) {
			if (op->response == NULL ||
			    (*out = WRK_RE_FN(execute_response__unpack)(NULL, op->response->value.len,
									 op->response->value.data)) == NULL)
				err = reap_errf(eb, REAP_E_INVALID, "Execute: a done Operation without "
								     "a valid ExecuteResponse");
		}
		protobuf_c_message_free_unpacked(&op->base, NULL);
		op = NULL;
	}
	if (*out != NULL || err != REAP_OK) {
		rpc_stream_cancel(s);
		return err;
	}
	err = cli_call_err(rpc_stream_finish(s, &st), &st, "Execute", eb);
	rpc_status_destroy(&st);
	if (err == REAP_OK)
		err = reap_errf(eb, REAP_E_UNAVAILABLE, "Execute: the stream ended before the "
							"operation was done");
	return err;
}

/* Inline bytes, else the digest's blob, to fd. */
static int copy_stream(cli_t *c, const ProtobufCBinaryData *raw, const WRK_RE(Digest) *pd, int fd,
		       reap_errbuf_t *eb)
{
	reap_digest_t d;
	if (raw->len > 0) {
		for (size_t off = 0; off < raw->len;) {
			ssize_t w = write(fd, raw->data + off, raw->len - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return reap_errf(eb, REAP_E_IO, "write: %s", strerror(errno));
			off += (size_t)w;
		}
		return REAP_OK;
	}
	if (pd == NULL || cli_digest_from_pb(pd, &d) != REAP_OK)
		return REAP_OK;
	return wrk_cas_download(c->cas, &d, fd, eb);
}

static bool requested(const exec_opts_t *o, const char *path)
{
	return bsearch(&path, o->outputs, o->n_outputs, sizeof(o->outputs[0]), cmp_str) != NULL;
}

static bool allowed_cb(const void *ctx, const char *path)
{
	return requested(ctx, path);
}

int cli_execute(cli_t *c, int argc, char **argv)
{
	exec_opts_t o = {0};
	WRK_RE(ExecuteResponse) *resp = NULL;
	reap_errbuf_t eb = {{0}};
	reap_digest_t root, ad;
	bool is_dir;
	int rc, err;

	if ((rc = parse_opts(argc, argv, &o)) != 0)
		return rc > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	if ((rc = cli_connect(c)) != CLI_EXIT_OK)
		return rc;
	if ((err = cli_upload_path(c, ".", &root, &is_dir, &eb)) != REAP_OK)
		return cli_fail(err, &eb, "uploading the input root");
	if ((err = upload_action(c, &o, argv + optind, (size_t)(argc - optind), &root, &ad, &eb)))
		return cli_fail(err, &eb, "uploading the action");
	if ((err = execute(c, &ad, &o, &resp, &eb)) != REAP_OK) {
		rc = cli_fail(err, &eb, "execute");
		return err == REAP_E_UNAVAILABLE || err == REAP_E_PERM ||
				       err == REAP_E_UNAUTHENTICATED
			       ? rc
			       : CLI_EXIT_EXEC_NOT_RUN;
	}
	const WRK_RE(ActionResult) *ar = resp->result;
	int code = resp->status != NULL ? resp->status->code : 0;
	if (c->json) {
		char buf[REAP_HASH_HEX_LEN + 24];
		cli_json_print(json_pack("{s:s, s:i, s:s, s:b, s:o}", "action_digest",
					 cli_digest_str(&ad, buf, sizeof(buf)), "status_code", code,
					 "status_message",
					 resp->status != NULL && resp->status->message != NULL
						 ? resp->status->message : "",
					 "cached_result", resp->cached_result, "exit_code",
					 ar != NULL ? json_integer(ar->exit_code) : json_null()));
	} else if (ar != NULL) {
		fflush(stdout);
		if ((err = copy_stream(c, &ar->stdout_raw, ar->stdout_digest, STDOUT_FILENO, &eb)) ||
		    (err = copy_stream(c, &ar->stderr_raw, ar->stderr_digest, STDERR_FILENO, &eb)))
			fprintf(stderr, "reap: fetching the command's output: %s\n", reap_errmsg(&eb, err));
	}
	if (code != 0 || ar == NULL) {
		fprintf(stderr, "reap: the action did not %s: %s\n", ar == NULL ? "run" : "finish",
			resp->status != NULL && resp->status->message != NULL && resp->status->message[0]
				? resp->status->message : "no result");
		if (resp->message != NULL && resp->message[0] != '\0' &&
		    (resp->status == NULL || resp->status->message == NULL ||
		     strcmp(resp->message, resp->status->message) != 0))
			fprintf(stderr, "reap: %s\n", resp->message);
		rc = code == GRPC_DEADLINE_EXCEEDED ? CLI_EXIT_EXEC_TIMEOUT : CLI_EXIT_EXEC_NOT_RUN;
	} else if ((err = cli_exec_outputs(c, ar, allowed_cb, &o, &eb)) != REAP_OK) {
		rc = cli_fail(err, &eb, "fetching outputs");
	} else {
		rc = ar->exit_code < 0 ? 255 : ar->exit_code > 255 ? 255 : ar->exit_code;
	}
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return rc;
}
