/* A stand-in for libnvfm.so with the SDK's ABI (nv_fm_agent.h / nv_fm_types.h layouts), for testing the
 * ctypes backend: two partitions (0 = modules 1-2, 1 = module 1), Shared NVSwitch rules, and the version
 * words checked exactly as Fabric Manager checks them. */
#include <string.h>

typedef struct { unsigned int version; char addressInfo[256]; unsigned int timeoutMs;
                 unsigned int addressIsUnixSocket; int addressType; } fmConnectParams_t;
typedef struct { unsigned int physicalId; char uuid[80]; char pciBusId[32]; unsigned int numNvLinksAvailable;
                 unsigned int maxNumNvLinks; unsigned int nvlinkLineRateMBps; } fmFabricPartitionGpuInfo_t;
typedef struct { unsigned int partitionId; unsigned int isActive; unsigned int numGpus;
                 fmFabricPartitionGpuInfo_t gpuInfo[16]; } fmFabricPartitionInfo_t;
typedef struct { unsigned int version; unsigned int numPartitions; unsigned int maxNumPartitions;
                 fmFabricPartitionInfo_t partitionInfo[64]; } fmFabricPartitionList_t;
typedef struct { unsigned int version; unsigned int numPartitions; unsigned int partitionIds[64]; }
    fmActivatedFabricPartitionList_t;
typedef struct { unsigned int domain, bus, device, function; } fmPciDevice_t;

static int inited, active[2];
static char last_address[256];
static unsigned int last_address_type;

int fmLibInit(void) { if (inited) return -7; inited = 1; return 0; }
int fmLibShutdown(void) { if (!inited) return -4; inited = 0; return 0; }
int fmConnect(fmConnectParams_t *p, void **handle) {
    if (!inited) return -4;
    if (p->version != (sizeof(fmConnectParams_t) | (2u << 24))) return -6;
    if (strcmp(p->addressInfo, "/nonexistent") == 0) return -9;
    strncpy(last_address, p->addressInfo, sizeof last_address - 1);
    last_address_type = (unsigned int)p->addressType;
    *handle = (void *)0x1;
    return 0;
}
int fmDisconnect(void *h) { return h ? 0 : -1; }
int fmGetSupportedFabricPartitions(void *h, fmFabricPartitionList_t *l) {
    if (!h) return -1;
    if (l->version != (sizeof(fmFabricPartitionList_t) | (1u << 24))) return -6;
    memset(l->partitionInfo, 0, sizeof l->partitionInfo);
    l->numPartitions = 2; l->maxNumPartitions = 64;
    for (unsigned int p = 0; p < 2; p++) {
        fmFabricPartitionInfo_t *info = &l->partitionInfo[p];
        info->partitionId = p; info->isActive = (unsigned int)active[p]; info->numGpus = p == 0 ? 2 : 1;
        for (unsigned int g = 0; g < info->numGpus; g++) {
            info->gpuInfo[g].physicalId = g + 1;
            info->gpuInfo[g].numNvLinksAvailable = p == 0 ? 18 : 0;
            info->gpuInfo[g].maxNumNvLinks = 18;
            info->gpuInfo[g].nvlinkLineRateMBps = 26562;
        }
    }
    strcpy(l->partitionInfo[0].gpuInfo[0].pciBusId, "00000000:1B:00.0");
    return 0;
}
int fmActivateFabricPartition(void *h, unsigned int id) {
    if (!h || id > 1) return -1;
    if (active[0] || active[id]) return -7;
    if (id == 0 && active[1]) return -7;
    active[id] = 1; return 0;
}
int fmActivateFabricPartitionWithVFs(void *h, unsigned int id, fmPciDevice_t *vfs, unsigned int n) {
    (void)vfs; (void)n; (void)h; (void)id; return -3;
}
int fmDeactivateFabricPartition(void *h, unsigned int id) {
    if (!h || id > 1) return -1;
    if (!active[id]) return -4;
    active[id] = 0; return 0;
}
int fmSetActivatedFabricPartitions(void *h, fmActivatedFabricPartitionList_t *l) {
    if (!h) return -1;
    if (l->version != (sizeof(fmActivatedFabricPartitionList_t) | (1u << 24))) return -6;
    active[0] = active[1] = 0;
    for (unsigned int i = 0; i < l->numPartitions; i++) { if (l->partitionIds[i] > 1) return -1;
                                                          active[l->partitionIds[i]] = 1; }
    return 0;
}
const char *fakeLastAddress(void) { return last_address; }
unsigned int fakeLastAddressType(void) { return last_address_type; }
