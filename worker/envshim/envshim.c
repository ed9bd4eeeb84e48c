/*
 * envshim.c - the first program bwrap starts inside the sandbox.
 *
 *   /.reap/env FD
 *
 * reads from descriptor FD, until its end, what to run: NUL-terminated
 * strings, the working folder first, then one NAME=VALUE per environment
 * variable, an empty string, then PROG and its arguments. It closes FD,
 * enters the folder and execvp(PROG) with exactly that environment: argv[0]
 * searched in the environment's PATH ("/bin:/usr/bin" when there is none, an
 * empty entry meaning the working folder), a file the kernel does not
 * recognise run by /bin/sh, the first permission error kept while the search
 * goes on.
 *
 * Why the command comes through a descriptor, not bwrap's command line: the
 * worker starts the sandbox before it knows the action (wrk_sandbox_arm in
 * sandbox.c), so that building the namespaces and the root is off the
 * action's path; the shim waits in read() until the worker sends the
 * command. It also keeps the environment exact: bwrap exports PWD after its
 * chdir, and the shim's own environment is simply not used.
 *
 * Why not /usr/bin/env: on the VMs reap runs on an exec costs 1.5-3 ms, most
 * of it the dynamic loader and libc start-up. This program has neither: it
 * is linked static and freestanding (no libc; the system calls it makes are
 * below), so starting it costs about what the kernel's exec does. It is
 * built by worker/CMakeLists.txt, embedded in reap-worker, and handed to
 * bwrap as a memfd (--ro-bind-data), so the sandbox needs no host file.
 *
 * Exit status when PROG cannot be run, as env(1): 127 not found, 126 other
 * (the folder cannot be entered, too many or too long arguments); 125 when
 * the spec is malformed or cannot be read.
 */
#include "envshim.h"

#define SYS_EXIT_GROUP_ 0
#define SYS_WRITE_ 1
#define SYS_EXECVE_ 2
#define SYS_READ_ 3
#define SYS_CLOSE_ 4
#define SYS_CHDIR_ 5

typedef unsigned long size_t_;

#if defined(ENVSHIM_HOSTED)
/* Any other architecture: the same program on libc's syscall(2). */
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
#define E_PERM EPERM
#define E_NOENT ENOENT
#define E_INTR EINTR
#define E_2BIG E2BIG
#define E_NOEXEC ENOEXEC
#define E_NOMEM ENOMEM
#define E_ACCES EACCES
#define E_NODEV ENODEV
#define E_NOTDIR ENOTDIR
#define E_TXTBSY ETXTBSY
#define E_NAMETOOLONG ENAMETOOLONG
#define E_LOOP ELOOP
#define E_TIMEDOUT ETIMEDOUT
#define E_HOSTDOWN EHOSTDOWN
#define E_STALE ESTALE
static long sys3(int which, long a, long b, long c)
{
	static const long nr[] = {SYS_exit_group, SYS_write, SYS_execve,
				  SYS_read,       SYS_close, SYS_chdir};
	long r = syscall(nr[which], a, b, c);
	return r < 0 ? -errno : r;
}
#else
/* Linux's generic errno numbers (x86_64 and aarch64 share them). */
#define E_PERM 1
#define E_NOENT 2
#define E_INTR 4
#define E_2BIG 7
#define E_NOEXEC 8
#define E_NOMEM 12
#define E_ACCES 13
#define E_NODEV 19
#define E_NOTDIR 20
#define E_TXTBSY 26
#define E_NAMETOOLONG 36
#define E_LOOP 40
#define E_TIMEDOUT 110
#define E_HOSTDOWN 112
#define E_STALE 116

#if defined(__x86_64__)
static long sys3(int which, long a, long b, long c)
{
	static const long nr[] = {231, 1, 59, 0, 3, 80};
	long r;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "a"(nr[which]), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return r;
}
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %rbp, %rbp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call envshim_main\n"
	"	hlt\n");
#elif defined(__aarch64__)
static long sys3(int which, long a, long b, long c)
{
	static const long nr[] = {94, 64, 221, 63, 57, 49};
	register long x8 __asm__("x8") = nr[which];
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	__asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
	return x0;
}
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x0, sp\n"
	"	bl envshim_main\n"
	"	brk #0\n");
#else
#error "envshim: build with -DENVSHIM_HOSTED on this architecture"
#endif
#endif /* ENVSHIM_HOSTED */

static size_t_ slen(const char *s)
{
	size_t_ n = 0;
	while (s[n] != '\0')
		n++;
	return n;
}

static int starts(const char *s, const char *prefix)
{
	while (*prefix != '\0')
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

static __attribute__((noreturn)) void leave(int code)
{
	for (;;)
		sys3(SYS_EXIT_GROUP_, code, 0, 0);
}

static void say(const char *s)
{
	size_t_ n = slen(s);
	while (n > 0) {
		long w = sys3(SYS_WRITE_, 2, (long)s, (long)n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t_)w;
	}
}

static const char *reason(long err)
{
	switch (err) {
	case E_NOENT: return "No such file or directory";
	case E_NOEXEC: return "Exec format error";
	case E_ACCES: return "Permission denied";
	case E_NOTDIR: return "Not a directory";
	case E_NAMETOOLONG: return "File name too long";
	case E_PERM: return "Operation not permitted";
	case E_2BIG: return "Argument list too long";
	case E_NOMEM: return "Cannot allocate memory";
	case E_TXTBSY: return "Text file busy";
	case E_LOOP: return "Too many levels of symbolic links";
	default: return "cannot execute";
	}
}

static __attribute__((noreturn)) void fail(const char *name, long err)
{
	say("reap: cannot run '");
	say(name);
	say("': ");
	say(reason(err));
	say("\n");
	leave(err == E_NOENT ? 127 : 126);
}

/*
 * execve(path); when the kernel does not know the format, /bin/sh path ARGS
 * (argv[-1] is a slot shim() leaves free for this). The error, negative.
 */
static long run(const char *path, char **argv, char **envp)
{
	long r = sys3(SYS_EXECVE_, (long)path, (long)argv, (long)envp);
	if (r == -E_NOEXEC) {
		char *sh_argv0 = argv[-1], *arg0 = argv[0];
		argv[-1] = (char *)"/bin/sh";
		argv[0] = (char *)path;
		r = sys3(SYS_EXECVE_, (long)"/bin/sh", (long)(argv - 1), (long)envp);
		argv[-1] = sh_argv0;
		argv[0] = arg0;
	}
	return r;
}

static char pathbuf[8192];
static char spec[ENVSHIM_SPEC_MAX];
/* envp, its NULL, the slot run() may use, argv, its NULL */
static char *ptrs[ENVSHIM_STRINGS_MAX + 3];

static __attribute__((noreturn)) void bad_spec(const char *why)
{
	say("reap: ");
	say(why);
	say("\n");
	leave(125);
}

/* Read the whole spec from fd into spec[]; its length. */
static size_t_ read_spec(long fd)
{
	size_t_ len = 0;
	for (;;) {
		long n = len < sizeof(spec) ? sys3(SYS_READ_, fd, (long)(spec + len),
						   (long)(sizeof(spec) - len))
					    : sys3(SYS_READ_, fd, (long)pathbuf, 1);
		if (n == -E_INTR)
			continue;
		if (n < 0)
			bad_spec("cannot read the command");
		if (n == 0)
			return len;
		if (len == sizeof(spec))
			fail("(the command)", E_2BIG);
		len += (size_t_)n;
	}
}

/* execvp(argv[0]) with envp, PATH from search; argv[-1] is free (see run). */
static __attribute__((noreturn)) void exec_search(char **argv, char **envp, const char *search)
{
	const char *file = argv[0];
	long err, first = 0;

	for (const char *c = file; *c != '\0'; c++)
		if (*c == '/')
			fail(file, -run(file, argv, envp));

	size_t_ flen = slen(file);
	for (const char *p = search;;) {
		const char *end = p;
		while (*end != '\0' && *end != ':')
			end++;
		size_t_ dlen = (size_t_)(end - p), at = 0;
		if (dlen + 1 + flen + 1 > sizeof(pathbuf)) {
			err = E_NAMETOOLONG;
		} else {
			for (size_t_ i = 0; i < dlen; i++)
				pathbuf[at++] = p[i];
			if (dlen > 0)
				pathbuf[at++] = '/';
			for (size_t_ i = 0; i <= flen; i++)
				pathbuf[at++] = file[i];
			err = -run(pathbuf, argv, envp);
		}
		switch (err) {
		case E_ACCES:
			if (first == 0)
				first = err;
			break;
		case E_NOENT:
		case E_NOTDIR:
		case E_NAMETOOLONG:
		case E_NODEV:
		case E_TIMEDOUT:
		case E_HOSTDOWN:
		case E_STALE:
			break;
		default:
			fail(file, err);
		}
		if (*end == '\0')
			break;
		p = end + 1;
	}
	fail(file, first != 0 ? first : E_NOENT);
}

static __attribute__((noreturn)) void shim(long argc, char **argv)
{
	const char *search = "/bin:/usr/bin", *dir;
	long fd = 0;
	size_t_ len, at, np = 0;
	char **envp = ptrs, **args;

	if (argc != 2 || argv[1][0] == '\0')
		bad_spec("usage: /.reap/env FD");
	for (const char *c = argv[1]; *c != '\0'; c++) {
		if (*c < '0' || *c > '9' || fd > 100000)
			bad_spec("usage: /.reap/env FD");
		fd = fd * 10 + (*c - '0');
	}
	len = read_spec(fd);
	sys3(SYS_CLOSE_, fd, 0, 0);
	if (len == 0 || spec[len - 1] != '\0')
		bad_spec("malformed command");

	/* the folder; the environment up to an empty string; the arguments */
	dir = spec;
	at = slen(spec) + 1;
	while (at < len && spec[at] != '\0') {
		if (np >= ENVSHIM_STRINGS_MAX)
			fail("(the command)", E_2BIG);
		if (starts(spec + at, "PATH="))
			search = spec + at + 5;
		ptrs[np++] = spec + at;
		at += slen(spec + at) + 1;
	}
	if (at >= len)
		bad_spec("malformed command");
	at++; /* the empty string */
	ptrs[np++] = 0;
	args = ptrs + np + 1; /* one free slot before argv */
	np++;
	while (at < len) {
		if (np >= ENVSHIM_STRINGS_MAX + 2)
			fail("(the command)", E_2BIG);
		ptrs[np++] = spec + at;
		at += slen(spec + at) + 1;
	}
	ptrs[np] = 0;
	if (args[0] == 0 || args[0][0] == '\0')
		bad_spec("malformed command");
	long err = sys3(SYS_CHDIR_, (long)dir, 0, 0);
	if (err < 0) {
		say("reap: cannot enter the working folder '");
		say(dir);
		say("': ");
		say(reason(-err));
		say("\n");
		leave(126);
	}
	exec_search(args, envp, search);
}

#if defined(ENVSHIM_HOSTED)
int main(int argc, char **argv)
{
	shim(argc, argv);
}
#else
/* sp: what the kernel left at the process's entry (argc, argv..., 0, envp..., 0). */
__attribute__((used, noreturn)) void envshim_main(long *sp);
__attribute__((used, noreturn)) void envshim_main(long *sp)
{
	shim(sp[0], (char **)(sp + 1));
}
#endif
