package bench

import (
	"os"
	"path/filepath"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train"
)

// MemoryBreakdown splits a point's peak GPU memory into what ortq can account for, from
// sizes it knows (the weights file, the step's state vectors) and ONNX Runtime's arena
// statistics. Figures are bytes; a part that cannot be told apart is folded into the next
// (activations take what the arena's peak holds beyond weights and state). Weights shared
// from a buffer outside the arena (Point.SharedWeightBytes) count as weights, neither as
// arena nor as outside it.
type MemoryBreakdown struct {
	// Weights is the base model's initializers (the artifacts' weights.bin, 4-bit Linears
	// and fp16 embeddings and norms), which the session holds in its arena, except the
	// shared ones.
	Weights int64 `json:"weights_bytes"`
	// StepState is the LoRA weights, AdamW moments and gradient sum the step keeps on the
	// device (two sets for the device-resident step), or the LoRA inputs and gradient outputs
	// of one run for the host step.
	StepState int64 `json:"step_state_bytes"`
	// Activations is the rest of the arena's peak in use: activations, recomputed layers and
	// kernel workspaces at the step's high-water mark.
	Activations int64 `json:"activations_bytes"`
	// ArenaSlack is what the arena reserved beyond its peak in use (fragmentation, growth).
	ArenaSlack int64 `json:"arena_slack_bytes"`
	// OutsideArena is NVML's process peak beyond the arena: the CUDA context, cuBLAS and
	// cuDNN handles and workspaces, the copy sessions' providers.
	OutsideArena int64 `json:"outside_arena_bytes"`
}

// breakDown fills a point's MemoryBreakdown from its arena statistics and NVML peak (nil
// when either is missing).
func breakDown(p *Point, weights, state int64) *MemoryBreakdown {
	a := p.ORTArena
	if a == nil || p.PeakGPUBytes == 0 || a.PeakInUse <= 0 {
		return nil
	}
	shared := min(p.SharedWeightBytes, weights)
	m := &MemoryBreakdown{Weights: weights, StepState: state}
	m.Activations = max(0, a.PeakInUse-(weights-shared)-state)
	m.ArenaSlack = max(0, a.Reserved-a.PeakInUse)
	m.OutsideArena = max(0, int64(p.PeakGPUBytes)-max(a.Reserved, a.PeakInUse)-shared)
	return m
}

// stepStateBytes is the device memory the step's own state takes for n LoRA parameters.
func stepStateBytes(step train.StepKind, n int64) int64 {
	if step == train.StepDevice || step == train.StepGraph {
		return 2 * (4*n + 3) * 4 // two sets of params, exp_avg, exp_avg_sq, grad_sum, stats
	}
	return 2 * n * 4 // the LoRA inputs and the gradients of one run
}

// weightsBytes is the size of the artifacts' external weights file (manifest.ReadManifest
// has already checked it against the size manifest.json records).
func weightsBytes(dir string, man *manifest.Manifest) int64 {
	if st, err := os.Stat(filepath.Join(dir, man.Weights)); err == nil {
		return st.Size()
	}
	return 0
}
