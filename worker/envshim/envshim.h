/*
 * envshim.h - what the worker and the sandbox's shim (envshim.c) agree on:
 * the size limits of the command spec the worker sends through the control
 * descriptor. Plain macros only: the shim is built freestanding.
 */
#ifndef REAP_WORKER_ENVSHIM_H
#define REAP_WORKER_ENVSHIM_H

/* Most bytes of a spec (every string with its NUL); the shim's buffer. */
#define ENVSHIM_SPEC_MAX (2u << 20)
/* Most strings in a spec (working folder, environment, separator, arguments). */
#define ENVSHIM_STRINGS_MAX (128u << 10)

#endif
