/*
 * worker.c - the reap-worker daemon: slot threads that long-poll the
 * scheduler's WorkerQueue for leases and run each leased action.
 *
 * One slot runs one action at a time: fetch the Action and Command, stage
 * the input root into a fresh exec root (work_dir/lease-<id>/root, with the
 * stdout and stderr files beside it, never inside; or the one of the
 * sandbox the slot started while it was idle, slot_arm), create the parents of
 * every output path, run the command in the sandbox, upload stdout, stderr
 * and the outputs, and report the ExecuteResponse with Complete. Then the
 * lease folder is removed (without following anything the action left).
 *
 * While an action runs, the slot's renew thread (renew.c) keeps its lease
 * alive (every third of the lease TTL); the thread is started with the
 * slot's first lease and kept, so a lease costs no thread creation. The scheduler may answer that the operation was
 * cancelled: the action is killed and completed with CANCELLED. When the
 * lease is lost (NOT_FOUND, or no successful renew for a whole TTL), the
 * action is killed and dropped without Complete: the scheduler has already
 * given it to someone else.
 *
 * Outcomes (ExecuteResponse.status): OK when the command ran, whatever its
 * exit code; DEADLINE_EXCEEDED with the partial result when it timed out;
 * FAILED_PRECONDITION with a google.rpc.PreconditionFailure listing every
 * missing blob ("MISSING", "blobs/{hash}/{size}") so the client re-uploads;
 * INVALID_ARGUMENT for a malformed Action, Command or input tree, or a bad
 * "reap-" sandbox property (wrk_sandbox_for_action: limits can only be
 * narrowed); FAILED_PRECONDITION for reap-network=loopback on a lease
 * whose instance policy does not allow it. An action
 * that modified its staged input files (shared, hardlinked cache inodes)
 * gets INTERNAL, message "action modified its input files", with its result
 * attached for diagnosis: the scheduler caches status-OK results only, so
 * this is what keeps such a result out of the ActionCache (ExecuteResponse
 * has no "do not cache" field).
 *
 * Stopping: the polls have a channel of their own, and stop cancels every
 * call on it, so idle slots end at once. Running actions are killed and
 * their leases dropped, not completed: they are re-queued when the lease
 * expires. Exec-root file handling lives in execroot.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "google/protobuf/any.pb-c.h"
#include "google/rpc/code.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "reap/v1/worker.pb-c.h"
#include "common/log.h"
#include "worker/worker_int.h"

#define WQ "/reap.v1.WorkerQueue/"
#define CAPS "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"
#define POLL_WAIT_MS 20000
#define POLL_SLACK_MS 10000     /* rpc deadline beyond the long-poll's wait */
#define EARLY_POLL_MS 100       /* an empty answer sooner than this counts as a failure */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define RPC_TIMEOUT_MS 30000
#define DEFAULT_TTL_MS 30000
#define COMPLETE_TRIES 5
#define MAX_ACTION_BYTES ((size_t)1 << 20)
#define MAX_COMMAND_BYTES ((size_t)4 << 20)
#define MAX_VIOLATIONS 10000
#define PRECONDITION_URL "type.googleapis.com/google.rpc.PreconditionFailure"


/* The ExecuteResponse being built, and what its pointers point to. */
typedef struct outcome {
	WRK_RE(ExecuteResponse) resp;
	WRK_RE(ActionResult) ar;
	WRK_RE(ExecutedActionMetadata) md;
	Google__Protobuf__Timestamp ts[9];
	Google__Rpc__Status status;
	Google__Protobuf__Any any, *anyp;
	uint8_t *detail;
	bool interrupted; /* stopped by the kill switch before it finished: nothing to report */
	char msg[512];
} outcome_t;

enum { TS_START, TS_FETCH0, TS_FETCH1, TS_EXEC0, TS_EXEC1, TS_UP0, TS_UP1, TS_DONE };

/* ---- small helpers ---- */

struct timespec wrk_realtime_in(int64_t ms)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000;
	if (t.tv_nsec >= 1000000000) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000;
	}
	return t;
}

int64_t wrk_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void stamp(outcome_t *o, int which, int64_t real_ns)
{
	Google__Protobuf__Timestamp *t = &o->ts[which];
	if (real_ns == 0) {
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		real_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	}
	google__protobuf__timestamp__init(t);
	t->seconds = real_ns / 1000000000;
	t->nanos = (int32_t)(real_ns % 1000000000);
	Google__Protobuf__Timestamp **field[] = {
		[TS_START] = &o->md.worker_start_timestamp,
		[TS_FETCH0] = &o->md.input_fetch_start_timestamp,
		[TS_FETCH1] = &o->md.input_fetch_completed_timestamp,
		[TS_EXEC0] = &o->md.execution_start_timestamp,
		[TS_EXEC1] = &o->md.execution_completed_timestamp,
		[TS_UP0] = &o->md.output_upload_start_timestamp,
		[TS_UP1] = &o->md.output_upload_completed_timestamp,
		[TS_DONE] = &o->md.worker_completed_timestamp,
	};
	*field[which] = t;
}

static bool stopping(wrk_daemon_t *d)
{
	return __atomic_load_n(&d->stopping, __ATOMIC_ACQUIRE);
}

/* Sleep ms unless the daemon stops first; true when it is stopping. */
static bool nap(wrk_daemon_t *d, int64_t ms)
{
	struct timespec until = wrk_realtime_in(ms);
	pthread_mutex_lock(&d->mu);
	while (!d->stopping && pthread_cond_timedwait(&d->cv, &d->mu, &until) != ETIMEDOUT)
		;
	bool s = d->stopping;
	pthread_mutex_unlock(&d->mu);
	return s;
}

/* Exponential backoff with jitter: 100 ms doubling to 5 s, each wait 50-100% of the step. */
static bool backoff(slot_t *s, int64_t *step)
{
	*step = *step == 0 ? BACKOFF_MIN_MS : *step * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *step * 2;
	return nap(s->d, *step / 2 + rand_r(&s->seed) % (*step / 2 + 1));
}

/* A clean relative path: no empty, "." or ".." component, no leading or trailing '/'. */
static bool clean_rel(const char *p)
{
	if (p[0] == '\0' || p[0] == '/')
		return false;
	for (;;) {
		size_t n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (p[n] == '\0')
			return true;
		p += n + 1;
	}
}

/* ---- outcomes ---- */

static void set_status(outcome_t *o, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_status(outcome_t *o, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(o->msg, sizeof(o->msg), fmt, ap);
	va_end(ap);
	o->status.code = code;
	o->status.message = o->msg;
	o->resp.status = &o->status;
}

/* A reap error as the response's status (the one mapping lives in rpc/). */
static void set_error(outcome_t *o, int err, const reap_errbuf_t *eb, const char *what)
{
	set_status(o, rpc_code_from_err(err), "%s: %s", what, reap_errmsg(eb, err));
}

/* FAILED_PRECONDITION with one MISSING violation per subject ("blobs/{hash}/{size}"). */
static void set_missing(outcome_t *o, char *const *subjects, size_t n)
{
	Google__Rpc__PreconditionFailure pf = GOOGLE__RPC__PRECONDITION_FAILURE__INIT;
	Google__Rpc__PreconditionFailure__Violation *v = NULL, **vp = NULL;
	size_t k = n < MAX_VIOLATIONS ? n : MAX_VIOLATIONS;

	set_status(o, GOOGLE__RPC__CODE__FAILED_PRECONDITION, "%zu input blob%s missing from the CAS",
		   n, n == 1 ? " is" : "s are");
	v = calloc(k ? k : 1, sizeof(*v));
	vp = calloc(k ? k : 1, sizeof(*vp));
	if (v == NULL || vp == NULL)
		goto out;
	for (size_t i = 0; i < k; i++) {
		google__rpc__precondition_failure__violation__init(&v[i]);
		v[i].type = (char *)"MISSING";
		v[i].subject = subjects[i];
		vp[i] = &v[i];
	}
	pf.n_violations = k;
	pf.violations = vp;
	size_t len = google__rpc__precondition_failure__get_packed_size(&pf);
	if ((o->detail = malloc(len ? len : 1)) == NULL)
		goto out;
	google__rpc__precondition_failure__pack(&pf, o->detail);
	google__protobuf__any__init(&o->any);
	o->any.type_url = (char *)PRECONDITION_URL;
	o->any.value.data = o->detail;
	o->any.value.len = len;
	o->anyp = &o->any;
	o->status.n_details = 1;
	o->status.details = &o->anyp;
out:
	free(v);
	free(vp);
}

static void missing_blob(outcome_t *o, const reap_digest_t *d)
{
	char name[WRK_BLOB_NAME_LEN], *p = name;
	wrk_blob_name(d, name);
	set_missing(o, &p, 1);
}

/* ---- one action ---- */

/* max_batch_total_size_bytes, asked once (the first lease's instance). */
static size_t max_batch(wrk_daemon_t *d, const char *instance)
{
	WRK_RE(GetCapabilitiesRequest) req = WRK_RE_INIT(GET_CAPABILITIES_REQUEST);
	WRK_RE(ServerCapabilities) *caps = NULL;
	rpc_status_t st;
	size_t mb;

	pthread_mutex_lock(&d->mu);
	bool known = d->caps_known;
	mb = d->max_batch;
	pthread_mutex_unlock(&d->mu);
	if (known)
		return mb;
	req.instance_name = (char *)instance;
	if (rpc_unary(d->cas_ch, CAPS, &req.base,
		      &build__bazel__remote__execution__v2__server_capabilities__descriptor,
		      (ProtobufCMessage **)&caps, &st, RPC_TIMEOUT_MS) == REAP_OK &&
	    st.code == 0) {
		int64_t v = caps->cache_capabilities != NULL
				    ? caps->cache_capabilities->max_batch_total_size_bytes : 0;
		mb = v > 0 && (uint64_t)v < SIZE_MAX ? (size_t)v : 0;
		pthread_mutex_lock(&d->mu);
		d->max_batch = mb;
		d->caps_known = true;
		pthread_mutex_unlock(&d->mu);
		REAP_INFO("capabilities", "max_batch=%zu", mb);
	} else {
		REAP_WARN("GetCapabilities failed; using the default batch size", "code=%d msg=\"%s\"",
			  st.code, st.msg);
	}
	if (caps != NULL)
		protobuf_c_message_free_unpacked(&caps->base, NULL);
	rpc_status_destroy(&st);
	return mb;
}

/*
 * Decode a blob (Action, Command): the copy the lease carries when it
 * matches the digest, else fetched from the CAS (verified by the client).
 * NOT_FOUND sets the missing status.
 */
static void *fetch(wrk_cas_t *cas, const WRK_RE(Digest) *pb, const ProtobufCBinaryData *inline_blob,
		   size_t max, const ProtobufCMessageDescriptor *desc, const char *what,
		   outcome_t *o)
{
	reap_errbuf_t eb = {{0}};
	reap_digest_t dg, got;
	void *data = NULL;
	size_t len = 0;
	int err;

	if ((err = wrk_digest_from_pb(pb, &dg, &eb)) != REAP_OK) {
		set_error(o, err, &eb, what);
		return NULL;
	}
	if (inline_blob != NULL && inline_blob->len > 0 && inline_blob->len <= max &&
	    reap_digest_of(inline_blob->data, inline_blob->len, &got) == REAP_OK &&
	    reap_digest_eq(&got, &dg)) {
		ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, inline_blob->len,
								 inline_blob->data);
		if (m == NULL)
			set_status(o, GOOGLE__RPC__CODE__INVALID_ARGUMENT, "%s is not a valid message",
				   what);
		return m;
	}
	if (inline_blob != NULL && inline_blob->len > 0)
		REAP_WARN("the lease's copy does not match its digest; fetching it", "what=\"%s\"",
			  what);
	if ((err = wrk_cas_get(cas, &dg, max, &data, &len, &eb)) == REAP_E_NOT_FOUND) {
		missing_blob(o, &dg);
		return NULL;
	}
	if (err != REAP_OK) {
		set_error(o, err, &eb, what);
		return NULL;
	}
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
	free(data);
	if (m == NULL)
		set_status(o, GOOGLE__RPC__CODE__INVALID_ARGUMENT, "%s is not a valid message", what);
	return m;
}

typedef struct strlist {
	size_t n;
	char **v;
} strlist_t;

/* REAPI: the worker creates the parent folders of every output path. */
static int make_output_parents(const char *root, const WRK_RE(Command) *cmd, outcome_t *o)
{
	char rel[PATH_MAX];
	size_t n_lists = 0;
	strlist_t lists[2];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	if (cmd->n_output_paths > 0) {
		lists[n_lists++] = (strlist_t){cmd->n_output_paths, cmd->output_paths};
	} else { /* REAPI before v2.1 */
		lists[n_lists++] = (strlist_t){cmd->n_output_files, cmd->output_files};
		lists[n_lists++] = (strlist_t){cmd->n_output_directories, cmd->output_directories};
	}
#pragma GCC diagnostic pop
	for (size_t l = 0; l < n_lists; l++) {
		for (size_t i = 0; i < lists[l].n; i++) {
			const char *p = lists[l].v[i], *slash = strrchr(p, '/');
			if (!clean_rel(p)) {
				set_status(o, GOOGLE__RPC__CODE__INVALID_ARGUMENT,
					   "output path \"%s\" is not a clean relative path", p);
				return REAP_E_INVALID;
			}
			int n = snprintf(rel, sizeof(rel), "%s%s%.*s", cmd->working_directory,
					 cmd->working_directory[0] ? "/" : "",
					 slash ? (int)(slash - p) : 0, p);
			if (n < 0 || (size_t)n >= sizeof(rel)) {
				set_status(o, GOOGLE__RPC__CODE__INVALID_ARGUMENT,
					   "output path \"%s\" is too long", p);
				return REAP_E_INVALID;
			}
			wrk_mkdirs_under(root, rel, (size_t)n);
		}
	}
	return REAP_OK;
}

static int64_t timeout_ms(const wrk_daemon_t *d, const WRK_RE(Action) *a)
{
	if (a->timeout == NULL || (a->timeout->seconds <= 0 && a->timeout->nanos <= 0))
		return d->cfg.default_timeout_ms;
	if (a->timeout->seconds > INT64_MAX / 1000 - 1)
		return INT64_MAX / 2;
	return a->timeout->seconds * 1000 + (a->timeout->nanos + 999999) / 1000000;
}

/* Upload a stdio file into *field (left NULL when the file is empty). */
static int put_stdio(wrk_cas_t *cas, const char *path, WRK_RE(Digest) **field, reap_errbuf_t *eb)
{
	reap_digest_t dg;
	struct stat st;
	int err = REAP_OK, fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return reap_errf(eb, REAP_E_IO, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) == 0 && st.st_size == 0)
		goto out;
	if ((err = wrk_cas_put_file(cas, fd, &dg, eb)) != REAP_OK)
		goto out;
	if ((*field = wrk_digest_pb_new(&dg)) == NULL)
		err = reap_errf(eb, REAP_E_NOMEM, "out of memory");
out:
	close(fd);
	return err;
}

/* The lease's folder dir, its exec root and stdio files in it. */
static void lease_paths(lease_run_t *lr, const char *dir)
{
	if (dir != lr->dir)
		snprintf(lr->dir, sizeof(lr->dir), "%s", dir);
	snprintf(lr->root, sizeof(lr->root), "%s/root", lr->dir);
	snprintf(lr->out_path, sizeof(lr->out_path), "%s/stdout", lr->dir);
	snprintf(lr->err_path, sizeof(lr->err_path), "%s/stderr", lr->dir);
}

/* Stop the slot's unused sandbox and remove its folder. */
static void slot_disarm(slot_t *s)
{
	wrk_sandbox_disarm(s->armed);
	s->armed = NULL;
	if (s->arm_dir[0] != '\0' && wrk_rm_tree(s->arm_dir) != 0)
		REAP_WARN("cannot remove a sandbox folder", "path=\"%s\"", s->arm_dir);
	s->arm_dir[0] = '\0';
}

/*
 * Start the sandbox of the slot's next action now, while the slot is idle:
 * building its namespaces and root is most of what a sandbox costs (about
 * 11 of a bare bwrap's 15-18 ms on the test VM), and done here it is off the
 * action's path. It is made with the worker's own sandbox settings, in a
 * lease folder of its own ("lease-." never collides with a lease's name,
 * whose characters are [A-Za-z0-9_-]); an action whose "reap-" properties
 * ask for another sandbox gets a fresh one, and this one is stopped. Each
 * sandbox serves one action only.
 */
static void slot_arm(slot_t *s)
{
	wrk_daemon_t *d = s->d;
	char root[PATH_MAX + 8], out[PATH_MAX + 8], err[PATH_MAX + 8];
	reap_errbuf_t eb = {{0}};

	if (s->armed != NULL && wrk_sandbox_alive(s->armed))
		return;
	if (s->armed != NULL) { /* it ended by itself: its stderr may say why */
		char why[200] = "";
		snprintf(err, sizeof(err), "%s/stderr", s->arm_dir);
		int fd = open(err, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		ssize_t n = fd >= 0 ? read(fd, why, sizeof(why) - 1) : -1;
		if (fd >= 0)
			close(fd);
		why[n > 0 ? n : 0] = '\0';
		for (char *c = why; *c != '\0'; c++)
			if (*c == '\n' || *c == '"')
				*c = ' ';
		REAP_WARN("a sandbox started ahead of its action ended; the next starts in a minute",
			  "slot=%d stderr=\"%s\"", s->index, why);
		slot_disarm(s);
		s->arm_retry_ms = wrk_mono_ms() + 60000;
	}
	if (wrk_mono_ms() < s->arm_retry_ms)
		return;
	snprintf(s->arm_dir, sizeof(s->arm_dir), "%s/" WRK_LEASE_PREFIX ".next-%d-%u",
		 d->cfg.work_dir, s->index, ++s->arm_seq);
	snprintf(root, sizeof(root), "%s/root", s->arm_dir);
	snprintf(out, sizeof(out), "%s/stdout", s->arm_dir);
	snprintf(err, sizeof(err), "%s/stderr", s->arm_dir);
	if (mkdir(s->arm_dir, 0700) != 0 || mkdir(root, 0755) != 0) {
		reap_errf(&eb, REAP_E_IO, "cannot create %s: %s", root, strerror(errno));
	} else if (wrk_sandbox_arm(&d->cfg.sandbox, root, out, err, &s->armed, &eb) == REAP_OK) {
		return;
	}
	REAP_WARN("cannot start a sandbox ahead of its action; the next action starts its own",
		  "slot=%d err=\"%s\"", s->index, eb.msg);
	slot_disarm(s);
	s->arm_retry_ms = wrk_mono_ms() + 60000;
}

/* Stage, run, collect: fills o (status and result). */
static void execute(lease_run_t *lr, wrk_cas_t *cas, outcome_t *o)
{
	slot_t *s = lr->slot;
	wrk_daemon_t *d = s->d;
	wrk_armed_t *armed = NULL;
	WRK_RE(Action) *action = NULL;
	WRK_RE(Command) *cmd = NULL;
	wrk_sandbox_config_t sb;
	wrk_staged_t staged = {0};
	wrk_run_result_t run;
	reap_errbuf_t eb = {{0}};
	reap_digest_t root_d;
	int err;

	stamp(o, TS_FETCH0, 0);
	action = fetch(cas, lr->lease->action_digest, &lr->lease->action, MAX_ACTION_BYTES,
		       &build__bazel__remote__execution__v2__action__descriptor, "the Action", o);
	if (action == NULL)
		goto out;
	cmd = fetch(cas, action->command_digest, &lr->lease->command, MAX_COMMAND_BYTES,
		    &build__bazel__remote__execution__v2__command__descriptor, "the Command", o);
	if (cmd == NULL)
		goto out;
	/* reap-limit-* narrow the limits; reap-network=loopback needs the lease's permission */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	const WRK_RE(Platform) *cmd_pf = cmd->platform; /* REAPI before v2.2 */
#pragma GCC diagnostic pop
	if ((err = wrk_sandbox_for_action(&d->cfg.sandbox, action->platform, cmd_pf,
					  lr->lease->allow_loopback_network, &sb, &eb)) != REAP_OK) {
		set_error(o, err, &eb, "the action's sandbox request");
		goto out;
	}
	if ((err = wrk_digest_from_pb(action->input_root_digest, &root_d, &eb)) != REAP_OK) {
		set_error(o, err, &eb, "input_root_digest");
		goto out;
	}
	/* the sandbox started before the lease, when this action's is the same */
	if (s->armed != NULL && wrk_sandbox_fits(s->armed, &sb) && wrk_sandbox_alive(s->armed)) {
		armed = s->armed;
		s->armed = NULL;
		lease_paths(lr, s->arm_dir);
		s->arm_dir[0] = '\0';
	} else if (s->armed != NULL) {
		slot_disarm(s);
	}
	if (armed == NULL && (mkdir(lr->dir, 0700) != 0 || mkdir(lr->root, 0755) != 0)) {
		set_status(o, GOOGLE__RPC__CODE__INTERNAL, "cannot create the exec root %s: %s",
			   lr->root, strerror(errno));
		goto out;
	}
	err = wrk_stage(d->cache, cas, &root_d, lr->root, &staged, &eb);
	if (err == REAP_E_PRECONDITION && staged.n_missing > 0) {
		set_missing(o, staged.missing, staged.n_missing);
		goto out;
	}
	if (err != REAP_OK) {
		set_error(o, err, &eb, "staging the input root");
		goto out;
	}
	if (make_output_parents(lr->root, cmd, o) != REAP_OK)
		goto out;
	stamp(o, TS_FETCH1, 0);
	if (__atomic_load_n(&s->cancel, __ATOMIC_ACQUIRE)) {
		o->interrupted = true; /* cancelled, lost or stopping: run_lease decides */
		goto out;
	}

	if (armed != NULL)
		err = wrk_sandbox_fire(armed, cmd, timeout_ms(d, action), &s->cancel, &run, &eb);
	else
		err = wrk_sandbox_run(&sb, lr->root, cmd, timeout_ms(d, action), lr->out_path,
				      lr->err_path, &s->cancel, &run, &eb);
	armed = NULL; /* fire frees it */
	if (err != REAP_OK) {
		set_error(o, err, &eb, "running the command");
		goto out;
	}
	stamp(o, TS_EXEC0, run.start_ns);
	stamp(o, TS_EXEC1, run.end_ns);
	if (run.cancelled) {
		o->interrupted = true;
		goto out;
	}

	stamp(o, TS_UP0, 0);
	o->resp.result = &o->ar;
	o->ar.exit_code = run.exit_code;
	if ((err = put_stdio(cas, lr->out_path, &o->ar.stdout_digest, &eb)) != REAP_OK ||
	    (err = put_stdio(cas, lr->err_path, &o->ar.stderr_digest, &eb)) != REAP_OK ||
	    (err = wrk_collect_outputs(cas, lr->root, cmd, &o->ar, &eb)) != REAP_OK) {
		set_error(o, err, &eb, "uploading the outputs");
		goto out;
	}
	stamp(o, TS_UP1, 0);
	if (!wrk_staged_intact(d->cache, &staged)) {
		/* not OK, so the scheduler does not cache it; the result is kept for diagnosis */
		set_status(o, GOOGLE__RPC__CODE__INTERNAL,
			   "action modified its input files; result not cached");
		o->resp.message = o->msg;
	} else if (run.timed_out) {
		set_status(o, GOOGLE__RPC__CODE__DEADLINE_EXCEEDED,
			   "the action timed out after %lld ms", (long long)timeout_ms(d, action));
	} else if (run.limit != WRK_LIMIT_NONE) { /* killed at a hard limit: never cached */
		set_status(o, GOOGLE__RPC__CODE__RESOURCE_EXHAUSTED, "%s", run.limit_msg);
	}
out:
	wrk_sandbox_disarm(armed);
	wrk_staged_destroy(&staged);
	if (cmd != NULL)
		protobuf_c_message_free_unpacked(&cmd->base, NULL);
	if (action != NULL)
		protobuf_c_message_free_unpacked(&action->base, NULL);
}

/* Report o; retried while the scheduler is unreachable (the lease is still renewed). */
static void complete(lease_run_t *lr, outcome_t *o)
{
	wrk_daemon_t *d = lr->slot->d;
	Reap__V1__CompleteRequest req = REAP__V1__COMPLETE_REQUEST__INIT;
	int64_t step = 0;

	req.lease_id = lr->lease->lease_id;
	req.worker_name = (char *)d->cfg.name;
	req.response = &o->resp;
	for (int i = 0; i < COMPLETE_TRIES && !__atomic_load_n(&lr->lost, __ATOMIC_ACQUIRE); i++) {
		Reap__V1__CompleteResponse *resp = NULL;
		rpc_status_t st;
		int rc = rpc_unary(d->sched_ch, WQ "Complete", &req.base,
				   &reap__v1__complete_response__descriptor,
				   (ProtobufCMessage **)&resp, &st, RPC_TIMEOUT_MS);
		bool retry = rc != REAP_OK || st.code == GOOGLE__RPC__CODE__UNAVAILABLE ||
			     st.code == GOOGLE__RPC__CODE__DEADLINE_EXCEEDED;
		if (rc == REAP_OK && st.code == 0)
			REAP_INFO("action completed", "lease=%s operation=%s status=%d exit=%d cached=%d",
				  lr->lease->lease_id, lr->lease->operation_name, o->status.code,
				  o->resp.result ? o->resp.result->exit_code : -1,
				  (int)resp->cached);
		else
			REAP_WARN("Complete failed", "lease=%s code=%d msg=\"%s\" retry=%d",
				  lr->lease->lease_id, st.code, st.msg, (int)retry);
		if (resp != NULL)
			protobuf_c_message_free_unpacked(&resp->base, NULL);
		rpc_status_destroy(&st);
		if (!retry || i + 1 == COMPLETE_TRIES || backoff(lr->slot, &step))
			break;
	}
}

static void run_lease(slot_t *s, const Reap__V1__Lease *lease)
{
	wrk_daemon_t *d = s->d;
	lease_run_t lr = {.slot = s, .lease = lease};
	outcome_t o;
	wrk_cas_t *cas = NULL;
	char safe[80];
	size_t i;

	memset(&o, 0, sizeof(o));
	o.resp = (WRK_RE(ExecuteResponse))WRK_RE_INIT(EXECUTE_RESPONSE);
	WRK_RE_FN(action_result__init)(&o.ar); /* not the INIT macro: it names deprecated fields */
	o.md = (WRK_RE(ExecutedActionMetadata))WRK_RE_INIT(EXECUTED_ACTION_METADATA);
	google__rpc__status__init(&o.status);
	o.md.worker = (char *)d->cfg.name;
	o.ar.execution_metadata = &o.md;
	stamp(&o, TS_START, 0);

	for (i = 0; lease->lease_id[i] != '\0' && i < sizeof(safe) - 1; i++) {
		char c = lease->lease_id[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_';
		safe[i] = ok ? c : '_';
	}
	safe[i] = '\0';
	snprintf(lr.dir, sizeof(lr.dir), "%s/" WRK_LEASE_PREFIX "%s", d->cfg.work_dir, safe);
	lease_paths(&lr, lr.dir);
	struct stat st;
	if (lstat(lr.dir, &st) == 0 || errno != ENOENT)
		wrk_rm_tree(lr.dir); /* a leftover of the same name */

	lr.ttl_ms = lease->lease_ttl_ms > 0 ? lease->lease_ttl_ms : DEFAULT_TTL_MS;
	pthread_mutex_init(&lr.mu, NULL);
	pthread_cond_init(&lr.cv, NULL);
	lr.renewing = wrk_renew_start(&lr);
	if (!lr.renewing)
		REAP_WARN("cannot start the renew thread", "lease=%s", lease->lease_id);
	REAP_INFO("action started", "lease=%s operation=%s instance=\"%s\"", lease->lease_id,
		  lease->operation_name, lease->instance_name);

	if ((cas = wrk_cas_new(d->cas_ch, lease->instance_name, max_batch(d, lease->instance_name))) ==
	    NULL)
		set_status(&o, GOOGLE__RPC__CODE__RESOURCE_EXHAUSTED, "out of memory");
	else
		execute(&lr, cas, &o);
	stamp(&o, TS_DONE, 0);

	if (__atomic_load_n(&lr.lost, __ATOMIC_ACQUIRE)) {
		/* someone else has it now */
	} else if (__atomic_load_n(&lr.server_cancelled, __ATOMIC_ACQUIRE)) {
		o.resp.result = NULL;
		set_status(&o, GOOGLE__RPC__CODE__CANCELLED, "the operation was cancelled");
		complete(&lr, &o);
	} else if (o.interrupted) {
		REAP_WARN("worker stopping: action abandoned; it is re-queued when its lease expires",
			  "lease=%s", lease->lease_id);
	} else { /* finished (even if a stop came meanwhile): report it */
		complete(&lr, &o);
	}
	wrk_renew_stop(&lr);
	pthread_mutex_destroy(&lr.mu);
	pthread_cond_destroy(&lr.cv);
	o.ar.execution_metadata = NULL;
	wrk_result_free_outputs(&o.ar);
	free(o.detail);
	wrk_cas_free(cas);
	if (wrk_rm_tree(lr.dir) != 0)
		REAP_WARN("cannot remove the exec root", "path=\"%s\"", lr.dir);
}

/* ---- slots ---- */

void *wrk_slot_main(void *arg)
{
	slot_t *s = arg;
	wrk_daemon_t *d = s->d;
	Reap__V1__PollRequest req = REAP__V1__POLL_REQUEST__INIT;
	int64_t step = 0;

	req.worker_name = (char *)d->cfg.name;
	req.platform = &d->offer;
	req.toolchain = (char *)(d->cfg.toolchain != NULL ? d->cfg.toolchain : "");
	req.wait_ms = POLL_WAIT_MS;
	pthread_mutex_init(&s->rmu, NULL);
	pthread_cond_init(&s->rcv, NULL);
	while (!stopping(d)) {
		Reap__V1__PollResponse *resp = NULL;
		rpc_status_t st;
		slot_arm(s);
		int64_t t0 = wrk_mono_ms();
		int rc = rpc_unary(d->poll_ch, WQ "Poll", &req.base,
				   &reap__v1__poll_response__descriptor, (ProtobufCMessage **)&resp,
				   &st, POLL_WAIT_MS + POLL_SLACK_MS);
		bool ok = rc == REAP_OK && st.code == 0;
		bool leased = ok && resp->lease != NULL && resp->lease->lease_id[0] != '\0' &&
			      resp->lease->action_digest != NULL;
		if (!ok && step == 0 && !stopping(d))
			REAP_WARN("Poll failed; backing off", "slot=%d code=%d msg=\"%s\"", s->index,
				  st.code, st.msg);
		rpc_status_destroy(&st);
		if (leased && stopping(d)) {
			REAP_WARN("lease dropped at stop; it is re-queued when it expires", "lease=%s",
				  resp->lease->lease_id);
		} else if (leased) {
			if (step != 0)
				REAP_INFO("Poll recovered", "slot=%d", s->index);
			step = 0;
			__atomic_store_n(&s->cancel, stopping(d), __ATOMIC_RELEASE);
			run_lease(s, resp->lease);
		} else if (ok && wrk_mono_ms() - t0 >= EARLY_POLL_MS) {
			if (step != 0)
				REAP_INFO("Poll recovered", "slot=%d", s->index);
			step = 0; /* a long-poll that simply ended */
		} else if (backoff(s, &step)) {
			/* an error, or an empty answer at once (a draining scheduler): never spin */
		}
		if (resp != NULL)
			protobuf_c_message_free_unpacked(&resp->base, NULL);
	}
	slot_disarm(s);
	wrk_renew_end(s);
	pthread_cond_destroy(&s->rcv);
	pthread_mutex_destroy(&s->rmu);
	return NULL;
}

