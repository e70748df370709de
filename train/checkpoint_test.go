package train

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/train/optim"
)

func testCheckpoint(step int) (*Checkpoint, []optim.Param, optim.AdamWState) {
	params := []optim.Param{{Name: "a.lora_A.weight", Data: []float32{1, 2, 3, float32(step)}}, {Name: "a.lora_B.weight", Data: []float32{-1, 0.5}}}
	adam := optim.AdamWState{Step: int64(step), ExpAvg: map[string][]float32{}, ExpAvgSq: map[string][]float32{}}
	for _, p := range params {
		adam.ExpAvg[p.Name] = make([]float32, len(p.Data))
		adam.ExpAvgSq[p.Name] = make([]float32, len(p.Data))
		for i := range p.Data {
			adam.ExpAvg[p.Name][i] = float32(i) * 0.25
			adam.ExpAvgSq[p.Name][i] = float32(i) * 0.125
		}
	}
	ck := &Checkpoint{Step: step, Total: 10, OptimizerSteps: step, Data: data.Position{Epoch: 1, Index: 4, Seed: 7}, Seed: 7,
		Scaler: optim.GradScalerState{Scale: 1024, GrowthTracker: 3}, Compat: map[string]string{"--lr": "0.001"}}
	for i := 0; i < step; i++ {
		ck.Losses = append(ck.Losses, Float(float64(i)+0.1))
	}
	return ck, params, adam
}

// TestCheckpointRoundTrip: what is written loads back identically; only the newest K stay;
// an existing complete step directory is not rewritten; leftovers of crashed writes are
// ignored by listing and removed by CleanCheckpointTemp.
func TestCheckpointRoundTrip(t *testing.T) {
	root := filepath.Join(t.TempDir(), CheckpointsDir)
	for step := 1; step <= 4; step++ {
		ck, params, adam := testCheckpoint(step)
		dir, err := WriteCheckpoint(root, ck, params, adam, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(dir) != CheckpointName(step) {
			t.Fatalf("wrote %s", dir)
		}
	}
	dirs, err := ListCheckpoints(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 || filepath.Base(dirs[0]) != "step-00000003" || filepath.Base(dirs[1]) != "step-00000004" {
		t.Fatalf("kept %v, want steps 3 and 4", dirs)
	}
	os.MkdirAll(filepath.Join(root, ".tmp-123456"), 0o755)
	os.WriteFile(filepath.Join(root, ".tmp-123456", ckTensorsFile), []byte("half"), 0o644)
	got, err := LatestCheckpoint(root, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	want, params, adam := testCheckpoint(4)
	if got.Step != 4 || !reflect.DeepEqual(got.Losses, want.Losses) || got.Data != want.Data || got.Scaler != want.Scaler ||
		!reflect.DeepEqual(got.Compat, want.Compat) || got.Adam.Step != 4 {
		t.Errorf("loaded %+v", got)
	}
	for _, p := range params {
		if !reflect.DeepEqual(got.Params[p.Name], p.Data) || !reflect.DeepEqual(got.Adam.ExpAvg[p.Name], adam.ExpAvg[p.Name]) ||
			!reflect.DeepEqual(got.Adam.ExpAvgSq[p.Name], adam.ExpAvgSq[p.Name]) {
			t.Errorf("tensor %s differs", p.Name)
		}
	}
	// Same step again: the complete directory is kept as it is.
	st0, _ := os.Stat(filepath.Join(root, "step-00000004", ckStateFile))
	if _, err := WriteCheckpoint(root, want, params, adam, 2, nil); err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(filepath.Join(root, "step-00000004", ckStateFile))
	if !st0.ModTime().Equal(st1.ModTime()) {
		t.Error("an existing complete checkpoint was rewritten")
	}
	removed, err := CleanCheckpointTemp(root)
	if err != nil || len(removed) != 1 {
		t.Fatalf("cleaned %v, %v", removed, err)
	}
	// Damage: a flipped byte in the tensors is caught by the recorded hash, and
	// LatestCheckpoint falls back to the previous step.
	p := filepath.Join(root, "step-00000004", ckTensorsFile)
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o644)
	if _, err := LoadCheckpoint(filepath.Join(root, "step-00000004")); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged tensors: %v", err)
	}
	got, err = LatestCheckpoint(root, t.Logf)
	if err != nil || got.Step != 3 {
		t.Errorf("fallback: %v, %v", got, err)
	}
}

// TestCheckpointWriteFailure injects a failure at every stage of a write (ENOSPC, as a
// full disk gives) and makes the directory unwritable: each is an error naming the step
// and the cause, and the previous checkpoint stays complete with no temp directory left.
func TestCheckpointWriteFailure(t *testing.T) {
	for _, stage := range []string{"begin", "tensors", "state", "synced"} {
		t.Run(stage, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), CheckpointsDir)
			ck, params, adam := testCheckpoint(1)
			if _, err := WriteCheckpoint(root, ck, params, adam, 3, nil); err != nil {
				t.Fatal(err)
			}
			ck2, params2, adam2 := testCheckpoint(2)
			hook := func(s string, step int) error {
				if s == stage {
					return &os.PathError{Op: "write", Path: "injected", Err: syscall.ENOSPC}
				}
				return nil
			}
			_, err := WriteCheckpoint(root, ck2, params2, adam2, 3, hook)
			if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "step-00000002") || !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("error %v", err)
			}
			es, _ := os.ReadDir(root)
			if len(es) != 1 || es[0].Name() != "step-00000001" {
				t.Errorf("left %v", es)
			}
			if _, err := LoadCheckpoint(filepath.Join(root, "step-00000001")); err != nil {
				t.Errorf("previous checkpoint: %v", err)
			}
		})
	}
	t.Run("checkpoints path is a file", func(t *testing.T) {
		root := filepath.Join(t.TempDir(), CheckpointsDir)
		os.WriteFile(root, nil, 0o644)
		ck, params, adam := testCheckpoint(1)
		_, err := WriteCheckpoint(root, ck, params, adam, 3, nil)
		if err == nil || !strings.Contains(err.Error(), root) {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores directory permissions (the ENOSPC cases above cover the failure path)")
		}
		root := filepath.Join(t.TempDir(), CheckpointsDir)
		ck, params, adam := testCheckpoint(1)
		if _, err := WriteCheckpoint(root, ck, params, adam, 3, nil); err != nil {
			t.Fatal(err)
		}
		os.Chmod(root, 0o555)
		defer os.Chmod(root, 0o755)
		ck2, params2, adam2 := testCheckpoint(2)
		_, err := WriteCheckpoint(root, ck2, params2, adam2, 3, nil)
		if err == nil || !errors.Is(err, os.ErrPermission) {
			t.Fatalf("error %v", err)
		}
		if _, err := LoadCheckpoint(filepath.Join(root, "step-00000001")); err != nil {
			t.Errorf("previous checkpoint: %v", err)
		}
	})
}

func TestCheckCompatNamesFields(t *testing.T) {
	saved := map[string]string{"--lr": "0.001", "--seed": "1", "--micro-batch": "4"}
	now := map[string]string{"--lr": "0.002", "--seed": "1", "--micro-batch": "4", "--data[0] (x.txt)": "3 bytes"}
	err := checkCompat("ck", saved, now)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{`--lr: "0.001" in the checkpoint, "0.002" now`, "--data[0] (x.txt)"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%v lacks %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "--seed") {
		t.Errorf("%v names an equal field", err)
	}
	if err := checkCompat("ck", saved, saved); err != nil {
		t.Error(err)
	}
}
