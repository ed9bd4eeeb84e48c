/*
 * server.c - the gRPC server: lifecycle, completion-queue threads, shutdown.
 *
 * rpc_server_new creates the grpc_server and one completion queue
 * (registered with the server); rpc_server_add_methods registers methods;
 * rpc_server_start binds the port, starts the threads and keeps one request
 * outstanding per (thread, method), plus one per thread for method names
 * nobody registered, which are answered UNIMPLEMENTED instead of hanging
 * until the client's deadline. Every thread does nothing but pull events
 * off the shared queue and hand them to the call state machine (call.c),
 * which runs the events of one call one at a time.
 *
 * Shutdown follows gRPC's protocol: shutdown_and_notify (refuses new calls,
 * fails the outstanding requests, sends GOAWAY), wait up to the grace period
 * for its tag, cancel_all_calls if it did not come, wait for the tag and for
 * our own call objects to be freed, destroy the server, then shut down and
 * drain every queue and join the threads.
 *
 * TLS (cfg->tls) is read and checked in rpc_server_new, so a bad
 * certificate path fails before anything listens; the credentials are
 * handed to gRPC when the port is bound (tls.c).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_security.h>

#include "common/log.h"
#include "rpc/rpc_int.h"
#include "rpc/tls_int.h"

#define RPC_MAX_THREADS 1024

/* The catch-all method: no handlers, call.c answers UNIMPLEMENTED. */
static const rpc_method_t rpc_unknown_method = {.path = NULL};

static pthread_mutex_t rpc_grpc_mu = PTHREAD_MUTEX_INITIALIZER;
static int rpc_grpc_refs;

void rpc_grpc_ref(void)
{
	pthread_mutex_lock(&rpc_grpc_mu);
	if (rpc_grpc_refs++ == 0)
		grpc_init();
	pthread_mutex_unlock(&rpc_grpc_mu);
}

void rpc_grpc_unref(void)
{
	pthread_mutex_lock(&rpc_grpc_mu);
	if (--rpc_grpc_refs == 0)
		grpc_shutdown();
	pthread_mutex_unlock(&rpc_grpc_mu);
}

void rpc_server_call_begin(rpc_server_t *s)
{
	atomic_fetch_add(&s->active, 1);
}

void rpc_server_call_end(rpc_server_t *s)
{
	/* Only a shutdown waits for the count; signal it under the lock so the
	 * wakeup cannot fall between its check and its wait. */
	if (atomic_fetch_sub(&s->active, 1) == 1 && atomic_load(&s->stopping)) {
		pthread_mutex_lock(&s->mu);
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
	}
}

static void *rpc_server_thread(void *arg)
{
	rpc_server_t *s = arg;
	rpc_arena_t *arena = rpc_arena_new(); /* NULL: requests are malloc'd instead */

	rpc_thread_arena_set(arena);
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
							   NULL);
		rpc_tag_t *tag = ev.tag;

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		if (tag->kind == RPC_TAG_SHUTDOWN) {
			pthread_mutex_lock(&s->mu);
			s->shutdown_done = true;
			pthread_cond_broadcast(&s->cv);
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		rpc_call_event(tag, ev.success != 0);
	}
	rpc_thread_arena_set(NULL);
	rpc_arena_free(arena);
	return NULL;
}

/* Shut the queue down and wait until it is drained (by the threads if any). */
static void rpc_cq_stop(rpc_server_t *s)
{
	if (s->cq == NULL || s->cq_shut)
		return;
	s->cq_shut = true;
	grpc_completion_queue_shutdown(s->cq);
	if (s->nrunning > 0) {
		/* every thread sees GRPC_QUEUE_SHUTDOWN once the queue is empty */
		for (int i = 0; i < s->nrunning; i++)
			pthread_join(s->threads[i], NULL);
		s->nrunning = 0;
		return;
	}
	/* No thread: nothing was requested on it, so this is quick. */
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
							   NULL);
		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
	}
}

static int rpc_default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > RPC_MAX_THREADS ? RPC_MAX_THREADS : (int)n;
}

rpc_server_t *rpc_server_new(const rpc_server_config_t *cfg, reap_errbuf_t *eb)
{
	rpc_server_t *s = NULL;
	grpc_server_credentials *creds = NULL;
	pthread_condattr_t ca;
	grpc_arg args[4];
	grpc_channel_args cargs = {.num_args = 4, .args = args};

	if (cfg == NULL || cfg->listen == NULL || cfg->listen[0] == '\0') {
		reap_errf(eb, REAP_E_INVALID, "rpc: no listen address");
		return NULL;
	}
	if (cfg->threads < 0 || cfg->threads > RPC_MAX_THREADS || cfg->max_recv_bytes > INT_MAX ||
	    cfg->max_send_bytes > INT_MAX) {
		reap_errf(eb, REAP_E_INVALID, "rpc: threads or message limits out of range");
		return NULL;
	}
	rpc_grpc_ref();
	if (cfg->tls != NULL && rpc_tls_server_creds(cfg->tls, &creds, eb) != REAP_OK)
		goto fail;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto nomem;
	s->listen = strdup(cfg->listen);
	s->nthreads = cfg->threads ? cfg->threads : rpc_default_threads();
	s->threads = calloc((size_t)s->nthreads, sizeof(*s->threads));
	if (s->listen == NULL || s->threads == NULL)
		goto nomem;
	s->creds = creds;
	s->tls_mode = rpc_tls_server_mode(cfg->tls);
	s->max_recv = cfg->max_recv_bytes ? cfg->max_recv_bytes : RPC_DEFAULT_SERVER_MAX;
	s->max_send = cfg->max_send_bytes ? cfg->max_send_bytes : RPC_DEFAULT_SERVER_MAX;
	s->unknown.m = &rpc_unknown_method;
	s->shutdown_tag.kind = RPC_TAG_SHUTDOWN;
	atomic_init(&s->stopping, false);
	atomic_init(&s->active, 0);
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);

	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = (int)s->max_recv;
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	args[1].value.integer = (int)s->max_send;
	/* gRPC sets SO_REUSEPORT by default: a second reapd on the same port
	 * would silently share the traffic instead of failing to bind. */
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
	args[2].value.integer = 0;
	/* Bounded receive buffering: without BDP probing a stream's flow-control
	 * window stays at its default instead of growing to many MiB per stream,
	 * so a fast uploader cannot park a large window of data in reapd. */
	args[3].type = GRPC_ARG_INTEGER;
	args[3].key = (char *)GRPC_ARG_HTTP2_BDP_PROBE;
	args[3].value.integer = 0;
	s->srv = grpc_server_create(&cargs, NULL);
	s->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(s->srv, s->cq, NULL);
	return s;
nomem:
	reap_errf(eb, REAP_E_NOMEM, "rpc: out of memory");
fail:
	if (s != NULL) {
		free(s->listen);
		free(s->threads);
		free(s);
	}
	if (creds != NULL)
		grpc_server_credentials_release(creds);
	rpc_grpc_unref();
	return NULL;
}

static int rpc_method_check(const rpc_method_t *m)
{
	bool has_msg = m->on_message != NULL || m->on_raw_message != NULL;

	if (m->path == NULL || m->path[0] != '/' || m->request == NULL)
		return REAP_E_INVALID;
	switch (m->kind) {
	case RPC_UNARY:
		return m->on_request != NULL && m->on_raw_message == NULL ? REAP_OK
									   : REAP_E_INVALID;
	case RPC_SERVER_STREAMING:
		return m->on_request != NULL && m->on_sent != NULL && m->on_raw_message == NULL
			       ? REAP_OK : REAP_E_INVALID;
	case RPC_CLIENT_STREAMING:
		return has_msg && m->on_half_close != NULL ? REAP_OK : REAP_E_INVALID;
	case RPC_BIDI_STREAMING:
		return has_msg && m->on_half_close != NULL && m->on_sent != NULL ? REAP_OK
										 : REAP_E_INVALID;
	default:
		return REAP_E_INVALID;
	}
}

int rpc_server_add_methods(rpc_server_t *s, const rpc_method_t *methods, size_t n)
{
	if (s->state != RPC_SRV_NEW)
		return REAP_E_PRECONDITION;
	for (size_t i = 0; i < n; i++) {
		const rpc_method_t *m = &methods[i];
		grpc_server_register_method_payload_handling ph;
		void *handle;

		if (rpc_method_check(m) != REAP_OK) {
			REAP_ERROR("rpc method rejected", "path=\"%s\"", m->path ? m->path : "(null)");
			return REAP_E_INVALID;
		}
		if (s->nregs == s->cap_regs) {
			size_t cap = s->cap_regs ? 2 * s->cap_regs : 16;
			rpc_reg_t *r = realloc(s->regs, cap * sizeof(*r));

			if (r == NULL)
				return REAP_E_NOMEM;
			s->regs = r;
			s->cap_regs = cap;
		}
		/* Unary and server-streaming requests arrive with the call;
		 * client and bidi streams are read with explicit RECV_MESSAGE ops. */
		ph = m->kind == RPC_CLIENT_STREAMING || m->kind == RPC_BIDI_STREAMING
			     ? GRPC_SRM_PAYLOAD_NONE
			     : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER;
		handle = grpc_server_register_method(s->srv, m->path, NULL, ph, 0);
		if (handle == NULL) {
			REAP_ERROR("rpc method registered twice", "path=\"%s\"", m->path);
			return REAP_E_EXISTS;
		}
		s->regs[s->nregs].m = m;
		s->regs[s->nregs].handle = handle;
		s->nregs++;
	}
	return REAP_OK;
}

int rpc_server_start(rpc_server_t *s, int *port, reap_errbuf_t *eb)
{
	grpc_server_credentials *creds;
	int bound, err;

	if (port != NULL)
		*port = 0;
	if (s->state != RPC_SRV_NEW)
		return reap_errf(eb, REAP_E_PRECONDITION, "rpc: server already started");
	/* Threads first: they only block on their queues until calls come. */
	for (int i = 0; i < s->nthreads; i++) {
		char name[16];

		if (pthread_create(&s->threads[i], NULL, rpc_server_thread, s) != 0) {
			err = reap_errf(eb, REAP_E_EXHAUSTED, "rpc: cannot start thread %d", i);
			goto fail;
		}
		s->nrunning++;
		snprintf(name, sizeof(name), "reap-rpc-%d", i % 10000);
		pthread_setname_np(s->threads[i], name);
	}
	/* The server keeps its own reference to the credentials. */
	creds = s->creds != NULL ? s->creds : grpc_insecure_server_credentials_create();
	s->creds = NULL;
	bound = grpc_server_add_http2_port(s->srv, s->listen, creds);
	grpc_server_credentials_release(creds);
	if (bound <= 0) {
		err = reap_errf(eb, REAP_E_IO, "rpc: cannot listen on %s", s->listen);
		goto fail;
	}
	grpc_server_start(s->srv);
	pthread_mutex_lock(&s->mu);
	s->state = RPC_SRV_RUNNING;
	pthread_mutex_unlock(&s->mu);

	/* As many requests outstanding per method as threads, for bursts; each
	 * accepted call requests its successor. */
	for (int i = 0; i < s->nthreads; i++) {
		err = rpc_call_request(s, &s->unknown);
		for (size_t j = 0; err == REAP_OK && j < s->nregs; j++)
			err = rpc_call_request(s, &s->regs[j]);
		if (err != REAP_OK) {
			rpc_server_shutdown(s, 0);
			return reap_errf(eb, err, "rpc: cannot request calls: %s", reap_strerror(err));
		}
	}
	if (port != NULL)
		*port = bound;
	REAP_INFO("rpc server listening", "addr=%s port=%d threads=%d methods=%zu transport=%s",
		  s->listen, bound, s->nthreads, s->nregs, s->tls_mode);
	return REAP_OK;
fail:
	/* Not started: no call can exist, the queue holds nothing. */
	rpc_cq_stop(s);
	s->state = RPC_SRV_FAILED;
	return err;
}

/* Wait on s->cv until cond holds or the monotonic deadline passes (NULL: forever). */
static void rpc_server_wait(rpc_server_t *s, const struct timespec *deadline)
{
	if (deadline == NULL)
		pthread_cond_wait(&s->cv, &s->mu);
	else
		pthread_cond_timedwait(&s->cv, &s->mu, deadline);
}

static bool rpc_past(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > deadline->tv_sec ||
	       (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

void rpc_server_shutdown(rpc_server_t *s, int grace_ms)
{
	struct timespec deadline;
	bool forced;

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	if (s->state == RPC_SRV_STOPPING) {
		while (s->state == RPC_SRV_STOPPING)
			rpc_server_wait(s, NULL);
		pthread_mutex_unlock(&s->mu);
		return;
	}
	if (s->state != RPC_SRV_RUNNING) {
		pthread_mutex_unlock(&s->mu);
		return;
	}
	s->state = RPC_SRV_STOPPING;
	atomic_store(&s->stopping, true);
	pthread_mutex_unlock(&s->mu);

	/* Refuses new calls and fails the outstanding requests right away. */
	grpc_server_shutdown_and_notify(s->srv, s->cq, &s->shutdown_tag);

	if (grace_ms < 0)
		grace_ms = 0;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += grace_ms / 1000;
	deadline.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->mu);
	while (!s->shutdown_done && !rpc_past(&deadline))
		rpc_server_wait(s, &deadline);
	forced = !s->shutdown_done;
	pthread_mutex_unlock(&s->mu);
	if (forced) {
		REAP_INFO("rpc server grace period over", "active_calls=%zu",
			  atomic_load(&s->active));
		grpc_server_cancel_all_calls(s->srv);
	}
	pthread_mutex_lock(&s->mu);
	while (!s->shutdown_done || atomic_load(&s->active) != 0)
		rpc_server_wait(s, NULL);
	pthread_mutex_unlock(&s->mu);

	grpc_server_destroy(s->srv);
	s->srv = NULL;
	rpc_cq_stop(s);

	pthread_mutex_lock(&s->mu);
	s->state = RPC_SRV_STOPPED;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	REAP_INFO("rpc server stopped", "addr=%s forced=%d", s->listen, forced);
}

void rpc_server_free(rpc_server_t *s)
{
	if (s == NULL)
		return;
	rpc_server_shutdown(s, 0);
	if (s->srv != NULL) {
		/* Never started (or start failed before listening): no listener,
		 * no call, so the server may be destroyed without a shutdown. */
		rpc_cq_stop(s);
		grpc_server_destroy(s->srv);
	}
	if (s->creds != NULL)
		grpc_server_credentials_release(s->creds);
	if (s->cq != NULL)
		grpc_completion_queue_destroy(s->cq);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s->threads);
	free(s->regs);
	free(s->listen);
	free(s);
	rpc_grpc_unref();
}

size_t rpc_server_max_recv(const rpc_server_t *s)
{
	return s->max_recv;
}

size_t rpc_server_max_send(const rpc_server_t *s)
{
	return s->max_send;
}
