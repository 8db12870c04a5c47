#!/bin/sh
# hydrate-entrypoint.sh - seed a mounted volume exactly once, then exec the
# container's command. POSIX sh (dash, busybox ash, bash).
#
# On Fargate the EFS mount hides what the image has at the mount point. Move the
# image's directory aside at build time and let this script fill the volume at
# start, with the same rules as the module guardrail.ecs.efs_hydrate:
#   - DEST is resolved once (a symlinked DEST is refused, system directories are
#     refused after resolution), then the script works from inside it (cd -P,
#     checked with pwd -P) and never follows a symlink at its own names;
#   - an exclusive lock on $DEST/.guardrail-hydrate.lock (flock(1), shared with
#     the module; where flock is missing, a mkdir lock $DEST/.guardrail-hydrate.lock.d)
#     so tasks starting together seed once and the others wait;
#   - copy into a hidden staging directory in $DEST, set owner and modes, sync,
#     mark it ready, rename its entries into place, then write the marker
#     $DEST/.guardrail-hydrated last. A crash leaves no marker; the next start
#     finishes a ready staging directory or removes an unfinished one;
#   - hydrated means "the marker exists", never "the directory is not empty".
# The on-disk protocol (names, owners, modes, the ready record) is the one in
# roles/efs_volume/PROTOCOL.md; the threat model is in the role's README.
#
# Settings (environment):
#   GUARDRAIL_HYDRATE_SRC          directory with the content (required)
#   GUARDRAIL_HYDRATE_DEST         the mounted volume or a directory in it (required)
#   GUARDRAIL_HYDRATE_OWNER        user or uid for every copied file, and DEST
#   GUARDRAIL_HYDRATE_GROUP        group or gid
#   GUARDRAIL_HYDRATE_DIR_MODE     octal mode of directories and DEST, e.g. 0750
#   GUARDRAIL_HYDRATE_FILE_MODE    octal mode of files, e.g. 0640
#   GUARDRAIL_HYDRATE_ON_EXISTING  fail (default) | merge | skip: DEST has content but no marker
#   GUARDRAIL_HYDRATE_LOCK_TIMEOUT seconds to wait for another task (default 900)
# Usage: hydrate-entrypoint.sh command [args...]
set -eu

prog=hydrate-entrypoint
say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { say "$*"; exit 70; }

src=${GUARDRAIL_HYDRATE_SRC:-}
dest=${GUARDRAIL_HYDRATE_DEST:-}
owner=${GUARDRAIL_HYDRATE_OWNER:-}
group=${GUARDRAIL_HYDRATE_GROUP:-}
dir_mode=${GUARDRAIL_HYDRATE_DIR_MODE:-}
file_mode=${GUARDRAIL_HYDRATE_FILE_MODE:-}
on_existing=${GUARDRAIL_HYDRATE_ON_EXISTING:-fail}
timeout=${GUARDRAIL_HYDRATE_LOCK_TIMEOUT:-900}

marker_name=.guardrail-hydrated
lock_name=.guardrail-hydrate.lock
staging_prefix=.guardrail-staging-
ready_name=.guardrail-ready
ready_format="guardrail-hydrate-ready 1"

[ $# -gt 0 ] || die "usage: $0 command [args...] (the command to exec once the volume is ready)"

nl='
'
check_path() { # name value
    case $2 in
        "") die "$1 is not set" ;;
        *"$nl"*) die "$1 must not contain a newline" ;;
        /*) ;;
        *) die "$1 must be an absolute path, got '$2'" ;;
    esac
    case /$2/ in
        */../*) die "$1 must not contain '..': '$2'" ;;
    esac
}
check_path GUARDRAIL_HYDRATE_SRC "$src"
check_path GUARDRAIL_HYDRATE_DEST "$dest"
while :; do
    case $dest in
        */) [ "$dest" = / ] && break; dest=${dest%/} ;;
        *) break ;;
    esac
done
refuse_system() {
    case $1 in
        / | /bin | /boot | /dev | /etc | /home | /lib | /lib32 | /lib64 | /libx32 | /media | /opt | \
        /proc | /root | /run | /sbin | /srv | /sys | /tmp | /usr | /var | /var/lib | /var/log | \
        /var/tmp | /usr/local | /bin/* | /boot/* | /dev/* | /etc/* | /lib/* | /lib32/* | /lib64/* | \
        /libx32/* | /proc/* | /sbin/* | /sys/* | /usr/*)
            die "refusing to hydrate the system directory '$1': give the mounted volume or a directory in it" ;;
    esac
}
refuse_system "$dest"
[ ! -L "$dest" ] || die "GUARDRAIL_HYDRATE_DEST '$dest' is a symlink: refusing to follow it; give the directory it stands for"
resolve_dir() { # path: the existing part resolved physically, the missing rest kept
    p=$1 rest=
    while [ ! -d "$p" ]; do
        if [ -e "$p" ] || [ -L "$p" ]; then die "'$p' exists and is not a directory"; fi
        rest=/${p##*/}$rest
        p=${p%/*}
        [ -n "$p" ] || p=/
    done
    p=$(cd -P -- "$p" && pwd -P) || die "cannot resolve '$1'"
    printf '%s%s\n' "${p%/}" "$rest"
}
parent=${dest%/*}
dest=$(resolve_dir "${parent:-/}")/${dest##*/}
dest=/${dest#/}
case $dest in //*) dest=${dest#/} ;; esac
refuse_system "$dest"
uid=$(id -u)
case $on_existing in
    fail | merge | skip) ;;
    *) die "GUARDRAIL_HYDRATE_ON_EXISTING must be fail, merge or skip, got '$on_existing'" ;;
esac
case $timeout in
    '' | *[!0-9]*) die "GUARDRAIL_HYDRATE_LOCK_TIMEOUT must be a number of seconds, got '$timeout'" ;;
esac
for mode in "$dir_mode" "$file_mode"; do
    case $mode in
        *[!0-7]*) die "modes must be octal such as 0750, got '$mode'" ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    case $owner in
        '' | "$(id -u)" | "$(id -un 2>/dev/null)") ;;
        *) die "GUARDRAIL_HYDRATE_OWNER $owner needs root: this runs as uid $(id -u)" ;;
    esac
fi
if [ -n "$dir_mode" ] && [ "$(id -u)" != 0 ]; then
    # Without root a directory its owner cannot write can be neither filled nor moved.
    owner_digit=${dir_mode%??}
    owner_digit=${owner_digit#"${owner_digit%?}"}
    case $owner_digit in
        '' | 0 | 1 | 4 | 5) die "GUARDRAIL_HYDRATE_DIR_MODE $dir_mode must let the owner write when not running as root" ;;
    esac
fi

# The script's own names: regular files and directories it created, never links.
own_file() { # path: a regular file with one link, owned by this uid, root or OWNER, that nobody else can write
    [ ! -L "$1" ] && [ -f "$1" ] &&
        [ -n "$(find "$1" -maxdepth 0 -type f -links 1 \( -user 0 -o -user "$uid" -o -user "${owner:-0}" \) \
            ! -perm -020 ! -perm -002 -print 2>/dev/null)" ]
}
own_staging() { # path: a staging directory this uid created (mode 0700)
    [ ! -L "$1" ] && [ -d "$1" ] &&
        [ -n "$(find "$1" -maxdepth 0 -type d -user "$uid" -perm 700 -print 2>/dev/null)" ]
}
refuse_name() { # label path
    die "$1 $dest/${2#./} is not what the hydrator creates (a symlink, FIFO, directory or another user's file): refusing it; remove it after checking who put it there"
}
check_marker() { # at the current directory: 0 hydrated, 1 not; refuses a marker that is not ours
    if [ -L "$marker_name" ] || { [ -e "$marker_name" ] && ! own_file "./$marker_name"; }; then
        refuse_name "the marker" "$marker_name"
    fi
    [ -e "$marker_name" ]
}

if [ -d "$dest" ]; then
    cd -P -- "$dest" || die "cannot enter '$dest'"
    [ "$(pwd -P)" = "$dest" ] || die "GUARDRAIL_HYDRATE_DEST '$dest' changed while starting: refusing it"
    if check_marker; then
        say "$dest is already hydrated"
        exec "$@"
    fi
fi

[ -d "$src" ] || die "GUARDRAIL_HYDRATE_SRC '$src' is not a directory"

# The whole source is validated before anything is written.
bad=$(find "$src" \( -type b -o -type c -o -type p -o -type s \) -print | head -n 5)
[ -z "$bad" ] || die "refusing the source: device files, FIFOs or sockets: $bad"
bad=$(find "$src" -name "*$nl*" -print | head -n 5)
[ -z "$bad" ] || die "refusing the source: names with a newline"
if [ "$uid" != 0 ]; then
    bad=$(find "$src" \( -type f -o -type d \) -exec sh -c 'for f; do
        if [ -d "$f" ]; then [ -r "$f" ] && [ -x "$f" ]; else [ -r "$f" ]; fi || printf "%s\n" "$f"
        done' readable {} + 2>&1 | head -n 5)
    [ -z "$bad" ] || die "refusing the source: not readable by uid $uid: $(echo "$bad" | tr '\n' ' ')"
fi
for name in "$marker_name" "$lock_name" "$lock_name.d" "$staging_prefix"* "$marker_name.tmp-"*; do
    [ -e "$src/$name" ] || [ -L "$src/$name" ] || continue
    case $name in *'*') continue ;; esac
    die "refusing the source: it holds the hydrator's own name $name"
done
# Symlinks are judged by where they resolve in the tree DEST becomes, following
# the tree's own links hop by hop (a chain such as up -> ../../.. and
# L -> up/../../etc/x leaves the tree although each text looks harmless).
bad=$(find "$src" -type l -exec sh -c 'root=$1; shift
        for l; do printf "%s\t%s\n" "${l#"$root"/}" "$(readlink "$l")"; done' links "$src" {} + |
    awk -F '\t' '
    function resolves_inside(p,    dir, nd, pend, np, k, part, here, j, t, tmp, m, newp, hops) {
        if (substr(link[p], 1, 1) == "/") return 0
        nd = split(p, dir, "/") - 1
        np = split(link[p], pend, "/")
        k = 1
        hops = 0
        while (k <= np) {
            part = pend[k++]
            if (part == "" || part == ".") continue
            if (part == "..") { if (nd == 0) return 0; nd--; continue }
            dir[++nd] = part
            here = dir[1]
            for (j = 2; j <= nd; j++) here = here "/" dir[j]
            if (!(here in link)) continue
            if (++hops > 40) return 0
            t = link[here]
            if (substr(t, 1, 1) == "/") return 0
            nd--
            m = split(t, tmp, "/")
            for (j = 1; j <= m; j++) newp[j] = tmp[j]
            for (j = k; j <= np; j++) newp[m + j - k + 1] = pend[j]
            np = m + np - k + 1
            delete pend
            for (j = 1; j <= np; j++) pend[j] = newp[j]
            delete newp
            k = 1
        }
        return 1
    }
    { i = index($0, "\t"); name = substr($0, 1, i - 1); link[name] = substr($0, i + 1); order[++n] = name }
    END { for (i = 1; i <= n; i++) if (!resolves_inside(order[i])) print order[i] " -> " link[order[i]] }' |
    head -n 5)
[ -z "$bad" ] || die "refusing the source: symlinks resolving outside the tree: $(echo "$bad" | tr '\n' ';')"
if ! cp --help 2>&1 | grep -q -- --sparse; then
    sparse=$(find "$src" -type f -size +64k -exec sh -c 'for f; do
        set -- $(stat -c "%b %B %s" "$f"); [ $(($1 * $2)) -lt "$3" ] && printf "%s\n" "$f"; done; :' sparse {} + | head -n 3)
    [ -z "$sparse" ] || say "warning: this cp writes holes as zeros, sparse files become full size: $(echo "$sparse" | tr '\n' ' ')"
fi

if [ ! -d "$dest" ]; then
    mkdir -p -- "$dest"
    [ ! -L "$dest" ] || die "GUARDRAIL_HYDRATE_DEST '$dest' became a symlink: refusing it"
    cd -P -- "$dest" || die "cannot enter '$dest'"
    [ "$(pwd -P)" = "$dest" ] || die "GUARDRAIL_HYDRATE_DEST '$dest' changed while starting: refusing it"
fi
[ -w . ] || die "$dest is not writable by uid $uid"
# From here on every path is relative to DEST, the directory entered above.

# ---------------------------------------------------------------- the lock
lockdir=$lock_name.d
heartbeat=
have_flock() { command -v flock >/dev/null 2>&1; }

lock_owner() { # the mkdir lock's owner record, never read through a link
    [ ! -L "$lockdir" ] && [ ! -L "$lockdir/owner" ] && [ -f "$lockdir/owner" ] &&
        head -c 200 "$lockdir/owner" 2>/dev/null
}

mkdir_lock_stale() { # the lock's holder is gone: same host and dead, or silent for minutes
    # Just taken, owner not written yet: stale only if it stays like that.
    holder=$(lock_owner) || {
        [ -n "$(find "./$lockdir" -maxdepth 0 -type d -mmin +2 2>/dev/null)" ]
        return
    }
    holder_host=${holder%% *}
    holder_pid=${holder#* }
    if [ "$holder_host" = "$(hostname)" ] && ! kill -0 "$holder_pid" 2>/dev/null; then
        return 0
    fi
    [ -n "$(find "./$lockdir/owner" -maxdepth 0 -mmin +2 2>/dev/null)" ]
}

take_lock() {
    if have_flock; then
        [ -L "$lock_name" ] || [ -e "$lock_name" ] || (umask 022; set -C; : >"$lock_name") 2>/dev/null || :
        own_file "./$lock_name" || refuse_name "the lock file" "$lock_name"
        # Read-only: the lock is never truncated or written, whatever the name became.
        exec 9<"$lock_name"
        if [ -e /proc/self/fd/9 ]; then
            [ "$(readlink /proc/self/fd/9)" = "${dest%/}/$lock_name" ] || refuse_name "the lock file" "$lock_name"
        fi
        flock -w "$timeout" 9 || die "timed out after ${timeout}s waiting for the lock $dest/$lock_name"
        return
    fi
    # The lock file is the module's: refused here as there, though not used.
    if [ -L "$lock_name" ] || { [ -e "$lock_name" ] && ! own_file "./$lock_name"; }; then
        refuse_name "the lock file" "$lock_name"
    fi
    waited=0
    while :; do
        [ ! -L "$lockdir" ] || refuse_name "the lock directory" "$lockdir"
        mkdir -m 700 "$lockdir" 2>/dev/null && break
        if mkdir_lock_stale && mkdir "$lockdir.break" 2>/dev/null; then
            # Only one waiter breaks a stale lock, and only if it is still stale.
            if mkdir_lock_stale; then rm -rf "./$lockdir"; fi
            rmdir "$lockdir.break"
            continue
        fi
        [ -d "$lockdir.break" ] && [ ! -L "$lockdir.break" ] &&
            [ -n "$(find "./$lockdir.break" -maxdepth 0 -mmin +2 2>/dev/null)" ] &&
            rmdir "$lockdir.break" 2>/dev/null
        [ "$waited" -lt "$timeout" ] ||
            die "timed out after ${timeout}s waiting for the lock $dest/$lockdir, held by $(lock_owner || echo unknown)"
        sleep 1
        waited=$((waited + 1))
    done
    (cd -P "$lockdir" && [ "$(pwd -P)" = "${dest%/}/$lockdir" ] && umask 077 && set -C &&
        printf '%s %s\n' "$(hostname)" "$$" >owner) || refuse_name "the lock directory" "$lockdir"
    # Waiters on other hosts cannot see our pid: keep the owner file fresh.
    # Detached from our output, which belongs to the command exec'd later.
    (while sleep 20; do
        [ -d "$lockdir" ] && [ ! -L "$lockdir" ] && [ ! -L "$lockdir/owner" ] || exit 0
        touch -c "$lockdir/owner"
    done) </dev/null >/dev/null 2>&1 &
    heartbeat=$!
}

release_lock() {
    if have_flock; then
        flock -u 9
        exec 9<&-
    else
        [ -z "$heartbeat" ] || kill "$heartbeat" 2>/dev/null || :
        rm -rf "./$lockdir"
    fi
}

# ---------------------------------------------------------------- helpers
is_ours() {
    case $1 in
        "$marker_name" | "$lock_name" | "$lock_name.d" | "$lock_name.d.break" | lost+found | \
        "$staging_prefix"* | "$marker_name.tmp-"*) return 0 ;;
    esac
    return 1
}

move_into() ( # from to overwrite: rename entries, descending into directories both have
    for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
        [ -e "$e" ] || [ -L "$e" ] || continue
        name=${e##*/}
        [ "$name" = "$ready_name" ] && continue
        t=$2/$name
        if [ ! -e "$t" ] && [ ! -L "$t" ]; then
            mv -T "$e" "$t"
        elif [ -d "$e" ] && [ ! -L "$e" ] && [ -d "$t" ] && [ ! -L "$t" ]; then
            move_into "$e" "$t" "$3"
        elif [ "$3" = true ] && [ ! -d "$e" ] && [ ! -d "$t" ]; then
            mv -f -T "$e" "$t"
        fi
    done
)

json_string() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

ready_ok() { # staging: it holds a ready record that follows the protocol
    r=$1/$ready_name
    [ ! -L "$r" ] && [ -f "$r" ] || return 1
    [ -n "$(find "$r" -maxdepth 0 -type f -user "$uid" -size -16384k -print 2>/dev/null)" ] || return 1
    [ "$(head -n 1 "$r")" = "format=$ready_format" ] || return 1
    ! grep -v -x -E "format=$ready_format|overwrite=(true|false)|marker=\\{.*\\}|prune=.+" "$r" >/dev/null ||
        return 1
    [ "$(grep -c '^marker=' "$r")" = 1 ] && [ "$(grep -c '^overwrite=' "$r")" = 1 ] || return 1
    grep -q '^prune=' "$r" || return 0
    release_lock
    die "$dest/${1#./} holds a ready record with prune entries: only guardrail.ecs.efs_hydrate finishes it; run the module on this volume"
}

finish() { # staging: move a ready staging tree into place and mark dest hydrated
    overwrite=false
    grep -q -x 'overwrite=true' "$1/$ready_name" && overwrite=true
    rm -f "$1/$marker_name.tmp"
    move_into "$1" . "$overwrite"
    sync
    # The marker is written inside the staging tree (ours, 0700), then renamed over the name.
    (umask 022; set -C; sed -n 's/^marker=//p' "$1/$ready_name" >"$1/$marker_name.tmp")
    sync
    mv -f -T "$1/$marker_name.tmp" "$marker_name"
    sync
    rm -rf "$1"
}

marker_json() { # how
    files=$(find "$src" -type f | wc -l | tr -d ' ')
    digest=$(cd "$src" && find . -type f -exec sha256sum {} + | LC_ALL=C sort -k 2 | sha256sum | cut -d ' ' -f 1)
    printf '{"source": %s, "digest": "sha256-content:%s", "files": %s, "time": "%s", "who": %s, "by": "hydrate-entrypoint.sh", "how": "%s"}' \
        "$(json_string "$src")" "$digest" "$files" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$(json_string "$(id -un 2>/dev/null || id -u)@$(hostname) pid $$")" "$1"
}

# ---------------------------------------------------------------- the run
take_lock

recovered=
for leftover in "$staging_prefix"* "$marker_name.tmp-"*; do
    [ -e "$leftover" ] || [ -L "$leftover" ] || continue
    if own_staging "./$leftover" && ready_ok "./$leftover"; then
        finish "./$leftover"
        recovered=1
    else
        rm -rf "./$leftover"
    fi
done

if check_marker; then
    release_lock
    if [ -n "$recovered" ]; then say "$dest: finished a hydration that was interrupted"; else say "$dest is already hydrated"; fi
    exec "$@"
fi

found=
for e in ./* ./.[!.]* ./..?*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    is_ours "${e##*/}" && continue
    found="$found ${e##*/}"
done
if [ -n "$found" ]; then
    case $on_existing in
        fail)
            release_lock
            die "$dest is not empty and has no marker $marker_name (found:$(echo "$found" | cut -d ' ' -f 1-6)); set GUARDRAIL_HYDRATE_ON_EXISTING=merge to add the source's files, or skip to leave it" ;;
        skip)
            release_lock
            say "$dest is not empty and has no marker; left as it is (on_existing=skip)"
            exec "$@" ;;
    esac
fi

id=$(od -An -N16 -tx1 /dev/urandom 2>/dev/null | tr -d ' \n')
[ -n "$id" ] || id=$(cat /proc/sys/kernel/random/uuid)
staging=./$staging_prefix$id
mkdir -m 700 "$staging"
own_staging "$staging" || die "$dest/${staging#./} was replaced while hydrating"
cp -a "$src/." "$staging/"
if [ -n "$owner$group" ]; then
    chown -R -h "$owner${group:+:$group}" "$staging"
    chown -h "$owner${group:+:$group}" .
    # The staging directory itself stays this uid's: that is how a rerun knows it.
    chown -h "$uid" "$staging"
fi
# chmod never follows: only directories and regular files found without following links.
[ -z "$dir_mode" ] || { find "$staging" -type d -exec chmod "$dir_mode" {} +; chmod "$dir_mode" .; }
[ -z "$file_mode" ] || find "$staging" -type f -exec chmod "$file_mode" {} +
chmod 700 "$staging"
sync
# The ready record carries the marker, so whoever finishes this tree writes it.
(umask 022; set -C; printf 'format=%s\noverwrite=false\nmarker=%s\n' "$ready_format" "$(marker_json seeded)" \
    >"$staging/$ready_name.tmp")
mv -T "$staging/$ready_name.tmp" "$staging/$ready_name"
sync
finish "$staging"
release_lock
say "$dest: seeded from $src"
exec "$@"
