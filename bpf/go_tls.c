/* uprobes on Go's crypto/tls (register ABI, amd64, Go >= 1.17).
 *
 * Appended to ssl_probes.c when loaded (ebpf.py BPF_SOURCES): same ring buffer, same maps, same
 * record layout (events.h), so Go calls become the same DataEvents.
 *
 *   go_write_enter   entry of (*tls.Conn).Write: RAX = *Conn, RBX/RCX = the
 *                    plaintext slice; copied right there (Write returns only
 *                    once everything is written, or an error we ignore).
 *   go_read_enter    entry of (*tls.Conn).Read: save *Conn and the buffer,
 *                    keyed by (tgid, goroutine g = R14).  Not by thread: a
 *                    goroutine that blocks in Read may resume on another M.
 *   go_read_return   at every RET of Read (never a uretprobe: Go moves
 *                    goroutine stacks, a rewritten return address would
 *                    crash the process): RAX = n.
 *   go_close_enter   entry of (*tls.Conn).Close: the CLOSE record.
 */

struct go_read_key {
    u32 tgid;
    u32 pad;
    u64 g;
};

/* LRU: a process killed inside Read leaves its entry behind */
BPF_TABLE("lru_hash", struct go_read_key, struct call_args, go_reads, 16384);

static __always_inline int go_skip(u32 tgid, u64 conn)
{
    if (skip_tgids.lookup(&tgid))
        return 1;
    struct lumen_conn_key key = {};
    key.tgid = tgid;
    key.ssl = conn;
    if (ignored_conns.lookup(&key)) {
        count(LUMEN_CNT_IGNORED);
        return 1;
    }
    return 0;
}

int go_write_enter(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 conn = ctx->ax;
    if (go_skip(id >> 32, conn))
        return 0;
    u64 len = ctx->cx;
    if (len == 0 || (s64)len < 0)
        return 0;
    struct call_args a = {};
    a.ssl = conn;
    a.buf = ctx->bx;
    a.ts = bpf_ktime_get_ns();
    a.dir = LUMEN_DIR_SEND;
    emit_data(&a, id, len);
    return 0;
}

int go_read_enter(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 conn = ctx->ax;
    if (go_skip(id >> 32, conn))
        return 0;
    struct go_read_key key = {};
    key.tgid = id >> 32;
    key.g = ctx->r14;
    struct call_args a = {};
    a.ssl = conn;
    a.buf = ctx->bx;
    a.ts = bpf_ktime_get_ns();
    a.dir = LUMEN_DIR_RECV;
    if (go_reads.update(&key, &a) != 0)
        count(LUMEN_CNT_ARGS_FULL);
    return 0;
}

int go_read_return(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct go_read_key key = {};
    key.tgid = id >> 32;
    key.g = ctx->r14;
    struct call_args *p = go_reads.lookup(&key);
    if (!p)
        return 0;
    struct call_args a = *p;
    go_reads.delete(&key);
    s64 n = (s64)ctx->ax;
    if (n <= 0)
        return 0;
    emit_data(&a, id, (u64)n);
    return 0;
}

int go_close_enter(struct pt_regs *ctx)
{
    return close_conn(bpf_get_current_pid_tgid(), ctx->ax); /* receiver *tls.Conn in RAX */
}
