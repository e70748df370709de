package generate

import (
	"os"
	"path/filepath"
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
