/* git.h - git checkout inside a sandbox. */
#ifndef SANDBOXD_GIT_H
#define SANDBOXD_GIT_H

#include <jansson.h>

#include "sandbox.h"
#include "util.h"

/* POST …/git/checkout {repo_url, branch?, target_dir?, depth?}: clone the
   repository inside the sandbox as the sandbox user (the sandbox has no
   network by default: local paths and file:// URLs work). A failed clone
   is 422 "git_failed" with git's own message. *out (caller owns) is
   {repo_url, branch, target_dir}. */
int git_checkout (sandbox_mgr_t *mgr, const char *tenant, const char *sid, json_t *body,
                  json_t **out, err_t *err);

#endif
