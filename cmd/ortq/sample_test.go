package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/tokenize"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// sampleRecords reads run.jsonl's sample lines by step.
func sampleRecords(t *testing.T, out string) map[int][]train.SampleRecord {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	by := map[int][]train.SampleRecord{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var r train.SampleRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Event == "sample" {
			by[r.Step] = append(by[r.Step], r)
		}
	}
	return by
}

// checkpointAdapter writes the LoRA values of out's checkpoint of step as a PEFT adapter and
// returns its adapter_model.safetensors.
func checkpointAdapter(t *testing.T, art, out string, step int) string {
	t.Helper()
	ck, err := train.LoadCheckpoint(filepath.Join(out, train.CheckpointsDir, train.CheckpointName(step)))
	if err != nil {
		t.Fatal(err)
	}
	man, err := manifest.ReadManifest(art)
	if err != nil {
		t.Fatal(err)
	}
	var ps []optim.Param
	for _, p := range man.Params {
		ps = append(ps, optim.Param{Name: p.Name, Data: ck.Params[p.Name]})
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := train.SaveAdapter(dir, man, ps); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "adapter_model.safetensors")
}

// generatedIDs exports art with adapter ("" = the base model) as `ortq export` does by
// default (LoRA as separate MatMuls) and returns the ids `ortq generate --ids` prints for
// each prompt (extra: more generate flags, e.g. --chat).
func generatedIDs(t *testing.T, art, adapter string, n int, prompts []string, extra ...string) [][]int64 {
	t.Helper()
	exp := filepath.Join(t.TempDir(), "export")
	args := []string{"export", "--artifacts", art, "--out", exp, "--quiet"}
	if adapter != "" {
		args = append(args, "--adapter", adapter)
	}
	if err := run(t, args...); err != nil {
		t.Fatal(err)
	}
	var all [][]int64
	for _, p := range prompts {
		s, err := runOut(t, "", append([]string{"generate", "--model", exp, "--prompt", p, "--ids", "--max-new-tokens", strconv.Itoa(n), "--threads", "1",
			"--quiet"}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &ids); err != nil {
			t.Fatalf("generate --ids printed %q: %v", s, err)
		}
		all = append(all, ids)
	}
	return all
}

// TestTrainSamples: --sample-every 1 over 2 steps completes each prompt after step 1 and at
// the end, with exactly the ids `ortq generate --ids` gives for an export of the adapter the
// checkpoint of that step holds (the trained adapter changes them: the base model's differ),
// and the text generate prints; the last round is the report's; no export is left in --out
// (nor a killed run's).
func TestTrainSamples(t *testing.T) {
	dir, args := relFixture(t, 2)
	art, out := args[2], filepath.Join(dir, "run")
	prompts := []string{"The jury said", "In the morning, she"}
	const n = 8
	args = with(setFlag(args, "--lr", "2e-2"), "--out", out, "--sample-every", "1", "--sample-max-tokens", strconv.Itoa(n),
		"--log-every", "1", "--sample-prompt", prompts[0], "--sample-prompt", prompts[1])
	stale := filepath.Join(out, sampleExportPrefix+"123", "model")
	if err := os.MkdirAll(stale, 0o755); err != nil { // a killed run's export
		t.Fatal(err)
	}
	if err := run(t, args...); err != nil {
		t.Fatal(err)
	}
	recs := sampleRecords(t, out)
	if len(recs) != 2 || len(recs[1]) != 2 || len(recs[2]) != 2 {
		t.Fatalf("sample lines by step %v, want 2 prompts at steps 1 and 2", recs)
	}
	base := generatedIDs(t, art, "", n, prompts)
	changed := false
	for step := 1; step <= 2; step++ {
		want := generatedIDs(t, art, checkpointAdapter(t, art, out, step), n, prompts)
		for i, r := range recs[step] {
			if r.Prompt != prompts[i] || !slices.Equal(r.IDs, want[i]) {
				t.Errorf("step %d prompt %q: sampled %v, generate gives %v", step, r.Prompt, r.IDs, want[i])
			}
			changed = changed || !slices.Equal(r.IDs, base[i])
		}
	}
	if !changed {
		t.Error("every sample equals the base model's completion: the test cannot tell the adapter was used")
	}
	exp := filepath.Join(dir, "final-export")
	if err := run(t, "export", "--artifacts", art, "--adapter", filepath.Join(out, "adapter_model.safetensors"), "--out", exp, "--quiet"); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenize.Load(filepath.Join(exp, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs[2] {
		text, err := runOut(t, "", "generate", "--model", exp, "--prompt", prompts[i], "--max-new-tokens", strconv.Itoa(n), "--threads", "1", "--quiet")
		if err != nil {
			t.Fatal(err)
		}
		pids, _ := promptIDs(tok, prompts[i])
		head, _ := tok.Decode(toInts(pids), true)
		if want := head + r.Completion + "\n"; text != want {
			t.Errorf("generate printed %q, the sample says %q", text, want)
		}
	}
	rep := readReport(t, out)
	if len(rep.Samples) != 2 || rep.Samples[1].Step != 2 || !slices.Equal(rep.Samples[1].IDs, recs[2][1].IDs) {
		t.Errorf("report samples %+v, want the step-2 round", rep.Samples)
	}
	if ents, _ := filepath.Glob(filepath.Join(out, sampleExportPrefix+"*")); len(ents) > 0 {
		t.Errorf("a sample export is left in --out: %v", ents)
	}
}

func toInts(ids []int64) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// TestTrainSamplesChat: on chat data the sample prompt is the user's message rendered
// through the chat template with its generation prompt: the ids are those of
// `ortq generate --chat` with the trained adapter.
func TestTrainSamplesChat(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art, out := filepath.Join(dir, "art"), filepath.Join(dir, "run")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	prompt := "What is the plural of box?"
	if err := run(t, "train", "--artifacts", art, "--data", "../../testdata/chat-demo.jsonl", "--tokenizer", "default", "--pack", "none",
		"--max-seq-len", "128", "--lr", "5e-3", "--max-steps", "2", "--threads", "1", "--quiet", "--out", out,
		"--sample-prompt", prompt, "--sample-max-tokens", "6"); err != nil {
		t.Fatal(err)
	}
	rep := readReport(t, out)
	want := generatedIDs(t, art, filepath.Join(out, "adapter_model.safetensors"), 6, []string{prompt}, "--chat")
	if len(rep.Samples) != 1 || rep.Samples[0].Step != 2 || !slices.Equal(rep.Samples[0].IDs, want[0]) {
		t.Errorf("report samples %+v, want ids %v at step 2 (generate --chat)", rep.Samples, want[0])
	}
}

// TestTrainSampleFlags: bad sample flags are refused in one line naming the flag, before
// anything is read or written (the artifacts need not exist).
func TestTrainSampleFlags(t *testing.T) {
	dir := t.TempDir()
	base := []string{"train", "--artifacts", filepath.Join(dir, "none"), "--data", filepath.Join(dir, "none.txt"), "--tokenizer", "default", "--out",
		filepath.Join(dir, "run")}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--sample-every", "-1", "--sample-prompt", "a"}, "--sample-every"},
		{[]string{"--sample-every", "x", "--sample-prompt", "a"}, "--sample-every"},
		{[]string{"--sample-prompt", ""}, "--sample-prompt 1 of 1 is empty"},
		{[]string{"--sample-prompt", "a", "--sample-prompt", " \n"}, "--sample-prompt 2 of 2 is empty"},
		{[]string{"--sample-every", "5"}, "--sample-every 5: give the prompts to complete with --sample-prompt"},
		{[]string{"--sample-prompt", "a", "--sample-max-tokens", "0"}, "--sample-max-tokens"},
	} {
		err := run(t, append(slices.Clone(base), c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want one line naming %q", c.args, err, c.want)
		}
		if _, serr := os.Stat(filepath.Join(dir, "run")); serr == nil {
			t.Fatalf("%q: --out was created", c.args)
		}
	}
}

// TestSamplesResumeAfterSignal: a run with --sample-every 2 interrupted by SIGINT after
// step 3's checkpoint and resumed ends bit for bit as the uninterrupted run (losses,
// adapter), and samples the same ids at every step.
func TestSamplesResumeAfterSignal(t *testing.T) {
	dir, args := relFixture(t, 8)
	args = with(setFlag(args, "--lr", "2e-2"), "--sample-every", "2", "--sample-prompt", "The jury said", "--sample-max-tokens", "6", "--log-every", "1")
	straight, out := filepath.Join(dir, "straight"), filepath.Join(dir, "run")
	if err := run(t, with(args, "--out", straight)...); err != nil {
		t.Fatal(err)
	}
	cmd, log := child(t, []string{fmt.Sprintf("ORTQ_TEST_SIGNAL_AT=3:%d", int(syscall.SIGINT))}, with(args, "--out", out)...)
	if code := exitCodeOf(cmd.Wait()); code != 0 {
		t.Fatalf("exit status %d, want 0:\n%s", code, log)
	}
	m := regexp.MustCompile(`interrupted at step (\d+)`).FindStringSubmatch(log.String())
	if m == nil || m[1] == "8" {
		t.Fatalf("not interrupted before the end:\n%s", log)
	}
	if err := run(t, with(args, "--out", out, "--resume", "latest")...); err != nil {
		t.Fatal(err)
	}
	sameRun(t, readFinal(t, straight), readFinal(t, out))
	a, b := sampleRecords(t, straight), sampleRecords(t, out)
	for _, step := range []int{2, 4, 6, 8} {
		if len(a[step]) != 1 || len(b[step]) != 1 || !slices.Equal(a[step][0].IDs, b[step][0].IDs) {
			t.Errorf("step %d: samples %+v uninterrupted, %+v resumed", step, a[step], b[step])
		}
	}
}

// TestTrainSamplesTwoDevices: a data-parallel run (cpu,cpu: the multi-device stepper)
// samples on its first device with the values its steps reached: the ids of generate with
// the run's adapter.
func TestTrainSamplesTwoDevices(t *testing.T) {
	dir, args := relFixture(t, 2)
	art, out := args[2], filepath.Join(dir, "run")
	prompt := "The jury said"
	if err := run(t, with(setFlag(args, "--lr", "2e-2"), "--out", out, "--device", "cpu,cpu", "--sample-prompt", prompt, "--sample-max-tokens",
		"6")...); err != nil {
		t.Fatal(err)
	}
	rep := readReport(t, out)
	want := generatedIDs(t, art, filepath.Join(out, "adapter_model.safetensors"), 6, []string{prompt})
	if len(rep.Samples) != 1 || rep.Samples[0].Step != 2 || !slices.Equal(rep.Samples[0].IDs, want[0]) {
		t.Errorf("report samples %+v, want ids %v at step 2", rep.Samples, want[0])
	}
}
