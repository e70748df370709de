package generate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/export/exporttest"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	exporttest.Cleanup()
	os.Exit(code)
}

// TestGreedyMatchesEvalGraph: greedy generation through the KV cache picks, at every step,
// the argmax of the eval graph's logits for the whole sequence so far (the eval graph run
// afresh each step, no cache), with and without a LoRA adapter, on both fixtures.
func TestGreedyMatchesEvalGraph(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		model  string
		prompt []int64
		lora   bool
	}{
		{"default", []int64{1, 45, 310, 7}, false},
		{"default", []int64{1, 45, 310, 7}, true},
		{"llama32", []int64{1, 17, 99}, true},
		{"default-nf4", []int64{1, 45, 310, 7}, true},
		{"default-nf4-dq", []int64{1, 45, 310, 7}, true},
	} {
		art := exporttest.Artifacts(t, c.model)
		man, err := manifest.ReadManifest(art)
		if err != nil {
			t.Fatal(err)
		}
		o := export.Options{Artifacts: art, Out: filepath.Join(t.TempDir(), "export")}
		var vals map[string][]float32
		if c.lora {
			o.Adapter, vals = exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 2)
		}
		if _, err := export.Run(o); err != nil {
			t.Fatal(err)
		}
		m, err := Open(o.Out, ortrun.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := NewSampler(0, 0, 1, 0)
		got, st, err := m.Generate(c.prompt, Options{MaxNewTokens: 12, Sampler: s})
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		seq := append([]int64(nil), c.prompt...)
		vocab := int(man.Model.Vocab)
		for i, id := range got {
			logits := exporttest.EvalLogits(t, art, man, seq, vals)
			if want := argmax(logits[(len(seq)-1)*vocab:]); int64(want) != id {
				t.Fatalf("%s lora=%v: new token %d is %d, the eval graph's argmax is %d", c.model, c.lora, i, id, want)
			}
			seq = append(seq, id)
		}
		if st.NewTokens != 12 || st.PromptTokens != len(c.prompt) {
			t.Errorf("stats %+v", st)
		}
	}
}

// TestGenerateStopsAtEOS: a token given as EOS ends the run (returned, not streamed).
func TestGenerateStopsAtEOS(t *testing.T) {
	ortruntest.Lib(t)
	art := exporttest.Artifacts(t, "default")
	out := filepath.Join(t.TempDir(), "export")
	if _, err := export.Run(export.Options{Artifacts: art, Out: out}); err != nil {
		t.Fatal(err)
	}
	m, err := Open(out, ortrun.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, _ := NewSampler(0, 0, 1, 0)
	all, _, err := m.Generate([]int64{1, 45}, Options{MaxNewTokens: 6, Sampler: s})
	if err != nil {
		t.Fatal(err)
	}
	k := 2 // the first position whose token did not occur before
	for k > 0 && contains(all[:k], all[k]) {
		k--
	}
	var streamed []int
	got, st, err := m.Generate([]int64{1, 45}, Options{MaxNewTokens: 6, Sampler: s, EOS: []int{int(all[k])},
		OnToken: func(id int) error { streamed = append(streamed, id); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != k+1 || got[k] != all[k] || !st.StoppedAtEOS || len(streamed) != k {
		t.Errorf("EOS %d: got %v (streamed %v), stats %+v; without EOS %v", all[k], got, streamed, st, all)
	}
	if _, _, err := m.Generate([]int64{1, 99999}, Options{MaxNewTokens: 1, Sampler: s}); err == nil {
		t.Error("a token outside the vocabulary was accepted")
	}
}

func contains(v []int64, x int64) bool {
	for _, y := range v {
		if y == x {
			return true
		}
	}
	return false
}

// TestFloat16Model: a float16 model (imported as float16, 4-bit base) exports with a float16
// cache and logits, and generate runs it (a prefill, then a cached step, through the masked
// first slot a float16 cache starts with): its logits are the float32 model's within float16
// rounding (measured 2.3e-4; the logits are below 1).
func TestFloat16Model(t *testing.T) {
	ortruntest.Lib(t)
	prompt := []int64{1, 17, 99, 4}
	var logits [2][]float32
	for i, name := range []string{"llama32", "llama32-fp16"} {
		out := filepath.Join(t.TempDir(), "export")
		if _, err := export.Run(export.Options{Artifacts: exporttest.Artifacts(t, name), Out: out}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m, err := Open(out, ortrun.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		st := m.NewState()
		if logits[i], err = m.Forward(st, prompt[:3]); err == nil {
			var last []float32
			last, err = m.Forward(st, prompt[3:])
			logits[i] = append(logits[i], last...)
		}
		m.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	d := 0.0
	for j := range logits[0] {
		d = max(d, float64(abs32(logits[0][j]-logits[1][j])))
	}
	t.Logf("float16 vs float32 model: max |Δlogit| %.3g", d)
	if d > 2e-2 {
		t.Errorf("float16 vs float32 model: max |Δlogit| %.3g > 2e-2", d)
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

// TestONNXAdapterInputs: generate feeds an onnx-adapter export zeros (the base model) until
// UseAdapter reads the .onnx_adapter, and then gives the separate-MatMul export's logits;
// an adapter for another model is refused naming the file.
func TestONNXAdapterInputs(t *testing.T) {
	ortruntest.Lib(t)
	art := exporttest.Artifacts(t, "llama32")
	man, err := manifest.ReadManifest(art)
	if err != nil {
		t.Fatal(err)
	}
	adapter, _ := exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 4)
	prompt := []int64{1, 17, 99, 4}
	logits := func(o export.Options, adapterFile string) []float32 {
		o.Artifacts, o.Out = art, filepath.Join(t.TempDir(), "export")
		if _, err := export.Run(o); err != nil {
			t.Fatal(err)
		}
		m, err := Open(o.Out, ortrun.Options{IntraOpThreads: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if adapterFile != "" {
			if err := m.UseAdapter(filepath.Join(o.Out, adapterFile)); err != nil {
				t.Fatal(err)
			}
		}
		l, err := m.Forward(m.NewState(), prompt)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	base, separate := logits(export.Options{}, ""), logits(export.Options{Adapter: adapter}, "")
	zeros := logits(export.Options{Adapter: adapter, Format: export.FormatONNXAdapter}, "")
	applied := logits(export.Options{Adapter: adapter, Format: export.FormatONNXAdapter}, export.AdapterFile)
	for _, c := range []struct {
		name      string
		got, want []float32
	}{{"no adapter = base", zeros, base}, {"adapter = separate MatMuls", applied, separate}} {
		for i := range c.got {
			if d := abs32(c.got[i] - c.want[i]); d > 1e-6 {
				t.Fatalf("%s: logit %d differs by %g", c.name, i, d)
			}
		}
	}
	// The default model's adapter does not fit llama32's inputs.
	dart := exporttest.Artifacts(t, "default")
	dman, _ := manifest.ReadManifest(dart)
	dad, _ := exporttest.RandomAdapter(t, dman, filepath.Join(t.TempDir(), "drun"), 4)
	dout := filepath.Join(t.TempDir(), "dexport")
	if _, err := export.Run(export.Options{Artifacts: dart, Adapter: dad, Format: export.FormatONNXAdapter, Out: dout}); err != nil {
		t.Fatal(err)
	}
	m, err := Open(filepath.Join(t.TempDir(), "none"), ortrun.Options{})
	if err == nil {
		m.Close()
		t.Fatal("opened a missing export")
	}
	out := filepath.Join(t.TempDir(), "export")
	export.Run(export.Options{Artifacts: art, Adapter: adapter, Format: export.FormatONNXAdapter, Out: out})
	if m, err = Open(out, ortrun.Options{IntraOpThreads: 1}); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.UseAdapter(filepath.Join(dout, export.AdapterFile)); err == nil || !strings.Contains(err.Error(), dout) {
		t.Errorf("another model's adapter: %v", err)
	}
}
