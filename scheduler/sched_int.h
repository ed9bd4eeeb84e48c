/*
 * sched_int.h - private to scheduler/: operations, waiters, pollers and the
 * state they live in. Everything here is guarded by sched_t.mu.
 */
#ifndef REAP_SCHEDULER_SCHED_INT_H
#define REAP_SCHEDULER_SCHED_INT_H

#include <pthread.h>
#include <stdbool.h>

#include "cas/cas_int.h"
#include "google/longrunning/operations.pb-c.h"
#include "reap/v1/worker.pb-c.h"
#include "scheduler/sched.h"

#define SCHED_NAME_LEN 37 /* a UUID and its NUL */
/* Action + Command at most this large travel inside the lease (per queued op memory). */
#define SCHED_INLINE_MAX ((size_t)32 << 10)

typedef enum {
	SCHED_QUEUED = 2,    /* ExecutionStage values */
	SCHED_EXECUTING = 3,
	SCHED_COMPLETED = 4,
} sched_stage_t;

typedef struct sched_op sched_op_t;
typedef struct sched_waiter sched_waiter_t;
typedef struct sched_poller sched_poller_t;

/* An Execute or WaitExecution stream waiting on an operation (lives in the call's state). */
struct sched_waiter {
	sched_waiter_t *next, *prev;
	rpc_call_t *call;
	sched_op_t *op;
	bool linked;
};

/* A worker's Poll call waiting for work (lives in the call's state). */
struct sched_poller {
	sched_poller_t *next, *prev;
	rpc_call_t *call;
	char **offer;         /* "name=value" properties */
	size_t n_offer;
	char worker[128];
	auth_identity_t id; /* its credential: which instances it may take work from */
	char *offer_key;    /* sched_offer_key of offer (owned) */
	char toolchain[REAP_INSTANCE_MAX + 8];
	int64_t deadline_ms;
	char lease_id[SCHED_NAME_LEN]; /* set when an operation was leased to this poll */
	bool delivered;       /* the lease went out in the response */
	bool linked;
};

struct sched_op {
	char name[SCHED_NAME_LEN];
	char *instance;
	reap_digest_t action;
	RE(Platform) *platform;  /* what the action asks for (owned; may be NULL) */
	int32_t priority;
	uint64_t seq;            /* arrival order among equal priorities */
	sched_stage_t stage;
	int attempts;            /* leases handed out */
	bool cancel_requested;
	bool do_not_cache;       /* from the Action as read from the CAS at Execute */
	/* The Action and Command blobs as read at Execute, sent with the lease
	 * (NULL when larger than SCHED_INLINE_MAX together); freed at completion. */
	uint8_t *action_blob, *command_blob;
	size_t action_len, command_len;
	/* lease, while EXECUTING */
	char lease_id[SCHED_NAME_LEN];
	char worker[128];
	char toolchain[REAP_INSTANCE_MAX + 8]; /* the leasing worker's, for the result stamp */
	char *offer_key;                       /* and its platform (owned) */
	int64_t lease_deadline_ms;
	/* result, once COMPLETED: a packed ExecuteResponse */
	uint8_t *response;
	size_t response_len;
	int64_t done_at_ms;
	/* links */
	sched_op_t *all_next;    /* every operation */
	sched_op_t *q_next;      /* queued, by (priority, seq) */
	sched_waiter_t *waiters;
};

/* A worker recently seen polling: its platform, for "can anyone run this?". */
typedef struct sched_worker {
	struct sched_worker *next;
	char name[128];
	char **offer;
	size_t n_offer;
	char *offer_key; /* owned */
	char toolchain[REAP_INSTANCE_MAX + 8];
	int64_t toolchain_since_ms; /* when this worker first showed this toolchain */
	int64_t seen_ms;
} sched_worker_t;

struct sched {
	cas_service_t *cas;
	cas_store_t *store;
	sched_config_t cfg;
	rpc_method_t methods[16];
	size_t n_methods;

	pthread_mutex_t mu;
	pthread_cond_t cv;      /* wakes the timer thread early (stop) */
	pthread_t timer;
	bool stopping;
	bool draining;          /* polls are answered at once */
	uint64_t next_seq;
	sched_op_t *ops;        /* all operations */
	sched_op_t *queue;      /* queued operations, best first */
	sched_poller_t *pollers;
	sched_worker_t *workers;
};

/* ---- sched.c (caller holds mu unless noted) ---- */

int64_t sched_now_ms(void);
/** A fresh random UUID string. */
void sched_uuid(char out[SCHED_NAME_LEN]);
sched_op_t *sched_find_op(sched_t *s, const char *name);
/** The in-flight (not completed) operation for instance/action, or NULL. */
sched_op_t *sched_find_inflight(sched_t *s, const char *instance, const reap_digest_t *action);
/**
 * Create, queue and dispatch an operation; takes ownership of platform and
 * of the blobs (the Action and Command bytes for the lease; NULL, or freed
 * at once, when they are larger than SCHED_INLINE_MAX together).
 */
sched_op_t *sched_op_create(sched_t *s, const char *instance, const reap_digest_t *action,
			    RE(Platform) *platform, int32_t priority, bool do_not_cache,
			    uint8_t *action_blob, size_t action_len, uint8_t *command_blob,
			    size_t command_len);
/** Finish op with a packed ExecuteResponse (copied) and wake its waiters. */
void sched_op_complete(sched_t *s, sched_op_t *op, const RE(ExecuteResponse) *resp);
/** Finish op with a status only (no result). */
void sched_op_fail(sched_t *s, sched_op_t *op, int err, const char *msg);
/** Wake every waiter of op. */
void sched_op_notify(sched_t *s, sched_op_t *op);
/** Try to hand queued operations to waiting pollers. */
void sched_dispatch(sched_t *s);
/** Lease op to a worker: EXECUTING, a new lease id. */
void sched_op_lease(sched_t *s, sched_op_t *op, const sched_poller_t *p);
/** Put an EXECUTING op back in the queue (or fail it past max_attempts). */
void sched_op_requeue(sched_t *s, sched_op_t *op, const char *why);
/** The executing op holding lease_id, or NULL. */
sched_op_t *sched_find_lease(sched_t *s, const char *lease_id);
/** Remember a polling worker's platform and toolchain. */
void sched_worker_seen(sched_t *s, const char *name, char **offer, size_t n_offer,
		       const char *offer_key, const char *toolchain);
/** Is there a live worker, and can any live worker run platform? */
void sched_feasible(sched_t *s, const RE(Platform) *platform, bool *any_worker, bool *able);

/* ---- toolchain.c ---- */

/** The canonical form of a platform offer: sorted "name=value" lines (malloc'd). */
char *sched_offer_key(char *const *offer, size_t n);
/** The current toolchain of the platform offer_key among live workers, or NULL. Holds mu. */
const char *sched_toolchain_current(sched_t *s, const char *offer_key);
/** May a worker with toolchain take work / may its results be served? Holds mu. */
bool sched_toolchain_ok(sched_t *s, const char *offer_key, const char *toolchain);
/** Is a cached result's toolchain stamp (if any) still current? Takes mu. (cas_result_check_fn) */
bool sched_result_current(void *s, const RE(ActionResult) *ar);
/** cas_ac_write with ar stamped with toolchain and offer_key (ar is restored). */
int sched_stamp_write(sched_t *s, const char *instance, const reap_digest_t *ad,
		      RE(ActionResult) *ar, const char *toolchain, const char *offer_key,
		      reap_digest_t **missing, size_t *n_missing, reap_errbuf_t *eb);

void sched_waiter_link(sched_op_t *op, sched_waiter_t *w);
void sched_waiter_unlink(sched_waiter_t *w);
void sched_poller_link(sched_t *s, sched_poller_t *p);
void sched_poller_unlink(sched_t *s, sched_poller_t *p);

/** Fill an Operation for op's current state; buffers in ob live until sched_opmsg_destroy. */
typedef struct sched_opmsg {
	Google__Longrunning__Operation op;
	Google__Protobuf__Any meta_any, resp_any;
	RE(ExecuteOperationMetadata) meta;
	RE(Digest) digest;
	char hex[65];
	uint8_t *meta_buf;
	char name[SCHED_NAME_LEN];
} sched_opmsg_t;
int sched_opmsg_init(sched_opmsg_t *m, const sched_op_t *op);
/** An already-finished operation that never entered the table (cache hit, refusal). */
int sched_opmsg_done(sched_opmsg_t *m, const char *name, const reap_digest_t *action,
		     const RE(ExecuteResponse) *resp, uint8_t **resp_buf);
void sched_opmsg_destroy(sched_opmsg_t *m);

/* Method tables. */
void sched_exec_methods(sched_t *s);
void sched_worker_methods(sched_t *s);
void sched_add_method(sched_t *s, const rpc_method_t *m);

#endif
