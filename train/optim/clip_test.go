package optim

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/internal/safetensors"
)

// clipRefs is testdata/clip_refs.json, written by testdata/gen_clip_refs.py with torch:
// clip_grad_norm_ then AdamW on fixed gradients (float32 values as IEEE bits).
type clipRefs struct {
	Torch string `json:"torch"`
	Cases []struct {
		Name        string     `json:"name"`
		MaxNorm     float64    `json:"max_norm"`
		LR          float64    `json:"lr"`
		WeightDecay float64    `json:"weight_decay"`
		Param0      [][]uint32 `json:"param0"`
		Steps       []struct {
			Grads     [][]uint32 `json:"grads"`
			TotalNorm uint32     `json:"total_norm"`
			Clipped   [][]uint32 `json:"clipped"`
			Params    [][]uint32 `json:"params"`
			ExpAvg    [][]uint32 `json:"exp_avg"`
			ExpAvgSq  [][]uint32 `json:"exp_avg_sq"`
		} `json:"steps"`
	} `json:"cases"`
	PEFT peftClipRef `json:"peft"`
}

// peftClipRef is the case on hfimport's PEFT LoRA tensors and gradients (ref.safetensors):
// the total norm of every step and the first Keep values of each tensor after it.
type peftClipRef struct {
	Ref         string    `json:"ref"`
	Names       []string  `json:"names"`
	MaxNorm     float64   `json:"max_norm"`
	LR          float64   `json:"lr"`
	WeightDecay float64   `json:"weight_decay"`
	Scales      []float64 `json:"scales"`
	Keep        int       `json:"keep"`
	Steps       []struct {
		TotalNorm uint32     `json:"total_norm"`
		Params    [][]uint32 `json:"params"`
		ExpAvg    [][]uint32 `json:"exp_avg"`
		ExpAvgSq  [][]uint32 `json:"exp_avg_sq"`
	} `json:"steps"`
}

// TestClipMatchesTorch replays torch's clip_grad_norm_ + AdamW trajectories: the total norm,
// the clipped gradients, the parameters and both moments after every step must be within
// 1e-6 of torch's (relative to the largest |value| of each tensor), on steps where clipping
// triggers and where it does not.
func TestClipMatchesTorch(t *testing.T) {
	refs := loadClipRefs(t)
	clippedSteps, plainSteps := 0, 0
	for _, c := range refs.Cases {
		t.Run(c.Name, func(t *testing.T) {
			var params []Param
			for i, p := range c.Param0 {
				params = append(params, Param{Name: string(rune('a' + i)), Data: fromBits(p)})
			}
			cfg := DefaultAdamWConfig()
			cfg.LR, cfg.WeightDecay = c.LR, c.WeightDecay
			opt, err := NewAdamW(params, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for k, st := range c.Steps {
				grads := map[string][]float32{}
				for i, p := range params {
					grads[p.Name] = fromBits(st.Grads[i])
				}
				norm := ClipGrads(params, grads, c.MaxNorm)
				want := float64(math.Float32frombits(st.TotalNorm))
				if d := math.Abs(norm-want) / want; d > 1e-6 {
					t.Errorf("step %d: total norm %.9g, torch %.9g (rel %.2g)", k+1, norm, want, d)
				}
				if want > c.MaxNorm {
					clippedSteps++
				} else {
					plainSteps++
				}
				if err := opt.Step(grads, c.LR); err != nil {
					t.Fatal(err)
				}
				after := opt.State()
				for i, p := range params {
					within(t, k, p.Name+" clipped grad", grads[p.Name], st.Clipped[i])
					within(t, k, p.Name+" param", p.Data, st.Params[i])
					within(t, k, p.Name+" exp_avg", after.ExpAvg[p.Name], st.ExpAvg[i])
					within(t, k, p.Name+" exp_avg_sq", after.ExpAvgSq[p.Name], st.ExpAvgSq[i])
				}
			}
		})
	}
	if clippedSteps == 0 || plainSteps == 0 {
		t.Errorf("%d clipped and %d unclipped steps: the references must have both", clippedSteps, plainSteps)
	}
	t.Logf("torch %s: %d clipped and %d unclipped steps", refs.Torch, clippedSteps, plainSteps)
}

func loadClipRefs(t *testing.T) *clipRefs {
	t.Helper()
	b, err := os.ReadFile("testdata/clip_refs.json")
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("testdata/clip_refs.json absent: run testdata/gen_clip_refs.py where torch is installed")
	}
	if err != nil {
		t.Fatal(err)
	}
	var refs clipRefs
	if err := json.Unmarshal(b, &refs); err != nil {
		t.Fatal(err)
	}
	return &refs
}

// TestClipMatchesTorchOnPEFTGradients: clip_grad_norm_ + AdamW from the PEFT LoRA tensors and
// gradients of hfimport's llama32 fixture (mean-loss gradients: d loss_sum / d θ ÷ tokens,
// scaled per step so that some steps clip and one does not) give torch's total norms and
// values within 1e-6 (the first values of every tensor, which the fixture keeps).
func TestClipMatchesTorchOnPEFTGradients(t *testing.T) {
	c := loadClipRefs(t).PEFT
	f, err := safetensors.ReadFile(filepath.Join("..", "..", c.Ref))
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) []float32 {
		tt, ok := f.Get(name)
		if !ok {
			t.Fatalf("%s: no tensor %q", c.Ref, name)
		}
		v, err := tt.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tokens := get("token_count")[0]
	var params []Param
	mean := map[string][]float32{}
	for _, n := range c.Names {
		params = append(params, Param{Name: n, Data: get(n)})
		g := get(n + ".grad")
		for i := range g {
			g[i] /= tokens // torch: float32 tensor ÷ float32 tensor
		}
		mean[n] = g
	}
	opt, err := NewAdamW(params, AdamWConfig{LR: c.LR, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: c.WeightDecay})
	if err != nil {
		t.Fatal(err)
	}
	clipped := 0
	for k, st := range c.Steps {
		grads := map[string][]float32{}
		for _, p := range params {
			for _, v := range mean[p.Name] {
				grads[p.Name] = append(grads[p.Name], v*float32(c.Scales[k]))
			}
		}
		norm := ClipGrads(params, grads, c.MaxNorm)
		want := float64(math.Float32frombits(st.TotalNorm))
		if d := math.Abs(norm-want) / want; d > 1e-6 {
			t.Errorf("step %d: total norm %.9g, torch %.9g (rel %.2g)", k+1, norm, want, d)
		}
		if want > c.MaxNorm {
			clipped++
		}
		if err := opt.Step(grads, c.LR); err != nil {
			t.Fatal(err)
		}
		after := opt.State()
		for i, p := range params {
			within(t, k, p.Name+" param", p.Data[:c.Keep], st.Params[i])
			within(t, k, p.Name+" exp_avg", after.ExpAvg[p.Name][:c.Keep], st.ExpAvg[i])
			within(t, k, p.Name+" exp_avg_sq", after.ExpAvgSq[p.Name][:c.Keep], st.ExpAvgSq[i])
		}
	}
	if clipped == 0 || clipped == len(c.Steps) {
		t.Errorf("%d of %d steps clipped: the case must have both", clipped, len(c.Steps))
	}
}

// within fails when got differs from torch's want by more than 1e-6 of want's largest |value|.
func within(t *testing.T, step int, what string, got []float32, want []uint32) {
	t.Helper()
	maxRef, maxDiff := 0.0, 0.0
	for i, w := range want {
		wf := float64(math.Float32frombits(w))
		maxRef = math.Max(maxRef, math.Abs(wf))
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-wf))
	}
	if maxDiff > 1e-6*maxRef {
		t.Errorf("step %d %s: max diff %.3g exceeds 1e-6 of max |torch| %.3g", step+1, what, maxDiff, maxRef)
	}
}

// TestClipGrads checks clip_grad_norm_'s rule against float64 arithmetic: below the threshold
// nothing changes (bit for bit), above it the norm becomes max_norm (to float32 rounding), 0
// turns clipping off, and a non-finite norm leaves the gradients to the overflow check.
func TestClipGrads(t *testing.T) {
	order := []Param{{Name: "a", Data: make([]float32, 3)}, {Name: "b", Data: make([]float32, 2)}}
	mk := func(s float32) map[string][]float32 {
		return map[string][]float32{"a": {3 * s, 0, -4 * s}, "b": {12 * s, 0}} // norm 13·s
	}
	for _, c := range []struct {
		name      string
		scale     float32
		maxNorm   float64
		wantNorm  float64
		wantAfter float64 // the norm after clipping
	}{
		{"below", 0.01, 1, 0.13, 0.13},
		{"above", 1, 1, 13, 1},
		{"above, other threshold", 1, 6.5, 13, 6.5},
		{"off", 1, 0, 13, 13},
		{"infinite", float32(math.Inf(1)), 1, math.Inf(1), math.Inf(1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := mk(c.scale)
			orig := mk(c.scale)
			n := ClipGrads(order, g, c.maxNorm)
			if math.Abs(n-c.wantNorm) > 1e-6*c.wantNorm && !(math.IsInf(n, 1) && math.IsInf(c.wantNorm, 1)) {
				t.Errorf("norm %v, want %v", n, c.wantNorm)
			}
			after := 0.0
			for _, p := range order {
				for _, v := range g[p.Name] {
					after += float64(v) * float64(v)
				}
			}
			after = math.Sqrt(after)
			if math.Abs(after-c.wantAfter) > 1e-6*c.wantAfter && !(math.IsInf(after, 1) && math.IsInf(c.wantAfter, 1)) {
				t.Errorf("norm after clipping %v, want %v", after, c.wantAfter)
			}
			if c.wantAfter == c.wantNorm {
				for name, v := range orig {
					for i := range v {
						if math.Float32bits(v[i]) != math.Float32bits(g[name][i]) {
							t.Errorf("%s[%d] changed from %v to %v without clipping", name, i, v[i], g[name][i])
						}
					}
				}
			}
		})
	}
}
