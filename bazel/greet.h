#ifndef REAP_EXAMPLE_GREET_H
#define REAP_EXAMPLE_GREET_H

#include <stddef.h>

/* Writes "Hello, <name>!" into buf (NUL-terminated, truncated to len).
 * Returns the length the full greeting needs, excluding the NUL. */
int greet_format(char *buf, size_t len, const char *name);

#endif
