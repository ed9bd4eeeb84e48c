/*
 * resource.c - ByteStream resource names.
 *
 * The instance name may itself contain '/', but never a reserved word as a
 * segment, so the first "blobs", "compressed-blobs" or "uploads" segment
 * ends it unambiguously. Everything about the name is checked here, before
 * any service code sees it: a name this parser accepts has a valid instance,
 * a strict digest and a supported compressor.
 */
#include <string.h>

#include "cas/cas.h"

#define MAX_SEGS 64

typedef struct seg {
	const char *p;
	size_t n;
} seg_t;

static bool seg_is(const seg_t *s, const char *word)
{
	return s->n == strlen(word) && memcmp(s->p, word, s->n) == 0;
}

static int parse_size(const seg_t *s, int64_t *out, reap_errbuf_t *eb)
{
	int64_t v = 0;
	if (s->n == 0 || s->n > 19)
		return reap_errf(eb, REAP_E_INVALID, "resource name has a bad size segment");
	for (size_t i = 0; i < s->n; i++) {
		if (s->p[i] < '0' || s->p[i] > '9')
			return reap_errf(eb, REAP_E_INVALID,
					 "resource name size '%.*s' is not a decimal number",
					 (int)(s->n > 20 ? 20 : s->n), s->p);
		int d = s->p[i] - '0';
		if (v > (INT64_MAX - d) / 10)
			return reap_errf(eb, REAP_E_INVALID, "resource name size is too large");
		v = v * 10 + d;
	}
	*out = v;
	return REAP_OK;
}

/* An upload id: what clients put there is a UUID, but accept any short token. */
static int check_uuid(const seg_t *s, reap_errbuf_t *eb)
{
	if (s->n == 0 || s->n > 64)
		return reap_errf(eb, REAP_E_INVALID, "resource name has a bad upload id");
	for (size_t i = 0; i < s->n; i++) {
		char c = s->p[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      c == '-' || c == '_' || c == '.'))
			return reap_errf(eb, REAP_E_INVALID,
					 "resource name upload id has a bad character");
	}
	return REAP_OK;
}

/*
 * segs[i..n): the part after "blobs" or after "compressed-blobs/{c}":
 * [digest_function/]{hash}/{size}, then (uploads only) optional metadata.
 */
static int parse_digest_part(const seg_t *segs, size_t i, size_t n, bool write,
			     cas_resource_t *out, reap_errbuf_t *eb)
{
	if (i < n && segs[i].n != REAP_HASH_HEX_LEN) {
		if (!seg_is(&segs[i], "sha256"))
			return reap_errf(eb, REAP_E_INVALID,
					 "resource name has digest function '%.*s'; this server uses sha256",
					 (int)(segs[i].n > 32 ? 32 : segs[i].n), segs[i].p);
		i++;
	}
	if (n - i < 2 || i >= n)
		return reap_errf(eb, REAP_E_INVALID, "resource name lacks {hash}/{size}");
	int64_t size = 0;
	int err = parse_size(&segs[i + 1], &size, eb);
	if (err != REAP_OK)
		return err;
	err = reap_digest_parse(segs[i].p, segs[i].n, size, &out->digest, eb);
	if (err != REAP_OK)
		return err;
	if (!write && i + 2 != n)
		return reap_errf(eb, REAP_E_INVALID, "resource name has extra segments after the size");
	return REAP_OK;
}

int cas_resource_parse(const char *name, size_t len, bool write, cas_resource_t *out,
		       reap_errbuf_t *eb)
{
	seg_t segs[MAX_SEGS];
	size_t n = 0, start = 0, k;
	int err;

	memset(out, 0, sizeof(*out));
	out->write = write;
	if (name == NULL || len == 0)
		return reap_errf(eb, REAP_E_INVALID, "resource name is empty");
	if (len > 4096)
		return reap_errf(eb, REAP_E_INVALID, "resource name is too long");
	for (size_t i = 0; i <= len; i++) {
		if (i < len && name[i] == '\0')
			return reap_errf(eb, REAP_E_INVALID, "resource name has a NUL byte");
		if (i < len && name[i] != '/')
			continue;
		if (n == MAX_SEGS)
			return reap_errf(eb, REAP_E_INVALID, "resource name has too many segments");
		segs[n].p = name + start;
		segs[n].n = i - start;
		n++;
		start = i + 1;
	}
	for (k = 0; k < n; k++)
		if (seg_is(&segs[k], write ? "uploads" : "blobs") ||
		    (!write && seg_is(&segs[k], "compressed-blobs")))
			break;
	if (k == n)
		return reap_errf(eb, REAP_E_INVALID, "resource name has no '%s' segment",
				 write ? "uploads" : "blobs");
	out->instance = name;
	out->instance_len = k == 0 ? 0 : (size_t)(segs[k - 1].p + segs[k - 1].n - name);
	err = reap_instance_check(out->instance, out->instance_len, eb);
	if (err != REAP_OK)
		return err;
	if (write) {
		if (k + 1 >= n)
			return reap_errf(eb, REAP_E_INVALID, "resource name lacks an upload id");
		err = check_uuid(&segs[k + 1], eb);
		if (err != REAP_OK)
			return err;
		k += 2;
		if (k >= n || !(seg_is(&segs[k], "blobs") || seg_is(&segs[k], "compressed-blobs")))
			return reap_errf(eb, REAP_E_INVALID,
					 "upload resource name needs 'blobs' or 'compressed-blobs' after the upload id");
	}
	if (seg_is(&segs[k], "compressed-blobs")) {
		if (k + 1 >= n)
			return reap_errf(eb, REAP_E_INVALID, "resource name lacks a compressor");
		if (!seg_is(&segs[k + 1], "zstd"))
			return reap_errf(eb, REAP_E_UNIMPLEMENTED,
					 "compressor '%.*s' is not supported (zstd is)",
					 (int)(segs[k + 1].n > 32 ? 32 : segs[k + 1].n), segs[k + 1].p);
		out->compressed = true;
		k++;
	}
	return parse_digest_part(segs, k + 1, n, write, out, eb);
}
