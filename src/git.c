/* git.c - git checkout inside a sandbox, through exec. */
#include "git.h"

#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "jsonv.h"

#define GIT_TIMEOUT_MS 600000

static bool
s_valid_branch (const char *b)
{
    if (!*b || *b == '-' || strlen (b) > 255 || strstr (b, ".."))
        return false;
    for (; *b; b++)
        if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') || (*b >= '0' && *b <= '9')
              || strchr ("._/-+", *b)))
            return false;
    return true;
}

/* The last path component of a repository URL without ".git". */
static void
s_repo_name (const char *url, char *out, size_t size)
{
    size_t n = strlen (url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    size_t start = n;
    while (start > 0 && url[start - 1] != '/' && url[start - 1] != ':')
        start--;
    size_t len = n - start;
    if (len > 4 && !strncmp (url + n - 4, ".git", 4))
        len -= 4;
    if (len == 0 || len >= size)
        snprintf (out, size, "repo");
    else {
        memcpy (out, url + start, len);
        out[len] = '\0';
    }
}

static const char *const s_keys[] = { "repo_url", "branch", "target_dir", "depth", NULL };

int
git_checkout (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t *body, json_t **out,
              err_t *err)
{
    const char *url = NULL, *branch = NULL, *target = NULL;
    int64_t depth = 0;
    if (jsonv_only_keys (body, "", s_keys, err) < 0
        || jsonv_string (body, "", "repo_url", true, 4096, &url, err) < 0
        || jsonv_string (body, "", "branch", false, 255, &branch, err) < 0
        || jsonv_string (body, "", "target_dir", false, 4000, &target, err) < 0
        || jsonv_int (body, "", "depth", false, 1, 1000000, &depth, err) < 0)
        return -1;
    if (!*url || strchr (url, '\n'))
        return err_set (err, 400, "invalid_field", "field 'repo_url': must be a URL or a path");
    if (branch && !s_valid_branch (branch))
        return err_set (err, 400, "invalid_field", "field 'branch': not a valid branch name");
    char dir[4200];
    if (target && target[0] == '/')
        snprintf (dir, sizeof dir, "%s", target);
    else if (target)
        snprintf (dir, sizeof dir, "/workspace/%s", target);
    else {
        char name[256];
        s_repo_name (url, name, sizeof name);
        snprintf (dir, sizeof dir, "/workspace/%s", name);
    }
    char cmd[40960] = "git clone --quiet"; /* every argument quoted at worst 4x */
    if (branch) {
        strcat (cmd, " --branch ");
        util_shell_quote_append (cmd, sizeof cmd, branch);
    }
    if (depth > 0)
        snprintf (cmd + strlen (cmd), sizeof cmd - strlen (cmd), " --depth %lld", (long long)depth);
    strcat (cmd, " -- ");
    util_shell_quote_append (cmd, sizeof cmd, url);
    strcat (cmd, " ");
    util_shell_quote_append (cmd, sizeof cmd, dir);

    json_t *req = json_pack ("{s:s, s:s, s:I}", "command", cmd, "cwd", "/workspace", "timeout_ms",
                             (json_int_t)GIT_TIMEOUT_MS);
    exec_t *exec = exec_start (mgr, tenant, sid, req, err);
    json_decref (req);
    json_t *res = exec ? exec_collect (exec, err) : NULL;
    exec_destroy (&exec);
    if (!res)
        return -1;
    json_int_t code = json_integer_value (json_object_get (res, "exit_code"));
    if (code != 0) {
        const char *msg = json_string_value (json_object_get (res, "stderr"));
        err_set (err, 422, "git_failed", "%.480s", msg && *msg ? msg : "git clone failed");
        json_decref (res);
        return -1;
    }
    json_decref (res);
    *out = json_pack ("{s:s, s:s?, s:s}", "repo_url", url, "branch", branch, "target_dir", dir);
    return 0;
}
