package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/ortq/ortq/internal/gpumem"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
	"golang.org/x/sync/errgroup"
)

// deviceHelp is what a bad --device value is told to use.
const deviceHelp = "use cpu, cuda, cuda:N, a list such as cuda:0,cuda:1, or cuda:all"

// parseDevices resolves --device into one ONNX Runtime device per training session. One
// device is returned as given (today's single-session path). A list names several GPUs of
// this host, each once; cuda:all is every GPU CUDA can see. Repeated cpu entries are
// allowed on purpose: each is one more CPU session standing in for a GPU, which tests the
// multi-device path on any machine (it splits the cores, it does not add speed).
func parseDevices(value string) ([]string, error) {
	bad := func(format string, a ...any) error {
		return usageError{fmt.Errorf("--device %q: %s", value, fmt.Sprintf(format, a...))}
	}
	v := strings.ToLower(strings.TrimSpace(value))
	if v == "cuda:all" {
		n := visibleGPUs()
		if n == 0 {
			return nil, bad("no GPU visible (NVML finds none, or CUDA_VISIBLE_DEVICES hides them all): list devices as cuda:0,cuda:1, or use cpu")
		}
		devs := make([]string, n)
		for i := range devs {
			devs[i] = "cuda:" + strconv.Itoa(i)
		}
		return devs, nil
	}
	parts := strings.Split(v, ",")
	if len(parts) == 1 {
		if _, _, err := ortrun.ParseDevice(value); err != nil {
			return nil, bad("%s", deviceHelp)
		}
		return []string{value}, nil
	}
	var devs []string
	seen := map[string]bool{}
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "cuda:all" {
			return nil, bad("cuda:all stands alone, not in a list")
		}
		provider, id, err := ortrun.ParseDevice(p)
		if p == "" || err != nil {
			return nil, bad("entry %q: %s", p, deviceHelp)
		}
		d := provider
		if provider == "cuda" {
			d = "cuda:" + strconv.Itoa(id)
			if n := visibleGPUs(); n > 0 && id >= n {
				return nil, bad("%s: only %d GPU(s) visible (cuda:0 … cuda:%d)", d, n, n-1)
			}
			if seen[d] {
				return nil, bad("%s is named twice: one training session per GPU", d)
			}
		}
		if len(devs) > 0 && (provider == "cpu") != (devs[0] == "cpu") {
			return nil, bad("mixes the CPU and GPUs: list GPUs only (or cpu entries only, for testing)")
		}
		seen[d] = true
		devs = append(devs, d)
	}
	return devs, nil
}

// visibleGPUs is the number of GPUs CUDA numbers: NVML's count, cut to the entries of
// CUDA_VISIBLE_DEVICES when it is set (CUDA stops at the first empty entry). 0 when NVML
// is unavailable. A variable so tests can pretend GPUs.
var visibleGPUs = func() int {
	gpus, _, _ := gpumem.Inventory()
	n := len(gpus)
	if env, ok := os.LookupEnv("CUDA_VISIBLE_DEVICES"); ok {
		k := 0
		for _, e := range strings.Split(env, ",") {
			if strings.TrimSpace(e) == "" {
				break
			}
			k++
		}
		n = min(n, k)
	}
	return n
}

// devicesEngineOptions is engineOptions for every device of the list: the same step on each
// (host: train.NewMultiStepper; device or graph: train.NewMultiDeviceStepper, which keeps
// each device's accumulation in its memory and reduces on the host).
func devicesEngineOptions(step string, devs []string, recompute bool, man *manifest.Manifest) (train.EngineOptions, error) {
	return engineOptions(step, devs[0], recompute, man)
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
	eng.Notes = append(eng.Notes, fmt.Sprintf("data-parallel over %d devices (%s): %s, gradients reduced token-weighted in Go memory, one AdamW on the host; GPU memory in the run log is the busiest GPU's", len(devs), strings.Join(devs, ","), how))
	return func(init []train.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
		if eng.DeviceStep() {
			return train.NewMultiDeviceStepper(engines, init, sc, rows, seq)
		}
		return train.NewMultiStepper(engines, init, sc)
	}
}

// gpuMemory is the run log's GPU memory sampler over the devices: the GPU that uses the
// most, with its total. That is the per-GPU peak a data-parallel run is sized by; the log
// has one GPU column, so the other GPUs are not recorded separately.
func gpuMemory(devs []string) func() (used, total uint64, ok bool) {
	if len(devs) == 1 {
		return gpumem.Sampler(devs[0])
	}
	var samplers []func() (uint64, uint64, bool)
	for _, d := range devs {
		if s := gpumem.Sampler(d); s != nil {
			samplers = append(samplers, s)
		}
	}
	if len(samplers) == 0 {
		return nil
	}
	return func() (used, total uint64, ok bool) {
		for _, s := range samplers {
			if u, t, sok := s(); sok && (!ok || u > used) {
				used, total, ok = u, t, true
			}
		}
		return used, total, ok
	}
}

// checkDevicesMemory is checkDeviceMemory on every GPU of the run: each runs micro-batches
// of the same size.
func checkDevicesMemory(devs []string, m manifest.Model, recompute bool, microBatch, rows, seqLen int) error {
	for _, d := range devs {
		if err := checkDeviceMemory(d, m, recompute, microBatch, rows, seqLen); err != nil {
			return err
		}
	}
	return nil
}
