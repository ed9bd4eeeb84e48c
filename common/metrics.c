/*
 * metrics.c - the metrics registry, its children tables and the Prometheus
 * text renderer.
 *
 * Hot paths (one update per RPC or per blob) must not contend on locks, so
 * every series keeps its value in one atomic word: a counter's uint64, a
 * gauge's double bit pattern, a histogram's sum bits next to per-bucket
 * counts. Children of a labeled family live in a fixed, open-addressing
 * table of twice the child cap: entries are published with a release store
 * and never move or disappear until the registry is freed, so lookups probe
 * without a lock and only creation takes the family mutex. Rendering reads
 * the creation-order array up to a count published the same way.
 *
 * Lock order: registry scrape_mu -> registry mu -> family mu.
 */
#include "common/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

#define TABLE_SLOTS (2 * REAP_METRIC_MAX_CHILDREN) /* load factor <= 1/2; a power of two */

typedef struct family family_t;

struct reap_metric {
	family_t *fam;
	kind_t kind;
	bool inert;       /* the own handle of a labeled family: updates do nothing */
	uint64_t hash;    /* of the label values */
	const char *values[REAP_METRIC_MAX_LABELS]; /* normalised, stored after counts[] */
	_Atomic uint64_t v; /* counter value, or double bits of a gauge / histogram sum */
	_Atomic uint64_t counts[]; /* histogram: one per bucket, then +Inf (not cumulative) */
};

struct family {
	family_t *next;
	kind_t kind;
	char *name;
	char *help;
	size_t nlabels;
	char *label_names[REAP_METRIC_MAX_LABELS];
	size_t nbuckets;
	double bounds[REAP_METRIC_MAX_BUCKETS];
	reap_metric_t *root;
	pthread_mutex_t mu;              /* child creation */
	_Atomic(reap_metric_t *) *table; /* TABLE_SLOTS; labeled families only */
	reap_metric_t **children;        /* creation order, REAP_METRIC_MAX_CHILDREN */
	_Atomic size_t nchildren;
};

typedef struct collector {
	struct collector *next;
	reap_metric_collector_fn fn;
	void *ctx;
} collector_t;

struct reap_metric_registry {
	pthread_mutex_t mu; /* the family list */
	family_t *head;
	family_t **tail;
	pthread_mutex_t scrape_mu; /* the collector list, and one scrape at a time */
	collector_t *collectors;
};

/* ---- small helpers ------------------------------------------------------ */

static double bits_to_double(uint64_t b)
{
	double d;
	memcpy(&d, &b, sizeof(d));
	return d;
}

static uint64_t double_to_bits(double d)
{
	uint64_t b;
	memcpy(&b, &d, sizeof(b));
	return b;
}

static void atomic_add_double(_Atomic uint64_t *p, double delta)
{
	uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(p, &old,
						      double_to_bits(bits_to_double(old) + delta),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

/* Prometheus metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names: no ':' and no "__" prefix. */
static bool valid_name(const char *s, bool label)
{
	if (s == NULL || s[0] == '\0' || (label && strncmp(s, "__", 2) == 0))
		return false;
	for (size_t i = 0; s[i] != '\0'; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			  (!label && c == ':') || (i > 0 && c >= '0' && c <= '9');
		if (!ok)
			return false;
	}
	return true;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	size_t n;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/*
 * A label value as it is stored: at most REAP_METRIC_MAX_VALUE bytes, cut
 * on a character boundary, invalid UTF-8 bytes replaced by '?'. Returns s
 * itself when it is already in that form (the common case), else buf.
 */
static const char *normalise_value(const char *s, char buf[REAP_METRIC_MAX_VALUE + 1])
{
	const unsigned char *u = (const unsigned char *)(s != NULL ? s : "");
	size_t i = 0, o = 0;
	bool changed = false;
	while (u[i] != '\0') {
		size_t n = utf8_len(u + i);
		if (o + (n == 0 ? 1 : n) > REAP_METRIC_MAX_VALUE) {
			changed = true;
			break;
		}
		if (n == 0) {
			buf[o++] = '?';
			i++;
			changed = true;
		} else {
			memcpy(buf + o, u + i, n);
			o += n;
			i += n;
		}
	}
	buf[o] = '\0';
	return changed ? buf : (const char *)u;
}

static uint64_t hash_values(const char *const *v, size_t n)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		for (const unsigned char *p = (const unsigned char *)v[i]; *p != '\0'; p++)
			h = (h ^ *p) * 1099511628211ULL;
		h = (h ^ 0xff) * 1099511628211ULL; /* separator: 0xff never occurs in UTF-8 */
	}
	return h;
}

/* ---- registry ----------------------------------------------------------- */

reap_metric_registry_t *reap_metric_registry_new(void)
{
	reap_metric_registry_t *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->scrape_mu, NULL);
	r->tail = &r->head;
	return r;
}

static void family_free(family_t *f)
{
	size_t n = atomic_load(&f->nchildren);
	for (size_t i = 0; i < n; i++)
		free(f->children[i]);
	free(f->children);
	free((void *)f->table);
	free(f->root);
	for (size_t i = 0; i < f->nlabels; i++)
		free(f->label_names[i]);
	free(f->name);
	free(f->help);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

void reap_metric_registry_free(reap_metric_registry_t *r)
{
	if (r == NULL)
		return;
	for (family_t *f = r->head, *next; f != NULL; f = next) {
		next = f->next;
		family_free(f);
	}
	for (collector_t *c = r->collectors, *next; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	pthread_mutex_destroy(&r->mu);
	pthread_mutex_destroy(&r->scrape_mu);
	free(r);
}

static reap_metric_registry_t *global_registry;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
	global_registry = reap_metric_registry_new();
}

static reap_metric_registry_t *registry_or_global(reap_metric_registry_t *r)
{
	if (r != NULL)
		return r;
	pthread_once(&global_once, global_init);
	return global_registry;
}

/* ---- registration ------------------------------------------------------- */

/* One allocation: the struct, nbuckets+1 counts, then the label values. */
static reap_metric_t *series_new(family_t *f, const char *const *values, uint64_t hash)
{
	size_t ncounts = f->kind == KIND_HISTOGRAM ? f->nbuckets + 1 : 0;
	size_t head = sizeof(reap_metric_t) + ncounts * sizeof(_Atomic uint64_t);
	size_t strs = 0;
	for (size_t i = 0; values != NULL && i < f->nlabels; i++)
		strs += strlen(values[i]) + 1;
	reap_metric_t *m = calloc(1, head + strs);
	if (m == NULL)
		return NULL;
	m->fam = f;
	m->kind = f->kind;
	m->hash = hash;
	m->inert = values == NULL && f->nlabels > 0;
	char *p = (char *)m + head;
	for (size_t i = 0; values != NULL && i < f->nlabels; i++) {
		size_t n = strlen(values[i]) + 1;
		memcpy(p, values[i], n);
		m->values[i] = p;
		p += n;
	}
	atomic_init(&m->v, 0); /* 0 is also the bit pattern of 0.0 */
	for (size_t i = 0; i < ncounts; i++)
		atomic_init(&m->counts[i], 0);
	return m;
}

static bool same_definition(const family_t *f, kind_t kind, const char *const *labels,
			    size_t nlabels, const double *buckets, size_t nbuckets)
{
	if (f->kind != kind || f->nlabels != nlabels || f->nbuckets != nbuckets)
		return false;
	for (size_t i = 0; i < nlabels; i++)
		if (strcmp(f->label_names[i], labels[i]) != 0)
			return false;
	for (size_t i = 0; i < nbuckets; i++)
		if (f->bounds[i] != buckets[i])
			return false;
	return true;
}

static family_t *family_new(kind_t kind, const char *name, const char *help,
			    const char *const *labels, size_t nlabels, const double *buckets,
			    size_t nbuckets)
{
	family_t *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return NULL;
	pthread_mutex_init(&f->mu, NULL);
	f->kind = kind;
	f->nlabels = nlabels;
	f->nbuckets = nbuckets;
	if (nbuckets > 0)
		memcpy(f->bounds, buckets, nbuckets * sizeof(double));
	atomic_init(&f->nchildren, 0);
	f->name = strdup(name);
	f->help = strdup(help != NULL ? help : "");
	if (f->name == NULL || f->help == NULL)
		goto fail;
	for (size_t i = 0; i < nlabels; i++)
		if ((f->label_names[i] = strdup(labels[i])) == NULL)
			goto fail;
	if (nlabels > 0) {
		f->table = calloc(TABLE_SLOTS, sizeof(*f->table));
		f->children = calloc(REAP_METRIC_MAX_CHILDREN, sizeof(*f->children));
		if (f->table == NULL || f->children == NULL)
			goto fail;
		for (size_t i = 0; i < TABLE_SLOTS; i++)
			atomic_init(&f->table[i], NULL);
	}
	if ((f->root = series_new(f, NULL, 0)) == NULL)
		goto fail;
	return f;
fail:
	family_free(f);
	return NULL;
}

static reap_metric_t *register_family(reap_metric_registry_t *r, kind_t kind, const char *name,
				      const char *help, const double *buckets, size_t nbuckets,
				      va_list ap)
{
	const char *labels[REAP_METRIC_MAX_LABELS];
	size_t nlabels = 0;
	const char *why = NULL;
	reap_metric_t *out = NULL;
	const char *l;

	while ((l = va_arg(ap, const char *)) != NULL) {
		if (nlabels == REAP_METRIC_MAX_LABELS) {
			why = "too many labels";
			goto out;
		}
		labels[nlabels++] = l;
	}
	if (!valid_name(name, false)) {
		why = "invalid metric name";
		goto out;
	}
	for (size_t i = 0; i < nlabels; i++) {
		if (!valid_name(labels[i], true) ||
		    (kind == KIND_HISTOGRAM && strcmp(labels[i], "le") == 0)) {
			why = "invalid label name";
			goto out;
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(labels[i], labels[j]) == 0) {
				why = "duplicate label name";
				goto out;
			}
	}
	if (nbuckets > REAP_METRIC_MAX_BUCKETS || (nbuckets > 0 && buckets == NULL)) {
		why = "too many buckets";
		goto out;
	}
	for (size_t i = 0; i < nbuckets; i++)
		if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
			why = "buckets must be finite and increasing";
			goto out;
		}
	if ((r = registry_or_global(r)) == NULL) {
		why = "out of memory";
		goto out;
	}

	pthread_mutex_lock(&r->mu);
	family_t *f;
	for (f = r->head; f != NULL; f = f->next)
		if (strcmp(f->name, name) == 0)
			break;
	if (f != NULL) {
		if (same_definition(f, kind, labels, nlabels, buckets, nbuckets))
			out = f->root;
		else
			why = "registered before with another definition";
	} else if ((f = family_new(kind, name, help, labels, nlabels, buckets, nbuckets)) == NULL) {
		why = "out of memory";
	} else {
		*r->tail = f;
		r->tail = &f->next;
		out = f->root;
	}
	pthread_mutex_unlock(&r->mu);
out:
	if (out == NULL)
		REAP_WARN("metric_register_failed", "name=\"%s\" reason=\"%s\"",
			  name != NULL ? name : "", why);
	return out;
}

reap_metric_t *reap_metric_counter(reap_metric_registry_t *r, const char *name, const char *help,
				   ...)
{
	va_list ap;
	va_start(ap, help);
	reap_metric_t *m = register_family(r, KIND_COUNTER, name, help, NULL, 0, ap);
	va_end(ap);
	return m;
}

reap_metric_t *reap_metric_gauge(reap_metric_registry_t *r, const char *name, const char *help,
				 ...)
{
	va_list ap;
	va_start(ap, help);
	reap_metric_t *m = register_family(r, KIND_GAUGE, name, help, NULL, 0, ap);
	va_end(ap);
	return m;
}

reap_metric_t *reap_metric_histogram(reap_metric_registry_t *r, const char *name,
				     const char *help, const double *buckets, size_t nbuckets,
				     ...)
{
	va_list ap;
	va_start(ap, nbuckets);
	reap_metric_t *m = register_family(r, KIND_HISTOGRAM, name, help, buckets, nbuckets, ap);
	va_end(ap);
	return m;
}

/* ---- children ----------------------------------------------------------- */

static bool values_eq(const reap_metric_t *c, const char *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(c->values[i], v[i]) != 0)
			return false;
	return true;
}

/* The child for v, or NULL; lock-free. *slot receives the empty slot that ended the probe. */
static reap_metric_t *probe(family_t *f, const char *const *v, uint64_t h, size_t *slot)
{
	for (size_t i = h & (TABLE_SLOTS - 1);; i = (i + 1) & (TABLE_SLOTS - 1)) {
		reap_metric_t *c = atomic_load_explicit(&f->table[i], memory_order_acquire);
		if (c == NULL) {
			*slot = i;
			return NULL;
		}
		if (c->hash == h && values_eq(c, v, f->nlabels))
			return c;
	}
}

static reap_metric_t *child_get(family_t *f, const char *const *v, bool may_fold)
{
	uint64_t h = hash_values(v, f->nlabels);
	size_t slot;
	reap_metric_t *c = probe(f, v, h, &slot);
	if (c != NULL)
		return c;

	pthread_mutex_lock(&f->mu);
	c = probe(f, v, h, &slot); /* another thread may have made it meanwhile */
	if (c == NULL) {
		size_t n = atomic_load_explicit(&f->nchildren, memory_order_relaxed);
		/* The last place is kept for the "other" child. */
		if (n + (may_fold ? 1 : 0) >= REAP_METRIC_MAX_CHILDREN) {
			pthread_mutex_unlock(&f->mu);
			const char *other[REAP_METRIC_MAX_LABELS];
			for (size_t i = 0; i < f->nlabels; i++)
				other[i] = "other";
			return may_fold ? child_get(f, other, false) : NULL;
		}
		if ((c = series_new(f, v, h)) != NULL) {
			f->children[n] = c;
			atomic_store_explicit(&f->nchildren, n + 1, memory_order_release);
			atomic_store_explicit(&f->table[slot], c, memory_order_release);
		}
	}
	pthread_mutex_unlock(&f->mu);
	return c;
}

reap_metric_t *reap_metric_labelsv(reap_metric_t *m, const char *const *values)
{
	if (m == NULL || !m->inert || values == NULL)
		return NULL;
	family_t *f = m->fam;
	char bufs[REAP_METRIC_MAX_LABELS][REAP_METRIC_MAX_VALUE + 1];
	const char *v[REAP_METRIC_MAX_LABELS];
	bool is_other = true;
	for (size_t i = 0; i < f->nlabels; i++) {
		v[i] = normalise_value(values[i], bufs[i]);
		is_other = is_other && strcmp(v[i], "other") == 0;
	}
	return child_get(f, v, !is_other);
}

reap_metric_t *reap_metric_labels(reap_metric_t *m, ...)
{
	if (m == NULL || !m->inert)
		return NULL;
	const char *v[REAP_METRIC_MAX_LABELS];
	va_list ap;
	va_start(ap, m);
	for (size_t i = 0; i < m->fam->nlabels; i++)
		v[i] = va_arg(ap, const char *);
	va_end(ap);
	return reap_metric_labelsv(m, v);
}

void reap_metric_zero_children(reap_metric_t *m)
{
	if (m == NULL || m->kind != KIND_GAUGE)
		return;
	family_t *f = m->fam;
	if (f->nlabels == 0) {
		atomic_store_explicit(&f->root->v, 0, memory_order_relaxed);
		return;
	}
	size_t n = atomic_load_explicit(&f->nchildren, memory_order_acquire);
	for (size_t i = 0; i < n; i++)
		atomic_store_explicit(&f->children[i]->v, 0, memory_order_relaxed);
}

/* ---- updates ------------------------------------------------------------ */

void reap_metric_add(reap_metric_t *m, uint64_t n)
{
	if (m == NULL || m->inert)
		return;
	if (m->kind == KIND_COUNTER)
		atomic_fetch_add_explicit(&m->v, n, memory_order_relaxed);
	else if (m->kind == KIND_GAUGE)
		atomic_add_double(&m->v, (double)n);
}

void reap_metric_inc(reap_metric_t *m)
{
	reap_metric_add(m, 1);
}

void reap_metric_set(reap_metric_t *m, double v)
{
	if (m == NULL || m->inert || m->kind != KIND_GAUGE)
		return;
	atomic_store_explicit(&m->v, double_to_bits(v), memory_order_relaxed);
}

void reap_metric_set_int(reap_metric_t *m, int64_t v)
{
	reap_metric_set(m, (double)v);
}

void reap_metric_gauge_add(reap_metric_t *m, double delta)
{
	if (m == NULL || m->inert || m->kind != KIND_GAUGE)
		return;
	atomic_add_double(&m->v, delta);
}

void reap_metric_observe(reap_metric_t *m, double v)
{
	if (m == NULL || m->inert || m->kind != KIND_HISTOGRAM || isnan(v))
		return;
	const family_t *f = m->fam;
	size_t i = 0;
	while (i < f->nbuckets && v > f->bounds[i])
		i++;
	atomic_fetch_add_explicit(&m->counts[i], 1, memory_order_relaxed);
	atomic_add_double(&m->v, v);
}

double reap_metric_value(const reap_metric_t *m)
{
	if (m == NULL)
		return 0;
	uint64_t v = atomic_load_explicit(&((reap_metric_t *)m)->v, memory_order_relaxed);
	if (m->kind == KIND_COUNTER)
		return (double)v;
	if (m->kind == KIND_GAUGE)
		return bits_to_double(v);
	return 0;
}

uint64_t reap_metric_count(const reap_metric_t *m)
{
	if (m == NULL || m->kind != KIND_HISTOGRAM)
		return 0;
	uint64_t n = 0;
	for (size_t i = 0; i <= m->fam->nbuckets; i++)
		n += atomic_load_explicit(&((reap_metric_t *)m)->counts[i], memory_order_relaxed);
	return n;
}

/* ---- collectors --------------------------------------------------------- */

int reap_metric_registry_add_collector(reap_metric_registry_t *r, reap_metric_collector_fn fn,
				       void *ctx)
{
	if ((r = registry_or_global(r)) == NULL || fn == NULL)
		return r == NULL ? REAP_E_NOMEM : REAP_E_INVALID;
	collector_t *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return REAP_E_NOMEM;
	c->fn = fn;
	c->ctx = ctx;
	pthread_mutex_lock(&r->scrape_mu);
	collector_t **p = &r->collectors;
	while (*p != NULL)
		p = &(*p)->next;
	*p = c; /* run in the order they were added */
	pthread_mutex_unlock(&r->scrape_mu);
	return REAP_OK;
}

void reap_metric_registry_remove_collector(reap_metric_registry_t *r, reap_metric_collector_fn fn,
					   void *ctx)
{
	if ((r = registry_or_global(r)) == NULL)
		return;
	pthread_mutex_lock(&r->scrape_mu);
	for (collector_t **p = &r->collectors; *p != NULL; p = &(*p)->next) {
		if ((*p)->fn == fn && (*p)->ctx == ctx) {
			collector_t *c = *p;
			*p = c->next;
			free(c);
			break;
		}
	}
	pthread_mutex_unlock(&r->scrape_mu);
}

int reap_metrics_add_collector(reap_metric_collector_fn fn, void *ctx)
{
	return reap_metric_registry_add_collector(NULL, fn, ctx);
}

void reap_metrics_remove_collector(reap_metric_collector_fn fn, void *ctx)
{
	reap_metric_registry_remove_collector(NULL, fn, ctx);
}

/* ---- rendering ---------------------------------------------------------- */

/* Integers as integers; others in the shortest form that reads back exactly. */
static void fmt_double(char buf[32], double v)
{
	if (isnan(v)) {
		strcpy(buf, "NaN");
	} else if (isinf(v)) {
		strcpy(buf, v > 0 ? "+Inf" : "-Inf");
	} else if (v == trunc(v) && fabs(v) < 9007199254740992.0) {
		snprintf(buf, 32, "%.0f", v);
	} else {
		for (int prec = 1; prec <= 17; prec++) {
			snprintf(buf, 32, "%.*g", prec, v);
			if (strtod(buf, NULL) == v)
				break;
		}
	}
}

/* HELP text escapes backslash and newline; label values also the double quote. */
static void put_escaped(FILE *o, const char *s, bool quote)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			fputs("\\\\", o);
		else if (*s == '\n')
			fputs("\\n", o);
		else if (quote && *s == '"')
			fputs("\\\"", o);
		else
			fputc(*s, o);
	}
}

/* name{labels[,le="x"]} with the braces left out when there is nothing inside. */
static void put_series(FILE *o, const family_t *f, const reap_metric_t *m, const char *suffix,
		       const char *le)
{
	fputs(f->name, o);
	fputs(suffix, o);
	if (f->nlabels == 0 && le == NULL)
		return;
	fputc('{', o);
	for (size_t i = 0; i < f->nlabels; i++) {
		fprintf(o, "%s%s=\"", i > 0 ? "," : "", f->label_names[i]);
		put_escaped(o, m->values[i], true);
		fputc('"', o);
	}
	if (le != NULL)
		fprintf(o, "%sle=\"%s\"", f->nlabels > 0 ? "," : "", le);
	fputc('}', o);
}

static void render_series(FILE *o, const family_t *f, reap_metric_t *m)
{
	char num[32];
	uint64_t v = atomic_load_explicit(&m->v, memory_order_relaxed);
	switch (f->kind) {
	case KIND_COUNTER:
		put_series(o, f, m, "", NULL);
		fprintf(o, " %llu\n", (unsigned long long)v);
		break;
	case KIND_GAUGE:
		put_series(o, f, m, "", NULL);
		fmt_double(num, bits_to_double(v));
		fprintf(o, " %s\n", num);
		break;
	case KIND_HISTOGRAM: {
		uint64_t cum = 0;
		for (size_t i = 0; i <= f->nbuckets; i++) {
			cum += atomic_load_explicit(&m->counts[i], memory_order_relaxed);
			if (i < f->nbuckets)
				fmt_double(num, f->bounds[i]);
			put_series(o, f, m, "_bucket", i < f->nbuckets ? num : "+Inf");
			fprintf(o, " %llu\n", (unsigned long long)cum);
		}
		put_series(o, f, m, "_sum", NULL);
		fmt_double(num, bits_to_double(v));
		fprintf(o, " %s\n", num);
		put_series(o, f, m, "_count", NULL);
		fprintf(o, " %llu\n", (unsigned long long)cum);
		break;
	}
	default:
		break;
	}
}

static void render_family(FILE *o, family_t *f)
{
	static const char *const type_names[] = {"counter", "gauge", "histogram"};
	fprintf(o, "# HELP %s ", f->name);
	put_escaped(o, f->help, false);
	fprintf(o, "\n# TYPE %s %s\n", f->name, type_names[f->kind]);
	if (f->nlabels == 0) {
		render_series(o, f, f->root);
		return;
	}
	size_t n = atomic_load_explicit(&f->nchildren, memory_order_acquire);
	for (size_t i = 0; i < n; i++)
		render_series(o, f, f->children[i]);
}

int reap_metric_registry_render(reap_metric_registry_t *r, char **out, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	int err = REAP_E_NOMEM;
	FILE *o = NULL;

	*out = NULL;
	*len = 0;
	if ((r = registry_or_global(r)) == NULL)
		return REAP_E_NOMEM;
	pthread_mutex_lock(&r->scrape_mu);
	for (collector_t *c = r->collectors; c != NULL; c = c->next)
		c->fn(c->ctx);
	if ((o = open_memstream(&buf, &n)) == NULL)
		goto out;
	pthread_mutex_lock(&r->mu);
	for (family_t *f = r->head; f != NULL; f = f->next)
		render_family(o, f);
	pthread_mutex_unlock(&r->mu);
	bool failed = ferror(o) != 0;
	if (fclose(o) != 0 || failed) {
		free(buf);
		goto out;
	}
	*out = buf;
	*len = n;
	err = REAP_OK;
out:
	pthread_mutex_unlock(&r->scrape_mu);
	return err;
}
