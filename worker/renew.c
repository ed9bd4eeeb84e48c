/*
 * renew.c - each slot's renew thread: while the slot runs an action it
 * calls WorkerQueue.Renew every third of the lease TTL, passes the
 * scheduler's "cancelled" on to the action's kill switch, and declares the
 * lease lost (NOT_FOUND, PERMISSION_DENIED, or no successful renew for a
 * whole TTL), which kills the action and keeps it from being completed.
 * The thread is started with the slot's first lease and kept for the next.
 */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "common/log.h"
#include "google/rpc/code.pb-c.h"
#include "worker/worker_int.h"

#define WQ "/reap.v1.WorkerQueue/"

/* Renew lr until its owner says done or the lease is lost (runs on the slot's renew thread). */
static void renew_lease(lease_run_t *lr)
{
	wrk_daemon_t *d = lr->slot->d;
	int64_t every = lr->ttl_ms / 3 > 50 ? lr->ttl_ms / 3 : 50, last_ok = wrk_mono_ms();
	Reap__V1__RenewRequest req = REAP__V1__RENEW_REQUEST__INIT;

	req.lease_id = lr->lease->lease_id;
	req.worker_name = (char *)d->cfg.name;
	pthread_mutex_lock(&lr->mu);
	while (!lr->done) {
		struct timespec until = wrk_realtime_in(every);
		if (pthread_cond_timedwait(&lr->cv, &lr->mu, &until) != ETIMEDOUT || lr->done)
			continue;
		pthread_mutex_unlock(&lr->mu);

		Reap__V1__RenewResponse *resp = NULL;
		rpc_status_t st;
		int rc = rpc_unary(d->sched_ch, WQ "Renew", &req.base,
				   &reap__v1__renew_response__descriptor, (ProtobufCMessage **)&resp,
				   &st, (int)every);
		bool gone = false;
		if (rc == REAP_OK && st.code == 0) {
			last_ok = wrk_mono_ms();
			if (resp->cancelled && !__atomic_exchange_n(&lr->server_cancelled, true,
								     __ATOMIC_ACQ_REL)) {
				REAP_INFO("action cancelled", "lease=%s", lr->lease->lease_id);
				__atomic_store_n(&lr->slot->cancel, true, __ATOMIC_RELEASE);
			}
		} else if (rc == REAP_OK && (st.code == GOOGLE__RPC__CODE__NOT_FOUND ||
					     st.code == GOOGLE__RPC__CODE__PERMISSION_DENIED)) {
			gone = true;
		} else if (wrk_mono_ms() - last_ok > lr->ttl_ms) {
			gone = true;
		}
		if (gone) {
			REAP_WARN("lease lost; abandoning the action", "lease=%s code=%d msg=\"%s\"",
				  lr->lease->lease_id, st.code, st.msg);
			__atomic_store_n(&lr->lost, true, __ATOMIC_RELEASE);
			__atomic_store_n(&lr->slot->cancel, true, __ATOMIC_RELEASE);
		}
		if (resp != NULL)
			protobuf_c_message_free_unpacked(&resp->base, NULL);
		rpc_status_destroy(&st);
		pthread_mutex_lock(&lr->mu);
		if (gone)
			break;
	}
	pthread_mutex_unlock(&lr->mu);
}

/* The slot's renew thread: renews s->run whenever there is one, until the slot ends. */
static void *renewer_main(void *arg)
{
	slot_t *s = arg;

	pthread_mutex_lock(&s->rmu);
	for (;;) {
		while (s->run == NULL && !s->renewer_quit)
			pthread_cond_wait(&s->rcv, &s->rmu);
		if (s->run == NULL)
			break;
		lease_run_t *lr = s->run;
		pthread_mutex_unlock(&s->rmu);
		renew_lease(lr);
		pthread_mutex_lock(&s->rmu);
		s->run = NULL; /* the owner may free lr once it sees this */
		pthread_cond_broadcast(&s->rcv);
	}
	pthread_mutex_unlock(&s->rmu);
	return NULL;
}

bool wrk_renew_start(lease_run_t *lr)
{
	slot_t *s = lr->slot;

	if (!s->renewer_started) {
		if (pthread_create(&s->renewer, NULL, renewer_main, s) != 0)
			return false;
		s->renewer_started = true;
	}
	pthread_mutex_lock(&s->rmu);
	s->run = lr;
	pthread_cond_broadcast(&s->rcv);
	pthread_mutex_unlock(&s->rmu);
	return true;
}

void wrk_renew_stop(lease_run_t *lr)
{
	slot_t *s = lr->slot;

	if (!lr->renewing)
		return;
	pthread_mutex_lock(&lr->mu);
	lr->done = true;
	pthread_cond_signal(&lr->cv);
	pthread_mutex_unlock(&lr->mu);
	pthread_mutex_lock(&s->rmu);
	while (s->run == lr)
		pthread_cond_wait(&s->rcv, &s->rmu);
	pthread_mutex_unlock(&s->rmu);
	lr->renewing = false;
}

void wrk_renew_end(slot_t *s)
{
	if (!s->renewer_started)
		return;
	pthread_mutex_lock(&s->rmu);
	s->renewer_quit = true;
	pthread_cond_broadcast(&s->rcv);
	pthread_mutex_unlock(&s->rmu);
	pthread_join(s->renewer, NULL);
	s->renewer_started = false;
}
