/* sessions.h - persistent shells (sessions) and background processes in a
   sandbox: validated requests turned into agent operations (see
   docs/agent-protocol.md). The agent holds their state, so they survive a
   broker restart and die with their sandbox. */
#ifndef SANDBOXD_SESSIONS_H
#define SANDBOXD_SESSIONS_H

#include <jansson.h>

#include "sandbox.h"
#include "util.h"

/* POST …/sessions {id?, env?, cwd?} → {id, cwd, env}. */
int sessions_create (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t *body,
                     json_t **out, err_t *err);
/* GET …/sessions → {sessions: [{id, busy}]}. */
int sessions_list (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t **out,
                   err_t *err);
/* GET …/sessions/{session} → {id, cwd, env} (the shell's current state). */
int sessions_get (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *session,
                  json_t **out, err_t *err);
int sessions_delete (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *session,
                     err_t *err);

/* Make sure the sandbox's default session exists (opened with the sandbox
   env in /workspace). cid is the sandbox's container. */
int sessions_ensure_default (sandbox_mgr_t *mgr, const char *cid, json_t *env, err_t *err);

/* POST …/processes {command, cwd?, env?, session?} → a process object
   {id, pid, command, status, exit_code, signal, started_at, ended_at}. */
int processes_start (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t *body,
                     json_t **out, err_t *err);
int processes_list (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t **out,
                    err_t *err);
/* proc is a process id ("p-3") or its pid ("1234"). */
int processes_get (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *proc,
                   json_t **out, err_t *err);
/* Signal one process (signame NULL: TERM) → the process object. */
int processes_signal (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *proc,
                      const char *signame, json_t **out, err_t *err);
/* Signal every process (signame NULL: KILL) → {count}. */
int processes_kill_all (sandbox_mgr_t *mgr, const char *tenant, const char *sid,
                        const char *signame, json_t **out, err_t *err);
/* The buffered output → {id, stdout, stderr, truncated}. */
int processes_logs (sandbox_mgr_t *mgr, const char *tenant, const char *sid, const char *proc,
                    json_t **out, err_t *err);
/* For following: the request to send to the agent (caller owns) and the
   sandbox's cid, after resolving proc. */
json_t *processes_follow_request (sandbox_mgr_t *mgr, const char *tenant, const char *sid,
                                  const char *proc, char *cid, err_t *err);

/* True for the signal names the agent accepts (TERM, KILL, INT, HUP, QUIT,
   USR1, USR2). */
bool sessions_valid_signal (const char *name);

#endif
