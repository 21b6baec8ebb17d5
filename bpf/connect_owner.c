/* Who opened each TCP connection to a sniffed port, recorded by the kernel at connect().
 *
 * The plain-HTTP sniffer sees packets, not processes; looking the owner up
 * from user space after the SYN loses clients that exit within milliseconds.
 * The tracepoint sock:inet_sock_set_state fires inside connect() when the
 * socket enters SYN_SENT, so bpf_get_current_pid_tgid() is the client.  At
 * that moment its source port may not be chosen yet (tcp_v4_connect sets
 * SYN_SENT before inet_hash_connect), so the owner is parked by socket
 * address and written under the connection's four-tuple when the socket
 * leaves SYN_SENT for ESTABLISHED (the tracepoint gives the ports then).
 *
 *   sniffed_ports   destination ports (host order) user space wants
 *   connecting      socket address -> owner, between SYN_SENT and the handshake's end
 *   connect_owners  four-tuple -> owner, read by agent/capture/connect_owner.py
 *
 * Both owner maps are LRU: a flood of connections evicts the oldest entries
 * and never fails an insert.  The tracepoint's fields come from its tracefs
 * format, not from kernel headers (those installed may be another kernel's),
 * so nothing here reads kernel structures.
 */

#ifndef LUMEN_CONNECT_OWNERS
#define LUMEN_CONNECT_OWNERS 16384
#endif

#define LUMEN_TCP_ESTABLISHED 1
#define LUMEN_TCP_SYN_SENT 2
#define LUMEN_AF_INET 2
#define LUMEN_AF_INET6 10
#define LUMEN_IPPROTO_TCP 6

struct owner_key {
    u16 family;   /* AF_INET or AF_INET6 */
    u16 sport;    /* host order, as the tracepoint gives them */
    u16 dport;
    u16 pad;
    u8 saddr[16]; /* AF_INET: the first 4 bytes */
    u8 daddr[16];
};

struct owner_value {
    u32 tgid;
    u32 pad;
    u64 connect_ns; /* bpf_ktime_get_ns() at connect(): CLOCK_MONOTONIC */
    char comm[16];  /* TASK_COMM_LEN */
};

BPF_HASH(sniffed_ports, u16, u8, 256);
BPF_TABLE("lru_hash", u64, struct owner_value, connecting, LUMEN_CONNECT_OWNERS);
BPF_TABLE("lru_hash", struct owner_key, struct owner_value, connect_owners, LUMEN_CONNECT_OWNERS);

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != LUMEN_IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == LUMEN_TCP_SYN_SENT) {
        u16 dport = args->dport;
        if (!sniffed_ports.lookup(&dport))
            return 0;
        struct owner_value value = {};
        value.tgid = bpf_get_current_pid_tgid() >> 32;
        value.connect_ns = bpf_ktime_get_ns();
        bpf_get_current_comm(&value.comm, sizeof(value.comm));
        connecting.update(&sk, &value);
        return 0;
    }
    if (args->oldstate != LUMEN_TCP_SYN_SENT)
        return 0;
    struct owner_value *owner = connecting.lookup(&sk);
    if (!owner)
        return 0;
    if (args->newstate == LUMEN_TCP_ESTABLISHED) {
        struct owner_key key = {};
        key.family = args->family;
        key.sport = args->sport;
        key.dport = args->dport;
        if (args->family == LUMEN_AF_INET) {
            __builtin_memcpy(key.saddr, args->saddr, 4);
            __builtin_memcpy(key.daddr, args->daddr, 4);
        } else {
            __builtin_memcpy(key.saddr, args->saddr_v6, 16);
            __builtin_memcpy(key.daddr, args->daddr_v6, 16);
        }
        struct owner_value copy = *owner;
        connect_owners.update(&key, &copy);
    }
    connecting.delete(&sk);
    return 0;
}
