/*
 * instance.h - REAPI instance names: validation and the configured set.
 *
 * An instance name is a tenant. It is '/'-separated segments; the spec
 * reserves some segment words for resource names, so they may not appear,
 * and reap also refuses empty, "." and ".." segments and control characters
 * so a name can never be confused with a path or a resource-name part.
 */
#ifndef REAP_COMMON_INSTANCE_H
#define REAP_COMMON_INSTANCE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

#define REAP_INSTANCE_MAX 255

/** 0 when name (len bytes) is a well-formed instance name, else REAP_E_INVALID with the reason. */
int reap_instance_check(const char *name, size_t len, reap_errbuf_t *eb);

/** True when seg (len bytes) is a word reserved by the REAPI resource-name grammar. */
bool reap_instance_reserved(const char *seg, size_t len);

/**
 * The set of instance names a server accepts: exact names, prefixes written
 * "team/" followed by "*" (the name itself and everything below), or "*"
 * alone for every valid name.
 */
typedef struct reap_instances reap_instances_t;

/** New set from patterns; NULL on allocation failure or an invalid pattern (eb says which). */
reap_instances_t *reap_instances_new(const char *const *patterns, size_t n, reap_errbuf_t *eb);
void reap_instances_free(reap_instances_t *set);

/**
 * 0 when name is well-formed and in the set; REAP_E_INVALID with a message
 * naming the instance otherwise (a NULL set accepts every valid name).
 */
int reap_instances_check(const reap_instances_t *set, const char *name, size_t len,
			 reap_errbuf_t *eb);

#endif
