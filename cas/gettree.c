/*
 * gettree.c - ContentAddressableStorage.GetTree: the Directory messages of a
 * tree, breadth first, each distinct directory once.
 *
 * Paging is stateless: a page token is the number of directories already
 * returned, and a request with a token walks the tree again and skips that
 * many. The walk is deterministic (breadth first, children in their sorted
 * order, duplicates skipped), so pages never overlap or miss. Responses are
 * streamed a bounded number of bytes at a time. The root missing is
 * NOT_FOUND; a missing subtree is omitted, as the spec says. A directory
 * not visible in the request's instance (cas_visible) counts as missing,
 * so a tenant cannot walk another's tree by its root digest; visibility is
 * looked up in batches, for everything queued so far. A Directory
 * that is malformed (unsorted or duplicate names, bad digests, bad names)
 * ends the call with INVALID_ARGUMENT naming it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cas/cas_int.h"

#define SVC "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
#define MAX_DIR_BYTES ((size_t)4 << 20) /* largest Directory message read */
#define MAX_DIRS 1000000                /* largest tree walked */
#define DEFAULT_PAGE 10000

typedef struct tree_state {
	reap_digest_t *queue; /* directories in walk order; [head, n) still to visit */
	bool *visible;        /* [0, checked): queue[i] is visible in instance */
	size_t head, n, cap, checked;
	char instance[REAP_INSTANCE_MAX + 1];
	uint8_t *seen;        /* open-addressing set of digest keys */
	size_t seen_cap, seen_n;
	int64_t skip;         /* directories to skip (page token) */
	int64_t emitted;      /* directories sent in this call */
	int64_t position;     /* directories walked in total (skipped + sent) */
	int64_t page;         /* directories per page */
	size_t max_msg;       /* bytes per response message */
} tree_state_t;

static uint64_t key_hash(const uint8_t *k)
{
	uint64_t h;
	memcpy(&h, k, sizeof(h)); /* a SHA-256 prefix is already uniform */
	return h;
}

/* Insert d into the seen set; false when it was already there. */
static int seen_add(tree_state_t *st, const reap_digest_t *d, bool *added)
{
	uint8_t k[REAP_DIGEST_KEY_LEN];
	if (st->seen_n * 2 >= st->seen_cap) {
		size_t ncap = st->seen_cap ? st->seen_cap * 2 : 1024;
		uint8_t *ns = calloc(ncap, REAP_DIGEST_KEY_LEN + 1);
		if (ns == NULL)
			return REAP_E_NOMEM;
		for (size_t i = 0; i < st->seen_cap; i++) {
			uint8_t *e = st->seen + i * (REAP_DIGEST_KEY_LEN + 1);
			if (!e[0])
				continue;
			size_t j = key_hash(e + 1) & (ncap - 1);
			while (ns[j * (REAP_DIGEST_KEY_LEN + 1)])
				j = (j + 1) & (ncap - 1);
			memcpy(ns + j * (REAP_DIGEST_KEY_LEN + 1), e, REAP_DIGEST_KEY_LEN + 1);
		}
		free(st->seen);
		st->seen = ns;
		st->seen_cap = ncap;
	}
	reap_digest_key(d, k);
	size_t j = key_hash(k) & (st->seen_cap - 1);
	for (;;) {
		uint8_t *e = st->seen + j * (REAP_DIGEST_KEY_LEN + 1);
		if (!e[0]) {
			e[0] = 1;
			memcpy(e + 1, k, REAP_DIGEST_KEY_LEN);
			st->seen_n++;
			*added = true;
			return REAP_OK;
		}
		if (memcmp(e + 1, k, REAP_DIGEST_KEY_LEN) == 0) {
			*added = false;
			return REAP_OK;
		}
		j = (j + 1) & (st->seen_cap - 1);
	}
}

static int enqueue(tree_state_t *st, const reap_digest_t *d, reap_errbuf_t *eb)
{
	bool added;
	int err = seen_add(st, d, &added);
	if (err != REAP_OK || !added)
		return err;
	if (st->n >= MAX_DIRS)
		return reap_errf(eb, REAP_E_EXHAUSTED, "tree has more than %d directories", MAX_DIRS);
	if (st->n == st->cap) {
		size_t ncap = st->cap ? st->cap * 2 : 256;
		reap_digest_t *nq = realloc(st->queue, ncap * sizeof(*nq));
		if (nq == NULL)
			return REAP_E_NOMEM;
		st->queue = nq;
		bool *nv = realloc(st->visible, ncap * sizeof(*nv));
		if (nv == NULL)
			return REAP_E_NOMEM;
		st->visible = nv;
		st->cap = ncap;
	}
	st->queue[st->n++] = *d;
	return REAP_OK;
}

/* Names within one list must be non-empty path components, strictly ascending. */
static int check_names(const char *what, size_t n, const char *(*name_at)(const void *, size_t),
		       const void *list, reap_errbuf_t *eb)
{
	for (size_t i = 0; i < n; i++) {
		const char *nm = name_at(list, i);
		if (nm[0] == '\0' || strchr(nm, '/') != NULL || strcmp(nm, ".") == 0 ||
		    strcmp(nm, "..") == 0)
			return reap_errf(eb, REAP_E_INVALID, "%s name '%.64s' is not a path component",
					 what, nm);
		if (i > 0 && strcmp(name_at(list, i - 1), nm) >= 0)
			return reap_errf(eb, REAP_E_INVALID,
					 "%s names are not sorted and unique at '%.64s'", what, nm);
	}
	return REAP_OK;
}

static const char *file_name(const void *l, size_t i) { return ((RE(FileNode) *const *)l)[i]->name; }
static const char *dir_name(const void *l, size_t i) { return ((RE(DirectoryNode) *const *)l)[i]->name; }
static const char *link_name(const void *l, size_t i) { return ((RE(SymlinkNode) *const *)l)[i]->name; }

/** Check a Directory the way REAPI requires it to be canonical. */
int cas_directory_check(const RE(Directory) *dir, reap_errbuf_t *eb)
{
	reap_digest_t d;
	int err = check_names("file", dir->n_files, file_name, dir->files, eb);
	if (err == REAP_OK)
		err = check_names("directory", dir->n_directories, dir_name, dir->directories, eb);
	if (err == REAP_OK)
		err = check_names("symlink", dir->n_symlinks, link_name, dir->symlinks, eb);
	for (size_t i = 0; err == REAP_OK && i < dir->n_files; i++)
		err = cas_digest_from_pb(dir->files[i]->digest, &d, eb);
	for (size_t i = 0; err == REAP_OK && i < dir->n_directories; i++)
		err = cas_digest_from_pb(dir->directories[i]->digest, &d, eb);
	return err;
}

/* Produce the next response message; *more is false once the page or tree is done. */
static int tree_fill(cas_service_t *svc, tree_state_t *st, RE(GetTreeResponse) *resp,
		     RE(Directory) ***dirs, size_t *ndirs, bool *more, reap_errbuf_t *eb)
{
	size_t bytes = 0, cap = 0;
	int err = REAP_OK;

	*more = false;
	while (st->head < st->n) {
		if (st->page > 0 && st->emitted >= st->page) {
			*more = true; /* page full: the token says where to go on */
			break;
		}
		if (bytes >= st->max_msg) {
			*more = true;
			break;
		}
		if (st->head >= st->checked) { /* one lookup for everything queued */
			err = cas_visible(svc, st->instance, st->queue + st->checked,
					  st->n - st->checked, st->visible + st->checked, eb);
			if (err != REAP_OK)
				return err;
			st->checked = st->n;
		}
		reap_digest_t d = st->queue[st->head];
		void *data = NULL;
		size_t len = 0;
		bool root = st->head == 0;
		err = !st->visible[st->head]
			      ? REAP_E_NOT_FOUND
			      : cas_store_get(svc->store, &d, MAX_DIR_BYTES, &data, &len);
		if (err == REAP_E_NOT_FOUND && !root) {
			st->head++; /* a missing subtree is omitted */
			err = REAP_OK;
			continue;
		}
		if (err != REAP_OK) {
			char hex[65];
			reap_digest_hex(&d, hex);
			return reap_errf(eb, err == REAP_E_EXHAUSTED ? REAP_E_INVALID : err,
					 "directory %s/%lld: %s", hex, (long long)d.size,
					 err == REAP_E_EXHAUSTED ? "too large for a Directory"
								 : reap_strerror(err));
		}
		RE(Directory) *dir = RE_FN(directory__unpack)(NULL, len, data);
		free(data);
		if (dir == NULL || cas_directory_check(dir, eb) != REAP_OK) {
			char hex[65];
			reap_errbuf_t why = *eb;
			reap_digest_hex(&d, hex);
			if (dir != NULL)
				RE_FN(directory__free_unpacked)(dir, NULL);
			return reap_errf(eb, REAP_E_INVALID, "directory %s/%lld is malformed: %s", hex,
					 (long long)d.size, dir == NULL ? "not a Directory message" : why.msg);
		}
		st->head++;
		for (size_t i = 0; err == REAP_OK && i < dir->n_directories; i++) {
			reap_digest_t c;
			(void)cas_digest_from_pb(dir->directories[i]->digest, &c, NULL);
			err = enqueue(st, &c, eb);
		}
		if (err != REAP_OK) {
			RE_FN(directory__free_unpacked)(dir, NULL);
			return err;
		}
		if (st->position < st->skip) {
			st->position++;
			RE_FN(directory__free_unpacked)(dir, NULL);
			continue;
		}
		if (*ndirs == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			RE(Directory) **nd = realloc(*dirs, ncap * sizeof(*nd));
			if (nd == NULL) {
				RE_FN(directory__free_unpacked)(dir, NULL);
				return REAP_E_NOMEM;
			}
			*dirs = nd;
			cap = ncap;
		}
		(*dirs)[(*ndirs)++] = dir;
		bytes += len;
		st->position++;
		st->emitted++;
	}
	resp->directories = *dirs;
	resp->n_directories = *ndirs;
	return REAP_OK;
}

static void tree_next(rpc_call_t *call, tree_state_t *st)
{
	cas_service_t *svc = rpc_call_ctx(call);
	RE(GetTreeResponse) resp = RE_INIT(GET_TREE_RESPONSE);
	RE(Directory) **dirs = NULL;
	size_t ndirs = 0;
	reap_errbuf_t eb = {{0}};
	char token[32];
	bool more;
	int err = tree_fill(svc, st, &resp, &dirs, &ndirs, &more, &eb);

	if (err != REAP_OK) {
		cas_finish(call, NULL, err, &eb);
	} else if (more && !(st->page > 0 && st->emitted >= st->page)) {
		rpc_call_send(call, &resp.base); /* message full; the page goes on */
	} else {
		if (more) {
			snprintf(token, sizeof(token), "%lld", (long long)st->position);
			resp.next_page_token = token;
		}
		rpc_call_finish(call, &resp.base, REAP_OK, NULL);
	}
	for (size_t i = 0; i < ndirs; i++)
		RE_FN(directory__free_unpacked)(dirs[i], NULL);
	free(dirs);
}

static void tree_request(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const RE(GetTreeRequest) *req = (const void *)m;
	cas_service_t *svc = rpc_call_ctx(call);
	tree_state_t *st = state;
	reap_errbuf_t eb = {{0}};
	reap_digest_t root;
	int err;

	err = cas_admit(svc, call, req->instance_name, strlen(req->instance_name),
			req->digest_function, AUTH_CAS_READ, NULL, &eb);
	if (err == REAP_OK)
		err = cas_digest_from_pb(req->root_digest, &root, &eb);
	if (err != REAP_OK)
		goto fail;
	if (req->page_size < 0) {
		err = reap_errf(&eb, REAP_E_INVALID, "page_size is negative");
		goto fail;
	}
	if (req->page_token[0] != '\0') {
		char *end = NULL;
		long long v = strtoll(req->page_token, &end, 10);
		if (*end != '\0' || v < 0 || req->page_token[0] == '-' || req->page_token[0] == '+') {
			err = reap_errf(&eb, REAP_E_INVALID, "page_token is not one this server issued");
			goto fail;
		}
		st->skip = v;
	}
	snprintf(st->instance, sizeof(st->instance), "%s", req->instance_name);
	st->page = req->page_size > 0 ? req->page_size : DEFAULT_PAGE;
	st->max_msg = svc->cfg.max_send_bytes / 2;
	err = enqueue(st, &root, &eb);
	if (err != REAP_OK)
		goto fail;
	tree_next(call, st);
	return;
fail:
	cas_finish(call, NULL, err, &eb);
}

static void tree_sent(rpc_call_t *call, void *state)
{
	tree_next(call, state);
}

static void tree_done(rpc_call_t *call, void *state, bool ok)
{
	tree_state_t *st = state;
	free(st->queue);
	free(st->visible);
	free(st->seen);
}

void cas_gettree_methods(cas_service_t *svc)
{
	const rpc_method_t m = {
		.path = SVC "GetTree", .kind = RPC_SERVER_STREAMING,
		.request = &build__bazel__remote__execution__v2__get_tree_request__descriptor,
		.state_size = sizeof(tree_state_t), .on_request = tree_request,
		.on_sent = tree_sent, .on_done = tree_done};
	cas_add_method(svc, &m);
}
