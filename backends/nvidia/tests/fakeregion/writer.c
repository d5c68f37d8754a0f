/*
 * Writes a HAMi-core shared region file the way libvgpu.so lays it out, from the struct declarations
 * of Project-HAMi/HAMi-core src/multiprocess/multiprocess_memory_limit.h at three points of its history:
 *
 *   -DLAYOUT_V0   commit 7a9c88b (no version fields; the layout HAMi's pkg/monitor/nvidia/v0 reads)
 *   -DLAYOUT_V11  commit 9b46404 (MAJOR 1, MINOR 1: versions, unused tails, last_kernel_time)
 *   (default)     master (MAJOR 1, MINOR 2: seqlock in a slot's unused, sem_postinit at the end)
 *
 * Only the declarations are copied (the _Atomic qualifiers dropped: same size and alignment); the
 * compiler does the layout. Usage: writer FILE DEVICES PROCS SEED PRIORITY [UUID...]
 * Fills every field from SEED, prints the figures the monitor should read (sums over slots whose status
 * is not 0, as HAMi's spec.go does) as JSON, then sizeof and offsetof of the fields the reader uses.
 */
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUDA_DEVICE_MAX_COUNT 16
#define SHARED_REGION_MAX_PROCESS_NUM 1024
#define MULTIPROCESS_SHARED_REGION_MAGIC_FLAG 19920718

#ifdef LAYOUT_V0
typedef struct { uint64_t context_size, module_size, data_size, offset, total; } device_memory_t;
typedef struct { uint64_t dec_util, enc_util, sm_util; } device_util_t;
typedef struct {
    int32_t pid; int32_t hostpid;
    device_memory_t used[CUDA_DEVICE_MAX_COUNT];
    uint64_t monitorused[CUDA_DEVICE_MAX_COUNT];
    device_util_t device_util[CUDA_DEVICE_MAX_COUNT];
    int32_t status;
} shrreg_proc_slot_t;
typedef char uuid[96];
typedef struct {
    int32_t initialized_flag;
    int32_t sm_init_flag;
    size_t owner_pid;
    sem_t sem;
    uint64_t num;
    uuid uuids[CUDA_DEVICE_MAX_COUNT];
    uint64_t limit[CUDA_DEVICE_MAX_COUNT];
    uint64_t sm_limit[CUDA_DEVICE_MAX_COUNT];
    shrreg_proc_slot_t procs[SHARED_REGION_MAX_PROCESS_NUM];
    int proc_num;
    int utilization_switch;
    int recent_kernel;
    int priority;
} shared_region_t;
#else
typedef struct { uint64_t context_size, module_size, data_size, offset, total; uint64_t unused[3]; } device_memory_t;
typedef struct { uint64_t dec_util, enc_util, sm_util; uint64_t unused[3]; } device_util_t;
typedef struct {
    int32_t pid; int32_t hostpid;
    device_memory_t used[CUDA_DEVICE_MAX_COUNT];
    uint64_t monitorused[CUDA_DEVICE_MAX_COUNT];
    device_util_t device_util[CUDA_DEVICE_MAX_COUNT];
    int32_t status;
#ifdef LAYOUT_V11
    uint64_t unused[3];
#else
    uint64_t seqlock;
    uint64_t unused[2];
#endif
} shrreg_proc_slot_t;
typedef char uuid[96];
typedef struct {
    int32_t initialized_flag;
    uint32_t major_version;
    uint32_t minor_version;
    int32_t sm_init_flag;
    size_t owner_pid;
    sem_t sem;
    uint64_t device_num;
    uuid uuids[CUDA_DEVICE_MAX_COUNT];
    uint64_t limit[CUDA_DEVICE_MAX_COUNT];
    uint64_t sm_limit[CUDA_DEVICE_MAX_COUNT];
    shrreg_proc_slot_t procs[SHARED_REGION_MAX_PROCESS_NUM];
    int proc_num;
    int utilization_switch;
    int recent_kernel;
    int priority;
    uint64_t last_kernel_time;
#ifdef LAYOUT_V11
    uint64_t unused[4];
#else
    sem_t sem_postinit;
#endif
} shared_region_t;
#define num device_num
#endif

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: writer FILE DEVICES PROCS SEED PRIORITY [UUID...]\n"); return 2; }
    int devices = atoi(argv[2]), procs = atoi(argv[3]);
    uint64_t seed = strtoull(argv[4], NULL, 10);
    shared_region_t *r = calloc(1, sizeof *r);
    memset(r, 0xA5, sizeof *r); /* garbage in padding and unused fields: the reader must not see it */
    r->initialized_flag = MULTIPROCESS_SHARED_REGION_MAGIC_FLAG;
#ifndef LAYOUT_V0
    r->major_version = 1;
#ifdef LAYOUT_V11
    r->minor_version = 1;
#else
    r->minor_version = 2;
#endif
    r->last_kernel_time = 1700000000 + seed;
#endif
    r->sm_init_flag = 1;
    r->owner_pid = 4242;
    r->num = (uint64_t)devices;
    memset(r->uuids, 0, sizeof r->uuids);
    for (int i = 0; i < devices && 6 + i < argc; i++) strncpy(r->uuids[i], argv[6 + i], 95);
    for (int i = 0; i < CUDA_DEVICE_MAX_COUNT; i++) { r->limit[i] = (uint64_t)(i + 1) * 1073741824ULL + seed; r->sm_limit[i] = 10 + i; }
    r->proc_num = procs;
    r->utilization_switch = 0;
    r->recent_kernel = 0;
    r->priority = atoi(argv[5]);
    printf("{\"devices\": [");
    for (int d = 0; d < devices; d++) {
        uint64_t used = 0, ctx = 0, mod = 0, buf = 0, sm = 0;
        for (int p = 0; p < procs; p++) {
            shrreg_proc_slot_t *s = &r->procs[p];
            s->pid = 100 + p; s->hostpid = 9000 + p;
            s->status = (p % 3 == 2) ? 0 : 1; /* every third slot is a process that left */
            device_memory_t *m = &s->used[d];
            m->context_size = 1000003ULL * (p + 1) + d + seed;
            m->module_size = 7000ULL * (d + 1) + p;
            m->data_size = 5ULL * 1048576ULL * (p + 1) * (d + 1) + seed;
            m->offset = 11;
            m->total = m->context_size + m->module_size + m->data_size;
            s->monitorused[d] = m->total;
            s->device_util[d].sm_util = (uint64_t)(3 * (p + 1) + d);
            s->device_util[d].dec_util = 1; s->device_util[d].enc_util = 2;
            if (s->status) { used += m->total; ctx += m->context_size; mod += m->module_size; buf += m->data_size; sm += s->device_util[d].sm_util; }
        }
        printf("%s{\"index\": %d, \"limit\": %llu, \"sm_limit\": %llu, \"used\": %llu, \"context\": %llu, \"module\": %llu, \"buffer\": %llu, \"sm_util\": %llu}",
               d ? ", " : "", d, (unsigned long long)r->limit[d], (unsigned long long)r->sm_limit[d], (unsigned long long)used,
               (unsigned long long)ctx, (unsigned long long)mod, (unsigned long long)buf, (unsigned long long)sm);
    }
#ifdef LAYOUT_V0
    unsigned long long lkt = 0;
#else
    unsigned long long lkt = r->last_kernel_time;
#endif
    printf("], \"priority\": %d, \"last_kernel_time\": %llu, \"sizeof\": %zu, \"offsets\": {\"num\": %zu, \"uuids\": %zu, \"limit\": %zu, "
           "\"procs\": %zu, \"slot\": %zu, \"proc_num\": %zu, \"utilization_switch\": %zu, \"recent_kernel\": %zu, \"priority\": %zu}}\n",
           r->priority, lkt, sizeof(shared_region_t), offsetof(shared_region_t, num), offsetof(shared_region_t, uuids),
           offsetof(shared_region_t, limit), offsetof(shared_region_t, procs), sizeof(shrreg_proc_slot_t),
           offsetof(shared_region_t, proc_num), offsetof(shared_region_t, utilization_switch),
           offsetof(shared_region_t, recent_kernel), offsetof(shared_region_t, priority));
    FILE *f = fopen(argv[1], "wb");
    if (!f || fwrite(r, sizeof *r, 1, f) != 1) { perror(argv[1]); return 1; }
    fclose(f);
    return 0;
}
