#!/bin/sh
# hydrate-entrypoint.sh - seed a mounted volume exactly once, then exec the
# container's command. POSIX sh (dash, busybox ash, bash).
#
# On Fargate the EFS mount hides what the image has at the mount point. Move the
# image's directory aside at build time and let this script fill the volume at
# start, with the same rules as the module guardrail.ecs.efs_hydrate:
#   - an exclusive lock on $DEST/.guardrail-hydrate.lock (flock(1), shared with
#     the module; where flock is missing, a mkdir lock $DEST/.guardrail-hydrate.lock.d)
#     so tasks starting together seed once and the others wait;
#   - copy into a hidden staging directory in $DEST, set owner and modes, sync,
#     mark it ready, rename its entries into place, then write the marker
#     $DEST/.guardrail-hydrated last. A crash leaves no marker; the next start
#     finishes a ready staging directory or removes an unfinished one;
#   - hydrated means "the marker exists", never "the directory is not empty".
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

[ $# -gt 0 ] || die "usage: $0 command [args...] (the command to exec once the volume is ready)"

check_path() { # name value
    case $2 in
        "") die "$1 is not set" ;;
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
case $dest in
    / | /bin | /boot | /dev | /etc | /home | /lib | /lib32 | /lib64 | /libx32 | /media | /opt | \
    /proc | /root | /run | /sbin | /srv | /sys | /tmp | /usr | /var | /var/lib | /var/log | \
    /var/tmp | /usr/local | /bin/* | /boot/* | /dev/* | /etc/* | /lib/* | /lib32/* | /lib64/* | \
    /libx32/* | /proc/* | /sbin/* | /sys/* | /usr/*)
        die "refusing to hydrate the system directory '$dest': give the mounted volume or a directory in it" ;;
esac
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

if [ -n "$dir_mode" ] && [ "$(id -u)" != 0 ]; then
    # Without root a directory its owner cannot write can be neither filled nor moved.
    owner_digit=${dir_mode%??}
    owner_digit=${owner_digit#"${owner_digit%?}"}
    case $owner_digit in
        '' | 0 | 1 | 4 | 5) die "GUARDRAIL_HYDRATE_DIR_MODE $dir_mode must let the owner write when not running as root" ;;
    esac
fi

marker=$dest/$marker_name
if [ -f "$marker" ]; then
    say "$dest is already hydrated"
    exec "$@"
fi

[ -d "$src" ] || die "GUARDRAIL_HYDRATE_SRC '$src' is not a directory"

# The whole source is validated before anything is written.
bad=$(find "$src" \( -type b -o -type c -o -type p -o -type s \) -print | head -n 5)
[ -z "$bad" ] || die "refusing the source: device files, FIFOs or sockets: $bad"
bad=$(find "$src" -type l -exec sh -c '
    root=$1; shift
    for link; do
        target=$(readlink "$link")
        rel=${link#"$root"/}
        case $target in /*) printf "%s -> %s\n" "$rel" "$target"; continue ;; esac
        # Depth of the link'\''s directory, then walk the target.
        depth=0
        dir=${rel%/*}
        [ "$dir" = "$rel" ] && dir=
        old_ifs=$IFS; IFS=/
        for part in $dir; do [ -n "$part" ] && depth=$((depth + 1)); done
        escaped=
        for part in $target; do
            case $part in
                "" | .) ;;
                ..) depth=$((depth - 1)); [ $depth -lt 0 ] && escaped=1 ;;
                *) depth=$((depth + 1)) ;;
            esac
        done
        IFS=$old_ifs
        [ -z "$escaped" ] || printf "%s -> %s\n" "$rel" "$target"
    done' check "$src" {} + | head -n 5)
[ -z "$bad" ] || die "refusing the source: symlinks escaping it: $(echo "$bad" | tr '\n' ';')"

mkdir -p "$dest"

# ---------------------------------------------------------------- the lock
lockdir=$dest/$lock_name.d
heartbeat=
have_flock() { command -v flock >/dev/null 2>&1; }

mkdir_lock_stale() { # the lock's holder is gone: same host and dead, or silent for minutes
    # Just taken, owner not written yet: stale only if it stays like that.
    holder=$(cat "$lockdir/owner" 2>/dev/null) || {
        [ -n "$(find "$lockdir" -maxdepth 0 -mmin +2 2>/dev/null)" ]
        return
    }
    holder_host=${holder%% *}
    holder_pid=${holder#* }
    if [ "$holder_host" = "$(hostname)" ] && ! kill -0 "$holder_pid" 2>/dev/null; then
        return 0
    fi
    [ -n "$(find "$lockdir/owner" -mmin +2 2>/dev/null)" ]
}

take_lock() {
    if have_flock; then
        exec 9>>"$dest/$lock_name"
        flock -w "$timeout" 9 || die "timed out after ${timeout}s waiting for the lock $dest/$lock_name"
        return
    fi
    waited=0
    while ! mkdir "$lockdir" 2>/dev/null; do
        if mkdir_lock_stale && mkdir "$lockdir.break" 2>/dev/null; then
            # Only one waiter breaks a stale lock, and only if it is still stale.
            if mkdir_lock_stale; then rm -rf "$lockdir"; fi
            rmdir "$lockdir.break"
            continue
        fi
        [ -d "$lockdir.break" ] && [ -n "$(find "$lockdir.break" -mmin +2 2>/dev/null)" ] &&
            rmdir "$lockdir.break" 2>/dev/null
        [ "$waited" -lt "$timeout" ] ||
            die "timed out after ${timeout}s waiting for the lock $lockdir, held by $(cat "$lockdir/owner" 2>/dev/null || echo unknown)"
        sleep 1
        waited=$((waited + 1))
    done
    echo "$(hostname) $$" >"$lockdir/owner"
    # Waiters on other hosts cannot see our pid: keep the owner file fresh.
    # Detached from our output, which belongs to the command exec'd later.
    (while sleep 20; do [ -d "$lockdir" ] && touch "$lockdir/owner" || exit 0; done) \
        </dev/null >/dev/null 2>&1 &
    heartbeat=$!
}

release_lock() {
    if have_flock; then
        flock -u 9
        exec 9>&-
    else
        [ -z "$heartbeat" ] || kill "$heartbeat" 2>/dev/null || :
        rm -rf "$lockdir"
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
            mv "$e" "$t"
        elif [ -d "$e" ] && [ ! -L "$e" ] && [ -d "$t" ] && [ ! -L "$t" ]; then
            move_into "$e" "$t" "$3"
        elif [ "$3" = true ] && [ ! -d "$e" ] && [ ! -d "$t" ]; then
            mv -f "$e" "$t"
        fi
    done
)

json_string() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

write_marker() { # json
    tmp=$dest/$marker_name.tmp-$$
    printf '%s\n' "$1" >"$tmp"
    sync
    mv -f "$tmp" "$marker"
    sync
}

finish() { # staging: move a ready staging tree into place and mark dest hydrated
    overwrite=false
    grep -q '"overwrite": *true' "$1/$ready_name" && overwrite=true
    move_into "$1" "$dest" "$overwrite"
    sync
    record=$(sed -n 's/^{"overwrite": [a-z]*, "prune": \[\], "marker": \(.*\)}$/\1/p' "$1/$ready_name")
    write_marker "${record:-$(marker_json recovered)}"
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
for leftover in "$dest/$staging_prefix"* "$dest/$marker_name.tmp-"*; do
    [ -e "$leftover" ] || continue
    if [ -d "$leftover" ] && [ -f "$leftover/$ready_name" ]; then
        finish "$leftover"
        recovered=1
    else
        rm -rf "$leftover"
    fi
done

if [ -f "$marker" ]; then
    release_lock
    if [ -n "$recovered" ]; then say "$dest: finished a hydration that was interrupted"; else say "$dest is already hydrated"; fi
    exec "$@"
fi

found=
for e in "$dest"/* "$dest"/.[!.]* "$dest"/..?*; do
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

id=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || echo "$$-$(date +%s)")
staging=$dest/$staging_prefix$id
mkdir "$staging"
chmod 700 "$staging"
cp -a "$src/." "$staging/"
if [ -n "$owner$group" ]; then
    chown -R -h "$owner${group:+:$group}" "$staging"
    chown "$owner${group:+:$group}" "$dest"
fi
[ -z "$dir_mode" ] || { find "$staging" -type d -exec chmod "$dir_mode" {} +; chmod "$dir_mode" "$dest"; }
[ -z "$file_mode" ] || find "$staging" -type f -exec chmod "$file_mode" {} +
sync
# The ready file carries the marker, so whoever finishes this tree writes it.
printf '{"overwrite": false, "prune": [], "marker": %s}\n' "$(marker_json seeded)" >"$staging/$ready_name.tmp"
mv "$staging/$ready_name.tmp" "$staging/$ready_name"
sync
finish "$staging"
release_lock
say "$dest: seeded from $src"
exec "$@"
