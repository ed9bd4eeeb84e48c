/*
 * cli_auth.c - `reap auth keygen|token|inspect`: token signing keys and
 * bearer tokens (auth/auth.h does the work). Runs offline: no server.
 *
 * Keys are secrets: they are only ever read from and written to files
 * readable by their owner alone, and copies in memory are wiped.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "cmd/cli.h"

static int keygen(cli_t *c, int argc, char **argv)
{
	reap_errbuf_t eb = {{0}};
	int err;

	if (argc != 2 || argv[1][0] == '-') {
		fputs("usage: reap auth keygen FILE\n", stderr);
		return CLI_EXIT_USAGE;
	}
	if ((err = auth_key_generate_file(argv[1], &eb)) != REAP_OK)
		return cli_fail(err, &eb, "keygen");
	if (c->json)
		cli_json_print(json_pack("{s:s}", "key_file", argv[1]));
	else
		fprintf(stderr, "reap: wrote a new key to %s (mode 0600)\n", argv[1]);
	return CLI_EXIT_OK;
}

/* "30d", "12h", "15m", "90s", "3600" (seconds). */
static int parse_ttl(const char *s, int64_t *out)
{
	char *end = NULL;
	long long v;
	int64_t mul = 1;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || v <= 0)
		return REAP_E_INVALID;
	if (*end != '\0' && end[1] != '\0')
		return REAP_E_INVALID;
	switch (*end) {
	case '\0':
	case 's': mul = 1; break;
	case 'm': mul = 60; break;
	case 'h': mul = 3600; break;
	case 'd': mul = 86400; break;
	case 'w': mul = 7 * 86400; break;
	default: return REAP_E_INVALID;
	}
	if (v > INT64_MAX / mul / 2)
		return REAP_E_INVALID;
	*out = v * mul;
	return REAP_OK;
}

static int issue(cli_t *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"key", required_argument, NULL, 'k'},       {"subject", required_argument, NULL, 's'},
		{"role", required_argument, NULL, 'r'},      {"instances", required_argument, NULL, 'i'},
		{"ttl", required_argument, NULL, 't'},       {NULL, 0, NULL, 0},
	};
	static const char use[] = "usage: reap auth token --key FILE --subject S "
				  "--role client|worker|writer|admin [--instances A,B] [--ttl 30d]\n";
	const char *key_file = NULL, *subject = NULL, *role = NULL, *instances = NULL;
	auth_claims_t claims = {0};
	auth_key_t key = {.len = 0};
	reap_errbuf_t eb = {{0}};
	int64_t ttl = 30 * 86400;
	char *tok = NULL;
	int opt, err;

	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'k': key_file = optarg; break;
		case 's': subject = optarg; break;
		case 'r': role = optarg; break;
		case 'i': instances = optarg; break;
		case 't':
			if (parse_ttl(optarg, &ttl) != REAP_OK) {
				fprintf(stderr, "reap: --ttl '%s' is not e.g. 3600, 90m, 12h or 30d\n",
					optarg);
				return CLI_EXIT_USAGE;
			}
			break;
		default: fputs(use, stderr); return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc || key_file == NULL || subject == NULL || role == NULL) {
		fputs(use, stderr);
		return CLI_EXIT_USAGE;
	}
	if (strlen(subject) >= sizeof(claims.subject) ||
	    auth_role_parse(role, &claims.role) != REAP_OK || claims.role == AUTH_ROLE_NONE) {
		fprintf(stderr, "reap: bad --subject or --role (client, worker, writer or admin)\n");
		return CLI_EXIT_USAGE;
	}
	snprintf(claims.subject, sizeof(claims.subject), "%s", subject);
	for (const char *p = instances; p != NULL && *p != '\0';) {
		size_t len = strcspn(p, ",");
		if (claims.n_instances == AUTH_MAX_PREFIXES || len > REAP_INSTANCE_MAX) {
			fprintf(stderr, "reap: at most %d instance prefixes of %d bytes\n",
				AUTH_MAX_PREFIXES, REAP_INSTANCE_MAX);
			return CLI_EXIT_USAGE;
		}
		memcpy(claims.instances[claims.n_instances], p, len);
		claims.instances[claims.n_instances++][len] = '\0';
		p += len + (p[len] == ',');
	}
	if (claims.n_instances == 0)
		claims.n_instances = 1; /* one prefix "": every instance */
	claims.issued_at = (int64_t)time(NULL);
	claims.expires = claims.issued_at + ttl;
	if ((err = auth_key_load_file(key_file, &key, &eb)) != REAP_OK) {
		err = cli_fail(err, &eb, key_file);
		goto out;
	}
	key.signing = true;
	if ((err = auth_token_issue(&key, &claims, &tok, &eb)) != REAP_OK) {
		err = err == REAP_E_INVALID ? (cli_fail(err, &eb, "token"), CLI_EXIT_USAGE)
					    : cli_fail(err, &eb, "token");
		goto out;
	}
	if (c->json)
		cli_json_print(json_pack("{s:s, s:I}", "token", tok, "expires",
					 (json_int_t)claims.expires));
	else
		printf("%s\n", tok);
	err = CLI_EXIT_OK;
out:
	explicit_bzero(&key, sizeof(key));
	if (tok != NULL)
		explicit_bzero(tok, strlen(tok));
	free(tok);
	return err;
}

/* The token from argv or, for "-", the first line of stdin (heap). */
static char *read_token_arg(const char *arg)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (strcmp(arg, "-") != 0)
		return strdup(arg);
	if ((n = getline(&line, &cap, stdin)) < 0) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
		line[--n] = '\0';
	return line;
}

static void fmt_time(int64_t t, char *buf, size_t cap)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (t == 0 || gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, cap, "%s", t == 0 ? "-" : "?");
}

static int inspect(cli_t *c, int argc, char **argv)
{
	static const struct option longopts[] = {{"key", required_argument, NULL, 'k'},
						 {NULL, 0, NULL, 0}};
	static const char use[] = "usage: reap auth inspect [--key FILE] TOKEN|-\n";
	const char *key_file = NULL;
	auth_claims_t claims;
	auth_key_t key = {.len = 0};
	reap_errbuf_t eb = {{0}}, veb = {{0}};
	char *tok = NULL, issued[32], expires[32];
	int64_t now = (int64_t)time(NULL);
	int opt, err, verr = REAP_OK, rc;

	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (opt != 'k') {
			fputs(use, stderr);
			return CLI_EXIT_USAGE;
		}
		key_file = optarg;
	}
	if (optind + 1 != argc) {
		fputs(use, stderr);
		return CLI_EXIT_USAGE;
	}
	if ((tok = read_token_arg(argv[optind])) == NULL) {
		fprintf(stderr, "reap: no token given\n");
		return CLI_EXIT_USAGE;
	}
	if ((err = auth_token_decode_unverified(tok, &claims, &eb)) != REAP_OK) {
		fprintf(stderr, "reap: not a reap token: %s\n", reap_errmsg(&eb, err));
		rc = CLI_EXIT_AUTH;
		goto out;
	}
	if (key_file != NULL) {
		auth_claims_t vc;
		if ((err = auth_key_load_file(key_file, &key, &eb)) != REAP_OK) {
			rc = cli_fail(err, &eb, key_file);
			goto out;
		}
		verr = auth_token_verify(&key, 1, tok, strlen(tok), now, &vc, &veb);
	}
	fmt_time(claims.issued_at, issued, sizeof(issued));
	fmt_time(claims.expires, expires, sizeof(expires));
	if (c->json) {
		json_t *inst = json_array();
		for (size_t i = 0; inst != NULL && i < claims.n_instances; i++)
			json_array_append_new(inst, json_string(claims.instances[i]));
		json_t *j = json_pack("{s:s, s:s, s:o, s:I, s:I, s:b}", "subject", claims.subject,
				      "role", auth_role_name(claims.role), "instances", inst,
				      "issued_at", (json_int_t)claims.issued_at, "expires",
				      (json_int_t)claims.expires, "expired", claims.expires <= now);
		if (j != NULL && key_file != NULL) {
			json_object_set_new(j, "valid", json_boolean(verr == REAP_OK));
			if (verr != REAP_OK)
				json_object_set_new(j, "reason", json_string(reap_errmsg(&veb, verr)));
		}
		cli_json_print(j);
	} else {
		printf("subject:   %s\nrole:      %s\ninstances:", claims.subject,
		       auth_role_name(claims.role));
		if (claims.n_instances == 0)
			printf(" (all)");
		for (size_t i = 0; i < claims.n_instances; i++)
			printf(" %s", claims.instances[i][0] != '\0' ? claims.instances[i] : "\"\"");
		printf("\nissued:    %s\nexpires:   %s%s\n", issued, expires,
		       claims.expires <= now ? " (expired)" : "");
		if (key_file == NULL)
			printf("signature: not checked (no --key)\n");
		else if (verr == REAP_OK)
			printf("valid:     yes\n");
		else
			printf("valid:     no: %s\n", reap_errmsg(&veb, verr));
	}
	rc = key_file != NULL && verr != REAP_OK ? CLI_EXIT_AUTH : CLI_EXIT_OK;
out:
	explicit_bzero(&key, sizeof(key));
	explicit_bzero(tok, strlen(tok));
	free(tok);
	return rc;
}

int cli_auth(cli_t *c, int argc, char **argv)
{
	static const char use[] = "usage: reap auth keygen FILE | token ... | inspect ... "
				  "(see reap --help)\n";
	if (argc < 2) {
		fputs(use, stderr);
		return CLI_EXIT_USAGE;
	}
	optind = 0; /* the action's own options start at argv[1] */
	if (strcmp(argv[1], "keygen") == 0)
		return keygen(c, argc - 1, argv + 1);
	if (strcmp(argv[1], "token") == 0)
		return issue(c, argc - 1, argv + 1);
	if (strcmp(argv[1], "inspect") == 0)
		return inspect(c, argc - 1, argv + 1);
	if (strcmp(argv[1], "--help") == 0) {
		fputs(use, stdout);
		return CLI_EXIT_OK;
	}
	fputs(use, stderr);
	return CLI_EXIT_USAGE;
}
