package main

import (
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/ortq/ortq/internal/gpumem"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// parseDevices resolves --device into one ONNX Runtime device per training session
// (ortrun.ParseDevices over the GPUs CUDA can see); a bad value is a usage error.
func parseDevices(value string) ([]string, error) {
	devs, err := ortrun.ParseDevices(value, visibleGPUs)
	if err != nil {
		return nil, usageError{err}
	}
	return devs, nil
}

// visibleGPUs counts the GPUs CUDA can see; a variable so tests can pretend GPUs.
var visibleGPUs = gpumem.Visible

// stepOptions resolves --step (train.ChooseStep) for the devices and recomputation policy,
// its refusals worded for the flags.
func stepOptions(step string, devs []string, policy string, man *manifest.Manifest) (train.EngineOptions, error) {
	kind, err := train.ParseStepKind(step)
	if err != nil {
		return train.EngineOptions{}, usageError{fmt.Errorf("--%w", err)}
	}
	eo, err := train.ChooseStep(kind, devs, policy, man)
	switch {
	case errors.Is(err, train.ErrHostSelective):
		return eo, usageError{fmt.Errorf("--recompute selective exists only as a device step: pass --step device or graph (or auto on one GPU)")}
	case err != nil:
		return eo, fmt.Errorf("--step %s --recompute %s: %w", step, policy, err)
	}
	return eo, nil
}

// multiDeviceThreads splits the cores between the CPU sessions of a cpu list when --threads
// is 0, so that they do not each start one thread per core.
func multiDeviceThreads(opts *ortrun.Options, devs []string) {
	if len(devs) > 1 && devs[0] == "cpu" && opts.IntraOpThreads == 0 {
		opts.IntraOpThreads = max(1, runtime.NumCPU()/len(devs))
	}
}

// idleDevicesNote says when --grad-accum (the micro-batches of one optimizer step, whatever
// the device count, so that results do not depend on it) leaves devices idle.
func idleDevicesNote(devs []string, gradAccum int) string {
	n := len(devs)
	switch {
	case n < 2 || gradAccum%n == 0:
		return ""
	case gradAccum < n:
		return fmt.Sprintf("note: --grad-accum %d gives each optimizer step %d micro-batch(es) for %d devices, so %d stay idle: pass --grad-accum %d (or a "+
			"multiple) to use them all",
			gradAccum, gradAccum, n, n-gradAccum, n)
	}
	return fmt.Sprintf("note: --grad-accum %d is not a multiple of the %d devices: %d of them idle through each step's last round of micro-batches",
		gradAccum, n, n-gradAccum%n)
}

// runStepper is train.Config.NewStepper for a run over several engines (nil for one: the
// loop then uses the engine's own); the run's report says how it ran (the first engine's
// notes go into it).
func runStepper(engines []*train.Engine) func([]optim.Param, train.StepConfig, int, int) (train.Stepper, error) {
	if len(engines) < 2 {
		return nil
	}
	eng := engines[0]
	devs := make([]string, len(engines))
	for i, e := range engines {
		devs[i] = e.Opts.Device
	}
	how := "host step"
	if eng.DeviceStep() {
		how = "device-resident steps accumulating on each device"
	}
	eng.Notes = append(eng.Notes, fmt.Sprintf("data-parallel over %d devices (%s): %s, gradients reduced token-weighted in Go memory, one AdamW on the host; "+
		"the run log and the report give each GPU's memory, and as gpu_used_bytes the busiest GPU's", len(devs), strings.Join(devs, ","), how))
	return func(init []optim.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
		return train.NewRunStepper(engines, init, sc, rows, seq)
	}
}

// gpuMemory is the run log's GPU memory sampler of a one-device run (nil for several
// devices, which gpuDevices samples, or where NVML is unavailable).
func gpuMemory(devs []string) func() (used, total uint64, ok bool) {
	if len(devs) != 1 {
		return nil
	}
	return gpumem.Sampler(devs[0])
}

// gpuDevices is the run log's per-device GPU memory samplers when the run spans several GPUs
// (nil for one device, or where NVML is unavailable); the log's GPU figure is then the
// busiest GPU's, the per-GPU peak a data-parallel run is sized by.
func gpuDevices(devs []string) []train.GPUSampler {
	if len(devs) < 2 {
		return nil
	}
	var out []train.GPUSampler
	for _, d := range devs {
		if s := gpumem.Sampler(d); s != nil {
			out = append(out, train.GPUSampler{Device: d, Sample: s})
		}
	}
	return out
}

// checkDevicesMemory is checkDeviceMemory on every GPU of the run: each runs micro-batches
// of the same size.
func checkDevicesMemory(devs []string, m manifest.Model, policy string, microBatch, rows, seqLen int) error {
	p, _ := manifest.SplitStepKey(policy)
	recompute := p != manifest.RecomputeNone
	for _, d := range devs {
		if err := checkDeviceMemory(d, m, recompute, microBatch, rows, seqLen); err != nil {
			return err
		}
	}
	return nil
}
