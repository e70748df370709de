// Package kernels holds ortq's own ONNX Runtime custom ops (domain ai.ortq): fused kernels
// for the backward pass that no stock ONNX Runtime op provides, each with a CPU kernel and a
// CUDA kernel. The CUDA kernels are PTX (ops.ptx, from the hand-written LLVM IR in
// ops.ll by `make kernels`), loaded with the CUDA driver at run time: building ortq needs
// no CUDA toolkit.
//
// SwiGLU(g, u) → h = silu(g)·u, and its gradient SwiGLUGrad(g, u, dh) → (dg, du), for float16
// tensors of one shape: with s = σ(g), du = dh·g·s, dg = dh·u·s·(1 + g·(1 − s)), in float32
// and rounded once. SwiGLUGrad reads three tensors and writes two where the decomposed
// gradient ran eight elementwise kernels (two in the recomputation, six in the backward
// pass); SwiGLU is one kernel where the forward ran two. RMSNormGrad(x, w, r, dy[, res]) →
// dx (+ res): the RMSNorm gradient with respect to x (float32 r, one value a row), one block
// a row, where the decomposed float16 rule ran six elementwise kernels and a GEMV; res, the
// residual stream's other gradient, saves the Sum after it. RMSNorm(x, w) → (y, r): the
// forward norm (SimplifiedLayerNormalization, float32 statistics, the epsilon attribute) with
// 16-byte accesses, where ONNX Runtime's kernel reads one element a thread. Rotary(x, cos, sin, pos) →
// y: ONNX's RotaryEmbedding (halves, not interleaved; position ids) with 16-byte accesses,
// where ONNX Runtime's kernel reads one element a thread. MaskedSoftmax(s, m) → softmax(s + m)
// over the last axis, one warp a row: attention's additive mask and softmax in one kernel
// where ONNX Runtime runs a broadcasting Add and a Softmax over [batch, heads, q, L].
// DequantBnb4(bytes, lut, absmax) → W: an NF4/FP4 weight to float16 in one kernel (a table
// lookup a byte times its block's absmax), where the in-graph chain ran four (an int32 copy of
// the bytes, a Gather, the absmax product, the gate's copy).
package kernels

/*
#cgo CFLAGS: -I${SRCDIR}/../third_party/onnxruntime_go -O2
#cgo LDFLAGS: -ldl -lm
#include <stdlib.h>
#include "ops.h"
*/
import "C"

import (
	_ "embed"
	"errors"
	"sync"
	"unsafe"

	"github.com/ortq/ortq/ortgraph"
	ort "github.com/yalue/onnxruntime_go"
)

// Domain is the ONNX domain of ortq's ops; the names below are the ops above (ops.c spells
// them too: the session tests run nodes named by these).
const (
	Domain        = ortgraph.OrtqDomain
	SwiGLU        = ortgraph.OpSwiGLU
	SwiGLUGrad    = ortgraph.OpSwiGLUGrad
	RMSNormGrad   = ortgraph.OpRMSNormGrad
	RMSNorm       = ortgraph.OpRMSNorm
	Rotary        = ortgraph.OpRotary
	MaskedSoftmax = ortgraph.OpMaskedSoftmax
	DequantBnb4   = ortgraph.OpDequantBnb4
)

//go:embed ops.ptx
var opsPTX string

var (
	once sync.Once
	ops  []unsafe.Pointer
)

// Register adds the ai.ortq domain, with a CPU and a CUDA kernel for each op, to session
// options; ONNX Runtime must be initialised.
func Register(so *ort.SessionOptions) error {
	api := ort.API()
	if api == nil {
		return errors.New("registering the ai.ortq ops: ONNX Runtime is not initialised")
	}
	C.ortq_set_api((*C.OrtApi)(api)) // each time: the library may have been loaded again
	once.Do(func() {
		n := int(C.ortq_ops_init(C.CString(opsPTX))) // the ops and the PTX live as long as the process
		for i := range n {
			ops = append(ops, unsafe.Pointer(C.ortq_op(C.int(i))))
		}
	})
	return so.AddCustomOps(Domain, ops)
}

// swigluCPU runs the CPU kernel of SwiGLU on float16 bits (for the tests).
func swigluCPU(g, u []uint16) []uint16 {
	h := make([]uint16, len(g))
	if len(g) > 0 {
		C.ortq_swiglu_cpu((*C.uint16_t)(&g[0]), (*C.uint16_t)(&u[0]), (*C.uint16_t)(&h[0]), C.int64_t(len(g)))
	}
	return h
}

// rmsNormGradCPU runs the CPU kernel of RMSNormGrad on rows of len(w) float16 elements (for
// the tests).
func rmsNormGradCPU(x, w []uint16, r []float32, dy []uint16) []uint16 {
	dx := make([]uint16, len(x))
	if len(r) > 0 {
		C.ortq_rmsnorm_grad_cpu((*C.uint16_t)(&x[0]), (*C.uint16_t)(&w[0]), (*C.float)(&r[0]), (*C.uint16_t)(&dy[0]), nil,
			(*C.uint16_t)(&dx[0]), C.int64_t(len(r)), C.int64_t(len(w)))
	}
	return dx
}

// swigluGradCPU runs the CPU kernel of SwiGLUGrad on float16 bits (for the tests).
func swigluGradCPU(g, u, dh []uint16) (dg, du []uint16) {
	dg, du = make([]uint16, len(g)), make([]uint16, len(g))
	if len(g) > 0 {
		C.ortq_swiglu_grad_cpu((*C.uint16_t)(&g[0]), (*C.uint16_t)(&u[0]), (*C.uint16_t)(&dh[0]),
			(*C.uint16_t)(&dg[0]), (*C.uint16_t)(&du[0]), C.int64_t(len(g)))
	}
	return dg, du
}
