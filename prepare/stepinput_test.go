package prepare_test

import (
	"math"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/train/optim"
)

// nonZeroValues returns the LoRA tensors by name with every zero (PEFT starts B at 0)
// replaced by a small deterministic value, so that every gradient, and every dx, is exercised.
func nonZeroValues(params []optim.Param) map[string][]float32 {
	values := map[string][]float32{}
	for i, p := range params {
		for j := range p.Data {
			if p.Data[j] == 0 {
				p.Data[j] = float32(math.Sin(float64(i*131+j))) * 0.05
			}
		}
		values[p.Name] = p.Data
	}
	return values
}

// tokenBatch is a full batch of rows × seq deterministic token ids below 3000, labelled with
// themselves.
func tokenBatch(rows, seq int) data.Batch {
	b := data.Batch{Rows: rows, SeqLen: seq}
	for i := 0; i < rows*seq; i++ {
		id := int64((i*7919 + 13) % 3000)
		b.InputIDs = append(b.InputIDs, id)
		b.Labels = append(b.Labels, id)
		b.AttentionMask = append(b.AttentionMask, 1)
	}
	b.Tokens = rows * (seq - 1)
	return b
}
