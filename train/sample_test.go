package train_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/train"
)

// paramSampler is a Sampler that records the LoRA values it is given: its completion is
// their sum, so a test can tell which values a round saw.
type paramSampler struct {
	seen []map[string][]float32
}

func (s *paramSampler) Sample(params map[string][]float32) ([]train.Sample, error) {
	s.seen = append(s.seen, params)
	sum := 0.0
	for _, v := range params {
		for _, x := range v {
			sum += float64(x)
		}
	}
	round := int64(len(s.seen))
	return []train.Sample{
		{Prompt: "first | prompt", Completion: fmt.Sprintf("%.9g", sum), IDs: []int64{round, 2}},
		{Prompt: "second", Completion: "line\nbreak", IDs: []int64{round}},
	}, nil
}

// TestFakeLoopSamples: with SampleEvery 2 over 6 steps the Sampler runs after steps 2 and 4
// and once at the end (not twice at step 6), with the values the checkpoint of that step
// holds; each sample is printed, written to run.jsonl as an event "sample" line with step,
// prompt, completion and ids, and the last round is the report's, in report.md too.
func TestFakeLoopSamples(t *testing.T) {
	out := filepath.Join(fastTempDir(t), "run")
	cfg := fakeConfig(out)
	s := &paramSampler{}
	var log bytes.Buffer
	cfg.SampleEvery, cfg.Sampler, cfg.SaveEvery, cfg.LogEvery, cfg.Log = 2, s, 2, 3, &log
	rep, err := runFake(context.Background(), newFakeBackend(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.seen) != 3 {
		t.Fatalf("%d sample rounds, want 3 (steps 2, 4 and the end)", len(s.seen))
	}
	for i, step := range []int{2, 4, 6} {
		ck, err := train.LoadCheckpoint(filepath.Join(out, train.CheckpointsDir, train.CheckpointName(step)))
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range ck.Params {
			if !slices.Equal(s.seen[i][name], want) {
				t.Errorf("round %d saw %s = %v, the checkpoint of step %d holds %v", i+1, name, s.seen[i][name], step, want)
			}
		}
		for _, line := range []string{fmt.Sprintf("sample @ step %d: \"first | prompt\" → \"", step),
			fmt.Sprintf("sample @ step %d: \"second\" → \"line\\nbreak\"\n", step)} {
			if !strings.Contains(log.String(), line) {
				t.Errorf("the log lacks %q:\n%s", line, log.String())
			}
		}
	}
	var lines []map[string]any
	f, err := os.Open(filepath.Join(out, "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		if m["event"] == "sample" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 6 {
		t.Fatalf("%d sample lines in run.jsonl, want 6: %v", len(lines), lines)
	}
	want := `{"completion":"line\nbreak","event":"sample","ids":[3],"prompt":"second","step":6}`
	last := lines[5]
	if _, ok := last["time"].(string); !ok {
		t.Errorf("sample line without a time: %v", last)
	}
	delete(last, "time")
	if b, _ := json.Marshal(last); string(b) != want {
		t.Errorf("last sample line %s, want %s (and a time)", b, want)
	}
	if len(rep.Samples) != 2 || rep.Samples[0].Step != 6 || !slices.Equal(rep.Samples[0].IDs, []int64{3, 2}) {
		t.Errorf("report samples %+v, want round 3 at step 6", rep.Samples)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil || !strings.Contains(string(md),
		"## Samples\n\nGreedy completions after step 6.\n\n| prompt | completion |\n|---|---|\n| first \\| prompt | ") ||
		!strings.Contains(string(md), "| second | line break |\n") {
		t.Errorf("report.md samples section wrong (%v):\n%s", err, md)
	}
}

// failingSampler fails its rounds listed in fail (1-based) and samples otherwise.
type failingSampler struct {
	paramSampler
	fail []int
}

func (s *failingSampler) Sample(params map[string][]float32) ([]train.Sample, error) {
	out, _ := s.paramSampler.Sample(params)
	if slices.Contains(s.fail, len(s.seen)) {
		return nil, fmt.Errorf("round %d broke", len(s.seen))
	}
	return out, nil
}

// TestFakeLoopSampleFailure: a round of samples that fails is a warning in the log and, the
// first time, a note in the report; training goes on to the end, bit for bit as without
// samples.
func TestFakeLoopSampleFailure(t *testing.T) {
	dir := fastTempDir(t)
	plain, err := runFake(context.Background(), newFakeBackend(t), fakeConfig(filepath.Join(dir, "plain")))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fakeConfig(filepath.Join(dir, "run"))
	var log bytes.Buffer
	cfg.SampleEvery, cfg.Sampler, cfg.Log = 1, &failingSampler{fail: []int{2, 3}}, &log
	rep, err := runFake(context.Background(), newFakeBackend(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"warning: samples after step 2 failed, training goes on: round 2 broke", "samples after step 3 failed"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
	var notes []string
	for _, n := range rep.Notes {
		if strings.Contains(n, "samples after") {
			notes = append(notes, n)
		}
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "step 2") {
		t.Errorf("report notes %q, want one about step 2", notes)
	}
	if len(rep.Samples) != 2 || rep.Samples[0].Step != 6 {
		t.Errorf("report samples %+v, want the end's", rep.Samples)
	}
	fa, _ := os.ReadFile(filepath.Join(dir, "plain", "adapter_model.safetensors"))
	fb, _ := os.ReadFile(filepath.Join(dir, "run", "adapter_model.safetensors"))
	if len(fa) == 0 || !bytes.Equal(fa, fb) || plain.TrainTokens != rep.TrainTokens {
		t.Error("the run with samples ended elsewhere than the run without")
	}
}
