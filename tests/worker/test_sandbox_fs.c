/*
 * test_sandbox_fs.c - what the sandbox shows of the file system: the
 * read-only shim and toolchain paths (small files copied in, the rest
 * bound), the working directory, nothing writable but the exec root and
 * /tmp, nothing of the host beyond the read-only paths, and no descriptor
 * of the worker's.
 */
#include "sandbox_fixture.h"

/* The shim (a fresh copy in every sandbox) is read-only to the action. */
Test(sandbox, shim_is_read_only)
{
	cr_assert_str_eq(sh_ok("stat -c '%a' /.reap/env; "
			       "if echo x 2>/dev/null > /.reap/env; then echo wrote; fi; "
			       "if rm -f /.reap/env 2>/dev/null; then echo removed; fi; "
			       "if chmod 777 /.reap/env 2>/dev/null; then echo chmodded; fi"),
			 "555\n");
}

Test(sandbox, working_directory)
{
	const char *argv[] = {"sh", "-c", "pwd; echo made > here.txt", NULL};
	wrk_run_result_t res;
	cr_assert_str_eq(run_ok("a/b", std_env, argv, &res), "/build/a/b\n");
	char p[400];
	snprintf(p, sizeof(p), "%s/a/b/here.txt", root);
	cr_assert_str_eq(slurp(p), "made\n");
}

Test(sandbox, bad_working_directory)
{
	const char *argv[] = {"true", NULL};
	const char *bad[] = {"../x", "/abs", "a/../../x", "a//b", "./a", "a/", ".."};
	wrk_run_result_t res;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_eq(run(bad[i], std_env, argv, 30000, NULL, &res), REAP_E_INVALID, "%s",
			     bad[i]);
	const char *none[] = {NULL};
	cr_assert_eq(run("", std_env, none, 30000, NULL, &res), REAP_E_INVALID);
	const char *badenv[] = {"=x", NULL};
	cr_assert_eq(run("", badenv, argv, 30000, NULL, &res), REAP_E_INVALID);
}

Test(sandbox, bad_ro_paths)
{
	const char *bad[][1] = {{"/"}, {"usr"}, {"/usr/../etc"}, {"/build"}, {"/tmp/x"}, {"/usr/"}};
	const char *argv[] = {"true", NULL};
	wrk_sandbox_config_t saved = sb_cfg;
	wrk_run_result_t res;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sb_cfg.ro_paths = bad[i];
		sb_cfg.n_ro_paths = 1;
		cr_assert_eq(run("", std_env, argv, 30000, NULL, &res), REAP_E_INVALID, "%s",
			     bad[i][0]);
	}
	sb_cfg = saved;
}

Test(sandbox, writes_only_inside_the_exec_root)
{
	const char *argv[] = {"sh", "-c",
			      "for f in /usr/x /etc/x /x /bin/x /proc/x /etc/alternatives/x /build/../x; do "
			      "  if touch $f 2>/dev/null; then echo wrote $f; fi; done; "
			      "echo inside > /build/inside.txt; mkdir -p /build/d/e; touch /build/d/e/f",
			      NULL};
	wrk_run_result_t res;
	cr_assert_str_eq(run_ok("", std_env, argv, &res), "");
	char p[400];
	snprintf(p, sizeof(p), "%s/inside.txt", root);
	cr_assert_str_eq(slurp(p), "inside\n");
	snprintf(p, sizeof(p), "%s/d/e/f", root);
	cr_assert_eq(access(p, F_OK), 0);
	cr_assert_neq(access("/usr/x", F_OK), 0);
}

Test(sandbox, fresh_tmp_and_hidden_host)
{
	char marker[400];
	snprintf(marker, sizeof(marker), "%s/host-secret", tmp);
	th_write_file(marker, "secret\n");
	cr_assert_str_eq(sh_ok("ls -A /tmp"), "");
	char script[1200];
	snprintf(script, sizeof(script),
		 "for p in '%s' '%s' /root /home /etc/shadow /etc/hostname /var /opt /run; do "
		 "  if [ -e \"$p\" ]; then echo visible $p; fi; done",
		 tmp, marker);
	cr_assert_str_eq(sh_ok(script), "");
	/* the toolchain paths are there, merged-/usr symlinks reproduced */
	cr_assert_str_eq(sh_ok("readlink /bin; readlink /lib; test -f /etc/ld.so.cache && echo ok"),
			 "usr/bin\nusr/lib\nok\n");
	/* a fresh pid namespace, and the hostname is not the worker's */
	cr_assert_str_eq(sh_ok("cat /proc/sys/kernel/hostname; ls /proc | grep -c '^[0-9]' | "
			       "awk '$1 < 8 {print \"few\"}'"),
			 "localhost\nfew\n");
	/* no capabilities, even when the worker runs as root */
	cr_assert_str_eq(sh_ok("grep CapEff /proc/self/status | tr -d '\\t '"),
			 "CapEff:0000000000000000\n");
}

/* The whole of a host file (small ones only). */
static char *host_file(const char *path)
{
	static char buf[1 << 20];
	cr_assert_str_neq(th_read_file(path, buf, sizeof(buf)), "", "%s", path);
	return buf;
}

/* Small ro_paths files are copied in by bwrap, not bound: same bytes, and just as read-only. */
Test(sandbox, small_ro_files_are_read_only_copies)
{
	const char *want = host_file("/etc/passwd"); /* its own buffer, not sh_ok's */
	cr_assert_str_eq(sh_ok("cat /etc/passwd"), want);
	cr_assert_str_eq(sh_ok("cmp /etc/ld.so.cache /etc/ld.so.cache && stat -c %a /etc/passwd "
			       "/etc/group /etc/ld.so.cache"),
			 "444\n444\n444\n");
	cr_assert_str_eq(sh_ok("for f in /etc/passwd /etc/group; do "
			       "(echo x >> $f) 2>/dev/null && echo wrote $f; "
			       "chmod 666 $f 2>/dev/null && echo chmod $f; "
			       "rm -f $f 2>/dev/null; mv $f /build/x 2>/dev/null; "
			       "test -f $f || echo gone $f; done; "
			       "touch /etc/new 2>/dev/null && echo created; true"),
			 "");
	/* nothing of it reaches the command as an open descriptor */
	cr_assert_str_eq(sh_ok("ls /proc/self/fd | sort -n | tr '\\n' ' '"), "0 1 2 3 ");
}

/*
 * A copy never shows more than a bind would: a file the sandbox uid may not
 * read stays a bind (and unreadable), and an executable keeps its x bits.
 */
Test(sandbox, ro_file_copies_keep_permissions)
{
	char *dir = outside, secret[128], tool[128], cmd[600];
	if (geteuid() != 0)
		cr_skip_test("needs a root worker (actions then run as another uid)");
	snprintf(outside, sizeof(outside), "/var/tmp/reap-sbtest-XXXXXX");
	cr_assert_not_null(mkdtemp(outside)); /* teardown removes it, whatever happens */
	cr_assert_eq(chmod(dir, 0755), 0);
	snprintf(secret, sizeof(secret), "%s/secret", dir);
	snprintf(tool, sizeof(tool), "%s/tool", dir);
	FILE *f = fopen(secret, "w");
	cr_assert_not_null(f);
	fputs("root only\n", f);
	fclose(f);
	cr_assert_eq(chmod(secret, 0600), 0);
	f = fopen(tool, "w");
	cr_assert_not_null(f);
	fputs("#!/bin/sh\necho ran\n", f);
	fclose(f);
	cr_assert_eq(chmod(tool, 0755), 0);

	const char *paths[sizeof(ro_paths) / sizeof(ro_paths[0]) + 2];
	size_t n = 0;
	for (; n < sizeof(ro_paths) / sizeof(ro_paths[0]); n++)
		paths[n] = ro_paths[n];
	paths[n++] = secret;
	paths[n++] = tool;
	wrk_sandbox_config_t saved = sb_cfg;
	sb_cfg.ro_paths = paths;
	sb_cfg.n_ro_paths = n;
	snprintf(cmd, sizeof(cmd), "cat %s 2>/dev/null || echo denied; %s; stat -c %%a %s", secret,
		 tool, tool);
	cr_assert_str_eq(sh_ok(cmd), "denied\nran\n555\n");
	sb_cfg = saved;
}

Test(sandbox, no_leaked_descriptors)
{
	int fd = open("/etc/hostname", O_RDONLY); /* not close-on-exec on purpose */
	cr_assert_geq(fd, 0);
	cr_assert_str_eq(sh_ok("ls /proc/self/fd | sort -n | tr '\\n' ' '"), "0 1 2 3 ");
	close(fd);
}
