package prepare_test

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/prepare/preparetest"
	"github.com/ortq/ortq/train"
	"google.golang.org/protobuf/proto"
)

// twoDocs is one packed row of document A (ids from a) then document B, both ending in EOS
// (2) and starting with BOS (1), with the document starts marked as data.Build marks them
// for isolated packing when isolate is set.
func twoDocs(a int64, isolate bool) data.Example {
	var ex data.Example
	for d, n := range []int{11, 13} {
		start := len(ex)
		ex = append(ex, 1)
		for i := range n - 2 {
			id := int32((int64(i)*37 + 5 + 401*int64(d)) % 3000)
			if d == 0 {
				id = int32((int64(i)*a + 17) % 3000)
			}
			ex = append(ex, id+3)
		}
		ex = append(ex, 2)
		if isolate {
			ex.MarkDocumentStart(start)
		}
	}
	return ex
}

// docBBatch is twoDocs as a batch of one row padded to 32, labelled on document B only.
func docBBatch(t *testing.T, a int64, isolate bool) data.Batch {
	t.Helper()
	b, err := data.MakeBatch([]data.Example{twoDocs(a, isolate)}, []int{0}, data.BatchOptions{BatchSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	b.Tokens = 0
	for j := range b.Labels {
		if j < 11 {
			b.Labels[j] = data.IgnoreIndex
		}
		if j > 0 && b.Labels[j] != data.IgnoreIndex {
			b.Tokens++
		}
	}
	return b
}

// TestPackedDocumentsIsolated: with documents packed apart, document B's loss and every
// LoRA gradient of it are bit for bit the same whatever document A before it in the row
// holds — in the training graph, the recomputing one and the device step (loss and the
// weights after one AdamW step); packed by plain concatenation they are not (the check can
// fail).
func TestPackedDocumentsIsolated(t *testing.T) {
	art := preparetest.Default(t, nil)
	for _, graph := range []string{"train", "recompute", "device"} {
		t.Run(graph, func(t *testing.T) {
			eng, err := train.OpenEngineWith(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1},
				train.EngineOptions{Train: graph != "device", Recompute: graph == "recompute", DeviceStep: graph == "device"})
			if err != nil {
				t.Fatal(err)
			}
			defer eng.Close()
			if !eng.Man.DocumentIDs() {
				t.Fatal("the default model's artifacts do not take document ids")
			}
			run := func(a int64, isolate bool) (float64, map[string][]float32) {
				init, err := train.LoadParams(filepath.Join(art, eng.Man.LoRAInit), eng.Man)
				if err != nil {
					t.Fatal(err)
				}
				vals := nonZeroValues(init)
				b := docBBatch(t, a, isolate)
				if graph != "device" {
					eng.DropoutSeed = 7 // the same LoRA dropout masks in every run
					r, err := eng.Step(b, vals, 1)
					if err != nil {
						t.Fatal(err)
					}
					return r.LossSum, r.Grads
				}
				out, p := stepOnce(t, eng, init, b)
				return out.Loss, p
			}
			same := func(isolate bool) bool {
				l1, g1 := run(7, isolate)
				l2, g2 := run(101, isolate)
				if math.IsNaN(l1) || l1 == 0 {
					t.Fatalf("loss %v", l1)
				}
				eq := math.Float64bits(l1) == math.Float64bits(l2)
				for k := range g1 {
					eq = eq && slices.Equal(g1[k], g2[k])
				}
				return eq
			}
			if !same(true) {
				t.Error("packed apart, document B's loss or gradients depend on document A")
			}
			if same(false) {
				t.Error("concatenated, document B's loss does not depend on document A: the check cannot fail")
			}
		})
	}
}

// TestPlainMaskUnchanged: on a 0/1 padding mask (one row padded) and positions 0..seq-1, the
// graph DocMask rewrote gives the logits of the graph before, bit for bit, padding included,
// for the stock export's decomposed and opset-23 forms and the default model.
func TestPlainMaskUnchanged(t *testing.T) {
	ortruntest.Lib(t)
	def, _, err := defaultmodel.Extract(filepath.Join(t.TempDir(), "model"))
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{def, filepath.Join(fixtures, "mask_untied", "model.onnx"), filepath.Join(fixtures, "opset23_gqa", "model.onnx")} {
		t.Run(filepath.Base(filepath.Dir(src)), func(t *testing.T) {
			var logits [2][]float32
			for i, ps := range [][]*ortgraph.Pass{{passes.Rotary, passes.ORTCompat}, {passes.Rotary, passes.DocMask, passes.ORTCompat}} {
				m, err := ortgraph.Load(src)
				if err != nil {
					t.Fatal(err)
				}
				ctx, err := ortgraph.RunPasses(ortgraph.NewGraph(m), nil, nil, ps...)
				if err != nil {
					t.Fatal(err)
				}
				if i == 1 && !ortgraph.ResultOf[*passes.DocMaskResult](ctx, passes.DocMask).DocumentIDs() {
					t.Fatalf("DocMask left the graph alone: %v", ortgraph.ResultOf[*passes.DocMaskResult](ctx, passes.DocMask).Skipped)
				}
				logits[i] = plainLogits(t, m)
			}
			if !slices.Equal(logits[0], logits[1]) {
				t.Fatal("logits differ after DocMask on a 0/1 mask")
			}
		})
	}
}

// plainLogits runs m on two rows of 9 tokens, the second padded after 5.
func plainLogits(t *testing.T, m *ortgraph.Model) []float32 {
	t.Helper()
	raw, err := proto.Marshal(m.P)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ortrun.NewSessionFromBytes(raw, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const rows, seq = 2, 9
	ids, mask, pos := make([]int64, rows*seq), make([]int64, rows*seq), make([]int64, rows*seq)
	for i := range ids {
		ids[i], pos[i] = int64(i*31+7)%200+3, int64(i%seq)
		if i < seq+5 {
			mask[i] = 1
		}
	}
	shape := []int64{rows, seq}
	in := map[string]*ortrun.Tensor{"input_ids": {DType: ortrun.Int64, Shape: shape, Data: ids}, "attention_mask": {DType: ortrun.Int64, Shape: shape, Data: mask}}
	if slices.Contains(s.InputNames(), "position_ids") {
		in["position_ids"] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: pos}
	}
	out, err := s.Run(in, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	return out["logits"].Data.([]float32)
}

// TestPlainMaskOption: prepare --plain-mask leaves the document comparison out of every
// graph and says so in the manifest (train then refuses --pack isolated).
func TestPlainMaskOption(t *testing.T) {
	for _, plain := range []bool{false, true} {
		art := preparetest.Default(t, func(o *prepare.Options) { o.PlainMask = plain })
		man, err := manifest.ReadManifest(art)
		if err != nil {
			t.Fatal(err)
		}
		if man.DocumentIDs() == plain {
			t.Errorf("--plain-mask=%v: manifest document ids %v", plain, man.DocumentIDs())
		}
	}
}
