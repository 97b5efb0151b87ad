/* kernel.h - one Jupyter kernel inside a sandbox: started through the
   agent, spoken to over ipc sockets in the sandbox's kernel directory.
   A kernel_t is used by one thread at a time (the caller serialises); only
   kernel_interrupt may be called concurrently with a run. */
#ifndef SANDBOXD_KERNEL_H
#define SANDBOXD_KERNEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent_link.h"
#include "jupyter.h"
#include "mime.h"
#include "util.h"

typedef struct _kernel_t kernel_t;

typedef enum { KERNEL_PYTHON = 0, KERNEL_JAVASCRIPT, KERNEL_TYPESCRIPT } kernel_lang_t;

/* "python", "javascript", "typescript" <-> kernel_lang_t. */
const char *kernel_lang_name (kernel_lang_t lang);
int kernel_lang_parse (const char *name, kernel_lang_t *out);

/* Start a kernel of lang in the sandbox whose container is cid and whose
   host directory is sandbox_dir (the kernel directory is
   sandbox_dir/kernels, mounted at /run/kernels inside). Returns once the
   kernel answered kernel_info and its iopub subscription is live, so no
   output of the first run can be lost. Caller owns the result. */
kernel_t *kernel_start (agent_link_t *link, const char *cid, const char *sandbox_dir,
                        kernel_lang_t lang, err_t *err);

/* Re-attach to a kernel a previous broker process started in sandbox cid
   (after a restart): kid, pid and key_hex as kernel_id, kernel_pid and
   kernel_key_hex gave them. The kernel is sent SIGINT (ending a run left in
   flight), its sockets are re-opened as kernel_start does, and it must
   answer kernel_info within 5 s. NULL with *err when it is gone or does not
   answer (it is then killed). Caller owns the result. */
kernel_t *kernel_reattach (agent_link_t *link, const char *cid, const char *sandbox_dir,
                           kernel_lang_t lang, const char *kid, int pid, const char *key_hex,
                           err_t *err);

/* What a later broker process needs to re-attach (the key is a secret:
   store it only where the broker alone can read). */
const char *kernel_id (const kernel_t *self);
int kernel_pid (const kernel_t *self);
const char *kernel_key_hex (const kernel_t *self);

/* Kill the kernels (and kernel watchers) a previous broker process left
   running in sandbox cid, except those whose ids are in keep, and remove
   every other kernel directory under /run/kernels there. */
int kernel_cleanup_stale (agent_link_t *link, const char *cid, const char *const *keep,
                          size_t nkeep, err_t *err);

/* Ask the kernel to shut down (shutdown_request on control, up to 300 ms),
   then kill its process group, close its sockets, remove its directory. */
void kernel_destroy (kernel_t **self_p);

/* The same without the shutdown_request: for kernels whose sandbox is
   going away anyway. */
void kernel_destroy_now (kernel_t **self_p);

/* Let go of the kernel without stopping it: sockets closed, process and
   directory left as they are, for a later broker to re-attach. */
void kernel_close (kernel_t **self_p);

kernel_lang_t kernel_lang (const kernel_t *self);

/* False once the kernel process is known to have exited. */
bool kernel_alive (kernel_t *self);

/* Ping the heartbeat channel: true when the kernel echoed within
   timeout_ms (a live process can still be wedged, e.g. stopped). */
bool kernel_heartbeat (kernel_t *self, int timeout_ms);

/* Called for each streaming event of a run ({"event", "data"} objects as
   made by execution.h), and with event NULL every poll cycle (≤ 250 ms) as
   a probe. Returning nonzero means the consumer went away: the run is
   interrupted and finishes quietly. */
typedef int (kernel_sink_fn) (void *arg, json_t *event);

/* Run code to completion (or deadline). silent runs do not count in the
   execution count and produce no events. Returns the Execution object
   (caller owns; see execution.h) — also when the run failed inside the
   kernel, timed out (error TimeoutError; the kernel is interrupted, and
   restarted if it stays busy past a grace period) or the kernel died
   (error KernelDied; kernel_alive becomes false). NULL with *err only when
   the request could not be sent at all. */
json_t *kernel_execute (kernel_t *self, const char *code, bool silent, int64_t timeout_ms,
                        size_t max_bytes, const mime_image_opts_t *img, kernel_sink_fn *sink,
                        void *arg, err_t *err);

/* Send SIGINT to the kernel's process group (Jupyter's "signal" interrupt
   mode, which both ipykernel and tslab use). Safe from any thread. */
int kernel_interrupt (kernel_t *self, err_t *err);

/* SIGKILL the kernel's process group; a run in progress on another thread
   then ends with KernelDied. Safe from any thread. */
void kernel_kill (kernel_t *self);

/* --- channels for a front end that speaks the protocol itself ---------------

   A gateway websocket relays a Jupyter front end's own messages: it gets an
   independent set of connections to the kernel (shell, iopub, stdin,
   control; shell and stdin share one routing id so that input_request
   reaches it), so native runs on the same kernel are not disturbed and the
   front end sees their iopub output as any second Jupyter client would.
   Messages are signed with the kernel's key but keep the front end's
   headers. A channel outlives its kernel harmlessly (it just goes quiet);
   the caller reopens one on the replacement. Used by one thread. */
typedef struct _kernel_chan_t kernel_chan_t;

kernel_chan_t *kernel_chan_open (kernel_t *k, err_t *err);
void kernel_chan_close (kernel_chan_t **self_p);

/* Make sure the channel is live before relaying: kernel_info on shell
   until it is answered and iopub has delivered a message (a SUB socket
   misses what is published before its subscription arrives). What arrives
   meanwhile is dropped. 0, or -1 when timeout_ms passed first. */
int kernel_chan_handshake (kernel_chan_t *c, int timeout_ms);

/* "shell", "iopub", "stdin", "control" -> 0..3, else -1; and back. */
int kernel_chan_index (const char *channel);
const char *kernel_chan_name (int index);

/* Sign and send msg on channel (shell, stdin or control; 400 otherwise,
   503 when the kernel does not take it within 2 s). */
int kernel_chan_send (kernel_chan_t *c, const char *channel, const jupyter_msg_t *msg, err_t *err);

/* Wait up to timeout_ms for a message on c (may be NULL) or for fd (may be
   -1) to be readable. Returns a mask: 1 fd readable, 2 a kernel message. */
int kernel_chan_poll (kernel_chan_t *c, int fd, int timeout_ms);

/* The next verified message from any channel, without waiting: its
   channel name in *channel. NULL with err->status 0 when none is ready
   (forged and oversized messages are dropped on the way). Caller owns. */
jupyter_msg_t *kernel_chan_recv (kernel_chan_t *c, const char **channel, err_t *err);

#endif
