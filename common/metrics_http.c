/*
 * metrics_http.c - the Prometheus scrape endpoint, served by libmicrohttpd.
 *
 * A separate listener from the gRPC port so that it can stay on loopback
 * (or an operator-only network) while the API is public. One internal
 * polling thread is enough: a scrape is rare and renders in microseconds,
 * and a bounded connection count plus a timeout keep a slow or hostile
 * peer from holding resources. Only GET/HEAD /metrics is served.
 */
#include "common/metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct reap_metrics_http {
	struct MHD_Daemon *daemon;
	reap_metric_registry_t *reg; /* borrowed; NULL is the process-wide one */
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status, const char *text)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	enum MHD_Result ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **req_cls)
{
	reap_metrics_http_t *h = cls;
	char *body = NULL;
	size_t len = 0;

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
	if (strcmp(url, "/metrics") != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND, "not found; try /metrics\n");
	if (reap_metric_registry_render(h->reg, &body, &len) != REAP_OK)
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");

	/* MHD_RESPMEM_MUST_FREE hands body to MHD, which free()s it. */
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_TYPE);
	enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	for (char *p = msg; *p != '\0'; p++)
		if (*p == '"')
			*p = '\'';
	REAP_WARN("metrics_http", "detail=\"%s\"", msg);
}

/* "host:port", "[v6]:port" or ":port" (loopback) into a numeric socket address. */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, reap_errbuf_t *eb)
{
	char host[256];
	const char *port;
	const char *colon = strrchr(addr, ':');

	if (colon == NULL)
		return reap_errf(eb, REAP_E_INVALID, "metrics address \"%s\": expected host:port", addr);
	size_t hlen = (size_t)(colon - addr);
	port = colon + 1;
	if (hlen >= 2 && addr[0] == '[' && addr[hlen - 1] == ']') {
		addr++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host))
		return reap_errf(eb, REAP_E_INVALID, "metrics address: host too long");
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	if (hlen == 0)
		strcpy(host, "127.0.0.1");
	char *end;
	long p = strtol(port, &end, 10);
	if (port[0] == '\0' || *end != '\0' || p < 0 || p > 65535)
		return reap_errf(eb, REAP_E_INVALID, "metrics address \"%s\": bad port", port);

	struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
		return reap_errf(eb, REAP_E_INVALID, "metrics address \"%s\": %s", host,
				 gai_strerror(rc));
	for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
		if (a->ai_family == AF_INET || a->ai_family == AF_INET6) {
			memcpy(ss, a->ai_addr, a->ai_addrlen);
			freeaddrinfo(res);
			return REAP_OK;
		}
	}
	freeaddrinfo(res);
	return reap_errf(eb, REAP_E_INVALID, "metrics address \"%s\": no IPv4/IPv6 address", host);
}

reap_metrics_http_t *reap_metrics_http_start_registry(reap_metric_registry_t *r, const char *addr,
						      int *port_out, reap_errbuf_t *eb)
{
	struct sockaddr_storage ss = {0};
	reap_metrics_http_t *h = NULL;

	if (port_out != NULL)
		*port_out = 0;
	if (addr == NULL)
		addr = REAP_METRICS_DEFAULT_ADDR;
	if (parse_addr(addr, &ss, eb) != REAP_OK)
		return NULL;
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		reap_errf(eb, REAP_E_NOMEM, "metrics listener: out of memory");
		return NULL;
	}
	h->reg = r;

	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	h->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
		MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned int)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024), MHD_OPTION_END);
	if (h->daemon == NULL) {
		reap_errf(eb, REAP_E_IO, "metrics listener: cannot listen on %s", addr);
		free(h);
		return NULL;
	}

	const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
	int port = info != NULL ? info->port : 0;
	if (port == 0) { /* older libmicrohttpd: ask the socket */
		info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_LISTEN_FD);
		struct sockaddr_storage bound;
		socklen_t blen = sizeof(bound);
		if (info != NULL &&
		    getsockname(info->listen_fd, (struct sockaddr *)&bound, &blen) == 0)
			port = ntohs(bound.ss_family == AF_INET6
					     ? ((struct sockaddr_in6 *)&bound)->sin6_port
					     : ((struct sockaddr_in *)&bound)->sin_port);
	}
	if (port_out != NULL)
		*port_out = port;
	REAP_INFO("metrics_listening", "addr=\"%s\" port=%d", addr, port);
	return h;
}

reap_metrics_http_t *reap_metrics_http_start(const char *addr, int *port_out, reap_errbuf_t *eb)
{
	return reap_metrics_http_start_registry(NULL, addr, port_out, eb);
}

void reap_metrics_http_stop(reap_metrics_http_t *h)
{
	if (h == NULL)
		return;
	MHD_stop_daemon(h->daemon);
	free(h);
}
