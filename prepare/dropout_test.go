package prepare_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// TestRecomputeKeepsDropoutMasks: with LoRA dropout on, the recomputing training graph must
// use the forward pass's masks, so its gradients equal the plain graph's for the same draw
// (each session's seeded generators start at the same state), and dropout must change the
// gradients at all (the masks are real).
func TestRecomputeKeepsDropoutMasks(t *testing.T) {
	ortrun.TestLib(t)
	c := refCases(t)[0]
	ref := loadRef(t, filepath.Join(fixtures, c.variant, "ref_all.safetensors"))
	grads := func(dropout float64, rec bool) map[string][]float32 {
		o := prepare.DefaultOptions()
		o.Model, o.Out = filepath.Join(fixtures, c.variant, "model.onnx"), filepath.Join(t.TempDir(), "art")
		o.Targets, o.Bits, o.Dropout, o.LossChunk = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 16, dropout, 0
		if _, err := prepare.Run(o, nil); err != nil {
			t.Fatal(err)
		}
		eng, err := train.OpenEngineWith(o.Out, ortrun.Options{IntraOpThreads: 1}, train.EngineOptions{Train: true, Recompute: rec})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		params := map[string][]float32{}
		for _, p := range eng.Man.Params {
			params[p.Name] = ref.tensor[p.Name]
		}
		r, err := eng.Step(ref.batch, params, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r.Grads
	}
	plain, rec, none := grads(0.3, false), grads(0.3, true), grads(0, false)
	worst, changed := 0.0, 0.0
	for name, g := range plain {
		worst = math.Max(worst, relErr(rec[name], g))
		changed = math.Max(changed, relErr(none[name], g))
	}
	t.Logf("recompute vs plain with dropout 0.3: worst rel err %.2g; dropout vs none: %.2g", worst, changed)
	if worst > 1e-5 {
		t.Errorf("recomputation redrew the dropout masks: gradients differ by %.3g", worst)
	}
	if changed < 1e-2 {
		t.Errorf("dropout 0.3 changed the gradients by only %.3g: masks not applied", changed)
	}
}
