package prepare_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// openEngine opens the engine of the artifacts in art and loads their initial LoRA values;
// the caller closes it.
func openEngine(t *testing.T, art string, ro ortrun.Options, eo train.EngineOptions) (*train.Engine, []optim.Param) {
	t.Helper()
	eng, err := train.OpenEngineWith(art, ro, eo)
	if err != nil {
		t.Fatal(err)
	}
	init, err := train.LoadParams(filepath.Join(art, eng.Man.LoRAInit), eng.Man)
	if err != nil {
		eng.Close()
		t.Fatal(err)
	}
	return eng, init
}

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

// graphNodes loads the ONNX file at path and returns its nodes (for tests counting them).
func graphNodes(t *testing.T, path string) []*onnxpb.NodeProto {
	t.Helper()
	m, err := ortgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return m.P.Graph.Node
}
