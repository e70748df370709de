package main

import (
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
)

// TestReplaceRefusesForeign (issue 26 #1): export --force into the artifacts it reads (a
// run nested inside), or into a directory of user files, is refused naming what it holds,
// and deletes nothing; prepare --force refuses an artifacts directory holding a run.
func TestReplaceRefusesForeign(t *testing.T) {
	dir, args := relFixture(t, 1)
	art := flagOf(args, "--artifacts")
	if err := os.MkdirAll(filepath.Join(art, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(art, "run", "run.jsonl"), []byte("{}\n"), 0o644)
	user := filepath.Join(dir, "d")
	os.MkdirAll(filepath.Join(user, "docs"), 0o755)
	os.WriteFile(filepath.Join(user, "docs", "t.txt"), []byte("mine"), 0o644)
	stray := filepath.Join(dir, "e")
	os.MkdirAll(stray, 0o755)
	os.WriteFile(filepath.Join(stray, "genai_config.json"), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(stray, "notes.txt"), []byte("mine"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"export", "--artifacts", art, "--out", art, "--force", "--quiet"}, "run"},
		{[]string{"export", "--artifacts", art, "--out", user, "--force", "--quiet"}, "docs"},
		{[]string{"export", "--artifacts", art, "--out", stray, "--force", "--quiet"}, "notes.txt"},
		{[]string{"prepare", "--out", art, "--force", "--quiet"}, "run"},
	} {
		err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(c.want)) {
			t.Errorf("%v: %v, want a refusal naming %q", c.args, err, c.want)
		}
	}
	for _, p := range []string{filepath.Join(art, "manifest.json"), filepath.Join(art, "run", "run.jsonl"),
		filepath.Join(user, "docs", "t.txt"), filepath.Join(stray, "notes.txt")} {
		if !exists(p) {
			t.Errorf("%s was deleted", p)
		}
	}
}

// TestReplaceNeverSwapsLiveRun (issue 26 #2): export --force into a directory whose
// in-place lock (.ortq.lock, as a running train holds it) another process holds is
// refused naming that process, and the directory stays; prepare and import likewise.
func TestReplaceNeverSwapsLiveRun(t *testing.T) {
	_, args := relFixture(t, 1)
	art := flagOf(args, "--artifacts")
	r := filepath.Join(t.TempDir(), "R")
	if err := run(t, "export", "--artifacts", art, "--out", r, "--quiet"); err != nil {
		t.Fatal(err)
	}
	holder, log := child(t, []string{"ORTQ_TEST_HOLD_LOCK=" + r})
	defer holder.Process.Kill()
	waitFor(t, "the child's lock", func() bool { return strings.Contains(log.String(), "locked") })
	for _, a := range [][]string{
		{"export", "--artifacts", art, "--out", r, "--force", "--quiet"},
		{"prepare", "--out", r, "--force", "--quiet"},
	} {
		err := run(t, a...)
		if err == nil || !strings.Contains(err.Error(), "pid "+strconv.Itoa(holder.Process.Pid)) {
			t.Errorf("%s over a held directory: %v, want a refusal naming pid %d", a[0], err, holder.Process.Pid)
		}
	}
	if !exists(filepath.Join(r, "genai_config.json")) || !exists(filepath.Join(r, fsutil.LockFile)) {
		t.Error("the held directory was swapped away")
	}
}

// TestNoWritesThroughSymlinks (issue 26 #3, and the minor prepare --out SYMLINK): a
// symbolic link at train's .ortq.lock or run.jsonl, at prepare's .NAME.ortq.lock, or as
// prepare's --out is refused, and the file it points to keeps its content.
func TestNoWritesThroughSymlinks(t *testing.T) {
	dir, args := relFixture(t, 1)
	v := filepath.Join(dir, "v")
	for i, c := range []struct {
		link string
		args []string
	}{
		{filepath.Join(dir, "r1", fsutil.LockFile), with(args, "--out", filepath.Join(dir, "r1"))},
		{filepath.Join(dir, "r2", "run.jsonl"), with(args, "--out", filepath.Join(dir, "r2"))},
		{filepath.Join(dir, ".p"+fsutil.LockFile), []string{"prepare", "--out", filepath.Join(dir, "p"), "--quiet"}},
		{filepath.Join(dir, "q"), []string{"prepare", "--out", filepath.Join(dir, "q"), "--force", "--quiet"}},
	} {
		if err := os.WriteFile(v, []byte("precious\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(c.link), 0o755)
		if err := os.Symlink(v, c.link); err != nil {
			t.Fatal(err)
		}
		err := run(t, c.args...)
		if b, _ := os.ReadFile(v); string(b) != "precious\n" || err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Errorf("case %d %v: err %v, v now %q; want a refusal naming the symbolic link and v untouched", i, c.args[:2], err, b)
		}
		if st, err := os.Lstat(c.link); err != nil || st.Mode()&os.ModeSymlink == 0 {
			t.Errorf("case %d: the link %s was replaced", i, c.link)
		}
	}
}

func flagOf(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

// TestStepSizeBounded (issue 26 #4): a --grad-accum whose step's batches would not fit is
// refused at once naming the flag, before any batch is built; the bound itself
// is accepted.
func TestStepSizeBounded(t *testing.T) {
	for _, c := range []struct {
		mb, seq, ga int
		want        string
	}{
		{2, 64, 1000000000, "--grad-accum 1000000000"},
		{2, 64, maxStepTokens / 128, ""},
		{1 << 12, 1 << 12, 1, ""}, // a micro-batch alone: memory.go's check
		{1 << 10, 1 << 12, 8, "--grad-accum 8"},
		{1, 1, maxStepTokens + 1, "--grad-accum"},
	} {
		err := checkStepSize(c.mb, c.seq, c.ga)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("checkStepSize(%d, %d, %d) = %v, want %q", c.mb, c.seq, c.ga, err, c.want)
		}
	}
	_, args := relFixture(t, 1)
	start := time.Now()
	err := run(t, with(setFlag(args, "--grad-accum", "1000000000"), "--out", filepath.Join(t.TempDir(), "ga"))...)
	if err == nil || !strings.Contains(err.Error(), "--grad-accum 1000000000") || time.Since(start) > 5*time.Second {
		t.Errorf("train --grad-accum 1000000000: %v after %v, want a refusal naming the flag at once", err, time.Since(start))
	}
}

// TestDeviceInputsRefused (issue 26 #5): every file read whole refuses /dev/zero at once
// (the read is bounded by reading, and a device is no input) instead of filling memory:
// the model, the tokenizer, --config, manifest.json, adapter_config.json and
// genai_config.json, and generate --adapter. Each command runs as a child that must end
// within 20 s with an error naming the file.
func TestDeviceInputsRefused(t *testing.T) {
	dir, args := relFixture(t, 1)
	art := flagOf(args, "--artifacts")
	badArt := filepath.Join(dir, "badart")
	os.MkdirAll(badArt, 0o755)
	os.Symlink("/dev/zero", filepath.Join(badArt, "manifest.json"))
	ad := filepath.Join(dir, "ad")
	os.MkdirAll(ad, 0o755)
	os.WriteFile(filepath.Join(ad, "adapter_model.safetensors"), nil, 0o644)
	os.Symlink("/dev/zero", filepath.Join(ad, "adapter_config.json"))
	exp := filepath.Join(dir, "exp")
	os.MkdirAll(exp, 0o755)
	os.Symlink("/dev/zero", filepath.Join(exp, "genai_config.json"))
	os.Symlink(flagOf(args, "--tokenizer"), filepath.Join(exp, "tokenizer.json"))
	adExp := filepath.Join(dir, "adexp")
	if err := run(t, "train", "--artifacts", art, "--data", flagOf(args, "--data"), "--tokenizer", flagOf(args, "--tokenizer"),
		"--max-steps", "1", "--max-seq-len", "32", "--micro-batch", "1", "--threads", "1", "--quiet", "--out", filepath.Join(dir, "r"), "--eval-fraction",
		"0.1", "--max-eval-batches", "1"); err != nil {
		t.Fatal(err)
	}
	if err := run(t, "export", "--artifacts", art, "--adapter", filepath.Join(dir, "r", "adapter_model.safetensors"), "--format", "onnx-adapter", "--out",
		adExp, "--quiet"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"prepare", "--model", "/dev/zero", "--out", filepath.Join(dir, "z")},
		with(setFlag(args, "--tokenizer", "/dev/zero"), "--out", filepath.Join(dir, "t1")),
		with(args, "--config", "/dev/zero", "--out", filepath.Join(dir, "t2")),
		with(setFlag(args, "--artifacts", badArt), "--out", filepath.Join(dir, "t3")),
		{"train", "--artifacts", art, "--init-adapter", ad, "--data", flagOf(args, "--data"), "--tokenizer", flagOf(args, "--tokenizer"), "--out",
			filepath.Join(dir, "t4")},
		{"export", "--artifacts", art, "--adapter", filepath.Join(ad, "adapter_model.safetensors"), "--out", filepath.Join(dir, "e1")},
		{"generate", "--model", exp, "--prompt", "x"},
		{"generate", "--model", adExp, "--adapter", "/dev/zero", "--prompt", "x"},
	} {
		cmd, log := child(t, nil, c...)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if code := exitCodeOf(err); code != 1 && code != 2 {
				t.Errorf("%v: exit %d, want a refusal:\n%s", c, code, log)
			} else if !strings.Contains(log.String(), "/dev/zero") && !strings.Contains(log.String(), "device") {
				t.Errorf("%v: the error does not name the device:\n%s", c, log)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("%v: still running after 20 s (reading without bound?)", c)
		}
	}
}

// TestLongArgumentNoCrash (issue 26 #6): ONNX Runtime's CreateEnv parses the command line
// recursively; 40 KB of arguments once overflowed the main thread's stack (SIGSEGV in
// CreateOrtEnv). generate runs with 40 KB and 120 KB command lines (a repeated --quiet,
// so the prompt stays short and ONNX Runtime starts), and a 40 KB prompt is refused for
// the model's context in one line before anything is printed.
func TestLongArgumentNoCrash(t *testing.T) {
	_, args := relFixture(t, 1)
	exp := filepath.Join(t.TempDir(), "exp")
	if err := run(t, "export", "--artifacts", flagOf(args, "--artifacts"), "--tokenizer", flagOf(args, "--tokenizer"), "--out", exp, "--quiet"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{5000, 15000} {
		a := []string{"generate", "--model", exp, "--prompt", "The", "--max-new-tokens", "2"}
		for i := 0; i < n; i++ {
			a = append(a, "--quiet")
		}
		cmd, log := child(t, nil, a...)
		if code := exitCodeOf(cmd.Wait()); code != 0 {
			out := log.String()
			t.Errorf("generate with a %d-byte command line: exit %d, want 0:\n%.2000s", 8*n, code, out)
		}
	}
	cmd, log := child(t, nil, "generate", "--model", exp, "--prompt", strings.Repeat("x", 40000), "--max-new-tokens", "2")
	code := exitCodeOf(cmd.Wait())
	if out := log.String(); code != 1 || !strings.HasPrefix(out, "ortq: prompt") || strings.Count(out, "\n") != 1 {
		t.Errorf("generate with a 40 KB prompt: exit %d, want 1 with one line refusing it:\n%.2000s", code, out)
	}
}

// TestAdaptersCheckedEverywhere (issue 26 #10, #11 and the minor adapter items): eval has
// no --init-adapter (it was listed and ignored); an adapter whose lora_A is stored
// transposed (same element count), or holds a NaN, or an extra tensor, or whose
// adapter_config.json asks for DoRA, is refused by eval --adapter, export --adapter and
// train --init-adapter alike.
func TestAdaptersCheckedEverywhere(t *testing.T) {
	dir, args := relFixture(t, 1)
	art := flagOf(args, "--artifacts")
	run0 := filepath.Join(dir, "r0")
	if err := run(t, with(args, "--out", run0)...); err != nil {
		t.Fatal(err)
	}
	evalArgs := []string{"eval", "--artifacts", art, "--data", flagOf(args, "--data"), "--tokenizer", flagOf(args, "--tokenizer"), "--max-seq-len", "64",
		"--threads", "1"}
	if err := run(t, with(evalArgs, "--init-adapter", "/nonexistent")...); err == nil || !strings.Contains(err.Error(), "init-adapter") {
		t.Errorf("eval --init-adapter: %v, want it refused as an unknown flag", err)
	}
	man, err := manifest.ReadManifest(art)
	if err != nil {
		t.Fatal(err)
	}
	good, err := safetensors.ReadFile(filepath.Join(run0, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(run0, "adapter_config.json"))
	first := man.Params[0]
	for _, c := range []struct {
		name, want string
		edit       func(ts []safetensors.Tensor) []safetensors.Tensor
		cfg        string
	}{
		{"transposed", "has shape", func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == first.Name {
					ts[i].Shape = []int64{ts[i].Shape[1], ts[i].Shape[0]}
				}
			}
			return ts
		}, ""},
		{"nan", "NaN", func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == first.Name {
					v, _ := ts[i].Float32s()
					v[3] = float32(math.NaN())
					ts[i] = safetensors.F32Tensor(ts[i].Name, ts[i].Shape, v)
				}
			}
			return ts
		}, ""},
		{"extra", "extra.weight", func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.F32Tensor("extra.weight", []int64{1}, []float32{1}))
		}, ""},
		{"dora", "use_dora", func(ts []safetensors.Tensor) []safetensors.Tensor { return ts },
			strings.Replace(string(cfg), "{", `{"use_dora": true,`, 1)},
	} {
		ad := filepath.Join(dir, c.name)
		os.MkdirAll(ad, 0o755)
		ts := c.edit(append([]safetensors.Tensor(nil), good.Tensors...))
		if err := safetensors.Write(filepath.Join(ad, "adapter_model.safetensors"), ts, nil); err != nil {
			t.Fatal(err)
		}
		cf := string(cfg)
		if c.cfg != "" {
			cf = c.cfg
		}
		os.WriteFile(filepath.Join(ad, "adapter_config.json"), []byte(cf), 0o644)
		w := filepath.Join(ad, "adapter_model.safetensors")
		for _, a := range [][]string{
			with(evalArgs, "--adapter", w),
			{"export", "--artifacts", art, "--adapter", w, "--out", filepath.Join(ad, "exp"), "--quiet"},
			with(args, "--init-adapter", ad, "--out", filepath.Join(ad, "run")),
		} {
			if err := run(t, a...); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s adapter, %s: %v, want a refusal naming %q", c.name, a[0], err, c.want)
			}
		}
	}
}

// TestResumeAdviceRuns (issue 26 #9): the command an interrupted `train --force` prints is
// run as printed and continues the run (it used to keep --force, which --resume refuses).
func TestResumeAdviceRuns(t *testing.T) {
	dir, args := relFixture(t, 4)
	out := filepath.Join(dir, "run")
	cmd, log := child(t, []string{"ORTQ_TEST_SIGNAL_AT=1:2"}, with(args, "--out", out, "--force")...)
	if code := exitCodeOf(cmd.Wait()); code != 0 {
		t.Fatalf("exit %d after SIGINT:\n%s", code, log)
	}
	m := regexp.MustCompile(`resume with: ortq (.*)\n`).FindStringSubmatch(log.String())
	if m == nil {
		t.Fatalf("no resume command printed:\n%s", log)
	}
	var printed []string
	for _, f := range strings.Fields(m[1]) { // shellQuote quotes nothing in these paths
		printed = append(printed, strings.Trim(f, "'"))
	}
	if err := run(t, printed...); err != nil {
		t.Fatalf("the printed command %q: %v", m[1], err)
	}
}

// TestWarmupOutlastsRun (issue 26 minor): --warmup-steps 1000 --max-steps 1 warns that the
// learning rate never reaches --lr instead of training at lr 0 silently.
func TestWarmupOutlastsRun(t *testing.T) {
	if warmupWarning(2, 3) != "" || warmupWarning(5, 0) != "" || warmupWarning(3, 3) == "" {
		t.Error("warmupWarning: wrong cases")
	}
	dir, args := relFixture(t, 1)
	cmd, log := child(t, nil, with(setFlag(args, "--warmup-steps", "1000"), "--out", filepath.Join(dir, "w"))...)
	if code := exitCodeOf(cmd.Wait()); code != 0 || !strings.Contains(log.String(), "--warmup-steps 1000 ≥ --max-steps 1") {
		t.Errorf("exit %d, want 0 with a warning naming both flags:\n%s", code, log)
	}
}
