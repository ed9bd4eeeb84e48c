/*
 * reapd_keys.c - first-start set-up of reapd's secrets, so the all-in-one
 * run needs no preparation: the token signing key (DATA/token.key) and the
 * local worker's token (DATA/worker.token), both created 0600. A worker
 * token is reissued when it is missing, no longer verifies (the key
 * rotated) or is within a week of expiring.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd/reapd_int.h"
#include "common/log.h"

#define WORKER_TOKEN_TTL_S (365 * 24 * 3600LL)
#define WORKER_TOKEN_RENEW_S (7 * 24 * 3600LL)

/* Read a small file into buf (NUL-terminated, trailing whitespace cut). */
static int read_small(const char *path, char *buf, size_t cap, reap_errbuf_t *eb)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ssize_t n;
	if (fd < 0)
		return errno == ENOENT ? REAP_E_NOT_FOUND
				       : reap_errf(eb, REAP_E_IO, "cannot read %s: %s", path,
						   strerror(errno));
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return reap_errf(eb, REAP_E_IO, "cannot read %s: %s", path, strerror(errno));
	buf[n] = '\0';
	buf[strcspn(buf, " \t\r\n")] = '\0';
	return REAP_OK;
}

/* Write data to path atomically (tmp, fsync, rename), mode 0600. */
static int write_private(const char *path, const char *data, reap_errbuf_t *eb)
{
	char tmp[4200];
	size_t len = strlen(data);
	int fd, err = REAP_OK;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "cannot create %s: %s", tmp, strerror(errno));
	if (write(fd, data, len) != (ssize_t)len || write(fd, "\n", 1) != 1 || fsync(fd) != 0)
		err = reap_errf(eb, REAP_E_IO, "cannot write %s: %s", tmp, strerror(errno));
	close(fd);
	if (err == REAP_OK && rename(tmp, path) != 0)
		err = reap_errf(eb, REAP_E_IO, "cannot rename %s: %s", tmp, strerror(errno));
	if (err != REAP_OK)
		unlink(tmp);
	return err;
}

int reapd_bootstrap_keys(const char *data, auth_key_t *keys, size_t *n_keys, size_t max_keys,
			 reap_errbuf_t *eb)
{
	char path[4096];
	struct stat st;
	int err;

	if (*n_keys > 0)
		return REAP_OK; /* the config names its keys */
	if (max_keys == 0)
		return reap_errf(eb, REAP_E_INVALID, "no room for a token key");
	snprintf(path, sizeof(path), "%s/token.key", data);
	if (stat(path, &st) != 0) {
		if (errno != ENOENT)
			return reap_errf(eb, REAP_E_IO, "%s: %s", path, strerror(errno));
		if ((err = auth_key_generate_file(path, eb)) != REAP_OK)
			return err;
		REAP_INFO("key generated", "path=%s", path);
	}
	if ((err = auth_key_load_file(path, &keys[0], eb)) != REAP_OK)
		return err;
	keys[0].signing = true;
	keys[0].not_after = 0;
	*n_keys = 1;
	return REAP_OK;
}

int reapd_bootstrap_worker_token(const char *path, const char *worker_name,
				 const auth_key_t *keys, size_t n_keys, reap_errbuf_t *eb)
{
	char buf[4096];
	auth_claims_t c;
	const auth_key_t *signer = NULL;
	int64_t now = (int64_t)time(NULL);
	char *tok = NULL;
	int err;

	err = read_small(path, buf, sizeof(buf), eb);
	if (err != REAP_OK && err != REAP_E_NOT_FOUND)
		return err;
	if (err == REAP_OK &&
	    auth_token_verify(keys, n_keys, buf, strlen(buf), now, &c, NULL) == REAP_OK &&
	    c.role == AUTH_ROLE_WORKER && c.expires > now + WORKER_TOKEN_RENEW_S)
		return REAP_OK;
	for (size_t i = 0; i < n_keys; i++)
		if (keys[i].signing)
			signer = &keys[i];
	if (signer == NULL)
		return reap_errf(eb, REAP_E_INVALID, "no signing key to issue the worker token");
	memset(&c, 0, sizeof(c));
	snprintf(c.subject, sizeof(c.subject), "%s", worker_name);
	c.role = AUTH_ROLE_WORKER;
	c.n_instances = 1; /* "": every instance */
	c.issued_at = now;
	c.expires = now + WORKER_TOKEN_TTL_S;
	if ((err = auth_token_issue(signer, &c, &tok, eb)) != REAP_OK)
		return err;
	err = write_private(path, tok, eb);
	memset(tok, 0, strlen(tok));
	free(tok);
	if (err == REAP_OK)
		REAP_INFO("worker token issued", "path=%s worker=%s", path, worker_name);
	return err;
}
