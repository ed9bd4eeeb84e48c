/*
 * cli_status.c - `reap status`: the scheduler's queues, workers and
 * operations, from reap.v1.Admin/GetStatus.
 */
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "reap/v1/admin.pb-c.h"

static json_t *strv_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a != NULL && i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static void print_platform(char **v, size_t n)
{
	if (n == 0)
		printf("(any)");
	for (size_t i = 0; i < n; i++)
		printf("%s%s", i > 0 ? "," : "", v[i]);
}

static json_t *status_json(const Reap__V1__GetStatusResponse *r)
{
	json_t *queues = json_array(), *workers = json_array();

	for (size_t i = 0; i < r->n_queues; i++)
		json_array_append_new(queues, json_pack("{s:o, s:I}", "platform",
							strv_json(r->queues[i]->platform,
								  r->queues[i]->n_platform),
							"queued", (json_int_t)r->queues[i]->queued));
	for (size_t i = 0; i < r->n_workers; i++) {
		const Reap__V1__WorkerStatus *w = r->workers[i];
		json_array_append_new(workers,
				      json_pack("{s:s, s:o, s:i, s:i, s:I, s:s}", "name", w->name,
						"platform", strv_json(w->platform, w->n_platform),
						"slots_idle", w->slots_idle, "slots_busy", w->slots_busy,
						"last_seen_ms_ago", (json_int_t)w->last_seen_ms_ago,
						"toolchain", w->toolchain));
	}
	return json_pack("{s:o, s:o, s:{s:I, s:I, s:I}}", "queues", queues, "workers", workers,
			 "operations", "queued", (json_int_t)r->operations_queued, "executing",
			 (json_int_t)r->operations_executing, "completed",
			 (json_int_t)r->operations_completed);
}

static void status_print(const Reap__V1__GetStatusResponse *r)
{
	printf("Operations: %lld queued, %lld executing, %lld completed (kept for a while)\n",
	       (long long)r->operations_queued, (long long)r->operations_executing,
	       (long long)r->operations_completed);
	printf("Queues:%s\n", r->n_queues == 0 ? " empty" : "");
	for (size_t i = 0; i < r->n_queues; i++) {
		printf("  %6lld  ", (long long)r->queues[i]->queued);
		print_platform(r->queues[i]->platform, r->queues[i]->n_platform);
		printf("\n");
	}
	printf("Workers: %zu\n", r->n_workers);
	for (size_t i = 0; i < r->n_workers; i++) {
		const Reap__V1__WorkerStatus *w = r->workers[i];
		printf("  %-24s slots %d busy / %d idle, seen %.1fs ago, platform ", w->name,
		       w->slots_busy, w->slots_idle, (double)w->last_seen_ms_ago / 1000.0);
		print_platform(w->platform, w->n_platform);
		printf("\n");
	}
}

int cli_status(cli_t *c, int argc, char **argv)
{
	Reap__V1__GetStatusRequest req = REAP__V1__GET_STATUS_REQUEST__INIT;
	Reap__V1__GetStatusResponse *resp = NULL;
	rpc_status_t st = {0};
	reap_errbuf_t eb = {{0}};
	int rc, err;

	if (argc != 1) {
		bool help = argc == 2 && strcmp(argv[1], "--help") == 0;
		fputs("usage: reap status\n", help ? stdout : stderr);
		return help ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	}
	if ((rc = cli_connect(c)) != CLI_EXIT_OK)
		return rc;
	err = rpc_unary(c->ch, "/reap.v1.Admin/GetStatus", &req.base,
			&reap__v1__get_status_response__descriptor, (ProtobufCMessage **)&resp, &st,
			CLI_UNARY_MS);
	err = cli_call_err(err, &st, "GetStatus", &eb);
	rpc_status_destroy(&st);
	if (err != REAP_OK)
		return cli_fail(err, &eb, "status");
	if (c->json)
		cli_json_print(status_json(resp));
	else
		status_print(resp);
	protobuf_c_message_free_unpacked(&resp->base, NULL);
	return CLI_EXIT_OK;
}
