/*
 * tree.c - output directories for outputs.c: walk a folder the action
 * produced into a REAPI Tree and upload it, with its root and every
 * distinct child Directory, so root_directory_digest is usable on its own.
 *
 * The walk never follows a symlink: each level is opened with
 * openat(O_NOFOLLOW | O_DIRECTORY), entries are lstat'ed, regular files go
 * through the collector's batched upload (wrk_upload_file), symlinks are
 * recorded with their target (absolute ones refused), and other kinds are
 * skipped with a warning. Depth and entry counts are bounded
 * (WRK_MAX_DEPTH, WRK_MAX_ENTRIES). The Tree is encoded by hand from the
 * packed Directory messages (root, then the distinct children in the order
 * met), which is the canonical encoding protobuf-c would produce.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker_int.h"

/* A packed Directory of an output tree. */
typedef struct packed_dir {
	uint8_t *data;
	size_t len;
	reap_digest_t d;
} packed_dir_t;

/* One output directory's tree while it is walked. */
typedef struct tree {
	packed_dir_t *children;
	size_t n, cap;
	wrk_dmap_t seen; /* digests in children */
} tree_t;

/* ---- output directories ---- */

typedef struct node {
	char *name;
	char *target;      /* symlinks */
	reap_digest_t d;   /* files and directories */
	bool exec;
	int type;          /* 0 file, 1 directory, 2 symlink */
} node_t;

static int node_cmp(const void *a, const void *b)
{
	return strcmp(((const node_t *)a)->name, ((const node_t *)b)->name);
}

static void nodes_free(node_t *nodes, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(nodes[i].name);
		free(nodes[i].target);
	}
	free(nodes);
}

/* Pack the Directory made of nodes (sorted here) into out. */
static int pack_dir(node_t *nodes, size_t n, packed_dir_t *out)
{
	WRK_RE(Directory) dir = WRK_RE_INIT(DIRECTORY);
	WRK_RE(FileNode) *fn = calloc(n + 1, sizeof(*fn)), **fp = calloc(n + 1, sizeof(*fp));
	WRK_RE(DirectoryNode) *dn = calloc(n + 1, sizeof(*dn)), **dp = calloc(n + 1, sizeof(*dp));
	WRK_RE(SymlinkNode) *sn = calloc(n + 1, sizeof(*sn)), **sp = calloc(n + 1, sizeof(*sp));
	WRK_RE(Digest) *pd = calloc(n + 1, sizeof(*pd));
	char(*hex)[REAP_HASH_HEX_LEN + 1] = calloc(n + 1, sizeof(*hex));
	int err = REAP_OK;

	memset(out, 0, sizeof(*out));
	if (fn == NULL || fp == NULL || dn == NULL || dp == NULL || sn == NULL || sp == NULL ||
	    pd == NULL || hex == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	if (n > 0)
		qsort(nodes, n, sizeof(*nodes), node_cmp);
	for (size_t i = 0; i < n; i++) {
		const node_t *x = &nodes[i];
		if (x->type != 2) {
			WRK_RE_FN(digest__init)(&pd[i]);
			reap_digest_hex(&x->d, hex[i]);
			pd[i].hash = hex[i];
			pd[i].size_bytes = x->d.size;
		}
		if (x->type == 0) {
			WRK_RE_FN(file_node__init)(&fn[dir.n_files]);
			fn[dir.n_files].name = x->name;
			fn[dir.n_files].digest = &pd[i];
			fn[dir.n_files].is_executable = x->exec;
			fp[dir.n_files] = &fn[dir.n_files];
			dir.n_files++;
		} else if (x->type == 1) {
			WRK_RE_FN(directory_node__init)(&dn[dir.n_directories]);
			dn[dir.n_directories].name = x->name;
			dn[dir.n_directories].digest = &pd[i];
			dp[dir.n_directories] = &dn[dir.n_directories];
			dir.n_directories++;
		} else {
			WRK_RE_FN(symlink_node__init)(&sn[dir.n_symlinks]);
			sn[dir.n_symlinks].name = x->name;
			sn[dir.n_symlinks].target = x->target;
			sp[dir.n_symlinks] = &sn[dir.n_symlinks];
			dir.n_symlinks++;
		}
	}
	dir.files = fp;
	dir.directories = dp;
	dir.symlinks = sp;
	out->len = protobuf_c_message_get_packed_size(&dir.base);
	if ((out->data = malloc(out->len + 1)) == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	protobuf_c_message_pack(&dir.base, out->data);
	if (reap_digest_of(out->data, out->len, &out->d) != REAP_OK) {
		free(out->data);
		out->data = NULL;
		err = REAP_E_NOMEM;
	}
out:
	free(fn);
	free(fp);
	free(dn);
	free(dp);
	free(sn);
	free(sp);
	free(pd);
	free(hex);
	return err;
}

/* Add a child Directory to the tree unless an identical one is there (takes p's data). */
static int tree_add(tree_t *t, packed_dir_t *p)
{
	wrk_dmap_slot_t *slot;
	bool added;
	int err = wrk_dmap_put(&t->seen, &p->d, &slot, &added);

	if (err != REAP_OK || !added) {
		free(p->data);
		p->data = NULL;
		return err;
	}
	if (t->n == t->cap) {
		size_t ncap = t->cap ? t->cap * 2 : 16;
		packed_dir_t *nc = realloc(t->children, ncap * sizeof(*nc));
		if (nc == NULL) {
			free(p->data);
			p->data = NULL;
			return REAP_E_NOMEM;
		}
		t->children = nc;
		t->cap = ncap;
	}
	t->children[t->n++] = *p;
	p->data = NULL;
	return REAP_OK;
}

/* Read the names in the folder dfd (borrowed). */
static int list_names(int dfd, char ***names, size_t *n, reap_errbuf_t *eb)
{
	int fd = dup(dfd);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	size_t cap = 0;
	int err = REAP_OK;

	*names = NULL;
	*n = 0;
	if (dir == NULL) {
		if (fd >= 0)
			close(fd);
		return reap_errf(eb, REAP_E_IO, "opendir: %s", strerror(errno));
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (*n == cap) {
			size_t ncap = cap ? cap * 2 : 32;
			char **nn = realloc(*names, ncap * sizeof(*nn));
			if (nn == NULL) {
				err = REAP_E_NOMEM;
				break;
			}
			*names = nn;
			cap = ncap;
		}
		if (((*names)[*n] = strdup(de->d_name)) == NULL) {
			err = REAP_E_NOMEM;
			break;
		}
		(*n)++;
	}
	closedir(dir);
	return err;
}

/* Walk the folder dfd (borrowed) into *out; its subfolders go into t. */
static int walk(wrk_collector_t *o, tree_t *t, int dfd, const char *shown, size_t depth,
		packed_dir_t *out, reap_errbuf_t *eb)
{
	char **names = NULL;
	node_t *nodes = NULL;
	size_t n_names = 0, n = 0;
	int err;

	memset(out, 0, sizeof(*out));
	if (depth > WRK_MAX_DEPTH) {
		err = reap_errf(eb, REAP_E_EXHAUSTED, "output '%.64s' is nested deeper than %d levels",
				shown, WRK_MAX_DEPTH);
		goto out;
	}
	if ((err = list_names(dfd, &names, &n_names, eb)) != REAP_OK)
		goto out;
	if (n_names > 0 && (nodes = calloc(n_names, sizeof(*nodes))) == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_names; i++) {
		node_t *x = &nodes[n];
		struct stat st;

		if (++o->entries > WRK_MAX_ENTRIES) {
			err = reap_errf(eb, REAP_E_EXHAUSTED, "outputs have more than %d entries",
					WRK_MAX_ENTRIES);
			goto out;
		}
		if (fstatat(dfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue; /* vanished */
		if (S_ISREG(st.st_mode)) {
			x->type = 0;
			err = wrk_upload_file(o, dfd, names[i], &x->d, &x->exec, eb);
		} else if (S_ISDIR(st.st_mode)) {
			packed_dir_t child;
			int cfd = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			x->type = 1;
			if (cfd < 0) {
				err = reap_errf(eb, REAP_E_IO, "output '%.64s/%.64s': %s", shown, names[i],
						strerror(errno));
			} else {
				err = walk(o, t, cfd, names[i], depth + 1, &child, eb);
				close(cfd);
				if (err == REAP_OK) {
					x->d = child.d;
					err = tree_add(t, &child);
				}
			}
		} else if (S_ISLNK(st.st_mode)) {
			x->type = 2;
			err = wrk_read_link(dfd, names[i], names[i], &x->target, eb);
		} else {
			REAP_WARN("output_skipped", "name=\"%.64s\" why=\"not a file, folder or symlink\"",
				  names[i]);
			continue;
		}
		if (err != REAP_OK)
			goto out;
		x->name = names[i];
		names[i] = NULL;
		n++;
	}
	err = pack_dir(nodes, n, out);
out:
	nodes_free(nodes, n);
	for (size_t i = 0; i < n_names; i++)
		free(names[i]);
	free(names);
	return err;
}

static size_t varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	do {
		uint8_t b = v & 0x7f;
		v >>= 7;
		p[n++] = b | (v ? 0x80 : 0);
	} while (v);
	return n;
}

/* Tree{root = 1, children = 2}, encoded from the packed Directory messages. */
static int encode_tree(const packed_dir_t *root, const tree_t *t, uint8_t **data, size_t *len)
{
	size_t total = 1 + 10 + root->len, off = 0;
	uint8_t *p;

	for (size_t i = 0; i < t->n; i++)
		total += 1 + 10 + t->children[i].len;
	if ((p = malloc(total)) == NULL)
		return REAP_E_NOMEM;
	p[off++] = 0x0a; /* field 1, length-delimited */
	off += varint(p + off, root->len);
	memcpy(p + off, root->data, root->len);
	off += root->len;
	for (size_t i = 0; i < t->n; i++) {
		p[off++] = 0x12; /* field 2, length-delimited */
		off += varint(p + off, t->children[i].len);
		memcpy(p + off, t->children[i].data, t->children[i].len);
		off += t->children[i].len;
	}
	*data = p;
	*len = off;
	return REAP_OK;
}

/* Walk the folder dfd, upload its Tree and Directory blobs; fill the digests. */
int wrk_collect_dir(wrk_collector_t *o, int dfd, const char *shown, reap_digest_t *tree_d,
		    reap_digest_t *root_d, reap_errbuf_t *eb)
{
	tree_t t = {0};
	packed_dir_t root = {0};
	uint8_t *tree = NULL;
	size_t tree_len = 0;
	wrk_blob_t *blobs = NULL;
	int err;

	if ((err = walk(o, &t, dfd, shown, 0, &root, eb)) != REAP_OK)
		goto out;
	if ((err = encode_tree(&root, &t, &tree, &tree_len)) != REAP_OK)
		goto out;
	if ((blobs = calloc(t.n + 2, sizeof(*blobs))) == NULL) {
		err = REAP_E_NOMEM;
		goto out;
	}
	if (reap_digest_of(tree, tree_len, tree_d) != REAP_OK) {
		err = REAP_E_NOMEM;
		goto out;
	}
	*root_d = root.d;
	blobs[0] = (wrk_blob_t){.data = tree, .len = tree_len, .digest = *tree_d};
	blobs[1] = (wrk_blob_t){.data = root.data, .len = root.len, .digest = root.d};
	for (size_t i = 0; i < t.n; i++)
		blobs[i + 2] = (wrk_blob_t){.data = t.children[i].data, .len = t.children[i].len,
					    .digest = t.children[i].d};
	err = wrk_cas_put_many(o->cas, blobs, t.n + 2, eb);
out:
	for (size_t i = 0; i < t.n; i++)
		free(t.children[i].data);
	free(t.children);
	wrk_dmap_destroy(&t.seen);
	free(root.data);
	free(tree);
	free(blobs);
	return err;
}
