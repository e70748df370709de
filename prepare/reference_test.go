package prepare_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// These tests compare ortq's training graphs against PyTorch + PEFT. The references
// are written by testdata/gen/make_fixtures.py (run on a machine with torch, transformers,
// peft and onnx): for each tiny Llama exported by the stock dynamo exporter and each
// target set, the loss, every LoRA gradient and the values after one AdamW step, for a
// fixed batch and a fixed non-zero LoRA initialisation.

const fixtures = "../testdata/llama"

type refCase struct {
	variant, set string
	targets      []string
}

func refCases(t *testing.T) []refCase {
	entries, err := os.ReadDir(fixtures)
	if err != nil {
		t.Fatalf("fixtures %s: %v (regenerate with testdata/gen/make_fixtures.py)", fixtures, err)
	}
	sets := map[string][]string{
		"qv":  {"q_proj", "v_proj"},
		"all": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
	}
	var out []refCase
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		for set, tg := range sets {
			if _, err := os.Stat(filepath.Join(fixtures, e.Name(), "ref_"+set+".safetensors")); err == nil {
				out = append(out, refCase{e.Name(), set, tg})
			}
		}
	}
	if len(out) < 4 {
		t.Fatalf("expected at least 2 variants × 2 target sets of references in %s, found %d", fixtures, len(out))
	}
	return out
}

type reference struct {
	batch  data.Batch
	loss   float64
	tensor map[string][]float32
	shape  map[string][]int64
}

func loadRef(t *testing.T, path string) *reference {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &reference{tensor: map[string][]float32{}, shape: map[string][]int64{}}
	ints := map[string][]int64{}
	for _, tt := range f.Tensors {
		r.shape[tt.Name] = tt.Shape
		if tt.DType == safetensors.I64 {
			v, err := tt.Int64s()
			if err != nil {
				t.Fatal(err)
			}
			ints[tt.Name] = v
			continue
		}
		v, err := tt.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		r.tensor[tt.Name] = v
	}
	sh := r.shape["input_ids"]
	b := data.Batch{Rows: int(sh[0]), SeqLen: int(sh[1]), InputIDs: ints["input_ids"], Labels: ints["labels"], AttentionMask: ints["attention_mask"]}
	if b.AttentionMask == nil {
		b.AttentionMask = make([]int64, len(b.InputIDs))
		for i := range b.AttentionMask {
			b.AttentionMask[i] = 1
		}
	}
	r.batch = b
	r.loss = float64(r.tensor["loss"][0])
	return r
}

// relErr is max |a − b| over max |b|, the tolerance measure.
func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range b {
		num = math.Max(num, math.Abs(float64(a[i])-float64(b[i])))
		den = math.Max(den, math.Abs(float64(b[i])))
	}
	if den == 0 {
		return num
	}
	return num / den
}

func prepareFor(t *testing.T, model string, targets []string, bits int, lossChunk ...int) string {
	t.Helper()
	o := prepare.DefaultOptions()
	o.Model, o.Out, o.Targets, o.Bits, o.Dropout = model, filepath.Join(t.TempDir(), "art"), targets, bits, 0
	o.LossChunks = 0
	if len(lossChunk) > 0 {
		o.LossChunks = lossChunk[0]
	}
	if _, err := prepare.Run(o, t.Logf); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	return o.Out
}

func TestGradientsMatchPEFT(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range refCases(t) {
		modes := []struct {
			name      string
			chunk     int
			recompute bool
		}{
			{"", 0, false},
			// The chunked lm_head+loss (4 blocks along the sequence, the last padded
			// inside the graph when the length is not a multiple of 4) and per-layer
			// recomputation must not change the loss or the gradients.
			{"/chunked", 4, false},
			{"/recompute", 0, true},
			{"/chunked+recompute", 4, true},
		}
		for _, mode := range modes {
			name := c.variant + "/" + c.set + mode.name
			t.Run(name, func(t *testing.T) {
				ref := loadRef(t, filepath.Join(fixtures, c.variant, "ref_"+c.set+".safetensors"))
				dir := prepareFor(t, filepath.Join(fixtures, c.variant, "model.onnx"), c.targets, 16, mode.chunk)
				eng, err := train.OpenEngineWith(dir, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, train.EngineOptions{Train: true, Recompute: mode.recompute})
				if err != nil {
					t.Fatal(err)
				}
				defer eng.Close()
				params := map[string][]float32{}
				var ps []optim.Param
				for _, p := range eng.Man.Params {
					v, ok := ref.tensor[p.Name]
					if !ok {
						t.Fatalf("reference lacks %s", p.Name)
					}
					params[p.Name] = append([]float32(nil), v...)
					ps = append(ps, optim.Param{Name: p.Name, Data: params[p.Name]})
				}
				res, err := eng.Step(ref.batch, params, 1)
				if err != nil {
					t.Fatal(err)
				}
				loss := res.LossSum / float64(res.Tokens)
				if e := math.Abs(loss-ref.loss) / math.Abs(ref.loss); e > 1e-4 {
					t.Errorf("loss %.7f, PyTorch %.7f (rel err %.2g > 1e-4)", loss, ref.loss, e)
				}
				if want := float64(ref.tensor["token_count"][0]); float64(res.Tokens) != want {
					t.Errorf("token count %d, PyTorch %v", res.Tokens, want)
				}
				worst := 0.0
				grads := map[string][]float32{}
				for _, p := range eng.Man.Params {
					g := res.Grads[p.Name]
					mean := make([]float32, len(g))
					for i, v := range g {
						mean[i] = float32(float64(v) / float64(res.Tokens))
					}
					grads[p.Name] = mean
					e := relErr(mean, ref.tensor[p.Name+".grad"])
					worst = math.Max(worst, e)
					if e > 1e-4 {
						t.Errorf("gradient of %s: rel err %.3g > 1e-4", p.Name, e)
					}
				}
				t.Logf("loss %.6f vs %.6f; worst gradient rel err %.2g over %d tensors", loss, ref.loss, worst, len(grads))
				// One AdamW step with the reference's hyper-parameters.
				cfg := optim.DefaultAdamWConfig()
				cfg.LR, cfg.WeightDecay = 1e-2, 0.01
				opt, err := optim.NewAdamW(ps, cfg)
				if err != nil {
					t.Fatal(err)
				}
				// Step with PyTorch's own gradients so the 1e-6 bound measures the optimizer alone.
				refGrads := map[string][]float32{}
				for _, p := range eng.Man.Params {
					refGrads[p.Name] = ref.tensor[p.Name+".grad"]
				}
				if err := opt.Step(refGrads, cfg.LR); err != nil {
					t.Fatal(err)
				}
				for _, p := range ps {
					want := ref.tensor[p.Name+".step1"]
					var worst float64
					for i := range want {
						worst = math.Max(worst, math.Abs(float64(p.Data[i])-float64(want[i])))
					}
					if worst > 1e-6 {
						t.Errorf("AdamW step of %s: max abs err %.3g > 1e-6", p.Name, worst)
					}
				}
			})
		}
	}
}

// TestAccumulationEqualsBatch: accumulating micro-batches (token-weighted) gives the
// gradient of the whole batch.
func TestAccumulationEqualsBatch(t *testing.T) {
	ortruntest.Lib(t)
	c := refCases(t)[0]
	for _, rc := range refCases(t) {
		if strings.Contains(rc.variant, "mask") {
			c = rc // padded rows make the token weighting matter
		}
	}
	ref := loadRef(t, filepath.Join(fixtures, c.variant, "ref_"+c.set+".safetensors"))
	dir := prepareFor(t, filepath.Join(fixtures, c.variant, "model.onnx"), c.targets, 16)
	eng, err := train.OpenEngine(dir, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	params := map[string][]float32{}
	var ps []optim.Param
	for _, p := range eng.Man.Params {
		params[p.Name] = ref.tensor[p.Name]
		ps = append(ps, optim.Param{Name: p.Name, Data: params[p.Name]})
	}
	full, err := eng.Step(ref.batch, params, 1)
	if err != nil {
		t.Fatal(err)
	}
	rows := func(lo, hi int) data.Batch {
		b := ref.batch
		s := b.SeqLen
		return data.Batch{Rows: hi - lo, SeqLen: s, InputIDs: b.InputIDs[lo*s : hi*s], AttentionMask: b.AttentionMask[lo*s : hi*s], Labels: b.Labels[lo*s : hi*s]}
	}
	acc := optim.NewGradAccumulator(ps)
	for _, mb := range []data.Batch{rows(0, 1), rows(1, ref.batch.Rows)} {
		r, err := eng.Step(mb, params, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := acc.Add(r.Grads, r.LossSum, r.Tokens); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string][]float32{}
	if _, err := acc.Finish(got); err != nil {
		t.Fatal(err)
	}
	for _, p := range eng.Man.Params {
		want := make([]float32, len(full.Grads[p.Name]))
		for i, v := range full.Grads[p.Name] {
			want[i] = float32(float64(v) / float64(full.Tokens))
		}
		if e := relErr(got[p.Name], want); e > 1e-5 {
			t.Errorf("%s: accumulated gradient rel err %.3g > 1e-5", p.Name, e)
		}
	}
}

// TestFourBitLossNearSixteenBit bounds the loss change that 4-bit quantization causes on
// the reference batch (random N(0, 0.02) weights, block 32).
func TestFourBitLossNearSixteenBit(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range refCases(t) {
		if c.set != "qv" {
			continue
		}
		t.Run(c.variant, func(t *testing.T) {
			ref := loadRef(t, filepath.Join(fixtures, c.variant, "ref_"+c.set+".safetensors"))
			var losses [2]float64
			for i, bits := range []int{16, 4} {
				dir := prepareFor(t, filepath.Join(fixtures, c.variant, "model.onnx"), c.targets, bits)
				eng, err := train.OpenEngine(dir, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, true)
				if err != nil {
					t.Fatal(err)
				}
				params := map[string][]float32{}
				for _, p := range eng.Man.Params {
					params[p.Name] = ref.tensor[p.Name]
				}
				r, err := eng.Step(ref.batch, params, 1)
				eng.Close()
				if err != nil {
					t.Fatal(err)
				}
				losses[i] = r.LossSum / float64(r.Tokens)
				if bits == 4 {
					b, _ := json.Marshal(eng.Man.Quant[0])
					t.Logf("quantization of the first Linear: %s", b)
				}
			}
			d := math.Abs(losses[1]-losses[0]) / losses[0]
			t.Logf("loss 16-bit %.6f, 4-bit %.6f (rel diff %.2g)", losses[0], losses[1], d)
			if d > 0.01 {
				t.Errorf("4-bit loss %.6f differs from 16-bit %.6f by %.2g > 1%%", losses[1], losses[0], d)
			}
		})
	}
}
