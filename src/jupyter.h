/* jupyter.h - the Jupyter messaging protocol (v5.3) wire format: building,
   signing, parsing and verifying messages. Knows nothing of sockets'
   ownership, kernels or HTTP; everything parsed here came from a kernel
   that runs tenant code, so every size and shape is checked. */
#ifndef SANDBOXD_JUPYTER_H
#define SANDBOXD_JUPYTER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define JUPYTER_KEY_LEN     32          /* bytes of HMAC key (hex-encoded in files) */
#define JUPYTER_MAX_IDS     8           /* routing identities kept per message */
#define JUPYTER_MAX_BUFFERS 16          /* binary buffers kept per message */
#define JUPYTER_MAX_FRAME   (16u << 20) /* one frame (a PNG can be large) */
#define JUPYTER_MAX_MESSAGE (64u << 20) /* all frames of one message */

/* The HMAC key is key_hex's text (64 ASCII bytes), not key: jupyter_client
   keys its HMAC with the connection file's "key" string as it stands. key
   holds the same value decoded. */
typedef struct {
    unsigned char key[JUPYTER_KEY_LEN];
    char key_hex[JUPYTER_KEY_LEN * 2 + 1];
    char session[33]; /* our session id (uuid4 hex) */
    char username[32];
} jupyter_session_t;

/* A parsed or to-be-sent message. Objects are owned by the message. */
typedef struct {
    /* routing identities that preceded <IDS|MSG> (shell/stdin replies carry
       none on DEALER sockets; iopub carries the topic here) */
    void *ids[JUPYTER_MAX_IDS];
    size_t ids_len[JUPYTER_MAX_IDS];
    int nids;
    json_t *header;        /* object: msg_id, msg_type, session, username, date, version */
    json_t *parent_header; /* object ({} when none) */
    json_t *metadata;      /* object */
    json_t *content;       /* object */
    void *buffers[JUPYTER_MAX_BUFFERS];
    size_t buffers_len[JUPYTER_MAX_BUFFERS];
    int nbuffers;
} jupyter_msg_t;

/* A fresh session with a random key and session id. */
void jupyter_session_init (jupyter_session_t *s);

/* Load a session key from its hex form (as in a connection file): exactly
   64 hex digits, kept as written. */
int jupyter_session_set_key (jupyter_session_t *s, const char *key_hex, err_t *err);

/* Build a request: new header (uuid4 hex msg_id, msg_type, our session and
   username, ISO 8601 date, version "5.3"), empty parent/metadata, content
   stolen (NULL = {}). Caller owns the message (jupyter_msg_destroy). */
jupyter_msg_t *jupyter_msg_new (const jupyter_session_t *s, const char *msg_type, json_t *content);

void jupyter_msg_destroy (jupyter_msg_t **msg_p);

/* Convenience accessors; never NULL: "" when absent or of the wrong type. */
const char *jupyter_msg_type (const jupyter_msg_t *msg);
const char *jupyter_msg_id (const jupyter_msg_t *msg);
const char *jupyter_parent_id (const jupyter_msg_t *msg);

/* Serialise and sign: fills frames[] with malloc'd buffers (caller frees
   each) in wire order: ids..., "<IDS|MSG>", hex HMAC-SHA256 signature,
   header, parent_header, metadata, content, buffers... Returns the frame
   count, or -1. max_frames bounds frames[]. */
int jupyter_msg_encode (const jupyter_session_t *s, const jupyter_msg_t *msg, void **frames,
                        size_t *lens, int max_frames);

/* Send msg on a ZeroMQ socket (multipart, signed). 0 or -1 with *err. */
int jupyter_msg_send (const jupyter_session_t *s, void *zsock, const jupyter_msg_t *msg,
                      err_t *err);

/* Parse and verify the frames of one received message. The signature is
   checked in constant time over the four JSON frames exactly as received
   (never re-serialised); a missing delimiter, a bad or missing signature,
   invalid JSON, non-object parts, a header without string msg_id and
   msg_type, too many ids or buffers, or frames over the size limits make
   it fail with a 502 "bad_kernel_message" and no message. Caller owns the
   result. */
jupyter_msg_t *jupyter_msg_decode (const jupyter_session_t *s, void *const *frames,
                                   const size_t *lens, int nframes, err_t *err);

/* Receive one whole multipart message from a ZeroMQ socket (flags as for
   zmq_msg_recv, e.g. ZMQ_DONTWAIT), then decode it. Returns NULL with
   err->status 0 when nothing was ready (EAGAIN), with a 502 when the
   message was dropped (logged at warn with the reason), or 500 on socket
   errors. Oversized messages are drained and dropped. */
jupyter_msg_t *jupyter_msg_recv (const jupyter_session_t *s, void *zsock, int flags, err_t *err);

/* Write a connection file's JSON for transport ipc: ip = ipc_base (the
   socket path prefix inside the sandbox), ports 1..5 for shell, iopub,
   stdin, control, hb, our key, signature_scheme hmac-sha256. Caller owns. */
json_t *jupyter_connection_info (const jupyter_session_t *s, const char *ipc_base,
                                 const char *kernel_name);

#endif
