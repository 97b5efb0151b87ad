/* compat_acontext.c - the acontext surface (docs/compat.md). */
#include "compat.h"

int
compat_acontext_handle (const compat_env_t *env, const compat_request_t *req,
                        compat_response_t *resp)
{
    (void)env;
    (void)req;
    return compat_json (resp, 404,
                        json_pack ("{s:{s:s, s:s}}", "error", "code", "not_found", "message",
                                   "the acontext surface is not built yet"));
}
