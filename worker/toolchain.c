/*
 * toolchain.c - the worker's toolchain fingerprint.
 *
 * The read-only toolchain paths are inputs of every action that the client
 * cannot see, so they must be part of the cache key (a compiler upgrade must
 * never serve results built by the old compiler). The worker walks them once
 * at start and digests each entry's metadata; the scheduler stamps results
 * with it and serves them only while it is that platform's current toolchain.
 * Metadata, not content: hashing all of /usr would take minutes, while a
 * package upgrade always changes sizes or mtimes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/digest.h"
#include "worker/worker.h"

#define MAX_DEPTH 64
#define MAX_ENTRIES (4u << 20) /* a bound on the walk: 4 Mi entries */

typedef struct walk {
	reap_hasher_t h;
	size_t entries;
	int err;
	reap_errbuf_t *eb;
} walk_t;

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Digest one entry's metadata: path, type, mode, size, mtime, link target. */
static void add_entry(walk_t *w, const char *path, const struct stat *st, int dfd,
		      const char *name)
{
	char line[4096 + 256], target[4096] = "";
	int n;
	if (S_ISLNK(st->st_mode)) {
		ssize_t t = readlinkat(dfd, name, target, sizeof(target) - 1);
		target[t > 0 ? t : 0] = '\0';
	}
	n = snprintf(line, sizeof(line), "%s\t%o\t%lld\t%lld.%09ld\t%s\n", path,
		     (unsigned)st->st_mode, (long long)(S_ISREG(st->st_mode) ? st->st_size : 0),
		     (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, target);
	if (n > 0)
		reap_hasher_update(&w->h, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	w->entries++;
}

/* Walk the directory dfd (named path) in sorted order; takes ownership of dfd. */
static void walk_dir(walk_t *w, int dfd, const char *path, int depth)
{
	DIR *dir = fdopendir(dfd);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (dir == NULL) {
		close(dfd);
		return;
	}
	while ((de = readdir(dir)) != NULL && w->err == REAP_OK) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));
			if (nn == NULL) {
				w->err = REAP_E_NOMEM;
				break;
			}
			names = nn;
		}
		if ((names[n] = strdup(de->d_name)) == NULL) {
			w->err = REAP_E_NOMEM;
			break;
		}
		n++;
	}
	if (n > 1)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n && w->err == REAP_OK; i++) {
		struct stat st;
		char child[4096];
		if (w->entries >= MAX_ENTRIES) {
			w->err = reap_errf(w->eb, REAP_E_EXHAUSTED,
					   "more than %u entries under the toolchain paths; "
					   "declare a toolchain id instead", MAX_ENTRIES);
			break;
		}
		if (fstatat(dirfd(dir), names[i], &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue; /* vanished or unreadable: not part of what actions see */
		snprintf(child, sizeof(child), "%s/%s", path, names[i]);
		add_entry(w, child, &st, dirfd(dir), names[i]);
		if (S_ISDIR(st.st_mode) && depth < MAX_DEPTH) {
			int cfd = openat(dirfd(dir), names[i],
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd >= 0)
				walk_dir(w, cfd, child, depth + 1);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(dir);
}

int wrk_toolchain_fingerprint(const char *const *ro_paths, size_t n, const char *declared_id,
			      char *out, size_t out_len, reap_errbuf_t *eb)
{
	walk_t w = {.eb = eb};
	reap_digest_t d;
	char hex[REAP_HASH_HEX_LEN + 1];

	if (declared_id != NULL && declared_id[0] != '\0') {
		if ((size_t)snprintf(out, out_len, "id:%s", declared_id) >= out_len)
			return reap_errf(eb, REAP_E_INVALID, "the toolchain id is too long");
		return REAP_OK;
	}
	if (reap_hasher_init(&w.h) != REAP_OK)
		return reap_errf(eb, REAP_E_NOMEM, "out of memory");
	for (size_t i = 0; i < n && w.err == REAP_OK; i++) {
		struct stat st;
		/* The path itself may be a symlink (/bin -> usr/bin): record it, follow it. */
		if (lstat(ro_paths[i], &st) != 0) {
			char line[4200];
			int len = snprintf(line, sizeof(line), "%s\tmissing\n", ro_paths[i]);
			reap_hasher_update(&w.h, line, (size_t)len);
			continue;
		}
		add_entry(&w, ro_paths[i], &st, AT_FDCWD, ro_paths[i]);
		if (stat(ro_paths[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			int fd = open(ro_paths[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd >= 0)
				walk_dir(&w, fd, ro_paths[i], 0);
		}
	}
	reap_hasher_final(&w.h, &d);
	reap_hasher_destroy(&w.h);
	if (w.err != REAP_OK)
		return w.err;
	reap_digest_hex(&d, hex);
	if ((size_t)snprintf(out, out_len, "sha256:%s", hex) >= out_len)
		return reap_errf(eb, REAP_E_INVALID, "fingerprint buffer too small");
	return REAP_OK;
}
