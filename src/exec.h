/* exec.h - running one command in a sandbox through its agent, either
   collected into one result or consumed event by event for streaming. */
#ifndef SANDBOXD_EXEC_H
#define SANDBOXD_EXEC_H

#include <jansson.h>

#include "sandbox.h"
#include "util.h"

typedef struct _exec_t exec_t;

typedef enum {
    EXEC_EV_START,
    EXEC_EV_STDOUT,
    EXEC_EV_STDERR,
    EXEC_EV_EXIT,
    EXEC_EV_ERROR,
} exec_ev_kind_t;

typedef struct {
    exec_ev_kind_t kind;
    json_t *header; /* the agent's event object (validated) */
    char *data;     /* output bytes for STDOUT/STDERR */
    size_t len;
} exec_event_t;

/* Validate body ({command, cwd?, env?, timeout_ms?, stdin?, session?}),
   resolve the sandbox and start the command: in the named session, or in
   the sandbox's default session (made on first use), or — with cwd — on
   its own in that directory. Returns once the command has started, so
   that errors such as a missing cwd (422 bad_cwd) come back as *err before
   any output. The START event is consumed; exec_pid tells its pid. Caller
   owns the result and must destroy it. */
exec_t *exec_start (sandbox_mgr_t *mgr, const char *tenant, const char *id, json_t *body,
                    err_t *err);

/* Follow an agent call that produces exec-style events (stdout, stderr,
   exit) without a start event and without a deadline, e.g. a process's
   logs with follow. req is borrowed. Caller owns the result. */
exec_t *exec_attach (sandbox_mgr_t *mgr, const char *cid, json_t *req, err_t *err);

int exec_pid (const exec_t *self);

/* Next event, waiting at most timeout_ms. 1 with *ev filled (clear it with
   exec_event_clear), 0 on timeout, -1 with *err when the sandbox stopped
   answering or the command overran its deadline by the grace period. After
   an EXIT or ERROR event there are no more. */
int exec_next (exec_t *self, int timeout_ms, exec_event_t *ev, err_t *err);
void exec_event_clear (exec_event_t *ev);

/* Run to the end and build {stdout, stderr, exit_code, duration_ms,
   timed_out, truncated}. Caller owns the result. */
json_t *exec_collect (exec_t *self, err_t *err);

/* Kill the command's process group if it is still running, then free. */
void exec_destroy (exec_t **self_p);

#endif
