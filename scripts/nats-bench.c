// JetStream publisher for scripts/bench-vs-peers.sh: pipelined async publishes of fixed-size
// records (lines of a generated log file, padded or cut to --size bytes) to a file-storage
// stream, a bounded number of unacknowledged publishes per connection; counts acknowledged
// messages and prints one JSON line.
//
// Build: gcc -O2 -o nats-bench scripts/nats-bench.c -lnats -lpthread   (Debian: libnats-dev)
// Usage: nats-bench --url nats://127.0.0.1:4222[,nats://...] --stream S --replicas R
//                   --size 200 --secs 15 --pubs 1 --max-pending 8192 --payload FILE
//                   [--streams K] [--max-bytes B] [--batch K]
// With --batch K, each message carries K consecutive records (K * size bytes): log lines
// batched by the publisher, as an operator shipping logs through NATS might do.
// With --streams K > 1, K streams S0..S(K-1) are created and publisher i writes to stream i % K
// (NATS scales a topic's write path by streams, Tributary by partitions).
#include <nats/nats.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

static const char *url = "nats://127.0.0.1:4222";
static const char *stream = "bench";
static int replicas = 1, size = 200, pubs = 1, streams = 1, batch = 1;
static double secs = 15;
static int64_t max_pending = 8192;
static int64_t max_bytes = -1;
static const char *payload_file = NULL;

static char *records;   // nrec records of `size` bytes each
static size_t nrec;
static atomic_llong acked, failed, published;
static double deadline;

// --url takes a comma-separated list; libnats is given it as a server array.
static const char *servers[16];
static int nservers;

static void set_servers(natsOptions *opts) {
    if (nservers == 0) {
        char *copy = strdup(url), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t && nservers < 16; t = strtok_r(NULL, ",", &save))
            servers[nservers++] = t;
    }
    natsOptions_SetServers(opts, servers, nservers);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, natsStatus s, jsErrCode jerr) {
    fprintf(stderr, "nats-bench: %s: %s (jerr %d) %s\n", what, natsStatus_GetText(s), (int)jerr,
            nats_GetLastError(NULL) ? nats_GetLastError(NULL) : "");
    exit(1);
}

static void load_payload(void) {
    size_t cap = 1 << 16;
    records = malloc(cap * size);
    FILE *f = payload_file ? fopen(payload_file, "r") : NULL;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    // Up to 200,000 distinct records (~40 MB at 200 bytes): enough that the payloads do not
    // repeat in any short window; they are reused cyclically.
    while (f && nrec < 200000 && (n = getline(&line, &lcap, f)) > 0) {
        if (line[n - 1] == '\n') n--;
        if (nrec == cap) { cap *= 2; records = realloc(records, cap * size); }
        char *r = records + nrec * size;
        if (n >= size) memcpy(r, line, size);
        else { memcpy(r, line, n); memset(r + n, ' ', size - n); }
        nrec++;
    }
    if (f) fclose(f);
    free(line);
    if (nrec == 0) {  // no file: a fixed printable record
        for (int i = 0; i < size; i++) records[i] = 'a' + i % 26;
        nrec = 1;
    }
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    (void)js; (void)closure;
    if (pa != NULL) atomic_fetch_add(&acked, 1);
    else if (pae != NULL) atomic_fetch_add(&failed, 1);
    natsMsg_Destroy(msg);
}

struct pub { int id; double end; };

static void *publisher(void *arg) {
    struct pub *p = arg;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsOptions *opts = NULL;
    jsOptions jo;
    natsStatus s;
    natsOptions_Create(&opts);
    set_servers(opts);
    natsOptions_SetMaxPendingMsgs(opts, 1 << 20);
    if ((s = natsConnection_Connect(&nc, opts)) != NATS_OK) die("connect", s, 0);
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = max_pending;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.StallWait = 30000;
    jo.Wait = 30000;
    if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK) die("jetstream", s, 0);
    char subj[256];
    if (streams > 1) snprintf(subj, sizeof subj, "%s%d.p%d", stream, p->id % streams, p->id);
    else snprintf(subj, sizeof subj, "%s.p%d", stream, p->id);
    size_t i = (size_t)p->id * 7919;
    char *msg = malloc((size_t)size * batch);
    while (now() < deadline) {
        for (int k = 0; k < 64; k++) {
            const char *r = records + (i++ % nrec) * size;
            if (batch > 1) {
                for (int b = 0; b < batch; b++) memcpy(msg + (size_t)b * size, records + (i++ % nrec) * size, size);
                r = msg;
            }
            s = js_PublishAsync(js, subj, r, size * batch, NULL);
            if (s == NATS_TIMEOUT) { k--; continue; }  // stalled at MaxPending: try again
            if (s != NATS_OK) die("publish", s, 0);
            atomic_fetch_add(&published, 1);
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    if ((s = js_PublishAsyncComplete(js, &po)) != NATS_OK) die("publish complete", s, 0);
    p->end = now();
    free(msg);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    return NULL;
}

static void make_stream(jsCtx *js, const char *name) {
    jsStreamConfig cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    char subj[256];
    const char *subjects[1] = {subj};
    snprintf(subj, sizeof subj, "%s.>", name);
    jsStreamConfig_Init(&cfg);
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = replicas;
    cfg.MaxBytes = max_bytes;
    cfg.Discard = js_DiscardOld;
    // A fresh cluster may still be electing its JetStream meta leader: retry for 60 s.
    for (int attempt = 0; attempt < 600; attempt++) {
        js_DeleteStream(js, name, NULL, &jerr);
        jerr = 0;
        s = js_AddStream(&si, js, &cfg, NULL, &jerr);
        if (s == NATS_OK) { jsStreamInfo_Destroy(si); return; }
        nats_Sleep(100);
    }
    die("add stream", s, jerr);
}

int main(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--url")) url = v;
        else if (!strcmp(k, "--stream")) stream = v;
        else if (!strcmp(k, "--replicas")) replicas = atoi(v);
        else if (!strcmp(k, "--size")) size = atoi(v);
        else if (!strcmp(k, "--secs")) secs = atof(v);
        else if (!strcmp(k, "--pubs")) pubs = atoi(v);
        else if (!strcmp(k, "--streams")) streams = atoi(v);
        else if (!strcmp(k, "--max-pending")) max_pending = atoll(v);
        else if (!strcmp(k, "--max-bytes")) max_bytes = atoll(v);
        else if (!strcmp(k, "--payload")) payload_file = v;
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else { fprintf(stderr, "nats-bench: unknown option %s\n", k); return 2; }
    }
    load_payload();
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsOptions *opts = NULL;
    jsOptions jo;
    natsStatus s;
    natsOptions_Create(&opts);
    set_servers(opts);
    for (int attempt = 0; (s = natsConnection_Connect(&nc, opts)) != NATS_OK; attempt++) {
        if (attempt > 100) die("connect", s, 0);
        nats_Sleep(100);
    }
    jsOptions_Init(&jo);
    jo.Wait = 10000;
    if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK) die("jetstream", s, 0);
    if (streams > 1) {
        for (int k = 0; k < streams; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s%d", stream, k);
            make_stream(js, name);
        }
    } else {
        make_stream(js, stream);
    }

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    pthread_t *th = calloc(pubs, sizeof *th);
    struct pub *ps = calloc(pubs, sizeof *ps);
    double start = now();
    deadline = start + secs;
    for (int i = 0; i < pubs; i++) {
        ps[i].id = i;
        pthread_create(&th[i], NULL, publisher, &ps[i]);
    }
    double end = start;
    for (int i = 0; i < pubs; i++) {
        pthread_join(th[i], NULL);
        if (ps[i].end > end) end = ps[i].end;
    }
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double el = end - start;
    long long a = atomic_load(&acked);
    // acked/published count messages; records = messages * batch.
    printf("{\"published\":%lld,\"acked\":%lld,\"errors\":%lld,\"seconds\":%.3f,\"records\":%lld,"
           "\"records_per_sec\":%.0f,\"mb_per_sec_payload\":%.2f,\"record_bytes\":%d,\"batch\":%d,\"pubs\":%d,"
           "\"streams\":%d,\"replicas\":%d,\"max_pending\":%lld,\"client_cpu_s\":%.2f}\n",
           (long long)atomic_load(&published), a, (long long)atomic_load(&failed), el, a * batch, a * batch / el,
           a * (double)size * batch / el / 1e6, size, batch, pubs, streams, replicas, (long long)max_pending, cpu);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_Close();
    return 0;
}
