/* A stand-in for libnvfm.so with the Fabric Manager SDK's C ABI (the nv_fm_agent.h entry points and the
 * nv_fm_types.h struct layouts and version words), for running nvdra's ctypes backend unchanged in CI.
 *
 * Its state is fed by the simulated Fabric Manager: fmConnect reads the file named by FAKE_NVFM_STATE,
 *     mode <FABRIC_MODE 0|1|2>
 *     partition <id> <active 0|1> <physicalId>:<numNvLinksAvailable>:<maxNumNvLinks>:<nvlinkLineRateMBps> ...
 * and it keeps the same rules as nvdra.fabric.SimulatedFabricManager: bare-metal mode answers NOT_SUPPORTED
 * to every partition call; activate needs Shared NVSwitch mode, activate-with-VFs vGPU mode and one VF
 * per GPU; an unknown id is BADPARAM; a partition sharing a GPU with an active one is IN_USE; deactivating
 * an inactive partition is UNINITIALIZED; after a resilient restart (fakeRestart(1)) every partition call
 * answers NOT_CONFIGURED until fmSetActivatedFabricPartitions. Built by a test fixture; never committed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FM_ST_SUCCESS 0
#define FM_ST_BADPARAM -1
#define FM_ST_GENERIC_ERROR -2
#define FM_ST_NOT_SUPPORTED -3
#define FM_ST_UNINITIALIZED -4
#define FM_ST_VERSION_MISMATCH -6
#define FM_ST_IN_USE -7
#define FM_ST_NOT_CONFIGURED -8
#define FM_ST_CONNECTION_NOT_VALID -9
#define MAX_PARTITIONS 64
#define MAX_GPUS 16

typedef struct { unsigned int version; char addressInfo[256]; unsigned int timeoutMs;
                 unsigned int addressIsUnixSocket; int addressType; } fmConnectParams_t;
typedef struct { unsigned int physicalId; char uuid[80]; char pciBusId[32]; unsigned int numNvLinksAvailable;
                 unsigned int maxNumNvLinks; unsigned int nvlinkLineRateMBps; } fmFabricPartitionGpuInfo_t;
typedef struct { unsigned int partitionId; unsigned int isActive; unsigned int numGpus;
                 fmFabricPartitionGpuInfo_t gpuInfo[MAX_GPUS]; } fmFabricPartitionInfo_t;
typedef struct { unsigned int version; unsigned int numPartitions; unsigned int maxNumPartitions;
                 fmFabricPartitionInfo_t partitionInfo[MAX_PARTITIONS]; } fmFabricPartitionList_t;
typedef struct { unsigned int version; unsigned int numPartitions; unsigned int partitionIds[MAX_PARTITIONS]; }
    fmActivatedFabricPartitionList_t;
typedef struct { unsigned int domain, bus, device, function; } fmPciDevice_t;

static int inited, connected, mode, awaiting_list, num_partitions;
static fmFabricPartitionInfo_t table[MAX_PARTITIONS];
static char last_address[256];
static unsigned int last_address_type;
#define HANDLE ((void *)0x5eed)

static int load_state(void) {
    const char *path = getenv("FAKE_NVFM_STATE");
    FILE *f = path ? fopen(path, "r") : NULL;
    char word[32];
    if (!f) return FM_ST_CONNECTION_NOT_VALID;
    num_partitions = 0;
    memset(table, 0, sizeof table);
    while (fscanf(f, "%31s", word) == 1) {
        if (strcmp(word, "mode") == 0) {
            if (fscanf(f, "%d", &mode) != 1) break;
        } else if (strcmp(word, "partition") == 0 && num_partitions < MAX_PARTITIONS) {
            fmFabricPartitionInfo_t *p = &table[num_partitions++];
            if (fscanf(f, "%u %u", &p->partitionId, &p->isActive) != 2) break;
            while (p->numGpus < MAX_GPUS) {
                fmFabricPartitionGpuInfo_t *g = &p->gpuInfo[p->numGpus];
                int c = fgetc(f);
                while (c == ' ' || c == '\t') c = fgetc(f);
                if (c == '\n' || c == EOF) break;
                ungetc(c, f);
                if (fscanf(f, "%u:%u:%u:%u", &g->physicalId, &g->numNvLinksAvailable, &g->maxNumNvLinks,
                           &g->nvlinkLineRateMBps) != 4) break;
                p->numGpus++;
            }
        }
    }
    fclose(f);
    return FM_ST_SUCCESS;
}

static fmFabricPartitionInfo_t *find(unsigned int id) {
    for (int i = 0; i < num_partitions; i++) if (table[i].partitionId == id) return &table[i];
    return NULL;
}

static int shares_gpu(const fmFabricPartitionInfo_t *a, const fmFabricPartitionInfo_t *b) {
    for (unsigned int i = 0; i < a->numGpus; i++)
        for (unsigned int j = 0; j < b->numGpus; j++)
            if (a->gpuInfo[i].physicalId == b->gpuInfo[j].physicalId) return 1;
    return 0;
}

static int check(void *h) {
    if (!inited) return FM_ST_UNINITIALIZED;
    if (h != HANDLE || !connected) return FM_ST_BADPARAM;
    if (mode == 0) return FM_ST_NOT_SUPPORTED;
    if (awaiting_list) return FM_ST_NOT_CONFIGURED;
    return FM_ST_SUCCESS;
}

int fmLibInit(void) { if (inited) return FM_ST_IN_USE; inited = 1; return FM_ST_SUCCESS; }
int fmLibShutdown(void) { if (!inited) return FM_ST_UNINITIALIZED; inited = 0; return FM_ST_SUCCESS; }

int fmConnect(fmConnectParams_t *p, void **handle) {
    int ret;
    if (!inited) return FM_ST_UNINITIALIZED;
    if (!p || !handle) return FM_ST_BADPARAM;
    if (p->version != (sizeof(fmConnectParams_t) | (2u << 24))) return FM_ST_VERSION_MISMATCH;
    if (strcmp(p->addressInfo, "/nonexistent") == 0) return FM_ST_CONNECTION_NOT_VALID;
    strncpy(last_address, p->addressInfo, sizeof last_address - 1);
    last_address_type = (unsigned int)p->addressType;
    if (!connected && (ret = load_state()) != FM_ST_SUCCESS) return ret;
    connected = 1;
    *handle = HANDLE;
    return FM_ST_SUCCESS;
}

int fmDisconnect(void *h) { return h == HANDLE ? FM_ST_SUCCESS : FM_ST_BADPARAM; }

int fmGetSupportedFabricPartitions(void *h, fmFabricPartitionList_t *l) {
    int ret = check(h);
    if (ret != FM_ST_SUCCESS) return ret;
    if (!l) return FM_ST_BADPARAM;
    if (l->version != (sizeof(fmFabricPartitionList_t) | (1u << 24))) return FM_ST_VERSION_MISMATCH;
    memset(l->partitionInfo, 0, sizeof l->partitionInfo);
    l->numPartitions = (unsigned int)num_partitions;
    l->maxNumPartitions = MAX_PARTITIONS;
    memcpy(l->partitionInfo, table, sizeof(fmFabricPartitionInfo_t) * (size_t)num_partitions);
    return FM_ST_SUCCESS;
}

static int activate(void *h, unsigned int id, int needs_mode, int num_vfs) {
    int ret = check(h);
    fmFabricPartitionInfo_t *p;
    if (ret != FM_ST_SUCCESS) return ret;
    if (mode != needs_mode) return FM_ST_NOT_SUPPORTED;
    if (!(p = find(id))) return FM_ST_BADPARAM;
    if (num_vfs >= 0 && (unsigned int)num_vfs != p->numGpus) return FM_ST_BADPARAM;
    for (int i = 0; i < num_partitions; i++)
        if (table[i].isActive && shares_gpu(&table[i], p)) return FM_ST_IN_USE;
    p->isActive = 1;
    return FM_ST_SUCCESS;
}

int fmActivateFabricPartition(void *h, unsigned int id) { return activate(h, id, 1, -1); }

int fmActivateFabricPartitionWithVFs(void *h, unsigned int id, fmPciDevice_t *vfs, unsigned int n) {
    if (n && !vfs) return FM_ST_BADPARAM;
    return activate(h, id, 2, (int)n);
}

int fmDeactivateFabricPartition(void *h, unsigned int id) {
    int ret = check(h);
    fmFabricPartitionInfo_t *p;
    if (ret != FM_ST_SUCCESS) return ret;
    if (!(p = find(id))) return FM_ST_BADPARAM;
    if (!p->isActive) return FM_ST_UNINITIALIZED;
    p->isActive = 0;
    return FM_ST_SUCCESS;
}

int fmSetActivatedFabricPartitions(void *h, fmActivatedFabricPartitionList_t *l) {
    if (!inited) return FM_ST_UNINITIALIZED;
    if (h != HANDLE || !connected || !l) return FM_ST_BADPARAM;
    if (mode == 0) return FM_ST_NOT_SUPPORTED;
    if (l->version != (sizeof(fmActivatedFabricPartitionList_t) | (1u << 24))) return FM_ST_VERSION_MISMATCH;
    if (l->numPartitions > MAX_PARTITIONS) return FM_ST_BADPARAM;
    for (unsigned int i = 0; i < l->numPartitions; i++) {
        if (!find(l->partitionIds[i])) return FM_ST_BADPARAM;
        for (unsigned int j = 0; j < i; j++) if (l->partitionIds[j] == l->partitionIds[i]) return FM_ST_BADPARAM;
    }
    for (int i = 0; i < num_partitions; i++) table[i].isActive = 0;
    for (unsigned int i = 0; i < l->numPartitions; i++) find(l->partitionIds[i])->isActive = 1;
    awaiting_list = 0;
    return FM_ST_SUCCESS;
}

/* Test hooks (not SDK entry points): the daemon restarting, and what the last connect asked for. */
void fakeRestart(int resilient) {
    if (resilient && mode != 0) { awaiting_list = 1; return; }
    for (int i = 0; i < num_partitions; i++) table[i].isActive = 0;
    awaiting_list = 0;
}
void fakeReset(void) { connected = 0; awaiting_list = 0; num_partitions = 0; inited = 0; }
const char *fakeLastAddress(void) { return last_address; }
unsigned int fakeLastAddressType(void) { return last_address_type; }
