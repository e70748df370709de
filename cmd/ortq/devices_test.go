package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/train"
)

// pretendGPUs makes visibleGPUs report n for the test.
func pretendGPUs(t *testing.T, n int) {
	saved := visibleGPUs
	visibleGPUs = func() int { return n }
	t.Cleanup(func() { visibleGPUs = saved })
}

// TestParseDevices: --device lists and cuda:all resolve to one device per session, and bad
// values are refused in one line naming --device and what to use.
func TestParseDevices(t *testing.T) {
	pretendGPUs(t, 2)
	for in, want := range map[string][]string{
		"cpu": {"cpu"}, "cuda": {"cuda"}, "cuda:1": {"cuda:1"},
		"cuda:0,cuda:1": {"cuda:0", "cuda:1"}, " CUDA:1 , cuda ": {"cuda:1", "cuda:0"},
		"cuda:all": {"cuda:0", "cuda:1"}, "cpu,cpu": {"cpu", "cpu"},
	} {
		got, err := parseDevices(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%q: %v, %v; want %v", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"tpu":              "use cpu, cuda, cuda:N",
		"cuda:x":           "use cpu, cuda, cuda:N",
		"cuda:0,cuda:0":    "cuda:0 is named twice",
		"cuda,cuda:0":      "cuda:0 is named twice",
		"cuda:0,":          `entry ""`,
		"cuda:0,cuda:-1":   `entry "cuda:-1"`,
		"cuda:0,cpu":       "mixes the CPU and GPUs",
		"cuda:0,cuda:2":    "only 2 GPU(s) visible",
		"cuda:all,cuda:0":  "cuda:all stands alone",
		"cuda:0,,cuda:1":   `entry ""`,
		"cuda:0;cuda:1":    "use cpu, cuda, cuda:N",
		"cuda:all\ncuda:0": "use cpu, cuda, cuda:N",
	} {
		_, err := parseDevices(in)
		if err == nil {
			t.Errorf("%q: accepted", in)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "--device ") || !strings.Contains(msg, want) || strings.Contains(msg, "\n") {
			t.Errorf("%q: error %q, want one line naming --device and %q", in, msg, want)
		}
		if exitCode(err) != 2 {
			t.Errorf("%q: exit status %d, want 2 (usage)", in, exitCode(err))
		}
	}
	pretendGPUs(t, 0)
	if _, err := parseDevices("cuda:all"); err == nil || !strings.Contains(err.Error(), "no GPU visible") {
		t.Errorf("cuda:all without GPUs: %v", err)
	}
}

// TestBadDeviceRefusedEarly: a bad --device is refused before anything is written.
func TestBadDeviceRefusedEarly(t *testing.T) {
	pretendGPUs(t, 2)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	err := run(t, "train", "--artifacts", filepath.Join(dir, "art"), "--data", filepath.Join(dir, "d.txt"), "--tokenizer", "default", "--out", out,
		"--device", "cuda:0,cuda:0")
	if err == nil || !strings.Contains(err.Error(), "--device") || exitCode(err) != 2 {
		t.Fatalf("duplicate GPU: %v (status %d)", err, exitCode(err))
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("--out was created: %v", err)
	}
}

// TestTrainDeviceList: `--device cpu,cpu` (two CPU sessions standing in for two GPUs) trains
// exactly as `--device cpu` with the same global batch — losses and adapter bit for bit, 3
// micro-batches per step on 2 sessions — also when it resumes the one-session run's step-1
// checkpoint, and refuses the device-resident step.
func TestTrainDeviceList(t *testing.T) {
	dir, args := relFixture(t, 3)
	args = setFlag(args, "--grad-accum", "3")
	one, two := filepath.Join(dir, "one"), filepath.Join(dir, "two")
	if err := run(t, with(args, "--out", one, "--device", "cpu")...); err != nil {
		t.Fatal(err)
	}
	if err := run(t, with(args, "--out", two, "--device", "cpu,cpu")...); err != nil {
		t.Fatal(err)
	}
	sameRun(t, readFinal(t, one), readFinal(t, two))
	rep := readReport(t, two)
	if c, _ := rep.Config.(map[string]any); c["device"] != "cpu,cpu" || rep.OptimizerSteps != 3 {
		t.Errorf("report: config %v, %d steps", rep.Config, rep.OptimizerSteps)
	}
	if !slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.HasPrefix(n, "data-parallel over 2 devices (cpu,cpu)") }) {
		t.Errorf("report notes %q do not say the run was data-parallel", rep.Notes)
	}
	// A checkpoint of the one-session run, resumed on two sessions, ends where both ended.
	dirs, err := train.ListCheckpoints(filepath.Join(one, train.CheckpointsDir))
	if err != nil || len(dirs) != 3 {
		t.Fatalf("checkpoints %v, %v", dirs, err)
	}
	for _, d := range dirs[1:] {
		os.RemoveAll(d)
	}
	want := readFinal(t, two)
	if err := run(t, with(args, "--out", one, "--device", "cpu,cpu", "--resume", "latest")...); err != nil {
		t.Fatal(err)
	}
	sameRun(t, want, readFinal(t, one))
	err = run(t, with(args, "--out", filepath.Join(dir, "three"), "--device", "cpu,cpu", "--step", "host", "--recompute", "selective")...)
	if err == nil || !strings.Contains(err.Error(), "--recompute selective") {
		t.Errorf("--step host --recompute selective on two sessions: %v", err)
	}
}

// TestIdleDevicesNote: a --grad-accum that leaves devices idle is said, naming the flag.
func TestIdleDevicesNote(t *testing.T) {
	two := []string{"cuda:0", "cuda:1"}
	for _, c := range []struct {
		devs  []string
		accum int
		want  string
	}{
		{[]string{"cuda:0"}, 1, ""}, {two, 2, ""}, {two, 4, ""},
		{two, 1, "1 stay idle: pass --grad-accum 2"},
		{two, 3, "--grad-accum 3 is not a multiple of the 2 devices: 1 of them idle"},
	} {
		got := idleDevicesNote(c.devs, c.accum)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%v, --grad-accum %d: %q, want %q", c.devs, c.accum, got, c.want)
		}
	}
}
