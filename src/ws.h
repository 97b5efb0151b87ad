/* ws.h - the server side of RFC 6455 WebSocket framing over a socket that
   an HTTP upgrade handed over: the handshake's accept key, reading client
   frames (masked, possibly fragmented, bounded) into whole messages, and
   writing unmasked frames. Everything read is hostile input. */
#ifndef SANDBOXD_WS_H
#define SANDBOXD_WS_H

#include <stddef.h>

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA
};

/* Sec-WebSocket-Accept for the client's Sec-WebSocket-Key (which must be
   the base64 of 16 bytes): 28 characters and a NUL in out. -1 when the
   key is malformed. */
int ws_accept_key (const char *client_key, char out[29]);

/* SHA-1 (FIPS 180-4) of data: only for the handshake above. */
void ws_sha1 (const void *data, size_t len, unsigned char out[20]);

typedef struct _ws_t ws_t;

/* fd is borrowed (the caller closes it). Messages larger than max_message
   bytes are refused with close code 1009. */
ws_t *ws_new (int fd, size_t max_message);
void ws_destroy (ws_t **self_p);

/* Bytes that arrived with the upgrade request, before the handover. */
int ws_feed (ws_t *self, const void *data, size_t len);

/* Read whatever the socket has without blocking. 0, or -1 when the peer
   closed the connection or it failed. */
int ws_fill (ws_t *self);

/* The next whole message (text or binary, fragments joined) or control
   frame (close, ping, pong) among the bytes read so far: 1 with *op, *data
   (valid until the next call) and *len; 0 when more bytes are needed; -1
   when the peer broke the protocol, with the close code to send in
   *close_code (1002, or 1009 for a message over the limit). */
int ws_next (ws_t *self, int *op, const unsigned char **data, size_t *len, int *close_code);

/* Send one unmasked frame with FIN set, waiting at most timeout_ms for the
   peer to take it. 0 or -1. */
int ws_send (ws_t *self, int op, const void *data, size_t len, int timeout_ms);

/* A close frame with code and a short reason. */
int ws_send_close (ws_t *self, int code, const char *reason);

#endif
