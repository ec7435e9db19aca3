// SPDX-License-Identifier: GPL-2.0-only OR MIT
//
// podmortem's read-only filesystem tracer.
//
// One program runs at the entry of every write-intent syscall (the `syscalls:sys_enter_*`
// tracepoints the agent attaches it to) and remembers, per thread, the syscall and its path
// argument's address. Opens without write intent are not remembered. A second program runs at
// the syscall's exit: when it returns -EROFS, it reads the path from the caller's memory (still
// mapped: the thread has not returned to user space yet) and sends one event to the agent over
// a ring buffer, naming the thread, its memory cgroup (whose directory name carries the
// container id, with cgroup v1 and v2 alike), its mount namespace and its v2 cgroup id. The
// entry is forgotten either way.
//
// Which syscalls are watched, and where their path argument is, is filled in by the agent
// (map `specs`, indexed by syscall number), so the program needs no per-architecture table.
//
// Self-contained on purpose: no kernel or libbpf headers are needed to build it, only clang.
// Kernel structures are declared with only the fields read, and compiled with CO-RE
// relocations (`preserve_access_index`), so the loader fixes the offsets from the running
// kernel's BTF.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
typedef long long s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define CORE(expr) __builtin_preserve_access_index(expr)

// Helper ids from include/uapi/linux/bpf.h (stable ABI).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_get_current_comm)(void *buf, u32 size) = (void *)16;
static u64 (*bpf_get_current_cgroup_id)(void) = (void *)80;
static u64 (*bpf_get_current_task)(void) = (void *)35;
static long (*bpf_probe_read_kernel)(void *dst, u32 size, const void *src) = (void *)113;
static long (*bpf_probe_read_kernel_str)(void *dst, u32 size, const void *src) = (void *)115;
static long (*bpf_probe_read_user)(void *dst, u32 size, const void *src) = (void *)112;
static long (*bpf_probe_read_user_str)(void *dst, u32 size, const void *src) = (void *)114;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, u64 size, u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, u64 flags) = (void *)132;
static u64 (*bpf_ktime_get_boot_ns)(void) = (void *)125;

#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_RINGBUF 27

#define EROFS 30
#define NO_ARG 0xff
#define AT_FDCWD -100

// How the `flags_arg` of a spec is read.
#define FLAGS_NONE 0
#define FLAGS_VALUE 1   // the argument is the flags (open, openat)
#define FLAGS_OPEN_HOW 2 // the argument points to a struct open_how, whose first field is the flags

// Must match `agent/src/sources/erofs/event.rs`.
#define COMM_LEN 16
#define CGROUP_LEN 128
#define PATH_LEN 512

#define EVENT_PATH_TRUNCATED 1
#define EVENT_PATH_UNREADABLE 2
#define EVENT_CGROUP_UNREADABLE 4

// Counters, indexed by these.
#define STAT_EVENTS 0
#define STAT_RINGBUF_FULL 1
#define STAT_PENDING 2
#define STAT_COUNT 4

struct spec {
    u8 enabled;
    u8 path_arg;  // which argument is the path (NO_ARG: none)
    u8 flags_arg; // which argument holds the open flags (NO_ARG: none)
    u8 flags_kind;
    u8 dirfd_arg; // which argument is the directory a relative path starts from (NO_ARG: none)
    u8 _pad;
    u16 flags_mask; // remember the call only when (flags & mask) != 0
};

struct pending {
    u64 path;  // user address of the path argument
    u64 flags; // open flags, when the syscall has them
    u32 nr;
    s32 dirfd; // AT_FDCWD (-100) when the syscall has none
};

struct event {
    u64 boot_ns; // CLOCK_BOOTTIME at the syscall's exit
    u64 cgroup_id;
    u64 flags;
    u32 pid;  // the thread
    u32 tgid; // the process
    u32 nr;
    s32 ret;
    u32 mnt_ns;
    u32 status; // EVENT_* bits
    s32 dirfd;  // the directory a relative path starts from; AT_FDCWD (-100): the working one
    u32 _pad;
    char comm[COMM_LEN];
    char cgroup[CGROUP_LEN];
    char path[PATH_LEN];
};

struct enter_ctx {
    u64 common;
    s32 nr;
    u32 _pad;
    u64 args[6];
};

struct exit_ctx {
    u64 common;
    s32 nr;
    u32 _pad;
    s64 ret;
};

// Kernel structures, only the fields read; offsets come from the kernel's BTF at load time.
struct kernfs_node {
    const char *name;
} __attribute__((preserve_access_index));

struct cgroup {
    struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct cgroup_subsys_state {
    struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct css_set {
    struct cgroup_subsys_state *subsys[14];
} __attribute__((preserve_access_index));

struct ns_common {
    unsigned int inum;
} __attribute__((preserve_access_index));

struct mnt_namespace {
    struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
    struct mnt_namespace *mnt_ns;
} __attribute__((preserve_access_index));

struct task_struct {
    struct css_set *cgroups;
    struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

enum cgroup_subsys_id {
    memory_cgrp_id = 4,
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1024);
    __type(key, u32);
    __type(value, struct spec);
} specs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, u64);
    __type(value, struct pending);
} pending SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STAT_COUNT);
    __type(key, u32);
    __type(value, u64);
} stats SEC(".maps");

static __attribute__((always_inline)) void count(u32 which) {
    u64 *n = bpf_map_lookup_elem(&stats, &which);
    if (n)
        *n += 1;
}

// The verifier rejects context reads at a computed offset: the arguments are copied out first.
static __attribute__((always_inline)) u64 arg(const u64 *args, u8 i) {
    return i < 6 ? args[i] : 0;
}

SEC("tracepoint/syscalls/erofs_enter")
int erofs_enter(struct enter_ctx *ctx) {
    u32 nr = (u32)ctx->nr;
    struct spec *spec = bpf_map_lookup_elem(&specs, &nr);
    if (!spec || !spec->enabled)
        return 0;
    u64 args[6];
    if (bpf_probe_read_kernel(args, sizeof(args), ctx->args) != 0)
        return 0;
    u64 flags = 0;
    if (spec->flags_kind != FLAGS_NONE && spec->flags_arg < 6) {
        u64 value = arg(args, spec->flags_arg);
        if (spec->flags_kind == FLAGS_OPEN_HOW) {
            u64 how = 0;
            if (bpf_probe_read_user(&how, sizeof(how), (const void *)value) != 0)
                how = spec->flags_mask; // unreadable: the kernel will fail the call with EFAULT
            value = how;
        }
        flags = value;
        if ((flags & spec->flags_mask) == 0)
            return 0;
    }
    struct pending p = {
        .path = spec->path_arg < 6 ? arg(args, spec->path_arg) : 0,
        .flags = flags,
        .nr = nr,
        .dirfd = spec->dirfd_arg < 6 ? (s32)arg(args, spec->dirfd_arg) : AT_FDCWD,
    };
    u64 id = bpf_get_current_pid_tgid();
    bpf_map_update_elem(&pending, &id, &p, 0);
    return 0;
}

SEC("tracepoint/syscalls/erofs_exit")
int erofs_exit(struct exit_ctx *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    struct pending *entry = bpf_map_lookup_elem(&pending, &id);
    if (!entry)
        return 0;
    // Copied at once: the LRU table may recycle the element while this program runs.
    struct pending call = *entry;
    struct pending *p = &call;
    if (ctx->ret != -EROFS) {
        bpf_map_delete_elem(&pending, &id);
        return 0;
    }
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(struct event), 0);
    if (!e) {
        count(STAT_RINGBUF_FULL);
        bpf_map_delete_elem(&pending, &id);
        return 0;
    }
    e->boot_ns = bpf_ktime_get_boot_ns();
    e->cgroup_id = bpf_get_current_cgroup_id();
    e->flags = p->flags;
    e->pid = (u32)id;
    e->tgid = (u32)(id >> 32);
    e->nr = p->nr;
    e->ret = (s32)ctx->ret;
    e->status = 0;
    e->mnt_ns = 0;
    e->dirfd = p->dirfd;
    e->_pad = 0;
    e->path[0] = 0;
    e->cgroup[0] = 0;
    bpf_get_current_comm(e->comm, sizeof(e->comm));

    if (p->path) {
        long n = bpf_probe_read_user_str(e->path, sizeof(e->path), (const void *)p->path);
        if (n < 0) {
            e->path[0] = 0;
            e->status |= EVENT_PATH_UNREADABLE;
        } else if (n == sizeof(e->path)) {
            e->status |= EVENT_PATH_TRUNCATED;
        }
    }

    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct css_set *cgroups = 0;
    struct cgroup_subsys_state *css = 0;
    struct cgroup *cgrp = 0;
    struct kernfs_node *kn = 0;
    const char *name = 0;
    int idx = __builtin_preserve_enum_value(*(enum cgroup_subsys_id *)memory_cgrp_id, 1);
    long err = bpf_probe_read_kernel(&cgroups, sizeof(cgroups), CORE(&task->cgroups));
    if (!err && cgroups && idx >= 0 && idx < 14)
        err = bpf_probe_read_kernel(&css, sizeof(css), CORE(&cgroups->subsys[idx]));
    if (!err && css)
        err = bpf_probe_read_kernel(&cgrp, sizeof(cgrp), CORE(&css->cgroup));
    if (!err && cgrp)
        err = bpf_probe_read_kernel(&kn, sizeof(kn), CORE(&cgrp->kn));
    if (!err && kn)
        err = bpf_probe_read_kernel(&name, sizeof(name), CORE(&kn->name));
    if (err || !name || bpf_probe_read_kernel_str(e->cgroup, sizeof(e->cgroup), name) < 0) {
        e->cgroup[0] = 0;
        e->status |= EVENT_CGROUP_UNREADABLE;
    }

    struct nsproxy *ns = 0;
    struct mnt_namespace *mnt = 0;
    if (bpf_probe_read_kernel(&ns, sizeof(ns), CORE(&task->nsproxy)) == 0 && ns &&
        bpf_probe_read_kernel(&mnt, sizeof(mnt), CORE(&ns->mnt_ns)) == 0 && mnt)
        bpf_probe_read_kernel(&e->mnt_ns, sizeof(e->mnt_ns), CORE(&mnt->ns.inum));

    bpf_ringbuf_submit(e, 0);
    count(STAT_EVENTS);
    bpf_map_delete_elem(&pending, &id);
    return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
