package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/internal/gpumem"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/shirou/gopsutil/v4/mem"
)

// hostMemory is the machine's physical memory (a variable so tests can pretend a
// smaller machine).
var hostMemory = func() (uint64, error) {
	vm, err := mem.VirtualMemory()
	if err != nil {
		return 0, err
	}
	return vm.Total, nil
}

// stepBytesPerToken is a deliberately low estimate of the host memory a CPU training step
// holds per token of the micro-batch: the logits and their gradient (8 copies of the
// vocabulary row, a block's share of it when the loss is chunked, which prepare does in
// passes.AutoLossChunks blocks above passes.AutoLossChunksAbove entries), about 24
// hidden-size vectors per layer, and attention's ~10 scores per layer and position. It is
// 0.6 times the formula's value because it only has to refuse what cannot fit: measured on
// the default model (4 layers, hidden 128, vocab 3,072), the formula gives 158/188 KB per
// token where a step took 115/148 KB at --max-seq-len 64/256.
func stepBytesPerToken(m manifest.Model, seqLen int) float64 {
	v := float64(m.Vocab)
	if m.Vocab > passes.AutoLossChunksAbove {
		v /= passes.AutoLossChunks
	}
	l := float64(m.Layers)
	return 0.6 * 4 * (8*v + 24*l*float64(m.Hidden) + 10*l*float64(seqLen))
}

// checkHostMemory refuses a --micro-batch/--max-seq-len whose CPU training step cannot
// fit in this machine's memory, before anything is allocated for it; rows is how many
// sequences a micro-batch can actually hold (the split may have fewer than
// --micro-batch). It names the flag and the largest value that fits.
func checkHostMemory(artifacts string, m manifest.Model, microBatch, rows, seqLen int) error {
	total, err := hostMemory()
	if err != nil || total == 0 {
		return nil // no figure to compare with: leave it to the run
	}
	base := float64(256 << 20)
	if st, err := os.Stat(filepath.Join(artifacts, manifest.WeightsFile)); err == nil {
		base += float64(st.Size())
	}
	s := stepMemory{kind: "host memory", where: "this machine's", avail: float64(total), base: base,
		perToken: func(seqLen int) float64 { return stepBytesPerToken(m, seqLen) }}
	return s.check(microBatch, rows, seqLen)
}

// deviceFree is the free memory of a CUDA device after the sessions are open (their weights
// are resident by then); a variable so tests can pretend a smaller GPU.
var deviceFree = gpumem.Free

// deviceBytesPerToken is a deliberately low estimate of the GPU memory a CUDA training
// step's activations take per token, with the weights already resident: the layer
// checkpoints (one fp16 hidden vector per layer; every layer's activations without
// recomputation), one layer's activations (≈24 hidden vectors, ≈10 score rows of ≈hidden/128
// heads), the chunked loss's block (≈7 bytes a vocabulary entry — half-precision
// logits, log-probabilities and probabilities — over passes.AutoLossChunks blocks) and,
// with recomputation, the dropout masks and products it keeps (manifest.Model.KeptMaskBytes,
// KeptProductBytes). It is
// 0.6 times the formula, so it refuses only what cannot fit: for the Llama-3.2-3B shape at
// --max-seq-len 512 it gives 0.47 MB per token with recomputation, where the step measured
// ≈1.4 MB per token beyond micro-batch 1 on an H200 (4.2 GiB at micro-batch 1, 8.3 GiB at 7).
func deviceBytesPerToken(m manifest.Model, seqLen int, recompute bool) float64 {
	h, l := float64(m.Hidden), float64(m.Layers)
	layer := 2 * (24*h + 10*float64(seqLen)*max(h/128, 1))
	perToken := 2*l*h + layer + 7*float64(m.Vocab)/passes.AutoLossChunks
	if !recompute {
		perToken += (l - 1) * layer
	} else {
		perToken += float64(m.KeptMaskBytes + m.KeptProductBytes)
	}
	return 0.6 * perToken
}

// checkDeviceMemory is checkHostMemory for a CUDA step: the activations of one micro-batch
// against the GPU's free memory once the weights are loaded.
func checkDeviceMemory(device string, m manifest.Model, recompute bool, microBatch, rows, seqLen int) error {
	free, err := deviceFree(device)
	if err != nil || free == 0 {
		return nil // no figure to compare with: leave it to the run
	}
	s := stepMemory{kind: "GPU memory", where: device + "'s free", avail: float64(free),
		perToken: func(seqLen int) float64 { return deviceBytesPerToken(m, seqLen, recompute) }}
	return s.check(microBatch, rows, seqLen)
}

// stepMemory is what one training step needs against what a memory holds: base bytes
// whatever the batch, perToken bytes for each token of the micro-batch.
type stepMemory struct {
	kind, where string // "host memory", "this machine's"
	avail, base float64
	perToken    func(seqLen int) float64
}

// check refuses the step when it cannot fit, naming the flag and the largest value that fits.
func (s stepMemory) check(microBatch, rows, seqLen int) error {
	need := func(rows, seqLen int) float64 {
		return s.base + float64(rows)*float64(seqLen)*s.perToken(seqLen)
	}
	if need(rows, seqLen) <= s.avail {
		return nil
	}
	gib := func(b float64) string { return fmt.Sprintf("%.1f GiB", b/(1<<30)) }
	what := fmt.Sprintf("--micro-batch %d with --max-seq-len %d", microBatch, seqLen)
	if rows < microBatch {
		what += fmt.Sprintf(" (%d sequences, all the data holds)", rows)
	}
	if fit := int((s.avail - s.base) / (float64(seqLen) * s.perToken(seqLen))); fit >= 1 {
		return usageError{fmt.Errorf("%s needs about %s of %s per step, more than %s %s: the largest --micro-batch that could fit is %d", what,
			gib(need(rows, seqLen)), s.kind, s.where, gib(s.avail), fit)}
	}
	lo, hi := 0, seqLen // largest sequence length that fits one row
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if need(1, mid) <= s.avail {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return usageError{fmt.Errorf("%s needs about %s of %s per step, more than %s %s: even --micro-batch 1 does not fit; the largest --max-seq-len that "+
		"could is %d",
		what, gib(need(rows, seqLen)), s.kind, s.where, gib(s.avail), lo)}
}
