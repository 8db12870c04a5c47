/* guardrail-hydrate - seed a mounted volume exactly once, then exec the
 * container's command. One of the two implementations of the protocol
 * specified in roles/efs_volume/PROTOCOL.md; the other is the module
 * guardrail.ecs.efs_hydrate, and tests/integration/test_efs_hydrate_conformance.py
 * holds both to it.
 *
 * Everything it touches in DEST is reached through a descriptor: DEST is
 * opened once (O_DIRECTORY | O_NOFOLLOW) and every later name with
 * openat/fstatat/mkdirat/renameat/linkat/unlinkat relative to a directory it
 * opened without following links; a file it reads is opened only after its
 * type is checked on an O_PATH descriptor; owner and mode are set with
 * fchown/fchmod on what it opened. A writer racing it on the volume can make
 * a run fail, never make it act outside DEST.
 *
 * Build: gcc -static -O2 -o guardrail-hydrate guardrail-hydrate.c
 * Usage: guardrail-hydrate command [args...]   (settings in the environment;
 * see the role's README). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define EXIT_REFUSED 70
#define MARKER ".guardrail-hydrated"
#define MARKER_TMP ".guardrail-hydrated.tmp"
#define MARKER_TMP_PREFIX ".guardrail-hydrated.tmp-"
#define LOCK_FILE ".guardrail-hydrate.lock"
#define LOCK_DIR ".guardrail-hydrate.lock.d"
#define STAGING_PREFIX ".guardrail-staging-"
#define READY ".guardrail-ready"
#define READY_TMP ".guardrail-ready.tmp"
#define READY_FORMAT "guardrail-hydrate-ready 1"
#define READY_MAX (16L << 20)
#define MARKER_MAX (64L << 10)
#define MAX_LINK_HOPS 40
#define DIR_FLAGS (O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)

static const char *prog = "guardrail-hydrate";

/* The conformance suite kills a run at each step boundary of the protocol
 * (GUARDRAIL_HYDRATE_TEST_STOP names one) with a binary built with
 * -DGUARDRAIL_HYDRATE_TEST_STEPS; a production build has no such hook. */
#ifdef GUARDRAIL_HYDRATE_TEST_STEPS
static void step(const char *name)
{
    const char *stop = getenv("GUARDRAIL_HYDRATE_TEST_STOP");
    if (stop && !strcmp(stop, name))
        raise(SIGKILL);
}
#else
#define step(name) ((void)0)
#endif
static const char *dest_path; /* resolved, for messages */
static uid_t euid;
static int is_root;
static long owner_uid = -1, owner_gid = -1;
static long dir_mode = -1, file_mode = -1;
/* DEST's deepest existing ancestor, resolved once, and the path from it to DEST. */
static char *missing, *dest_rel;
static int parent_fd = -1;

/* ------------------------------------------------------------ messages */

static void vsay(const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
}

/* Called once by die(): removes the staging tree of this run, so that a
 * failure (ENOSPC most of all) leaves nothing partial behind. */
static void (*on_die)(void);

static _Noreturn void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    void (*hook)(void) = on_die;
    on_die = NULL;
    if (hook)
        hook();
    exit(EXIT_REFUSED);
}

static _Noreturn void die_errno(const char *what, const char *path)
{
    die("%s %s: %s", what, path, strerror(errno));
}

static _Noreturn void refuse_name(const char *label, const char *name)
{
    die("%s %s/%s is not what the hydrator creates (a symlink, FIFO, directory or another user's file): "
        "refusing it; remove it after checking who put it there", label, dest_path, name);
}

static _Noreturn void another_filesystem(const char *rel)
{
    die("%s/%s is on another filesystem (a mount point): hydration renames within one filesystem and never "
        "writes across mounts; unmount it, or hydrate it as its own GUARDRAIL_HYDRATE_DEST", dest_path, rel);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        die("out of memory");
    return p;
}

static char *joinpath(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = xmalloc(la + lb + 2);
    memcpy(p, a, la);
    if (la)
        p[la++] = '/';
    memcpy(p + la, b, lb + 1);
    return p;
}

/* ------------------------------------------------------------ sha-256 */

struct sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t used;
};

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256 *s, const unsigned char *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++)
        w[i] = (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10)) + w[i - 7] +
               (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 16];
    a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_init(struct sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
    s->used = 0;
}

static void sha256_update(struct sha256 *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->len += n;
    while (n) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->buf + s->used, p, take);
        s->used += take, p += take, n -= take;
        if (s->used == 64) {
            sha256_block(s, s->buf);
            s->used = 0;
        }
    }
}

static void sha256_hex(struct sha256 *s, char out[65])
{
    uint64_t bits = s->len * 8;
    unsigned char pad = 0x80, len[8];
    sha256_update(s, &pad, 1);
    pad = 0;
    while (s->used != 56)
        sha256_update(s, &pad, 1);
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, len, 8);
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", s->h[i]);
}

/* ------------------------------------------------------------ settings */

static void check_path(const char *name, const char *value)
{
    if (!value || !*value)
        die("%s is not set", name);
    if (strchr(value, '\n'))
        die("%s must not contain a newline", name);
    if (value[0] != '/')
        die("%s must be an absolute path, got '%s'", name, value);
    for (const char *p = value; (p = strstr(p, "/..")); p += 3)
        if (p[3] == '/' || p[3] == '\0')
            die("%s must not contain '..': '%s'", name, value);
}

static int system_dir(const char *p)
{
    static const char *const dirs[] = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32",
        "/lib64", "/libx32", "/media", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
        "/usr", "/var", "/var/lib", "/var/log", "/var/tmp", "/usr/local", NULL};
    static const char *const trees[] = {"/bin/", "/boot/", "/dev/", "/etc/", "/lib/", "/lib32/", "/lib64/",
        "/libx32/", "/proc/", "/sbin/", "/sys/", "/usr/", NULL};
    for (int i = 0; dirs[i]; i++)
        if (!strcmp(p, dirs[i]))
            return 1;
    for (int i = 0; trees[i]; i++)
        if (!strncmp(p, trees[i], strlen(trees[i])))
            return 1;
    return 0;
}

static void refuse_system(const char *p)
{
    if (system_dir(p))
        die("refusing to hydrate the system directory '%s': give the mounted volume or a directory in it", p);
}

static long parse_mode(const char *name, const char *value)
{
    if (!value || !*value)
        return -1;
    if (strspn(value, "01234567") != strlen(value) || strlen(value) > 5)
        die("modes must be octal such as 0750, got '%s' (%s)", value, name);
    return strtol(value, NULL, 8);
}

/* A user or group as a number, or by name from /etc/passwd or /etc/group:
 * a static binary has no NSS, and an image's users are in those files. */
static long lookup_id(const char *file, const char *what, const char *name)
{
    if (!name || !*name)
        return -1;
    if (strspn(name, "0123456789") == strlen(name))
        return strtol(name, NULL, 10);
    FILE *f = fopen(file, "re");
    char line[4096];
    size_t n = strlen(name);
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon || (size_t)(colon - line) != n || strncmp(line, name, n))
            continue;
        char *id = strchr(colon + 1, ':');
        if (id && id[1] >= '0' && id[1] <= '9') {
            fclose(f);
            return strtol(id + 1, NULL, 10);
        }
    }
    if (f)
        fclose(f);
    die("%s '%s' does not exist in %s", what, name, file);
}

static char *user_name(uid_t uid)
{
    FILE *f = fopen("/etc/passwd", "re");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (b && strtol(b + 1, NULL, 10) == (long)uid && b[1] >= '0' && b[1] <= '9') {
            *a = '\0';
            fclose(f);
            return xstrdup(line);
        }
    }
    if (f)
        fclose(f);
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", (long)uid);
    return xstrdup(buf);
}

/* ------------------------------------------------------------ descriptors */

static int is_ours(const char *name)
{
    return !strncmp(name, STAGING_PREFIX, strlen(STAGING_PREFIX)) ||
           !strncmp(name, MARKER_TMP_PREFIX, strlen(MARKER_TMP_PREFIX));
}

static int ignored(const char *name)
{
    return !strcmp(name, MARKER) || !strcmp(name, LOCK_FILE) || !strcmp(name, LOCK_DIR) ||
           !strcmp(name, LOCK_DIR ".break") || !strcmp(name, "lost+found") || is_ours(name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in an open directory, sorted; the descriptor stays open. */
static char **list_dir(int fd, size_t *count)
{
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    DIR *d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
    if (!d)
        die_errno("cannot list", dest_path);
    rewinddir(d);
    size_t n = 0, cap = 16;
    char **names = xmalloc(cap * sizeof *names);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap)
            names = realloc(names, (cap *= 2) * sizeof *names);
        if (!names)
            die("out of memory");
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    *count = n;
    return names;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Removes `name` below `parent`, a directory's content through descriptors,
 * never following a symlink. */
static void remove_at(int parent, const char *name)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
            return;
        die_errno("cannot remove", name);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(parent, name, 0) != 0 && errno != ENOENT)
            die_errno("cannot remove", name);
        return;
    }
    int fd = openat(parent, name, DIR_FLAGS);
    if (fd < 0) {
        if (errno == ENOENT)
            return;
        die_errno("cannot remove", name);
    }
    size_t n;
    char **names = list_dir(fd, &n);
    for (size_t i = 0; i < n; i++)
        remove_at(fd, names[i]);
    free_names(names, n);
    close(fd);
    if (unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        die_errno("cannot remove", name);
}

/* Why `st` is not one of the hydrator's files, or NULL. */
static const char *owned_problem(const struct stat *st)
{
    if (!S_ISREG(st->st_mode))
        return "not a regular file";
    if (st->st_uid != euid && st->st_uid != 0 && (long)st->st_uid != owner_uid)
        return "another user's";
    if (st->st_nlink != 1)
        return "hard linked";
    if (st->st_mode & 022)
        return "writable by others";
    return NULL;
}

/* Opens `name` below `dir_fd` only once its type is known: an O_PATH
 * descriptor (it opens nothing: no FIFO blocks, no driver runs, no link is
 * followed) is checked with `want`, then reopened through /proc/self/fd with
 * `flags`, the same inode by construction; without /proc, with O_NONBLOCK |
 * O_NOCTTY and an identity check. -1 with errno ENOENT when absent,
 * EMEDIUMTYPE when it is not of type `want`, ESTALE when it was replaced. */
static int open_checked(int dir_fd, const char *name, int flags, mode_t want, struct stat *st)
{
    int path_fd = openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (path_fd < 0)
        return -1;
    if (fstat(path_fd, st) != 0 || (st->st_mode & S_IFMT) != want) {
        close(path_fd);
        errno = EMEDIUMTYPE;
        return -1;
    }
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", path_fd);
    int fd = open(proc, flags | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ENOENT)
        fd = openat(dir_fd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    close(path_fd);
    if (fd < 0)
        return -1;
    struct stat now;
    if (fstat(fd, &now) != 0 || now.st_dev != st->st_dev || now.st_ino != st->st_ino) {
        close(fd);
        errno = ESTALE;
        return -1;
    }
    *st = now;
    return fd;
}

/* 0: no marker; 1: a marker of the hydrator's. Anything else there is refused,
 * and the marker's bytes are never read: nothing of it reaches the output. */
static int check_marker(int dest_fd)
{
    struct stat st;
    int fd = open_checked(dest_fd, MARKER, O_RDONLY, S_IFREG, &st);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        refuse_name("the marker", MARKER);
    }
    if (owned_problem(&st))
        refuse_name("the marker", MARKER);
    close(fd);
    return 1;
}

/* ------------------------------------------------------------ the source */

struct entry {
    char *path;
    char kind; /* d(ir) f(ile) l(symlink) h(ard link) */
    mode_t mode;
    uid_t uid;
    gid_t gid;
    off_t size;
    struct timespec mtime;
    char *target; /* a symlink's text, or the first name of a hard-linked file */
    dev_t dev;
    ino_t ino;
    char todo;    /* COPY (the default), KEEP, or FIX_META of a directory dest has */
    dev_t ddev;   /* the inode dest has at the path, for hard link groups */
    ino_t dino;
};

enum { COPY = 0, KEEP = 1, FIX_META = 2 };

static struct entry *entries;
static size_t n_entries, cap_entries;
static char **problems;
static size_t n_problems;

static void problem(const char *fmt, ...)
{
    char *text;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        die("out of memory");
    va_end(ap);
    problems = realloc(problems, (n_problems + 1) * sizeof *problems);
    if (!problems)
        die("out of memory");
    problems[n_problems++] = text;
}

static struct entry *add_entry(void)
{
    if (n_entries == cap_entries) {
        cap_entries = cap_entries ? cap_entries * 2 : 256;
        entries = realloc(entries, cap_entries * sizeof *entries);
        if (!entries)
            die("out of memory");
    }
    struct entry *e = &entries[n_entries++];
    memset(e, 0, sizeof *e);
    return e;
}

static const char *first_name_of(dev_t dev, ino_t ino)
{
    for (size_t i = 0; i < n_entries; i++)
        if (entries[i].kind == 'f' && entries[i].dev == dev && entries[i].ino == ino)
            return entries[i].path;
    return NULL;
}

/* The source in the module's order (each directory's names sorted, then its
 * subdirectories depth first), so the listing digest is the module's. */
static void scan_source(int src_fd)
{
    size_t n_stack = 1, cap_stack = 16;
    char **stack = xmalloc(cap_stack * sizeof *stack);
    stack[0] = xstrdup("");
    while (n_stack) {
        char *rel = stack[--n_stack];
        int fd = *rel ? openat(src_fd, rel, DIR_FLAGS) : fcntl(src_fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            die("refusing the source: cannot read the directory %s: %s", *rel ? rel : ".", strerror(errno));
        size_t n;
        char **names = list_dir(fd, &n);
        size_t first_sub = n_stack;
        for (size_t i = 0; i < n; i++) {
            struct stat st;
            char *path = joinpath(rel, names[i]);
            if (fstatat(fd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0)
                die("refusing the source: cannot stat %s: %s", path, strerror(errno));
            if (!*rel && (ignored(names[i]) && strcmp(names[i], "lost+found")))
                problem("it holds the hydrator's own name %s", names[i]);
            struct entry *e;
            if (S_ISDIR(st.st_mode)) {
                if (!is_root && faccessat(fd, names[i], R_OK | X_OK, AT_EACCESS) != 0)
                    problem("directory %s is not readable by uid %ld", path, (long)euid);
                e = add_entry();
                e->kind = 'd';
                if (n_stack == cap_stack && !(stack = realloc(stack, (cap_stack *= 2) * sizeof *stack)))
                    die("out of memory");
                stack[n_stack++] = xstrdup(path);
            } else if (S_ISREG(st.st_mode)) {
                if (!is_root && faccessat(fd, names[i], R_OK, AT_EACCESS) != 0)
                    problem("file %s is not readable by uid %ld", path, (long)euid);
                const char *first = st.st_nlink > 1 ? first_name_of(st.st_dev, st.st_ino) : NULL;
                e = add_entry();
                e->kind = first ? 'h' : 'f';
                e->size = first ? 0 : st.st_size;
                e->target = first ? xstrdup(first) : NULL;
            } else if (S_ISLNK(st.st_mode)) {
                char buf[PATH_MAX + 1];
                ssize_t len = readlinkat(fd, names[i], buf, PATH_MAX);
                if (len < 0)
                    die("refusing the source: cannot read the symlink %s: %s", path, strerror(errno));
                buf[len] = '\0';
                e = add_entry();
                e->kind = 'l';
                e->target = xstrdup(buf);
            } else {
                problem("%s is a device file, FIFO or socket", path);
                free(path);
                continue;
            }
            e->path = path;
            e->mode = e->kind == 'l' ? 0777 : st.st_mode & 07777;
            e->uid = st.st_uid;
            e->gid = st.st_gid;
            e->mtime = st.st_mtim;
            e->dev = st.st_dev;
            e->ino = st.st_ino;
        }
        /* Subdirectories in name order: the first one on top of the stack. */
        for (size_t a = first_sub, b = n_stack ? n_stack - 1 : 0; a < b; a++, b--) {
            char *t = stack[a];
            stack[a] = stack[b];
            stack[b] = t;
        }
        free_names(names, n);
        close(fd);
        free(rel);
    }
    free(stack);
}

static int cmp_link(const void *a, const void *b)
{
    return strcmp((*(struct entry *const *)a)->path, (*(struct entry *const *)b)->path);
}

static struct entry **links;
static size_t n_links;

static const char *link_target(const char *path)
{
    struct entry key = {.path = (char *)path}, *k = &key, **found;
    found = bsearch(&k, links, n_links, sizeof *links, cmp_link);
    return found ? (*found)->target : NULL;
}

struct strv {
    char **v;
    size_t n, cap;
};

static void strv_push(struct strv *s, char *p)
{
    if (s->n == s->cap && !(s->v = realloc(s->v, (s->cap = s->cap ? s->cap * 2 : 16) * sizeof *s->v)))
        die("out of memory");
    s->v[s->n++] = p;
}

static void strv_split(struct strv *s, const char *text)
{
    char *copy = xstrdup(text), *save = NULL;
    for (char *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save))
        strv_push(s, xstrdup(part));
    free(copy);
}

/* Whether a symlink resolves inside the tree the source becomes, following
 * the tree's own symlinks hop by hop (the module's resolve_in_tree). */
static int resolves_inside(const struct entry *link)
{
    struct strv parts = {0}, pending = {0};
    int hops = 0, inside = 1;
    if (link->target[0] == '/')
        return 0;
    char *dir = xstrdup(link->path), *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        strv_split(&parts, dir);
    }
    free(dir);
    strv_split(&pending, link->target);
    size_t k = 0;
    while (k < pending.n) {
        char *part = pending.v[k++];
        if (!strcmp(part, "."))
            continue;
        if (!strcmp(part, "..")) {
            if (!parts.n) {
                inside = 0;
                break;
            }
            parts.n--;
            continue;
        }
        strv_push(&parts, part);
        size_t len = 0;
        for (size_t j = 0; j < parts.n; j++)
            len += strlen(parts.v[j]) + 1;
        char *here = xmalloc(len + 1);
        here[0] = '\0';
        for (size_t j = 0; j < parts.n; j++) {
            if (j)
                strcat(here, "/");
            strcat(here, parts.v[j]);
        }
        const char *t = link_target(here);
        free(here);
        if (!t)
            continue;
        if (++hops > MAX_LINK_HOPS || t[0] == '/') {
            inside = 0;
            break;
        }
        parts.n--;
        struct strv next = {0};
        strv_split(&next, t);
        for (size_t j = k; j < pending.n; j++)
            strv_push(&next, pending.v[j]);
        free(pending.v);
        pending = next;
        k = 0;
    }
    free(parts.v);
    free(pending.v);
    return inside;
}

static void check_links(void)
{
    for (size_t i = 0; i < n_entries; i++)
        if (entries[i].kind == 'l') {
            links = realloc(links, (n_links + 1) * sizeof *links);
            if (!links)
                die("out of memory");
            links[n_links++] = &entries[i];
        }
    qsort(links, n_links, sizeof *links, cmp_link);
    for (size_t i = 0; i < n_entries; i++)
        if (entries[i].kind == 'l' && !resolves_inside(&entries[i]))
            problem("symlink %s -> %s resolves outside the tree", entries[i].path, entries[i].target);
}

/* The module's sha256-listing digest of a directory source. */
static void listing_digest(char out[80])
{
    static const char *const kinds[] = {['d'] = "dir", ['f'] = "file", ['l'] = "symlink", ['h'] = "hardlink"};
    struct sha256 s;
    char num[96], hex[65];
    sha256_init(&s);
    for (size_t i = 0; i < n_entries; i++) {
        const struct entry *e = &entries[i];
        const char *kind = kinds[(unsigned char)e->kind];
        sha256_update(&s, kind, strlen(kind) + 1);
        sha256_update(&s, e->path, strlen(e->path) + 1);
        int len = snprintf(num, sizeof num, "%lld", (long long)e->size);
        sha256_update(&s, num, len + 1);
        len = snprintf(num, sizeof num, "%lld", (long long)e->mtime.tv_sec * 1000000000LL + e->mtime.tv_nsec);
        sha256_update(&s, num, len + 1);
        len = snprintf(num, sizeof num, "%o", (unsigned)e->mode);
        sha256_update(&s, num, len + 1);
        if (e->target)
            sha256_update(&s, e->target, strlen(e->target));
        sha256_update(&s, "\n", 1);
    }
    sha256_hex(&s, hex);
    snprintf(out, 80, "sha256-listing:%s", hex);
}

/* ------------------------------------------------------------ the ready record */

static const char *json_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r')
        p++;
    return p;
}

static const char *json_string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    for (; *p != '"'; p++) {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i])
                        return NULL;
                p += 4;
            } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
    }
    return p + 1;
}

static const char *json_digits(const char *p)
{
    if (*p < '0' || *p > '9')
        return NULL;
    while (*p >= '0' && *p <= '9')
        p++;
    return p;
}

static const char *json_scalar(const char *p, int allow_null)
{
    if (*p == '"')
        return json_string(p);
    if (!strncmp(p, "true", 4))
        return p + 4;
    if (!strncmp(p, "false", 5))
        return p + 5;
    if (allow_null && !strncmp(p, "null", 4))
        return p + 4;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (!(p = json_digits(p)))
        return NULL;
    if (*p == '.' && !(p = json_digits(p + 1)))
        return NULL;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!(p = json_digits(p)))
            return NULL;
    }
    return p;
}

/* A marker record: a JSON object whose values are scalars or lists of scalars. */
static int valid_marker(const char *p)
{
    if (strlen(p) > MARKER_MAX || *(p = json_ws(p)) != '{')
        return 0;
    p = json_ws(p + 1);
    if (*p == '}')
        return !*json_ws(p + 1);
    for (;;) {
        if (!(p = json_string(p)) || *(p = json_ws(p)) != ':')
            return 0;
        p = json_ws(p + 1);
        if (*p == '[') {
            p = json_ws(p + 1);
            while (*p != ']') {
                if (!(p = json_scalar(p, 0)))
                    return 0;
                p = json_ws(p);
                if (*p == ',')
                    p = json_ws(p + 1);
                else if (*p != ']')
                    return 0;
            }
            p++;
        } else if (!(p = json_scalar(p, 1))) {
            return 0;
        }
        p = json_ws(p);
        if (*p == '}')
            return !*json_ws(p + 1);
        if (*p != ',')
            return 0;
        p = json_ws(p + 1);
    }
}

/* A prune entry, percent-decoded: relative, normalised, not one of ours. */
static int valid_prune(const char *value)
{
    char *path = xmalloc(strlen(value) + 1), *q = path;
    int ok = 1;
    for (const char *p = value; *p; p++) {
        if (*p == '%') {
            unsigned v;
            if (sscanf(p + 1, "%2x", &v) != 1 || !p[1] || !p[2] || !v) {
                ok = 0;
                break;
            }
            *q++ = (char)v;
            p += 2;
        } else {
            *q++ = *p;
        }
    }
    *q = '\0';
    if (ok && (!*path || path[0] == '/'))
        ok = 0;
    for (char *part = path, *end; ok && part; part = end ? end + 1 : NULL) {
        end = strchr(part, '/');
        size_t len = end ? (size_t)(end - part) : strlen(part);
        if (!len || (len == 1 && part[0] == '.') || (len == 2 && !strncmp(part, "..", 2)))
            ok = 0;
        if (part == path) {
            char top[NAME_MAX + 1];
            snprintf(top, sizeof top, "%.*s", (int)(len > NAME_MAX ? NAME_MAX : len), part);
            if (ignored(top))
                ok = 0;
        }
    }
    free(path);
    return ok;
}

struct ready {
    int overwrite;
    int prune;
    char *marker;
};

/* Parses a ready record against the schema of PROTOCOL.md; 0 when invalid. */
static int parse_ready(char *data, size_t len, struct ready *r)
{
    int seen_overwrite = 0;
    memset(r, 0, sizeof *r);
    if (!len || data[len - 1] != '\n')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!data[i] || (unsigned char)data[i] > 127)
            return 0;
    data[len - 1] = '\0';
    char *line = data, *next;
    if (strncmp(line, "format=" READY_FORMAT "\n", strlen("format=" READY_FORMAT "\n")) &&
        strcmp(line, "format=" READY_FORMAT))
        return 0;
    for (line = strchr(line, '\n'); line; line = next) {
        line++;
        next = strchr(line, '\n');
        if (next)
            *next = '\0';
        if (!strncmp(line, "overwrite=", 10) && !seen_overwrite) {
            if (strcmp(line + 10, "true") && strcmp(line + 10, "false"))
                return 0;
            r->overwrite = !strcmp(line + 10, "true");
            seen_overwrite = 1;
        } else if (!strncmp(line, "marker=", 7) && !r->marker) {
            if (!valid_marker(line + 7))
                return 0;
            r->marker = line + 7;
        } else if (!strncmp(line, "prune=", 6)) {
            if (!valid_prune(line + 6))
                return 0;
            r->prune++;
        } else {
            return 0;
        }
    }
    return seen_overwrite && r->marker;
}

/* The record of a staging tree this uid created; NULL when missing or invalid. */
static char *read_ready(int staging_fd, struct ready *r)
{
    struct stat st;
    int fd = open_checked(staging_fd, READY, O_RDONLY, S_IFREG, &st);
    if (fd < 0)
        return NULL;
    if (owned_problem(&st) || st.st_uid != euid || st.st_size > READY_MAX) {
        close(fd);
        return NULL;
    }
    char *data = xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    ssize_t n;
    while (got <= (size_t)st.st_size && (n = read(fd, data + got, (size_t)st.st_size + 1 - got)) > 0)
        got += (size_t)n;
    close(fd);
    if (got != (size_t)st.st_size || !parse_ready(data, got, r)) {
        free(data);
        return NULL;
    }
    return data;
}

/* ------------------------------------------------------------ moving into place */

static void write_all(int fd, const char *data, size_t len, const char *label)
{
    while (len) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die_errno("cannot write", label);
        }
        data += n, len -= (size_t)n;
    }
}

static int rename_noreplace(int from_fd, const char *name, int to_fd)
{
    int rc = renameat2(from_fd, name, to_fd, name, RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
        /* NFS has no RENAME_NOREPLACE: rename, which replaces a link planted
         * since the check and never follows it. */
        struct stat st;
        if (fstatat(to_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            errno = EEXIST;
            return -1;
        }
        rc = renameat(from_fd, name, to_fd, name);
    }
    return rc;
}

/* Renames the staging tree's entries into DEST, descending into directories
 * both have, through descriptors only. A directory of DEST that became a
 * symlink or vanished stops the run; the staging tree stays for the next. */
static void move_into(int from_fd, int to_fd, int overwrite, const char *rel)
{
    size_t n;
    char **names = list_dir(from_fd, &n);
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        struct stat from_st, to_st;
        if (!*rel && (!strcmp(name, READY) || !strcmp(name, MARKER_TMP)))
            continue;
        char *path = joinpath(rel, name);
        if (fstatat(from_fd, name, &from_st, AT_SYMLINK_NOFOLLOW) != 0)
            die_errno("cannot read the staging entry", path);
        for (int attempt = 0;; attempt++) {
            if (fstatat(to_fd, name, &to_st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno != ENOENT)
                    die_errno("cannot read", path);
                if (rename_noreplace(from_fd, name, to_fd) == 0)
                    break;
                if (errno == EEXIST && attempt < 3)
                    continue;
                if (errno == EXDEV)
                    another_filesystem(*rel ? rel : ".");
                die("%s/%s changed while hydrating: %s; run again", dest_path, path, strerror(errno));
            }
            if (S_ISDIR(from_st.st_mode) && S_ISDIR(to_st.st_mode)) {
                int sub_from = openat(from_fd, name, DIR_FLAGS);
                int sub_to = openat(to_fd, name, DIR_FLAGS);
                if (sub_from < 0)
                    die_errno("cannot open the staging directory", path);
                if (sub_to < 0)
                    die("%s/%s in DEST changed while hydrating (now a symlink or gone): nothing was moved "
                        "through it; run again", dest_path, path);
                struct stat a, b;
                if (fstat(to_fd, &a) != 0 || fstat(sub_to, &b) != 0 || a.st_dev != b.st_dev)
                    another_filesystem(path);
                move_into(sub_from, sub_to, overwrite, path);
                close(sub_from);
                close(sub_to);
            } else if (overwrite && !S_ISDIR(from_st.st_mode) && !S_ISDIR(to_st.st_mode)) {
                if (renameat(from_fd, name, to_fd, name) != 0) {
                    if (errno == EXDEV)
                        another_filesystem(*rel ? rel : ".");
                    die_errno("cannot rename into place", path);
                }
            }
            break;
        }
        free(path);
    }
    free_names(names, n);
}

static void sync_fs(int fd)
{
    if (syncfs(fd) != 0)
        sync();
}

/* From a synced staging tree with its ready record to the marker: what a run
 * after a crash repeats. */
static void finish(int dest_fd, int staging_fd, const char *staging_name, const struct ready *r)
{
    if (unlinkat(staging_fd, MARKER_TMP, 0) != 0 && errno != ENOENT)
        die_errno("cannot remove", MARKER_TMP);
    move_into(staging_fd, dest_fd, r->overwrite, "");
    step("after-swap");
    /* What stays (files a merge keeps) goes before the marker: after it, only
     * two unlinks remain, the smallest window a kill can leave a tree in. */
    size_t n;
    char **names = list_dir(staging_fd, &n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], READY))
            remove_at(staging_fd, names[i]);
    free_names(names, n);
    sync_fs(dest_fd);
    int fd = openat(staging_fd, MARKER_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        die_errno("cannot write", MARKER_TMP);
    write_all(fd, r->marker, strlen(r->marker), MARKER_TMP);
    write_all(fd, "\n", 1, MARKER_TMP);
    if (fchmod(fd, 0644) != 0 || fsync(fd) != 0)
        die_errno("cannot write", MARKER_TMP);
    close(fd);
    /* rename replaces whatever is at the marker's name and never follows it. */
    if (renameat(staging_fd, MARKER_TMP, dest_fd, MARKER) != 0)
        die("cannot write the marker %s/%s: %s", dest_path, MARKER, strerror(errno));
    step("after-marker");
    if (unlinkat(staging_fd, READY, 0) != 0 || unlinkat(dest_fd, staging_name, AT_REMOVEDIR) != 0)
        remove_at(dest_fd, staging_name);
    fsync(dest_fd);
}

/* ------------------------------------------------------------ the lock */

static int take_lock(int dest_fd, long timeout)
{
    int writable = 1, fd;
    struct stat st;
    for (;;) {
        fd = open_checked(dest_fd, LOCK_FILE, O_RDWR, S_IFREG, &st);
        if (fd < 0 && errno == EACCES) {
            writable = 0;
            fd = open_checked(dest_fd, LOCK_FILE, O_RDONLY, S_IFREG, &st);
        }
        if (fd >= 0 || errno != ENOENT)
            break;
        /* O_EXCL: a name planted since the lookup fails the open, never followed. */
        fd = openat(dest_fd, LOCK_FILE, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0 && fstat(fd, &st) == 0)
            break;
        if (fd >= 0 || errno != EEXIST)
            die_errno("cannot create the lock file", LOCK_FILE);
    }
    if (fd < 0 || owned_problem(&st))
        refuse_name("the lock file", LOCK_FILE);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR)
            die("cannot lock %s/%s: %s", dest_path, LOCK_FILE, strerror(errno));
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec >= timeout)
            die("timed out after %lds waiting for the lock %s/%s", timeout, dest_path, LOCK_FILE);
        usleep(50000);
    }
    if (writable) {
        char who[256], host[128] = "";
        gethostname(host, sizeof host - 1);
        int len = snprintf(who, sizeof who, "%s pid %ld\n", host, (long)getpid());
        if (ftruncate(fd, 0) == 0 && pwrite(fd, who, (size_t)len, 0) < 0)
            say("could not note the lock's holder in %s", LOCK_FILE);
    }
    return fd;
}

/* ------------------------------------------------------------ copying */

static void copy_range(int in, int out, off_t start, off_t end, const char *path)
{
    loff_t i = start, o = start;
    while (i < end) {
        ssize_t n = copy_file_range(in, &i, out, &o, (size_t)(end - i), 0);
        if (n > 0)
            continue;
        if (n == 0)
            break;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
            die_errno("cannot copy", path);
        static char buf[1 << 20];
        while (i < end) {
            ssize_t got = pread(in, buf, (size_t)(end - i) < sizeof buf ? (size_t)(end - i) : sizeof buf, i);
            if (got < 0)
                die_errno("cannot read", path);
            if (got == 0)
                return;
            for (ssize_t done = 0; done < got;) {
                ssize_t w = pwrite(out, buf + done, (size_t)(got - done), o);
                if (w < 0)
                    die_errno("cannot write", path);
                done += w, o += w;
            }
            i += got;
        }
    }
}

/* The data of a file, holes left as holes (SEEK_DATA/SEEK_HOLE). */
static void copy_data(int in, int out, off_t size, const char *path)
{
    off_t off = 0;
    while (off < size) {
        off_t data = lseek(in, off, SEEK_DATA), hole;
        if (data < 0) {
            if (errno == ENXIO)
                break;
            data = off, hole = size;
        } else {
            hole = lseek(in, data, SEEK_HOLE);
            if (hole < 0 || hole > size)
                hole = size;
        }
        if (data >= size)
            break;
        copy_range(in, out, data, hole, path);
        off = hole;
    }
    if (ftruncate(out, size) != 0)
        die_errno("cannot write", path);
}

static void apply_meta(int fd, const struct entry *e, const char *path)
{
    long uid = owner_uid >= 0 ? owner_uid : (is_root ? (long)e->uid : -1);
    long gid = owner_gid >= 0 ? owner_gid : (is_root ? (long)e->gid : -1);
    long mode = e->kind == 'd' ? dir_mode : file_mode;
    if ((uid >= 0 || gid >= 0) && fchown(fd, (uid_t)uid, (gid_t)gid) != 0)
        die_errno("cannot set the owner of", path);
    /* After chown, which clears setuid and setgid. */
    if (fchmod(fd, (mode_t)(mode >= 0 ? mode : (long)e->mode)) != 0)
        die_errno("cannot set the mode of", path);
}

/* The parent directory of `path` below the staging tree. The staging tree is
 * this uid's, mode 0700, and holds only what this run created: nobody else can
 * put a link in it, so a relative path inside it is safe to resolve. */
static int staging_parent(int staging_fd, const char *path, const char **base)
{
    static char *cached;
    static int cached_fd = -1;
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!slash)
        return staging_fd;
    size_t len = (size_t)(slash - path);
    if (cached && strlen(cached) == len && !strncmp(cached, path, len))
        return cached_fd;
    if (cached_fd >= 0)
        close(cached_fd);
    free(cached);
    cached = strndup(path, len);
    if (!cached)
        die("out of memory");
    cached_fd = openat(staging_fd, cached, DIR_FLAGS);
    if (cached_fd < 0 && errno == ENOENT) {
        /* A parent this run does not copy (dest has it): a placeholder that
         * the move descends through. */
        for (char *slash_at = cached;; slash_at++) {
            slash_at = strchr(slash_at, '/');
            if (slash_at)
                *slash_at = '\0';
            if (mkdirat(staging_fd, cached, 0700) != 0 && errno != EEXIST)
                die_errno("cannot create", cached);
            if (!slash_at)
                break;
            *slash_at = '/';
        }
        cached_fd = openat(staging_fd, cached, DIR_FLAGS);
    }
    if (cached_fd < 0)
        die("cannot open %s in the staging tree: %s", path, strerror(errno));
    return cached_fd;
}

static void copy_tree(int src_fd, int staging_fd)
{
    const char *base;
    for (size_t i = 0; i < n_entries; i++) {
        if (entries[i].kind != 'd' || entries[i].todo != COPY)
            continue;
        int parent = staging_parent(staging_fd, entries[i].path, &base);
        if (mkdirat(parent, base, 0700) != 0)
            die_errno("cannot create", entries[i].path);
    }
    for (size_t i = 0; i < n_entries; i++) {
        const struct entry *e = &entries[i];
        if (e->kind != 'f' || e->todo != COPY)
            continue;
        int in = openat(src_fd, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (in < 0)
            die_errno("cannot read the source file", e->path);
        int parent = staging_parent(staging_fd, e->path, &base);
        int out = openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (out < 0)
            die_errno("cannot create", e->path);
        copy_data(in, out, e->size, e->path);
        apply_meta(out, e, e->path);
        struct timespec times[2] = {e->mtime, e->mtime};
        futimens(out, times);
        close(in);
        close(out);
    }
    for (size_t i = 0; i < n_entries; i++) {
        const struct entry *e = &entries[i];
        if ((e->kind != 'l' && e->kind != 'h') || e->todo != COPY)
            continue;
        int parent = staging_parent(staging_fd, e->path, &base);
        if (e->kind == 'h') {
            if (linkat(staging_fd, e->target, parent, base, 0) != 0)
                die_errno("cannot link", e->path);
            continue;
        }
        if (symlinkat(e->target, parent, base) != 0)
            die_errno("cannot create the symlink", e->path);
        long uid = owner_uid >= 0 ? owner_uid : (is_root ? (long)e->uid : -1);
        long gid = owner_gid >= 0 ? owner_gid : (is_root ? (long)e->gid : -1);
        if ((uid >= 0 || gid >= 0) && fchownat(parent, base, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW) != 0)
            die_errno("cannot set the owner of", e->path);
        struct timespec times[2] = {e->mtime, e->mtime};
        utimensat(parent, base, times, AT_SYMLINK_NOFOLLOW);
    }
    /* Directories last, deepest first: a read-only mode would stop the copy. */
    for (size_t i = n_entries; i-- > 0;) {
        const struct entry *e = &entries[i];
        if (e->kind != 'd' || e->todo != COPY)
            continue;
        int fd = openat(staging_fd, e->path, DIR_FLAGS);
        if (fd < 0)
            die_errno("cannot open", e->path);
        apply_meta(fd, e, e->path);
        struct timespec times[2] = {e->mtime, e->mtime};
        futimens(fd, times);
        close(fd);
    }
}

static void json_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p > 0x7e)
            fprintf(f, "\\u%04x", *p); /* the record is ASCII */
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static char *marker_json(const char *src)
{
    char *text = NULL, digest[80], when[32], host[128] = "";
    size_t len = 0, files = 0;
    long long bytes = 0;
    time_t now = time(NULL);
    for (size_t i = 0; i < n_entries; i++) {
        files += entries[i].kind == 'f' || entries[i].kind == 'h';
        bytes += entries[i].kind == 'f' ? (long long)entries[i].size : 0;
    }
    listing_digest(digest);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    gethostname(host, sizeof host - 1);
    char *user = user_name(euid);
    FILE *f = open_memstream(&text, &len);
    if (!f)
        die("out of memory");
    fputs("{\"source\": ", f);
    json_quoted(f, src);
    fprintf(f, ", \"digest\": \"%s\", \"files\": %zu, \"bytes\": %lld, \"time\": \"%s\", \"who\": ", digest,
            files, bytes, when);
    char who[512];
    snprintf(who, sizeof who, "%s@%s pid %ld", user, host, (long)getpid());
    json_quoted(f, who);
    fputs(", \"by\": \"guardrail-hydrate\", \"how\": \"seeded\"}", f);
    fclose(f);
    free(user);
    return text;
}

/* ------------------------------------------------------------ the plan */

/* Descriptors of the directories of DEST, opened one component at a time
 * without following a link: only the chain from DEST to the last directory
 * asked for stays open. */
struct chain {
    int root;
    size_t n, cap;
    char **parts;
    int *fds;
};

static int chain_get(struct chain *c, const char *dir)
{
    size_t keep = 0;
    const char *p = dir;
    while (*p && keep < c->n) {
        size_t len = strcspn(p, "/");
        if (strlen(c->parts[keep]) != len || strncmp(c->parts[keep], p, len))
            break;
        keep++;
        p += len + (p[len] == '/');
    }
    while (c->n > keep) {
        c->n--;
        close(c->fds[c->n]);
        free(c->parts[c->n]);
    }
    while (*p) {
        size_t len = strcspn(p, "/");
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 16;
            c->parts = realloc(c->parts, c->cap * sizeof *c->parts);
            c->fds = realloc(c->fds, c->cap * sizeof *c->fds);
            if (!c->parts || !c->fds)
                die("out of memory");
        }
        char *part = strndup(p, len);
        if (!part)
            die("out of memory");
        int fd = openat(c->n ? c->fds[c->n - 1] : c->root, part, DIR_FLAGS);
        if (fd < 0) {
            free(part);
            return -1;
        }
        c->parts[c->n] = part;
        c->fds[c->n++] = fd;
        p += len + (p[len] == '/');
    }
    return c->n ? c->fds[c->n - 1] : c->root;
}

static void chain_close(struct chain *c)
{
    while (c->n) {
        c->n--;
        close(c->fds[c->n]);
        free(c->parts[c->n]);
    }
    free(c->parts);
    free(c->fds);
    memset(c, 0, sizeof *c);
}

static int meta_differs(const struct stat *st, const struct entry *e)
{
    long uid = owner_uid >= 0 ? owner_uid : (is_root ? (long)e->uid : -1);
    long gid = owner_gid >= 0 ? owner_gid : (is_root ? (long)e->gid : -1);
    long mode = e->kind == 'd' ? dir_mode : file_mode;
    return (uid >= 0 && st->st_uid != (uid_t)uid) || (gid >= 0 && st->st_gid != (gid_t)gid) ||
           (st->st_mode & 07777) != (mode_t)(mode >= 0 ? mode : (long)e->mode);
}

/* Whether the regular file DEST has at e's path holds e's bytes. */
static int same_content(int src_fd, int parent, const char *base, const struct entry *e)
{
    struct stat st;
    int theirs = open_checked(parent, base, O_RDONLY, S_IFREG, &st);
    if (theirs < 0)
        return 0;
    int ours = openat(src_fd, e->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (ours < 0)
        die_errno("cannot read the source file", e->path);
    static char a[1 << 16], b[1 << 16];
    int same = 1;
    for (;;) {
        ssize_t n = read(ours, a, sizeof a), m = 0;
        if (n < 0)
            die_errno("cannot read the source file", e->path);
        while (m < n) {
            ssize_t got = read(theirs, b + m, (size_t)(n - m));
            if (got <= 0)
                break;
            m += got;
        }
        if (m != n || memcmp(a, b, (size_t)n)) {
            same = 0;
            break;
        }
        if (n == 0)
            break;
    }
    close(ours);
    close(theirs);
    return same;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static char *dir_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? strndup(path, (size_t)(slash - path)) : xstrdup("");
}

/* Compares the source with what DEST has, through descriptors, and sets each
 * entry's todo; returns how many entries change. Without `overwrite` (merge)
 * what DEST has is kept; with it (force), a file is copied again unless DEST
 * has a regular file there of the same size, time, owner, mode and bytes:
 * files are replaced by a rename, never changed in place, so an inode linked
 * from outside DEST is never touched. Type clashes and directories of DEST on
 * another filesystem are refused before anything is written. */
static size_t plan(int dest_fd, int src_fd, int overwrite)
{
    struct stat dst, st;
    struct chain c = {.root = dest_fd};
    size_t changes = 0;
    if (fstat(dest_fd, &dst) != 0)
        die_errno("cannot read", dest_path);
    for (size_t i = 0; i < n_entries; i++) {
        struct entry *e = &entries[i];
        char *dir = dir_name(e->path);
        int parent = chain_get(&c, dir);
        free(dir);
        e->todo = COPY;
        if (parent < 0) {
            if (errno != ENOENT)
                die("%s/%s changed while hydrating (now a symlink or not a directory): nothing was changed; run "
                    "again", dest_path, e->path);
            changes++;
            continue;
        }
        if (fstatat(parent, base_name(e->path), &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT)
                die_errno("cannot read", e->path);
            changes++;
            continue;
        }
        if ((e->kind == 'd') != !!S_ISDIR(st.st_mode))
            die("DEST and the source disagree, nothing was changed: %s is a directory in %s but not in %s",
                e->path, e->kind == 'd' ? "the source" : "DEST", e->kind == 'd' ? "DEST" : "the source");
        e->todo = KEEP;
        e->ddev = st.st_dev;
        e->dino = st.st_ino;
        if (e->kind == 'd') {
            if (st.st_dev != dst.st_dev)
                another_filesystem(e->path);
            if (overwrite && meta_differs(&st, e))
                e->todo = FIX_META, changes++;
        } else if (!overwrite || e->kind == 'h') {
            continue;
        } else if (e->kind == 'l') {
            char buf[PATH_MAX + 1];
            ssize_t len = S_ISLNK(st.st_mode) ? readlinkat(parent, base_name(e->path), buf, PATH_MAX) : -1;
            if (len < 0 || (buf[len] = '\0', strcmp(buf, e->target)))
                e->todo = COPY, changes++;
        } else if (!S_ISREG(st.st_mode) || st.st_size != e->size || st.st_mtim.tv_sec != e->mtime.tv_sec ||
                   st.st_mtim.tv_nsec != e->mtime.tv_nsec || meta_differs(&st, e) ||
                   !same_content(src_fd, parent, base_name(e->path), e)) {
            e->todo = COPY, changes++;
        }
    }
    chain_close(&c);
    /* A hard link group is copied whole when any of its names differs (force)
     * or is missing: a link is made in the staging tree, to a copy there. */
    for (int again = 1; again;) {
        again = 0;
        for (size_t i = 0; i < n_entries; i++) {
            struct entry *h = &entries[i];
            if (h->kind != 'h')
                continue;
            struct entry *t = NULL;
            for (size_t j = 0; j < n_entries && !t; j++)
                if (entries[j].kind == 'f' && !strcmp(entries[j].path, h->target))
                    t = &entries[j];
            int differs = overwrite && (!t || t->ddev != h->ddev || t->dino != h->dino);
            if (h->todo != COPY && (differs || (t && t->todo == COPY)))
                h->todo = COPY, changes++, again = 1;
            if (h->todo == COPY && t && t->todo != COPY)
                t->todo = COPY, changes++, again = 1;
        }
    }
    return changes;
}

/* Owner and mode of the directories DEST already had, on descriptors opened
 * one component at a time without following links. */
static void fix_dirs(int dest_fd)
{
    struct stat dst, st;
    struct chain c = {.root = dest_fd};
    fstat(dest_fd, &dst);
    for (size_t i = 0; i < n_entries; i++) {
        struct entry *e = &entries[i];
        if (e->todo != FIX_META)
            continue;
        int fd = chain_get(&c, e->path);
        if (fd < 0)
            die("%s/%s changed while hydrating (now a symlink or gone): nothing was applied to it; run again",
                dest_path, e->path);
        if (fstat(fd, &st) != 0 || st.st_dev != dst.st_dev)
            another_filesystem(e->path);
        apply_meta(fd, e, e->path);
    }
    chain_close(&c);
}

/* The digest in DEST's marker, when it reads as one; "unreadable" else. */
static char *marker_digest(int dest_fd)
{
    struct stat st;
    static char digest[96];
    char buf[4096];
    strcpy(digest, "unreadable");
    int fd = open_checked(dest_fd, MARKER, O_RDONLY, S_IFREG, &st);
    if (fd < 0)
        return digest;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    char *p = strstr(buf, "\"digest\": \"");
    if (p) {
        p += strlen("\"digest\": \"");
        size_t len = strspn(p, "abcdefghijklmnopqrstuvwxyz0123456789:-");
        if (len < sizeof digest && p[len] == '"')
            snprintf(digest, sizeof digest, "%.*s", (int)len, p);
    }
    return digest;
}

/* DEST's path must still name the directory opened at the start: a DEST
 * swapped while this run waited for the lock is refused before anything in
 * it is read. */
static void check_same_dest(int dest_fd)
{
    struct chain c = {.root = parent_fd};
    struct stat here, now;
    int fd = chain_get(&c, dest_rel);
    if (fd < 0 || fstat(fd, &now) != 0 || fstat(dest_fd, &here) != 0 || now.st_dev != here.st_dev ||
        now.st_ino != here.st_ino)
        die("%s was replaced while waiting for the lock (it is now a symlink, another directory or gone): "
            "nothing was changed; check who replaced it, then run again", dest_path);
    chain_close(&c);
}

/* ------------------------------------------------------------ DEST */

/* Opens DEST's parent, resolved once (the path up to it is the host's), and
 * DEST below it without following a link. *missing lists the components still
 * to create; returns DEST's descriptor or -1 when it does not exist yet. */

static int open_dest(const char *dest, char **resolved)
{
    char *parent = xstrdup(dest), *base = strrchr(parent, '/');
    const char *name = base + 1;
    *base = '\0';
    char *rest = xstrdup(""), *p = xstrdup(*parent ? parent : "/");
    struct stat st;
    while (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (lstat(p, &st) == 0)
            die("'%s' exists and is not a directory", p);
        char *slash = strrchr(p, '/'), *joined;
        if (asprintf(&joined, "%s%s%s", slash + 1, *rest ? "/" : "", rest) < 0)
            die("out of memory");
        free(rest);
        rest = joined;
        if (slash == p)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
    char *real = realpath(p, NULL);
    if (!real)
        die("cannot resolve '%s': %s", p, strerror(errno));
    if (asprintf(resolved, "%s%s%s/%s", strcmp(real, "/") ? real : "", *rest ? "/" : "", rest, name) < 0)
        die("out of memory");
    refuse_system(*resolved);
    parent_fd = open(real, DIR_FLAGS & ~O_NOFOLLOW);
    if (parent_fd < 0)
        die("cannot open '%s': %s", real, strerror(errno));
    if (asprintf(&missing, "%s%s%s", rest, *rest ? "/" : "", name) < 0)
        die("out of memory");
    dest_rel = xstrdup(missing);
    free(parent), free(p), free(real), free(rest);
    if (strchr(missing, '/'))
        return -1;
    int fd = openat(parent_fd, missing, DIR_FLAGS);
    if (fd < 0 && errno != ENOENT) {
        if (errno == ELOOP || errno == ENOTDIR)
            die("GUARDRAIL_HYDRATE_DEST '%s' is a symlink or not a directory: refusing it", *resolved);
        die("cannot open '%s': %s", *resolved, strerror(errno));
    }
    return fd;
}

/* Creates the missing part of DEST one component at a time, never through a link. */
static int make_dest(void)
{
    int fd = fcntl(parent_fd, F_DUPFD_CLOEXEC, 0);
    char *save = NULL;
    for (char *part = strtok_r(missing, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (mkdirat(fd, part, 0755) != 0 && errno != EEXIST) {
            if (errno == EACCES || errno == EPERM || errno == EROFS)
                die("%s is not writable by uid %ld: cannot create it", dest_path, (long)euid);
            die_errno("cannot create", dest_path);
        }
        int child = openat(fd, part, DIR_FLAGS);
        if (child < 0)
            die("GUARDRAIL_HYDRATE_DEST '%s' became a symlink or not a directory: refusing it", dest_path);
        close(fd);
        fd = child;
    }
    return fd;
}

static int cleanup_dest_fd = -1;
static const char *cleanup_name;

static void remove_staging(void)
{
    remove_at(cleanup_dest_fd, cleanup_name);
}

static void random_hex(char out[33])
{
    unsigned char raw[16];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0 && errno != EINTR)
            die("no randomness for the staging name: %s", strerror(errno));
        got += n > 0 ? (size_t)n : 0;
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

static _Noreturn void run_command(char **argv)
{
    execvp(argv[0], argv);
    fprintf(stderr, "%s: cannot run %s: %s\n", prog, argv[0], strerror(errno));
    exit(127);
}

/* Whether two JSON texts differ only in whitespace outside strings (the
 * module writes its marker indented, the ready record holds it on one line). */
static int json_same(const char *a, const char *b)
{
    int in_string = 0;
    for (;;) {
        while (!in_string && (*a == ' ' || *a == '\n' || *a == '\t' || *a == '\r'))
            a++;
        while (!in_string && (*b == ' ' || *b == '\n' || *b == '\t' || *b == '\r'))
            b++;
        if (*a != *b)
            return 0;
        if (!*a)
            return 1;
        if (*a == '\\' && in_string) {
            if (!a[1] || a[1] != b[1])
                return 0;
            a++;
            b++;
        } else if (*a == '"') {
            in_string = !in_string;
        }
        a++;
        b++;
    }
}

/* Whether DEST's marker is `record_marker`: the staging tree that holds it
 * belongs to a run killed after writing its marker. */
static int marker_is(int dest_fd, const char *record_marker)
{
    struct stat st;
    int fd = open_checked(dest_fd, MARKER, O_RDONLY, S_IFREG, &st);
    if (fd < 0)
        return 0;
    if (owned_problem(&st) || st.st_size > MARKER_MAX) {
        close(fd);
        return 0;
    }
    char *data = xmalloc((size_t)st.st_size + 1);
    size_t got = 0;
    ssize_t n;
    while (got < (size_t)st.st_size && (n = read(fd, data + got, (size_t)st.st_size - got)) > 0)
        got += (size_t)n;
    close(fd);
    data[got] = '\0';
    int same = strlen(data) == got && json_same(data, record_marker);
    free(data);
    return same;
}

static int has_leftovers(int dest_fd)
{
    size_t n;
    char **names = list_dir(dest_fd, &n);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        found = is_ours(names[i]);
    free_names(names, n);
    return found;
}

/* Finishes or removes what an interrupted run left; call with the lock held.
 * A ready tree whose marker DEST already has is done, only not removed: it is
 * removed, not finished again (its prune entries may name files the volume's
 * users made since). Returns 1 when a ready staging tree was finished. */
static int recover(int dest_fd)
{
    int recovered = 0;
    size_t n;
    char **names = list_dir(dest_fd, &n);
    for (size_t i = 0; i < n; i++) {
        if (!is_ours(names[i]))
            continue;
        int done = 0;
        if (!strncmp(names[i], STAGING_PREFIX, strlen(STAGING_PREFIX))) {
            int fd = openat(dest_fd, names[i], DIR_FLAGS);
            struct stat st;
            struct ready r;
            char *data = NULL;
            if (fd >= 0 && fstat(fd, &st) == 0 && st.st_uid == euid && (st.st_mode & 07777) == 0700)
                data = read_ready(fd, &r);
            if (data && marker_is(dest_fd, r.marker)) {
                free(data);
                data = NULL;
            }
            if (data && r.prune)
                die("%s/%s holds a ready record with prune entries: only guardrail.ecs.efs_hydrate finishes "
                    "it; run the module on this volume", dest_path, names[i]);
            if (data) {
                finish(dest_fd, fd, names[i], &r);
                recovered = done = 1;
                free(data);
            }
            if (fd >= 0)
                close(fd);
        }
        if (!done)
            remove_at(dest_fd, names[i]);
    }
    free_names(names, n);
    return recovered;
}

int main(int argc, char **argv)
{
    const char *src = getenv("GUARDRAIL_HYDRATE_SRC");
    const char *dest_env = getenv("GUARDRAIL_HYDRATE_DEST");
    const char *owner = getenv("GUARDRAIL_HYDRATE_OWNER");
    const char *group = getenv("GUARDRAIL_HYDRATE_GROUP");
    const char *on_existing = getenv("GUARDRAIL_HYDRATE_ON_EXISTING");
    const char *timeout_env = getenv("GUARDRAIL_HYDRATE_LOCK_TIMEOUT");
    const char *force_env = getenv("GUARDRAIL_HYDRATE_FORCE");

    euid = geteuid();
    is_root = euid == 0;
    umask(022);
    if (argc < 2)
        die("usage: %s command [args...] (the command to exec once the volume is ready)", argv[0]);
    check_path("GUARDRAIL_HYDRATE_SRC", src);
    check_path("GUARDRAIL_HYDRATE_DEST", dest_env);
    char *dest = xstrdup(dest_env);
    for (size_t len = strlen(dest); len > 1 && dest[len - 1] == '/';)
        dest[--len] = '\0';
    refuse_system(dest);
    struct stat st;
    if (lstat(dest, &st) == 0 && S_ISLNK(st.st_mode))
        die("GUARDRAIL_HYDRATE_DEST '%s' is a symlink: refusing to follow it; give the directory it stands for",
            dest);
    if (!on_existing || !*on_existing)
        on_existing = "fail";
    if (strcmp(on_existing, "fail") && strcmp(on_existing, "merge") && strcmp(on_existing, "skip"))
        die("GUARDRAIL_HYDRATE_ON_EXISTING must be fail, merge or skip, got '%s'", on_existing);
    if (force_env && *force_env && strcmp(force_env, "true") && strcmp(force_env, "false"))
        die("GUARDRAIL_HYDRATE_FORCE must be true or false, got '%s'", force_env);
    int force = force_env && !strcmp(force_env, "true");
    if (!timeout_env || !*timeout_env)
        timeout_env = "900";
    if (strspn(timeout_env, "0123456789") != strlen(timeout_env) || strlen(timeout_env) > 9)
        die("GUARDRAIL_HYDRATE_LOCK_TIMEOUT must be a number of seconds, got '%s'", timeout_env);
    long timeout = strtol(timeout_env, NULL, 10);
    dir_mode = parse_mode("GUARDRAIL_HYDRATE_DIR_MODE", getenv("GUARDRAIL_HYDRATE_DIR_MODE"));
    file_mode = parse_mode("GUARDRAIL_HYDRATE_FILE_MODE", getenv("GUARDRAIL_HYDRATE_FILE_MODE"));
    owner_uid = lookup_id("/etc/passwd", "GUARDRAIL_HYDRATE_OWNER", owner);
    owner_gid = lookup_id("/etc/group", "GUARDRAIL_HYDRATE_GROUP", group);
    if (!is_root) {
        if (owner_uid >= 0 && owner_uid != (long)euid)
            die("GUARDRAIL_HYDRATE_OWNER %s needs root: this runs as uid %ld", owner, (long)euid);
        if (owner_gid >= 0 && owner_gid != (long)getegid()) {
            gid_t groups[256];
            int n = getgroups(256, groups), member = 0;
            for (int i = 0; i < n; i++)
                member |= (long)groups[i] == owner_gid;
            if (!member)
                die("GUARDRAIL_HYDRATE_GROUP %s needs root or membership: this runs as uid %ld", group,
                    (long)euid);
        }
        /* Without root a directory its owner cannot write can be neither filled nor moved. */
        if (dir_mode >= 0 && !(dir_mode & 0200))
            die("GUARDRAIL_HYDRATE_DIR_MODE %s must let the owner write when not running as root",
                getenv("GUARDRAIL_HYDRATE_DIR_MODE"));
    }

    char *resolved;
    int dest_fd = open_dest(dest, &resolved);
    dest_path = resolved;
    if (dest_fd >= 0 && !force && check_marker(dest_fd)) {
        if (has_leftovers(dest_fd)) {
            /* Killed between the marker and the removal of its staging tree:
             * tidied under the lock, as a run that found no marker would. */
            int lock_fd = take_lock(dest_fd, timeout);
            check_same_dest(dest_fd);
            step("before-tidy");
            if (recover(dest_fd)) {
                close(lock_fd);
                say("%s: finished a hydration that was interrupted", dest_path);
                run_command(argv + 1);
            }
            close(lock_fd);
            say("%s is already hydrated; what an interrupted run left was removed", dest_path);
            run_command(argv + 1);
        }
        say("%s is already hydrated", dest_path);
        run_command(argv + 1);
    }

    /* The whole source is validated before anything is written. */
    int src_fd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (src_fd < 0)
        die("GUARDRAIL_HYDRATE_SRC '%s' is not a directory", src);
    scan_source(src_fd);
    check_links();
    if (n_problems) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        for (size_t i = 0; f && i < n_problems && i < 10; i++)
            fprintf(f, "%s%s", i ? "; " : "", problems[i]);
        if (f)
            fclose(f);
        die("refusing the source %s: %s", src, text ? text : "");
    }

    if (dest_fd < 0)
        dest_fd = make_dest();
    if (faccessat(dest_fd, ".", W_OK | X_OK, AT_EACCESS) != 0)
        die("%s is not writable by uid %ld", dest_path, (long)euid);

    step("before-lock");
    int lock_fd = take_lock(dest_fd, timeout);
    check_same_dest(dest_fd);
    int recovered = recover(dest_fd);
    int hydrated = check_marker(dest_fd);
    char digest[80];
    listing_digest(digest);
    if (hydrated && (recovered || !force)) {
        close(lock_fd);
        if (recovered)
            say("%s: finished a hydration that was interrupted", dest_path);
        else if (strcmp(marker_digest(dest_fd), digest))
            /* The loser of a race between two versions: it read its source for nothing. */
            say("%s is already hydrated from another source (marker digest %s, this source %s): left as it is; "
                "set GUARDRAIL_HYDRATE_FORCE=true to bring it to this source", dest_path, marker_digest(dest_fd),
                digest);
        else
            say("%s is already hydrated", dest_path);
        run_command(argv + 1);
    }

    size_t n;
    char **names = list_dir(dest_fd, &n), *found = NULL;
    size_t found_len = 0;
    FILE *f = open_memstream(&found, &found_len);
    int shown = 0;
    for (size_t i = 0; f && i < n; i++)
        if (!ignored(names[i]) && shown++ < 6)
            fprintf(f, " %s", names[i]);
    if (f)
        fclose(f);
    free_names(names, n);
    if (shown && !hydrated && !strcmp(on_existing, "fail"))
        die("%s is not empty and has no marker %s (found:%s); set GUARDRAIL_HYDRATE_ON_EXISTING=merge to add "
            "the source's files, or skip to leave it", dest_path, MARKER, found);
    if (shown && !hydrated && !strcmp(on_existing, "skip")) {
        close(lock_fd);
        say("%s is not empty and has no marker; left as it is (on_existing=skip)", dest_path);
        run_command(argv + 1);
    }
    size_t changes = shown ? plan(dest_fd, src_fd, force) : n_entries;
    struct stat dst;
    int root_differs = fstat(dest_fd, &dst) != 0 || (owner_uid >= 0 && dst.st_uid != (uid_t)owner_uid) ||
                       (owner_gid >= 0 && dst.st_gid != (gid_t)owner_gid) ||
                       (dir_mode >= 0 && (dst.st_mode & 07777) != (mode_t)dir_mode);
    if (hydrated && !changes && !root_differs) {
        close(lock_fd);
        say("%s already matches %s", dest_path, src);
        run_command(argv + 1);
    }

    char id[33], staging_name[64];
    random_hex(id);
    snprintf(staging_name, sizeof staging_name, "%s%s", STAGING_PREFIX, id);
    if (mkdirat(dest_fd, staging_name, 0700) != 0)
        die_errno("cannot create", staging_name);
    cleanup_dest_fd = dest_fd;
    cleanup_name = staging_name;
    on_die = remove_staging;
    int staging_fd = openat(dest_fd, staging_name, DIR_FLAGS);
    if (staging_fd < 0 || fstat(staging_fd, &st) != 0 || st.st_uid != euid || fchmod(staging_fd, 0700) != 0)
        die("%s/%s was replaced while hydrating", dest_path, staging_name);
    copy_tree(src_fd, staging_fd);
    step("after-copy");
    fix_dirs(dest_fd);
    if ((owner_uid >= 0 || owner_gid >= 0) && fchown(dest_fd, (uid_t)owner_uid, (gid_t)owner_gid) != 0)
        die_errno("cannot set the owner of", dest_path);
    if (dir_mode >= 0 && fchmod(dest_fd, (mode_t)dir_mode) != 0)
        die_errno("cannot set the mode of", dest_path);
    sync_fs(staging_fd);

    /* The ready record carries the marker, so whoever finishes this tree writes it. */
    char *marker = marker_json(src), *record;
    if (asprintf(&record, "format=%s\noverwrite=%s\nmarker=%s\n", READY_FORMAT, force ? "true" : "false",
                 marker) < 0)
        die("out of memory");
    int fd = openat(staging_fd, READY_TMP, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        die_errno("cannot write", READY_TMP);
    write_all(fd, record, strlen(record), READY_TMP);
    if (fsync(fd) != 0)
        die_errno("cannot write", READY_TMP);
    close(fd);
    if (renameat(staging_fd, READY_TMP, staging_fd, READY) != 0)
        die_errno("cannot write", READY);
    fsync(staging_fd);
    step("after-ready");
    /* Ready: from here on the tree is finished, by this run or the next. */
    on_die = NULL;
    struct ready r = {.overwrite = force, .prune = 0, .marker = marker};
    finish(dest_fd, staging_fd, staging_name, &r);
    close(staging_fd);
    close(lock_fd);
    say("%s: %s from %s", dest_path, hydrated ? "brought back in line" : "seeded", src);
    run_command(argv + 1);
}
