/*
 * cli.h - shared parts of the `reap` command-line tool (cmd/reap.c and
 * cmd/cli_*.c): the global options and the connection they describe, exit
 * codes, digest and output helpers, and the progress line.
 *
 * Every subcommand is `int cli_NAME(cli_t *c, int argc, char **argv)`
 * returning an exit code (CLI_EXIT_*); argv[0] is the subcommand's name.
 * Errors are printed to stderr as "reap: ..." by the subcommand itself.
 * Client-side CAS work goes through the worker's CAS client (worker.h,
 * worker_int.h): ByteStream and batched uploads, GetTree, verified reads.
 */
#ifndef REAP_CMD_CLI_H
#define REAP_CMD_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "common/digest.h"
#include "common/err.h"
#include "rpc/rpc.h"
#include "worker/worker.h"

/* Exit codes (documented in `reap --help`). */
enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_USAGE = 1,       /* bad arguments */
	CLI_EXIT_NOT_FOUND = 2,   /* blob, action or result not found */
	CLI_EXIT_AUTH = 3,        /* permission denied, unauthenticated, invalid token */
	CLI_EXIT_UNAVAILABLE = 4, /* cannot connect, server unavailable, deadline */
	CLI_EXIT_REMOTE = 5,      /* the server refused or failed the request */
	CLI_EXIT_LOCAL = 6,       /* a local file could not be read or written */
	CLI_EXIT_EXEC_TIMEOUT = 124, /* execute: the action timed out */
	CLI_EXIT_EXEC_NOT_RUN = 125, /* execute: the action could not run */
};

#define CLI_UNARY_MS 60000
#define CLI_PROGRESS_MIN ((int64_t)4 << 20) /* show progress above this many bytes */

typedef struct cli {
	const char *server;   /* HOST:PORT */
	const char *instance; /* "" by default */
	const char *token_file;
	const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
	bool tls;  /* TLS even without a CA file (system roots) */
	bool json; /* machine-readable output on stdout */
	rpc_channel_t *ch; /* made by cli_connect */
	wrk_cas_t *cas;    /* made by cli_connect */
} cli_t;

/** Open the channel (TLS, token) and the CAS client; an exit code. */
int cli_connect(cli_t *c);

/** Free what cli_connect made. */
void cli_close(cli_t *c);

/** Print "reap: what: message" and return the exit code for err. */
int cli_fail(int err, const reap_errbuf_t *eb, const char *what);

/** The exit code for a reap error code. */
int cli_exit_for(int err);

/** An rpc call's outcome as a reap error with eb set ("what: message"). */
int cli_call_err(int rc, const rpc_status_t *st, const char *what, reap_errbuf_t *eb);

/** Parse "HASH/SIZE" (or "HASH-SIZE", or "HASH SIZE"); usage message on failure. */
int cli_digest_parse(const char *s, reap_digest_t *out);

/** "hash/size" into buf (REAP_HASH_HEX_LEN + 24 bytes). */
const char *cli_digest_str(const reap_digest_t *d, char *buf, size_t cap);

/** The digest of a Digest message; REAP_E_INVALID when absent or malformed. */
int cli_digest_from_pb(const Build__Bazel__Remote__Execution__V2__Digest *pb, reap_digest_t *out);

/** A JSON string "hash/size" for d. */
json_t *cli_json_digest(const reap_digest_t *d);

/** Print j (pretty) on stdout and drop the reference. */
void cli_json_print(json_t *j);

/** "1.5 MiB" */
const char *cli_bytes(int64_t n, char *buf, size_t cap);

/* ---- progress ---- */

typedef struct cli_progress cli_progress_t;

/**
 * A progress line on stderr for a transfer of about total bytes, redrawn
 * a few times a second from probe(ctx) (bytes done so far), when stderr is
 * a terminal and total is over CLI_PROGRESS_MIN; NULL (nothing shown)
 * otherwise. Stop it before printing anything else.
 */
cli_progress_t *cli_progress_start(const char *label, int64_t total,
				   int64_t (*probe)(void *ctx), void *ctx);

/** Stop and erase the line. NULL is a no-op. */
void cli_progress_stop(cli_progress_t *p);

/** Bytes this process has read from files so far (/proc/self/io rchar), or -1. */
int64_t cli_read_bytes(void *unused);

/* ---- trees (cli_tree.c) ---- */

typedef struct cli_tree_summary {
	int64_t files, dirs, symlinks, bytes; /* as laid out: a subtree counts each time it occurs */
	int64_t distinct_dirs;
} cli_tree_summary_t;

/** Summarize the Directory tree at root (GetTree). */
int cli_tree_summary(cli_t *c, const reap_digest_t *root, cli_tree_summary_t *out,
		     reap_errbuf_t *eb);

/**
 * Materialize the tree at root into dir (created; must not exist or be
 * empty): folders, regular files with their executable bit (0755/0644
 * before the umask), symlinks. Names and symlinks are checked like the
 * worker's staging does. REAP_E_PRECONDITION when blobs are missing.
 */
int cli_tree_download(cli_t *c, const reap_digest_t *root, const char *dir, reap_errbuf_t *eb);

/**
 * Upload the file or folder at path: *d is a file's digest (*is_dir false)
 * or a folder's root Directory digest (*is_dir true). Files are marked
 * executable from their mode; symlinks inside a folder become symlink nodes
 * (absolute targets are refused); only blobs FindMissingBlobs reports
 * missing are sent.
 */
int cli_upload_path(cli_t *c, const char *path, reap_digest_t *d, bool *is_dir,
		    reap_errbuf_t *eb);

/** Download blob d into the open file fd (streamed; progress when large). */
int cli_download_fd(cli_t *c, const reap_digest_t *d, int fd, reap_errbuf_t *eb);

/**
 * Fetch the outputs of ar whose path allowed() accepts into the current
 * folder (cli_exec_out.c): files and symlinks replace what is there, a
 * folder is materialized next to its path and then swapped in.
 */
int cli_exec_outputs(cli_t *c, const Build__Bazel__Remote__Execution__V2__ActionResult *ar,
		     bool (*allowed)(const void *ctx, const char *path), const void *ctx,
		     reap_errbuf_t *eb);

/* ---- subcommands ---- */

int cli_upload(cli_t *c, int argc, char **argv);
int cli_download(cli_t *c, int argc, char **argv);
int cli_cat(cli_t *c, int argc, char **argv);
int cli_action(cli_t *c, int argc, char **argv);
int cli_execute(cli_t *c, int argc, char **argv);
int cli_status(cli_t *c, int argc, char **argv);
int cli_auth(cli_t *c, int argc, char **argv);

#endif
