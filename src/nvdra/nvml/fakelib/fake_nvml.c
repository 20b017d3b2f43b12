/*
 * A fake libnvidia-ml.so.1 at the C ABI, for tests: NVML entry points over a node read from a state
 * file that nvdra renders from a simulated profile (nvdra.nvml._fakelib).
 *
 * Written for nvdra from the public nvml.h facts (function signatures, struct layouts, version words,
 * return codes); no NVIDIA code. Built by the tests with gcc, never committed as a binary.
 *
 * State file: NVDRA_FAKE_NVML_STATE, else "nvdra-fake-nvml.state" beside this library (dladdr).
 * It is read on the first nvmlInit* (and on every init after the last shutdown); MIG and compute-mode
 * changes are written back to it atomically, so the "hardware" outlives the process, as a GPU's state
 * outlives a killed plugin. Events are read from "<state>.events" (appended by tests) while waiting.
 * Line format: see nvdra/nvml/_fakelib.py. A malformed file makes nvmlInit answer NVML_ERROR_UNKNOWN
 * and print "<file>:<line>: <problem>" to stderr.
 *
 * The rules are the simulator's (nvdra.nvml._simulated / _simstate), i.e. what NVML does on the
 * profiled hardware: UNINITIALIZED before init, INVALID_ARGUMENT for bad indices and stale handles,
 * NOT_SUPPORTED for MIG calls on GPUs without MIG, ARGUMENT_VERSION_MISMATCH for a struct version the
 * "driver" does not know, GPU_IS_LOST on a lost GPU. Every entry point holds one mutex; the event
 * wait releases it while sleeping.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0, NVML_ERROR_UNINITIALIZED = 1, NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3, NVML_ERROR_NO_PERMISSION = 4, NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6, NVML_ERROR_INSUFFICIENT_SIZE = 7, NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10, NVML_ERROR_LIBRARY_NOT_FOUND = 12, NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_GPU_IS_LOST = 15, NVML_ERROR_RESET_REQUIRED = 16, NVML_ERROR_IN_USE = 19,
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23, NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define VERSIONED(size, ver) ((unsigned int)(size) | ((unsigned int)(ver) << 24))
#define MAX_GPUS 32
#define MAX_GI 16
#define MAX_CI 8
#define MAX_PROFILES 24
#define MAX_PLACEMENTS 8
#define MAX_LINKS 18 /* NVML_NVLINK_MAX_LINKS */
#define MAX_FAULTS 32
#define MAX_SETS 8
#define HOPPER 9

/* ---- nvml.h structs (layouts checked against their sizes below) ---------------------------- */
typedef struct { char busIdLegacy[16]; unsigned int domain, bus, device, pciDeviceId, pciSubSystemId; char busId[32]; } nvmlPciInfo_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned int start, size; } nvmlGpuInstancePlacement_t;
typedef struct {
    unsigned int version, id, isP2pSupported, sliceCount, instanceCount, multiprocessorCount,
        copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount;
    unsigned long long memorySizeMB;
    char name[96];
} nvmlGpuInstanceProfileInfo_v2_t;
typedef struct {
    unsigned int version, id, sliceCount, instanceCount, multiprocessorCount, sharedCopyEngineCount,
        sharedDecoderCount, sharedEncoderCount, sharedJpegCount, sharedOfaCount;
    char name[96];
} nvmlComputeInstanceProfileInfo_v2_t;
typedef struct { void *device; unsigned int id, profileId; nvmlGpuInstancePlacement_t placement; } nvmlGpuInstanceInfo_t;
typedef struct { void *device; void *gpuInstance; unsigned int id, profileId; nvmlGpuInstancePlacement_t placement; } nvmlComputeInstanceInfo_t;
typedef struct { unsigned char clusterUuid[16]; nvmlReturn_t status; unsigned int cliqueId; unsigned int state; } nvmlGpuFabricInfo_t;
typedef struct { unsigned int version; unsigned char clusterUuid[16]; nvmlReturn_t status; unsigned int cliqueId; unsigned int state; unsigned int healthMask; } nvmlGpuFabricInfo_v2_t;
typedef struct { unsigned int version; unsigned char clusterUuid[16]; nvmlReturn_t status; unsigned int cliqueId; unsigned int state; unsigned int healthMask; unsigned char healthSummary; } nvmlGpuFabricInfo_v3_t;
typedef struct { void *device; unsigned long long eventType, eventData; unsigned int gpuInstanceId, computeInstanceId; } nvmlEventData_t;
typedef struct { unsigned int version, value; } nvmlDeviceAddressingMode_t;

_Static_assert(sizeof(nvmlPciInfo_t) == 68, "nvmlPciInfo_t");
_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t");
_Static_assert(sizeof(nvmlGpuInstanceProfileInfo_v2_t) == 0x98, "nvmlGpuInstanceProfileInfo_v2_t");
_Static_assert(sizeof(nvmlComputeInstanceProfileInfo_v2_t) == 0x88, "nvmlComputeInstanceProfileInfo_v2_t");
_Static_assert(sizeof(nvmlGpuInstanceInfo_t) == 24, "nvmlGpuInstanceInfo_t");
_Static_assert(sizeof(nvmlComputeInstanceInfo_t) == 32, "nvmlComputeInstanceInfo_t");
_Static_assert(sizeof(nvmlGpuFabricInfo_t) == 28, "nvmlGpuFabricInfo_t");
_Static_assert(sizeof(nvmlGpuFabricInfo_v2_t) == 0x24, "nvmlGpuFabricInfo_v2_t");
_Static_assert(sizeof(nvmlGpuFabricInfo_v3_t) == 0x28, "nvmlGpuFabricInfo_v3_t");
_Static_assert(sizeof(nvmlEventData_t) == 32, "nvmlEventData_t");

#define MEMORY_V2 VERSIONED(sizeof(nvmlMemory_v2_t), 2)
#define GI_PROFILE_V2 VERSIONED(sizeof(nvmlGpuInstanceProfileInfo_v2_t), 2)
#define CI_PROFILE_V2 VERSIONED(sizeof(nvmlComputeInstanceProfileInfo_v2_t), 2)
#define FABRIC_V2 VERSIONED(sizeof(nvmlGpuFabricInfo_v2_t), 2)
#define FABRIC_V3 VERSIONED(sizeof(nvmlGpuFabricInfo_v3_t), 3)
#define ADDRESSING_V1 VERSIONED(sizeof(nvmlDeviceAddressingMode_t), 1)

/* ---- the node ------------------------------------------------------------------------------ */
enum { K_GPU = 0x47505530, K_GI = 0x47490000, K_CI = 0x43490000, K_MIG = 0x4d494700, K_SET = 0x53455400 };
struct hdr { unsigned int kind; int gpu, gi, ci; };

struct profile {
    int enumv, id, slices, instances, mps, ce, dec, enc, jpeg, ofa, size, nstarts;
    unsigned long long mem_mb;
    int starts[MAX_PLACEMENTS];
    char name[96];
};
struct ci { struct hdr h; struct hdr mig; int used, profile_id, processes; char uuid[96]; };
struct gi { struct hdr h; int used, profile_id, start, size, slices; struct ci cis[MAX_CI]; };
struct link { int active, version, remote_type; char remote_bus[32]; };
struct gpu {
    struct hdr h;
    int index, minor, brand, arch, cc_major, cc_minor, module_id, numa, addressing, lost;
    unsigned int pci_device_id;
    unsigned long long memory;
    char uuid[96], name[96], bus_id[32];
    int mig_capable, mem_slices, compute_slices, mig_current, mig_pending, compute_mode, nprofiles, nlinks;
    int processes; /* processes on the whole GPU: a MIG mode change then answers IN_USE */
    struct profile profiles[MAX_PROFILES];
    struct link links[MAX_LINKS];
    struct gi gis[MAX_GI];
};
struct fault { char fn[80]; int code, remaining; };
struct evset { struct hdr h; int used; unsigned long long mask[MAX_GPUS]; long offset; };

/* A marker no real libnvidia-ml exports: tests tell the fake from the system's library by it. */
const int nvdraFakeNvml = 1;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_refs;
static char g_path[4096];
static char *g_static_text; /* the state file minus its mutable lines, written back verbatim */
static char g_driver[80];
static char g_caps_root[4096]; /* where the "kernel driver" keeps MIG capability files; empty = nowhere */
static int g_cuda, g_fabric_version = 3, g_fabric_supported, g_ngpus, g_nfaults;
static unsigned long long g_events_supported = 0x1f;
static struct { unsigned int state, status, clique, health_mask, health_summary; unsigned char uuid[16]; } g_fabric;
static unsigned char g_mig_ns[16];
static struct gpu g_gpus[MAX_GPUS];
static struct fault g_faults[MAX_FAULTS];
static struct evset g_sets[MAX_SETS];

static const int FULL_CI_PROFILE[9] = {-1, 0, 1, 2, 3, -1, 6, 4, 5}; /* GI compute slices -> CI enum */
static const int CI_ENUM_SLICES[7] = {1, 2, 3, 4, 7, 8, 6};

/* ---- SHA-1 and uuid5, so MIG UUIDs are the simulator's (nvdra.nvml._simstate.mig_uuid) ------- */
#define ROL(v, n) (((v) << (n)) | ((v) >> (32 - (n))))
static void sha1(const unsigned char *msg, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    unsigned char *buf = calloc(total, 1);
    if (!buf) { memset(out, 0, 20); return; }
    memcpy(buf, msg, len);
    buf[len] = 0x80;
    unsigned long long bits = (unsigned long long)len * 8;
    for (int i = 0; i < 8; i++) buf[total - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)buf[off + 4 * i] << 24 | (uint32_t)buf[off + 4 * i + 1] << 16 |
                   (uint32_t)buf[off + 4 * i + 2] << 8 | buf[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            uint32_t t = ROL(a, 5) + f + e + k + w[i];
            e = d; d = c; c = ROL(b, 30); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    free(buf);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

static void mig_uuid(const struct gpu *g, int gi, int ci, int start, int size, char *out, size_t n) {
    char name[256];
    int len = snprintf(name, sizeof name, "%s/gi%d/ci%d/%d+%d", g->uuid, gi, ci, start, size);
    unsigned char msg[16 + 256], d[20];
    memcpy(msg, g_mig_ns, 16);
    memcpy(msg + 16, name, (size_t)len);
    sha1(msg, 16 + (size_t)len, d);
    d[6] = (d[6] & 0x0F) | 0x50;
    d[8] = (d[8] & 0x3F) | 0x80;
    snprintf(out, n, "MIG-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]);
}

/* ---- state file ---------------------------------------------------------------------------- */
static int parse_uuid_bytes(const char *s, unsigned char out[16]) {
    int n = 0;
    for (const char *p = s; *p && n < 32; p++) {
        if (*p == '-') continue;
        unsigned int v;
        if (sscanf(p, "%1x", &v) != 1) return -1;
        if (n % 2 == 0) out[n / 2] = (unsigned char)(v << 4); else out[n / 2] |= (unsigned char)v;
        n++;
    }
    return n == 32 ? 0 : -1;
}

static const char *state_path(void) {
    const char *env = getenv("NVDRA_FAKE_NVML_STATE");
    if (env && *env) return env;
    Dl_info info;
    static char beside[4096];
    if (dladdr((void *)&state_path, &info) && info.dli_fname) {
        snprintf(beside, sizeof beside, "%s", info.dli_fname);
        char *slash = strrchr(beside, '/');
        if (slash) { slash[1] = 0; strncat(beside, "nvdra-fake-nvml.state", sizeof beside - strlen(beside) - 1); return beside; }
    }
    return "nvdra-fake-nvml.state";
}

static int bad(const char *path, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fake libnvidia-ml: %s:%d: ", path, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return NVML_ERROR_UNKNOWN;
}

static struct gpu *gpu_at(int index) { return index >= 0 && index < g_ngpus ? &g_gpus[index] : NULL; }

static int is_mutable(const char *kw) {
    return !strcmp(kw, "compute") || !strcmp(kw, "migmode") || !strcmp(kw, "gi") || !strcmp(kw, "ci") ||
           !strcmp(kw, "lost") || !strcmp(kw, "processes");
}

static int parse_line(const char *path, int ln, char *line) {
    char kw[32];
    int n = 0;
    if (sscanf(line, "%31s %n", kw, &n) != 1 || kw[0] == '#') return 0;
    char *rest = line + n;
    if (!strcmp(kw, "nvdra-fake-nvml")) return 0;
    if (!strcmp(kw, "driver")) return sscanf(rest, "%79s", g_driver) == 1 ? 0 : bad(path, ln, "driver: want a version");
    if (!strcmp(kw, "cuda")) return sscanf(rest, "%d", &g_cuda) == 1 ? 0 : bad(path, ln, "cuda: want an integer");
    if (!strcmp(kw, "fabric_version"))
        return sscanf(rest, "%d", &g_fabric_version) == 1 && g_fabric_version >= 1 && g_fabric_version <= 3
                   ? 0 : bad(path, ln, "fabric_version: want 1, 2 or 3");
    if (!strcmp(kw, "capabilities"))
        return sscanf(rest, "%4095s", g_caps_root) == 1 ? 0 : bad(path, ln, "capabilities: want a directory");
    if (!strcmp(kw, "events")) return sscanf(rest, "%llx", &g_events_supported) == 1 ? 0 : bad(path, ln, "events: want a hex mask");
    if (!strcmp(kw, "mig_uuid_namespace"))
        return parse_uuid_bytes(rest, g_mig_ns) == 0 ? 0 : bad(path, ln, "mig_uuid_namespace: want a UUID");
    if (!strcmp(kw, "fail")) {
        if (g_nfaults >= MAX_FAULTS) return bad(path, ln, "more than %d fail lines", MAX_FAULTS);
        struct fault *f = &g_faults[g_nfaults];
        f->remaining = -1;
        if (sscanf(rest, "%79s %d %d", f->fn, &f->code, &f->remaining) < 2)
            return bad(path, ln, "fail: want <function> <code> [count]");
        g_nfaults++;
        return 0;
    }
    if (!strcmp(kw, "fabric")) {
        char uuid[64];
        g_fabric_supported = 1;
        if (sscanf(rest, "%u %u %63s %u %u %u", &g_fabric.state, &g_fabric.status, uuid, &g_fabric.clique,
                   &g_fabric.health_mask, &g_fabric.health_summary) != 6 || parse_uuid_bytes(uuid, g_fabric.uuid))
            return bad(path, ln, "fabric: want <state> <status> <cluster uuid> <clique> <health mask> <health summary>");
        return 0;
    }
    if (!strcmp(kw, "gpu")) {
        if (g_ngpus >= MAX_GPUS) return bad(path, ln, "more than %d GPUs", MAX_GPUS);
        struct gpu *g = &g_gpus[g_ngpus];
        char numa[16], addr[16];
        int m = 0;
        if (sscanf(rest, "%d %95s %d %31s %x %d %d %d %d %llu %d %15s %15s %n", &g->index, g->uuid, &g->minor,
                   g->bus_id, &g->pci_device_id, &g->brand, &g->arch, &g->cc_major, &g->cc_minor, &g->memory,
                   &g->module_id, numa, addr, &m) < 13 || m == 0)
            return bad(path, ln, "gpu: want <index> <uuid> <minor> <bus id> <pci device id hex> <brand> <arch> "
                                 "<cc major> <cc minor> <memory bytes> <module id> <numa|-> <addressing|-> <name>");
        if (g->index != g_ngpus) return bad(path, ln, "gpu index %d out of order (want %d)", g->index, g_ngpus);
        snprintf(g->name, sizeof g->name, "%s", rest + m);
        g->name[strcspn(g->name, "\n")] = 0;
        g->numa = strcmp(numa, "-") ? atoi(numa) : -1;
        g->addressing = strcmp(addr, "-") ? atoi(addr) : -1;
        g->h = (struct hdr){K_GPU, g_ngpus, -1, -1};
        for (int i = 0; i < MAX_GI; i++) {
            g->gis[i].h = (struct hdr){K_GI, g_ngpus, i, -1};
            for (int c = 0; c < MAX_CI; c++) {
                g->gis[i].cis[c].h = (struct hdr){K_CI, g_ngpus, i, c};
                g->gis[i].cis[c].mig = (struct hdr){K_MIG, g_ngpus, i, c};
            }
        }
        g_ngpus++;
        return 0;
    }
    int index, m = 0;
    if (sscanf(rest, "%d %n", &index, &m) != 1 || !gpu_at(index)) return bad(path, ln, "%s: unknown GPU index", kw);
    struct gpu *g = gpu_at(index);
    rest += m;
    if (!strcmp(kw, "mig")) {
        g->mig_capable = 1;
        return sscanf(rest, "%d %d", &g->mem_slices, &g->compute_slices) == 2 ? 0
               : bad(path, ln, "mig: want <index> <memory slices> <compute slices>");
    }
    if (!strcmp(kw, "migmode"))
        return sscanf(rest, "%d %d", &g->mig_current, &g->mig_pending) == 2 ? 0 : bad(path, ln, "migmode: want <index> <current> <pending>");
    if (!strcmp(kw, "compute")) return sscanf(rest, "%d", &g->compute_mode) == 1 ? 0 : bad(path, ln, "compute: want <index> <mode>");
    if (!strcmp(kw, "lost")) { g->lost = 1; return 0; }
    if (!strcmp(kw, "processes"))
        return sscanf(rest, "%d", &g->processes) == 1 ? 0 : bad(path, ln, "processes: want <index> <count>");
    if (!strcmp(kw, "profile")) {
        if (g->nprofiles >= MAX_PROFILES) return bad(path, ln, "more than %d profiles", MAX_PROFILES);
        struct profile *p = &g->profiles[g->nprofiles];
        char starts[64];
        int k = 0;
        if (sscanf(rest, "%d %d %d %d %d %d %d %d %d %d %llu %d %63s %n", &p->enumv, &p->id, &p->slices,
                   &p->instances, &p->mps, &p->ce, &p->dec, &p->enc, &p->jpeg, &p->ofa, &p->mem_mb, &p->size,
                   starts, &k) < 13 || k == 0)
            return bad(path, ln, "profile: want <index> <enum> <id> <slices> <instances> <sm> <ce> <dec> <enc> "
                                 "<jpeg> <ofa> <memory MB> <placement size> <starts,…> <name>");
        for (char *tok = strtok(starts, ","); tok; tok = strtok(NULL, ",")) {
            if (p->nstarts >= MAX_PLACEMENTS) return bad(path, ln, "more than %d placements", MAX_PLACEMENTS);
            p->starts[p->nstarts++] = atoi(tok);
        }
        snprintf(p->name, sizeof p->name, "%s", rest + k);
        p->name[strcspn(p->name, "\n")] = 0;
        g->nprofiles++;
        return 0;
    }
    if (!strcmp(kw, "link")) {
        int l;
        struct link lk = {0};
        if (sscanf(rest, "%d %d %d %d %31s", &l, &lk.active, &lk.version, &lk.remote_type, lk.remote_bus) != 5 ||
            l != g->nlinks || l >= MAX_LINKS)
            return bad(path, ln, "link: want <index> <link, in order, < %d> <active> <version> <remote type> <bus|->", MAX_LINKS);
        if (!strcmp(lk.remote_bus, "-")) lk.remote_bus[0] = 0;
        g->links[g->nlinks++] = lk;
        return 0;
    }
    if (!strcmp(kw, "gi")) {
        int id, prof, start, size, slices;
        if (sscanf(rest, "%d %d %d %d %d", &id, &prof, &start, &size, &slices) != 5 || id < 0 || id >= MAX_GI)
            return bad(path, ln, "gi: want <index> <gi id < %d> <profile id> <start> <size> <compute slices>", MAX_GI);
        struct gi *x = &g->gis[id];
        x->used = 1; x->profile_id = prof; x->start = start; x->size = size; x->slices = slices;
        return 0;
    }
    if (!strcmp(kw, "ci")) {
        int gi, id, prof, procs = 0;
        char uuid[96];
        if (sscanf(rest, "%d %d %d %95s %d", &gi, &id, &prof, uuid, &procs) < 4 || gi < 0 || gi >= MAX_GI ||
            !g->gis[gi].used || id < 0 || id >= MAX_CI)
            return bad(path, ln, "ci: want <index> <existing gi id> <ci id < %d> <ci profile id> <uuid> [processes]", MAX_CI);
        struct ci *c = &g->gis[gi].cis[id];
        c->used = 1; c->profile_id = prof; c->processes = procs;
        snprintf(c->uuid, sizeof c->uuid, "%s", uuid);
        return 0;
    }
    return bad(path, ln, "unknown keyword %s", kw);
}

static int load_state(void) {
    const char *path = state_path();
    snprintf(g_path, sizeof g_path, "%s", path);
    FILE *f = fopen(g_path, "r");
    if (!f) {
        fprintf(stderr, "fake libnvidia-ml: cannot open state file %s: %s\n", g_path, strerror(errno));
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    memset(g_gpus, 0, sizeof g_gpus);
    g_ngpus = g_nfaults = g_fabric_supported = 0;
    g_caps_root[0] = 0;
    g_fabric_version = 3;
    free(g_static_text);
    size_t cap = 1 << 16, used = 0;
    g_static_text = malloc(cap);
    if (!g_static_text) { fclose(f); return NVML_ERROR_UNKNOWN; }
    g_static_text[0] = 0;
    char line[1024];
    int ln = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        char kw[32] = "";
        sscanf(line, "%31s", kw);
        if (!is_mutable(kw)) {
            size_t len = strlen(line);
            if (used + len + 1 > cap) {
                char *more = realloc(g_static_text, cap *= 2);
                if (!more) { rc = NVML_ERROR_UNKNOWN; break; }
                g_static_text = more;
            }
            memcpy(g_static_text + used, line, len + 1);
            used += len;
        }
        if ((rc = parse_line(g_path, ln, line)) != 0) break;
    }
    fclose(f);
    if (!rc && !g_driver[0]) rc = bad(g_path, ln, "no driver line");
    return rc;
}

static void save_state(void) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", g_path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fputs(g_static_text ? g_static_text : "", f);
    for (int i = 0; i < g_ngpus; i++) {
        struct gpu *g = &g_gpus[i];
        fprintf(f, "compute %d %d\n", i, g->compute_mode);
        if (g->lost) fprintf(f, "lost %d\n", i);
        if (g->processes) fprintf(f, "processes %d %d\n", i, g->processes);
        if (g->mig_capable) fprintf(f, "migmode %d %d %d\n", i, g->mig_current, g->mig_pending);
        for (int k = 0; k < MAX_GI; k++) {
            struct gi *x = &g->gis[k];
            if (!x->used) continue;
            fprintf(f, "gi %d %d %d %d %d %d\n", i, k, x->profile_id, x->start, x->size, x->slices);
            for (int c = 0; c < MAX_CI; c++)
                if (x->cis[c].used)
                    fprintf(f, "ci %d %d %d %d %s %d\n", i, k, c, x->cis[c].profile_id, x->cis[c].uuid, x->cis[c].processes);
        }
    }
    if (fclose(f) == 0) rename(tmp, g_path); else unlink(tmp);
}

/* ---- MIG capabilities: what the kernel driver shows for each GI and CI ------------------------ */
/* Minors follow the driver's closed form: GI access 3 + 135*gpu + 9*gi, CI access that + 1 + ci. */
static int mkdirs(const char *path) {
    char buf[4200];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') { *p = 0; if (mkdir(buf, 0755) && errno != EEXIST) return -1; *p = '/'; }
    return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

static void write_cap(const char *dir, int minor) {
    char path[4300];
    if (mkdirs(dir)) return;
    snprintf(path, sizeof path, "%s/access", dir);
    FILE *f = fopen(path, "w");
    if (f) { fprintf(f, "DeviceFileMinor: %d\nDeviceFileMode: 292\nDeviceFileModify: 1\n", minor); fclose(f); }
    snprintf(path, sizeof path, "%s/dev/nvidia-caps", g_caps_root);
    if (mkdirs(path)) return;
    snprintf(path, sizeof path, "%s/dev/nvidia-caps/nvidia-cap%d", g_caps_root, minor);
    f = fopen(path, "w");
    if (f) { fclose(f); chmod(path, 0444); }
}

static void remove_cap(const char *dir, int minor) {
    char path[4300];
    snprintf(path, sizeof path, "%s/access", dir);
    unlink(path);
    rmdir(dir);
    snprintf(path, sizeof path, "%s/dev/nvidia-caps/nvidia-cap%d", g_caps_root, minor);
    unlink(path);
}

static void gi_caps(const struct gpu *g, int gi, int ci, int present) {
    if (!g_caps_root[0]) return;
    char dir[4200];
    int gi_minor = 3 + 135 * g->minor + 9 * gi;
    if (ci >= 0) {
        snprintf(dir, sizeof dir, "%s/proc/driver/nvidia/capabilities/gpu%d/mig/gi%d/ci%d", g_caps_root, g->minor, gi, ci);
        if (present) write_cap(dir, gi_minor + 1 + ci); else remove_cap(dir, gi_minor + 1 + ci);
        return;
    }
    snprintf(dir, sizeof dir, "%s/proc/driver/nvidia/capabilities/gpu%d/mig/gi%d", g_caps_root, g->minor, gi);
    if (present) write_cap(dir, gi_minor); else remove_cap(dir, gi_minor);
}

/* ---- plumbing ------------------------------------------------------------------------------ */
static int fault(const char *fn) {
    for (int i = 0; i < g_nfaults; i++) {
        struct fault *f = &g_faults[i];
        if (strcmp(f->fn, fn) || f->remaining == 0) continue;
        if (f->remaining > 0) f->remaining--;
        return f->code;
    }
    return 0;
}

#define ENTER(name)                                                          \
    pthread_mutex_lock(&g_lock);                                             \
    nvmlReturn_t rc_ = fault(name);                                          \
    if (!rc_ && !g_refs) rc_ = NVML_ERROR_UNINITIALIZED;                      \
    if (rc_) { pthread_mutex_unlock(&g_lock); return rc_; }
#define LEAVE(rc) do { nvmlReturn_t r__ = (rc); pthread_mutex_unlock(&g_lock); return r__; } while (0)

/* A device handle (whole GPU or MIG device): its GPU, and its GI/CI when it is a MIG device. */
static struct gpu *device(void *handle, struct ci **mig, nvmlReturn_t *rc) {
    struct hdr *h = handle;
    if (mig) *mig = NULL;
    for (int i = 0; i < g_ngpus; i++) {
        struct gpu *g = &g_gpus[i];
        if (h == &g->h) { *rc = g->lost ? NVML_ERROR_GPU_IS_LOST : 0; return *rc ? NULL : g; }
        if (h && (char *)h >= (char *)g->gis && (char *)h < (char *)(g->gis + MAX_GI) && h->kind == K_MIG &&
            h == &g->gis[h->gi].cis[h->ci].mig) {
            struct ci *c = &g->gis[h->gi].cis[h->ci];
            if (!mig || !c->used) break;
            *mig = c;
            *rc = g->lost ? NVML_ERROR_GPU_IS_LOST : 0;
            return *rc ? NULL : g;
        }
    }
    *rc = NVML_ERROR_INVALID_ARGUMENT;
    return NULL;
}
#define GPU(handle)                                                         \
    nvmlReturn_t drc_;                                                      \
    struct gpu *g = device((handle), NULL, &drc_);                          \
    if (!g) LEAVE(drc_);

/* A versioned struct argument: NULL is INVALID_ARGUMENT, another version word ARGUMENT_VERSION_MISMATCH. */
#define VERSIONED_ARG(p, want)                                              \
    if (!(p)) LEAVE(NVML_ERROR_INVALID_ARGUMENT);                          \
    if ((p)->version != (want)) LEAVE(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);

static struct gi *gi_of(void *handle, struct gpu **gp) {
    struct hdr *h = handle;
    for (int i = 0; i < g_ngpus; i++) {
        struct gpu *g = &g_gpus[i];
        if (h && (char *)h >= (char *)g->gis && (char *)h < (char *)(g->gis + MAX_GI) && h->kind == K_GI &&
            h == &g->gis[h->gi].h && g->gis[h->gi].used) { *gp = g; return &g->gis[h->gi]; }
    }
    return NULL;
}

static struct ci *ci_of(void *handle, struct gpu **gp, struct gi **gip) {
    struct hdr *h = handle;
    for (int i = 0; i < g_ngpus; i++) {
        struct gpu *g = &g_gpus[i];
        if (h && (char *)h >= (char *)g->gis && (char *)h < (char *)(g->gis + MAX_GI) && h->kind == K_CI &&
            h == &g->gis[h->gi].cis[h->ci].h && g->gis[h->gi].used && g->gis[h->gi].cis[h->ci].used) {
            *gp = g; *gip = &g->gis[h->gi];
            return &g->gis[h->gi].cis[h->ci];
        }
    }
    return NULL;
}

static nvmlReturn_t copy_str(const char *s, char *buf, unsigned int len) {
    if (!buf) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

static void fill_pci(const char *bus_id, unsigned int device_id, nvmlPciInfo_t *p) {
    memset(p, 0, sizeof *p);
    sscanf(bus_id, "%x:%x:%x", &p->domain, &p->bus, &p->device);
    snprintf(p->busId, sizeof p->busId, "%s", bus_id);
    snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%04X:%02X:%02X.0", p->domain & 0xFFFF, p->bus, p->device);
    p->pciDeviceId = device_id;
}

/* MIG profile queries answer on MIG-capable GPUs, on Ampere only while MIG is on. */
static nvmlReturn_t mig_queries(const struct gpu *g) {
    if (!g->mig_capable) return NVML_ERROR_NOT_SUPPORTED;
    if (g->arch < HOPPER && !g->mig_current) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

static struct profile *profile_by_id(struct gpu *g, unsigned int id) {
    for (int i = 0; i < g->nprofiles; i++) if ((unsigned int)g->profiles[i].id == id) return &g->profiles[i];
    return NULL;
}

/* For a MIG profile query on GPU g: p, the profile with this id (mig_queries' answer first; an unknown id is
   INVALID_ARGUMENT). */
#define QUERIED_PROFILE(id)                                                 \
    nvmlReturn_t mrc_ = mig_queries(g);                                     \
    if (mrc_) LEAVE(mrc_);                                                  \
    struct profile *p = profile_by_id(g, (id));                             \
    if (!p) LEAVE(NVML_ERROR_INVALID_ARGUMENT);

static int used_slices(const struct gpu *g, int mem[8]) {
    int compute = 0;
    memset(mem, 0, 8 * sizeof(int));
    for (int k = 0; k < MAX_GI; k++) {
        const struct gi *x = &g->gis[k];
        if (!x->used) continue;
        compute += x->slices;
        for (int s = x->start; s < x->start + x->size && s < 8; s++) mem[s] = 1;
    }
    return compute;
}

static int remaining(const struct gpu *g, const struct profile *p) {
    int mem[8], free_ = 0, existing = 0;
    int compute = used_slices(g, mem);
    for (int i = 0; i < p->nstarts; i++) {
        int clash = 0;
        for (int s = p->starts[i]; s < p->starts[i] + p->size; s++) if (s < 8 && mem[s]) clash = 1;
        if (clash) continue;
        free_++;
        for (int s = p->starts[i]; s < p->starts[i] + p->size; s++) if (s < 8) mem[s] = 1;
    }
    for (int k = 0; k < MAX_GI; k++) if (g->gis[k].used && g->gis[k].profile_id == p->id) existing++;
    int left = free_;
    if (p->instances - existing < left) left = p->instances - existing;
    if ((g->compute_slices - compute) / p->slices < left) left = (g->compute_slices - compute) / p->slices;
    return left > 0 ? left : 0;
}

/* ---- init and system ----------------------------------------------------------------------- */
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags; /* NVML_INIT_FLAG_NO_GPUS: a node without GPUs initialises too, which is always so here */
    pthread_mutex_lock(&g_lock);
    nvmlReturn_t rc = g_refs == 0 ? load_state() : NVML_SUCCESS;
    if (!rc) rc = fault("nvmlInitWithFlags"); /* after loading: the fail lines are in the state file */
    if (!rc) g_refs++;
    pthread_mutex_unlock(&g_lock);
    return rc;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    ENTER("nvmlShutdown");
    g_refs--;
    LEAVE(NVML_SUCCESS);
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient resources";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Version mismatch";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetDriverVersion");
    LEAVE(copy_str(g_driver, version, length));
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetNVMLVersion");
    char v[96];
    snprintf(v, sizeof v, "%d.%s", g_cuda / 1000, g_driver);
    LEAVE(copy_str(v, version, length));
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    ENTER("nvmlSystemGetCudaDriverVersion");
    if (!v) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *v = g_cuda;
    LEAVE(NVML_SUCCESS);
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) {
    ENTER("nvmlSystemGetCudaDriverVersion_v2");
    if (!v) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *v = g_cuda;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    ENTER("nvmlDeviceGetCount_v2");
    if (!count) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *count = (unsigned int)g_ngpus;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device_) {
    ENTER("nvmlDeviceGetHandleByIndex_v2");
    if (!device_ || index >= (unsigned int)g_ngpus) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (g_gpus[index].lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
    *device_ = &g_gpus[index].h;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, void **device_) {
    ENTER("nvmlDeviceGetHandleByUUID");
    if (!uuid || !device_) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < g_ngpus; i++) {
        struct gpu *g = &g_gpus[i];
        if (!strcmp(g->uuid, uuid)) {
            if (g->lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
            *device_ = &g->h;
            LEAVE(NVML_SUCCESS);
        }
        for (int k = 0; k < MAX_GI; k++)
            for (int c = 0; c < MAX_CI; c++)
                if (g->mig_current && g->gis[k].used && g->gis[k].cis[c].used && !strcmp(g->gis[k].cis[c].uuid, uuid)) {
                    if (g->lost) LEAVE(NVML_ERROR_GPU_IS_LOST);
                    *device_ = &g->gis[k].cis[c].mig;
                    LEAVE(NVML_SUCCESS);
                }
    }
    LEAVE(NVML_ERROR_NOT_FOUND);
}

/* ---- identity ------------------------------------------------------------------------------ */
nvmlReturn_t nvmlDeviceIsMigDeviceHandle(void *device_, unsigned int *isMig) {
    ENTER("nvmlDeviceIsMigDeviceHandle");
    struct ci *mig;
    nvmlReturn_t rc;
    if (!device(device_, &mig, &rc)) LEAVE(rc);
    if (!isMig) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *isMig = mig != NULL;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(void *migDevice, void **device_) {
    ENTER("nvmlDeviceGetDeviceHandleFromMigDeviceHandle");
    struct ci *mig;
    nvmlReturn_t rc;
    struct gpu *g = device(migDevice, &mig, &rc);
    if (!g) LEAVE(rc);
    if (!mig || !device_) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *device_ = &g->h;
    LEAVE(NVML_SUCCESS);
}

/* The GPU or compute instance ID of a MIG device handle; a whole GPU's handle is an invalid argument. */
#define MIG_ID_GETTER(fn, field)                                    \
    nvmlReturn_t fn(void *device_, unsigned int *id) {              \
        ENTER(#fn);                                                 \
        struct ci *mig;                                             \
        nvmlReturn_t rc;                                            \
        if (!device(device_, &mig, &rc)) LEAVE(rc);                 \
        if (!mig || !id) LEAVE(NVML_ERROR_INVALID_ARGUMENT);        \
        *id = (unsigned int)mig->h.field;                           \
        LEAVE(NVML_SUCCESS);                                        \
    }
MIG_ID_GETTER(nvmlDeviceGetGpuInstanceId, gi)
MIG_ID_GETTER(nvmlDeviceGetComputeInstanceId, ci)

nvmlReturn_t nvmlDeviceGetUUID(void *device_, char *uuid, unsigned int length) {
    ENTER("nvmlDeviceGetUUID");
    struct ci *mig;
    nvmlReturn_t rc;
    struct gpu *g = device(device_, &mig, &rc);
    if (!g) LEAVE(rc);
    LEAVE(copy_str(mig ? mig->uuid : g->uuid, uuid, length));
}

nvmlReturn_t nvmlDeviceGetName(void *device_, char *name, unsigned int length) {
    ENTER("nvmlDeviceGetName");
    GPU(device_);
    LEAVE(copy_str(g->name, name, length));
}

#define UINT_GETTER(fn, field)                                      \
    nvmlReturn_t fn(void *device_, unsigned int *out) {             \
        ENTER(#fn);                                                 \
        GPU(device_);                                               \
        if (!out) LEAVE(NVML_ERROR_INVALID_ARGUMENT);               \
        *out = (unsigned int)(field);                               \
        LEAVE(NVML_SUCCESS);                                        \
    }
UINT_GETTER(nvmlDeviceGetIndex, g->index)
UINT_GETTER(nvmlDeviceGetMinorNumber, g->minor)
UINT_GETTER(nvmlDeviceGetBrand, g->brand)
UINT_GETTER(nvmlDeviceGetArchitecture, g->arch)
UINT_GETTER(nvmlDeviceGetModuleId, g->module_id)
UINT_GETTER(nvmlDeviceGetComputeMode, g->compute_mode)

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(void *device_, int *major, int *minor) {
    ENTER("nvmlDeviceGetCudaComputeCapability");
    GPU(device_);
    if (!major || !minor) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *major = g->cc_major;
    *minor = g->cc_minor;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *device_, nvmlPciInfo_t *pci) {
    ENTER("nvmlDeviceGetPciInfo_v3");
    GPU(device_);
    if (!pci) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    fill_pci(g->bus_id, g->pci_device_id, pci);
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(void *device_, nvmlMemory_t *m) {
    ENTER("nvmlDeviceGetMemoryInfo");
    GPU(device_);
    if (!m) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *m = (nvmlMemory_t){.total = g->memory, .free = g->memory};
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *device_, nvmlMemory_v2_t *m) {
    ENTER("nvmlDeviceGetMemoryInfo_v2");
    GPU(device_);
    VERSIONED_ARG(m, MEMORY_V2);
    *m = (nvmlMemory_v2_t){.version = MEMORY_V2, .total = g->memory, .free = g->memory};
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetNumaNodeId(void *device_, int *node) {
    ENTER("nvmlDeviceGetNumaNodeId");
    GPU(device_);
    if (!node) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (g->numa < 0) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    *node = g->numa;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetAddressingMode(void *device_, nvmlDeviceAddressingMode_t *mode) {
    ENTER("nvmlDeviceGetAddressingMode");
    GPU(device_);
    VERSIONED_ARG(mode, ADDRESSING_V1);
    if (g->addressing < 0) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    mode->value = (unsigned int)g->addressing;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceSetComputeMode(void *device_, unsigned int mode) {
    ENTER("nvmlDeviceSetComputeMode");
    GPU(device_);
    if (mode == 1) LEAVE(NVML_ERROR_NOT_SUPPORTED); /* EXCLUSIVE_THREAD: removed from current drivers */
    if (mode != 0 && mode != 2 && mode != 3) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    g->compute_mode = (int)mode;
    save_state();
    LEAVE(NVML_SUCCESS);
}

/* ---- MIG ----------------------------------------------------------------------------------- */
nvmlReturn_t nvmlDeviceGetMigMode(void *device_, unsigned int *current, unsigned int *pending) {
    ENTER("nvmlDeviceGetMigMode");
    GPU(device_);
    if (!current || !pending) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    *current = (unsigned int)g->mig_current;
    *pending = (unsigned int)g->mig_pending;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceSetMigMode(void *device_, unsigned int mode, nvmlReturn_t *activationStatus) {
    ENTER("nvmlDeviceSetMigMode");
    GPU(device_);
    if (!activationStatus || mode > 1) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    if (!mode)
        for (int k = 0; k < MAX_GI; k++) if (g->gis[k].used) LEAVE(NVML_ERROR_IN_USE);
    g->mig_pending = (int)mode;
    if (g->processes) *activationStatus = NVML_ERROR_IN_USE; /* pending until the processes are gone */
    else if (g->arch < HOPPER && g->mig_current != (int)mode) *activationStatus = NVML_ERROR_RESET_REQUIRED;
    else { g->mig_current = (int)mode; *activationStatus = NVML_SUCCESS; }
    save_state();
    LEAVE(NVML_SUCCESS);
}

static void fill_gi_profile(const struct profile *p, nvmlGpuInstanceProfileInfo_v2_t *info) {
    unsigned int version = info->version;
    memset(info, 0, sizeof *info);
    info->version = version;
    info->id = (unsigned int)p->id;
    info->isP2pSupported = 0;
    info->sliceCount = (unsigned int)p->slices;
    info->instanceCount = (unsigned int)p->instances;
    info->multiprocessorCount = (unsigned int)p->mps;
    info->copyEngineCount = (unsigned int)p->ce;
    info->decoderCount = (unsigned int)p->dec;
    info->encoderCount = (unsigned int)p->enc;
    info->jpegCount = (unsigned int)p->jpeg;
    info->ofaCount = (unsigned int)p->ofa;
    info->memorySizeMB = p->mem_mb;
    snprintf(info->name, sizeof info->name, "%s", p->name);
}

nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(void *device_, unsigned int profile, nvmlGpuInstanceProfileInfo_v2_t *info) {
    ENTER("nvmlDeviceGetGpuInstanceProfileInfoV");
    GPU(device_);
    if (profile >= 0x12) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    VERSIONED_ARG(info, GI_PROFILE_V2);
    nvmlReturn_t rc = mig_queries(g);
    if (rc) LEAVE(rc);
    for (int i = 0; i < g->nprofiles; i++)
        if ((unsigned int)g->profiles[i].enumv == profile) { fill_gi_profile(&g->profiles[i], info); LEAVE(NVML_SUCCESS); }
    LEAVE(NVML_ERROR_NOT_SUPPORTED);
}

nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoByIdV(void *device_, unsigned int profileId, nvmlGpuInstanceProfileInfo_v2_t *info) {
    ENTER("nvmlDeviceGetGpuInstanceProfileInfoByIdV");
    GPU(device_);
    VERSIONED_ARG(info, GI_PROFILE_V2);
    QUERIED_PROFILE(profileId);
    fill_gi_profile(p, info);
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements_v2(void *device_, unsigned int profileId,
                                                           nvmlGpuInstancePlacement_t *placements, unsigned int *count) {
    ENTER("nvmlDeviceGetGpuInstancePossiblePlacements_v2");
    GPU(device_);
    if (!count) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    QUERIED_PROFILE(profileId);
    if (!placements) { *count = (unsigned int)p->nstarts; LEAVE(NVML_SUCCESS); }
    if (*count < (unsigned int)p->nstarts) { *count = (unsigned int)p->nstarts; LEAVE(NVML_ERROR_INSUFFICIENT_SIZE); }
    for (int i = 0; i < p->nstarts; i++) {
        placements[i].start = (unsigned int)p->starts[i];
        placements[i].size = (unsigned int)p->size;
    }
    *count = (unsigned int)p->nstarts;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetGpuInstanceRemainingCapacity(void *device_, unsigned int profileId, unsigned int *count) {
    ENTER("nvmlDeviceGetGpuInstanceRemainingCapacity");
    GPU(device_);
    if (!count) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    QUERIED_PROFILE(profileId);
    *count = (unsigned int)remaining(g, p);
    LEAVE(NVML_SUCCESS);
}

static int next_gi_id(const struct gpu *g, int start, int size) {
    if (g->mem_slices == 8) {
        if (size == 8) return 0;
        if (size == 2) return 3 + start / 2;
        if (size == 1) return 7 + start;
        if (size == 4) return !g->gis[1].used ? 1 : 2;
    }
    for (int k = 0; k < MAX_GI; k++) if (!g->gis[k].used) return k;
    return -1;
}

nvmlReturn_t nvmlDeviceCreateGpuInstanceWithPlacement(void *device_, unsigned int profileId,
                                                      const nvmlGpuInstancePlacement_t *placement, void **gpuInstance) {
    ENTER("nvmlDeviceCreateGpuInstanceWithPlacement");
    GPU(device_);
    if (!placement || !gpuInstance) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable || !g->mig_current) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    struct profile *p = profile_by_id(g, profileId);
    if (!p || placement->size != (unsigned int)p->size) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    int legal = 0;
    for (int i = 0; i < p->nstarts; i++) if ((unsigned int)p->starts[i] == placement->start) legal = 1;
    if (!legal) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    int mem[8];
    int compute = used_slices(g, mem);
    for (unsigned int s = placement->start; s < placement->start + placement->size && s < 8; s++)
        if (mem[s]) LEAVE(NVML_ERROR_INSUFFICIENT_RESOURCES);
    int existing = 0;
    for (int k = 0; k < MAX_GI; k++) if (g->gis[k].used && g->gis[k].profile_id == p->id) existing++;
    if (existing >= p->instances || compute + p->slices > g->compute_slices) LEAVE(NVML_ERROR_INSUFFICIENT_RESOURCES);
    int id = next_gi_id(g, (int)placement->start, p->size);
    if (id < 0 || id >= MAX_GI || g->gis[id].used) LEAVE(NVML_ERROR_INSUFFICIENT_RESOURCES);
    struct gi *x = &g->gis[id];
    x->used = 1; x->profile_id = p->id; x->start = (int)placement->start; x->size = p->size; x->slices = p->slices;
    for (int c = 0; c < MAX_CI; c++) x->cis[c].used = 0;
    *gpuInstance = &x->h;
    gi_caps(g, id, -1, 1);
    save_state();
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetGpuInstances(void *device_, unsigned int profileId, void **gpuInstances, unsigned int *count) {
    ENTER("nvmlDeviceGetGpuInstances");
    GPU(device_);
    if (!count || !gpuInstances) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable || !g->mig_current) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    if (!profile_by_id(g, profileId)) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    unsigned int n = 0;
    for (int k = 0; k < MAX_GI; k++)
        if (g->gis[k].used && (unsigned int)g->gis[k].profile_id == profileId) gpuInstances[n++] = &g->gis[k].h;
    *count = n;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetGpuInstanceById(void *device_, unsigned int id, void **gpuInstance) {
    ENTER("nvmlDeviceGetGpuInstanceById");
    GPU(device_);
    if (!gpuInstance) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable || !g->mig_current) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    if (id >= MAX_GI || !g->gis[id].used) LEAVE(NVML_ERROR_NOT_FOUND);
    *gpuInstance = &g->gis[id].h;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlGpuInstanceGetInfo(void *gpuInstance, nvmlGpuInstanceInfo_t *info) {
    ENTER("nvmlGpuInstanceGetInfo");
    struct gpu *g;
    struct gi *x = gi_of(gpuInstance, &g);
    if (!x || !info) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    info->device = &g->h;
    info->id = (unsigned int)x->h.gi;
    info->profileId = (unsigned int)x->profile_id;
    info->placement.start = (unsigned int)x->start;
    info->placement.size = (unsigned int)x->size;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlGpuInstanceDestroy(void *gpuInstance) {
    ENTER("nvmlGpuInstanceDestroy");
    struct gpu *g;
    struct gi *x = gi_of(gpuInstance, &g);
    if (!x) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    for (int c = 0; c < MAX_CI; c++) if (x->cis[c].used) LEAVE(NVML_ERROR_IN_USE);
    x->used = 0;
    gi_caps(g, x->h.gi, -1, 0);
    save_state();
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfoV(void *gpuInstance, unsigned int profile, unsigned int engProfile,
                                                           nvmlComputeInstanceProfileInfo_v2_t *info) {
    ENTER("nvmlGpuInstanceGetComputeInstanceProfileInfoV");
    struct gpu *g;
    struct gi *x = gi_of(gpuInstance, &g);
    if (!x || profile >= 7) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    VERSIONED_ARG(info, CI_PROFILE_V2);
    if (engProfile != 0 || CI_ENUM_SLICES[profile] > x->slices) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    struct profile *gp = profile_by_id(g, (unsigned int)x->profile_id);
    int slices = CI_ENUM_SLICES[profile];
    memset(info, 0, sizeof *info);
    info->version = CI_PROFILE_V2;
    info->id = profile;
    info->sliceCount = (unsigned int)slices;
    info->instanceCount = (unsigned int)(x->slices / slices);
    info->multiprocessorCount = gp ? (unsigned int)(gp->mps * slices / x->slices) : 0;
    info->sharedCopyEngineCount = gp ? (unsigned int)gp->ce : 0;
    info->sharedDecoderCount = gp ? (unsigned int)gp->dec : 0;
    info->sharedEncoderCount = gp ? (unsigned int)gp->enc : 0;
    info->sharedJpegCount = gp ? (unsigned int)gp->jpeg : 0;
    info->sharedOfaCount = gp ? (unsigned int)gp->ofa : 0;
    snprintf(info->name, sizeof info->name, "MIG %dc.%s", slices, gp ? gp->name + 4 : "");
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlGpuInstanceCreateComputeInstance(void *gpuInstance, unsigned int profileId, void **computeInstance) {
    ENTER("nvmlGpuInstanceCreateComputeInstance");
    struct gpu *g;
    struct gi *x = gi_of(gpuInstance, &g);
    if (!x || !computeInstance || profileId >= 7) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (x->cis[0].used) LEAVE(NVML_ERROR_INSUFFICIENT_RESOURCES);
    /* This fake models the full-size compute instance only (what nvdra creates). */
    if (x->slices > 8 || (int)profileId != FULL_CI_PROFILE[x->slices]) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    struct ci *c = &x->cis[0];
    c->used = 1;
    c->profile_id = (int)profileId;
    c->processes = 0;
    mig_uuid(g, x->h.gi, 0, x->start, x->size, c->uuid, sizeof c->uuid);
    *computeInstance = &c->h;
    gi_caps(g, x->h.gi, 0, 1);
    save_state();
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlGpuInstanceGetComputeInstanceById(void *gpuInstance, unsigned int id, void **computeInstance) {
    ENTER("nvmlGpuInstanceGetComputeInstanceById");
    struct gpu *g;
    struct gi *x = gi_of(gpuInstance, &g);
    if (!x || !computeInstance) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (id >= MAX_CI || !x->cis[id].used) LEAVE(NVML_ERROR_NOT_FOUND);
    *computeInstance = &x->cis[id].h;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlComputeInstanceGetInfo_v2(void *computeInstance, nvmlComputeInstanceInfo_t *info) {
    ENTER("nvmlComputeInstanceGetInfo_v2");
    struct gpu *g;
    struct gi *x;
    struct ci *c = ci_of(computeInstance, &g, &x);
    if (!c || !info) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    info->device = &g->h;
    info->gpuInstance = &x->h;
    info->id = (unsigned int)c->h.ci;
    info->profileId = (unsigned int)c->profile_id;
    info->placement.start = 0;
    info->placement.size = (unsigned int)x->slices;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlComputeInstanceDestroy(void *computeInstance) {
    ENTER("nvmlComputeInstanceDestroy");
    struct gpu *g;
    struct gi *x;
    struct ci *c = ci_of(computeInstance, &g, &x);
    if (!c) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (c->processes) LEAVE(NVML_ERROR_IN_USE);
    c->used = 0;
    gi_caps(g, x->h.gi, c->h.ci, 0);
    save_state();
    LEAVE(NVML_SUCCESS);
}

static int mig_count(const struct gpu *g) { return g->mig_current ? g->compute_slices : 0; }

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *device_, unsigned int *count) {
    ENTER("nvmlDeviceGetMaxMigDeviceCount");
    GPU(device_);
    if (!count) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    *count = (unsigned int)mig_count(g);
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *device_, unsigned int index, void **migDevice) {
    ENTER("nvmlDeviceGetMigDeviceHandleByIndex");
    GPU(device_);
    if (!migDevice) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    if (index >= (unsigned int)mig_count(g)) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    unsigned int n = 0;
    for (int k = 0; k < MAX_GI; k++)
        for (int c = 0; c < MAX_CI; c++)
            if (g->gis[k].used && g->gis[k].cis[c].used && n++ == index) {
                *migDevice = &g->gis[k].cis[c].mig;
                LEAVE(NVML_SUCCESS);
            }
    LEAVE(NVML_ERROR_NOT_FOUND);
}

/* ---- NVLink and fabric --------------------------------------------------------------------- */
static nvmlReturn_t link_of(struct gpu *g, unsigned int link, struct link **out) {
    if (g->nlinks == 0) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= (unsigned int)g->nlinks) return NVML_ERROR_INVALID_ARGUMENT;
    *out = &g->links[link];
    return NVML_SUCCESS;
}
static int trained_off(const struct gpu *g) { return g->arch < HOPPER && g->mig_current; }
/* In an NVLink query: the GPU of `handle` as `g`, its link number `link` as `l`, and a NULL `out`
 * pointer is NVML_ERROR_INVALID_ARGUMENT (checked after the link, as the real library does). */
#define LINK(handle, link, out)                                             \
    GPU(handle);                                                            \
    struct link *l;                                                         \
    nvmlReturn_t lrc_ = link_of(g, (link), &l);                             \
    if (lrc_) LEAVE(lrc_);                                                  \
    if (!(out)) LEAVE(NVML_ERROR_INVALID_ARGUMENT);

nvmlReturn_t nvmlDeviceGetNvLinkState(void *device_, unsigned int link, unsigned int *isActive) {
    ENTER("nvmlDeviceGetNvLinkState");
    LINK(device_, link, isActive);
    *isActive = (unsigned int)(l->active && !trained_off(g));
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetNvLinkVersion(void *device_, unsigned int link, unsigned int *version) {
    ENTER("nvmlDeviceGetNvLinkVersion");
    LINK(device_, link, version);
    *version = (unsigned int)l->version;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(void *device_, unsigned int link, unsigned int *type) {
    ENTER("nvmlDeviceGetNvLinkRemoteDeviceType");
    LINK(device_, link, type);
    *type = (unsigned int)(l->active && !trained_off(g) ? l->remote_type : 0xFF);
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(void *device_, unsigned int link, nvmlPciInfo_t *pci) {
    ENTER("nvmlDeviceGetNvLinkRemotePciInfo_v2");
    LINK(device_, link, pci);
    if (!l->active || trained_off(g)) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    fill_pci(l->remote_bus, 0, pci);
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfo(void *device_, nvmlGpuFabricInfo_t *info) {
    ENTER("nvmlDeviceGetGpuFabricInfo");
    GPU(device_);
    if (!info) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!g_fabric_supported) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    memcpy(info->clusterUuid, g_fabric.uuid, 16);
    info->status = (nvmlReturn_t)g_fabric.status;
    info->cliqueId = g_fabric.clique;
    info->state = g_fabric.state;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(void *device_, nvmlGpuFabricInfo_v3_t *info) {
    ENTER("nvmlDeviceGetGpuFabricInfoV");
    GPU(device_);
    if (!info) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    int v3 = info->version == FABRIC_V3, v2 = info->version == FABRIC_V2;
    if (!(v3 && g_fabric_version >= 3) && !(v2 && g_fabric_version >= 2)) LEAVE(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (!g_fabric_supported) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    memcpy(info->clusterUuid, g_fabric.uuid, 16);
    info->status = (nvmlReturn_t)g_fabric.status;
    info->cliqueId = g_fabric.clique;
    info->state = g_fabric.state;
    info->healthMask = g_fabric.health_mask;
    if (v3) info->healthSummary = (unsigned char)g_fabric.health_summary;
    LEAVE(NVML_SUCCESS);
}

/* ---- events -------------------------------------------------------------------------------- */
static struct evset *set_of(void *handle) {
    for (int i = 0; i < MAX_SETS; i++) if (handle == &g_sets[i].h && g_sets[i].used) return &g_sets[i];
    return NULL;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(void *device_, unsigned long long *types) {
    ENTER("nvmlDeviceGetSupportedEventTypes");
    GPU(device_);
    if (!types) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    *types = g_events_supported;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlEventSetCreate(void **set) {
    ENTER("nvmlEventSetCreate");
    if (!set) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    for (int i = 0; i < MAX_SETS; i++) {
        if (g_sets[i].used) continue;
        memset(&g_sets[i], 0, sizeof g_sets[i]);
        g_sets[i].h = (struct hdr){K_SET, -1, -1, i};
        g_sets[i].used = 1;
        /* Only events appended after the set was created are delivered. */
        char path[4200];
        snprintf(path, sizeof path, "%s.events", g_path);
        FILE *f = fopen(path, "r");
        if (f) { fseek(f, 0, SEEK_END); g_sets[i].offset = ftell(f); fclose(f); }
        *set = &g_sets[i].h;
        LEAVE(NVML_SUCCESS);
    }
    LEAVE(NVML_ERROR_INSUFFICIENT_RESOURCES);
}

nvmlReturn_t nvmlDeviceRegisterEvents(void *device_, unsigned long long types, void *set) {
    ENTER("nvmlDeviceRegisterEvents");
    GPU(device_);
    struct evset *s = set_of(set);
    if (!s) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    if (!types || (types & ~g_events_supported)) LEAVE(NVML_ERROR_NOT_SUPPORTED);
    s->mask[g->index] |= types;
    LEAVE(NVML_SUCCESS);
}

nvmlReturn_t nvmlEventSetFree(void *set) {
    ENTER("nvmlEventSetFree");
    struct evset *s = set_of(set);
    if (!s) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    s->used = 0;
    LEAVE(NVML_SUCCESS);
}

/* Next event line for this set ("xid|event <gpu> <type> <data> <gi> <ci>" or "lost <gpu>"), else 1. */
static nvmlReturn_t next_event(struct evset *s, nvmlEventData_t *data, int *found) {
    char path[4200], line[256];
    snprintf(path, sizeof path, "%s.events", g_path);
    *found = 0;
    FILE *f = fopen(path, "r");
    if (!f) return NVML_SUCCESS;
    fseek(f, s->offset, SEEK_SET);
    nvmlReturn_t rc = NVML_SUCCESS;
    while (!*found && fgets(line, sizeof line, f)) {
        if (!strchr(line, '\n')) break; /* a line still being written */
        s->offset = ftell(f);
        int gpu, gi = -1, ci = -1;
        unsigned long long type, value;
        if (sscanf(line, "lost %d", &gpu) == 1 && gpu_at(gpu)) {
            g_gpus[gpu].lost = 1;
            save_state();
            if (s->mask[gpu]) { rc = NVML_ERROR_GPU_IS_LOST; *found = 1; }
        } else if (sscanf(line, "event %d %llx %llu %d %d", &gpu, &type, &value, &gi, &ci) >= 3 && gpu_at(gpu) &&
                   (s->mask[gpu] & type)) {
            data->device = &g_gpus[gpu].h;
            data->eventType = type;
            data->eventData = value;
            data->gpuInstanceId = (unsigned int)gi;
            data->computeInstanceId = (unsigned int)ci;
            *found = 1;
        }
    }
    fclose(f);
    return rc;
}

nvmlReturn_t nvmlEventSetWait_v2(void *set, nvmlEventData_t *data, unsigned int timeoutms) {
    ENTER("nvmlEventSetWait_v2");
    struct evset *s = set_of(set);
    if (!s || !data) LEAVE(NVML_ERROR_INVALID_ARGUMENT);
    struct timespec start, now, nap = {0, 10 * 1000 * 1000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int found;
        nvmlReturn_t rc = next_event(s, data, &found);
        if (found) LEAVE(rc);
        clock_gettime(CLOCK_MONOTONIC, &now);
        long waited = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (waited >= (long)timeoutms) LEAVE(NVML_ERROR_TIMEOUT);
        pthread_mutex_unlock(&g_lock);
        nanosleep(&nap, NULL);
        pthread_mutex_lock(&g_lock);
        if (!g_refs || !s->used) LEAVE(NVML_ERROR_UNINITIALIZED);
    }
}
