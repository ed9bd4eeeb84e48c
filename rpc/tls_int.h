/*
 * tls_int.h - TLS credentials and peer certificate identity, private to
 * rpc/ (tls.c). server.c and client.c turn the rpc.h TLS configs into gRPC
 * credentials here; call.c asks for the verified client identity of a call.
 * Every function here needs gRPC initialised (rpc_grpc_ref).
 */
#ifndef REAP_RPC_TLS_INT_H
#define REAP_RPC_TLS_INT_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include "rpc/rpc.h"

/*
 * Read and check cfg's PEM files (certificate chain, matching unencrypted
 * key, client CAs) and build server credentials into *out (caller
 * releases). REAP_E_INVALID for an inconsistent config or a file without
 * the expected PEM content, REAP_E_IO when a file cannot be read; eb names
 * the setting and the file. Key material is wiped from our buffers.
 */
int rpc_tls_server_creds(const rpc_tls_server_t *cfg, grpc_server_credentials **out,
			 reap_errbuf_t *eb);

/* The same for a client: *out are channel credentials (caller releases). */
int rpc_tls_channel_creds(const rpc_tls_client_t *cfg, grpc_channel_credentials **out,
			  reap_errbuf_t *eb);

/* A short name for the server's TLS mode, for logs ("plaintext", "tls", ...). */
const char *rpc_tls_server_mode(const rpc_tls_server_t *cfg);

/*
 * The verified client certificate identity of a server call (first SAN,
 * else the common name) as a new malloc'd string, or NULL when the call has
 * none (plaintext, no certificate, or nothing usable in it).
 */
char *rpc_tls_peer_subject(grpc_call *call);

#endif
