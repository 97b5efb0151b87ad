/* agent_link.h - the broker's side of the agent protocol (see
   docs/agent-protocol.md). One I/O thread owns every sandbox's ROUTER
   socket; request threads talk to it over inproc, one short-lived DEALER
   per call, so no ZeroMQ socket is ever shared between threads. */
#ifndef SANDBOXD_AGENT_LINK_H
#define SANDBOXD_AGENT_LINK_H

#include <jansson.h>
#include <stddef.h>

#include "util.h"

typedef struct _agent_link_t agent_link_t;
typedef struct _agent_call_t agent_call_t;

/* Start the link thread. max_call_bytes bounds what one call may receive
   from an agent before further output events are dropped. Caller owns the
   result and must destroy it when done. NULL with *err on failure. */
agent_link_t *agent_link_new (size_t max_call_bytes, err_t *err);

/* Stop the thread and close every socket. Sandboxes keep running. */
void agent_link_destroy (agent_link_t **self_p);

/* Length of an agent key: 32 random bytes in lower-case hex. */
#define AGENT_KEY_HEX 64

/* Bind the ROUTER socket for container cid at the unix socket path
   sock_path (its directory must be one only the broker writes). Any stale
   socket file there is replaced. Only a peer that authenticates with
   ZMQ_PLAIN as user "agent" with password key (AGENT_KEY_HEX hex digits,
   copied) counts as cid's agent: nothing from any other peer is read, and
   only the authenticated connection going away fails calls in flight.
   0 or -1 with *err. */
int agent_link_attach (agent_link_t *self, const char *cid, const char *sock_path, const char *key,
                       err_t *err);

/* Close cid's socket; calls in flight to it end with a sandbox_unavailable
   error event. Unknown cids are ignored. */
void agent_link_detach (agent_link_t *self, const char *cid);

/* Send one request to cid's agent. header is borrowed; payload (may be
   NULL) is copied. While the agent is not connected (a sandbox starting,
   a broker restarting) the request is re-sent for up to connect_wait_ms.
   Caller owns the call and must destroy it. NULL with *err. */
agent_call_t *agent_call_new (agent_link_t *self, const char *cid, json_t *header,
                              const void *payload, size_t len, int connect_wait_ms, err_t *err);

/* Wait up to timeout_ms (-1: forever) for the next reply event. Returns 1
   with *header (caller owns) and *payload, *len (caller frees; NULL/0 when
   the event has none), 0 on timeout, -1 with *err when the link failed.
   Every event returned is a JSON object with a string "ev". */
int agent_call_recv (agent_call_t *self, int timeout_ms, json_t **header, char **payload,
                     size_t *len, err_t *err);

/* The file descriptor that becomes readable when agent_call_recv may have
   something (ZMQ_FD semantics: edge-triggered; always call recv with 0
   timeout after it fires). */
int agent_call_fd (agent_call_t *self);

/* Send one more request on this call (the agent sees the same tag), e.g.
   proc_unfollow for a follow. header is borrowed. */
int agent_call_send (agent_call_t *self, json_t *header, err_t *err);

/* The call's ZeroMQ socket, for zmq_poll by the thread that owns the call;
   read it only through agent_call_recv. */
void *agent_call_socket (agent_call_t *self);

void agent_call_destroy (agent_call_t **self_p);

/* One request with one final reply: send req (borrowed) to cid's agent and
   return the first event (caller owns) within timeout_ms. An agent
   "error" event becomes -1 with *err: code not_found → 404, exists → 409,
   busy → 429, bad_request → 400, bad_cwd → 422, not_running → 409, other
   codes 500; no answer → 503. */
json_t *agent_link_request (agent_link_t *self, const char *cid, json_t *req, int timeout_ms,
                            err_t *err);

/* Send req (borrowed) and collect every event up to and including the one
   named final_ev, within timeout_ms, as a new array (caller owns); error
   events and silence as for agent_link_request. */
json_t *agent_link_collect (agent_link_t *self, const char *cid, json_t *req, const char *final_ev,
                            int timeout_ms, err_t *err);

/* Map an agent error event to *err as agent_link_request does. */
int agent_error_to_err (json_t *event, err_t *err);

/* Send ping until a pong arrives or timeout_ms passes. 0 when the agent
   answered, -1 with a 503 otherwise. */
int agent_link_ping (agent_link_t *self, const char *cid, int timeout_ms, err_t *err);

#endif
