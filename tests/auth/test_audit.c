/*
 * test_audit.c - the audit log: each line is a whole JSON object with the
 * documented fields, concurrent writers never interleave, rotation
 * (explicit reopen and the automatic inode check) moves writing to the
 * new file, and a failing write neither crashes nor stops anything.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"

static char dir[64], logpath[128];

static void mk_dir(void)
{
	strcpy(dir, "/tmp/reap-audit-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(logpath, sizeof(logpath), "%s/audit.log", dir);
}

static void rm_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(audit, .init = mk_dir, .fini = rm_dir);

static auth_policy_t *policy_with_log(const char *path)
{
	reap_errbuf_t eb = {{0}};
	auth_config_t cfg = {.anonymous = AUTH_ANON_ANY, .audit_path = path};
	auth_policy_t *p = auth_policy_new(&cfg, &eb);
	cr_assert_not_null(p, "%s", eb.msg);
	return p;
}

/* Every line of path as parsed JSON objects; *n gets the count. */
static json_t **read_lines(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0, count = 0;
	json_t **out = NULL;
	ssize_t len;

	cr_assert_not_null(f, "open %s", path);
	while ((len = getline(&line, &cap, f)) > 0) {
		json_error_t je;
		cr_assert_eq(line[len - 1], '\n', "line %zu ends in a newline", count);
		json_t *j = json_loadb(line, (size_t)len, 0, &je);
		cr_assert_not_null(j, "line %zu is JSON: %s (%s)", count, je.text, line);
		cr_assert(json_is_object(j));
		out = realloc(out, (count + 1) * sizeof(*out));
		out[count++] = j;
	}
	free(line);
	fclose(f);
	*n = count;
	return out;
}

static void free_lines(json_t **l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		json_decref(l[i]);
	free(l);
}

static const char *str(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	cr_assert_not_null(v, "field %s present", k);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

Test(audit, fields_and_escaping)
{
	auth_policy_t *p = policy_with_log(logpath);
	auth_identity_t id = {.role = AUTH_ROLE_WORKER, .via = AUTH_VIA_TOKEN,
			      .subject = "worker-1", .peer = "ipv4:10.0.0.2:4000",
			      .n_prefixes = 1};
	auth_audit_event_t ev = {.id = &id, .instance = "team-a", .rpc = "ActionCache/UpdateActionResult",
				 .action = "abc123/45", .outcome = "ok",
				 .detail = "quote \" backslash \\ newline \n tab \t bell \a end"};
	struct stat st;
	size_t n;

	auth_audit(p, &ev);
	/* unidentified caller, hostile bytes: invalid UTF-8 and an injected line */
	auth_audit_event_t ev2 = {.peer = "ipv4:6.6.6.6:1", .instance = "x\xff\xfe",
				  .rpc = "Execution/Execute", .outcome = "refused",
				  .detail = "\"}\n{\"subject\":\"admin\"}"};
	auth_audit(p, &ev2);
	auth_audit(p, &(auth_audit_event_t){.rpc = "r", .outcome = "ok"}); /* mostly NULL */
	auth_audit(p, NULL);
	auth_audit(NULL, &ev);

	cr_assert_eq(stat(logpath, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
	json_t **l = read_lines(logpath, &n);
	cr_assert_eq(n, 3);
	const char *t = str(l[0], "time");
	cr_assert_eq(strlen(t), 24, "%s", t); /* 2026-01-02T03:04:05.678Z */
	cr_expect(t[4] == '-' && t[10] == 'T' && t[19] == '.' && t[23] == 'Z', "%s", t);
	cr_expect_str_eq(str(l[0], "subject"), "worker-1");
	cr_expect_str_eq(str(l[0], "role"), "worker");
	cr_expect_str_eq(str(l[0], "via"), "token");
	cr_expect_str_eq(str(l[0], "peer"), "ipv4:10.0.0.2:4000");
	cr_expect_str_eq(str(l[0], "instance"), "team-a");
	cr_expect_str_eq(str(l[0], "rpc"), "ActionCache/UpdateActionResult");
	cr_expect_str_eq(str(l[0], "action"), "abc123/45");
	cr_expect_str_eq(str(l[0], "outcome"), "ok");
	cr_expect_str_eq(str(l[0], "detail"), ev.detail);

	cr_expect_null(str(l[1], "subject"));
	cr_expect_null(str(l[1], "role"));
	cr_expect_str_eq(str(l[1], "peer"), "ipv4:6.6.6.6:1");
	cr_expect_str_eq(str(l[1], "instance"), "x??");
	cr_expect_str_eq(str(l[1], "detail"), ev2.detail);
	cr_expect_str_eq(str(l[1], "outcome"), "refused");
	cr_expect_null(str(l[2], "action"));
	cr_expect_null(str(l[2], "detail"));
	free_lines(l, n);
	cr_expect_eq(auth_audit_failures(p), 0);
	auth_policy_free(p);
}

Test(audit, long_fields_are_cut)
{
	auth_policy_t *p = policy_with_log(logpath);
	char *big = malloc(100000);
	size_t n;
	memset(big, 'd', 99999);
	big[99999] = '\0';
	/* a multi-byte character straddling the cut stays whole or goes */
	memcpy(big + 1023, "\xc3\xa9", 2);
	auth_audit(p, &(auth_audit_event_t){.rpc = "r", .outcome = "ok", .detail = big});
	json_t **l = read_lines(logpath, &n);
	cr_assert_eq(n, 1);
	cr_expect_leq(strlen(str(l[0], "detail")), 1024);
	free_lines(l, n);
	free(big);
	auth_policy_free(p);
}

Test(audit, no_log_is_a_no_op)
{
	auth_policy_t *p = policy_with_log(NULL);
	auth_audit(p, &(auth_audit_event_t){.rpc = "r", .outcome = "ok"});
	cr_expect_eq(auth_audit_reopen(p, NULL), 0);
	cr_expect_eq(auth_audit_failures(p), 0);
	auth_policy_free(p);
	p = policy_with_log("");
	auth_audit(p, &(auth_audit_event_t){.rpc = "r", .outcome = "ok"});
	auth_policy_free(p);
}

Test(audit, unopenable_log_fails_the_policy)
{
	char path[160];
	reap_errbuf_t eb = {{0}};
	snprintf(path, sizeof(path), "%s/no/such/dir/audit.log", dir);
	auth_config_t cfg = {.audit_path = path};
	cr_assert_null(auth_policy_new(&cfg, &eb));
	cr_expect(strstr(eb.msg, "audit log") != NULL, "%s", eb.msg);
	cfg.audit_path = dir; /* a folder */
	cr_assert_null(auth_policy_new(&cfg, &eb));
}

typedef struct writer {
	auth_policy_t *p;
	int id;
} writer_t;

#define THREADS 8
#define PER_THREAD 400

static void *write_many(void *arg)
{
	writer_t *w = arg;
	char detail[3000], inst[16];
	snprintf(inst, sizeof(inst), "t%d", w->id);
	memset(detail, 'a' + w->id, sizeof(detail) - 1);
	detail[sizeof(detail) - 1] = '\0';
	for (int i = 0; i < PER_THREAD; i++)
		auth_audit(w->p, &(auth_audit_event_t){.instance = inst, .rpc = "r",
						       .outcome = "ok", .detail = detail});
	return NULL;
}

Test(audit, concurrent_writers_whole_lines)
{
	auth_policy_t *p = policy_with_log(logpath);
	pthread_t t[THREADS];
	writer_t w[THREADS];
	int per[THREADS] = {0};
	size_t n;

	for (int i = 0; i < THREADS; i++) {
		w[i] = (writer_t){.p = p, .id = i};
		cr_assert_eq(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	json_t **l = read_lines(logpath, &n); /* asserts each line parses */
	cr_assert_eq(n, THREADS * PER_THREAD);
	for (size_t i = 0; i < n; i++) {
		int id = atoi(str(l[i], "instance") + 1);
		cr_assert(id >= 0 && id < THREADS);
		/* the detail is 1024 copies of this thread's letter: nothing mixed in */
		const char *d = str(l[i], "detail");
		for (const char *c = d; *c; c++)
			cr_assert_eq(*c, 'a' + id, "line %zu mixed", i);
		per[id]++;
	}
	for (int i = 0; i < THREADS; i++)
		cr_expect_eq(per[i], PER_THREAD);
	free_lines(l, n);
	auth_policy_free(p);
}

static void one(auth_policy_t *p, const char *outcome)
{
	auth_audit(p, &(auth_audit_event_t){.rpc = "r", .outcome = outcome});
}

static size_t count_outcome(const char *path, const char *outcome)
{
	size_t n, hits = 0;
	json_t **l = read_lines(path, &n);
	for (size_t i = 0; i < n; i++)
		hits += strcmp(str(l[i], "outcome"), outcome) == 0;
	free_lines(l, n);
	return hits;
}

Test(audit, reopen_after_rename)
{
	auth_policy_t *p = policy_with_log(logpath);
	char rotated[160];
	snprintf(rotated, sizeof(rotated), "%s.1", logpath);

	one(p, "before");
	cr_assert_eq(rename(logpath, rotated), 0);
	one(p, "between"); /* still the old file: no reopen yet (within the second) */
	cr_assert_eq(auth_audit_reopen(p, NULL), 0);
	one(p, "after");
	cr_expect_eq(count_outcome(rotated, "before"), 1);
	cr_expect_eq(count_outcome(rotated, "between"), 1);
	cr_expect_eq(count_outcome(rotated, "after"), 0);
	cr_expect_eq(count_outcome(logpath, "after"), 1);
	struct stat st;
	cr_assert_eq(stat(logpath, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600);
	auth_policy_free(p);
}

Test(audit, reopens_by_itself)
{
	auth_policy_t *p = policy_with_log(logpath);
	char rotated[160];
	snprintf(rotated, sizeof(rotated), "%s.1", logpath);

	one(p, "before");
	cr_assert_eq(rename(logpath, rotated), 0);
	usleep(1100 * 1000); /* the inode is compared at most once a second */
	one(p, "after");
	cr_expect_eq(count_outcome(rotated, "after"), 0);
	cr_expect_eq(count_outcome(logpath, "after"), 1);
	/* copytruncate-style rotation keeps the inode: still the same file */
	usleep(1100 * 1000);
	cr_assert_eq(truncate(logpath, 0), 0);
	one(p, "truncated");
	cr_expect_eq(count_outcome(logpath, "truncated"), 1);
	auth_policy_free(p);
}

Test(audit, failed_write_is_counted)
{
	auth_policy_t *p = policy_with_log(logpath);
	struct stat st;
	struct rlimit rl;

	one(p, "fits");
	cr_assert_eq(stat(logpath, &st), 0);
	/* the file may not grow any more: write(2) fails with EFBIG */
	signal(SIGXFSZ, SIG_IGN);
	rl.rlim_cur = rl.rlim_max = (rlim_t)st.st_size;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	one(p, "lost");
	one(p, "lost");
	cr_expect_eq(auth_audit_failures(p), 2);
	cr_expect_eq(count_outcome(logpath, "lost"), 0);
	auth_policy_free(p);
}
