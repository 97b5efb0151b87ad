/* fuzz_agent.c - the agent's request validation (src/agent/agent.c is
   compiled into this harness so its static parsers can be reached): the
   header JSON of every op, exec requests with their env, cwd, counts and
   signals, and the child environment built from a validated request. The
   ops themselves (which fork and run commands) are not called. */
#define main agent_main
#include "../../src/agent/agent.c"
#undef main

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size > HEADER_MAX)
        return 0;
    json_error_t jerr;
    json_t *hdr = json_loadb ((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!hdr)
        return 0;
    if (!json_is_object (hdr)) {
        json_decref (hdr);
        return 0;
    }
    char msg[256];
    exec_req_t req;
    memset (&req, 0, sizeof req);
    if (s_parse_exec (hdr, &req, msg, sizeof msg) == 0) {
        char *block = NULL;
        char **envp = s_build_env (req.env, &block);
        if (envp) {
            for (char **e = envp; *e; e++)
                if (!strchr (*e, '='))
                    abort ();
            free (envp);
            free (block);
        }
    }
    json_t *env = NULL;
    s_parse_env_key (hdr, "env", true, &env, msg, sizeof msg);
    s_parse_env_key (hdr, "unset", true, &env, msg, sizeof msg);
    int signo = 0;
    const char *name = NULL;
    s_parse_signal (hdr, "TERM", &signo, &name, msg, sizeof msg);
    int64_t n = 0;
    s_parse_count (hdr, "lines", 100, 10000, &n, msg, sizeof msg);
    const char *cwd = NULL;
    s_parse_cwd (hdr, &cwd, msg, sizeof msg);
    json_decref (hdr);
    return 0;
}
