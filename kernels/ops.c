// ortq's custom ops. SwiGLUGrad(g, u, dh) → (dg, du) is the gradient of
// h = silu(g)·u for float16 tensors of one shape: a CPU kernel (the loop below)
// and a CUDA kernel (swiglu.ll's PTX, loaded with the CUDA driver API through
// dlopen, launched on ONNX Runtime's compute stream so that CUDA graphs capture it).
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "ops.h"

static const OrtApi *ort;
static const char *ptx_text;

// ---- float16 <-> float32 (IEEE binary16, round to nearest even) ----

static float h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while (!(man & 0x400)) { man <<= 1; exp--; }
    bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static uint16_t f2h(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0);  // inf, nan
  if (ax >= 0x477ff000) return sign | 0x7c00;  // rounds above 65504: inf
  if (ax < 0x38800000) {  // below 2^-14: subnormal or zero
    if (ax < 0x33000000) return sign;  // under half the smallest subnormal
    uint32_t man = (ax & 0x7fffff) | 0x800000, shift = 126 - (ax >> 23);  // 14..24
    uint32_t r = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return sign | r;
  }
  uint32_t r = ((ax >> 13) - (112 << 10)), rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return sign | r;
}

void ortq_swiglu_grad_cpu(const uint16_t *g, const uint16_t *u, const uint16_t *dh,
  uint16_t *dg, uint16_t *du, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float x = h2f(g[i]), y = h2f(u[i]), d = h2f(dh[i]);
    float s = 1.0f / (1.0f + expf(-x));
    du[i] = f2h(d * (x * s));
    dg[i] = f2h(d * y * s * (1.0f + x * (1.0f - s)));
  }
}

// ---- the CUDA driver API, resolved at run time (no CUDA at build time) ----

typedef int CUresult;
typedef void *CUmodule, *CUfunction, *CUcontext;
static struct {
  CUresult (*ctxGetCurrent)(CUcontext *);
  CUresult (*moduleLoadData)(CUmodule *, const void *);
  CUresult (*moduleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*launchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, void *, void **, void **);
  CUresult (*getErrorString)(CUresult, const char **);
} cu;
static pthread_mutex_t cu_mu = PTHREAD_MUTEX_INITIALIZER;

// The functions of the PTX module, per CUDA context (one per device in use).
#define MAX_CONTEXTS 64
static struct { CUcontext ctx; CUfunction scalar, vec8; } modules[MAX_CONTEXTS];
static int nmodules;

static OrtStatus *fail(const char *what, CUresult rc) {
  char msg[256];
  const char *s = NULL;
  if (cu.getErrorString) cu.getErrorString(rc, &s);
  snprintf(msg, sizeof msg, "ai.ortq CUDA kernels: %s: error %d (%s)", what, rc, s ? s : "?");
  return ort->CreateStatus(ORT_RUNTIME_EXCEPTION, msg);
}

static OrtStatus *load_driver(void) {
  if (cu.launchKernel) return NULL;
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!lib) return ort->CreateStatus(ORT_RUNTIME_EXCEPTION, "ai.ortq CUDA kernels: cannot load libcuda.so.1");
  cu.ctxGetCurrent = dlsym(lib, "cuCtxGetCurrent");
  cu.moduleLoadData = dlsym(lib, "cuModuleLoadData");
  cu.moduleGetFunction = dlsym(lib, "cuModuleGetFunction");
  cu.getErrorString = dlsym(lib, "cuGetErrorString");
  cu.launchKernel = dlsym(lib, "cuLaunchKernel");
  if (!cu.ctxGetCurrent || !cu.moduleLoadData || !cu.moduleGetFunction || !cu.launchKernel) {
    cu.launchKernel = NULL;
    return ort->CreateStatus(ORT_RUNTIME_EXCEPTION, "ai.ortq CUDA kernels: libcuda.so.1 lacks the driver API");
  }
  return NULL;
}

// functions returns (loading the PTX once per context) the kernels of the current context.
static OrtStatus *functions(CUfunction *scalar, CUfunction *vec8) {
  OrtStatus *st = NULL;
  pthread_mutex_lock(&cu_mu);
  CUcontext ctx = NULL;
  CUresult rc;
  if ((st = load_driver())) goto out;
  if ((rc = cu.ctxGetCurrent(&ctx)) || !ctx) { st = fail("no current CUDA context", rc); goto out; }
  for (int i = 0; i < nmodules; i++) {
    if (modules[i].ctx == ctx) { *scalar = modules[i].scalar; *vec8 = modules[i].vec8; goto out; }
  }
  if (nmodules == MAX_CONTEXTS) { st = fail("too many CUDA contexts", 0); goto out; }
  CUmodule m;
  if ((rc = cu.moduleLoadData(&m, ptx_text))) { st = fail("loading the PTX", rc); goto out; }
  if ((rc = cu.moduleGetFunction(scalar, m, "ortq_swiglu_grad_f16")) ||
      (rc = cu.moduleGetFunction(vec8, m, "ortq_swiglu_grad_f16x8"))) { st = fail("finding the kernels", rc); goto out; }
  modules[nmodules].ctx = ctx;
  modules[nmodules].scalar = *scalar;
  modules[nmodules].vec8 = *vec8;
  nmodules++;
out:
  pthread_mutex_unlock(&cu_mu);
  return st;
}

// ---- SwiGLUGrad ----

// An op is an OrtCustomOp first (ONNX Runtime passes it back as such) and the provider its
// kernel runs on.
typedef struct {
  OrtCustomOp op;
  int cuda;
} ortq_op_t;

typedef struct {
  int cuda;
} kernel_t;

#define RETURN_IF(expr) do { OrtStatus *st_ = (expr); if (st_) return st_; } while (0)

static OrtStatus *ORT_API_CALL create_kernel(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info,
                                             void **kernel) {
  (void)api, (void)info;
  static kernel_t cpu = {0}, gpu = {1};
  *kernel = ((const ortq_op_t *)op)->cuda ? &gpu : &cpu;
  return NULL;
}

// swiglu_grad_compute checks the three inputs are float16 of one element count, allocates the
// two outputs in g's shape and runs the kernel of the op's provider.
static OrtStatus *ORT_API_CALL swiglu_grad_compute(void *kernel, OrtKernelContext *ctx) {
  const OrtValue *in[3];
  const void *ip[3];
  int64_t dims[16];
  size_t rank = 0, n = 0;
  for (int i = 0; i < 3; i++) {
    OrtTensorTypeAndShapeInfo *info;
    ONNXTensorElementDataType dt;
    size_t ni, r;
    RETURN_IF(ort->KernelContext_GetInput(ctx, i, &in[i]));
    RETURN_IF(ort->GetTensorTypeAndShape(in[i], &info));
    OrtStatus *st = ort->GetTensorElementType(info, &dt);
    if (!st) st = ort->GetTensorShapeElementCount(info, &ni);
    if (!st) st = ort->GetDimensionsCount(info, &r);
    if (!st && i == 0 && r <= 16) st = ort->GetDimensions(info, dims, r);
    ort->ReleaseTensorTypeAndShapeInfo(info);
    if (st) return st;
    if (dt != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) return ort->CreateStatus(ORT_INVALID_ARGUMENT, "ai.ortq.SwiGLUGrad: inputs must be float16");
    if (i == 0) {
      if (r > 16) return ort->CreateStatus(ORT_INVALID_ARGUMENT, "ai.ortq.SwiGLUGrad: rank above 16");
      rank = r, n = ni;
    } else if (ni != n) {
      return ort->CreateStatus(ORT_INVALID_ARGUMENT, "ai.ortq.SwiGLUGrad: g, u and dh differ in size");
    }
    RETURN_IF(ort->GetTensorData(in[i], &ip[i]));
  }
  OrtValue *out[2];
  void *op[2];
  for (int i = 0; i < 2; i++) {
    RETURN_IF(ort->KernelContext_GetOutput(ctx, i, dims, rank, &out[i]));
    RETURN_IF(ort->GetTensorMutableData(out[i], &op[i]));
  }
  if (n == 0) return NULL;
  if (!((kernel_t *)kernel)->cuda) {
    ortq_swiglu_grad_cpu(ip[0], ip[1], ip[2], op[0], op[1], (int64_t)n);
    return NULL;
  }
  CUfunction scalar, vec8;
  RETURN_IF(functions(&scalar, &vec8));
  void *stream;
  RETURN_IF(ort->KernelContext_GetGPUComputeStream(ctx, &stream));
  uintptr_t align = (uintptr_t)ip[0] | (uintptr_t)ip[1] | (uintptr_t)ip[2] | (uintptr_t)op[0] | (uintptr_t)op[1];
  int wide = (align & 15) == 0 && n % 8 == 0;
  CUfunction f = wide ? vec8 : scalar;
  size_t threads = wide ? n / 8 : n, block = 256;
  int64_t n64 = (int64_t)n;
  void *args[] = {&ip[0], &ip[1], &ip[2], &op[0], &op[1], &n64};
  CUresult rc = cu.launchKernel(f, (unsigned)((threads + block - 1) / block), 1, 1, (unsigned)block, 1, 1, 0, stream, args, NULL);
  return rc ? fail("launching SwiGLUGrad", rc) : NULL;
}

static void ORT_API_CALL destroy_kernel(void *kernel) { (void)kernel; }
static const char *ORT_API_CALL swiglu_grad_name(const OrtCustomOp *op) { (void)op; return "SwiGLUGrad"; }
static const char *ORT_API_CALL provider(const OrtCustomOp *op) {
  return ((const ortq_op_t *)op)->cuda ? "CUDAExecutionProvider" : "CPUExecutionProvider";
}
static ONNXTensorElementDataType ORT_API_CALL half_type(const OrtCustomOp *op, size_t i) {
  (void)op, (void)i;
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
}
static size_t ORT_API_CALL three(const OrtCustomOp *op) { (void)op; return 3; }
static size_t ORT_API_CALL two(const OrtCustomOp *op) { (void)op; return 2; }
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp *op, size_t i) {
  (void)op, (void)i;
  return INPUT_OUTPUT_REQUIRED;
}
static OrtMemType ORT_API_CALL default_mem(const OrtCustomOp *op, size_t i) { (void)op, (void)i; return OrtMemTypeDefault; }
static int ORT_API_CALL since(const OrtCustomOp *op) { (void)op; return 1; }
static int ORT_API_CALL until(const OrtCustomOp *op) { (void)op; return 2147483647; }

static int ORT_API_CALL one(const OrtCustomOp *op) { (void)op; return 1; }
static size_t ORT_API_CALL no_pairs(int **in, int **out) { *in = NULL, *out = NULL; return 0; }
static void ORT_API_CALL release_pairs(int *in, int *out) { (void)in, (void)out; }
static void *ORT_API_CALL create_kernel_v1(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info) {
  void *k = NULL;
  create_kernel(op, api, info, &k);
  return k;
}

// ONNX Runtime calls KernelComputeV2, which can fail with a status; this entry is there only
// for completeness of the struct.
static void ORT_API_CALL compute_v1(void *kernel, OrtKernelContext *ctx) {
  OrtStatus *st = swiglu_grad_compute(kernel, ctx);
  if (st) {
    fprintf(stderr, "%s\n", ort->GetErrorMessage(st));
    ort->ReleaseStatus(st);
  }
}

static ortq_op_t ops[2];

static void define_swiglu_grad(ortq_op_t *o, int cuda) {
  memset(o, 0, sizeof *o);
  o->cuda = cuda;
  OrtCustomOp *c = &o->op;
  c->version = ORT_API_VERSION;
  c->GetName = swiglu_grad_name;
  c->GetExecutionProviderType = provider;
  c->GetInputType = half_type;
  c->GetInputTypeCount = three;
  c->GetOutputType = half_type;
  c->GetOutputTypeCount = two;
  c->KernelDestroy = destroy_kernel;
  c->GetInputCharacteristic = required;
  c->GetOutputCharacteristic = required;
  c->GetInputMemoryType = default_mem;
  c->CreateKernelV2 = create_kernel;
  c->KernelComputeV2 = swiglu_grad_compute;
  c->GetStartVersion = since;
  c->GetEndVersion = until;
  // Every entry is set: ONNX Runtime reads those of ORT_API_VERSION without checking for NULL.
  c->CreateKernel = create_kernel_v1;
  c->KernelCompute = compute_v1;
  c->GetVariadicInputMinArity = one;
  c->GetVariadicInputHomogeneity = one;
  c->GetVariadicOutputMinArity = one;
  c->GetVariadicOutputHomogeneity = one;
  c->GetMayInplace = no_pairs;
  c->ReleaseMayInplace = release_pairs;
  c->GetAliasMap = no_pairs;
  c->ReleaseAliasMap = release_pairs;
}

void ortq_set_api(const OrtApi *api) { ort = api; }

int ortq_ops_init(const char *ptx) {
  ptx_text = ptx;
  define_swiglu_grad(&ops[0], 0);
  define_swiglu_grad(&ops[1], 1);
  return 2;
}

OrtCustomOp *ortq_op(int i) { return &ops[i].op; }
