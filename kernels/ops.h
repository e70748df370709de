// ortq's own ONNX Runtime custom ops (domain ai.ortq), a CPU and a CUDA kernel each.
#ifndef ORTQ_KERNELS_OPS_H
#define ORTQ_KERNELS_OPS_H

#include "onnxruntime_c_api.h"

// ortq_ops_init defines the ops once, with the PTX text their CUDA kernels load (NUL
// terminated, kept by the caller); it returns the number of ops ortq_op returns.
int ortq_ops_init(const char *ptx);

// ortq_set_api records the OrtApi of the loaded library, which the kernels call.
void ortq_set_api(const OrtApi *api);

// ortq_op returns op i (0 ≤ i < the count ortq_ops_init returned).
OrtCustomOp *ortq_op(int i);

// ortq_swiglu_cpu and ortq_swiglu_grad_cpu compute SwiGLU and SwiGLUGrad on float16 bits
// (see ops.ll).
void ortq_swiglu_cpu(const uint16_t *g, const uint16_t *u, uint16_t *h, int64_t n);
void ortq_swiglu_grad_cpu(const uint16_t *g, const uint16_t *u, const uint16_t *dh,
  uint16_t *dg, uint16_t *du, int64_t n);

// ortq_rmsnorm_grad_cpu computes RMSNormGrad's dx (+ res where res is not NULL) for rows of h
// float16 elements (see ops.ll).
void ortq_rmsnorm_grad_cpu(const uint16_t *x, const uint16_t *w, const float *r, const uint16_t *dy, const uint16_t *res,
  uint16_t *dx, int64_t rows, int64_t h);

// ortq_rmsnorm_cpu computes RMSNorm's y and r for rows of h float16 elements (see ops.ll).
void ortq_rmsnorm_cpu(const uint16_t *x, const uint16_t *w, uint16_t *y, float *r, int64_t rows, int64_t h, float eps);

// ortq_rotary_cpu computes Rotary's y over rows of 2·half float16 channels (see ops.ll); it
// returns -1, and stops, at a position outside [0, npos).
int ortq_rotary_cpu(const uint16_t *x, const uint16_t *cs, const uint16_t *sn, const int64_t *pos, uint16_t *y,
  int64_t rows, int64_t half, int64_t div, int64_t seq, int bnsh, int64_t npos);

// ortq_masked_softmax_cpu computes MaskedSoftmax's p over rows of l float16 elements (see ops.ll).
void ortq_masked_softmax_cpu(const uint16_t *s, const uint16_t *m, uint16_t *p, int64_t rows, int64_t l, int64_t heads,
  int64_t q, int64_t sb, int64_t sh, int64_t sq);

// ortq_dequant_bnb4_cpu computes DequantBnb4's W from m bytes, blocks of bs elements (see ops.ll).
void ortq_dequant_bnb4_cpu(const uint8_t *bytes, const uint16_t *lut, const uint16_t *absmax, uint16_t *w, int64_t m, int64_t bs);

#endif
