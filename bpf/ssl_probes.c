/* uprobes on OpenSSL's SSL_write / SSL_read (and their _ex twins).
 *
 * Entry probes save (SSL*, buf, size_t *out) per thread; return probes read
 * how many bytes the call moved and copy them, in chunks, into the ring
 * buffer.  Filtering happens here, before any copy:
 *   skip_tgids     processes never to capture (the agent, excluded pids)
 *   ignored_conns  (tgid, SSL*) user space decided are not LLM traffic
 * SSL_shutdown / SSL_free emit a CLOSE record and forget the connection.
 * sched_process_exec / sched_process_exit tell user space about processes.
 * A process's name (comm) goes out once: in its EXEC record, or in a PROC
 * record before its first DATA record (`announced`), never in DATA records.
 *
 * Loaded by lumen_agent/capture/ebpf.py with -I pointing at this folder.
 */
#include <uapi/linux/ptrace.h>
#include "events.h"

#ifndef LUMEN_RINGBUF_PAGES
#define LUMEN_RINGBUF_PAGES 4096 /* 16 MiB */
#endif

/* Opaque to the optimiser: the bound check below stays where the verifier
 * needs it, right before bpf_probe_read_user. */
#define barrier_var(v) asm volatile("" : "+r"(v))

struct call_args {
    u64 ssl;
    u64 buf;
    u64 out;   /* size_t * of the _ex functions, 0 otherwise */
    u64 ts;
    u32 dir;
    u32 pad;
};

BPF_RINGBUF_OUTPUT(events, LUMEN_RINGBUF_PAGES);
BPF_HASH(skip_tgids, u32, u8, 4096);
BPF_TABLE("lru_hash", struct lumen_conn_key, u8, ignored_conns, 65536);
BPF_TABLE("lru_hash", struct lumen_conn_key, u8, gap_conns, 16384);
BPF_HASH(active, u64, struct call_args, 16384);
BPF_PERCPU_ARRAY(counters, u64, LUMEN_NUM_COUNTERS);
/* tgids whose comm user space has (EXEC or PROC record).  LRU: an evicted
 * process is only named once more. */
#ifndef LUMEN_ANNOUNCED
#define LUMEN_ANNOUNCED 16384
#endif
BPF_TABLE("lru_hash", u32, u8, announced, LUMEN_ANNOUNCED);

static __always_inline void count(int idx)
{
    u64 *v = counters.lookup(&idx);
    if (v)
        *v += 1;
}

static __always_inline int save_entry(struct pt_regs *ctx, u32 dir, int ex)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (skip_tgids.lookup(&tgid))
        return 0;
    struct lumen_conn_key key = {};
    key.tgid = tgid;
    key.ssl = PT_REGS_PARM1(ctx);
    if (ignored_conns.lookup(&key)) {
        count(LUMEN_CNT_IGNORED);
        return 0;
    }
    struct call_args a = {};
    a.ssl = key.ssl;
    a.buf = PT_REGS_PARM2(ctx);
    a.out = ex ? PT_REGS_PARM4(ctx) : 0;
    a.ts = bpf_ktime_get_ns();
    a.dir = dir;
    if (active.update(&id, &a) != 0)
        count(LUMEN_CNT_ARGS_FULL);
    return 0;
}

static __always_inline void fill_data_hdr(struct lumen_hdr *h, struct call_args *a, u64 id, u64 ts,
                                          u64 total, u64 off, u64 len, u16 flags)
{
    h->ts_ns = ts;
    h->conn = a->ssl;
    h->pid = id >> 32;
    h->tid = (u32)id;
    h->total_len = total > 0xffffffffULL ? 0xffffffffU : (u32)total;
    h->offset = (u32)off;
    h->chunk_len = len;
    h->flags = flags;
    h->kind = LUMEN_EV_DATA;
    h->direction = a->dir;
}

/* An EXEC or PROC record: the current task's comm.  0 if the ring was full. */
static __always_inline int emit_proc(u8 kind, u64 id)
{
    struct lumen_proc_rec *r = events.ringbuf_reserve(sizeof(struct lumen_proc_rec));
    if (!r) {
        count(LUMEN_CNT_LOST);
        return 0;
    }
    bpf_get_current_comm(r->comm, sizeof(r->comm));
    r->h.ts_ns = bpf_ktime_get_ns();
    r->h.conn = 0;
    r->h.pid = id >> 32;
    r->h.tid = (u32)id;
    r->h.total_len = 0;
    r->h.offset = 0;
    r->h.chunk_len = LUMEN_COMM_LEN;
    r->h.flags = 0;
    r->h.kind = kind;
    r->h.direction = 0;
    events.ringbuf_submit(r, 0);
    return 1;
}

/* Name the process once, before its first DATA record: it may have exited
 * (and left /proc) by the time the agent reads the record. */
static __always_inline void announce(u64 id)
{
    u32 tgid = id >> 32;
    if (announced.lookup(&tgid))
        return;
    u8 one = 1;
    if (emit_proc(LUMEN_EV_PROC, id))
        announced.update(&tgid, &one);
}

/* Copy `total` bytes at a->buf as DATA records of at most LUMEN_CHUNK_SIZE. */
static __always_inline void emit_data(struct call_args *a, u64 id, u64 total)
{
    announce(id);
    struct lumen_conn_key key = {};
    key.tgid = id >> 32;
    key.ssl = a->ssl;
    u16 flags = 0;
    u64 cap = total;
    if (cap > LUMEN_MAX_CALL_BYTES) {
        cap = LUMEN_MAX_CALL_BYTES;
        flags |= LUMEN_F_TRUNCATED;
        count(LUMEN_CNT_TRUNCATED);
    }
    if (gap_conns.lookup(&key)) {
        flags |= LUMEN_F_GAP;
        gap_conns.delete(&key);
    }
    /* send: when the call started; recv: when the data was there */
    u64 ts = a->dir == LUMEN_DIR_SEND ? a->ts : bpf_ktime_get_ns();
    u8 one = 1;

    for (int i = 0; i < LUMEN_MAX_CHUNKS; i++) {
        u64 off = (u64)i * LUMEN_CHUNK_SIZE;
        if (off >= cap)
            break;
        u64 left = cap - off;
        u64 n = left > LUMEN_CHUNK_SIZE ? LUMEN_CHUNK_SIZE : left;
        if (n <= LUMEN_TINY_CHUNK) {
            struct lumen_tiny_rec *r = events.ringbuf_reserve(sizeof(struct lumen_tiny_rec));
            if (!r) {
                count(LUMEN_CNT_LOST);
                gap_conns.update(&key, &one);
                return;
            }
            u64 m = n; /* u64: a 32-bit copy would lose the verifier's bound */
            barrier_var(m);
            if (m > LUMEN_TINY_CHUNK)
                m = LUMEN_TINY_CHUNK;
            bpf_probe_read_user(r->data, m, (void *)(a->buf + off));
            fill_data_hdr(&r->h, a, id, ts, total, off, m, flags);
            events.ringbuf_submit(r, 0);
        } else if (n <= LUMEN_SMALL_CHUNK) {
            struct lumen_small_rec *r = events.ringbuf_reserve(sizeof(struct lumen_small_rec));
            if (!r) {
                count(LUMEN_CNT_LOST);
                gap_conns.update(&key, &one);
                return;
            }
            u64 m = n; /* u64: a 32-bit copy would lose the verifier's bound */
            barrier_var(m);
            if (m > LUMEN_SMALL_CHUNK)
                m = LUMEN_SMALL_CHUNK;
            bpf_probe_read_user(r->data, m, (void *)(a->buf + off));
            fill_data_hdr(&r->h, a, id, ts, total, off, m, flags);
            events.ringbuf_submit(r, 0);
        } else {
            struct lumen_big_rec *r = events.ringbuf_reserve(sizeof(struct lumen_big_rec));
            if (!r) {
                count(LUMEN_CNT_LOST);
                gap_conns.update(&key, &one);
                return;
            }
            u64 m = n; /* u64: a 32-bit copy would lose the verifier's bound */
            barrier_var(m);
            if (m > LUMEN_CHUNK_SIZE)
                m = LUMEN_CHUNK_SIZE;
            bpf_probe_read_user(r->data, m, (void *)(a->buf + off));
            fill_data_hdr(&r->h, a, id, ts, total, off, m, flags);
            events.ringbuf_submit(r, 0);
        }
    }
}

static __always_inline int on_return(struct pt_regs *ctx, int ex)
{
    u64 id = bpf_get_current_pid_tgid();
    struct call_args *p = active.lookup(&id);
    if (!p)
        return 0;
    struct call_args a = *p;
    active.delete(&id);
    int ret = (int)PT_REGS_RC(ctx);
    u64 len = 0;
    if (ex) {
        if (ret != 1 || !a.out)
            return 0;
        size_t n = 0;
        if (bpf_probe_read_user(&n, sizeof(n), (void *)a.out) != 0)
            return 0;
        len = n;
    } else {
        if (ret <= 0)
            return 0;
        len = (u32)ret;
    }
    if (len == 0)
        return 0;
    emit_data(&a, id, len);
    return 0;
}

int probe_write_enter(struct pt_regs *ctx) { return save_entry(ctx, LUMEN_DIR_SEND, 0); }
int probe_read_enter(struct pt_regs *ctx) { return save_entry(ctx, LUMEN_DIR_RECV, 0); }
int probe_write_ex_enter(struct pt_regs *ctx) { return save_entry(ctx, LUMEN_DIR_SEND, 1); }
int probe_read_ex_enter(struct pt_regs *ctx) { return save_entry(ctx, LUMEN_DIR_RECV, 1); }
int probe_rw_return(struct pt_regs *ctx) { return on_return(ctx, 0); }
int probe_rw_ex_return(struct pt_regs *ctx) { return on_return(ctx, 1); }

static __always_inline int emit_simple(u8 kind, u32 tgid, u32 tid, u64 conn, u16 flags)
{
    struct lumen_hdr *h = events.ringbuf_reserve(sizeof(struct lumen_hdr));
    if (!h) {
        count(LUMEN_CNT_LOST);
        return 0;
    }
    h->ts_ns = bpf_ktime_get_ns();
    h->conn = conn;
    h->pid = tgid;
    h->tid = tid;
    h->total_len = 0;
    h->offset = 0;
    h->chunk_len = 0;
    h->flags = flags;
    h->kind = kind;
    h->direction = 0;
    events.ringbuf_submit(h, 0);
    return 0;
}

/* SSL_shutdown(SSL *) and SSL_free(SSL *) */
/* A connection ends (any runtime's close): forget its state, say CLOSE. */
static __always_inline int close_conn(u64 id, u64 conn)
{
    u32 tgid = id >> 32;
    if (skip_tgids.lookup(&tgid))
        return 0;
    struct lumen_conn_key key = {};
    key.tgid = tgid;
    key.ssl = conn;
    if (!key.ssl)
        return 0;
    gap_conns.delete(&key);
    if (ignored_conns.lookup(&key)) {
        /* user space already dropped it: just forget it, say nothing */
        ignored_conns.delete(&key);
        return 0;
    }
    return emit_simple(LUMEN_EV_CLOSE, tgid, (u32)id, key.ssl, LUMEN_F_CLOSE);
}

int probe_close(struct pt_regs *ctx)
{
    return close_conn(bpf_get_current_pid_tgid(), PT_REGS_PARM1(ctx));
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    u8 one = 1;
    /* comm is the new program's here (set before the tracepoint fires) */
    if (emit_proc(LUMEN_EV_EXEC, id))
        announced.update(&tgid, &one);
    else
        announced.delete(&tgid); /* lost: the first DATA record names it */
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    active.delete(&id); /* a thread killed inside SSL_read leaves its args */
    if ((u32)id != (u32)(id >> 32))
        return 0; /* only the thread group leader ends the process */
    u32 tgid = id >> 32;
    announced.delete(&tgid);
    return emit_simple(LUMEN_EV_EXIT, id >> 32, (u32)id, 0, 0);
}
