package prepare_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"google.golang.org/protobuf/proto"
)

// TestExportsMatchTransformers runs each fixture's stock export (after the ort-compat
// pass, which ONNX Runtime needs for the opset-23 RotaryEmbedding at batch > 1) and
// compares its logits with transformers' on the unpadded positions.
func TestExportsMatchTransformers(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range refCases(t) {
		if c.set != "qv" {
			continue
		}
		t.Run(c.variant, func(t *testing.T) {
			ref := loadRef(t, filepath.Join(fixtures, c.variant, "ref_qv.safetensors"))
			m, err := ortgraph.Load(filepath.Join(fixtures, c.variant, "model.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ortgraph.RunPasses(ortgraph.NewGraph(m), nil, t.Logf, passes.ORTCompat); err != nil {
				t.Fatal(err)
			}
			buf, err := proto.Marshal(m.P)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ortrun.NewSessionFromBytes(buf, ortrun.Options{IntraOpThreads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			in := map[string]*ortrun.Tensor{"input_ids": {DType: ortrun.Int64, Shape: ref.batch.Shape(), Data: ref.batch.InputIDs}}
			for _, n := range s.InputNames() {
				if n == "attention_mask" {
					in[n] = &ortrun.Tensor{DType: ortrun.Int64, Shape: ref.batch.Shape(), Data: ref.batch.AttentionMask}
				}
			}
			out, err := s.Run(in, []string{"logits"})
			if err != nil {
				t.Fatal(err)
			}
			got, want := out["logits"].Data.([]float32), ref.tensor["logits"]
			V := len(want) / len(ref.batch.AttentionMask)
			var worst float64
			for i := range want {
				if ref.batch.AttentionMask[i/V] == 0 {
					continue
				}
				worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
			}
			t.Logf("max |logit − transformers| = %.3g", worst)
			if worst > 1e-4 {
				t.Errorf("logits differ from transformers by %.3g > 1e-4", worst)
			}
		})
	}
}
