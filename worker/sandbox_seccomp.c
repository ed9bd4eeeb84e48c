/*
 * sandbox_seccomp.c - the seccomp filter every action runs under, handed to
 * bubblewrap as a BPF program (bwrap --seccomp FD).
 *
 * The filter allows everything except what an action never needs and an
 * escape usually does: ptrace and cross-process memory access, every mount
 * call (old and new API), namespace creation and joining (unshare, setns,
 * clone with a CLONE_NEW* flag), kexec, kernel modules, keyrings, bpf,
 * perf_event_open, userfaultfd, io_uring (its operations bypass seccomp),
 * open_by_handle_at and terminal input injection (TIOCSTI). Denied calls
 * fail with EPERM, so tools report an ordinary error. clone3 fails with
 * ENOSYS instead: its flags live in memory a filter cannot read, and ENOSYS
 * makes libc fall back to clone, whose flags are checked.
 *
 * The program is compiled once per process (libseccomp) and kept in
 * memory; each run gets its own memfd holding a copy, because bwrap reads
 * the descriptor from its current offset and runs may start concurrently.
 * On x86_64 the 32-bit and x32 ABIs get the same rules (int 0x80 would
 * otherwise reach an unfiltered syscall table).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker/worker_int.h"

/* Calls denied with EPERM (names unknown to this libseccomp or arch are skipped). */
static const char *const denied[] = {
	"ptrace", "process_vm_readv", "process_vm_writev",
	"mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen",
	"fsconfig", "fsmount", "fspick", "mount_setattr",
	"unshare", "setns",
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"keyctl", "add_key", "request_key",
	"bpf", "perf_event_open", "userfaultfd",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"open_by_handle_at", "name_to_handle_at", "acct", "swapon", "swapoff", "reboot",
	"syslog", "quotactl", "lookup_dcookie", "uselib", "iopl", "ioperm", "vhangup",
};

static const uint64_t clone_ns_flags[] = {
	CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
	CLONE_NEWCGROUP,
#ifdef CLONE_NEWTIME
	CLONE_NEWTIME,
#endif
};

static struct {
	pthread_once_t once;
	void *prog;  /* the BPF program (sock_filter array) */
	size_t len;
	int err;
	char msg[160];
} filter = {.once = PTHREAD_ONCE_INIT};

static int build(scmp_filter_ctx ctx)
{
	int rc;
	if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
		if ((rc = seccomp_arch_add(ctx, SCMP_ARCH_X86)) != 0 && rc != -EEXIST)
			return rc;
		if ((rc = seccomp_arch_add(ctx, SCMP_ARCH_X32)) != 0 && rc != -EEXIST)
			return rc;
	}
	for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++) {
		int nr = seccomp_syscall_resolve_name(denied[i]);
		if (nr == __NR_SCMP_ERROR)
			continue;
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0)) != 0)
			return rc;
	}
	/* clone(flags, ...): one rule per namespace flag (rules on one call are OR'ed) */
	for (size_t i = 0; i < sizeof(clone_ns_flags) / sizeof(clone_ns_flags[0]); i++)
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
					   SCMP_A0(SCMP_CMP_MASKED_EQ, clone_ns_flags[i],
						   clone_ns_flags[i]))) != 0)
			return rc;
	int nr = seccomp_syscall_resolve_name("clone3");
	if (nr != __NR_SCMP_ERROR && (rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0)) != 0)
		return rc;
	/* ioctl(fd, TIOCSTI/TIOCLINUX): typing into a terminal the worker may share */
	const uint64_t ioctls[] = {TIOCSTI, TIOCLINUX};
	for (size_t i = 0; i < 2; i++)
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
					   SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, ioctls[i]))) != 0)
			return rc;
	return 0;
}

/* Compile the filter and read the exported program back into memory. */
static void compile(void)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int fd = -1, rc;
	struct stat st;

	if (ctx == NULL) {
		filter.err = REAP_E_NOMEM;
		snprintf(filter.msg, sizeof(filter.msg), "seccomp_init failed");
		return;
	}
	if ((rc = build(ctx)) != 0) {
		filter.err = REAP_E_INTERNAL;
		snprintf(filter.msg, sizeof(filter.msg), "building the seccomp filter: %s",
			 strerror(-rc));
		goto out;
	}
	if ((fd = memfd_create("reap-seccomp", MFD_CLOEXEC)) < 0 ||
	    (rc = seccomp_export_bpf(ctx, fd)) != 0 || fstat(fd, &st) != 0 || st.st_size <= 0 ||
	    (filter.prog = malloc((size_t)st.st_size)) == NULL ||
	    pread(fd, filter.prog, (size_t)st.st_size, 0) != st.st_size) {
		filter.err = REAP_E_INTERNAL;
		snprintf(filter.msg, sizeof(filter.msg), "exporting the seccomp filter failed");
		free(filter.prog);
		filter.prog = NULL;
		goto out;
	}
	filter.len = (size_t)st.st_size;
out:
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
}

int wrk_seccomp_fd(reap_errbuf_t *eb)
{
	pthread_once(&filter.once, compile);
	if (filter.prog == NULL)
		return reap_errf(eb, filter.err ? filter.err : REAP_E_INTERNAL, "%s", filter.msg);
	return wrk_sb_memfd("reap-seccomp", filter.prog, filter.len, eb);
}
