package prepare_test

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
)

// TestRecomputeKeepsDropoutMasks: with LoRA dropout on, the recomputing training graph must
// recompute the forward pass's masks (or keep them, --keep-dropout-masks; and with --keep-kv
// the k and v products), so its gradients equal the plain graph's for the same dropout
// seed; dropout must change the gradients at all (the masks are real); a new session with
// the same seed reproduces the gradients bit for bit (what exact resume needs), and another
// seed draws other masks.
func TestRecomputeKeepsDropoutMasks(t *testing.T) {
	ortruntest.Lib(t)
	c := refCases(t)[0]
	ref := loadRef(t, filepath.Join(fixtures, c.variant, "ref_all.safetensors"))
	masks := map[bool]int{}    // GreaterOrEqual nodes of the recomputing graph, by KeepDropoutMasks
	products := map[bool]int{} // MatMul nodes of the recomputing graph keeping masks, by KeepKV
	grads := func(dropout float64, rec, keep bool, seed uint64, kv ...bool) map[string][]float32 {
		o := prepare.DefaultOptions()
		o.KeepDropoutMasks = keep
		o.KeepKV = len(kv) > 0 && kv[0]
		o.Model, o.Out = filepath.Join(fixtures, c.variant, "model.onnx"), filepath.Join(t.TempDir(), "art")
		o.Targets, o.Bits, o.Dropout, o.LossChunks = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 16, dropout, 0
		if _, err := prepare.Run(o, nil); err != nil {
			t.Fatal(err)
		}
		if rec && o.KeepKV {
			checkKeptKV(t, o.Out)
		}
		if rec && keep {
			products[o.KeepKV] = countOps(t, filepath.Join(o.Out, "train_recompute.onnx"))["MatMul"]
		}
		if rec && !o.KeepKV {
			masks[keep] = countOps(t, filepath.Join(o.Out, "train_recompute.onnx"))["GreaterOrEqual"]
			man, err := manifest.ReadManifest(o.Out)
			if err != nil {
				t.Fatal(err)
			}
			// A byte per input element of each mask: the in of an A factor [r, in], once per
			// input with shared masks (the default: q/k/v read one input, gate/up another).
			want, counted := int64(0), map[string]bool{}
			for _, p := range man.Params {
				if in := sharedInput(p.Module, o.ShareDropoutMasks); keep && p.Kind == "A" && !counted[in] {
					counted[in] = true
					want += p.Shape[1]
				}
			}
			if man.Model.KeptMaskBytes != want {
				t.Errorf("keep %v: manifest kept_mask_bytes %d, want %d", keep, man.Model.KeptMaskBytes, want)
			}
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
		eng.DropoutSeed = seed
		r, err := eng.Step(ref.batch, params, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r.Grads
	}
	plain, rec, kept := grads(0.3, false, false, 5), grads(0.3, true, false, 5), grads(0.3, true, true, 5)
	kv := grads(0.3, true, true, 5, true)
	none := grads(0, false, false, 5)
	again, other := grads(0.3, false, false, 5), grads(0.3, false, false, 6)
	worst, changed, reseeded, repeat := 0.0, 0.0, 0.0, 0.0
	for name, g := range plain {
		worst = math.Max(worst, math.Max(relErr(rec[name], g), math.Max(relErr(kept[name], g), relErr(kv[name], g))))
		changed = math.Max(changed, relErr(none[name], g))
		reseeded = math.Max(reseeded, relErr(other[name], g))
		repeat = math.Max(repeat, relErr(again[name], g))
	}
	t.Logf("dropout 0.3: recompute (masks recomputed or kept, k and v products kept) vs plain worst rel err %.2g; dropout vs none %.2g; seed 6 vs 5 %.2g; "+
		"new session, same seed %.2g", worst, changed, reseeded, repeat)
	if masks[true] >= masks[false] {
		t.Errorf("--keep-dropout-masks: the recomputing graph has %d mask comparisons, against %d without it", masks[true], masks[false])
	}
	if products[true] >= products[false] {
		t.Errorf("--keep-kv: the recomputing graph has %d MatMuls, against %d without it", products[true], products[false])
	}
	if repeat != 0 {
		t.Errorf("a new session with the same dropout seed changed the gradients by %.3g: masks are not a function of the seed", repeat)
	}
	if reseeded < 1e-2 {
		t.Errorf("dropout seed 6 gave the gradients of seed 5 (rel diff %.3g): the seed does not select the masks", reseeded)
	}
	if worst > 1e-5 {
		t.Errorf("recomputation redrew the dropout masks: gradients differ by %.3g", worst)
	}
	if changed < 1e-2 {
		t.Errorf("dropout 0.3 changed the gradients by only %.3g: masks not applied", changed)
	}
}

// sharedInput names the input a LoRA module reads, as far as dropout masks go: with shared
// masks, a layer's q/k/v_proj share one and its gate/up_proj another; else each module its own.
func sharedInput(module string, shared bool) string {
	if !shared {
		return module
	}
	for kind, in := range map[string]string{"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "gate_proj": "mlp_in", "up_proj": "mlp_in"} {
		if strings.HasSuffix(module, "."+kind) {
			return strings.TrimSuffix(module, kind) + in
		}
	}
	return module
}

// checkKeptKV: with --keep-kv the manifest counts the kept k and v products (the out of
// their B factors [out, r], in the graph's float type).
func checkKeptKV(t *testing.T, dir string) {
	t.Helper()
	man, err := manifest.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	elem := int64(2)
	if man.Model.Precision == "float" {
		elem = 4
	}
	want := int64(0)
	for _, p := range man.Params {
		if p.Kind == "B" && (strings.HasSuffix(p.Module, ".k_proj") || strings.HasSuffix(p.Module, ".v_proj")) {
			want += elem * p.Shape[0]
		}
	}
	if man.Model.KeptProductBytes != want {
		t.Errorf("--keep-kv: manifest kept_product_bytes %d, want %d", man.Model.KeptProductBytes, want)
	}
}
