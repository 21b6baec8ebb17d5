/* Record layout shared by ssl_probes.c and lumen_agent/capture/ebpf.py.
 *
 * Every ring buffer record starts with struct lumen_hdr.  DATA records carry
 * chunk_len payload bytes right after the header; one SSL call larger than
 * LUMEN_CHUNK_SIZE becomes several records with increasing `offset`, all
 * emitted by one program run, so user space reassembles them per thread.
 *
 * Keep this file free of kernel headers: user space mirrors it with
 * struct.unpack (see HDR_FORMAT in ebpf.py); change both together.
 */
#ifndef LUMEN_EVENTS_H
#define LUMEN_EVENTS_H

/* Payload bytes per big record.  16 KiB is one TLS record's worth of
 * plaintext, so most SSL_read calls fit in one record. */
#define LUMEN_CHUNK_SIZE 16384
/* Payload bytes per small record: calls (or final chunks) up to this size
 * take a small reservation so short SSE chunks don't waste 16 KiB each. */
#define LUMEN_SMALL_CHUNK 1024
/* Payload bytes per tiny record: one SSE event of a streamed response (an
 * OpenAI or Anthropic delta with its chunked framing is ~150-300 B) takes
 * 368 ring bytes instead of a small record's 1,072, so the same ring holds
 * three times the records while the reader is behind. */
#define LUMEN_TINY_CHUNK 320

/* Largest call copied whole.  Bytes past it are dropped and the call is
 * flagged LUMEN_F_TRUNCATED.  Overridable with -DLUMEN_MAX_CHUNKS=N. */
#ifndef LUMEN_MAX_CHUNKS
#define LUMEN_MAX_CHUNKS 16 /* 16 x 16 KiB = 256 KiB */
#endif
#define LUMEN_MAX_CALL_BYTES ((unsigned long long)LUMEN_MAX_CHUNKS * LUMEN_CHUNK_SIZE)

/* kind */
#define LUMEN_EV_DATA 1
#define LUMEN_EV_CLOSE 2
#define LUMEN_EV_EXEC 3
#define LUMEN_EV_EXIT 4
/* A process's name, sent once per process before its first DATA record
 * (EXEC records carry it too): the agent names a process gone from /proc. */
#define LUMEN_EV_PROC 5

/* direction */
#define LUMEN_DIR_SEND 0
#define LUMEN_DIR_RECV 1

/* flags: same values as lumen_agent.events.EventFlag */
#define LUMEN_F_TRUNCATED 1
#define LUMEN_F_GAP 2
#define LUMEN_F_CLOSE 4

/* indexes of the per-CPU `counters` array */
#define LUMEN_CNT_LOST 0        /* ring buffer reservations that failed */
#define LUMEN_CNT_ARGS_FULL 1   /* entry args not saved: `active` map full */
#define LUMEN_CNT_TRUNCATED 2   /* calls larger than LUMEN_MAX_CALL_BYTES */
#define LUMEN_CNT_IGNORED 3     /* calls skipped by the ignore / skip maps */
#define LUMEN_NUM_COUNTERS 4

struct lumen_hdr {
    unsigned long long ts_ns;   /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    unsigned long long conn;    /* SSL* */
    unsigned int pid;           /* tgid */
    unsigned int tid;
    unsigned int total_len;     /* bytes the call moved (may exceed what is copied) */
    unsigned int offset;        /* of this chunk within the call */
    unsigned int chunk_len;     /* payload bytes following the header */
    unsigned short flags;       /* LUMEN_F_* */
    unsigned char kind;         /* LUMEN_EV_* */
    unsigned char direction;    /* LUMEN_DIR_* */
};                              /* 40 bytes, no padding */

struct lumen_big_rec {
    struct lumen_hdr h;
    unsigned char data[LUMEN_CHUNK_SIZE];
};

struct lumen_tiny_rec {
    struct lumen_hdr h;
    unsigned char data[LUMEN_TINY_CHUNK];
};

struct lumen_small_rec {
    struct lumen_hdr h;
    unsigned char data[LUMEN_SMALL_CHUNK];
};

/* EXEC and PROC: the kernel's comm (TASK_COMM_LEN), chunk_len = LUMEN_COMM_LEN */
#define LUMEN_COMM_LEN 16

struct lumen_proc_rec {
    struct lumen_hdr h;
    char comm[LUMEN_COMM_LEN];
};

/* key of the per-connection maps (ignored, gap) */
struct lumen_conn_key {
    unsigned int tgid;
    unsigned int pad;
    unsigned long long ssl;
};

#endif
