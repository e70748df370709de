// ortq's custom ops over float16 tensors: SwiGLU(g, u) → h = silu(g)·u and its gradient
// SwiGLUGrad(g, u, dh) → (dg, du), RMSNorm(x, w) → (y, r), RMSNormGrad(x, w, r, dy[, res]) →
// dx, Rotary(x, cos, sin, pos) → y, MaskedSoftmax(s, m) → p and DequantBnb4(bytes, lut,
// absmax) → W. Each has a CPU kernel (the loops below) and a CUDA
// kernel (ops.ll's PTX, loaded with the CUDA driver API through dlopen, launched on ONNX
// Runtime's compute stream so that CUDA graphs capture it).
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

void ortq_swiglu_cpu(const uint16_t *g, const uint16_t *u, uint16_t *h, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float x = h2f(g[i]);
    h[i] = f2h(x / (1.0f + expf(-x)) * h2f(u[i]));
  }
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

void ortq_rmsnorm_grad_cpu(const uint16_t *x, const uint16_t *w, const float *r, const uint16_t *dy, const uint16_t *res,
  uint16_t *dx, int64_t rows, int64_t h) {
  for (int64_t row = 0; row < rows; row++) {
    const uint16_t *xr = x + row * h, *dyr = dy + row * h;
    float rr = r[row], acc = 0;
    for (int64_t i = 0; i < h; i++) acc += h2f(dyr[i]) * h2f(w[i]) * (h2f(xr[i]) * rr);
    float m = acc / (float)h;
    for (int64_t i = 0; i < h; i++) {
      float g = h2f(dyr[i]) * h2f(w[i]), xh = h2f(xr[i]) * rr;
      dx[row * h + i] = f2h((g - xh * m) * rr + (res ? h2f(res[row * h + i]) : 0.0f));
    }
  }
}

void ortq_rmsnorm_cpu(const uint16_t *x, const uint16_t *w, uint16_t *y, float *r, int64_t rows, int64_t h, float eps) {
  for (int64_t row = 0; row < rows; row++) {
    const uint16_t *xr = x + row * h;
    float acc = 0;
    for (int64_t i = 0; i < h; i++) acc += h2f(xr[i]) * h2f(xr[i]);
    float rr = 1.0f / sqrtf(acc / (float)h + eps);
    r[row] = rr;
    for (int64_t i = 0; i < h; i++) y[row * h + i] = f2h(h2f(xr[i]) * rr * h2f(w[i]));
  }
}

int ortq_rotary_cpu(const uint16_t *x, const uint16_t *cs, const uint16_t *sn, const int64_t *pos, uint16_t *y,
  int64_t rows, int64_t half, int64_t div, int64_t seq, int bnsh, int64_t npos) {
  for (int64_t row = 0; row < rows; row++) {
    int64_t q = row / div, p = pos[bnsh ? q * seq + row % seq : q];
    if (p < 0 || p >= npos) return -1;
    const uint16_t *xr = x + row * 2 * half, *c = cs + p * half, *s = sn + p * half;
    uint16_t *yr = y + row * 2 * half;
    for (int64_t i = 0; i < half; i++) {
      float x1 = h2f(xr[i]), x2 = h2f(xr[i + half]), cv = h2f(c[i]), sv = h2f(s[i]);
      yr[i] = f2h(x1 * cv - x2 * sv);
      yr[i + half] = f2h(x2 * cv + x1 * sv);
    }
  }
  return 0;
}

void ortq_masked_softmax_cpu(const uint16_t *s, const uint16_t *m, uint16_t *p, int64_t rows, int64_t l, int64_t heads,
  int64_t q, int64_t sb, int64_t sh, int64_t sq) {
  for (int64_t row = 0; row < rows; row++) {
    const uint16_t *sr = s + row * l, *mr = m + ((row / (heads * q)) * sb + (row / q % heads) * sh + (row % q) * sq) * l;
    float mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < l; j++) mx = fmaxf(mx, h2f(sr[j]) + h2f(mr[j]));
    for (int64_t j = 0; j < l; j++) sum += expf(h2f(sr[j]) + h2f(mr[j]) - mx);
    for (int64_t j = 0; j < l; j++) p[row * l + j] = f2h(expf(h2f(sr[j]) + h2f(mr[j]) - mx) / sum);
  }
}

void ortq_dequant_bnb4_cpu(const uint8_t *bytes, const uint16_t *lut, const uint16_t *absmax, uint16_t *w, int64_t m, int64_t bs) {
  for (int64_t j = 0; j < m; j++) {
    float a = h2f(absmax[2 * j / bs]);
    w[2 * j] = f2h(h2f(lut[2 * bytes[j]]) * a);
    w[2 * j + 1] = f2h(h2f(lut[2 * bytes[j] + 1]) * a);
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

// An op: its ONNX signature, its CPU loop and the names of its two CUDA kernels (one
// element a thread, and 8 with 16-byte accesses). An op is an OrtCustomOp first (ONNX
// Runtime passes it back as such) and the provider its kernel runs on; ONNX Runtime's
// kernel object (kernel_t) is a node's: the op and the node's attributes.
#define NOPS 7
#define MAXIO 5
struct kernel;
typedef struct ortq_op {
  OrtCustomOp op;
  int cuda, index;
  const char *name, *scalar, *vec8;
  size_t nin, nout, nopt;  // inputs, outputs, optional inputs (the last nopt)
  ONNXTensorElementDataType in_types[MAXIO], out_types[MAXIO];
  void (*cpu)(const uint16_t **in, uint16_t **out, int64_t n);  // elementwise ops
  OrtStatus *(*compute)(const struct kernel *k, OrtKernelContext *ctx);
} ortq_op_t;

typedef struct kernel {
  const ortq_op_t *op;
  float eps;        // the node's epsilon attribute (RMSNorm), else 1e-5
  int64_t rows, cols;  // its N and K attributes (DequantBnb4), else 0
} kernel_t;

// The functions of the PTX module, per CUDA context (one per device in use) and op.
#define MAX_CONTEXTS 64
static struct { CUcontext ctx; CUfunction scalar[NOPS], vec8[NOPS]; } modules[MAX_CONTEXTS];
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

static ortq_op_t ops[2 * NOPS];  // each op on the CPU, then on CUDA

// functions returns (loading the PTX once per context) op's kernels in the current context.
static OrtStatus *functions(const ortq_op_t *op, CUfunction *scalar, CUfunction *vec8) {
  OrtStatus *st = NULL;
  pthread_mutex_lock(&cu_mu);
  CUcontext ctx = NULL;
  CUresult rc;
  int m = 0;
  if ((st = load_driver())) goto out;
  if ((rc = cu.ctxGetCurrent(&ctx)) || !ctx) { st = fail("no current CUDA context", rc); goto out; }
  for (; m < nmodules && modules[m].ctx != ctx; m++) {
  }
  if (m == nmodules) {
    if (nmodules == MAX_CONTEXTS) { st = fail("too many CUDA contexts", 0); goto out; }
    CUmodule mod;
    if ((rc = cu.moduleLoadData(&mod, ptx_text))) { st = fail("loading the PTX", rc); goto out; }
    for (int i = 0; i < NOPS; i++) {
      if ((rc = cu.moduleGetFunction(&modules[m].scalar[i], mod, ops[i].scalar)) ||
          (rc = cu.moduleGetFunction(&modules[m].vec8[i], mod, ops[i].vec8))) { st = fail("finding the kernels", rc); goto out; }
    }
    modules[m].ctx = ctx;
    nmodules++;
  }
  *scalar = modules[m].scalar[op->index];
  *vec8 = modules[m].vec8[op->index];
out:
  pthread_mutex_unlock(&cu_mu);
  return st;
}

// ---- the ops ----

#define RETURN_IF(expr) do { OrtStatus *st_ = (expr); if (st_) return st_; } while (0)

static OrtStatus *ORT_API_CALL create_kernel(const OrtCustomOp *op, const OrtApi *api, const OrtKernelInfo *info,
                                             void **kernel) {
  (void)api;
  kernel_t *k = calloc(1, sizeof *k);
  if (!k) return ort->CreateStatus(ORT_FAIL, "ai.ortq: out of memory");
  k->op = (const ortq_op_t *)op, k->eps = 1e-5f;
  OrtStatus *st = ort->KernelInfoGetAttribute_float(info, "epsilon", &k->eps);
  if (st) ort->ReleaseStatus(st), k->eps = 1e-5f;  // no such attribute: the default
  if ((st = ort->KernelInfoGetAttribute_int64(info, "N", &k->rows))) ort->ReleaseStatus(st), k->rows = 0;
  if ((st = ort->KernelInfoGetAttribute_int64(info, "K", &k->cols))) ort->ReleaseStatus(st), k->cols = 0;
  *kernel = k;
  return NULL;
}

// input_t is a kernel input as the kernels read it.
typedef struct {
  const void *data;
  ONNXTensorElementDataType dt;
  size_t n, rank;  // element count, rank (at most 16)
  int64_t dims[16];
} input_t;

// input reads kernel input v.
static OrtStatus *input(const OrtValue *v, input_t *t) {
  OrtTensorTypeAndShapeInfo *info;
  RETURN_IF(ort->GetTensorTypeAndShape(v, &info));
  OrtStatus *st = ort->GetTensorElementType(info, &t->dt);
  if (!st) st = ort->GetTensorShapeElementCount(info, &t->n);
  if (!st) st = ort->GetDimensionsCount(info, &t->rank);
  if (!st && t->rank > 16) st = ort->CreateStatus(ORT_INVALID_ARGUMENT, "ai.ortq: rank above 16");
  if (!st) st = ort->GetDimensions(info, t->dims, t->rank);
  ort->ReleaseTensorTypeAndShapeInfo(info);
  if (st) return st;
  return ort->GetTensorData(v, &t->data);
}

// inputs reads the op's inputs and checks their element types (op->in_types); an optional
// input the node does not give reads as data NULL, no elements.
static OrtStatus *inputs(const ortq_op_t *op, OrtKernelContext *ctx, input_t *in) {
  size_t count;
  RETURN_IF(ort->KernelContext_GetInputCount(ctx, &count));
  for (size_t i = 0; i < op->nin; i++) {
    const OrtValue *v = NULL;
    if (i < count) RETURN_IF(ort->KernelContext_GetInput(ctx, i, &v));
    if (!v && i >= op->nin - op->nopt) {
      memset(&in[i], 0, sizeof in[i]);
      continue;
    }
    RETURN_IF(input(v, &in[i]));
    if (in[i].dt != op->in_types[i]) {
      char msg[128];
      snprintf(msg, sizeof msg, "ai.ortq.%s: input %zu has element type %d, want %d", op->name, i, (int)in[i].dt, (int)op->in_types[i]);
      return ort->CreateStatus(ORT_INVALID_ARGUMENT, msg);
    }
  }
  return NULL;
}

// output allocates output i of shape dims[rank] and returns its data.
static OrtStatus *output(OrtKernelContext *ctx, size_t i, const int64_t *dims, size_t rank, void **data) {
  OrtValue *out;
  RETURN_IF(ort->KernelContext_GetOutput(ctx, i, dims, rank, &out));
  return ort->GetTensorMutableData(out, data);
}

// aligned16 reports whether every pointer of p[n] is 16-byte aligned (NULL ones are).
static int aligned16(const void *const *p, size_t n) {
  uintptr_t align = 0;
  for (size_t i = 0; i < n; i++) align |= (uintptr_t)p[i];
  return (align & 15) == 0;
}

// launch_grid runs a kernel of grid blocks of block threads on the op's stream.
static OrtStatus *launch_grid(const ortq_op_t *op, OrtKernelContext *ctx, CUfunction f, size_t grid, unsigned block, void **args) {
  void *stream;
  RETURN_IF(ort->KernelContext_GetGPUComputeStream(ctx, &stream));
  CUresult rc = cu.launchKernel(f, (unsigned)grid, 1, 1, block, 1, 1, 0, stream, args, NULL);
  return rc ? fail(op->name, rc) : NULL;
}

// launch runs a kernel on the op's stream over n work items of 256-thread blocks.
static OrtStatus *launch(const ortq_op_t *op, OrtKernelContext *ctx, CUfunction f, size_t n, void **args) {
  return launch_grid(op, ctx, f, (n + 255) / 256, 256, args);
}

// elementwise allocates the op's outputs in its first input's shape and runs the kernel of
// the op's provider over every element.
static OrtStatus *elementwise(const kernel_t *k, OrtKernelContext *ctx) {
  const ortq_op_t *op = k->op;
  input_t in[MAXIO];
  const void *ip[MAXIO];
  void *op_out[MAXIO];
  RETURN_IF(inputs(op, ctx, in));
  size_t n = in[0].n;
  for (size_t i = 0; i < op->nin; i++) {
    if (in[i].n != n) {
      char msg[128];
      snprintf(msg, sizeof msg, "ai.ortq.%s: input %zu has %zu elements, input 0 %zu", op->name, i, in[i].n, n);
      return ort->CreateStatus(ORT_INVALID_ARGUMENT, msg);
    }
    ip[i] = in[i].data;
  }
  for (size_t i = 0; i < op->nout; i++) RETURN_IF(output(ctx, i, in[0].dims, in[0].rank, &op_out[i]));
  if (n == 0) return NULL;
  if (!op->cuda) {
    op->cpu((const uint16_t **)ip, (uint16_t **)op_out, (int64_t)n);
    return NULL;
  }
  CUfunction scalar, vec8;
  RETURN_IF(functions(op, &scalar, &vec8));
  void *args[2 * MAXIO + 1];
  size_t na = 0;
  for (size_t i = 0; i < op->nin; i++) args[na++] = &ip[i];
  for (size_t i = 0; i < op->nout; i++) args[na++] = &op_out[i];
  int64_t n64 = (int64_t)n;
  args[na++] = &n64;
  int wide = aligned16(ip, op->nin) && aligned16((const void *const *)op_out, op->nout) && n % 8 == 0;
  return launch(op, ctx, wide ? vec8 : scalar, wide ? n / 8 : n, args);
}

static OrtStatus *ORT_API_CALL compute(void *kernel, OrtKernelContext *ctx) {
  const kernel_t *k = kernel;
  return k->op->compute(k, ctx);
}

static OrtStatus *invalid(const char *msg) { return ort->CreateStatus(ORT_INVALID_ARGUMENT, msg); }


// row_block is the block size of a kernel that gives one block to each row of u work items:
// a thread an item where it fits, in whole warps.
static unsigned row_block(int64_t u) {
  int64_t b = (u + 31) / 32 * 32;
  return (unsigned)(b < 32 ? 32 : b > 1024 ? 1024 : b);
}

// rmsnorm_grad computes dx of RMSNormGrad(x, w, r, dy[, res]): x, dy and res float16 [..., h],
// w float16 [h], r float32 with one value a row; dx + res where res is given.
static OrtStatus *rmsnorm_grad(const kernel_t *k, OrtKernelContext *ctx) {
  const ortq_op_t *op = k->op;
  input_t in[5];
  RETURN_IF(inputs(op, ctx, in));
  const input_t *x = &in[0];
  int64_t h = x->rank ? x->dims[x->rank - 1] : 1, rows = h > 0 ? (int64_t)x->n / h : 0;
  if (in[3].n != x->n || (int64_t)in[1].n != h || (int64_t)in[2].n != rows || (in[4].data && in[4].n != x->n)) {
    return invalid("ai.ortq.RMSNormGrad: want x, dy (and res) [..., h], w [h] and r one value a row");
  }
  const void *p[6] = {in[0].data, in[1].data, in[2].data, in[3].data, in[4].data, NULL};
  RETURN_IF(output(ctx, 0, x->dims, x->rank, (void **)&p[5]));
  if (rows == 0) return NULL;
  if (!op->cuda) {
    ortq_rmsnorm_grad_cpu(p[0], p[1], p[2], p[3], p[4], (uint16_t *)p[5], rows, h);
    return NULL;
  }
  CUfunction scalar, vec8;
  RETURN_IF(functions(op, &scalar, &vec8));
  const void *vp[] = {p[0], p[1], p[3], p[4], p[5]};
  int wide = h % 8 == 0 && aligned16(vp, 5);
  int64_t u = wide ? h / 8 : h;
  void *args[] = {&p[0], &p[1], &p[2], &p[3], &p[4], &p[5], &rows, &u, &h};
  void **a = wide ? args : (void *[]){&p[0], &p[1], &p[2], &p[3], &p[4], &p[5], &rows, &h};
  return launch_grid(op, ctx, wide ? vec8 : scalar, (size_t)rows, wide ? row_block(u) : 256, a);
}

// rmsnorm computes RMSNorm(x, w) → (y, r): x float16 [..., h], w float16 [h]; y = x·r·w in x's
// shape, r = 1/sqrt(mean(x²) + epsilon) float32 [..., 1].
static OrtStatus *rmsnorm(const kernel_t *k, OrtKernelContext *ctx) {
  const ortq_op_t *op = k->op;
  input_t in[2];
  RETURN_IF(inputs(op, ctx, in));
  const input_t *x = &in[0];
  int64_t h = x->rank ? x->dims[x->rank - 1] : 0, rows = h > 0 ? (int64_t)x->n / h : 0;
  if (x->rank == 0 || (int64_t)in[1].n != h) return invalid("ai.ortq.RMSNorm: want x [..., h] and w [h]");
  const void *p[4] = {in[0].data, in[1].data, NULL, NULL};
  RETURN_IF(output(ctx, 0, x->dims, x->rank, (void **)&p[2]));
  int64_t rdims[16];
  memcpy(rdims, x->dims, x->rank * sizeof rdims[0]);
  rdims[x->rank - 1] = 1;
  RETURN_IF(output(ctx, 1, rdims, x->rank, (void **)&p[3]));
  if (rows == 0) return NULL;
  float eps = k->eps;
  if (!op->cuda) {
    ortq_rmsnorm_cpu(p[0], p[1], (uint16_t *)p[2], (float *)p[3], rows, h, eps);
    return NULL;
  }
  CUfunction scalar, vec8;
  RETURN_IF(functions(op, &scalar, &vec8));
  int wide = h % 8 == 0 && aligned16(p, 3);
  int64_t u = wide ? h / 8 : h;
  void *args[] = {&p[0], &p[1], &p[2], &p[3], &rows, &u, &h, &eps};
  return launch_grid(op, ctx, wide ? vec8 : scalar, (size_t)rows, wide ? row_block(u) : 256, args);
}

// rotary computes Rotary(x, cos, sin, pos): x float16 [batch, heads, seq, D] or [batch, seq,
// heads·D], cos and sin float16 [P, D/2], pos int64 [batch, seq].
static OrtStatus *rotary(const kernel_t *k, OrtKernelContext *ctx) {
  const ortq_op_t *op = k->op;
  input_t in[4];
  RETURN_IF(inputs(op, ctx, in));
  const input_t *x = &in[0], *c = &in[1], *pos = &in[3];
  if (c->rank != 2 || in[2].rank != 2 || in[2].dims[0] != c->dims[0] || in[2].dims[1] != c->dims[1] || c->dims[1] <= 0) {
    return invalid("ai.ortq.Rotary: want cos and sin caches of one shape [positions, D/2]");
  }
  int64_t half = c->dims[1], d = 2 * half, bnsh = x->rank == 4;
  if ((x->rank != 3 && x->rank != 4) || x->dims[x->rank - 1] % d != 0 || (bnsh && x->dims[3] != d) || pos->rank != 2 ||
      pos->dims[0] != x->dims[0] || pos->dims[1] != x->dims[bnsh ? 2 : 1]) {
    return invalid("ai.ortq.Rotary: want x [batch, heads, seq, D] or [batch, seq, heads·D] and positions [batch, seq]");
  }
  int64_t seq = pos->dims[1], heads = bnsh ? x->dims[1] : x->dims[2] / d, div = bnsh ? heads * seq : heads;
  int64_t rows = (int64_t)x->n / d, npos = c->dims[0];
  const void *p[4] = {in[0].data, in[1].data, in[2].data, in[3].data};
  void *y;
  RETURN_IF(output(ctx, 0, x->dims, x->rank, &y));
  if (rows == 0) return NULL;
  if (!op->cuda) {
    if (ortq_rotary_cpu(p[0], p[1], p[2], p[3], y, rows, half, div, seq, (int)bnsh, npos)) {
      return invalid("ai.ortq.Rotary: a position is outside the cos/sin caches");
    }
    return NULL;
  }
  CUfunction scalar, vec8;
  RETURN_IF(functions(op, &scalar, &vec8));
  const void *vp[] = {p[0], p[1], p[2], y};
  int wide = half % 8 == 0 && aligned16(vp, 4);
  int64_t u = wide ? half / 8 : half, n = rows * u;
  void *args[] = {&p[0], &p[1], &p[2], &p[3], &y, &n, &u, &div, &seq, &bnsh, &npos};
  return launch(op, ctx, wide ? vec8 : scalar, (size_t)n, args);
}

// masked_softmax computes MaskedSoftmax(s, m) = softmax(s + m) over the last axis: s float16
// [batch, heads, q, L], m float16 [batch or 1, heads or 1, q or 1, L].
static OrtStatus *masked_softmax(const kernel_t *k, OrtKernelContext *ctx) {
  const ortq_op_t *op = k->op;
  input_t in[2];
  RETURN_IF(inputs(op, ctx, in));
  const input_t *s = &in[0], *m = &in[1];
  int ok = s->rank == 4 && m->rank == 4 && m->dims[3] == s->dims[3];
  for (int k = 0; ok && k < 3; k++) ok = m->dims[k] == 1 || m->dims[k] == s->dims[k];
  if (!ok) return invalid("ai.ortq.MaskedSoftmax: want s [batch, heads, q, L] and m broadcast to it over its first three axes");
  int64_t l = s->dims[3], heads = s->dims[1], q = s->dims[2], rows = l > 0 ? (int64_t)s->n / l : 0;
  int64_t sb = m->dims[0] > 1 ? m->dims[1] * m->dims[2] : 0, sh = m->dims[1] > 1 ? m->dims[2] : 0, sq = m->dims[2] > 1;
  const void *p[2] = {in[0].data, in[1].data};
  void *out;
  RETURN_IF(output(ctx, 0, s->dims, s->rank, &out));
  if (rows == 0) return NULL;
  if (!op->cuda) {
    ortq_masked_softmax_cpu(p[0], p[1], out, rows, l, heads, q, sb, sh, sq);
    return NULL;
  }
  CUfunction scalar, vec8;
  RETURN_IF(functions(op, &scalar, &vec8));
  const void *vp[] = {p[0], p[1], out};
  int wide = l % 8 == 0 && aligned16(vp, 3);
  int64_t lw = wide ? l / 8 : l;
  void *args[] = {&p[0], &p[1], &out, &rows, &lw, &heads, &q, &sb, &sh, &sq};
  return launch(op, ctx, wide ? vec8 : scalar, (size_t)rows * 32, args);
}

// dequant_bnb4 computes DequantBnb4(bytes, lut, absmax) → W: uint8 bytes [N·K/2] (two
// elements a byte), float16 lut [256, 2], float16 absmax one value a block of N·K/blocks
// elements; W float16 [N, K] (the node's attributes).
static OrtStatus *dequant_bnb4(const kernel_t *k, OrtKernelContext *ctx) {
  const ortq_op_t *op = k->op;
  input_t in[3];
  RETURN_IF(inputs(op, ctx, in));
  int64_t m = (int64_t)in[0].n, blocks = (int64_t)in[2].n, nk = k->rows * k->cols;
  if (k->rows <= 0 || k->cols <= 0 || 2 * m != nk || in[1].n != 512 || blocks == 0 || nk % blocks || (nk / blocks) % 2) {
    return invalid("ai.ortq.DequantBnb4: want N·K/2 bytes, a [256, 2] table and absmax one value a block of an even size");
  }
  int64_t bs = nk / blocks, dims[2] = {k->rows, k->cols};
  void *w;
  RETURN_IF(output(ctx, 0, dims, 2, &w));
  const void *p[4] = {in[0].data, in[1].data, in[2].data, w};
  if (!op->cuda) {
    ortq_dequant_bnb4_cpu(p[0], p[1], p[2], w, m, bs);
    return NULL;
  }
  CUfunction scalar, vec4;
  RETURN_IF(functions(op, &scalar, &vec4));
  int wide = m % 4 == 0 && bs % 8 == 0 && ((uintptr_t)p[0] & 3) == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)p[1] & 3) == 0;
  int64_t n = wide ? m / 4 : m;
  void *args[] = {&p[0], &p[1], &p[2], &p[3], &n, &bs};
  return launch(op, ctx, wide ? vec4 : scalar, (size_t)n, args);
}

static void cpu_swiglu(const uint16_t **in, uint16_t **out, int64_t n) { ortq_swiglu_cpu(in[0], in[1], out[0], n); }
static void cpu_swiglu_grad(const uint16_t **in, uint16_t **out, int64_t n) {
  ortq_swiglu_grad_cpu(in[0], in[1], in[2], out[0], out[1], n);
}

static void ORT_API_CALL destroy_kernel(void *kernel) { free(kernel); }
static const char *ORT_API_CALL name(const OrtCustomOp *op) { return ((const ortq_op_t *)op)->name; }
static const char *ORT_API_CALL provider(const OrtCustomOp *op) {
  return ((const ortq_op_t *)op)->cuda ? "CUDAExecutionProvider" : "CPUExecutionProvider";
}
static ONNXTensorElementDataType ORT_API_CALL in_type(const OrtCustomOp *op, size_t i) {
  return ((const ortq_op_t *)op)->in_types[i];
}
static ONNXTensorElementDataType ORT_API_CALL out_type(const OrtCustomOp *op, size_t i) {
  return ((const ortq_op_t *)op)->out_types[i];
}
static size_t ORT_API_CALL nin(const OrtCustomOp *op) { return ((const ortq_op_t *)op)->nin; }
static size_t ORT_API_CALL nout(const OrtCustomOp *op) { return ((const ortq_op_t *)op)->nout; }
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL in_kind(const OrtCustomOp *op, size_t i) {
  const ortq_op_t *o = (const ortq_op_t *)op;
  return i >= o->nin - o->nopt ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}
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
  OrtStatus *st = compute(kernel, ctx);
  if (st) {
    fprintf(stderr, "%s\n", ort->GetErrorMessage(st));
    ort->ReleaseStatus(st);
  }
}

static void define(ortq_op_t *o, int index, int cuda, const char *op_name, const char *scalar, const char *vec8, size_t ni, size_t no,
                   void (*cpu)(const uint16_t **, uint16_t **, int64_t), OrtStatus *(*run)(const kernel_t *, OrtKernelContext *)) {
  memset(o, 0, sizeof *o);
  o->cuda = cuda, o->index = index, o->name = op_name, o->scalar = scalar, o->vec8 = vec8, o->nin = ni, o->nout = no, o->cpu = cpu;
  o->compute = run;
  for (size_t i = 0; i < MAXIO; i++) o->in_types[i] = o->out_types[i] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  OrtCustomOp *c = &o->op;
  c->version = ORT_API_VERSION;
  // Every entry is set: ONNX Runtime reads those of ORT_API_VERSION without checking for NULL.
  c->CreateKernel = create_kernel_v1;
  c->GetName = name;
  c->GetExecutionProviderType = provider;
  c->GetInputType = in_type;
  c->GetInputTypeCount = nin;
  c->GetOutputType = out_type;
  c->GetOutputTypeCount = nout;
  c->KernelCompute = compute_v1;
  c->KernelDestroy = destroy_kernel;
  c->GetInputCharacteristic = in_kind;
  c->GetOutputCharacteristic = required;
  c->GetInputMemoryType = default_mem;
  c->GetVariadicInputMinArity = one;
  c->GetVariadicInputHomogeneity = one;
  c->GetVariadicOutputMinArity = one;
  c->GetVariadicOutputHomogeneity = one;
  c->CreateKernelV2 = create_kernel;
  c->KernelComputeV2 = compute;
  c->GetStartVersion = since;
  c->GetEndVersion = until;
  c->GetMayInplace = no_pairs;
  c->ReleaseMayInplace = release_pairs;
  c->GetAliasMap = no_pairs;
  c->ReleaseAliasMap = release_pairs;
}

void ortq_set_api(const OrtApi *api) { ort = api; }

int ortq_ops_init(const char *ptx) {
  ptx_text = ptx;
  for (int cuda = 0; cuda < 2; cuda++) {
    define(&ops[cuda * NOPS + 0], 0, cuda, "SwiGLU", "ortq_swiglu_f16", "ortq_swiglu_f16x8", 2, 1, cpu_swiglu, elementwise);
    define(&ops[cuda * NOPS + 1], 1, cuda, "SwiGLUGrad", "ortq_swiglu_grad_f16", "ortq_swiglu_grad_f16x8", 3, 2, cpu_swiglu_grad, elementwise);
    ortq_op_t *rn = &ops[cuda * NOPS + 2];
    define(rn, 2, cuda, "RMSNormGrad", "ortq_rmsnorm_grad_f16", "ortq_rmsnorm_grad_f16x8", 5, 1, NULL, rmsnorm_grad);
    rn->in_types[2] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, rn->nopt = 1;
    ortq_op_t *ro = &ops[cuda * NOPS + 3];
    define(ro, 3, cuda, "Rotary", "ortq_rotary_f16", "ortq_rotary_f16x8", 4, 1, NULL, rotary);
    ro->in_types[3] = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    define(&ops[cuda * NOPS + 4], 4, cuda, "MaskedSoftmax", "ortq_masked_softmax_f16", "ortq_masked_softmax_f16x8", 2, 1, NULL,
           masked_softmax);
    ortq_op_t *no = &ops[cuda * NOPS + 5];
    define(no, 5, cuda, "RMSNorm", "ortq_rmsnorm_f16", "ortq_rmsnorm_f16x8", 2, 2, NULL, rmsnorm);
    no->out_types[1] = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    ortq_op_t *dq = &ops[cuda * NOPS + 6];
    define(dq, 6, cuda, "DequantBnb4", "ortq_dequant_bnb4_f16", "ortq_dequant_bnb4_f16x4", 3, 1, NULL, dequant_bnb4);
    dq->in_types[0] = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  }
  return 2 * NOPS;
}

OrtCustomOp *ortq_op(int i) { return &ops[i].op; }
