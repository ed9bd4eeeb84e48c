/*
 * cli_action.c - `reap action show DIGEST`: the Action, its Command
 * (arguments, environment, platform, outputs), a summary of its input tree
 * and the cached ActionResult, if the ActionCache has one.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "worker/worker_int.h"

#define AC_SVC "/build.bazel.remote.execution.v2.ActionCache/"
#define MAX_ACTION_BYTES ((size_t)1 << 20)
#define MAX_COMMAND_BYTES ((size_t)4 << 20)

/* Fetch and decode the blob d (at most max bytes) as desc. */
static int get_msg(cli_t *c, const reap_digest_t *d, size_t max,
		   const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
		   reap_errbuf_t *eb)
{
	void *data = NULL;
	size_t len = 0;
	int err = wrk_cas_get(c->cas, d, max, &data, &len, eb);

	*out = NULL;
	if (err != REAP_OK)
		return err;
	*out = protobuf_c_message_unpack(desc, NULL, len, data);
	free(data);
	if (*out == NULL)
		return reap_errf(eb, REAP_E_INVALID, "the blob is not a valid %s", desc->short_name);
	return REAP_OK;
}

static json_t *digest_json(const WRK_RE(Digest) *pb)
{
	reap_digest_t d;
	return cli_digest_from_pb(pb, &d) == REAP_OK ? cli_json_digest(&d) : json_null();
}

static json_t *strv_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *platform_json(const WRK_RE(Platform) *p)
{
	json_t *o = json_object();
	for (size_t i = 0; o != NULL && p != NULL && i < p->n_properties; i++)
		json_object_set_new(o, p->properties[i]->name, json_string(p->properties[i]->value));
	return o;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* legacy output_files/directories */
static json_t *command_json(const WRK_RE(Command) *cmd, const WRK_RE(Platform) *plat)
{
	json_t *env = json_object();
	for (size_t i = 0; env != NULL && i < cmd->n_environment_variables; i++)
		json_object_set_new(env, cmd->environment_variables[i]->name,
				    json_string(cmd->environment_variables[i]->value));
	return json_pack("{s:o, s:o, s:o, s:s, s:o, s:o, s:o}", "arguments",
			 strv_json(cmd->arguments, cmd->n_arguments), "environment", env,
			 "platform", platform_json(plat), "working_directory",
			 cmd->working_directory != NULL ? cmd->working_directory : "",
			 "output_paths", strv_json(cmd->output_paths, cmd->n_output_paths),
			 "output_files", strv_json(cmd->output_files, cmd->n_output_files),
			 "output_directories",
			 strv_json(cmd->output_directories, cmd->n_output_directories));
}
#pragma GCC diagnostic pop

static json_t *result_json(const WRK_RE(ActionResult) *ar)
{
	json_t *files = json_array(), *dirs = json_array(), *links = json_array();
	const WRK_RE(ExecutedActionMetadata) *md = ar->execution_metadata;

	for (size_t i = 0; i < ar->n_output_files; i++)
		json_array_append_new(files, json_pack("{s:s, s:o, s:b}", "path",
						       ar->output_files[i]->path, "digest",
						       digest_json(ar->output_files[i]->digest),
						       "is_executable",
						       ar->output_files[i]->is_executable));
	for (size_t i = 0; i < ar->n_output_directories; i++)
		json_array_append_new(dirs, json_pack("{s:s, s:o, s:o}", "path",
						      ar->output_directories[i]->path, "tree_digest",
						      digest_json(ar->output_directories[i]->tree_digest),
						      "root_directory_digest",
						      digest_json(ar->output_directories[i]->root_directory_digest)));
	for (size_t i = 0; i < ar->n_output_symlinks; i++)
		json_array_append_new(links, json_pack("{s:s, s:s}", "path", ar->output_symlinks[i]->path,
						       "target", ar->output_symlinks[i]->target));
	return json_pack("{s:i, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:s}", "exit_code", ar->exit_code,
			 "output_files", files, "output_directories", dirs, "output_symlinks", links,
			 "stdout_digest", digest_json(ar->stdout_digest), "stderr_digest",
			 digest_json(ar->stderr_digest), "stdout_inline_bytes",
			 (json_int_t)ar->stdout_raw.len, "stderr_inline_bytes",
			 (json_int_t)ar->stderr_raw.len, "worker",
			 md != NULL && md->worker != NULL ? md->worker : "");
}

/* The platform asked for: the Action's (REAPI 2.2), else the Command's. */
static const WRK_RE(Platform) *platform_of(const WRK_RE(Action) *a, const WRK_RE(Command) *cmd)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* Command.platform: Bazel < 5 */
	return a->platform != NULL && a->platform->n_properties > 0 ? a->platform : cmd->platform;
#pragma GCC diagnostic pop
}

static void print_human(const reap_digest_t *ad, const WRK_RE(Action) *a, const WRK_RE(Command) *cmd,
			const cli_tree_summary_t *sum, int sum_err, const WRK_RE(ActionResult) *ar)
{
	char buf[REAP_HASH_HEX_LEN + 24], sz[32];
	const WRK_RE(Platform) *plat = platform_of(a, cmd);
	reap_digest_t d;

	printf("Action %s\n", cli_digest_str(ad, buf, sizeof(buf)));
	if (cli_digest_from_pb(a->command_digest, &d) == REAP_OK)
		printf("  command:     %s\n", cli_digest_str(&d, buf, sizeof(buf)));
	if (cli_digest_from_pb(a->input_root_digest, &d) == REAP_OK)
		printf("  input root:  %s\n", cli_digest_str(&d, buf, sizeof(buf)));
	if (sum_err == REAP_OK)
		printf("               %lld files, %lld folders, %lld symlinks, %s\n",
		       (long long)sum->files, (long long)sum->dirs, (long long)sum->symlinks,
		       cli_bytes(sum->bytes, sz, sizeof(sz)));
	else
		printf("               (input tree unavailable: %s)\n", reap_strerror(sum_err));
	if (a->timeout != NULL)
		printf("  timeout:     %llds\n", (long long)a->timeout->seconds);
	printf("  do_not_cache: %s\n", a->do_not_cache ? "true" : "false");
	printf("Command\n  arguments:");
	for (size_t i = 0; i < cmd->n_arguments; i++)
		printf(" %s", cmd->arguments[i]);
	printf("\n");
	for (size_t i = 0; i < cmd->n_environment_variables; i++)
		printf("  env:         %s=%s\n", cmd->environment_variables[i]->name,
		       cmd->environment_variables[i]->value);
	for (size_t i = 0; plat != NULL && i < plat->n_properties; i++)
		printf("  platform:    %s=%s\n", plat->properties[i]->name, plat->properties[i]->value);
	if (cmd->working_directory != NULL && cmd->working_directory[0] != '\0')
		printf("  working dir: %s\n", cmd->working_directory);
	for (size_t i = 0; i < cmd->n_output_paths; i++)
		printf("  output:      %s\n", cmd->output_paths[i]);
	if (ar == NULL) {
		printf("Cached result: none\n");
		return;
	}
	printf("Cached result\n  exit code:   %d\n", ar->exit_code);
	if (ar->execution_metadata != NULL && ar->execution_metadata->worker != NULL &&
	    ar->execution_metadata->worker[0] != '\0')
		printf("  worker:      %s\n", ar->execution_metadata->worker);
	for (size_t i = 0; i < ar->n_output_files; i++)
		if (cli_digest_from_pb(ar->output_files[i]->digest, &d) == REAP_OK)
			printf("  file:        %s %s%s\n", ar->output_files[i]->path,
			       cli_digest_str(&d, buf, sizeof(buf)),
			       ar->output_files[i]->is_executable ? " (executable)" : "");
	for (size_t i = 0; i < ar->n_output_directories; i++)
		if (cli_digest_from_pb(ar->output_directories[i]->tree_digest, &d) == REAP_OK)
			printf("  directory:   %s tree %s\n", ar->output_directories[i]->path,
			       cli_digest_str(&d, buf, sizeof(buf)));
	for (size_t i = 0; i < ar->n_output_symlinks; i++)
		printf("  symlink:     %s -> %s\n", ar->output_symlinks[i]->path,
		       ar->output_symlinks[i]->target);
	if (cli_digest_from_pb(ar->stdout_digest, &d) == REAP_OK)
		printf("  stdout:      %s\n", cli_digest_str(&d, buf, sizeof(buf)));
	if (cli_digest_from_pb(ar->stderr_digest, &d) == REAP_OK)
		printf("  stderr:      %s\n", cli_digest_str(&d, buf, sizeof(buf)));
}

/* GetActionResult: *out NULL (and 0) when the ActionCache has none. */
static int get_result(cli_t *c, const reap_digest_t *ad, WRK_RE(ActionResult) **out,
		      reap_errbuf_t *eb)
{
	WRK_RE(GetActionResultRequest) req = WRK_RE_INIT(GET_ACTION_RESULT_REQUEST);
	WRK_RE(Digest) pd = WRK_RE_INIT(DIGEST);
	rpc_status_t st = {0};
	char hex[REAP_HASH_HEX_LEN + 1];
	int err;

	reap_digest_hex(ad, hex);
	pd.hash = hex;
	pd.size_bytes = ad->size;
	req.instance_name = (char *)c->instance;
	req.action_digest = &pd;
	err = rpc_unary(c->ch, AC_SVC "GetActionResult", &req.base,
			&WRK_RE_FN(action_result__descriptor), (ProtobufCMessage **)out, &st,
			CLI_UNARY_MS);
	err = cli_call_err(err, &st, "GetActionResult", eb);
	rpc_status_destroy(&st);
	if (err == REAP_E_NOT_FOUND) {
		*out = NULL;
		return REAP_OK;
	}
	return err;
}

int cli_action(cli_t *c, int argc, char **argv)
{
	static const char use[] = "usage: reap action show DIGEST\n";
	WRK_RE(Action) *a = NULL;
	WRK_RE(Command) *cmd = NULL;
	WRK_RE(ActionResult) *ar = NULL;
	cli_tree_summary_t sum = {0};
	reap_errbuf_t eb = {{0}}, seb = {{0}};
	reap_digest_t ad, cd, rd;
	int rc, err, sum_err = REAP_E_INVALID;

	if (argc == 2 && strcmp(argv[1], "--help") == 0) {
		fputs(use, stdout);
		return CLI_EXIT_OK;
	}
	if (argc != 3 || strcmp(argv[1], "show") != 0) {
		fputs(use, stderr);
		return CLI_EXIT_USAGE;
	}
	if (cli_digest_parse(argv[2], &ad) != REAP_OK)
		return CLI_EXIT_USAGE;
	if ((rc = cli_connect(c)) != CLI_EXIT_OK)
		return rc;
	if ((err = get_msg(c, &ad, MAX_ACTION_BYTES, &WRK_RE_FN(action__descriptor),
			   (ProtobufCMessage **)&a, &eb)) != REAP_OK) {
		rc = cli_fail(err, &eb, "Action");
		goto out;
	}
	if ((err = wrk_digest_from_pb(a->command_digest, &cd, &eb)) != REAP_OK ||
	    (err = get_msg(c, &cd, MAX_COMMAND_BYTES, &WRK_RE_FN(command__descriptor),
			   (ProtobufCMessage **)&cmd, &eb)) != REAP_OK) {
		rc = cli_fail(err, &eb, "Command");
		goto out;
	}
	if (wrk_digest_from_pb(a->input_root_digest, &rd, &seb) == REAP_OK)
		sum_err = cli_tree_summary(c, &rd, &sum, &seb);
	if ((err = get_result(c, &ad, &ar, &eb)) != REAP_OK) {
		rc = cli_fail(err, &eb, "ActionResult");
		goto out;
	}
	if (c->json) {
		json_t *in = sum_err == REAP_OK
				     ? json_pack("{s:o, s:I, s:I, s:I, s:I}", "digest", digest_json(a->input_root_digest),
						 "files", (json_int_t)sum.files, "directories", (json_int_t)sum.dirs,
						 "symlinks", (json_int_t)sum.symlinks, "bytes", (json_int_t)sum.bytes)
				     : json_pack("{s:o, s:s}", "digest", digest_json(a->input_root_digest),
						 "error", reap_errmsg(&seb, sum_err));
		cli_json_print(json_pack(
			"{s:o, s:{s:o, s:o, s:I, s:b}, s:o, s:o, s:o}", "digest", cli_json_digest(&ad),
			"action", "command_digest", digest_json(a->command_digest), "input_root_digest",
			digest_json(a->input_root_digest), "timeout_seconds",
			(json_int_t)(a->timeout != NULL ? a->timeout->seconds : 0), "do_not_cache",
			a->do_not_cache, "command", command_json(cmd, platform_of(a, cmd)), "input_tree", in, "cached_result",
			ar != NULL ? result_json(ar) : json_null()));
	} else {
		print_human(&ad, a, cmd, &sum, sum_err, ar);
	}
	rc = CLI_EXIT_OK;
out:
	if (a != NULL)
		protobuf_c_message_free_unpacked(&a->base, NULL);
	if (cmd != NULL)
		protobuf_c_message_free_unpacked(&cmd->base, NULL);
	if (ar != NULL)
		protobuf_c_message_free_unpacked(&ar->base, NULL);
	return rc;
}
