package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/manifest"
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
// vocabulary row, an eighth of it when the loss is chunked, which prepare does above
// 16,384 tokens), about 24 hidden-size vectors per layer, and attention's ~10 scores per
// layer and position. It is 0.6 times the formula's value because it only has to refuse
// what cannot fit: measured on the default model (4 layers, hidden 128, vocab 3,072), the
// formula gives 158/188 KB per token where a step took 115/148 KB at --max-seq-len 64/256.
func stepBytesPerToken(m manifest.Model, seqLen int) float64 {
	v := float64(m.Vocab)
	if m.Vocab > 16384 {
		v /= 8
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
	need := func(rows, seqLen int) float64 {
		return base + float64(rows)*float64(seqLen)*stepBytesPerToken(m, seqLen)
	}
	avail := float64(total)
	if need(rows, seqLen) <= avail {
		return nil
	}
	gib := func(b float64) string { return fmt.Sprintf("%.1f GiB", b/(1<<30)) }
	what := fmt.Sprintf("--micro-batch %d with --max-seq-len %d", microBatch, seqLen)
	if rows < microBatch {
		what += fmt.Sprintf(" (%d sequences, all the data holds)", rows)
	}
	if fit := int((avail - base) / (float64(seqLen) * stepBytesPerToken(m, seqLen))); fit >= 1 {
		return usageError{fmt.Errorf("%s needs about %s of host memory per step, more than this machine's %s: the largest --micro-batch that could fit is %d", what, gib(need(rows, seqLen)), gib(avail), fit)}
	}
	lo, hi := 0, seqLen // largest sequence length that fits one row
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if need(1, mid) <= avail {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return usageError{fmt.Errorf("%s needs about %s of host memory per step, more than this machine's %s: even --micro-batch 1 does not fit; the largest --max-seq-len that could is %d", what, gib(need(rows, seqLen)), gib(avail), lo)}
}
