/* contexts.h - code contexts (one kernel each) in sandboxes, the warm pool
   of ready kernels, and runCode. Runs on one context are serialised in
   arrival order; different contexts run in parallel. */
#ifndef SANDBOXD_CONTEXTS_H
#define SANDBOXD_CONTEXTS_H

#include <jansson.h>

#include "kernel.h"
#include "sandbox.h"
#include "util.h"

typedef struct _contexts_t contexts_t;

/* mgr and cfg are borrowed. Registers itself for the manager's sandbox
   start and stop notifications. Caller owns the result. */
contexts_t *contexts_new (sandbox_mgr_t *mgr, const config_t *cfg, err_t *err);
void contexts_destroy (contexts_t **self_p);

int contexts_create (contexts_t *self, const char *tenant, const char *sid, json_t *body,
                     json_t **out, err_t *err);
/* The same with the context id chosen by the caller (a 409 when the
   sandbox has one of that id); NULL id = a generated one. */
int contexts_create_as (contexts_t *self, const char *tenant, const char *sid, json_t *body,
                        const char *id, json_t **out, err_t *err);
int contexts_list (contexts_t *self, const char *tenant, const char *sid, json_t **out, err_t *err);
int contexts_get (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                  json_t **out, err_t *err);
int contexts_delete (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                     err_t *err);
int contexts_interrupt (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                        err_t *err);
int contexts_restart (contexts_t *self, const char *tenant, const char *sid, const char *ctx_id,
                      json_t **out, err_t *err);

/* A validated runCode request, ready to run (see contexts_run_prepare). */
typedef struct _code_run_t code_run_t;

/* Validate body {code, context_id? | language?, timeout_ms?} and resolve
   the context (creating the default context of the language on first use).
   Errors here (400, 404, 409) come before any output. Caller owns the run
   and must pass it to contexts_run_execute or contexts_run_free. */
code_run_t *contexts_run_prepare (contexts_t *self, const char *tenant, const char *sid,
                                  json_t *body, err_t *err);

/* Wait for the context's turn, run, and return the Execution object
   (caller owns). Streaming events go to sink as they happen. Frees run. */
json_t *contexts_run_execute (code_run_t *run, kernel_sink_fn *sink, void *arg, err_t *err);
void contexts_run_free (code_run_t *run);

/* Gateway front ends: a kernel channel (kernel.h) to the context's kernel,
   started first if it has none or it died (waiting for the context's turn
   to do so). *gen identifies that kernel. Caller owns the channel. */
kernel_chan_t *contexts_channel_open (contexts_t *self, const char *tenant, const char *sid,
                                      const char *ctx_id, uint64_t *gen, err_t *err);

/* Is the kernel of generation gen still the context's live kernel? 0 yes,
   1 no (replaced, restarted or dead: reopen the channel), -1 the context
   is gone. */
int contexts_channel_check (contexts_t *self, const char *tenant, const char *sid,
                            const char *ctx_id, uint64_t gen);

#endif
