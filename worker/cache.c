/*
 * cache.c - the worker's local file cache: one read-only file per blob,
 * <dir>/<2hex>/<hash>-<size>[-x] (the -x variant is executable, 0555; the
 * plain one 0444), hardlinked into exec roots by wrk_cache_link.
 *
 * Index. An in-memory hash table of entries plus an LRU list and the total
 * of their sizes, rebuilt at open by scanning the folder (cache_scan.c;
 * leftovers in tmp/ and malformed names are removed; the LRU order is the
 * files' ctime, which every link and unlink of the inode bumps, so it tracks
 * use). Capacity is
 * enforced after every insert by unlinking least recently used entries,
 * skipping files whose link count says they are staged in an exec root
 * right now: unlinking those frees no space and would change the ctime the
 * tamper check compares. A cache can therefore overshoot its capacity by
 * what running actions hold. Capacity 0 means unbounded.
 *
 * Concurrency. One mutex guards the index. Downloads and content checks run
 * outside it: the entry is marked busy, and any other thread that needs it
 * waits on the condition variable, so concurrent slots needing one blob
 * download it once. A failed download wakes the waiters with its error.
 * Entries are freed only when no waiter still points at them (refs).
 *
 * Integrity. Files are written to tmp/, made read-only, fsync'd and renamed
 * into place, so a visible name always has its whole content. Staged copies
 * share the cache file's inode, and an action could chmod and rewrite it.
 * The entry remembers the inode's ctime as last verified; before each link
 * a different ctime means something touched the inode, and the file is
 * re-hashed: kept when it still matches its digest (and mode and size),
 * dropped and downloaded again otherwise. A plain re-download on any ctime
 * change would be wrong here: removing an exec root (unlinking the staged
 * links) also bumps the ctime, so every action's cleanup would invalidate
 * its inputs. Files found at open are verified on first use the same way.
 *
 * One running action per inode. An inode already linked into an exec root
 * (link count above one) is copied, not linked, for the next action, and
 * the copy is hashed: otherwise one action could rewrite an input of
 * another while it runs and restore it before anyone looked, and the
 * victim's ctime check would be blind to it among benign link changes.
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

#define REL_LEN (3 + REAP_HASH_HEX_LEN + 1 + 20 + 3) /* "ab/{hash}-{size}-x" */
#define IO_CHUNK ((size_t)1 << 20)

/* ---- names, times, small file helpers ---- */

static void rel_name(const reap_digest_t *d, bool exec, char out[REL_LEN])
{
	char hex[REAP_HASH_HEX_LEN + 1];
	reap_digest_hex(d, hex);
	snprintf(out, REL_LEN, "%.2s/%s-%lld%s", hex, hex, (long long)d->size, exec ? "-x" : "");
}

int64_t wrk_ctime_ns(const struct stat *st)
{
	return (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

mode_t wrk_cache_file_mode(bool exec)
{
	return exec ? 0555 : 0444;
}

static int io_err(int e)
{
	return e == ENOSPC || e == EDQUOT ? REAP_E_EXHAUSTED : REAP_E_IO;
}

/* Parse "<hash>-<size>[-x]"; false for anything else. */
bool wrk_cache_parse_name(const char *name, reap_digest_t *d, bool *exec)
{
	const char *p = name + REAP_HASH_HEX_LEN;
	char *end;

	if (strlen(name) < REAP_HASH_HEX_LEN + 2 || *p != '-' || p[1] < '0' || p[1] > '9')
		return false;
	errno = 0;
	long long size = strtoll(p + 1, &end, 10);
	if (errno != 0 || (p[1] == '0' && end != p + 2))
		return false; /* overflow, or a leading zero */
	*exec = strcmp(end, "-x") == 0;
	if (!*exec && *end != '\0')
		return false;
	return reap_digest_parse(name, REAP_HASH_HEX_LEN, size, d, NULL) == REAP_OK;
}

/* ---- the index (caller holds mu) ---- */

static size_t bucket_of(const wrk_cache_t *c, const reap_digest_t *d, bool exec)
{
	uint64_t h;
	memcpy(&h, d->hash, sizeof(h));
	return (size_t)(h ^ (uint64_t)exec) & (c->nbuckets - 1);
}

wrk_centry_t *wrk_cache_index_find(const wrk_cache_t *c, const reap_digest_t *d, bool exec)
{
	for (wrk_centry_t *e = c->buckets[bucket_of(c, d, exec)]; e != NULL; e = e->hnext)
		if (e->exec == exec && reap_digest_eq(&e->d, d))
			return e;
	return NULL;
}

int wrk_cache_index_add(wrk_cache_t *c, wrk_centry_t *e)
{
	if (c->n + 1 > c->nbuckets) {
		size_t nb = c->nbuckets * 2;
		wrk_centry_t **b = calloc(nb, sizeof(*b));
		if (b == NULL)
			return REAP_E_NOMEM;
		for (size_t i = 0; i < c->nbuckets; i++) {
			wrk_centry_t *x = c->buckets[i], *next;
			for (; x != NULL; x = next) {
				next = x->hnext;
				uint64_t h;
				memcpy(&h, x->d.hash, sizeof(h));
				size_t j = (size_t)(h ^ (uint64_t)x->exec) & (nb - 1);
				x->hnext = b[j];
				b[j] = x;
			}
		}
		free(c->buckets);
		c->buckets = b;
		c->nbuckets = nb;
	}
	size_t i = bucket_of(c, &e->d, e->exec);
	e->hnext = c->buckets[i];
	c->buckets[i] = e;
	c->n++;
	return REAP_OK;
}

static void index_remove(wrk_cache_t *c, wrk_centry_t *e)
{
	for (wrk_centry_t **pp = &c->buckets[bucket_of(c, &e->d, e->exec)]; *pp != NULL;
	     pp = &(*pp)->hnext) {
		if (*pp == e) {
			*pp = e->hnext;
			c->n--;
			return;
		}
	}
}

static void lru_unlink(wrk_cache_t *c, wrk_centry_t *e)
{
	if (!e->in_lru)
		return;
	e->prev->next = e->next;
	e->next->prev = e->prev;
	e->in_lru = false;
	c->used -= (uint64_t)e->d.size;
}

/* Put e at the most recent end (adding it if needed). */
void wrk_cache_lru_front(wrk_cache_t *c, wrk_centry_t *e)
{
	lru_unlink(c, e);
	e->next = c->lru.next;
	e->prev = &c->lru;
	c->lru.next->prev = e;
	c->lru.next = e;
	e->in_lru = true;
	c->used += (uint64_t)e->d.size;
}

void wrk_cache_entry_free(wrk_centry_t *e)
{
	free(e->msg);
	free(e);
}

/*
 * Remove e from the index (and its file when it has one). Waiters still
 * pointing at it free it; otherwise it is freed now. Never for a busy entry
 * owned by another thread.
 */
static void entry_drop(wrk_cache_t *c, wrk_centry_t *e)
{
	char rel[REL_LEN];

	if (e->in_lru) {
		rel_name(&e->d, e->exec, rel);
		if (unlinkat(c->dirfd, rel, 0) != 0 && errno != ENOENT)
			REAP_WARN("cache_unlink_failed", "file=%s err=\"%s\"", rel, strerror(errno));
	}
	lru_unlink(c, e);
	index_remove(c, e);
	e->state = WRK_CE_GONE;
	pthread_cond_broadcast(&c->cv);
	if (e->refs == 0)
		wrk_cache_entry_free(e);
}

/* Unlink least recently used entries until within capacity; staged files are kept. */
void wrk_cache_evict(wrk_cache_t *c)
{
	wrk_centry_t *e = c->lru.prev, *prev;

	for (; c->capacity != 0 && c->used > c->capacity && e != &c->lru; e = prev) {
		char rel[REL_LEN];
		struct stat st;

		prev = e->prev;
		if (e->state != WRK_CE_READY)
			continue;
		rel_name(&e->d, e->exec, rel);
		if (fstatat(c->dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_nlink > 1)
			continue; /* staged in an exec root right now */
		entry_drop(c, e);
	}
}

/* ---- work done outside the lock ---- */

/* Download d into tmp/, make it read-only, fsync, rename into place; *ctime gets the result's. */
static int fetch(wrk_cache_t *c, wrk_cas_t *cas, const reap_digest_t *d, bool exec,
		 int64_t *ctime, reap_errbuf_t *eb)
{
	char rel[REL_LEN], sub[3], *tmp = NULL;
	struct stat st;
	int fd = -1, err;

	rel_name(d, exec, rel);
	memcpy(sub, rel, 2);
	sub[2] = '\0';
	if (mkdirat(c->dirfd, sub, 0700) != 0 && errno != EEXIST) {
		err = reap_errf(eb, io_err(errno), "cache: mkdir %s: %s", sub, strerror(errno));
		goto out;
	}
	if (asprintf(&tmp, "%s/tmp/dl-XXXXXX", c->dir) < 0) {
		tmp = NULL;
		err = REAP_E_NOMEM;
		goto out;
	}
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		err = reap_errf(eb, io_err(errno), "cache: temporary file: %s", strerror(errno));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	if ((err = wrk_cas_download(cas, d, fd, eb)) != REAP_OK)
		goto out;
	if (fchmod(fd, wrk_cache_file_mode(exec)) != 0 || fsync(fd) != 0) {
		err = reap_errf(eb, io_err(errno), "cache: %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (renameat(AT_FDCWD, tmp, c->dirfd, rel) != 0) {
		err = reap_errf(eb, io_err(errno), "cache: rename to %s: %s", rel, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	/* rename bumps the ctime: read it only now */
	if (fstatat(c->dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0) {
		err = reap_errf(eb, REAP_E_IO, "cache: stat %s: %s", rel, strerror(errno));
		goto out;
	}
	*ctime = wrk_ctime_ns(&st);
out:
	if (fd >= 0)
		close(fd);
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	return err;
}

/* Does the open file fd (read from its current offset) hold exactly d? */
static bool fd_is(int fd, const reap_digest_t *d)
{
	reap_hasher_t h = {0};
	reap_digest_t got;
	uint8_t *buf = malloc(IO_CHUNK);
	bool ok = false;

	if (buf == NULL || reap_hasher_init(&h) != REAP_OK)
		goto out;
	for (;;) {
		ssize_t r = read(fd, buf, IO_CHUNK);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto out;
		if (r == 0)
			break;
		reap_hasher_update(&h, buf, (size_t)r);
	}
	reap_hasher_final(&h, &got);
	ok = reap_digest_eq(&got, d);
out:
	reap_hasher_destroy(&h);
	free(buf);
	return ok;
}

/*
 * Is the cache file still exactly d (regular, read-only mode, content)?
 * *ctime gets the ctime it was checked at; a ctime that moves during the
 * check fails it.
 */
static bool verify(wrk_cache_t *c, const reap_digest_t *d, bool exec, int64_t *ctime)
{
	char rel[REL_LEN];
	struct stat before, after;
	bool ok = false;
	int fd;

	rel_name(d, exec, rel);
	fd = openat(c->dirfd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &before) != 0 || !S_ISREG(before.st_mode) ||
	    (before.st_mode & 07777) != wrk_cache_file_mode(exec) || before.st_size != d->size)
		goto out;
	if (!fd_is(fd, d) || fstat(fd, &after) != 0 || wrk_ctime_ns(&after) != wrk_ctime_ns(&before))
		goto out;
	*ctime = wrk_ctime_ns(&before);
	ok = true;
out:
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Does the file at path hold exactly d? */
static bool file_is(const char *path, const reap_digest_t *d)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	bool ok = fd >= 0 && fd_is(fd, d);
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Copy the open cache file src to a new file path with mode; *ctime gets the copy's. */
static int copy_out(int src, const char *path, mode_t mode, int64_t *ctime, reap_errbuf_t *eb)
{
	struct stat st;
	uint8_t *buf = NULL;
	loff_t in_off = 0;
	int err = REAP_OK;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

	if (fd < 0)
		return reap_errf(eb, errno == EEXIST ? REAP_E_EXISTS : io_err(errno), "%s: %s", path,
				 strerror(errno));
	for (;;) {
		ssize_t n = copy_file_range(src, &in_off, fd, NULL, IO_CHUNK, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			break;
		if (n > 0)
			continue;
		if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP) {
			err = reap_errf(eb, io_err(errno), "copy to %s: %s", path, strerror(errno));
			goto out;
		}
		/* no copy_file_range between these files: plain read and write */
		if ((buf = malloc(IO_CHUNK)) == NULL) {
			err = REAP_E_NOMEM;
			goto out;
		}
		for (;;) {
			ssize_t r = pread(src, buf, IO_CHUNK, in_off);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				err = reap_errf(eb, REAP_E_IO, "copy to %s: %s", path, strerror(errno));
				goto out;
			}
			if (r == 0)
				break;
			for (ssize_t w = 0; w < r;) {
				ssize_t k = write(fd, buf + w, (size_t)(r - w));
				if (k < 0 && errno == EINTR)
					continue;
				if (k <= 0) {
					err = reap_errf(eb, io_err(errno), "copy to %s: %s", path,
							strerror(errno));
					goto out;
				}
				w += k;
			}
			in_off += r;
		}
		break;
	}
	if (fchmod(fd, mode) != 0 || fstat(fd, &st) != 0) {
		err = reap_errf(eb, REAP_E_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	*ctime = wrk_ctime_ns(&st);
out:
	free(buf);
	close(fd);
	if (err != REAP_OK)
		unlink(path);
	return err;
}

/* The empty blob: a new empty file, no cache entry. */
static int make_empty(const char *path, bool exec, int64_t *ctime, reap_errbuf_t *eb)
{
	struct stat st;
	int err = REAP_OK;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

	if (fd < 0)
		return reap_errf(eb, errno == EEXIST ? REAP_E_EXISTS : io_err(errno), "%s: %s", path,
				 strerror(errno));
	if (fchmod(fd, wrk_cache_file_mode(exec)) != 0 || fstat(fd, &st) != 0)
		err = reap_errf(eb, REAP_E_IO, "%s: %s", path, strerror(errno));
	else
		*ctime = wrk_ctime_ns(&st);
	close(fd);
	if (err != REAP_OK)
		unlink(path);
	return err;
}

/* ---- the public calls ---- */

int wrk_cache_link(wrk_cache_t *cache, wrk_cas_t *cas, const reap_digest_t *d, bool executable,
		   const char *path, int64_t *ctime_out, reap_errbuf_t *eb)
{
	char rel[REL_LEN];
	int64_t ct = 0;
	int err, src, attempt = 0;
	bool shared;
	wrk_centry_t *e;

	*ctime_out = 0;
	if (reap_digest_is_empty(d))
		return make_empty(path, executable, ctime_out, eb);
	rel_name(d, executable, rel);
again:
	err = REAP_OK;
	src = -1;
	shared = false;
	pthread_mutex_lock(&cache->mu);
	for (;;) {
		struct stat st;

		e = wrk_cache_index_find(cache, d, executable);
		if (e == NULL) {
			/* First to need it: download outside the lock, others wait. */
			if ((e = calloc(1, sizeof(*e))) == NULL) {
				err = REAP_E_NOMEM;
				break;
			}
			e->d = *d;
			e->exec = executable;
			e->state = WRK_CE_BUSY;
			if ((err = wrk_cache_index_add(cache, e)) != REAP_OK) {
				wrk_cache_entry_free(e);
				break;
			}
			pthread_mutex_unlock(&cache->mu);
			err = fetch(cache, cas, d, executable, &ct, eb);
			pthread_mutex_lock(&cache->mu);
			if (err != REAP_OK) {
				e->state = WRK_CE_FAILED;
				e->err = err;
				e->msg = eb != NULL ? strdup(eb->msg) : NULL;
				index_remove(cache, e);
				pthread_cond_broadcast(&cache->cv);
				if (e->refs == 0)
					wrk_cache_entry_free(e);
				break;
			}
			e->known_ctime = ct;
			e->state = WRK_CE_READY;
			wrk_cache_lru_front(cache, e);
			pthread_cond_broadcast(&cache->cv);
			continue;
		}
		if (e->state == WRK_CE_BUSY) {
			e->refs++;
			while (e->state == WRK_CE_BUSY)
				pthread_cond_wait(&cache->cv, &cache->mu);
			e->refs--;
			wrk_ce_state_t s = e->state;
			if (s == WRK_CE_FAILED) {
				err = e->err;
				if (e->msg != NULL)
					reap_errf(eb, err, "%s", e->msg);
			}
			if (s != WRK_CE_READY && e->refs == 0)
				wrk_cache_entry_free(e);
			if (s == WRK_CE_FAILED)
				break;
			continue; /* look again: ready, or gone and to be fetched anew */
		}
		/* Ready: is the file still what we put there? */
		if (fstatat(cache->dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
		    (st.st_mode & 07777) != wrk_cache_file_mode(executable) || st.st_size != d->size) {
			REAP_WARN("cache_entry_tampered", "file=%s", rel);
			entry_drop(cache, e);
			continue;
		}
		if (wrk_ctime_ns(&st) != e->known_ctime) {
			bool ok;
			e->state = WRK_CE_BUSY;
			pthread_mutex_unlock(&cache->mu);
			ok = verify(cache, d, executable, &ct);
			pthread_mutex_lock(&cache->mu);
			e->state = WRK_CE_READY;
			if (!ok) {
				REAP_WARN("cache_entry_tampered", "file=%s", rel);
				entry_drop(cache, e);
				continue;
			}
			e->known_ctime = ct;
			pthread_cond_broadcast(&cache->cv);
			continue;
		}
		wrk_cache_lru_front(cache, e);
		if (st.st_nlink > 1) {
			/*
			 * Another running action has this inode staged. Never share
			 * an inode between two running actions: one could rewrite
			 * an input of the other. Copy it, and check the copy.
			 */
			src = openat(cache->dirfd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			if (src < 0)
				err = reap_errf(eb, REAP_E_IO, "cache: open %s: %s", rel, strerror(errno));
			shared = true;
			break;
		}
		if (linkat(cache->dirfd, rel, AT_FDCWD, path, 0) == 0) {
			/* our own link bumped the ctime: that is the value to expect now */
			if (fstatat(cache->dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0)
				e->known_ctime = *ctime_out = wrk_ctime_ns(&st);
			else
				err = reap_errf(eb, REAP_E_IO, "cache: stat %s: %s", rel, strerror(errno));
			break;
		}
		if (errno == EEXIST) {
			err = reap_errf(eb, REAP_E_EXISTS, "%s: already exists", path);
			break;
		}
		/* EXDEV, EMLINK, or a file system without hardlinks: copy instead. */
		src = openat(cache->dirfd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (src < 0)
			err = reap_errf(eb, REAP_E_IO, "cache: open %s: %s", rel, strerror(errno));
		break;
	}
	if (err == REAP_OK)
		wrk_cache_evict(cache);
	pthread_mutex_unlock(&cache->mu);
	if (src >= 0) {
		err = copy_out(src, path, wrk_cache_file_mode(executable), ctime_out, eb);
		close(src);
		if (err == REAP_OK && shared && !file_is(path, d)) {
			/* The source was being rewritten by the action holding it. */
			unlink(path);
			REAP_WARN("cache_entry_tampered", "file=%s", rel);
			wrk_cache_forget(cache, d, executable);
			if (attempt < 3) {
				attempt++;
				goto again;
			}
			err = reap_errf(eb, REAP_E_IO, "cache: %s keeps changing under us", rel);
		}
	}
	return err;
}

void wrk_cache_forget(wrk_cache_t *cache, const reap_digest_t *d, bool executable)
{
	wrk_centry_t *e;

	pthread_mutex_lock(&cache->mu);
	e = wrk_cache_index_find(cache, d, executable);
	if (e != NULL && e->state == WRK_CE_READY) /* a busy one is being fetched or checked anew */
		entry_drop(cache, e);
	pthread_mutex_unlock(&cache->mu);
}

bool wrk_cache_has(wrk_cache_t *cache, const reap_digest_t *d, bool executable)
{
	wrk_centry_t *e;
	bool has;

	pthread_mutex_lock(&cache->mu);
	e = wrk_cache_index_find(cache, d, executable);
	has = e != NULL && e->state == WRK_CE_READY;
	pthread_mutex_unlock(&cache->mu);
	return has;
}
