package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/train"
)

// TestTwoTrainsOneOutput (issue 13 item 1): a second `ortq train` into the --out of a
// running one is refused at once with one line naming the other process and the
// directory, whether fresh or --resume; once the first is killed (kill -9: its lock
// file stays, naming a dead pid) a resume runs, and run.jsonl has no torn lines.
func TestTwoTrainsOneOutput(t *testing.T) {
	dir, args := relFixture(t, 30)
	out := filepath.Join(dir, "run")
	ckLog := filepath.Join(dir, "ck.log")
	first, firstLog := child(t, []string{"ORTQ_TEST_CK_LOG=" + ckLog, "ORTQ_TEST_CK_SLEEP=1s"}, with(args, "--out", out)...)
	defer first.Process.Kill()
	waitFor(t, "the first checkpoint", func() bool { return exists(filepath.Join(out, train.CheckpointsDir, "step-00000001")) })
	for _, extra := range [][]string{nil, {"--resume", "latest"}, {"--force"}} {
		second, log := child(t, nil, with(with(args, "--out", out), extra...)...)
		code := exitCodeOf(second.Wait())
		msg := strings.TrimSpace(log.String())
		if code != 1 || strings.Count(msg, "\n") > 0 || !strings.Contains(msg, "pid "+strconv.Itoa(first.Process.Pid)) || !strings.Contains(msg, out) {
			t.Errorf("second train %v: exit %d, want 1 with one line naming pid %d and %s:\n%s", extra, code, first.Process.Pid, out, msg)
		}
	}
	if first.ProcessState != nil {
		t.Fatalf("the first run ended early:\n%s", firstLog)
	}
	first.Process.Kill()
	first.Wait()
	if !exists(filepath.Join(out, fsutil.LockFile)) {
		t.Errorf("expected the killed run's lock file to stay behind")
	}
	if err := run(t, with(args, "--out", out, "--resume", "latest")...); err != nil {
		t.Fatalf("resume after kill -9: %v", err)
	}
	if exists(filepath.Join(out, fsutil.LockFile)) {
		t.Errorf("lock file left after a finished run")
	}
	f, err := os.Open(filepath.Join(out, "run.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		var m map[string]any
		if err := json.Unmarshal(s.Bytes(), &m); err != nil {
			t.Errorf("run.jsonl line %d torn: %q", n, s.Text())
		}
	}
}

// TestOneWriterOtherCommands: prepare, import, synth and bench refuse an output another
// process holds (here the test process), naming it, before doing any work.
func TestOneWriterOtherCommands(t *testing.T) {
	dir := t.TempDir()
	replaced := filepath.Join(dir, "replaced")
	l, err := fsutil.LockReplaced(replaced)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	benchOut := filepath.Join(dir, "bench")
	lb, err := fsutil.LockDir(benchOut)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Release()
	for _, c := range []struct {
		out  string
		args []string
	}{
		{replaced, []string{"prepare", "--out", replaced, "--force", "--quiet"}},
		{replaced, []string{"import", "--hf", filepath.Join(dir, "nohf"), "--out", replaced}},
		{replaced, []string{"synth", "--preset", "tiny", "--out", replaced, "--quiet"}},
		{benchOut, []string{"bench", "--preset", "tiny", "--steps", "1", "--out", benchOut}},
	} {
		cmd, log := child(t, nil, c.args...)
		code := exitCodeOf(cmd.Wait())
		msg := log.String()
		if code != 1 || !strings.Contains(msg, "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(msg, c.out) {
			t.Errorf("%s: exit %d, want 1 naming pid %d and %s:\n%s", c.args[0], code, os.Getpid(), c.out, msg)
		}
	}
}

// TestFinishedRunNotOverwritten (issue 13 item 2): a fresh train into an --out that holds
// a finished run's adapter and report but no checkpoints is refused naming the file and
// --force, and leaves the adapter as it was; --force overwrites it.
func TestFinishedRunNotOverwritten(t *testing.T) {
	dir, args := relFixture(t, 2)
	out := filepath.Join(dir, "run")
	if err := run(t, with(args, "--out", out)...); err != nil {
		t.Fatal(err)
	}
	adapter := filepath.Join(out, "adapter_model.safetensors")
	before, _ := os.ReadFile(adapter)
	os.RemoveAll(filepath.Join(out, train.CheckpointsDir))
	err := run(t, with(setFlag(args, "--seed", "7"), "--out", out)...)
	if err == nil || !strings.Contains(err.Error(), adapter) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("fresh run over a finished one: %v", err)
	}
	if after, _ := os.ReadFile(adapter); !bytes.Equal(before, after) {
		t.Error("the finished run's adapter was changed")
	}
	if err := run(t, with(setFlag(args, "--seed", "7"), "--out", out, "--force")...); err != nil {
		t.Fatalf("--force: %v", err)
	}
	if after, _ := os.ReadFile(adapter); bytes.Equal(before, after) {
		t.Error("--force did not overwrite the adapter")
	}
}

// TestPrepareForceKill9 (issue 13 item 3): `prepare --force` killed with SIGKILL right
// after each step of the replacement leaves the old or the new artifacts at --out
// (renameat2 exchange), or, in the two-rename fallback for filesystems without it, an old
// copy that the next prepare puts back before anything else; the next prepare removes
// every temporary and old directory the killed one left.
func TestPrepareForceKill9(t *testing.T) {
	for _, c := range []struct {
		step       string
		noExchange bool
	}{{"exchanged", false}, {"moved-old", true}} {
		t.Run(c.step, func(t *testing.T) {
			dir := t.TempDir()
			art := filepath.Join(dir, "art")
			if err := run(t, "prepare", "--out", art, "--quiet", "--lora-r", "4"); err != nil {
				t.Fatal(err)
			}
			oldMan, _ := os.ReadFile(filepath.Join(art, "manifest.json"))
			env := []string{"ORTQ_TEST_REPLACE_KILL=" + c.step}
			if c.noExchange {
				env = append(env, "ORTQ_TEST_NO_EXCHANGE=1")
			}
			cmd, log := child(t, env, "prepare", "--out", art, "--force", "--quiet")
			if code := exitCodeOf(cmd.Wait()); code != -9 {
				t.Fatalf("exit %d, want SIGKILL at %s:\n%s", code, c.step, log)
			}
			left, _ := filepath.Glob(filepath.Join(dir, "*art*"))
			t.Logf("after the kill: %v", left)
			if c.noExchange {
				if exists(art) {
					t.Fatal("the fallback was expected to leave no --out between its renames")
				}
				if old, _ := filepath.Glob(art + ".old-*"); len(old) != 1 {
					t.Fatalf("no old copy beside --out: %v", left)
				}
				// The next prepare puts the old artifacts back first: without --force it
				// refuses to replace them, and they are the old ones.
				if err := run(t, "prepare", "--out", art, "--quiet"); err == nil || !strings.Contains(err.Error(), "--force") {
					t.Fatalf("prepare after the kill: %v", err)
				}
				if man, _ := os.ReadFile(filepath.Join(art, "manifest.json")); !bytes.Equal(man, oldMan) {
					t.Error("the restored artifacts are not the old ones")
				}
			} else {
				man, err := os.ReadFile(filepath.Join(art, "manifest.json"))
				if err != nil || bytes.Equal(man, oldMan) {
					t.Fatalf("after the exchange --out should hold the new artifacts: %v", err)
				}
			}
			if err := run(t, "prepare", "--out", art, "--force", "--quiet"); err != nil {
				t.Fatal(err)
			}
			es, _ := os.ReadDir(dir)
			for _, e := range es {
				if e.Name() != "art" {
					t.Errorf("left beside --out: %s", e.Name())
				}
			}
		})
	}
}

// TestTrainRemovesStaleTemps: the temporary file a kill during the final adapter write
// leaves in --out is removed by the next run.
func TestTrainRemovesStaleTemps(t *testing.T) {
	dir, args := relFixture(t, 2)
	out := filepath.Join(dir, "run")
	os.MkdirAll(out, 0o755)
	stale := filepath.Join(out, ".adapter_model.safetensors.tmp-1234567")
	os.WriteFile(stale, []byte("half an adapter"), 0o644)
	if err := run(t, with(args, "--out", out)...); err != nil {
		t.Fatal(err)
	}
	if exists(stale) {
		t.Errorf("%s not removed", stale)
	}
}
