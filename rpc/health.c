/*
 * health.c - grpc.health.v1.Health: Check and Watch, per service name and
 * overall (""), so load balancers, orchestrators and grpcurl can ask whether
 * the server takes work. Watch streams hold no thread: a change wakes every
 * watcher, which sends the new status.
 *
 * Lifecycle: services are NOT_SERVING while the server starts
 * (rpc_health_set_server(h, s, false)), SERVING once it is ready, and
 * NOT_SERVING for good once it drains (rpc_health_shutdown). A drain ends
 * the Watch streams after they delivered NOT_SERVING: they would otherwise
 * keep a graceful shutdown waiting for its whole grace period.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"

#define SVC "/grpc.health.v1.Health/"
#define MAX_SERVICES 32

typedef struct watcher {
	struct watcher *next, *prev;
	rpc_call_t *call;
	char *service;
	int last_sent; /* status last streamed; 0 = none */
	bool linked;
} watcher_t;

struct rpc_health {
	pthread_mutex_t mu;
	struct {
		char *name;
		bool serving;
	} svc[MAX_SERVICES];
	size_t n;
	watcher_t *watchers;
	bool draining; /* rpc_health_shutdown: all NOT_SERVING, sets ignored */
	rpc_method_t methods[2];
};

/* Status of service, with mu held. */
static int status_of(const rpc_health_t *h, const char *service)
{
	if (h->draining)
		return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	for (size_t i = 0; i < h->n; i++)
		if (strcmp(h->svc[i].name, service) == 0)
			return h->svc[i].serving
				       ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
				       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
}

void rpc_health_set(rpc_health_t *h, const char *service, bool serving)
{
	pthread_mutex_lock(&h->mu);
	if (h->draining) {
		pthread_mutex_unlock(&h->mu);
		return;
	}
	size_t i;
	for (i = 0; i < h->n; i++)
		if (strcmp(h->svc[i].name, service) == 0)
			break;
	if (i == h->n && h->n < MAX_SERVICES && (h->svc[i].name = strdup(service)) != NULL)
		h->n++;
	if (i < h->n)
		h->svc[i].serving = serving;
	for (watcher_t *w = h->watchers; w != NULL; w = w->next)
		rpc_call_wake(w->call);
	pthread_mutex_unlock(&h->mu);
}

void rpc_health_set_all(rpc_health_t *h, bool serving)
{
	pthread_mutex_lock(&h->mu);
	if (!h->draining)
		for (size_t i = 0; i < h->n; i++)
			h->svc[i].serving = serving;
	for (watcher_t *w = h->watchers; w != NULL; w = w->next)
		rpc_call_wake(w->call);
	pthread_mutex_unlock(&h->mu);
}

typedef struct {
	rpc_health_t *h;
	bool serving;
} set_server_t;

static void set_one(void *ctx, const char *name)
{
	set_server_t *a = ctx;
	rpc_health_set(a->h, name, a->serving);
}

void rpc_health_set_server(rpc_health_t *h, const rpc_server_t *s, bool serving)
{
	set_server_t a = {h, serving};
	rpc_server_each_service(s, set_one, &a);
	rpc_health_set(h, "", serving);
}

void rpc_health_shutdown(rpc_health_t *h)
{
	pthread_mutex_lock(&h->mu);
	h->draining = true;
	for (size_t i = 0; i < h->n; i++)
		h->svc[i].serving = false;
	for (watcher_t *w = h->watchers; w != NULL; w = w->next)
		rpc_call_wake(w->call);
	pthread_mutex_unlock(&h->mu);
}

static void check(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
	rpc_health_t *h = rpc_call_ctx(call);
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	pthread_mutex_lock(&h->mu);
	resp.status = status_of(h, req->service);
	pthread_mutex_unlock(&h->mu);
	if (resp.status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN)
		rpc_call_finish(call, NULL, REAP_E_NOT_FOUND, "unknown service");
	else
		rpc_call_finish(call, &resp.base, REAP_OK, NULL);
}

static void watch_unlink(rpc_health_t *h, watcher_t *w)
{
	if (!w->linked)
		return;
	if (w->prev != NULL)
		w->prev->next = w->next;
	else
		h->watchers = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	w->linked = false;
}

/* Send the status when it changed, else wait. Holds mu. */
static void watch_step(rpc_call_t *call, rpc_health_t *h, watcher_t *w)
{
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	if (rpc_call_cancelled(call)) {
		watch_unlink(h, w);
		rpc_call_finish(call, NULL, REAP_E_CANCELLED, NULL);
		return;
	}
	resp.status = status_of(h, w->service);
	if ((int)resp.status == w->last_sent) {
		if (h->draining) {
			/* NOT_SERVING went out: let the shutdown proceed. */
			watch_unlink(h, w);
			rpc_call_finish(call, NULL, REAP_OK, NULL);
			return;
		}
		rpc_call_defer(call);
		return;
	}
	w->last_sent = (int)resp.status;
	rpc_call_send(call, &resp.base);
}

static void watch(rpc_call_t *call, void *state, const ProtobufCMessage *m)
{
	const Grpc__Health__V1__HealthCheckRequest *req = (const void *)m;
	rpc_health_t *h = rpc_call_ctx(call);
	watcher_t *w = state;
	w->call = call;
	if ((w->service = strdup(req->service)) == NULL) {
		rpc_call_finish(call, NULL, REAP_E_NOMEM, NULL);
		return;
	}
	pthread_mutex_lock(&h->mu);
	w->next = h->watchers;
	if (h->watchers != NULL)
		h->watchers->prev = w;
	h->watchers = w;
	w->linked = true;
	watch_step(call, h, w);
	pthread_mutex_unlock(&h->mu);
}

static void watch_resume(rpc_call_t *call, void *state)
{
	rpc_health_t *h = rpc_call_ctx(call);
	pthread_mutex_lock(&h->mu);
	watch_step(call, h, state);
	pthread_mutex_unlock(&h->mu);
}

static void watch_done(rpc_call_t *call, void *state, bool ok)
{
	rpc_health_t *h = rpc_call_ctx(call);
	watcher_t *w = state;
	pthread_mutex_lock(&h->mu);
	watch_unlink(h, w);
	pthread_mutex_unlock(&h->mu);
	free(w->service);
}

rpc_health_t *rpc_health_new(void)
{
	rpc_health_t *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	pthread_mutex_init(&h->mu, NULL);
	h->methods[0] = (rpc_method_t){.path = SVC "Check", .kind = RPC_UNARY,
				       .request = &grpc__health__v1__health_check_request__descriptor,
				       .ctx = h, .on_request = check};
	h->methods[1] = (rpc_method_t){.path = SVC "Watch", .kind = RPC_SERVER_STREAMING,
				       .request = &grpc__health__v1__health_check_request__descriptor,
				       .state_size = sizeof(watcher_t), .ctx = h, .on_request = watch,
				       .on_sent = watch_resume, .on_wake = watch_resume,
				       .on_done = watch_done};
	return h;
}

void rpc_health_free(rpc_health_t *h)
{
	if (h == NULL)
		return;
	for (size_t i = 0; i < h->n; i++)
		free(h->svc[i].name);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

const rpc_method_t *rpc_health_methods(rpc_health_t *h, size_t *n)
{
	*n = 2;
	return h->methods;
}
