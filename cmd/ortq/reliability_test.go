package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/train"
)

// Reliability tests of `ortq train` (issue 7). Those that need a real process (signals,
// kill -9) re-execute this test binary as ortq: TestMain runs main() when
// ORTQ_TEST_CHILD=1, after installing the checkpoint hook the environment asks for:
//
//	ORTQ_TEST_CK_LOG=FILE     append "begin N" to FILE when the checkpoint of step N starts
//	ORTQ_TEST_CK_SLEEP=DUR    sleep DUR after the tensors are written (widens the window
//	                          in which a kill lands inside a checkpoint write)
//	ORTQ_TEST_SIGNAL_AT=N:SIG send signal number SIG to itself once the checkpoint of
//	                          step N is complete (a signal at a known step, however fast
//	                          the machine)
//	ORTQ_TEST_HOLD_LOCK=DIR   hold DIR's in-place lock (as a train does) until killed
func TestMain(m *testing.M) {
	if os.Getenv("ORTQ_TEST_CHILD") == "1" {
		// ORTQ_TEST_HOLD_LOCK=DIR: hold DIR's in-place lock, as a running train does,
		// print "locked" and wait to be killed.
		if d := os.Getenv("ORTQ_TEST_HOLD_LOCK"); d != "" {
			if _, err := fsutil.LockDir(d); err != nil {
				panic(err)
			}
			fmt.Println("locked")
			select {}
		}
		logPath := os.Getenv("ORTQ_TEST_CK_LOG")
		sleep, _ := time.ParseDuration(os.Getenv("ORTQ_TEST_CK_SLEEP"))
		sigStep, sigNum := -1, 0
		if v := os.Getenv("ORTQ_TEST_SIGNAL_AT"); v != "" {
			if _, err := fmt.Sscanf(v, "%d:%d", &sigStep, &sigNum); err != nil {
				panic("ORTQ_TEST_SIGNAL_AT=" + v + ": want STEP:SIGNUM")
			}
		}
		checkpointHook = func(stage string, step int) error {
			if stage == "begin" && logPath != "" {
				f, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
				if err != nil {
					return err
				}
				fmt.Fprintf(f, "begin %d\n", step)
				f.Close()
			}
			if stage == "tensors" && sleep > 0 {
				time.Sleep(sleep)
			}
			if stage == "renamed" && step == sigStep {
				syscall.Kill(os.Getpid(), syscall.Signal(sigNum))
				time.Sleep(100 * time.Millisecond) // let the handler see it before the next step
			}
			return nil
		}
		// ORTQ_TEST_REPLACE_KILL=STEP: SIGKILL this process right after that step of
		// fsutil.ReplaceDir (a kill -9 at an exact point); ORTQ_TEST_NO_EXCHANGE=1: take
		// ReplaceDir's two-rename fallback.
		if step := os.Getenv("ORTQ_TEST_REPLACE_KILL"); step != "" {
			fsutil.ReplaceHook = func(s string) {
				if s == step {
					syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {}
				}
			}
		}
		fsutil.ReplaceNoExchange = os.Getenv("ORTQ_TEST_NO_EXCHANGE") == "1"
		// ORTQ_TEST_EARLY_SIGINT=1: SIGINT to itself as train starts loading.
		if os.Getenv("ORTQ_TEST_EARLY_SIGINT") == "1" {
			startupHook = func() {
				syscall.Kill(os.Getpid(), syscall.SIGINT)
				time.Sleep(100 * time.Millisecond) // let the handler see it
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// relFixture prepares artifacts of the default model (default LoRA dropout 0.1) and a small slice of
// the demo text, and returns the train arguments shared by every run (all but --out).
func relFixture(t *testing.T, steps int) (dir string, args []string) {
	t.Helper()
	ortruntest.Lib(t)
	demo := demoData(t)
	dir = t.TempDir()
	art := filepath.Join(dir, "art")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(demo)
	if err != nil {
		t.Fatal(err)
	}
	txt := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(txt, b[:min(len(b), 60000)], 0o644); err != nil {
		t.Fatal(err)
	}
	_, tok, err := defaultmodel.Extract(filepath.Join(dir, "tok"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, []string{"train", "--artifacts", art, "--data", txt, "--tokenizer", tok, "--max-steps", strconv.Itoa(steps),
		"--max-seq-len", "64", "--micro-batch", "2", "--grad-accum", "2", "--warmup-steps", "2", "--lr", "1e-3",
		"--max-eval-batches", "2", "--threads", "1", "--quiet", "--save-every", "1"}
}

// setFlag replaces the value of flag in args (or appends it).
func setFlag(args []string, flag, value string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == flag {
			out[i+1] = value
			return out
		}
	}
	return append(out, flag, value)
}

func with(args []string, more ...string) []string {
	return append(append([]string(nil), args...), more...)
}

type finalState struct {
	losses  []train.Float
	adapter []byte
}

func readFinal(t *testing.T, out string) finalState {
	t.Helper()
	ck, err := train.LatestCheckpoint(filepath.Join(out, train.CheckpointsDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(filepath.Join(out, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return finalState{ck.Losses, a}
}

func sameRun(t *testing.T, want, got finalState) {
	t.Helper()
	if len(want.losses) != len(got.losses) {
		t.Fatalf("%d losses, want %d", len(got.losses), len(want.losses))
	}
	for i := range want.losses {
		if math.Float64bits(float64(want.losses[i])) != math.Float64bits(float64(got.losses[i])) {
			t.Errorf("step %d: loss %v, uninterrupted run had %v", i+1, got.losses[i], want.losses[i])
		}
	}
	if !bytes.Equal(want.adapter, got.adapter) {
		t.Error("adapter bytes differ from the uninterrupted run's")
	}
}

// child starts this test binary as ortq with args.
func child(t *testing.T, env []string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "ORTQ_TEST_CHILD=1"), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

func exitCodeOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		return -1000
	}
	return 0
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// checkAllComplete asserts that every step directory loads and returns the newest step
// (-1 when there is none).
func checkAllComplete(t *testing.T, root string) int {
	t.Helper()
	dirs, err := train.ListCheckpoints(root)
	if err != nil {
		t.Fatal(err)
	}
	newest := -1
	for _, d := range dirs {
		ck, err := train.LoadCheckpoint(d)
		if err != nil {
			t.Errorf("incomplete checkpoint after a kill: %v", err)
			continue
		}
		newest = max(newest, ck.Step)
	}
	return newest
}

// TestSignalCheckpointsAndResumes: SIGINT, SIGTERM or SIGHUP during training stops at the next
// micro-batch, writes a checkpoint, exits 0 saying how to resume; the resumed run equals
// the uninterrupted one bit for bit.
func TestSignalCheckpointsAndResumes(t *testing.T) {
	dir, args := relFixture(t, 30)
	straight := filepath.Join(dir, "straight")
	if err := run(t, with(args, "--out", straight)...); err != nil {
		t.Fatal(err)
	}
	want := readFinal(t, straight)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} { // SIGHUP: issue 26
		t.Run(sig.String(), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			// The child signals itself once step 3's checkpoint is written (ORTQ_TEST_SIGNAL_AT),
			// so the run is interrupted well before its 30 steps on any machine.
			cmd, log := child(t, []string{fmt.Sprintf("ORTQ_TEST_SIGNAL_AT=3:%d", int(sig))}, with(args, "--out", out)...)
			if code := exitCodeOf(cmd.Wait()); code != 0 {
				t.Fatalf("exit status %d after %v, want 0:\n%s", code, sig, log)
			}
			m := regexp.MustCompile(`interrupted at step (\d+); resume with: (ortq train .*--resume latest)`).FindStringSubmatch(log.String())
			if m == nil {
				t.Fatalf("no resume message:\n%s", log)
			}
			step, _ := strconv.Atoi(m[1])
			if got := checkAllComplete(t, filepath.Join(out, train.CheckpointsDir)); got != step {
				t.Errorf("interrupted at step %d but the newest checkpoint is step %d", step, got)
			}
			if step < 3 || step >= 30 {
				t.Fatalf("interrupted at step %d, want a step from 3 (the signal's) to 29", step)
			}
			t.Logf("interrupted at step %d", step)
			if err := run(t, with(args, "--out", out, "--resume", "latest")...); err != nil {
				t.Fatal(err)
			}
			sameRun(t, want, readFinal(t, out))
		})
	}
}

// TestSecondSignalExitsAtOnce: a second SIGINT while the first one's checkpoint is being
// written exits with status 130; the unfinished write is ignored and cleaned by the next
// run.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	dir, args := relFixture(t, 30)
	out := filepath.Join(dir, "run")
	ckLog := filepath.Join(dir, "ck.log")
	cmd, log := child(t, []string{"ORTQ_TEST_CK_LOG=" + ckLog, "ORTQ_TEST_CK_SLEEP=20s"}, with(args, "--out", out)...)
	waitFor(t, "a checkpoint write to start", func() bool { return exists(ckLog) })
	cmd.Process.Signal(syscall.SIGINT)
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	code := exitCodeOf(cmd.Wait())
	if code != 130 {
		t.Fatalf("exit status %d, want 130:\n%s", code, log)
	}
	if time.Since(t0) > 10*time.Second {
		t.Errorf("took %v to exit after the second signal", time.Since(t0))
	}
	root := filepath.Join(out, train.CheckpointsDir)
	if n := checkAllComplete(t, root); n != -1 {
		t.Errorf("step %d checkpoint complete despite the write being cut off", n)
	}
	if err := run(t, with(args, "--out", out, "--max-steps", "2")...); err != nil {
		t.Fatalf("fresh run over the cut-off write: %v", err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(root, ".tmp-*")); len(tmp) > 0 {
		t.Errorf("unfinished writes not cleaned: %v", tmp)
	}
}

// TestKill9 kills training with SIGKILL at random moments (a checkpoint is written every
// step, and each write is slowed so that many kills land inside one), then resumes with
// --resume latest. After every kill each step directory is complete and the newest is at
// most one step behind the last checkpoint begun; the finished run equals the
// uninterrupted one bit for bit.
func TestKill9(t *testing.T) {
	const steps = 100
	dir, args := relFixture(t, steps)
	straight := filepath.Join(dir, "straight")
	if err := run(t, with(args, "--out", straight)...); err != nil {
		t.Fatal(err)
	}
	want := readFinal(t, straight)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 9))
	out := filepath.Join(dir, "run")
	root := filepath.Join(out, train.CheckpointsDir)
	ckLog := filepath.Join(dir, "ck.log")
	env := []string{"ORTQ_TEST_CK_LOG=" + ckLog, "ORTQ_TEST_CK_SLEEP=15ms"}
	kills := 0
rounds:
	for round := 0; round < 8 && kills < 5; round++ {
		a := with(args, "--out", out)
		if dirs, _ := train.ListCheckpoints(root); len(dirs) > 0 {
			a = append(a, "--resume", "latest")
		}
		os.Remove(ckLog)
		cmd, log := child(t, env, a...)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		delay := time.Duration(300+rng.IntN(700)) * time.Millisecond
		select {
		case err := <-done:
			if code := exitCodeOf(err); code != 0 {
				t.Fatalf("round %d: exit status %d:\n%s", round, code, log)
			}
			t.Logf("round %d: finished before the kill", round)
			break rounds
		case <-time.After(delay):
		}
		cmd.Process.Kill()
		<-done
		kills++
		begun := lastBegun(t, ckLog)
		newest := checkAllComplete(t, root)
		tmp, _ := filepath.Glob(filepath.Join(root, ".tmp-*"))
		t.Logf("round %d: killed after %v; last checkpoint begun %d, newest complete %d, %d unfinished", round, delay, begun, newest, len(tmp))
		// With --save-every 1 every step from 1 on has a checkpoint; a kill during step 1's
		// write (the first) leaves none, and no step before it was ever saved.
		if begun > 1 && newest < begun-1 {
			t.Errorf("round %d: newest complete checkpoint %d, but step %d's write had begun: more than one step lost", round, newest, begun)
		}
	}
	a := with(args, "--out", out)
	if dirs, _ := train.ListCheckpoints(root); len(dirs) > 0 {
		a = append(a, "--resume", "latest")
	}
	if err := run(t, a...); err != nil {
		t.Fatal(err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(root, ".tmp-*")); len(tmp) > 0 {
		t.Errorf("unfinished writes not cleaned: %v", tmp)
	}
	sameRun(t, want, readFinal(t, out))
}

func lastBegun(t *testing.T, path string) int {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	last := -1
	s := bufio.NewScanner(f)
	for s.Scan() {
		if n, err := strconv.Atoi(strings.TrimPrefix(s.Text(), "begin ")); err == nil {
			last = n
		}
	}
	return last
}

// TestResumeRefusesChanges: the CLI names the differing option or input.
func TestResumeRefusesChanges(t *testing.T) {
	dir, args := relFixture(t, 4)
	out := filepath.Join(dir, "run")
	if err := run(t, with(args, "--out", out, "--max-steps", "4")...); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.txt")
	b, _ := os.ReadFile(args[4])
	os.WriteFile(other, append(b, "More text."...), 0o644)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"micro-batch", []string{"--micro-batch", "3"}, "--micro-batch"},
		{"grad-accum", []string{"--grad-accum", "1"}, "--grad-accum"},
		{"lr", []string{"--lr", "2e-3"}, "--lr"},
		{"seed", []string{"--seed", "7"}, "--seed"},
		{"max-seq-len", []string{"--max-seq-len", "48"}, "--max-seq-len"},
		{"data", []string{"--data", other}, "--data[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := with(args, "--out", out, "--resume", "latest")
			for i := 0; i < len(c.args); i += 2 {
				a = setFlag(a, c.args[i], c.args[i+1])
			}
			err := run(t, a...)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "cannot resume") {
				t.Errorf("error %v does not name %s", err, c.want)
			}
		})
	}
	if err := run(t, with(args, "--out", out, "--resume", filepath.Join(dir, "nope"))...); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing checkpoint dir: %v", err)
	}
	// A fresh run over an earlier run's checkpoints is refused unless --force discards them.
	if err := run(t, with(args, "--out", out)...); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("fresh run over checkpoints: %v", err)
	}
	if err := run(t, with(args, "--out", out, "--force", "--max-steps", "2")...); err != nil {
		t.Errorf("--force: %v", err)
	}
	if dirs, _ := train.ListCheckpoints(filepath.Join(out, train.CheckpointsDir)); len(dirs) != 2 || filepath.Base(dirs[1]) != "step-00000002" {
		t.Errorf("after --force: %v", dirs)
	}
}

// TestUnwritableOutput: a checkpoint that cannot be written stops training with an error
// naming the cause and the last good checkpoint, which stays complete; nothing is
// written outside --out.
func TestUnwritableOutput(t *testing.T) {
	dir, args := relFixture(t, 6)
	before := treeHash(t, dir)
	out := filepath.Join(dir, "run")
	defer func() { checkpointHook = nil }()
	checkpointHook = func(stage string, step int) error {
		if step == 4 && stage == "state" {
			return &fs.PathError{Op: "write", Path: "state.json", Err: syscall.ENOSPC}
		}
		return nil
	}
	err := run(t, with(args, "--out", out)...)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "step-00000003") {
		t.Fatalf("error %v", err)
	}
	checkpointHook = nil
	if n := checkAllComplete(t, filepath.Join(out, train.CheckpointsDir)); n != 3 {
		t.Errorf("newest complete checkpoint %d, want 3", n)
	}
	if err := run(t, with(args, "--out", out, "--resume", "latest")...); err != nil {
		t.Fatalf("resume after the disk error: %v", err)
	}
	os.RemoveAll(out)
	if after := treeHash(t, dir); after != before {
		t.Error("training changed files outside --out")
	}

	blocked := filepath.Join(dir, "blocked")
	os.MkdirAll(blocked, 0o755)
	os.WriteFile(filepath.Join(blocked, train.CheckpointsDir), []byte("a file where the checkpoints go"), 0o644)
	err = run(t, with(args, "--out", blocked)...)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(blocked, train.CheckpointsDir)) {
		t.Errorf("unwritable checkpoints dir: %v", err)
	}
}

// treeHash fingerprints every file (path, mode, contents) under dir.
func treeHash(t *testing.T, dir string) string {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", p, d.Type())
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
