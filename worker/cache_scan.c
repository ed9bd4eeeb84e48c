/*
 * cache_scan.c - opening and closing the worker's file cache (cache.c):
 * make the folder, clear tmp/ of interrupted downloads, and rebuild the
 * in-memory index by scanning the <2hex> folders.
 *
 * Scanning trusts nothing it finds: a name that is not "<hash>-<size>[-x]"
 * in its own <2hex> folder, or a file whose size or mode does not match its
 * name, is removed. Files kept are marked unverified (known_ctime -1), so
 * their content is hashed before first use. The LRU order is rebuilt from
 * the files' ctime (oldest = least recently used), then the capacity is
 * enforced once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "worker/worker_int.h"

/* ---- open: rebuild the index from the folder ---- */

/* Remove everything in tmp/ (interrupted downloads). */
static int clear_tmp(wrk_cache_t *c, reap_errbuf_t *eb)
{
	int fd;
	DIR *dir;
	struct dirent *de;

	if (mkdirat(c->dirfd, "tmp", 0700) != 0 && errno != EEXIST)
		return reap_errf(eb, REAP_E_IO, "cache: mkdir %s/tmp: %s", c->dir, strerror(errno));
	fd = openat(c->dirfd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return reap_errf(eb, REAP_E_IO, "cache: %s/tmp: %s", c->dir, strerror(e));
	}
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			(void)unlinkat(dirfd(dir), de->d_name, 0);
	}
	closedir(dir);
	return REAP_OK;
}

typedef struct found {
	wrk_centry_t *e;
	int64_t ctime;
} found_t;

static int found_cmp(const void *a, const void *b)
{
	int64_t x = ((const found_t *)a)->ctime, y = ((const found_t *)b)->ctime;
	return x < y ? -1 : x > y;
}

static bool is_hex2(const char *s)
{
	return strlen(s) == 2 && strspn(s, "0123456789abcdef") == 2;
}

/* Index one <2hex> folder's files into *found; malformed names are removed. */
static int scan_sub(wrk_cache_t *c, const char *sub, found_t **found, size_t *n, size_t *cap)
{
	int fd = openat(c->dirfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *dir;
	int err = REAP_OK;

	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return REAP_OK; /* not a folder of ours */
	}
	while ((de = readdir(dir)) != NULL) {
		reap_digest_t d;
		struct stat st;
		bool exec;
		wrk_centry_t *e;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			REAP_WARN("cache_unexpected_folder", "path=\"%s/%s/%s\"", c->dir, sub, de->d_name);
			continue;
		}
		if (!wrk_cache_parse_name(de->d_name, &d, &exec) || strncmp(de->d_name, sub, 2) != 0 ||
		    !S_ISREG(st.st_mode) || st.st_size != d.size ||
		    (st.st_mode & 07777) != wrk_cache_file_mode(exec) || reap_digest_is_empty(&d) ||
		    wrk_cache_index_find(c, &d, exec) != NULL) {
			(void)unlinkat(dirfd(dir), de->d_name, 0);
			continue;
		}
		if (*n == *cap) {
			size_t ncap = *cap ? *cap * 2 : 256;
			found_t *nf = realloc(*found, ncap * sizeof(*nf));
			if (nf == NULL) {
				err = REAP_E_NOMEM;
				break;
			}
			*found = nf;
			*cap = ncap;
		}
		if ((e = calloc(1, sizeof(*e))) == NULL) {
			err = REAP_E_NOMEM;
			break;
		}
		e->d = d;
		e->exec = exec;
		e->state = WRK_CE_READY;
		e->known_ctime = -1; /* not verified since the last run: check before first use */
		if ((err = wrk_cache_index_add(c, e)) != REAP_OK) {
			wrk_cache_entry_free(e);
			break;
		}
		(*found)[(*n)++] = (found_t){.e = e, .ctime = wrk_ctime_ns(&st)};
	}
	closedir(dir);
	return err;
}

static int scan(wrk_cache_t *c, reap_errbuf_t *eb)
{
	found_t *found = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *dir;
	int fd = dup(c->dirfd), err = REAP_OK;

	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return reap_errf(eb, REAP_E_IO, "cache: %s: %s", c->dir, strerror(errno));
	}
	rewinddir(dir);
	while (err == REAP_OK && (de = readdir(dir)) != NULL) {
		if (is_hex2(de->d_name))
			err = scan_sub(c, de->d_name, &found, &n, &cap);
		else if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
			 strcmp(de->d_name, "tmp") != 0)
			REAP_WARN("cache_unexpected_entry", "path=\"%s/%s\"", c->dir, de->d_name);
	}
	closedir(dir);
	/* oldest ctime = least recently used: insert in that order, each at the front */
	if (n > 0)
		qsort(found, n, sizeof(*found), found_cmp);
	for (size_t i = 0; i < n; i++)
		wrk_cache_lru_front(c, found[i].e);
	free(found);
	if (err != REAP_OK)
		return reap_errf(eb, err, "cache: scanning %s: %s", c->dir, reap_strerror(err));
	return REAP_OK;
}

/* mkdir -p for the cache folder itself. */
static int make_dirs(const char *dir, reap_errbuf_t *eb)
{
	char *p = strdup(dir);
	int err = REAP_OK;

	if (p == NULL)
		return REAP_E_NOMEM;
	for (char *s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		char saved = *s;
		*s = '\0';
		if (mkdir(p, 0700) != 0 && errno != EEXIST) {
			err = reap_errf(eb, REAP_E_IO, "cache: mkdir %s: %s", p, strerror(errno));
			break;
		}
		*s = saved;
		if (saved == '\0')
			break;
	}
	free(p);
	return err;
}

wrk_cache_t *wrk_cache_open(const char *dir, uint64_t capacity, reap_errbuf_t *eb)
{
	wrk_cache_t *c = NULL;

	if (dir == NULL || dir[0] == '\0') {
		reap_errf(eb, REAP_E_INVALID, "cache: no folder given");
		return NULL;
	}
	if (make_dirs(dir, eb) != REAP_OK)
		return NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		goto nomem;
	c->dirfd = -1;
	c->capacity = capacity;
	c->lru.next = c->lru.prev = &c->lru;
	c->nbuckets = 1024;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	if ((c->buckets = calloc(c->nbuckets, sizeof(*c->buckets))) == NULL ||
	    (c->dir = realpath(dir, NULL)) == NULL)
		goto nomem;
	c->dirfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0) {
		reap_errf(eb, REAP_E_IO, "cache: %s: %s", c->dir, strerror(errno));
		goto fail;
	}
	if (clear_tmp(c, eb) != REAP_OK || scan(c, eb) != REAP_OK)
		goto fail;
	wrk_cache_evict(c);
	REAP_INFO("cache_open", "dir=\"%s\" files=%zu bytes=%llu capacity=%llu", c->dir, c->n,
		  (unsigned long long)c->used, (unsigned long long)capacity);
	return c;
nomem:
	reap_errf(eb, REAP_E_NOMEM, "cache: out of memory");
fail:
	wrk_cache_close(c);
	return NULL;
}

void wrk_cache_close(wrk_cache_t *cache)
{
	if (cache == NULL)
		return;
	for (size_t i = 0; cache->buckets != NULL && i < cache->nbuckets; i++) {
		wrk_centry_t *e = cache->buckets[i], *next;
		for (; e != NULL; e = next) {
			next = e->hnext;
			wrk_cache_entry_free(e);
		}
	}
	free(cache->buckets);
	if (cache->dirfd >= 0)
		close(cache->dirfd);
	free(cache->dir);
	pthread_cond_destroy(&cache->cv);
	pthread_mutex_destroy(&cache->mu);
	free(cache);
}
