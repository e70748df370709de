package main

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/ortq/ortq/internal/gpumem"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
	"golang.org/x/sync/errgroup"
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

// devicesEngineOptions is engineOptions for every device of the list: the same step on each
// (host: train.NewMultiStepper; device or graph: train.NewMultiDeviceStepper, which keeps
// each device's accumulation in its memory and reduces on the host). auto over several
// devices is the host step (train.AutoStep).
func devicesEngineOptions(step string, devs []string, policy string, man *manifest.Manifest) (train.EngineOptions, error) {
	if (step == "auto" || step == "") && len(devs) > 1 {
		step = train.AutoStep(devs)
	}
	return engineOptions(step, devs[0], policy, man)
}

// multiDeviceThreads splits the cores between the CPU sessions of a cpu list when --threads
// is 0, so that they do not each start one thread per core.
func multiDeviceThreads(opts *ortrun.Options, devs []string) {
	if len(devs) > 1 && devs[0] == "cpu" && opts.IntraOpThreads == 0 {
		opts.IntraOpThreads = max(1, runtime.NumCPU()/len(devs))
	}
}

// startPeerEngines opens the training sessions of devs[1:] in the background, while the
// caller opens the first device's (the run's own engine, which also evaluates; the peers
// never evaluate): on GPUs most of a run's start is each session's weight upload and graph
// optimisation, which the devices can do at the same time. wait returns the peers, or the
// first error with every peer that opened closed.
func startPeerEngines(dir string, opts ortrun.Options, eo train.EngineOptions, devs []string) (wait func() ([]*train.Engine, error)) {
	peers := make([]*train.Engine, len(devs)-1)
	var g errgroup.Group
	eo.LazyEval = true
	for i, d := range devs[1:] {
		g.Go(func() error {
			o := opts
			o.Device = d
			e, err := train.OpenEngineWith(dir, o, eo)
			if err != nil {
				return fmt.Errorf("--device %s: %w", d, err)
			}
			peers[i] = e
			return nil
		})
	}
	return func() ([]*train.Engine, error) {
		if err := g.Wait(); err != nil {
			closeEngines(peers)
			return nil, err
		}
		return peers, nil
	}
}

func closeEngines(es []*train.Engine) {
	for _, e := range es {
		if e != nil {
			e.Close()
		}
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
		return fmt.Sprintf("note: --grad-accum %d gives each optimizer step %d micro-batch(es) for %d devices, so %d stay idle: pass --grad-accum %d (or a multiple) to use them all", gradAccum, gradAccum, n, n-gradAccum, n)
	}
	return fmt.Sprintf("note: --grad-accum %d is not a multiple of the %d devices: %d of them idle through each step's last round of micro-batches", gradAccum, n, n-gradAccum%n)
}

// multiStepper is train.Config.NewStepper for a run over eng and its peers; the run's
// report says how it ran (eng's notes go into it).
func multiStepper(eng *train.Engine, peers []*train.Engine) func([]train.Param, train.StepConfig, int, int) (train.Stepper, error) {
	if len(peers) == 0 {
		return nil
	}
	engines := append([]*train.Engine{eng}, peers...)
	devs := make([]string, len(engines))
	for i, e := range engines {
		devs[i] = e.Opts.Device
	}
	how := "host step"
	if eng.DeviceStep() {
		how = "device-resident steps accumulating on each device"
	}
	eng.Notes = append(eng.Notes, fmt.Sprintf("data-parallel over %d devices (%s): %s, gradients reduced token-weighted in Go memory, one AdamW on the host; the run log and the report give each GPU's memory, and as gpu_used_bytes the busiest GPU's", len(devs), strings.Join(devs, ","), how))
	return func(init []train.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
		if eng.DeviceStep() {
			return train.NewMultiDeviceStepper(engines, init, sc, rows, seq)
		}
		return train.NewMultiStepper(engines, init, sc)
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
	recompute := policy != manifest.RecomputeNone
	for _, d := range devs {
		if err := checkDeviceMemory(d, m, recompute, microBatch, rows, seqLen); err != nil {
			return err
		}
	}
	return nil
}
