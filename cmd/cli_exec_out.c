/*
 * cli_exec_out.c - `reap execute --output PATH`: fetch an action's outputs
 * back into the current folder.
 *
 * Each output lands atomically: a file is downloaded to a temp file next
 * to its path and renamed over it; a folder is materialized into a temp
 * folder next to its path and swapped in (RENAME_EXCHANGE), the old one
 * removed afterwards; a symlink replaces what was at its path (a folder
 * there is left alone). Only paths the caller allows (the requested ones)
 * are written; missing parent folders are created.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "worker/worker_int.h"

/* mkdir -p of path's parent folders. */
static int make_parents(const char *path, reap_errbuf_t *eb)
{
	char *p = strdup(path);
	int err = REAP_OK;

	if (p == NULL)
		return REAP_E_NOMEM;
	for (char *s = strchr(p, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir(p, 0777) != 0 && errno != EEXIST) {
			err = reap_errf(eb, REAP_E_IO, "mkdir %s: %s", p, strerror(errno));
			break;
		}
		*s = '/';
	}
	free(p);
	return err;
}

static int fetch_file(cli_t *c, const WRK_RE(OutputFile) *f, mode_t mask, reap_errbuf_t *eb)
{
	reap_digest_t d;
	char *tmp = NULL;
	int fd = -1, err;

	if ((err = wrk_digest_from_pb(f->digest, &d, eb)) != REAP_OK)
		return err;
	if ((err = make_parents(f->path, eb)) != REAP_OK)
		return err;
	if (asprintf(&tmp, "%s.reap-XXXXXX", f->path) < 0)
		return REAP_E_NOMEM;
	if ((fd = mkstemp(tmp)) < 0) {
		err = reap_errf(eb, REAP_E_IO, "%s: %s", f->path, strerror(errno));
		goto out;
	}
	if ((err = cli_download_fd(c, &d, fd, eb)) != REAP_OK)
		goto out;
	if (fchmod(fd, (f->is_executable ? 0777 : 0666) & ~mask) != 0 || rename(tmp, f->path) != 0)
		err = reap_errf(eb, REAP_E_IO, "%s: %s", f->path, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	if (err != REAP_OK && fd >= 0)
		unlink(tmp);
	free(tmp);
	return err;
}

static int fetch_dir(cli_t *c, const WRK_RE(OutputDirectory) *o, reap_errbuf_t *eb)
{
	reap_digest_t d;
	struct stat st;
	char *tmp = NULL;
	int err;

	if (o->root_directory_digest == NULL)
		return reap_errf(eb, REAP_E_UNIMPLEMENTED,
				 "output directory %s has no root_directory_digest", o->path);
	if ((err = wrk_digest_from_pb(o->root_directory_digest, &d, eb)) != REAP_OK)
		return err;
	if ((err = make_parents(o->path, eb)) != REAP_OK)
		return err;
	if (asprintf(&tmp, "%s.reap-XXXXXX", o->path) < 0)
		return REAP_E_NOMEM;
	if (mkdtemp(tmp) == NULL) {
		err = reap_errf(eb, REAP_E_IO, "%s: %s", o->path, strerror(errno));
		free(tmp);
		return err;
	}
	if ((err = cli_tree_download(c, &d, tmp, eb)) != REAP_OK)
		goto out;
	if (lstat(o->path, &st) == 0 && S_ISDIR(st.st_mode)) {
		if (renameat2(AT_FDCWD, tmp, AT_FDCWD, o->path, RENAME_EXCHANGE) != 0)
			err = reap_errf(eb, REAP_E_IO, "replace %s: %s", o->path, strerror(errno));
		goto out; /* tmp is now the old folder (or still the new one): removed below */
	}
	if (rename(tmp, o->path) != 0) /* absent, or a file or symlink: replaced */
		err = reap_errf(eb, REAP_E_IO, "%s: %s", o->path, strerror(errno));
out:
	wrk_rm_tree(tmp);
	free(tmp);
	return err;
}

static int fetch_symlink(const WRK_RE(OutputSymlink) *l, reap_errbuf_t *eb)
{
	struct stat st;
	int err = make_parents(l->path, eb);

	if (err != REAP_OK)
		return err;
	if (lstat(l->path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return reap_errf(eb, REAP_E_IO, "%s is a folder; not replacing it with a symlink",
					 l->path);
		unlink(l->path);
	}
	if (symlink(l->target, l->path) != 0)
		return reap_errf(eb, REAP_E_IO, "symlink %s: %s", l->path, strerror(errno));
	return REAP_OK;
}

int cli_exec_outputs(cli_t *c, const WRK_RE(ActionResult) *ar,
		     bool (*allowed)(const void *ctx, const char *path), const void *ctx,
		     reap_errbuf_t *eb)
{
	mode_t mask = umask(0);
	int err = REAP_OK;

	umask(mask);
	for (size_t i = 0; err == REAP_OK && i < ar->n_output_files; i++)
		if (allowed(ctx, ar->output_files[i]->path))
			err = fetch_file(c, ar->output_files[i], mask, eb);
	for (size_t i = 0; err == REAP_OK && i < ar->n_output_directories; i++)
		if (allowed(ctx, ar->output_directories[i]->path))
			err = fetch_dir(c, ar->output_directories[i], eb);
	for (size_t i = 0; err == REAP_OK && i < ar->n_output_symlinks; i++)
		if (allowed(ctx, ar->output_symlinks[i]->path))
			err = fetch_symlink(ar->output_symlinks[i], eb);
	return err;
}
