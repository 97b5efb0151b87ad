#!/usr/bin/env bash
# kernels/build-image.sh - build (or reuse) the cached sandbox root filesystem.
#
# Usage: kernels/build-image.sh [--image-dir DIR] [--force]
#
# The image is identified by a recipe hash: sha256 over this script and the
# files under kernels/image/ (RECIPE_FILES below), truncated to 16 hex chars.
# Layout under the image dir (default /var/cache/sandboxd/images, or
# $SANDBOXD_IMAGE_DIR):
#
#   $DIR/<hash>/rootfs      the root filesystem (overlay lower layer)
#   $DIR/<hash>/.complete   written before the build dir gets its final name
#   $DIR/current -> <hash>  symlink, replaced atomically
#   $DIR/.build-<hash>.XXXX temporary build dir (removed on failure)
#
# Old <hash> dirs are never removed automatically: running sandboxes may still
# use them as their lower layer. Delete them by hand when nothing uses them.
# With --force an existing <hash> dir is moved aside to .old-<hash>.<time>
# (same reason) and rebuilt.
#
# Internal: mmdebstrap calls back into this script for its customize hooks as
#   build-image.sh --hook STEP ROOTFS
set -euo pipefail

KERNELS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$KERNELS_DIR/$(basename "${BASH_SOURCE[0]}")"
RECIPE_FILES=(build-image.sh image/packages image/npm-packages)
SUITE=bookworm
SANDBOX_UID=1000
SANDBOX_GID=1000

: "${IMAGE_T0:=$(date +%s)}"
export IMAGE_T0

log() { printf '[image] %s (%ss)\n' "$*" "$(($(date +%s) - IMAGE_T0))"; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

# Print the non-comment, non-empty lines of a recipe list file.
list_entries() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$1"; }

recipe_hash() {
    local f
    for f in "${RECIPE_FILES[@]}"; do
        printf '== %s\n' "$f"
        cat "$KERNELS_DIR/$f"
    done | sha256sum | cut -c1-16
}

# --------------------------------------------------------------------------
# customize hooks (run by mmdebstrap on the host; $1 = rootfs)
# --------------------------------------------------------------------------

hook_users() {
    local root=$1
    log "customize: user sandbox (uid $SANDBOX_UID), /workspace"
    chroot "$root" groupadd --gid "$SANDBOX_GID" sandbox
    chroot "$root" useradd --uid "$SANDBOX_UID" --gid "$SANDBOX_GID" \
        --home-dir /workspace --no-create-home --shell /bin/bash sandbox
    mkdir -p "$root/workspace"
    chown "$SANDBOX_UID:$SANDBOX_GID" "$root/workspace"
    chmod 0755 "$root/workspace"
}

hook_layout() {
    local root=$1
    log "customize: bind-mount targets, hostname"
    # /run/sandboxd is created after mmdebstrap: its final cleanup empties /run.
    mkdir -p "$root/opt/sandboxd"
    : > "$root/opt/sandboxd/agent"
    echo sandbox > "$root/etc/hostname"
    chmod 0644 "$root/etc/hostname"
    cat > "$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	sandbox
::1	localhost ip6-localhost ip6-loopback
EOF
}

hook_npm() {
    local root=$1 specs
    mapfile -t specs < <(list_entries "$KERNELS_DIR/image/npm-packages")
    [[ ${#specs[@]} -gt 0 ]] || { log "customize: no npm packages"; return 0; }
    # --ignore-scripts: install scripts would run under the host's node, not
    # the image's, so their results could not be trusted anyway (zeromq's
    # only builds from source when its prebuilt binding fails to load).
    # Bindings must ship prebuilt (N-API); hook_verify loads them in the image.
    local npmflags=(--global --ignore-scripts --no-audit --no-fund --no-update-notifier --loglevel=warn)
    if command -v npm >/dev/null 2>&1; then
        log "customize: npm install (host npm $(npm --version 2>/dev/null)) ${specs[*]}"
        if npm install "${npmflags[@]}" --prefix "$root/usr/local" "${specs[@]}"; then
            return 0
        fi
        log "customize: host npm failed, retrying with the image's npm"
        rm -rf "$root/usr/local/lib/node_modules" "$root/usr/local/bin"
        mkdir -p "$root/usr/local/bin"
    fi
    log "customize: npm install (image npm) ${specs[*]}"
    # Temporarily give the chroot network name resolution and the host's npm
    # configuration (registry, cafile); both are removed again afterwards.
    local tmpfiles=()
    if [[ ! -e $root/etc/resolv.conf ]]; then
        cp /etc/resolv.conf "$root/etc/resolv.conf"; tmpfiles+=("$root/etc/resolv.conf")
    fi
    if [[ -f /etc/npmrc && ! -e $root/etc/npmrc ]]; then
        cp /etc/npmrc "$root/etc/npmrc"; tmpfiles+=("$root/etc/npmrc")
    fi
    if [[ -f ${HOME:-/root}/.npmrc ]]; then
        cp "${HOME:-/root}/.npmrc" "$root/root/.npmrc"; tmpfiles+=("$root/root/.npmrc")
    fi
    local rc=0
    chroot "$root" env HOME=/root npm install "${npmflags[@]}" --prefix /usr/local "${specs[@]}" || rc=$?
    rm -rf "${tmpfiles[@]}" "$root/root/.npm"
    return "$rc"
}

hook_verify() {
    local root=$1
    log "customize: verify"
    local -a checks=(
        "python3 -c 'import ipykernel, matplotlib, pandas, numpy'"
        "node --version"
        "git --version"
        "test \"\$(id -u sandbox):\$(id -g sandbox)\" = $SANDBOX_UID:$SANDBOX_GID"
        "test \"\$(stat -c %u:%g:%a /workspace)\" = $SANDBOX_UID:$SANDBOX_GID:755"
        "command -v tslab"
        "tslab --version"
        "node -e \"require(require.resolve('zeromq', {paths: ['/usr/local/lib/node_modules/tslab']}))\""
        "ldconfig -p | grep -q libzmq.so.5"
        "ldconfig -p | grep -q libjansson.so.4"
    )
    local c out
    for c in "${checks[@]}"; do
        if ! out=$(chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
                HOME=/root LC_ALL=C.UTF-8 /bin/sh -c "$c" 2>&1); then
            printf '%s\n' "$out" >&2
            die "verify failed: $c"
        fi
        printf '[image]   ok: %s%s\n' "$c" "${out:+ -> ${out//$'\n'/ }}"
    done
}

hook_finish() {
    local root=$1
    log "customize: stamp and clean"
    printf '%s\n' "$IMAGE_HASH" > "$root/etc/sandboxd-image"
    rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
    rm -rf "$root"/var/lib/apt/lists/* "$root/root/.npm" "$root/tmp/"*
    # Keep the sandbox from seeing the build host's resolver configuration.
    rm -f "$root/etc/resolv.conf"
}

if [[ ${1:-} == --hook ]]; then
    [[ $# -eq 3 ]] || die "usage: $0 --hook STEP ROOTFS"
    case $2 in
        users|layout|npm|verify|finish) "hook_$2" "$3" ;;
        *) die "unknown hook step: $2" ;;
    esac
    exit 0
fi

# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

usage() { echo "usage: $0 [--image-dir DIR] [--force]"; }

IMAGE_DIR=${SANDBOXD_IMAGE_DIR:-/var/cache/sandboxd/images}
FORCE=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --image-dir) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; IMAGE_DIR=$2; shift 2 ;;
        --image-dir=*) IMAGE_DIR=${1#*=}; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

HASH=$(recipe_hash)
export IMAGE_HASH=$HASH
FINAL="$IMAGE_DIR/$HASH"

set_current() {
    [[ $(readlink "$IMAGE_DIR/current" 2>/dev/null || true) == "$HASH" ]] && return 0
    local tmp="$IMAGE_DIR/.current.$$"
    ln -sfn "$HASH" "$tmp"
    mv -T "$tmp" "$IMAGE_DIR/current"
}

if [[ $FORCE -eq 0 && -e $FINAL/.complete ]]; then
    set_current
    echo "image $HASH cached at $FINAL/rootfs"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "building the image needs root (mmdebstrap --mode=root, chroot)"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"

mkdir -p "$IMAGE_DIR"
exec 9>"$IMAGE_DIR/.lock"
if ! flock -n 9; then
    log "waiting for another build in $IMAGE_DIR"
    flock 9
fi
# Another build may have produced this image while we waited.
if [[ $FORCE -eq 0 && -e $FINAL/.complete ]]; then
    set_current
    echo "image $HASH cached at $FINAL/rootfs"
    exit 0
fi
# Leftovers of killed builds (we hold the lock, so nobody is using them).
for stale in "$IMAGE_DIR"/.build-*; do
    [[ -d $stale ]] || continue
    log "removing stale build dir $stale"
    rm -rf --one-file-system "$stale"
done

BUILD=$(mktemp -d "$IMAGE_DIR/.build-$HASH.XXXX")
chmod 0755 "$BUILD"
cleanup() {
    local rc=$?
    if [[ -n ${BUILD:-} && -d $BUILD ]]; then
        # mmdebstrap unmounts on its own; this is only a safety net.
        findmnt -rn -o TARGET | grep -F "$BUILD/" | sort -r | xargs -r umount -l || true
        rm -rf --one-file-system "$BUILD"
        [[ $rc -ne 0 ]] && printf '[image] build failed (exit %s), removed %s\n' "$rc" "$BUILD" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building image $HASH in $BUILD"

# Mirrors: the host's Debian bookworm apt sources, so a local mirror/proxy
# configured on the host is used; otherwise mmdebstrap's defaults
# (deb.debian.org incl. -updates and -security). Non-Debian sources on the
# host (third-party repos) are skipped.
MIRRORS=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -s $f ]] || continue
    grep -Eq "(^|[[:space:]])$SUITE([[:space:]]|$)" "$f" || continue
    grep -Eq '://[^[:space:]]*/debian(-security)?/?([[:space:]]|$)' "$f" || continue
    MIRRORS+=("$f")
done

# Apt options from the host that matter for fetching (e.g. a snapshot mirror
# whose Release files are past Valid-Until, or a proxy).
APTOPTS=()
while IFS= read -r line; do
    [[ -n $line ]] && APTOPTS+=("--aptopt=$line")
done < <(apt-config dump --format '%f "%v";%n' \
    Acquire::Check-Valid-Until Acquire::Check-Date Acquire::Retries \
    Acquire::http::Proxy Acquire::https::Proxy 2>/dev/null | grep -v '^[^ ]* "";$' || true)

# mmdebstrap installs no Recommends; list wanted extras in image/packages.
mapfile -t PACKAGES < <(list_entries "$KERNELS_DIR/image/packages")
INCLUDE=$(IFS=,; echo "${PACKAGES[*]}")

# shellcheck disable=SC2016  # $1 is expanded by mmdebstrap's sh, not here
hook() { printf -- '--customize-hook=bash %q --hook %s "$1"' "$SELF" "$1"; }

log "mmdebstrap $SUITE: ${#PACKAGES[@]} packages, mirrors: ${MIRRORS[*]:-default}, aptopts: ${#APTOPTS[@]}"
mmdebstrap \
    --variant=apt --mode=root --format=directory \
    --include="$INCLUDE" \
    "${APTOPTS[@]}" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    "$(hook users)" \
    "$(hook layout)" \
    "$(hook npm)" \
    "$(hook verify)" \
    "$(hook finish)" \
    "$SUITE" "$BUILD/rootfs" "${MIRRORS[@]}" 2>&1

# After mmdebstrap's cleanup, which empties /run (except /run/lock).
mkdir -p "$BUILD/rootfs/run/sandboxd"
for p in run/sandboxd opt/sandboxd/agent workspace etc/sandboxd-image; do
    [[ -e $BUILD/rootfs/$p ]] || die "missing /$p in the built rootfs"
done
[[ ! -e $BUILD/rootfs/etc/resolv.conf ]] || die "/etc/resolv.conf left in the rootfs"

SIZE=$(du -sxh "$BUILD/rootfs" | cut -f1)
ELAPSED=$(($(date +%s) - IMAGE_T0))
printf 'hash=%s\nbuilt=%s\nseconds=%s\nsize=%s\n' \
    "$HASH" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$ELAPSED" "$SIZE" > "$BUILD/.complete"

if [[ -e $FINAL ]]; then
    old="$IMAGE_DIR/.old-$HASH.$(date +%s)"
    log "moving previous $FINAL aside to $old (delete it when unused)"
    mv -T "$FINAL" "$old"
fi
mv -T "$BUILD" "$FINAL"
BUILD=
set_current
log "done: image $HASH ($SIZE)"
echo "image $HASH built at $FINAL/rootfs"
