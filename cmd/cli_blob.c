/*
 * cli_blob.c - `reap upload`, `reap download` and `reap cat`: blobs and
 * Directory trees between local files and the CAS (cli_tree.c does the
 * transfers).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"

int cli_upload(cli_t *c, int argc, char **argv)
{
	static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	json_t *arr = NULL;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		fprintf(opt == 'h' ? stdout : stderr, "usage: reap upload FILE|DIR...\n");
		return opt == 'h' ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	}
	if (optind >= argc) {
		fprintf(stderr, "usage: reap upload FILE|DIR...\n");
		return CLI_EXIT_USAGE;
	}
	if ((rc = cli_connect(c)) != CLI_EXIT_OK)
		return rc;
	if (c->json && (arr = json_array()) == NULL)
		return CLI_EXIT_LOCAL;
	for (int i = optind; i < argc; i++) {
		reap_errbuf_t eb = {{0}};
		reap_digest_t d;
		bool is_dir = false;
		char buf[REAP_HASH_HEX_LEN + 24];
		int err = cli_upload_path(c, argv[i], &d, &is_dir, &eb);

		if (err != REAP_OK) {
			json_decref(arr);
			return cli_fail(err, &eb, argv[i]);
		}
		cli_digest_str(&d, buf, sizeof(buf));
		if (arr != NULL)
			json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I}", "path", argv[i],
							     "type", is_dir ? "directory" : "file",
							     "digest", buf, "size", (json_int_t)d.size));
		else if (argc - optind == 1)
			printf("%s\n", buf);
		else
			printf("%s  %s\n", buf, argv[i]);
	}
	if (arr != NULL)
		cli_json_print(argc - optind == 1 ? json_incref(json_array_get(arr, 0)) : json_incref(arr));
	json_decref(arr);
	return CLI_EXIT_OK;
}

/* Download blob d to path through a temp file renamed into place. */
static int download_file(cli_t *c, const reap_digest_t *d, const char *path, reap_errbuf_t *eb)
{
	char *copy = strdup(path), *tmp = NULL;
	mode_t mask = umask(0);
	int fd = -1, err;

	umask(mask);
	if (copy == NULL || asprintf(&tmp, "%s/.reap-download-XXXXXX", dirname(copy)) < 0) {
		free(copy);
		return REAP_E_NOMEM;
	}
	if ((fd = mkstemp(tmp)) < 0) {
		err = reap_errf(eb, REAP_E_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	if ((err = cli_download_fd(c, d, fd, eb)) != REAP_OK)
		goto out;
	if (fchmod(fd, 0666 & ~mask) != 0 || close(fd) != 0) {
		fd = -1;
		err = reap_errf(eb, REAP_E_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		err = reap_errf(eb, REAP_E_IO, "rename to %s: %s", path, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	if (err != REAP_OK && tmp != NULL)
		unlink(tmp);
	free(tmp);
	free(copy);
	return err;
}

int cli_download(cli_t *c, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"output", required_argument, NULL, 'o'}, {"dir", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
	};
	static const char use[] = "usage: reap download DIGEST [-o PATH] [--dir]\n";
	const char *out = NULL;
	reap_errbuf_t eb = {{0}};
	reap_digest_t d;
	bool dir = false;
	int opt, rc, err;

	while ((opt = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'o': out = optarg; break;
		case 'd': dir = true; break;
		case 'h': fputs(use, stdout); return CLI_EXIT_OK;
		default: fputs(use, stderr); return CLI_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc) {
		fputs(use, stderr);
		return CLI_EXIT_USAGE;
	}
	if (dir && out == NULL) {
		fprintf(stderr, "reap: download --dir needs -o PATH (the folder to create)\n");
		return CLI_EXIT_USAGE;
	}
	if (cli_digest_parse(argv[optind], &d) != REAP_OK)
		return CLI_EXIT_USAGE;
	if ((rc = cli_connect(c)) != CLI_EXIT_OK)
		return rc;
	if (dir)
		err = cli_tree_download(c, &d, out, &eb);
	else if (out != NULL && strcmp(out, "-") != 0)
		err = download_file(c, &d, out, &eb);
	else
		err = cli_download_fd(c, &d, STDOUT_FILENO, &eb);
	if (err != REAP_OK)
		return cli_fail(err, &eb, "download");
	if (c->json && out != NULL && strcmp(out, "-") != 0) {
		char buf[REAP_HASH_HEX_LEN + 24];
		cli_json_print(json_pack("{s:s, s:s, s:s}", "digest", cli_digest_str(&d, buf, sizeof(buf)),
					 "path", out, "type", dir ? "directory" : "file"));
	}
	return CLI_EXIT_OK;
}

int cli_cat(cli_t *c, int argc, char **argv)
{
	reap_errbuf_t eb = {{0}};
	reap_digest_t d;
	int rc, err;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(argc == 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr,
			"usage: reap cat DIGEST\n");
		return argc == 2 && strcmp(argv[1], "--help") == 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	}
	if (cli_digest_parse(argv[1], &d) != REAP_OK)
		return CLI_EXIT_USAGE;
	if ((rc = cli_connect(c)) != CLI_EXIT_OK)
		return rc;
	if ((err = wrk_cas_download(c->cas, &d, STDOUT_FILENO, &eb)) != REAP_OK)
		return cli_fail(err, &eb, "cat");
	return CLI_EXIT_OK;
}
