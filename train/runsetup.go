package train

// The run setup `ortq train` and `ortq bench` share: the optimizer step a run takes, the
// recomputation policy of --recompute auto, one engine per device and the Stepper over them.

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train/optim"
)

// StepKind is how a run's optimizer step runs (--step).
type StepKind string

const (
	// StepAuto is AutoStep's choice for the run's devices, where the artifacts allow it.
	StepAuto StepKind = "auto"
	// StepHost brings gradients to Go memory and runs AdamW there (NewHostStepper,
	// NewMultiStepper).
	StepHost StepKind = "host"
	// StepDevice keeps LoRA weights, AdamW state and gradients in the session's device
	// memory (NewDeviceStepper, NewMultiDeviceStepper).
	StepDevice StepKind = "device"
	// StepGraph is StepDevice captured in CUDA graphs where the step graph allows it.
	StepGraph StepKind = "graph"
)

// ParseStepKind reads a --step value ("" is StepAuto).
func ParseStepKind(s string) (StepKind, error) {
	switch k := StepKind(s); k {
	case "":
		return StepAuto, nil
	case StepAuto, StepHost, StepDevice, StepGraph:
		return k, nil
	}
	return "", fmt.Errorf("step %q: use host, device, graph or auto", s)
}

// ErrHostSelective is ChooseStep's refusal of the host step with selective recomputation or
// a dense base, which exist only as device step graphs.
var ErrHostSelective = errors.New("selective recomputation and a dense base exist only as device steps")

// AutoStep is the optimizer step StepAuto runs on devs (one device, or a list):
//   - one CUDA device: StepGraph (for the recomputation policy the run uses, where the
//     artifacts hold its step graph), the device-resident step captured
//     in CUDA graphs where the step graph allows it (see Engine's notes). Measured on an H200
//     (Llama-3.2-3B shape, micro-batch 7): graph 206 ms, device 220 ms, host 264–300 ms per
//     step; a CUDA-graph run of the default model interrupted and resumed equals the
//     uninterrupted one bit for bit.
//   - several devices: StepHost (NewMultiStepper). Measured on two H200s, same shape: the
//     host step scales 2.02× over one GPU, the device-resident multi-device step 1.63×, whose
//     per-step weight upload and gradient download costs more than the host step's
//     reduction.
//   - otherwise (CPU): StepHost.
func AutoStep(devs []string) StepKind {
	if len(devs) == 1 && strings.HasPrefix(devs[0], "cuda") {
		return StepGraph
	}
	return StepHost
}

// ChooseStep resolves kind for a run over devs with a recomputation policy into the engine
// options every device opens: StepAuto is AutoStep's choice, or the host step where the
// artifacts lack the policy's step graph; an explicit device or graph step needs that graph.
// On CUDA the evaluation session opens only while evaluating (LazyEval).
func ChooseStep(kind StepKind, devs []string, key string, man *manifest.Manifest) (EngineOptions, error) {
	cuda := strings.HasPrefix(devs[0], "cuda")
	policy, dense := manifest.SplitStepKey(key)
	host := EngineOptions{Train: true, Recompute: policy != manifest.RecomputeNone, LazyEval: cuda}
	switch kind {
	case StepAuto, "":
		if kind = AutoStep(devs); man.Step(key) == nil {
			kind = StepHost
		}
	case StepDevice, StepGraph:
		if man.Step(key) == nil {
			return host, fmt.Errorf("the artifacts have no device step graph for recompute %s (%s): rerun `ortq prepare`", key, manifest.StepFile(key))
		}
	case StepHost:
	default:
		_, err := ParseStepKind(string(kind))
		return host, err
	}
	if kind == StepHost {
		if policy == manifest.RecomputeSelective || dense {
			return host, ErrHostSelective
		}
		return host, nil
	}
	return EngineOptions{DeviceStep: true, Policy: policy, DenseBase: dense, CUDAGraph: kind == StepGraph, LazyEval: cuda}, nil
}

// Bases of the frozen weights on a device step (--base): BaseFourBit reads the 4-bit bytes
// (dequantized on every product), BaseDense the float16 weights dequantized once at load
// (manifest.DenseStep: faster, more memory), BaseAuto dense where it fits the budget.
const (
	BaseAuto    = "auto"
	BaseFourBit = "4bit"
	BaseDense   = "dense"
)

// ParseBase checks a --base value.
func ParseBase(s string) (string, error) {
	switch s {
	case BaseAuto, BaseFourBit, BaseDense:
		return s, nil
	case "":
		return BaseAuto, nil
	}
	return "", fmt.Errorf("base %q: use auto, 4bit or dense", s)
}

// ResolveRecompute picks the device step of a run once the artifacts are read: policy is
// --recompute (auto: the fastest whose estimated peak fits), base is --base (auto: dense
// where it fits), budget the bytes they may plan for (0: 90% of free(), the device's free
// bytes, 0 when unknown). Over several devices, on the CPU and with the host step (step is
// --step) the base stays 4-bit and auto recomputation is layer over several devices. It
// returns the policy or its manifest.DenseStep key and the line the run prints and reports
// ("" when nothing was chosen).
func ResolveRecompute(man *manifest.Manifest, devs []string, policy, base string, step StepKind, budget float64, free func() uint64, rows,
	seqLen int) (key, note string, err error) {
	oneGPU := len(devs) == 1 && strings.HasPrefix(devs[0], "cuda") && step != StepHost
	named := policy // the policy whose dense step must exist (prepare writes all three or none)
	if named == "auto" {
		named = manifest.RecomputeLayer
	}
	if base == BaseDense && (!oneGPU || man.Step(manifest.DenseStep(named)) == nil) {
		return "", "", fmt.Errorf("base dense needs one GPU, a device or graph step and artifacts with dense steps (prepare a 4-bit model with this version)")
	}
	if !oneGPU || (base == BaseFourBit && policy != "auto") {
		if policy == "auto" {
			policy = manifest.RecomputeLayer
		}
		return policy, "", nil
	}
	keys := StepKeys(base)
	if policy != "auto" {
		keys = slices.DeleteFunc(keys, func(k string) bool { p, _ := manifest.SplitStepKey(k); return p != policy })
	}
	if budget == 0 {
		n := free()
		if n == 0 {
			k := keys[len(keys)-1]
			return k, fmt.Sprintf("recompute/base auto: %s (the device's free memory is unknown; pass --max-gpu-memory)", k), nil
		}
		budget = 0.9 * float64(n)
	}
	c := ChooseRecompute(man, budget, rows, seqLen, keys)
	return c.Policy, c.String(), nil
}

// OpenEngines opens one engine per device of devs at once (on GPUs most of a start is each
// session's weight upload and graph optimisation, which the devices can do at the same
// time): the first is the run's own, opened with eo, which also evaluates; the others never
// evaluate (LazyEval). An error closes every engine that opened.
func OpenEngines(dir string, opts ortrun.Options, eo EngineOptions, devs []string) ([]*Engine, error) {
	engines := make([]*Engine, len(devs))
	var g errgroup.Group
	for i, d := range devs {
		g.Go(func() error {
			o, peer := opts, eo
			o.Device = d
			peer.LazyEval = peer.LazyEval || i > 0
			e, err := OpenEngineWith(dir, o, peer)
			if err != nil && len(devs) > 1 {
				err = fmt.Errorf("--device %s: %w", d, err)
			}
			engines[i] = e
			return err
		})
	}
	if err := g.Wait(); err != nil {
		CloseEngines(engines)
		return nil, err
	}
	return engines, nil
}

// CloseEngines closes every engine of es that is open.
func CloseEngines(es []*Engine) {
	for _, e := range es {
		if e != nil {
			e.Close()
		}
	}
}

// NewRunStepper is the Stepper of a run over engines (OpenEngines): the engine's own on one
// device; over several, NewMultiDeviceStepper where they opened the device step, else
// NewMultiStepper. Batches hold up to rows × seq tokens.
func NewRunStepper(engines []*Engine, init []optim.Param, cfg StepConfig, rows, seq int) (Stepper, error) {
	switch {
	case len(engines) == 1:
		return engines[0].NewStepper(init, cfg, rows, seq)
	case engines[0].DeviceStep():
		return NewMultiDeviceStepper(engines, init, cfg, rows, seq)
	}
	return NewMultiStepper(engines, init, cfg)
}
