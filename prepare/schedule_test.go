package prepare_test

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// TestStepScheduleFreesEarly checks the order in which ONNX Runtime actually runs a
// recomputing training step (its profile), for the host step graph and the device step graph:
//
//   - every block's loss value (the chunked loss's LogSoftmax) runs before the backward
//     pass's first recomputation, so no block's logits stay alive through the backward pass;
//   - each layer's LoRA gradients are finished before the recomputation of the layer below
//     starts, so that layer's LoRA inputs and output gradients are freed.
//
// ONNX Runtime orders nodes by a depth-first walk back from the outputs; without the data
// dependencies passes.Recompute and the chunked loss add, both ran after the whole backward
// pass (measured on the Llama-3.2-3B step: ≈2.8 GB held needlessly at micro-batch 7).
func TestStepScheduleFreesEarly(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	res, err := hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 3, Layers: 9, Common: hfimport.Common{DType: "float32", Out: filepath.Join(dir, "m")}})
	if err != nil {
		t.Fatal(err)
	}
	o := prepare.DefaultOptions()
	o.Model, o.Out, o.LossChunks = res.Model, filepath.Join(dir, "art"), 4
	if _, err := prepare.Run(o, nil); err != nil {
		t.Fatal(err)
	}
	for _, device := range []bool{false, true} {
		t.Run(fmt.Sprintf("device=%v", device), func(t *testing.T) {
			prof := filepath.Join(t.TempDir(), "prof")
			runOneStep(t, o.Out, device, prof)
			checkSchedule(t, profiledOrder(t, prof), 9)
		})
	}
}

// runOneStep runs one optimizer step of two rows through the host or device stepper with
// ONNX Runtime's profiler on; the profile is written when the engine closes.
func runOneStep(t *testing.T, art string, device bool, prof string) {
	t.Helper()
	eng, init := openEngine(t, art, ortrun.Options{Device: "cpu", IntraOpThreads: 1, ProfilePrefix: prof},
		train.EngineOptions{Train: !device, Recompute: true, DeviceStep: device})
	defer eng.Close()
	st, err := eng.NewStepper(init, train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.GradScalerConfig{Disabled: true}}, 2, 32)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	in := train.StepInput{Step: 1, Batches: []data.Batch{tokenBatch(2, 32)}, Seeds: []uint64{7}, LR: 1e-3}
	if _, err := st.Step(context.Background(), in); err != nil {
		t.Fatal(err)
	}
}

var (
	reRecomputeLayer = regexp.MustCompile(`^recompute/.*layers[./](\d+)[./]`)
	reLoRAGrad       = regexp.MustCompile(`^grad/lora/model\.layers\.(\d+)\.`)
)

// checkSchedule applies TestStepScheduleFreesEarly's two rules to the node names in run
// order of the profiled step graph.
func checkSchedule(t *testing.T, order []string, layers int) {
	t.Helper()
	firstRecompute := map[int]int{}
	lastGrad := map[int]int{}
	var logSoftmax []int
	for i, n := range order {
		if m := reRecomputeLayer.FindStringSubmatch(n); m != nil {
			l, _ := strconv.Atoi(m[1])
			if _, ok := firstRecompute[l]; !ok {
				firstRecompute[l] = i
			}
		}
		if m := reLoRAGrad.FindStringSubmatch(n); m != nil {
			l, _ := strconv.Atoi(m[1])
			lastGrad[l] = i
		}
		if strings.HasPrefix(n, "chunked_loss/LogSoftmax") {
			logSoftmax = append(logSoftmax, i)
		}
	}
	if len(firstRecompute) != layers || len(lastGrad) != layers || len(logSoftmax) != 4 {
		t.Fatalf("profile: recomputed layers %v, LoRA gradient layers %v, %d LogSoftmax nodes (want %d, %d, 4)", firstRecompute, lastGrad, len(logSoftmax),
			layers, layers)
	}
	start := len(order)
	for _, i := range firstRecompute {
		start = min(start, i)
	}
	for _, i := range logSoftmax {
		if i > start {
			t.Errorf("a loss block's LogSoftmax ran at node %d, after the backward pass began (node %d)", i, start)
		}
	}
	for l := 1; l < layers; l++ {
		if lastGrad[l] > firstRecompute[l-1] {
			t.Errorf("layer %d's LoRA gradients finished at node %d, after layer %d's recomputation began (node %d)", l, lastGrad[l], l-1, firstRecompute[l-1])
		}
	}
	t.Logf("%d nodes: backward from %d; LogSoftmax at %v; layer → (first recompute, last LoRA gradient): %v %v", len(order), start, logSoftmax,
		firstRecompute, lastGrad)
}

// profiledOrder returns the node names of the largest profile under prefix (the training
// session's) in the order they ran, from its first run.
func profiledOrder(t *testing.T, prefix string) []string {
	t.Helper()
	var events []profileEvent
	for _, es := range readProfiles(t, prefix) {
		if len(es) > len(events) {
			events = es
		}
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].TS < events[j].TS })
	var order []string
	seen := map[string]bool{}
	for _, e := range events {
		if e.Cat != "Node" || !strings.HasSuffix(e.Name, "_kernel_time") {
			continue
		}
		n := strings.TrimSuffix(e.Name, "_kernel_time")
		if seen[n] {
			break // the second run of the graph
		}
		seen[n] = true
		order = append(order, n)
	}
	return order
}
