/*
 * A fake libnvidia-ml.so.1 for tests: the real nvidia-ml-py bindings load it by name from
 * LD_LIBRARY_PATH and drive it exactly as they would drive the driver's library.
 *
 * Devices come from the JSON file named by FAKE_NVML_CONFIG:
 *
 *   {"init_error": 0,                        NVML return code of nvmlInitWithFlags (0 = success)
 *    "missing": ["nvmlDeviceGetNumaNodeId"],  these return NVML_ERROR_FUNCTION_NOT_FOUND
 *    "devices": [{"uuid": "GPU-...", "name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920,
 *                 "numa": 0, "bus_id": "00000000:07:00.0", "cc": [8, 0], "switch": 1,
 *                 "mig": 1, "mig_devices": [{"uuid": "MIG-...", "name": "... MIG 1g.10gb", "memory_mib": 9728,
 *                                             "gi": 9, "ci": 0, "placement": [6, 1]}],  GI/CI ids, GI placement
 *                 "nvlinks": ["00000000:0F:00.0", ...],   remote bus id of each active link
 *                 "lost": false,                            true: memory queries say GPU_IS_LOST
 *                 "lost_after": 1,                          the first N memory/utilization queries answer, later ones GPU_IS_LOST
 *                 "handle_error": 15, "uuid_error": 4, "memory_error": 3,   NVML codes those calls return (0 = answer)
 *                 "used_mib": 1024, "util": [37, 12], "power_mw": 215000, "temp_c": 61}],   usage figures
 *    "xid_events": [{"uuid": "GPU-...", "xid": 79}]}     delivered in order by nvmlEventSetWait_v2
 *
 * Two-GPU pairs sharing "switch" get NVML_TOPOLOGY_SINGLE, same "numa" NVML_TOPOLOGY_NODE, else SYSTEM.
 * Unlike the driver, an empty event queue waits at most 50 ms before NVML_ERROR_TIMEOUT (fast tests).
 *
 * Compiling with -DFAKE_OLD_DRIVER leaves out the symbols an old driver lacks
 * (nvmlDeviceGetNumaNodeId, nvmlDeviceGetCudaComputeCapability), so pynvml's own symbol lookup fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvmlReturn_t;
enum { OK = 0, UNINIT = 1, INVALID = 2, NOT_SUPPORTED = 3, NOT_FOUND = 6, INSUFFICIENT = 7, TIMEOUT = 10,
       FN_NOT_FOUND = 13, GPU_LOST = 15, UNKNOWN = 999 };

/* ---------------------------------------------------------------- a minimal JSON reader */
typedef struct jv { int t; double n; char *s; struct jv **v; char **k; int len; } jv; /* t: 0 null 1 bool 2 num 3 str 4 arr 5 obj */
static const char *P;
static void ws(void) { while (*P == ' ' || *P == '\n' || *P == '\t' || *P == '\r') P++; }
static jv *parse(void);
static char *pstr(void) {
  char *out = malloc(strlen(P) + 1), *o = out;
  P++;
  while (*P && *P != '"') { if (*P == '\\' && P[1]) P++; *o++ = *P++; }
  if (*P == '"') P++;
  *o = 0;
  return out;
}
static jv *parse(void) {
  jv *j = calloc(1, sizeof(jv));
  ws();
  if (*P == '{' || *P == '[') {
    int obj = *P == '{';
    j->t = obj ? 5 : 4; P++; ws();
    while (*P && *P != '}' && *P != ']') {
      j->v = realloc(j->v, sizeof(jv *) * (j->len + 1));
      j->k = realloc(j->k, sizeof(char *) * (j->len + 1));
      j->k[j->len] = NULL;
      if (obj) { ws(); j->k[j->len] = pstr(); ws(); if (*P == ':') P++; }
      j->v[j->len++] = parse(); ws();
      if (*P == ',') { P++; ws(); }
    }
    if (*P) P++;
  } else if (*P == '"') { j->t = 3; j->s = pstr(); }
  else if (!strncmp(P, "true", 4)) { j->t = 1; j->n = 1; P += 4; }
  else if (!strncmp(P, "false", 5)) { j->t = 1; P += 5; }
  else if (!strncmp(P, "null", 4)) { P += 4; }
  else { char *end; j->t = 2; j->n = strtod(P, &end); P = end; }
  return j;
}
static jv *get(jv *o, const char *key) {
  if (!o || o->t != 5) return NULL;
  for (int i = 0; i < o->len; i++) if (!strcmp(o->k[i], key)) return o->v[i];
  return NULL;
}
static double num(jv *o, const char *key, double dflt) { jv *x = get(o, key); return x && (x->t == 2 || x->t == 1) ? x->n : dflt; }
static const char *str(jv *o, const char *key, const char *dflt) { jv *x = get(o, key); return x && x->t == 3 ? x->s : dflt; }

/* ---------------------------------------------------------------- state */
typedef struct dev { jv *spec; struct dev *parent; struct dev *migs; int nmig; int index; int queries; } dev;
static jv *CFG;
static dev *DEVS;
static int NDEV, EVENT_POS;

static int missing(const char *fn) {
  jv *m = get(CFG, "missing");
  for (int i = 0; m && i < m->len; i++) if (m->v[i]->t == 3 && !strcmp(m->v[i]->s, fn)) return 1;
  return 0;
}
#define MISSING() do { if (!CFG) return UNINIT; if (missing(__func__)) return FN_NOT_FOUND; } while (0)

static void load(void) {
  const char *path = getenv("FAKE_NVML_CONFIG");
  FILE *f = path ? fopen(path, "r") : NULL;
  char *text = calloc(1, 1 << 20);
  if (f) { fread(text, 1, (1 << 20) - 1, f); fclose(f); }
  P = *text ? text : "{}";
  CFG = parse();
  jv *devs = get(CFG, "devices");
  NDEV = devs && devs->t == 4 ? devs->len : 0;
  DEVS = calloc(NDEV + 1, sizeof(dev));
  for (int i = 0; i < NDEV; i++) {
    DEVS[i].spec = devs->v[i];
    DEVS[i].index = i;
    jv *migs = get(devs->v[i], "mig_devices");
    DEVS[i].nmig = migs && migs->t == 4 ? migs->len : 0;
    DEVS[i].migs = calloc(DEVS[i].nmig + 1, sizeof(dev));
    for (int m = 0; m < DEVS[i].nmig; m++) { DEVS[i].migs[m].spec = migs->v[m]; DEVS[i].migs[m].parent = &DEVS[i]; DEVS[i].migs[m].index = m; }
  }
}

static nvmlReturn_t copy(char *buf, unsigned int size, const char *value) {
  if (strlen(value) + 1 > size) return INSUFFICIENT;
  strcpy(buf, value);
  return OK;
}

/* ---------------------------------------------------------------- init and errors */
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
  (void)flags;
  if (!CFG) load();
  return (nvmlReturn_t)num(CFG, "init_error", 0);
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) { return OK; }
const char *nvmlErrorString(nvmlReturn_t r) { static char buf[64]; snprintf(buf, sizeof buf, "fake NVML error %d", r); return buf; }
nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned int size) { MISSING(); return copy(buf, size, "999.99-fake"); }

/* ---------------------------------------------------------------- devices */
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { MISSING(); *count = NDEV; return OK; }
/* a GPU that stops answering: "lost" from the start, or after "lost_after" memory/utilization queries */
static int lost(dev *d) {
  if (num(d->spec, "lost", 0)) return 1;
  return get(d->spec, "lost_after") && d->queries++ >= (int)num(d->spec, "lost_after", 0);
}
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, dev **out) {
  MISSING();
  if (i >= (unsigned)NDEV) return INVALID;
  if (num(DEVS[i].spec, "handle_error", 0)) return (nvmlReturn_t)num(DEVS[i].spec, "handle_error", 0);
  *out = &DEVS[i];
  return OK;
}
nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, dev **out) {
  MISSING();
  for (int i = 0; i < NDEV; i++) if (!strcmp(str(DEVS[i].spec, "uuid", ""), uuid)) { *out = &DEVS[i]; return OK; }
  return NOT_FOUND;
}
nvmlReturn_t nvmlDeviceGetIndex(dev *d, unsigned int *i) { MISSING(); *i = d->index; return OK; }
nvmlReturn_t nvmlDeviceGetUUID(dev *d, char *buf, unsigned int size) {
  MISSING();
  if (num(d->spec, "uuid_error", 0)) return (nvmlReturn_t)num(d->spec, "uuid_error", 0);
  return copy(buf, size, str(d->spec, "uuid", "GPU-unknown"));
}
nvmlReturn_t nvmlDeviceGetName(dev *d, char *buf, unsigned int size) { MISSING(); return copy(buf, size, str(d->spec, "name", "NVIDIA Fake GPU")); }

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
nvmlReturn_t nvmlDeviceGetMemoryInfo(dev *d, nvmlMemory_t *m) {
  MISSING();
  if (num(d->spec, "memory_error", 0)) return (nvmlReturn_t)num(d->spec, "memory_error", 0);
  if (lost(d)) return GPU_LOST;
  m->total = (unsigned long long)num(d->spec, "memory_mib", 16384) * 1024 * 1024;
  m->used = (unsigned long long)num(d->spec, "used_mib", 0) * 1024 * 1024;
  m->free = m->total - m->used;
  return OK;
}

/* usage (the vGPU monitor's host figures): "util": [gpu %, memory %], "power_mw", "temp_c"; absent = NOT_SUPPORTED */
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
nvmlReturn_t nvmlDeviceGetUtilizationRates(dev *d, nvmlUtilization_t *u) {
  MISSING();
  if (lost(d)) return GPU_LOST;
  jv *util = get(d->spec, "util");
  if (!util || util->t != 4 || util->len != 2) return NOT_SUPPORTED;
  u->gpu = (unsigned int)util->v[0]->n;
  u->memory = (unsigned int)util->v[1]->n;
  return OK;
}
nvmlReturn_t nvmlDeviceGetPowerUsage(dev *d, unsigned int *mw) {
  MISSING();
  if (!get(d->spec, "power_mw")) return NOT_SUPPORTED;
  *mw = (unsigned int)num(d->spec, "power_mw", 0);
  return OK;
}
nvmlReturn_t nvmlDeviceGetTemperature(dev *d, int sensor, unsigned int *c) {
  MISSING();
  if (sensor != 0 || !get(d->spec, "temp_c")) return NOT_SUPPORTED;
  *c = (unsigned int)num(d->spec, "temp_c", 0);
  return OK;
}

#ifndef FAKE_OLD_DRIVER
nvmlReturn_t nvmlDeviceGetNumaNodeId(dev *d, int *node) {
  MISSING();
  if (!get(d->spec, "numa")) return NOT_SUPPORTED;
  *node = (int)num(d->spec, "numa", 0);
  return OK;
}
nvmlReturn_t nvmlDeviceGetCudaComputeCapability(dev *d, int *major, int *minor) {
  MISSING();
  jv *cc = get(d->spec, "cc");
  if (!cc || cc->t != 4 || cc->len != 2) return NOT_SUPPORTED;
  *major = (int)cc->v[0]->n;
  *minor = (int)cc->v[1]->n;
  return OK;
}
#endif

typedef struct { char busIdLegacy[16]; unsigned int domain, bus, device, pciDeviceId, pciSubSystemId; char busId[32]; } nvmlPciInfo_t;
static void fill_pci(nvmlPciInfo_t *p, const char *bus_id) {
  memset(p, 0, sizeof *p);
  snprintf(p->busId, sizeof p->busId, "%s", bus_id);
  snprintf(p->busIdLegacy, sizeof p->busIdLegacy, "%s", bus_id);
}
nvmlReturn_t nvmlDeviceGetPciInfo_v3(dev *d, nvmlPciInfo_t *p) { MISSING(); fill_pci(p, str(d->spec, "bus_id", "00000000:00:00.0")); return OK; }

/* ---------------------------------------------------------------- MIG */
nvmlReturn_t nvmlDeviceGetMigMode(dev *d, unsigned int *current, unsigned int *pending) {
  MISSING();
  if (!get(d->spec, "mig")) return NOT_SUPPORTED;
  *current = *pending = (unsigned int)num(d->spec, "mig", 0);
  return OK;
}
nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(dev *d, unsigned int *count) { MISSING(); *count = d->nmig; return OK; }
nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(dev *d, unsigned int i, dev **out) {
  MISSING();
  if (i >= (unsigned)d->nmig) return NOT_FOUND;
  *out = &d->migs[i];
  return OK;
}
/* A MIG instance's GPU-instance and compute-instance ids and its GPU-instance placement come from its
 * "gi", "ci" and "placement": [start, size] (an instance without "gi" answers NOT_SUPPORTED, as a driver
 * without MIG management would). nvmlDeviceGetGpuInstanceById hands out the MIG device itself as the
 * (opaque) GPU-instance handle, so nvmlGpuInstanceGetInfo reads the same spec. */
typedef struct { unsigned int start, size; } nvmlGpuInstancePlacement_t;
typedef struct { dev *device; unsigned int id, profileId; nvmlGpuInstancePlacement_t placement; } nvmlGpuInstanceInfo_t;
nvmlReturn_t nvmlDeviceGetGpuInstanceId(dev *d, unsigned int *id) {
  MISSING();
  if (!d->parent) return INVALID;
  if (!get(d->spec, "gi")) return NOT_SUPPORTED;
  *id = (unsigned int)num(d->spec, "gi", 0);
  return OK;
}
nvmlReturn_t nvmlDeviceGetComputeInstanceId(dev *d, unsigned int *id) {
  MISSING();
  if (!d->parent) return INVALID;
  if (!get(d->spec, "ci")) return NOT_SUPPORTED;
  *id = (unsigned int)num(d->spec, "ci", 0);
  return OK;
}
nvmlReturn_t nvmlDeviceGetGpuInstanceById(dev *d, unsigned int id, dev **out) {
  MISSING();
  if (d->parent) return INVALID;
  for (int m = 0; m < d->nmig; m++)
    if (get(d->migs[m].spec, "gi") && (unsigned int)num(d->migs[m].spec, "gi", 0) == id) { *out = &d->migs[m]; return OK; }
  return NOT_FOUND;
}
nvmlReturn_t nvmlGpuInstanceGetInfo(dev *gi, nvmlGpuInstanceInfo_t *info) {
  MISSING();
  jv *placement = get(gi->spec, "placement");
  if (!placement || placement->t != 4 || placement->len != 2) return NOT_SUPPORTED;
  memset(info, 0, sizeof *info);
  info->device = gi->parent;
  info->id = (unsigned int)num(gi->spec, "gi", 0);
  info->placement.start = (unsigned int)placement->v[0]->n;
  info->placement.size = (unsigned int)placement->v[1]->n;
  return OK;
}

/* ---------------------------------------------------------------- topology */
nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(dev *a, dev *b, int *level) {
  MISSING();
  if (get(a->spec, "switch") && num(a->spec, "switch", -1) == num(b->spec, "switch", -2)) *level = 10;  /* SINGLE */
  else if (num(a->spec, "numa", 0) == num(b->spec, "numa", 0)) *level = 40;                          /* NODE */
  else *level = 50;                                                                                    /* SYSTEM */
  return OK;
}
nvmlReturn_t nvmlDeviceGetNvLinkState(dev *d, unsigned int link, unsigned int *active) {
  MISSING();
  jv *links = get(d->spec, "nvlinks");
  if (!links || links->t != 4) return NOT_SUPPORTED;
  if (link >= (unsigned)links->len) return INVALID;
  *active = 1;
  return OK;
}
nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(dev *d, unsigned int link, nvmlPciInfo_t *p) {
  MISSING();
  jv *links = get(d->spec, "nvlinks");
  if (!links || links->t != 4) return NOT_SUPPORTED;
  if (link >= (unsigned)links->len) return INVALID;
  fill_pci(p, links->v[link]->s ? links->v[link]->s : "");
  return OK;
}

/* ---------------------------------------------------------------- events (XIDs) */
typedef struct { dev *device; unsigned long long eventType, eventData; unsigned int gpuInstanceId, computeInstanceId; } nvmlEventData_t;
static int EVENT_SET;
nvmlReturn_t nvmlEventSetCreate(void **set) { MISSING(); *set = &EVENT_SET; return OK; }
nvmlReturn_t nvmlEventSetFree(void *set) { (void)set; return OK; }
nvmlReturn_t nvmlDeviceGetSupportedEventTypes(dev *d, unsigned long long *types) { (void)d; MISSING(); *types = 0x8; return OK; }
nvmlReturn_t nvmlDeviceRegisterEvents(dev *d, unsigned long long types, void *set) { (void)d; (void)types; (void)set; MISSING(); return OK; }
nvmlReturn_t nvmlEventSetWait_v2(void *set, nvmlEventData_t *data, unsigned int timeout_ms) {
  (void)set;
  MISSING();
  jv *events = get(CFG, "xid_events");
  if (events && events->t == 4 && EVENT_POS < events->len) {
    jv *e = events->v[EVENT_POS++];
    dev *d = NULL;
    if (nvmlDeviceGetHandleByUUID(str(e, "uuid", ""), &d) != OK) return UNKNOWN;
    memset(data, 0, sizeof *data);
    data->device = d;
    data->eventType = 0x8;  /* nvmlEventTypeXidCriticalError */
    data->eventData = (unsigned long long)num(e, "xid", 0);
    data->gpuInstanceId = data->computeInstanceId = 0xFFFFFFFF;
    return OK;
  }
  usleep((timeout_ms > 50 ? 50 : timeout_ms) * 1000);
  return TIMEOUT;
}
