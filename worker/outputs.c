/*
 * outputs.c - collect what an action produced and upload it: output files,
 * output directories (as Tree blobs) and output symlinks, into the
 * ActionResult.
 *
 * Everything in the exec root is hostile. Output paths are relative to
 * exec_root/working_directory and must not be absolute or hold ".."
 * (REAP_E_INVALID: the Command is malformed). Folders are opened one
 * component at a time with openat(O_NOFOLLOW | O_DIRECTORY), so a symlink
 * the action planted as a parent (out -> /etc, then "out/passwd") cannot
 * redirect the worker anywhere: an output whose parent (or working
 * directory) is a symlink is omitted, with a warning, exactly like an
 * absent one. The last component is lstat'ed, never followed: a regular
 * file is uploaded, a directory is walked (openat/fdopendir, O_NOFOLLOW at
 * every level) into a Tree, and a symlink is recorded as an OutputSymlink
 * with its target. Other kinds (fifos, sockets, devices) are omitted. The
 * walk of output directories into Trees lives in tree.c.
 *
 * Spec rules (REAPI v2.1+): an absolute symlink target, as an output or
 * inside an output directory, is REAP_E_PRECONDITION (Capabilities says
 * absolute symlinks are DISALLOWED); so is a legacy output_files entry that
 * turned out to be a directory, or a legacy output_directories entry that
 * turned out to be a file. A symlink found at a legacy path is reported in
 * output_symlinks (the v2.1 field), not in the deprecated per-kind lists.
 *
 * Uploads: small files are read once (hashed and kept) and go up in
 * batches (one FindMissingBlobs and one BatchUpdateBlobs per batch); large
 * ones are streamed from their fd. Each output directory's Tree blob, its
 * root Directory and every distinct child Directory are uploaded too, so
 * root_directory_digest is usable on its own. The Tree is encoded by hand
 * from the packed Directory messages (root, then the distinct children in
 * the order met), which is the canonical encoding protobuf-c would produce.
 *
 * Ownership: every field set in the ActionResult is heap memory freed by
 * wrk_result_free_outputs (see worker.h). On error the output fields are
 * left empty.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker_int.h"

#define SMALL_FILE_MAX ((size_t)1 << 20) /* files up to this size go up in batches */
#define PENDING_MAX 4096                 /* files per batch */

typedef enum { KIND_ANY, KIND_FILE, KIND_DIR } out_kind_t;

/* ---- uploads ---- */

static int flush(wrk_collector_t *o, reap_errbuf_t *eb)
{
	int err = wrk_cas_put_many(o->cas, o->pending, o->n_pending, eb);
	for (size_t i = 0; i < o->n_pending; i++)
		free((void *)o->pending[i].data);
	o->n_pending = 0;
	o->pending_bytes = 0;
	return err;
}

/*
 * Read a small file whole (false when it turns out bigger than max). The
 * buffer starts at the size fstat saw (hint, at most max) plus one byte and
 * grows only if the file does: no max-sized allocation (and its page
 * faults) per file.
 */
static int read_small(int fd, size_t hint, size_t max, uint8_t **data, size_t *len, bool *fits,
		      reap_errbuf_t *eb)
{
	size_t cap = (hint < max ? hint : max) + 1, n = 0;
	uint8_t *buf = malloc(cap);

	*data = NULL;
	*len = 0;
	*fits = false;
	if (buf == NULL)
		return REAP_E_NOMEM;
	while (n <= max) {
		if (n == cap) { /* it grew since fstat */
			size_t ncap = cap * 2 < max + 1 ? cap * 2 : max + 1;
			uint8_t *nb = realloc(buf, ncap);
			if (nb == NULL) {
				free(buf);
				return REAP_E_NOMEM;
			}
			buf = nb;
			cap = ncap;
		}
		ssize_t r = pread(fd, buf + n, cap - n, (off_t)n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			free(buf);
			return reap_errf(eb, REAP_E_IO, "read: %s", strerror(errno));
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > max) {
		free(buf);
		return REAP_OK;
	}
	*data = buf;
	*len = n;
	*fits = true;
	return REAP_OK;
}

/* Upload the regular file name in dfd; *d and *exec describe it. */
int wrk_upload_file(wrk_collector_t *o, int dfd, const char *name, reap_digest_t *d, bool *exec,
		    reap_errbuf_t *eb)
{
	struct stat st;
	uint8_t *data = NULL;
	size_t len;
	bool fits = false;
	int err = REAP_OK;
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "output '%.64s': %s", name, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		err = reap_errf(eb, REAP_E_IO, "output '%.64s' changed while it was collected", name);
		goto out;
	}
	*exec = (st.st_mode & 0111) != 0;
	if ((uint64_t)st.st_size <= o->small_max &&
	    (err = read_small(fd, (size_t)st.st_size, o->small_max, &data, &len, &fits, eb)) !=
		    REAP_OK)
		goto out;
	if (!fits) {
		err = wrk_cas_put_file(o->cas, fd, d, eb);
		goto out;
	}
	if (reap_digest_of(data, len, d) != REAP_OK) {
		err = REAP_E_NOMEM;
		goto out;
	}
	if (o->n_pending == PENDING_MAX ||
	    o->pending_bytes + len > wrk_cas_max_batch(o->cas)) {
		if ((err = flush(o, eb)) != REAP_OK)
			goto out;
	}
	if (o->n_pending == o->cap_pending) { /* grown on demand: most actions have few outputs */
		size_t ncap = o->cap_pending ? o->cap_pending * 2 : 16;
		wrk_blob_t *np = realloc(o->pending, (ncap < PENDING_MAX ? ncap : PENDING_MAX) *
							     sizeof(*np));
		if (np == NULL) {
			err = REAP_E_NOMEM;
			goto out;
		}
		o->pending = np;
		o->cap_pending = ncap < PENDING_MAX ? ncap : PENDING_MAX;
	}
	o->pending[o->n_pending++] = (wrk_blob_t){.data = data, .len = len, .digest = *d};
	o->pending_bytes += len;
	data = NULL;
out:
	free(data);
	close(fd);
	return err;
}

/* The target of symlink name in dfd, refused when absolute. */
int wrk_read_link(int dfd, const char *name, const char *shown, char **target,
		  reap_errbuf_t *eb)
{
	char buf[PATH_MAX];
	ssize_t n = readlinkat(dfd, name, buf, sizeof(buf));

	*target = NULL;
	if (n < 0)
		return reap_errf(eb, REAP_E_IO, "readlink '%.64s': %s", shown, strerror(errno));
	if ((size_t)n >= sizeof(buf))
		return reap_errf(eb, REAP_E_PRECONDITION, "symlink '%.64s' has an overlong target",
				 shown);
	buf[n] = '\0';
	if (buf[0] == '/')
		return reap_errf(eb, REAP_E_PRECONDITION,
				 "output symlink '%.64s' has an absolute target, which is not allowed",
				 shown);
	if ((*target = strdup(buf)) == NULL)
		return REAP_E_NOMEM;
	return REAP_OK;
}

/* ---- the ActionResult ---- */

static int add_file(WRK_RE(ActionResult) *ar, const char *path, const reap_digest_t *d, bool exec)
{
	WRK_RE(OutputFile) *f = malloc(sizeof(*f)), **nf;

	if (f == NULL)
		return REAP_E_NOMEM;
	WRK_RE_FN(output_file__init)(f);
	f->path = strdup(path);
	f->digest = wrk_digest_pb_new(d);
	f->is_executable = exec;
	nf = realloc(ar->output_files, (ar->n_output_files + 1) * sizeof(*nf));
	if (nf != NULL)
		ar->output_files = nf;
	if (nf == NULL || f->path == NULL || f->digest == NULL) {
		free(f->path);
		wrk_digest_pb_free(f->digest);
		free(f);
		return REAP_E_NOMEM;
	}
	ar->output_files[ar->n_output_files++] = f;
	return REAP_OK;
}

static int add_symlink(WRK_RE(ActionResult) *ar, const char *path, char *target)
{
	WRK_RE(OutputSymlink) *l = malloc(sizeof(*l)), **nl;

	if (l == NULL) {
		free(target);
		return REAP_E_NOMEM;
	}
	WRK_RE_FN(output_symlink__init)(l);
	l->path = strdup(path);
	l->target = target;
	nl = realloc(ar->output_symlinks, (ar->n_output_symlinks + 1) * sizeof(*nl));
	if (nl != NULL)
		ar->output_symlinks = nl;
	if (nl == NULL || l->path == NULL) {
		free(l->path);
		free(l->target);
		free(l);
		return REAP_E_NOMEM;
	}
	ar->output_symlinks[ar->n_output_symlinks++] = l;
	return REAP_OK;
}

static int add_dir(WRK_RE(ActionResult) *ar, const char *path, const reap_digest_t *tree,
		   const reap_digest_t *root)
{
	WRK_RE(OutputDirectory) *o = malloc(sizeof(*o)), **no;

	if (o == NULL)
		return REAP_E_NOMEM;
	WRK_RE_FN(output_directory__init)(o);
	o->path = strdup(path);
	o->tree_digest = wrk_digest_pb_new(tree);
	o->root_directory_digest = wrk_digest_pb_new(root);
	no = realloc(ar->output_directories, (ar->n_output_directories + 1) * sizeof(*no));
	if (no != NULL)
		ar->output_directories = no;
	if (no == NULL || o->path == NULL || o->tree_digest == NULL ||
	    o->root_directory_digest == NULL) {
		free(o->path);
		wrk_digest_pb_free(o->tree_digest);
		wrk_digest_pb_free(o->root_directory_digest);
		free(o);
		return REAP_E_NOMEM;
	}
	ar->output_directories[ar->n_output_directories++] = o;
	return REAP_OK;
}

static void free_outputs(WRK_RE(ActionResult) *ar)
{
	for (size_t i = 0; i < ar->n_output_files; i++) {
		free(ar->output_files[i]->path);
		wrk_digest_pb_free(ar->output_files[i]->digest);
		free(ar->output_files[i]);
	}
	free(ar->output_files);
	ar->output_files = NULL;
	ar->n_output_files = 0;
	for (size_t i = 0; i < ar->n_output_symlinks; i++) {
		free(ar->output_symlinks[i]->path);
		free(ar->output_symlinks[i]->target);
		free(ar->output_symlinks[i]);
	}
	free(ar->output_symlinks);
	ar->output_symlinks = NULL;
	ar->n_output_symlinks = 0;
	for (size_t i = 0; i < ar->n_output_directories; i++) {
		free(ar->output_directories[i]->path);
		wrk_digest_pb_free(ar->output_directories[i]->tree_digest);
		wrk_digest_pb_free(ar->output_directories[i]->root_directory_digest);
		free(ar->output_directories[i]);
	}
	free(ar->output_directories);
	ar->output_directories = NULL;
	ar->n_output_directories = 0;
}

void wrk_result_free_outputs(WRK_RE(ActionResult) *ar)
{
	if (ar == NULL)
		return;
	free_outputs(ar);
	wrk_digest_pb_free(ar->stdout_digest);
	wrk_digest_pb_free(ar->stderr_digest);
	ar->stdout_digest = NULL;
	ar->stderr_digest = NULL;
}

/* ---- paths ---- */

/* Relative, and no ".." component ("" and "." components are skipped later). */
static int check_path(const char *what, const char *path, reap_errbuf_t *eb)
{
	if (path[0] == '/')
		return reap_errf(eb, REAP_E_INVALID, "%s '%.64s' is absolute", what, path);
	for (const char *p = path; *p != '\0';) {
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return reap_errf(eb, REAP_E_INVALID, "%s '%.64s' has a '..' component", what,
					 path);
		p += len;
		if (*p == '/')
			p++;
	}
	return REAP_OK;
}

/*
 * Open the folder at path (checked) under base, one component at a time,
 * never following a symlink. *fd = -1 when it is absent, not a folder, or
 * goes through a symlink.
 */
static int open_dir_path(int base, const char *path, size_t ncomp, int *fd, const char **last,
			 reap_errbuf_t *eb)
{
	const char *p = path;
	int cur = dup(base);

	*fd = -1;
	*last = NULL;
	if (cur < 0)
		return reap_errf(eb, REAP_E_IO, "dup: %s", strerror(errno));
	for (size_t i = 0; *p != '\0';) {
		size_t len = strcspn(p, "/");
		char comp[NAME_MAX + 1];

		if (len == 0 || (len == 1 && p[0] == '.')) {
			p += len + (p[len] == '/');
			continue;
		}
		if (i++ == ncomp) { /* the components to open are done: p is the last one */
			*last = p;
			break;
		}
		if (len > NAME_MAX) {
			close(cur);
			return REAP_OK; /* cannot exist */
		}
		memcpy(comp, p, len);
		comp[len] = '\0';
		int next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		close(cur);
		if (next < 0) {
			if (e == ELOOP)
				REAP_WARN("output_parent_is_symlink", "path=\"%.128s\" component=\"%.64s\"",
					  path, comp);
			else if (e != ENOENT && e != ENOTDIR)
				return reap_errf(eb, REAP_E_IO, "'%.64s': %s", path, strerror(e));
			return REAP_OK;
		}
		cur = next;
		p += len + (p[len] == '/');
	}
	*fd = cur;
	return REAP_OK;
}

/* Path components that are neither empty nor ".". */
static size_t count_components(const char *path)
{
	size_t n = 0;
	for (const char *p = path; *p != '\0';) {
		size_t len = strcspn(p, "/");
		if (len > 0 && !(len == 1 && p[0] == '.'))
			n++;
		p += len + (p[len] == '/');
	}
	return n;
}

/* One output path under the working directory wd. */
static int collect_one(wrk_collector_t *o, WRK_RE(ActionResult) *ar, int wd, const char *path,
		       out_kind_t kind, reap_errbuf_t *eb)
{
	size_t ncomp = count_components(path);
	const char *last = NULL;
	char name[NAME_MAX + 1];
	struct stat st;
	int pfd = -1, dfd = -1, err;

	if ((err = check_path("output path", path, eb)) != REAP_OK)
		return err;
	if (ncomp == 0 && kind == KIND_FILE)
		return reap_errf(eb, REAP_E_INVALID, "output file path '%.64s' is empty", path);
	if (ncomp == 0) { /* the working directory itself */
		if ((dfd = dup(wd)) < 0)
			return reap_errf(eb, REAP_E_IO, "dup: %s", strerror(errno));
		goto directory;
	}
	if ((err = open_dir_path(wd, path, ncomp - 1, &pfd, &last, eb)) != REAP_OK || pfd < 0)
		return err; /* absent (or behind a symlink): omitted */
	size_t len = strcspn(last, "/");
	if (len > NAME_MAX)
		goto out;
	memcpy(name, last, len);
	name[len] = '\0';
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			err = reap_errf(eb, REAP_E_IO, "output '%.64s': %s", path, strerror(errno));
		goto out;
	}
	if (S_ISLNK(st.st_mode)) {
		char *target;
		if ((err = wrk_read_link(pfd, name, path, &target, eb)) == REAP_OK)
			err = add_symlink(ar, path, target);
		goto out;
	}
	if (S_ISREG(st.st_mode)) {
		reap_digest_t d;
		bool exec;
		if (kind == KIND_DIR) {
			err = reap_errf(eb, REAP_E_PRECONDITION,
					"output directory '%.64s' is a regular file", path);
			goto out;
		}
		if ((err = wrk_upload_file(o, pfd, name, &d, &exec, eb)) == REAP_OK)
			err = add_file(ar, path, &d, exec);
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		REAP_WARN("output_skipped", "path=\"%.128s\" why=\"not a file, folder or symlink\"", path);
		goto out;
	}
	if ((dfd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		err = reap_errf(eb, REAP_E_IO, "output '%.64s': %s", path, strerror(errno));
		goto out;
	}
directory:
	if (kind == KIND_FILE) {
		err = reap_errf(eb, REAP_E_PRECONDITION, "output file '%.64s' is a directory", path);
		goto out;
	}
	{
		reap_digest_t tree, root;
		if ((err = wrk_collect_dir(o, dfd, path, &tree, &root, eb)) == REAP_OK)
			err = add_dir(ar, path, &tree, &root);
	}
out:
	if (pfd >= 0)
		close(pfd);
	if (dfd >= 0)
		close(dfd);
	return err;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* legacy output_files/directories */
int wrk_collect_outputs(wrk_cas_t *cas, const char *exec_root, const WRK_RE(Command) *cmd,
			WRK_RE(ActionResult) *ar, reap_errbuf_t *eb)
{
	wrk_collector_t o = {.cas = cas};
	const char *wdp = cmd->working_directory != NULL ? cmd->working_directory : "";
	const char *last;
	int root = -1, wd = -1, err;

	ar->output_files = NULL;
	ar->n_output_files = 0;
	ar->output_symlinks = NULL;
	ar->n_output_symlinks = 0;
	ar->output_directories = NULL;
	ar->n_output_directories = 0;
	o.small_max = wrk_cas_max_batch(cas) / 2;
	if (o.small_max > SMALL_FILE_MAX)
		o.small_max = SMALL_FILE_MAX;
	if ((err = check_path("working_directory", wdp, eb)) != REAP_OK)
		goto out;
	root = open(exec_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		err = reap_errf(eb, REAP_E_IO, "exec root %s: %s", exec_root, strerror(errno));
		goto out;
	}
	if ((err = open_dir_path(root, wdp, count_components(wdp), &wd, &last, eb)) != REAP_OK)
		goto out;
	for (size_t i = 0; i < cmd->n_output_paths; i++)
		if ((err = check_path("output path", cmd->output_paths[i], eb)) != REAP_OK)
			goto out;
	for (size_t i = 0; i < cmd->n_output_files; i++)
		if ((err = check_path("output file", cmd->output_files[i], eb)) != REAP_OK)
			goto out;
	for (size_t i = 0; i < cmd->n_output_directories; i++)
		if ((err = check_path("output directory", cmd->output_directories[i], eb)) != REAP_OK)
			goto out;
	if (wd < 0) {
		REAP_WARN("outputs_no_working_directory", "path=\"%.128s\"", wdp);
		goto out; /* gone or a symlink: every output is absent */
	}
	if (cmd->n_output_paths > 0) {
		for (size_t i = 0; err == REAP_OK && i < cmd->n_output_paths; i++)
			err = collect_one(&o, ar, wd, cmd->output_paths[i], KIND_ANY, eb);
	} else {
		for (size_t i = 0; err == REAP_OK && i < cmd->n_output_files; i++)
			err = collect_one(&o, ar, wd, cmd->output_files[i], KIND_FILE, eb);
		for (size_t i = 0; err == REAP_OK && i < cmd->n_output_directories; i++)
			err = collect_one(&o, ar, wd, cmd->output_directories[i], KIND_DIR, eb);
	}
	if (err == REAP_OK)
		err = flush(&o, eb);
out:
	for (size_t i = 0; i < o.n_pending; i++)
		free((void *)o.pending[i].data);
	free(o.pending);
	if (wd >= 0)
		close(wd);
	if (root >= 0)
		close(root);
	if (err != REAP_OK)
		free_outputs(ar);
	return err;
}
#pragma GCC diagnostic pop
