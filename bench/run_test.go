package bench

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/prepare/preparetest"
)

// defaultModel extracts the embedded small Llama (4 layers, hidden 128, FFN 256, 4 heads /
// 2 KV heads of 32, vocab 3072, tied) once per test binary.
func defaultModel(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "ortq-bench-test-model")
	m, _, err := defaultmodel.Extract(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// defaultLinearParams is N for the default model: per layer q 128·128 + k 128·64 +
// v 128·64 + o 128·128 + gate/up/down 3·128·256, four layers, plus lm_head 128·3072.
const defaultLinearParams = 4*(128*128+128*64+128*64+128*128+3*128*256) + 128*3072

func TestRunCPU(t *testing.T) {
	ortruntest.Lib(t)
	cfg := DefaultConfig()
	cfg.Model = defaultModel(t)
	cfg.SeqLen, cfg.MicroBatch, cfg.Warmup, cfg.Steps, cfg.EvalBatches = 64, 2, 1, 3, 2
	cfg.LR = 1e-2 // large enough that 4 steps move perplexity on the synthetic stream
	cfg.Sweep = []Axis{{Name: "micro-batch", Values: []string{"1", "2"}}, {Name: "recompute", Values: []string{"none", "layer"}}}
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 4 {
		t.Fatalf("got %d points, want 4", len(res.Points))
	}
	for i, p := range res.Points {
		mb := i/2 + 1
		if rc := []string{"none", "layer"}[i%2]; p.Params.Recompute != rc {
			t.Errorf("point %d: recompute %q, want %q", i, p.Params.Recompute, rc)
		}
		if rc := p.Params.Recompute == "layer"; rc != (p.FLOPs != nil && p.FLOPs.HardwarePerStep > p.FLOPs.ModelPerStep) {
			t.Errorf("point %s: hardware FLOPs %+v", p.Label, p.FLOPs)
		}
		if p.Params.MicroBatch != mb || p.Params.SeqLen != 64 || p.TokensPerStep != mb*64 {
			t.Errorf("point %d: params %+v tokens/step %d", i, p.Params, p.TokensPerStep)
		}
		if p.StepTime.Count != 3 || !(p.TokensPerSec > 0) || len(p.Losses) != 4 {
			t.Errorf("point %s: %d step times, %v tokens/s, %d losses", p.Label, p.StepTime.Count, p.TokensPerSec, len(p.Losses))
		}
		if p.PeakRSSBytes == 0 {
			t.Errorf("point %s: no peak host RSS", p.Label)
		}
		if p.PeakGPUBytes != 0 || p.GPUSource != "" {
			t.Errorf("point %s: GPU memory %d (%s) on the CPU", p.Label, p.PeakGPUBytes, p.GPUSource)
		}
		// ONNX Runtime's CPU arena keeps statistics: the training session's peak holds at
		// least the initializers and the step's activations.
		if a := p.ORTArena; a == nil || a.Device != "cpu" || a.PeakInUse <= 0 || a.Reserved < a.PeakInUse || a.NumAllocs == 0 {
			t.Errorf("point %s: ONNX Runtime arena %+v", p.Label, a)
		}
		if f := p.FLOPs; f == nil || f.LinearParams != defaultLinearParams || f.Layers != 4 || f.AttnWidth != 128 ||
			f.LoRAParams != 4*(8*128+128*8+8*128+64*8) {
			t.Errorf("point %s: FLOPs %+v, want N=%d", p.Label, p.FLOPs, defaultLinearParams)
		}
		if !math.IsNaN(float64(p.MFU)) {
			t.Errorf("point %s: MFU %v without a GPU peak", p.Label, p.MFU)
		}
		if p.Eval == nil || !(p.Eval.Before.Perplexity > 1) || !(p.Eval.After.Perplexity > 1) || p.Eval.Before.Tokens != int64(2*mb*63) {
			t.Fatalf("point %s: eval %+v", p.Label, p.Eval)
		}
		// The synthetic stream is learnable: the steps must lower eval loss.
		if !(p.Eval.After.Loss < p.Eval.Before.Loss) {
			t.Errorf("point %s: eval loss %v → %v did not fall", p.Label, p.Eval.Before.Loss, p.Eval.After.Loss)
		}
	}
	if !(res.ReferenceMS > 0) || res.Machine.Runtime == "" || res.Machine.CPU == "" {
		t.Errorf("machine/reference missing: %+v ref %v", res.Machine, res.ReferenceMS)
	}
	phases := map[string]bool{}
	for _, s := range res.Timeline {
		phases[s.Phase] = true
		if s.HostRSS == 0 {
			t.Fatalf("timeline sample without host RSS: %+v", s)
		}
	}
	for _, ph := range []string{"eval_before", "open", "warmup", "measure", "eval_after", "done"} {
		if !phases[ph] {
			t.Errorf("timeline has no %q sample (phases %v)", ph, phases)
		}
	}

	out := t.TempDir()
	if err := res.WriteJSON(filepath.Join(out, "report.json")); err != nil {
		t.Fatal(err)
	}
	back, err := ReadResult(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Compare(back, res, DefaultThresholds()); err != nil || !c.OK() {
		t.Errorf("a run compared with itself: %v\n%s", err, c.Text())
	}
	if err := WriteTimeline(filepath.Join(out, "memory.jsonl"), res.Timeline); err != nil {
		t.Fatal(err)
	}
	figs, err := WritePlots(out, res, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range figs {
		for _, ext := range []string{".png", ".svg"} {
			st, err := os.Stat(filepath.Join(out, strings.TrimSuffix(f, ".png")+ext))
			if err != nil || st.Size() < 1000 {
				t.Errorf("plot %s%s: %v", f, ext, err)
			}
		}
	}
	md, err := Markdown(res, MarkdownOptions{Figures: figs})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md, "## ONNX Runtime's arena") || !strings.Contains(md, "| mb=2 seq=64 bits=4 recompute=layer targets=q_proj,v_proj | cpu |") {
		t.Errorf("markdown lacks the arena table:\n%s", md)
	}
	if !strings.Contains(md, "| ortq | 2 | 64 | 4 | none | q_proj,v_proj |") {
		t.Errorf("markdown lacks the mb=2 row:\n%s", md)
	}
	if testing.Verbose() {
		t.Logf("\n%s", md)
	}
}

func TestRunErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"nothing to run", func(c *Config) {}, "give --model"},
		{"both", func(c *Config) { c.Model, c.Artifacts = "m.onnx", "dir" }, "not several"},
		{"preset and model", func(c *Config) { c.Model, c.Preset = "m.onnx", "tiny" }, "not several"},
		{"recompute", func(c *Config) { c.Model, c.Recompute = "m.onnx", "all" }, `recompute "all"`},
		{"unknown preset", func(c *Config) { c.Preset = "gpt-5" }, `unknown preset "gpt-5"`},
		{"steps", func(c *Config) { c.Model, c.Steps = "m.onnx", 0 }, "--steps 0"},
		{"seq", func(c *Config) { c.Model, c.SeqLen = "m.onnx", 1 }, "--seq-len 1"},
		{"missing artifacts", func(c *Config) { c.Artifacts = filepath.Join(t.TempDir(), "none") }, "run `ortq prepare` first"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			var err error
			if err = c.Validate(); err == nil {
				ortruntest.Lib(t)
				_, err = Run(c)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestReportRecordsArtifactsOptions: with --artifacts the report's config records the
// options the artifacts were prepared with (their manifest), not prepare's defaults.
func TestReportRecordsArtifactsOptions(t *testing.T) {
	ortruntest.Lib(t)
	art := preparetest.Default(t, func(o *prepare.Options) { o.Rank, o.ShareDropoutMasks = 4, false })
	cfg := DefaultConfig()
	cfg.Artifacts, cfg.Recompute = art, "layer"
	cfg.SeqLen, cfg.MicroBatch, cfg.Warmup, cfg.Steps = 16, 1, 0, 1
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := res.Config.(Config).Prepare
	if got.Rank != 4 || got.ShareDropoutMasks {
		t.Errorf("report's prepare options: rank %d, shared dropout masks %v; the artifacts were prepared with rank 4 and masks per target", got.Rank,
			got.ShareDropoutMasks)
	}
}
