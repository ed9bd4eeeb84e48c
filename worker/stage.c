/*
 * stage.c - build an action's input root from its Directory tree, and check
 * after the action that no staged input was tampered with.
 *
 * Staging runs in four steps, and nothing is written before the third:
 *   1. fetch: every Directory of the tree, by GetTree (few round trips;
 *      none for the empty root, which is the empty blob),
 *      each one keyed by the digest of its encoding so the server cannot
 *      substitute one; what GetTree did not deliver (a missing subtree, an
 *      error, a server without GetTree) is fetched one by one and must be
 *      canonically encoded (re-encoding gives the same bytes: this also
 *      refuses names with an embedded NUL, which protobuf-c would cut);
 *   2. plan: walk the tree as it will be laid out, checking every name
 *      (one path component, no NUL, not "." or ".."), the order and
 *      uniqueness of each Directory's entries (across its three lists), and
 *      every symlink target: relative, and, resolved lexically from the
 *      symlink's own folder, never above the root. Bounds: 1M entries,
 *      depth 256, paths within PATH_MAX;
 *   3. missing: file blobs the action's instance cannot read in the CAS
 *      (one FindMissingBlobs for every file, cached ones included: a
 *      cached copy may be another tenant's) are listed with the missing
 *      Directory messages, and staging stops with REAP_E_PRECONDITION
 *      before creating anything;
 *   4. create: folders (0755), then files hardlinked from the cache by a
 *      few threads (downloads overlap), then symlinks, so no path created
 *      later ever goes through a symlink. Each staged file's ctime is read
 *      at the very end, after every link to a shared inode has been made.
 *
 * A lexical check cannot see through a symlink to a folder ("d/.." where d
 * is itself a symlink), so a chain of symlinks may still resolve outside
 * the root at run time. That is harmless by construction: the worker never
 * follows a symlink inside an exec root (outputs are opened component by
 * component with O_NOFOLLOW), and inside the sandbox the root's parent is
 * the sandbox's own view.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker_int.h"

#define LINK_THREADS 8
#define FILES_PER_THREAD 16 /* fewer files than this per thread: not worth a thread */
#define NAME_MAX_LEN 255

typedef struct plan_file {
	char *rel;
	reap_digest_t d;
	bool exec;
} plan_file_t;

typedef struct plan_link {
	char *rel;
	const char *target; /* borrowed from the Directory */
} plan_link_t;

typedef struct stage {
	wrk_cache_t *cache;
	wrk_cas_t *cas;
	char *root;          /* absolute path of the exec root */
	wrk_dmap_t dirs;     /* digest -> Directory (owned) */
	wrk_dmap_t absent;   /* Directory digests the CAS does not have */
	char **dir_rels;     /* folders to create, parents first */
	size_t n_dirs, cap_dirs;
	plan_file_t *files;
	size_t n_files, cap_files;
	plan_link_t *links;
	size_t n_links, cap_links;
	size_t entries;
	wrk_staged_t *out;
	pthread_mutex_t mu;  /* guards out->missing and err while linking */
} stage_t;

/* ---- small helpers ---- */

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
	if (n < *cap)
		return REAP_OK;
	size_t ncap = *cap ? *cap * 2 : 64;
	void *na = realloc(*arr, ncap * elem);
	if (na == NULL)
		return REAP_E_NOMEM;
	*arr = na;
	*cap = ncap;
	return REAP_OK;
}

/* Append "blobs/{hash}/{size}" to out->missing. */
static int add_missing(wrk_staged_t *out, const reap_digest_t *d)
{
	char name[WRK_BLOB_NAME_LEN], **nm;

	wrk_blob_name(d, name);
	nm = realloc(out->missing, (out->n_missing + 1) * sizeof(*nm));
	if (nm == NULL)
		return REAP_E_NOMEM;
	out->missing = nm;
	if ((nm[out->n_missing] = strdup(name)) == NULL)
		return REAP_E_NOMEM;
	out->n_missing++;
	return REAP_OK;
}

static char *join(const char *a, const char *b)
{
	char *p = NULL;
	if (asprintf(&p, "%s%s%s", a, a[0] != '\0' ? "/" : "", b) < 0)
		return NULL;
	return p;
}

static int dir_err(const reap_digest_t *d, const char *why, const char *name, reap_errbuf_t *eb)
{
	char hex[REAP_HASH_HEX_LEN + 1];
	reap_digest_hex(d, hex);
	return reap_errf(eb, REAP_E_INVALID, "directory %.16s.../%lld: %s '%.64s'", hex,
			 (long long)d->size, why, name);
}

/* ---- step 1: fetch ---- */

/* Keep dir under the digest of its encoding (unless already known). */
static int keep_dir(stage_t *s, const uint8_t *data, size_t len, reap_errbuf_t *eb)
{
	reap_digest_t d;
	wrk_dmap_slot_t *slot;
	bool added;
	int err;

	if (reap_digest_of(data, len, &d) != REAP_OK)
		return REAP_E_NOMEM;
	if (wrk_dmap_find(&s->dirs, &d) != NULL)
		return REAP_OK;
	void *dir = WRK_RE_FN(directory__unpack)(NULL, len, data);
	if (dir == NULL)
		return dir_err(&d, "is not a Directory message", "", eb);
	if ((err = wrk_dmap_put(&s->dirs, &d, &slot, &added)) != REAP_OK) {
		protobuf_c_message_free_unpacked(dir, NULL);
		return err;
	}
	slot->value = dir;
	return REAP_OK;
}

static int tree_cb(void *ctx, const WRK_RE(Directory) *dir)
{
	stage_t *s = ctx;
	size_t len = protobuf_c_message_get_packed_size(&dir->base);
	uint8_t *buf;
	int err;

	if (len > WRK_MAX_DIR_BYTES)
		return REAP_OK; /* cannot be one we accept; the walk will say so */
	if ((buf = malloc(len + 1)) == NULL)
		return REAP_E_NOMEM;
	protobuf_c_message_pack(&dir->base, buf);
	err = keep_dir(s, buf, len, NULL);
	free(buf);
	return err == REAP_E_NOMEM ? err : REAP_OK;
}

/* One Directory by digest: verified by the client, and canonically encoded. */
static int fetch_one(stage_t *s, const reap_digest_t *d, reap_errbuf_t *eb)
{
	void *data = NULL;
	size_t len = 0;
	uint8_t *again = NULL;
	wrk_dmap_slot_t *slot;
	bool added;
	int err = wrk_cas_get(s->cas, d, WRK_MAX_DIR_BYTES, &data, &len, eb);

	if (err == REAP_E_NOT_FOUND) {
		err = wrk_dmap_put(&s->absent, d, &slot, &added);
		if (err == REAP_OK && added)
			err = add_missing(s->out, d);
		goto out;
	}
	if (err == REAP_E_EXHAUSTED) {
		err = dir_err(d, "is larger than a Directory may be", "", eb);
		goto out;
	}
	if (err != REAP_OK)
		goto out;
	ProtobufCMessage *dir = (void *)WRK_RE_FN(directory__unpack)(NULL, len, data);
	if (dir == NULL) {
		err = dir_err(d, "is not a Directory message", "", eb);
		goto out;
	}
	bool same = protobuf_c_message_get_packed_size(dir) == len;
	if (same && (again = malloc(len + 1)) == NULL) {
		protobuf_c_message_free_unpacked(dir, NULL);
		err = REAP_E_NOMEM;
		goto out;
	}
	if (same) {
		protobuf_c_message_pack(dir, again);
		same = memcmp(again, data, len) == 0;
	}
	if (!same) {
		protobuf_c_message_free_unpacked(dir, NULL);
		err = dir_err(d, "is not canonically encoded (or a name holds a NUL)", "", eb);
		goto out;
	}
	if ((err = wrk_dmap_put(&s->dirs, d, &slot, &added)) != REAP_OK) {
		protobuf_c_message_free_unpacked(dir, NULL);
		goto out;
	}
	slot->value = dir;
out:
	free(data);
	free(again);
	return err;
}

/* Every Directory reachable from root into s->dirs; the missing ones into s->absent. */
static int fetch_tree(stage_t *s, const reap_digest_t *root, reap_errbuf_t *eb)
{
	reap_errbuf_t tb = {{0}};
	reap_digest_t *queue = NULL;
	size_t head = 0, n = 0, cap = 0;
	wrk_dmap_t seen = {0};
	wrk_dmap_slot_t *slot;
	bool added;
	int err;

	/* The empty Directory is the empty blob: nothing to ask the server for
	 * (fetch_one makes it locally). */
	err = reap_digest_is_empty(root) ? REAP_OK
					 : wrk_cas_get_tree(s->cas, root, tree_cb, s, &tb);
	if (err == REAP_E_NOMEM)
		goto out;
	if (err != REAP_OK) /* the walk below fetches what is missing, and tells */
		REAP_DEBUG("stage_gettree_failed", "err=\"%s\"", reap_errmsg(&tb, err));
	err = wrk_dmap_put(&seen, root, &slot, &added);
	if (err == REAP_OK)
		err = grow((void **)&queue, &cap, n, sizeof(*queue));
	if (err != REAP_OK)
		goto out;
	queue[n++] = *root;
	while (head < n) {
		reap_digest_t d = queue[head++];
		wrk_dmap_slot_t *have = wrk_dmap_find(&s->dirs, &d);
		if (have == NULL) {
			if ((err = fetch_one(s, &d, eb)) != REAP_OK)
				goto out;
			if ((have = wrk_dmap_find(&s->dirs, &d)) == NULL)
				continue; /* missing: listed */
		}
		const WRK_RE(Directory) *dir = have->value;
		for (size_t i = 0; i < dir->n_directories; i++) {
			reap_digest_t c;
			if (wrk_digest_from_pb(dir->directories[i]->digest, &c, NULL) != REAP_OK)
				continue; /* the plan step refuses it */
			if ((err = wrk_dmap_put(&seen, &c, &slot, &added)) != REAP_OK)
				goto out;
			if (!added)
				continue;
			if (n >= WRK_MAX_ENTRIES) {
				err = reap_errf(eb, REAP_E_INVALID, "tree has more than %d directories",
						WRK_MAX_ENTRIES);
				goto out;
			}
			if ((err = grow((void **)&queue, &cap, n, sizeof(*queue))) != REAP_OK)
				goto out;
			queue[n++] = c;
		}
	}
out:
	free(queue);
	wrk_dmap_destroy(&seen);
	return err;
}

/* ---- step 2: validate and plan ---- */

static bool good_name(const char *nm)
{
	size_t len = strlen(nm);
	return len > 0 && len <= NAME_MAX_LEN && strchr(nm, '/') == NULL && strcmp(nm, ".") != 0 &&
	       strcmp(nm, "..") != 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The canonical-form rules for one Directory, independent of where it sits. */
static int check_dir(const reap_digest_t *dd, const WRK_RE(Directory) *dir, reap_errbuf_t *eb)
{
	size_t total = dir->n_files + dir->n_directories + dir->n_symlinks, k = 0;
	const char **names = NULL;
	reap_digest_t d;
	int err = REAP_OK;

	if (total > WRK_MAX_ENTRIES)
		return dir_err(dd, "has too many entries", "", eb);
	if (total == 0)
		return REAP_OK;
	if ((names = malloc(total * sizeof(*names))) == NULL)
		return REAP_E_NOMEM;
	for (size_t i = 0; i < dir->n_files; i++) {
		const char *nm = dir->files[i]->name;
		if (!good_name(nm))
			err = dir_err(dd, "file name is not a path component", nm, eb);
		else if (i > 0 && strcmp(dir->files[i - 1]->name, nm) >= 0)
			err = dir_err(dd, "file names are not sorted and unique at", nm, eb);
		else if (wrk_digest_from_pb(dir->files[i]->digest, &d, NULL) != REAP_OK)
			err = dir_err(dd, "bad digest for file", nm, eb);
		if (err != REAP_OK)
			goto out;
		names[k++] = nm;
	}
	for (size_t i = 0; i < dir->n_directories; i++) {
		const char *nm = dir->directories[i]->name;
		if (!good_name(nm))
			err = dir_err(dd, "directory name is not a path component", nm, eb);
		else if (i > 0 && strcmp(dir->directories[i - 1]->name, nm) >= 0)
			err = dir_err(dd, "directory names are not sorted and unique at", nm, eb);
		else if (wrk_digest_from_pb(dir->directories[i]->digest, &d, NULL) != REAP_OK)
			err = dir_err(dd, "bad digest for directory", nm, eb);
		if (err != REAP_OK)
			goto out;
		names[k++] = nm;
	}
	for (size_t i = 0; i < dir->n_symlinks; i++) {
		const char *nm = dir->symlinks[i]->name, *t = dir->symlinks[i]->target;
		if (!good_name(nm))
			err = dir_err(dd, "symlink name is not a path component", nm, eb);
		else if (i > 0 && strcmp(dir->symlinks[i - 1]->name, nm) >= 0)
			err = dir_err(dd, "symlink names are not sorted and unique at", nm, eb);
		else if (t == NULL || t[0] == '\0' || strlen(t) >= PATH_MAX)
			err = dir_err(dd, "symlink has an empty or overlong target", nm, eb);
		else if (t[0] == '/')
			err = dir_err(dd, "symlink has an absolute target", nm, eb);
		if (err != REAP_OK)
			goto out;
		names[k++] = nm;
	}
	qsort(names, k, sizeof(*names), name_cmp);
	for (size_t i = 1; i < k; i++)
		if (strcmp(names[i - 1], names[i]) == 0) {
			err = dir_err(dd, "name is used twice", names[i], eb);
			goto out;
		}
out:
	free(names);
	return err;
}

/* Does target, resolved lexically from a folder depth levels below the root, stay inside? */
static bool target_inside(const char *target, size_t depth)
{
	long level = (long)depth;
	const char *p = target;

	while (*p != '\0') {
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			if (--level < 0)
				return false;
		} else if (len > 0 && !(len == 1 && p[0] == '.')) {
			level++;
		}
		p += len;
		if (*p == '/')
			p++;
	}
	return true;
}

static int plan_entry(stage_t *s, const char *rel, reap_errbuf_t *eb)
{
	if (++s->entries > WRK_MAX_ENTRIES)
		return reap_errf(eb, REAP_E_INVALID, "tree has more than %d entries", WRK_MAX_ENTRIES);
	if (strlen(s->root) + 1 + strlen(rel) >= PATH_MAX)
		return reap_errf(eb, REAP_E_INVALID, "path '%.64s...' is too long", rel);
	return REAP_OK;
}

static int plan_dir(stage_t *s, const reap_digest_t *dd, const char *rel, size_t depth,
		    reap_errbuf_t *eb)
{
	wrk_dmap_slot_t *slot = wrk_dmap_find(&s->dirs, dd);
	const WRK_RE(Directory) *dir;
	int err;

	if (slot == NULL)
		return REAP_OK; /* missing: listed already */
	dir = slot->value;
	if (depth > WRK_MAX_DEPTH)
		return reap_errf(eb, REAP_E_INVALID, "tree is deeper than %d levels", WRK_MAX_DEPTH);
	if ((err = check_dir(dd, dir, eb)) != REAP_OK)
		return err;
	for (size_t i = 0; i < dir->n_files; i++) {
		plan_file_t *f;
		if ((err = grow((void **)&s->files, &s->cap_files, s->n_files, sizeof(*f))) != REAP_OK)
			return err;
		f = &s->files[s->n_files];
		if ((f->rel = join(rel, dir->files[i]->name)) == NULL)
			return REAP_E_NOMEM;
		s->n_files++;
		(void)wrk_digest_from_pb(dir->files[i]->digest, &f->d, NULL);
		f->exec = dir->files[i]->is_executable;
		if ((err = plan_entry(s, f->rel, eb)) != REAP_OK)
			return err;
	}
	for (size_t i = 0; i < dir->n_symlinks; i++) {
		plan_link_t *l;
		if (!target_inside(dir->symlinks[i]->target, depth))
			return reap_errf(eb, REAP_E_INVALID, "symlink '%.64s%s%.64s' -> '%.64s' leaves the input root",
					 rel, rel[0] ? "/" : "", dir->symlinks[i]->name,
					 dir->symlinks[i]->target);
		if ((err = grow((void **)&s->links, &s->cap_links, s->n_links, sizeof(*l))) != REAP_OK)
			return err;
		l = &s->links[s->n_links];
		if ((l->rel = join(rel, dir->symlinks[i]->name)) == NULL)
			return REAP_E_NOMEM;
		s->n_links++;
		l->target = dir->symlinks[i]->target;
		if ((err = plan_entry(s, l->rel, eb)) != REAP_OK)
			return err;
	}
	for (size_t i = 0; i < dir->n_directories; i++) {
		reap_digest_t cd;
		char *crel;
		if ((err = grow((void **)&s->dir_rels, &s->cap_dirs, s->n_dirs, sizeof(char *))) != REAP_OK)
			return err;
		if ((crel = join(rel, dir->directories[i]->name)) == NULL)
			return REAP_E_NOMEM;
		s->dir_rels[s->n_dirs++] = crel;
		if ((err = plan_entry(s, crel, eb)) != REAP_OK)
			return err;
		(void)wrk_digest_from_pb(dir->directories[i]->digest, &cd, NULL);
		if ((err = plan_dir(s, &cd, crel, depth + 1, eb)) != REAP_OK)
			return err;
	}
	return REAP_OK;
}

/* ---- step 3: missing file blobs ---- */

static int find_missing_files(stage_t *s, reap_errbuf_t *eb)
{
	reap_digest_t *ds = NULL;
	bool *present = NULL;
	wrk_dmap_t seen = {0};
	size_t n = 0;
	int err = REAP_OK;

	if (s->n_files == 0)
		return REAP_OK;
	if ((ds = malloc(s->n_files * sizeof(*ds))) == NULL)
		return REAP_E_NOMEM;
	for (size_t i = 0; i < s->n_files; i++) {
		const plan_file_t *f = &s->files[i];
		wrk_dmap_slot_t *slot;
		bool added;
		/*
		 * Cached files are asked about too: a copy here proves only that
		 * some tenant had the bytes, and this instance may not read them
		 * (tenant-scoped CAS). One FindMissingBlobs per action.
		 */
		if (reap_digest_is_empty(&f->d))
			continue;
		if ((err = wrk_dmap_put(&seen, &f->d, &slot, &added)) != REAP_OK)
			goto out;
		if (added)
			ds[n++] = f->d;
	}
	if (n == 0)
		goto out;
	if ((present = malloc(n * sizeof(*present))) == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	if ((err = wrk_cas_find(s->cas, ds, n, present, eb)) != REAP_OK)
		goto out;
	for (size_t i = 0; i < n && err == REAP_OK; i++)
		if (!present[i])
			err = add_missing(s->out, &ds[i]);
out:
	wrk_dmap_destroy(&seen);
	free(ds);
	free(present);
	return err;
}

/* ---- step 4: create ---- */

typedef struct linker {
	stage_t *s;
	size_t next;     /* next file to link (under s->mu) */
	int err;         /* first error other than a missing blob */
	reap_errbuf_t eb;
} linker_t;

static void *link_files(void *arg)
{
	linker_t *lk = arg;
	stage_t *s = lk->s;

	for (;;) {
		reap_errbuf_t eb = {{0}};
		size_t i;
		int err;

		pthread_mutex_lock(&s->mu);
		i = lk->next++;
		bool stop = lk->err != REAP_OK || i >= s->n_files;
		pthread_mutex_unlock(&s->mu);
		if (stop)
			return NULL;
		wrk_staged_file_t *sf = &s->out->files[i];
		err = wrk_cache_link(s->cache, s->cas, &sf->digest, sf->executable, sf->path,
				     &sf->ctime_ns, &eb);
		if (err == REAP_OK)
			continue;
		pthread_mutex_lock(&s->mu);
		if (err == REAP_E_NOT_FOUND) { /* gone from the CAS since step 3 */
			err = add_missing(s->out, &sf->digest);
		}
		if (err != REAP_OK && lk->err == REAP_OK) {
			lk->err = err;
			lk->eb = eb;
		}
		pthread_mutex_unlock(&s->mu);
	}
}

static int create_files(stage_t *s, reap_errbuf_t *eb)
{
	linker_t lk = {.s = s};
	pthread_t th[LINK_THREADS];
	size_t nth = s->n_files / FILES_PER_THREAD, started = 0;

	if (nth > LINK_THREADS)
		nth = LINK_THREADS;
	for (; started < nth; started++)
		if (pthread_create(&th[started], NULL, link_files, &lk) != 0)
			break;
	link_files(&lk); /* this thread works too (alone when there are few files) */
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (lk.err != REAP_OK) {
		if (eb != NULL)
			*eb = lk.eb;
		return lk.err;
	}
	return REAP_OK;
}

static int create_all(stage_t *s, reap_errbuf_t *eb)
{
	wrk_staged_t *out = s->out;
	int err;

	for (size_t i = 0; i < s->n_dirs; i++) {
		char *p = join(s->root, s->dir_rels[i]);
		if (p == NULL)
			return REAP_E_NOMEM;
		err = mkdir(p, 0755) == 0 ? REAP_OK
					  : reap_errf(eb, errno == EEXIST ? REAP_E_EXISTS : REAP_E_IO,
						      "mkdir %s: %s", p, strerror(errno));
		free(p);
		if (err != REAP_OK)
			return err;
	}
	if (s->n_files > 0 && (out->files = calloc(s->n_files, sizeof(*out->files))) == NULL)
		return REAP_E_NOMEM;
	for (size_t i = 0; i < s->n_files; i++) {
		wrk_staged_file_t *sf = &out->files[i];
		if ((sf->path = join(s->root, s->files[i].rel)) == NULL)
			return REAP_E_NOMEM;
		sf->digest = s->files[i].d;
		sf->executable = s->files[i].exec;
		out->n++;
	}
	if ((err = create_files(s, eb)) != REAP_OK)
		return err;
	if (out->n_missing > 0)
		return REAP_OK; /* the caller reports them */
	for (size_t i = 0; i < s->n_links; i++) {
		char *p = join(s->root, s->links[i].rel);
		if (p == NULL)
			return REAP_E_NOMEM;
		err = symlink(s->links[i].target, p) == 0
			      ? REAP_OK
			      : reap_errf(eb, REAP_E_IO, "symlink %s: %s", p, strerror(errno));
		free(p);
		if (err != REAP_OK)
			return err;
	}
	/*
	 * Every later link to an inode bumps its ctime, and a blob staged twice
	 * shares one inode: read the ctimes now that all links exist.
	 */
	for (size_t i = 0; i < out->n; i++) {
		struct stat st;
		if (lstat(out->files[i].path, &st) != 0)
			return reap_errf(eb, REAP_E_IO, "stat %s: %s", out->files[i].path,
					 strerror(errno));
		out->files[i].ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
	}
	return REAP_OK;
}

/* ---- the public calls ---- */

static void stage_destroy(stage_t *s)
{
	for (size_t i = 0; i < s->dirs.cap; i++)
		if (s->dirs.slots[i].used)
			protobuf_c_message_free_unpacked(s->dirs.slots[i].value, NULL);
	wrk_dmap_destroy(&s->dirs);
	wrk_dmap_destroy(&s->absent);
	for (size_t i = 0; i < s->n_dirs; i++)
		free(s->dir_rels[i]);
	free(s->dir_rels);
	for (size_t i = 0; i < s->n_files; i++)
		free(s->files[i].rel);
	free(s->files);
	for (size_t i = 0; i < s->n_links; i++)
		free(s->links[i].rel);
	free(s->links);
	free(s->root);
	pthread_mutex_destroy(&s->mu);
}

int wrk_stage(wrk_cache_t *cache, wrk_cas_t *cas, const reap_digest_t *root, const char *dir,
	      wrk_staged_t *out, reap_errbuf_t *eb)
{
	stage_t s = {.cache = cache, .cas = cas, .out = out};
	int err;

	memset(out, 0, sizeof(*out));
	pthread_mutex_init(&s.mu, NULL);
	if ((s.root = realpath(dir, NULL)) == NULL) {
		err = reap_errf(eb, REAP_E_IO, "exec root %s: %s", dir, strerror(errno));
		goto out;
	}
	if ((err = fetch_tree(&s, root, eb)) != REAP_OK)
		goto out;
	if ((err = plan_dir(&s, root, "", 0, eb)) != REAP_OK)
		goto out;
	if ((err = find_missing_files(&s, eb)) != REAP_OK)
		goto out;
	if (out->n_missing == 0 && (err = create_all(&s, eb)) != REAP_OK)
		goto out;
	if (out->n_missing > 0)
		err = reap_errf(eb, REAP_E_PRECONDITION, "%zu input blob%s missing (first %s)",
				out->n_missing, out->n_missing == 1 ? " is" : "s are", out->missing[0]);
out:
	stage_destroy(&s);
	return err;
}

bool wrk_staged_intact(wrk_cache_t *cache, const wrk_staged_t *s)
{
	bool intact = true;

	for (size_t i = 0; i < s->n; i++) {
		const wrk_staged_file_t *f = &s->files[i];
		struct stat st;
		mode_t want = f->executable ? 0555 : 0444;

		if (lstat(f->path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == want &&
		    st.st_size == f->digest.size &&
		    (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec == f->ctime_ns)
			continue;
		/* changed, replaced or removed (its inode may have been rewritten first) */
		REAP_WARN("staged_input_tampered", "path=\"%s\"", f->path);
		intact = false;
		if (!reap_digest_is_empty(&f->digest))
			wrk_cache_forget(cache, &f->digest, f->executable);
	}
	return intact;
}

void wrk_staged_destroy(wrk_staged_t *s)
{
	if (s == NULL)
		return;
	for (size_t i = 0; i < s->n; i++)
		free(s->files[i].path);
	free(s->files);
	for (size_t i = 0; i < s->n_missing; i++)
		free(s->missing[i]);
	free(s->missing);
	memset(s, 0, sizeof(*s));
}
