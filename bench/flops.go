package bench

import (
	"fmt"
	"strings"
)

// FLOPs is the model's arithmetic per optimizer step (one micro-batch of T = rows·S tokens).
//
// The formula, stated once (what MFU means here):
//
//	N      = Linear parameters outside the embedding, lm_head included (tied or not): every
//	         weight that is multiplied, q/k/v/o/gate/up/down of every layer + lm_head.
//	P      = trainable LoRA parameters (A and B of every target).
//	forward   = 2·N·T + 2·P·T + A,   A = attention scores and values, 4·L·T·S·d per full
//	            square (QKᵀ and P·V, 2·S·d multiply-adds each per token); causal masking
//	            does ~half the work, so A = 2·L·T·S·d. d = heads·head_dim (= hidden for Llama).
//	backward  = input gradients of every matmul (≈ the forward's matmul FLOPs again: 2·N·T
//	            + 2·P·T + 2·A, attention having two inputs per matmul) plus weight gradients
//	            only for the trainable LoRA weights (2·P·T): the frozen base needs none, so
//	            the backward is ≈ 1× the forward, not the usual 2×.
//	model FLOPs    = 4·N·T + 6·P·T + 3·A
//	hardware FLOPs = model FLOPs + one more decoder forward when layers are recomputed
//	                 (2·(N − N_lm_head)·T + 2·P·T + A).
//
// MFU = model FLOPs/s ÷ the GPU's dense fp16 peak, the convention of the PyTorch
// papers (recomputation is not useful work); HFU uses hardware FLOPs. Elementwise ops,
// norms, softmax and the loss are not counted (they are memory-bound and small next to
// the matmuls). Dequantizing 4-bit weights is not counted either: it is overhead of the
// method, and counting it would flatter QLoRA.
type FLOPs struct {
	LinearParams    int64   `json:"linear_params"` // N
	LMHeadParams    int64   `json:"lm_head_params"`
	LoRAParams      int64   `json:"lora_params"` // P
	Layers          int     `json:"layers"`
	AttnWidth       int64   `json:"attn_width"` // d = heads·head_dim
	ModelPerStep    float64 `json:"model_per_step"`
	HardwarePerStep float64 `json:"hardware_per_step"`
}

// ModelShape is what the FLOP count needs to know about the model.
type ModelShape struct {
	LinearParams int64 // N, lm_head included
	LMHeadParams int64
	LoRAParams   int64
	Layers       int
	AttnWidth    int64
}

// CountFLOPs evaluates the formula above for rows×seq tokens per step.
func CountFLOPs(m ModelShape, rows, seq int, recompute bool) *FLOPs {
	T := float64(rows) * float64(seq)
	S := float64(seq)
	N, P := float64(m.LinearParams), float64(m.LoRAParams)
	A := 2 * float64(m.Layers) * T * S * float64(m.AttnWidth) // causal: half of 4·L·T·S·d
	model := 4*N*T + 6*P*T + 3*A
	hw := model
	if recompute {
		hw += 2*(N-float64(m.LMHeadParams))*T + 2*P*T + A
	}
	return &FLOPs{LinearParams: m.LinearParams, LMHeadParams: m.LMHeadParams, LoRAParams: m.LoRAParams,
		Layers: m.Layers, AttnWidth: m.AttnWidth, ModelPerStep: model, HardwarePerStep: hw}
}

// peakTable holds dense (no sparsity) fp16 tensor-core peaks from NVIDIA's data sheets,
// matched in order against NVML's device name (lower case): more specific names first.
var peakTable = []struct {
	match []string // all must occur
	name  string
	flops float64
}{
	{[]string{"h100", "pcie"}, "H100 PCIe", 756e12},
	{[]string{"h100", "nvl"}, "H100 NVL", 835e12},
	{[]string{"h100"}, "H100 SXM", 989e12}, // "NVIDIA H100 80GB HBM3"
	{[]string{"h200"}, "H200", 989e12},
	{[]string{"a100"}, "A100", 312e12},
}

// PeakFLOPS returns the dense fp16 peak for an NVML device name, and the table row used.
func PeakFLOPS(gpuName string) (float64, string, error) {
	n := strings.ToLower(gpuName)
	for _, row := range peakTable {
		ok := true
		for _, m := range row.match {
			ok = ok && strings.Contains(n, m)
		}
		if ok {
			return row.flops, row.name, nil
		}
	}
	return 0, "", fmt.Errorf("no dense fp16 peak known for GPU %q: pass --peak-flops (e.g. 989e12)", gpuName)
}
