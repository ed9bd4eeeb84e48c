/*
 * reap.c - the `reap` command-line tool: global options (server, instance,
 * credentials, TLS, --json), then one subcommand (cli_*.c). Wiring only.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "common/log.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reap [global options] COMMAND [args]\n"
		"\n"
		"commands:\n"
		"  upload FILE|DIR                 upload; prints the digest (a folder's root Directory)\n"
		"  download DIGEST [-o PATH] [--dir]\n"
		"                                  a blob to PATH (default stdout); --dir: materialize\n"
		"                                  the Directory tree DIGEST into the folder PATH\n"
		"  cat DIGEST                      a blob's bytes to stdout\n"
		"  action show DIGEST              an Action, its Command, input tree and cached result\n"
		"  execute [--timeout S] [--platform K=V]... [--output PATH]... [--no-cache] -- CMD ARGS...\n"
		"                                  run CMD remotely with the current folder as its input\n"
		"                                  root; prints its output, fetches outputs back\n"
		"  status                          queues, workers and operations\n"
		"  auth keygen FILE                a new token signing key (mode 0600)\n"
		"  auth token --key FILE --subject S --role client|worker|writer|admin\n"
		"             [--instances A,B] [--ttl 30d]\n"
		"                                  issue a bearer token for the instance-name prefixes\n"
		"                                  A,B (default: every instance), valid for --ttl\n"
		"                                  (s, m, h, d or w; default 30d)\n"
		"  auth inspect [--key FILE] TOKEN|-\n"
		"                                  show a token's claims; with --key also verify it\n"
		"\n"
		"global options:\n"
		"  --server HOST:PORT   the reapd to talk to (env REAP_SERVER; default 127.0.0.1:8980)\n"
		"  --instance NAME      REAPI instance name (default \"\")\n"
		"  --token-file FILE    bearer token file (else env REAP_TOKEN holds the token)\n"
		"  --tls                use TLS, verifying the server against the system roots\n"
		"  --tls-ca FILE        use TLS, verifying the server against these CAs\n"
		"  --tls-cert FILE      client certificate (mTLS), with --tls-key FILE\n"
		"  --tls-server-name N  the name to verify in the server certificate\n"
		"  --json               machine-readable output on stdout\n"
		"  --log-level LEVEL    debug | info | warn | error (default warn)\n"
		"\n"
		"exit codes:\n"
		"  0 ok, 1 usage, 2 not found, 3 permission denied / unauthenticated / invalid\n"
		"  token, 4 server unreachable or deadline exceeded, 5 the server refused or\n"
		"  failed the request, 6 local file error.\n"
		"  execute exits with the command's own exit code when it ran (128+N when killed\n"
		"  by signal N); 124 when the action timed out; 125 when it could not run (the\n"
		"  reason is printed); codes 1-6 as above for failures before it was submitted.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"server", required_argument, NULL, 's'},
		{"instance", required_argument, NULL, 'i'},
		{"token-file", required_argument, NULL, 't'},
		{"tls", no_argument, NULL, 'T'},
		{"tls-ca", required_argument, NULL, 'A'},
		{"tls-cert", required_argument, NULL, 'C'},
		{"tls-key", required_argument, NULL, 'K'},
		{"tls-server-name", required_argument, NULL, 'N'},
		{"json", no_argument, NULL, 'j'},
		{"log-level", required_argument, NULL, 'L'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static const struct {
		const char *name;
		int (*fn)(cli_t *c, int argc, char **argv);
	} cmds[] = {
		{"upload", cli_upload}, {"download", cli_download}, {"cat", cli_cat},
		{"action", cli_action}, {"execute", cli_execute},   {"status", cli_status},
		{"auth", cli_auth},
	};
	cli_t c = {.server = "127.0.0.1:8980", .instance = ""};
	const char *env = getenv("REAP_SERVER");
	int opt, level;

	if (env != NULL && env[0] != '\0')
		c.server = env;
	reap_log_set_level(REAP_LOG_WARN);
	/* "+": stop at the subcommand; its options are its own. */
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (opt) {
		case 's': c.server = optarg; break;
		case 'i': c.instance = optarg; break;
		case 't': c.token_file = optarg; break;
		case 'T': c.tls = true; break;
		case 'A': c.tls_ca = optarg; break;
		case 'C': c.tls_cert = optarg; break;
		case 'K': c.tls_key = optarg; break;
		case 'N': c.tls_server_name = optarg; break;
		case 'j': c.json = true; break;
		case 'L':
			if ((level = reap_log_level_parse(optarg)) < 0) {
				fprintf(stderr, "reap: --log-level '%s' is not debug, info, warn or error\n",
					optarg);
				return CLI_EXIT_USAGE;
			}
			reap_log_set_level((reap_log_level_t)level);
			break;
		case 'h':
			usage(stdout);
			return CLI_EXIT_OK;
		default:
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if ((c.tls_cert == NULL) != (c.tls_key == NULL)) {
		fprintf(stderr, "reap: --tls-cert and --tls-key go together\n");
		return CLI_EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(argv[optind], cmds[i].name) == 0) {
			int sub_argc = argc - optind;
			char **sub_argv = argv + optind;
			int rc;
			optind = 0; /* GNU getopt: start over for the subcommand's own options */
			rc = cmds[i].fn(&c, sub_argc, sub_argv);
			cli_close(&c);
			return rc;
		}
	}
	fprintf(stderr, "reap: unknown command '%s' (see reap --help)\n", argv[optind]);
	return CLI_EXIT_USAGE;
}
