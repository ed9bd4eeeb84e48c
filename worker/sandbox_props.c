/*
 * sandbox_props.c - an action's sandbox requests: the "reap-" platform
 * properties that narrow the worker's limits for one action and ask for
 * loopback networking.
 *
 * The scheduler never matches "reap-" properties against worker offers
 * (SCHED_SANDBOX_PREFIX): every worker's sandbox handles them itself, here.
 * They can only make the sandbox tighter, never looser: the effective limit
 * is the smaller of the worker's and the action's (a worker limit of 0 =
 * none, so any request narrows it), and loopback networking is granted only
 * when the lease says the instance's policy allows it. An unknown "reap-"
 * name is refused rather than ignored, so a misspelt limit fails loudly
 * instead of running the action with a looser one.
 *
 * Both the Action's platform and the (deprecated) Command's are read: a
 * limit given more than once takes the smallest value; reap-network given
 * twice must agree.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "worker/worker_int.h"

#define PREFIX "reap-"
#define NETWORK "reap-network"
#define MIN_MEMORY ((uint64_t)32 << 20) /* below this bwrap itself cannot start under RLIMIT_AS */

typedef enum { SIZE, COUNT } value_kind_t;

/* The limits a property may narrow, by name. */
static const struct {
	const char *name;
	value_kind_t kind;
	size_t offset; /* of the field in wrk_limits_t */
	uint64_t min;  /* smallest value accepted */
} limit_props[] = {
	{"reap-limit-cpu-seconds", COUNT, offsetof(wrk_limits_t, cpu_seconds), 1},
	{"reap-limit-memory", SIZE, offsetof(wrk_limits_t, memory_bytes), MIN_MEMORY},
	{"reap-limit-disk", SIZE, offsetof(wrk_limits_t, disk_bytes), 1},
	{"reap-limit-tmp", SIZE, offsetof(wrk_limits_t, tmp_bytes), 4096},
	{"reap-limit-pids", COUNT, offsetof(wrk_limits_t, pids), 1},
	{"reap-limit-output", SIZE, offsetof(wrk_limits_t, output_bytes), 1},
};

/* A decimal count: digits only, no sign, no overflow. */
static int parse_count(const char *s, uint64_t *out)
{
	char *end = NULL;
	if (s == NULL || *s < '0' || *s > '9')
		return REAP_E_INVALID;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return REAP_E_INVALID;
	*out = v;
	return REAP_OK;
}

/* Fold one property into out (the limits being narrowed) and *net (the network request). */
static int apply(const WRK_RE(Platform__Property) *p, wrk_limits_t *out, const char **net,
		 reap_errbuf_t *eb)
{
	const char *name = p->name != NULL ? p->name : "", *value = p->value != NULL ? p->value : "";

	if (strncmp(name, PREFIX, strlen(PREFIX)) != 0)
		return REAP_OK; /* matched by the scheduler, not the sandbox's business */
	if (strcmp(name, NETWORK) == 0) {
		if (strcmp(value, "loopback") != 0 && strcmp(value, "none") != 0)
			return reap_errf(eb, REAP_E_INVALID,
					 "platform property %s=\"%.64s\": the value must be \"none\" "
					 "or \"loopback\"", name, value);
		if (*net != NULL && strcmp(*net, value) != 0)
			return reap_errf(eb, REAP_E_INVALID,
					 "platform property %s is given twice with different values "
					 "(\"%s\" and \"%s\")", name, *net, value);
		*net = value;
		return REAP_OK;
	}
	for (size_t i = 0; i < sizeof(limit_props) / sizeof(limit_props[0]); i++) {
		uint64_t v = 0, *field;
		if (strcmp(name, limit_props[i].name) != 0)
			continue;
		int err = limit_props[i].kind == SIZE ? reap_parse_size(value, &v)
						      : parse_count(value, &v);
		if (err != REAP_OK)
			return reap_errf(eb, REAP_E_INVALID,
					 "platform property %s=\"%.64s\": %s", name, value,
					 limit_props[i].kind == SIZE
						 ? "not a size such as \"512MiB\", \"2G\" or \"1048576\""
						 : "not a whole number");
		if (v < limit_props[i].min)
			return reap_errf(eb, REAP_E_INVALID,
					 "platform property %s=\"%.64s\": must be at least %llu", name,
					 value, (unsigned long long)limit_props[i].min);
		field = (uint64_t *)(void *)((char *)out + limit_props[i].offset);
		if (*field == 0 || v < *field)
			*field = v; /* the request narrows; 0 (none) narrows to anything */
		return REAP_OK;
	}
	return reap_errf(eb, REAP_E_INVALID,
			 "unknown sandbox platform property \"%.64s\" (known: reap-network, "
			 "reap-limit-cpu-seconds, reap-limit-memory, reap-limit-disk, reap-limit-tmp, "
			 "reap-limit-pids, reap-limit-output)", name);
}

int wrk_sandbox_for_action(const wrk_sandbox_config_t *base, const WRK_RE(Platform) *action_pf,
			   const WRK_RE(Platform) *command_pf, bool allow_loopback,
			   wrk_sandbox_config_t *out, reap_errbuf_t *eb)
{
	const WRK_RE(Platform) *pfs[2] = {action_pf, command_pf};
	const char *net = NULL;
	int err;

	*out = *base;
	out->loopback_network = false;
	for (size_t k = 0; k < 2; k++) {
		if (pfs[k] == NULL)
			continue;
		for (size_t i = 0; i < pfs[k]->n_properties; i++)
			if (pfs[k]->properties[i] != NULL &&
			    (err = apply(pfs[k]->properties[i], &out->limits, &net, eb)) != REAP_OK)
				return err;
	}
	if (net != NULL && strcmp(net, "loopback") == 0) {
		if (!allow_loopback)
			return reap_errf(eb, REAP_E_PRECONDITION,
					 "the action asks for reap-network=loopback, but this "
					 "instance's policy does not allow loopback networking");
		out->loopback_network = true;
	}
	return REAP_OK;
}
