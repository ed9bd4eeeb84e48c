/*
 * cli_tree.c - files and folders to and from the CAS for `reap`, on top of
 * the worker's code rather than a copy of it:
 *
 *   upload    wrk_collect_outputs() with the folder as its exec root and
 *             output path "" (or a file's folder and its name): the same
 *             walk that uploads an action's output directories, so a
 *             folder becomes a REAPI Directory tree (executable bits,
 *             symlinks as symlink nodes, absolute targets refused), and
 *             only blobs FindMissingBlobs reports missing are sent,
 *             small ones batched, large ones by ByteStream;
 *   download  wrk_stage() into the target folder, with a throw-away file
 *             cache next to it (same filesystem, so files are hardlinked
 *             out of it, not copied): the tree is validated exactly as a
 *             worker validates an input root before anything is written.
 *             The staged files are then given ordinary modes (0644/0755
 *             less the umask) and a file staged at several paths gets its
 *             own inode at each, so the result is a plain folder;
 *   summary   GetTree, every Directory keyed by the digest of its encoding,
 *             then a walk from the root with each distinct subtree's
 *             totals computed once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "worker/worker_int.h"

#define SMALL_READ_ONCE ((int64_t)512 << 10) /* the collector reads larger files twice */

/* ---- upload ---- */

/* Bytes the upload will read: small files once, larger ones twice (hash, then send). */
static int64_t upload_estimate(const char *path, int depth)
{
	struct stat st;
	int64_t total = 0;
	DIR *d;
	struct dirent *de;

	if (lstat(path, &st) != 0)
		return 0;
	if (S_ISREG(st.st_mode))
		return st.st_size > SMALL_READ_ONCE ? 2 * (int64_t)st.st_size : (int64_t)st.st_size;
	if (!S_ISDIR(st.st_mode) || depth > WRK_MAX_DEPTH || (d = opendir(path)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char *sub;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (asprintf(&sub, "%s/%s", path, de->d_name) < 0)
			break;
		total += upload_estimate(sub, depth + 1);
		free(sub);
	}
	closedir(d);
	return total;
}

int cli_upload_path(cli_t *c, const char *path, reap_digest_t *d, bool *is_dir,
		    reap_errbuf_t *eb)
{
	WRK_RE(Command) cmd = WRK_RE_INIT(COMMAND);
	WRK_RE(ActionResult) ar = WRK_RE_INIT(ACTION_RESULT);
	char *abs = realpath(path, NULL), *dircopy = NULL, *basecopy = NULL;
	char *out_path = (char *)"";
	const char *root;
	cli_progress_t *prog = NULL;
	struct stat st;
	int err;

	if (abs == NULL || stat(abs, &st) != 0) {
		err = reap_errf(eb, REAP_E_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	*is_dir = S_ISDIR(st.st_mode);
	if (*is_dir) {
		root = abs;
	} else if (S_ISREG(st.st_mode)) {
		if ((dircopy = strdup(abs)) == NULL || (basecopy = strdup(abs)) == NULL) {
			err = REAP_E_NOMEM;
			goto out;
		}
		root = dirname(dircopy);
		out_path = basename(basecopy);
	} else {
		err = reap_errf(eb, REAP_E_IO, "%s is not a regular file or a folder", path);
		goto out;
	}
	if (isatty(STDERR_FILENO))
		prog = cli_progress_start("uploading", upload_estimate(abs, 0), cli_read_bytes, NULL);
	cmd.n_output_paths = 1;
	cmd.output_paths = &out_path;
	err = wrk_collect_outputs(c->cas, root, &cmd, &ar, eb);
	cli_progress_stop(prog);
	if (err != REAP_OK)
		goto out;
	if (*is_dir && ar.n_output_directories == 1)
		err = wrk_digest_from_pb(ar.output_directories[0]->root_directory_digest, d, eb);
	else if (!*is_dir && ar.n_output_files == 1)
		err = wrk_digest_from_pb(ar.output_files[0]->digest, d, eb);
	else
		err = reap_errf(eb, REAP_E_IO, "%s changed while it was uploaded", path);
out:
	wrk_result_free_outputs(&ar);
	free(abs);
	free(dircopy);
	free(basecopy);
	return err;
}

/* ---- download of one blob ---- */

static int64_t fd_size(void *ctx)
{
	struct stat st;
	return fstat(*(int *)ctx, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
}

int cli_download_fd(cli_t *c, const reap_digest_t *d, int fd, reap_errbuf_t *eb)
{
	cli_progress_t *prog = cli_progress_start("downloading", d->size, fd_size, &fd);
	int err = wrk_cas_download(c->cas, d, fd, eb);
	cli_progress_stop(prog);
	return err;
}

/* ---- summary ---- */

typedef struct summ_node {
	WRK_RE(Directory) *dir;
	bool done;
	cli_tree_summary_t sum;
} summ_node_t;

typedef struct summ {
	cli_t *c;
	wrk_dmap_t dirs; /* digest -> summ_node_t */
} summ_t;

static int summ_keep(summ_t *s, const reap_digest_t *d, WRK_RE(Directory) *dir)
{
	wrk_dmap_slot_t *slot;
	bool added;
	summ_node_t *n;
	int err = wrk_dmap_put(&s->dirs, d, &slot, &added);

	if (err != REAP_OK || !added || (n = calloc(1, sizeof(*n))) == NULL) {
		protobuf_c_message_free_unpacked(&dir->base, NULL);
		return err != REAP_OK ? err : added ? REAP_E_NOMEM : REAP_OK;
	}
	n->dir = dir;
	slot->value = n;
	return REAP_OK;
}

/* GetTree callback: key a copy of dir by the digest of its encoding. */
static int summ_cb(void *ctx, const WRK_RE(Directory) *dir)
{
	size_t len = protobuf_c_message_get_packed_size(&dir->base);
	uint8_t *buf = malloc(len + 1);
	WRK_RE(Directory) *copy;
	reap_digest_t d;
	int err;

	if (buf == NULL)
		return REAP_E_NOMEM;
	protobuf_c_message_pack(&dir->base, buf);
	copy = WRK_RE_FN(directory__unpack)(NULL, len, buf);
	err = copy == NULL || reap_digest_of(buf, len, &d) != REAP_OK ? REAP_E_NOMEM
								       : summ_keep(ctx, &d, copy);
	free(buf);
	return err;
}

static int summ_walk(summ_t *s, const reap_digest_t *d, int depth, cli_tree_summary_t *out,
		     reap_errbuf_t *eb)
{
	wrk_dmap_slot_t *slot = wrk_dmap_find(&s->dirs, d);
	summ_node_t *n;
	int err;

	if (depth > WRK_MAX_DEPTH)
		return reap_errf(eb, REAP_E_EXHAUSTED, "the tree is nested deeper than %d levels",
				 WRK_MAX_DEPTH);
	if (slot == NULL) { /* GetTree did not deliver it: fetch it on its own (verified) */
		void *data = NULL;
		size_t len = 0;
		WRK_RE(Directory) *dir;
		if ((err = wrk_cas_get(s->c->cas, d, WRK_MAX_DIR_BYTES, &data, &len, eb)) != REAP_OK)
			return err;
		dir = WRK_RE_FN(directory__unpack)(NULL, len, data);
		free(data);
		if (dir == NULL)
			return reap_errf(eb, REAP_E_INVALID, "a Directory in the tree does not parse");
		if ((err = summ_keep(s, d, dir)) != REAP_OK)
			return err;
		slot = wrk_dmap_find(&s->dirs, d);
	}
	n = slot->value;
	if (!n->done) {
		cli_tree_summary_t sum = {.dirs = 1};
		const WRK_RE(Directory) *dir = n->dir;
		sum.files = (int64_t)dir->n_files;
		sum.symlinks = (int64_t)dir->n_symlinks;
		for (size_t i = 0; i < dir->n_files; i++)
			if (dir->files[i]->digest != NULL)
				sum.bytes += dir->files[i]->digest->size_bytes;
		for (size_t i = 0; i < dir->n_directories; i++) {
			reap_digest_t cd;
			cli_tree_summary_t cs;
			if ((err = wrk_digest_from_pb(dir->directories[i]->digest, &cd, eb)) != REAP_OK ||
			    (err = summ_walk(s, &cd, depth + 1, &cs, eb)) != REAP_OK)
				return err;
			sum.files += cs.files;
			sum.dirs += cs.dirs;
			sum.symlinks += cs.symlinks;
			sum.bytes += cs.bytes;
			if (sum.files + sum.dirs > WRK_MAX_ENTRIES * 100LL)
				return reap_errf(eb, REAP_E_EXHAUSTED, "the tree is too large");
		}
		n->sum = sum;
		n->done = true;
	}
	*out = n->sum;
	return REAP_OK;
}

int cli_tree_summary(cli_t *c, const reap_digest_t *root, cli_tree_summary_t *out,
		     reap_errbuf_t *eb)
{
	summ_t s = {.c = c};
	int err;

	memset(out, 0, sizeof(*out));
	err = wrk_cas_get_tree(c->cas, root, summ_cb, &s, eb);
	if (err == REAP_OK || err == REAP_E_UNIMPLEMENTED) /* walk fetches what is missing */
		err = summ_walk(&s, root, 0, out, eb);
	out->distinct_dirs = (int64_t)s.dirs.n;
	for (size_t i = 0; i < s.dirs.cap; i++) {
		summ_node_t *n = s.dirs.slots[i].used ? s.dirs.slots[i].value : NULL;
		if (n != NULL) {
			protobuf_c_message_free_unpacked(&n->dir->base, NULL);
			free(n);
		}
	}
	wrk_dmap_destroy(&s.dirs);
	return err;
}

/* ---- download of a tree ---- */

/* Bytes in the files under the folder dfd (taken), a few levels deep. */
static int64_t bytes_under(int dfd, int depth)
{
	DIR *d = fdopendir(dfd);
	struct dirent *de;
	int64_t total = 0;

	if (d == NULL) {
		close(dfd);
		return 0;
	}
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (S_ISREG(st.st_mode)) {
			total += st.st_size;
		} else if (S_ISDIR(st.st_mode) && depth < 3) {
			int sub = openat(dirfd(d), de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				total += bytes_under(sub, depth + 1);
		}
	}
	closedir(d);
	return total;
}

/* Bytes in the download cache ctx (a folder), its tmp/ included. */
static int64_t dir_bytes(void *ctx)
{
	int fd = open(ctx, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? 0 : bytes_under(fd, 0);
}

/* Give a staged file an ordinary mode and an inode of its own. */
static int finish_file(const wrk_staged_file_t *f, mode_t mask, reap_errbuf_t *eb)
{
	mode_t mode = (f->executable ? 0755 : 0644) & ~mask;
	struct stat st;
	char *tmp = NULL;
	int in = -1, out = -1, err = REAP_OK;

	if (lstat(f->path, &st) != 0)
		return reap_errf(eb, REAP_E_IO, "%s: %s", f->path, strerror(errno));
	if (st.st_nlink <= 1) {
		if (chmod(f->path, mode) != 0)
			return reap_errf(eb, REAP_E_IO, "chmod %s: %s", f->path, strerror(errno));
		return REAP_OK;
	}
	if (asprintf(&tmp, "%s.reap-tmp", f->path) < 0)
		return REAP_E_NOMEM;
	in = open(f->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (in < 0 || out < 0) {
		err = reap_errf(eb, REAP_E_IO, "copy %s: %s", f->path, strerror(errno));
		goto out;
	}
	for (;;) {
		char buf[65536];
		ssize_t r = read(in, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r < 0)
				err = reap_errf(eb, REAP_E_IO, "read %s: %s", f->path, strerror(errno));
			break;
		}
		if (write(out, buf, (size_t)r) != r) {
			err = reap_errf(eb, REAP_E_IO, "write %s: %s", tmp, strerror(errno));
			break;
		}
	}
	if (err == REAP_OK && (fchmod(out, mode) != 0 || rename(tmp, f->path) != 0))
		err = reap_errf(eb, REAP_E_IO, "replace %s: %s", f->path, strerror(errno));
out:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (err != REAP_OK)
		unlink(tmp);
	free(tmp);
	return err;
}

int cli_tree_download(cli_t *c, const reap_digest_t *root, const char *dir, reap_errbuf_t *eb)
{
	char *dircopy = strdup(dir), *cache_dir = NULL;
	wrk_cache_t *cache = NULL;
	wrk_staged_t staged = {0};
	cli_progress_t *prog = NULL;
	mode_t mask = umask(0);
	DIR *probe;
	int err = REAP_OK;

	umask(mask);
	if (dircopy == NULL)
		return REAP_E_NOMEM;
	if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
		err = reap_errf(eb, REAP_E_IO, "mkdir %s: %s", dir, strerror(errno));
		goto out;
	}
	if ((probe = opendir(dir)) == NULL) {
		err = reap_errf(eb, REAP_E_IO, "%s: %s", dir, strerror(errno));
		goto out;
	}
	for (struct dirent *de; err == REAP_OK && (de = readdir(probe)) != NULL;)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			err = reap_errf(eb, REAP_E_IO, "%s is not empty", dir);
	closedir(probe);
	if (err != REAP_OK)
		goto out;
	/* The cache sits next to dir, on its filesystem, so staging hardlinks. */
	if (asprintf(&cache_dir, "%s/.reap-download-XXXXXX", dirname(dircopy)) < 0) {
		cache_dir = NULL;
		err = REAP_E_NOMEM;
		goto out;
	}
	if (mkdtemp(cache_dir) == NULL) {
		err = reap_errf(eb, REAP_E_IO, "mkdtemp %s: %s", cache_dir, strerror(errno));
		free(cache_dir);
		cache_dir = NULL;
		goto out;
	}
	if ((cache = wrk_cache_open(cache_dir, 0, eb)) == NULL) {
		err = REAP_E_IO;
		goto out;
	}
	if (isatty(STDERR_FILENO)) {
		cli_tree_summary_t sum;
		if (cli_tree_summary(c, root, &sum, NULL) == REAP_OK)
			prog = cli_progress_start("downloading", sum.bytes, dir_bytes, cache_dir);
	}
	err = wrk_stage(cache, c->cas, root, dir, &staged, eb);
	cli_progress_stop(prog);
	if (err == REAP_E_PRECONDITION && staged.n_missing > 0) {
		for (size_t i = 0; i < staged.n_missing; i++)
			fprintf(stderr, "reap: missing %s\n", staged.missing[i]);
		err = reap_errf(eb, REAP_E_NOT_FOUND, "%zu blob%s of the tree not in the CAS",
				staged.n_missing, staged.n_missing == 1 ? " is" : "s are");
	}
	wrk_cache_close(cache);
	cache = NULL;
	wrk_rm_tree(cache_dir); /* staged files keep their data: they are links */
	for (size_t i = 0; err == REAP_OK && i < staged.n; i++)
		err = finish_file(&staged.files[i], mask, eb);
out:
	wrk_cache_close(cache);
	if (cache_dir != NULL)
		wrk_rm_tree(cache_dir);
	wrk_staged_destroy(&staged);
	free(cache_dir);
	free(dircopy);
	return err;
}
