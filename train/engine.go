package train

import (
	"fmt"
	"maps"
	"path/filepath"
	"strings"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train/optim"
)

// Engine runs an artifacts directory's graphs on ONNX Runtime: a training step
// (forward + backward of one micro-batch) and evaluation.
type Engine struct {
	Dir  string
	Man  *manifest.Manifest
	Opts ortrun.Options
	// DropoutSeed selects the LoRA dropout masks of the next Step. The masks are a pure
	// function of it (ortgraph/passes/dropout.go), so a loop that sets it from its step
	// counter draws the same masks after a resume. Step advances it by one, so callers
	// that never set it still get fresh masks for every micro-batch.
	DropoutSeed uint64

	// Notes say which optimizer step the engine runs and how it departed from what was
	// asked (CUDA graphs it could not use), for the run's report.
	Notes []string

	train, eval *ortrun.Session
	// step is the device-resident step session (EngineOptions.DeviceStep).
	step *ortrun.Session
	// shared holds the device step's shared 4-bit weights (manifest.Graph.SharedInitializers).
	shared     *ortrun.SharedInitializers
	trainGraph *manifest.Graph
	lazyEval   bool
}

// OpenEngine loads the manifest and opens the evaluation graph, and the training graph
// (without recomputation) when withTrain is set.
func OpenEngine(dir string, opts ortrun.Options, withTrain bool) (*Engine, error) {
	return OpenEngineWith(dir, opts, EngineOptions{Train: withTrain})
}

// EngineOptions selects the graphs an Engine opens.
type EngineOptions struct {
	Train bool
	// Recompute selects the training graph with per-layer recomputation.
	Recompute bool
	// LazyEval opens the evaluation graph only while evaluating. On a GPU each session
	// holds its own copy of the weights and its own memory arena, so keeping the
	// evaluation session open through training would double the weights' footprint.
	LazyEval bool
	// DeviceStep opens the device-resident step graph of the recomputation policy Policy
	// (manifest.RecomputeLayer when empty) instead of a training graph, for NewDeviceStepper.
	DeviceStep bool
	Policy     string
	// CUDAGraph captures the device step in CUDA graphs (CUDA only). Where ONNX Runtime
	// refuses, the step runs without them and Notes says so.
	CUDAGraph bool
	// NoShareWeights lets the device step session load the 4-bit weights under both their
	// names instead of sharing one buffer (ortq's ORTQX_SHARE_WEIGHTS=0; see shareWeights).
	NoShareWeights bool
	// DenseBase opens the policy's dense step (manifest.DenseStep): the 4-bit base
	// dequantized once, when the session is created, and held in float16.
	DenseBase bool
}

// OpenEngineWith is OpenEngine with the choice of training graph.
func OpenEngineWith(dir string, opts ortrun.Options, eo EngineOptions) (*Engine, error) {
	man, err := manifest.ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	if err := checkBnb4Device(man, opts.Device); err != nil {
		return nil, fmt.Errorf("artifacts %q: %w", dir, err)
	}
	e := &Engine{Dir: dir, Man: man, Opts: opts, trainGraph: &man.Train}
	if eo.Recompute {
		if man.TrainRecompute == nil {
			return nil, fmt.Errorf("artifacts %q have no recomputing training graph: rerun `ortq prepare`", dir)
		}
		e.trainGraph = man.TrainRecompute
	}
	e.lazyEval = eo.LazyEval
	if !eo.LazyEval {
		if err := e.openEval(); err != nil {
			return nil, err
		}
	}
	if eo.DeviceStep {
		if err := e.openStep(eo.Policy, eo.DenseBase, eo.CUDAGraph, eo.NoShareWeights); err != nil {
			e.Close()
			return nil, err
		}
		return e, nil
	}
	if eo.Train {
		if e.train, err = ortrun.NewSession(filepath.Join(dir, e.trainGraph.File), opts); err != nil {
			e.Close()
			return nil, fmt.Errorf("open %s: %w", e.trainGraph.File, err)
		}
	}
	return e, nil
}

// checkBnb4Device refuses an NF4/FP4 base with float16 activations on the CPU: ONNX Runtime's
// CPU MatMulBnb4 kernel takes float32 only (its CUDA kernel takes both).
func checkBnb4Device(man *manifest.Manifest, device string) error {
	if (man.QuantType == manifest.QuantNF4 || man.QuantType == manifest.QuantFP4) && man.Model.Precision == "float16" && !strings.HasPrefix(device, "cuda") {
		return fmt.Errorf("a %s base with float16 activations runs on CUDA only (ONNX Runtime's CPU MatMulBnb4 takes float32): use --device cuda, or "+
			"prepare a float32 model", man.QuantType)
	}
	return nil
}

// openStep opens the device step graph of a recomputation policy (its dense form when
// dense), with CUDA graphs when asked and possible.
func (e *Engine) openStep(policy string, dense, cudaGraph, noShare bool) error {
	if policy == "" {
		policy = manifest.RecomputeLayer
	}
	key := policy
	if dense {
		key = manifest.DenseStep(policy)
	}
	g := e.Man.Step(key)
	if g == nil || len(e.Man.StepLayout) == 0 {
		what := "recompute " + policy
		if dense {
			what += " with a dense base (4-bit artifacts prepared by this version)"
		}
		return fmt.Errorf("artifacts %q have no device step graph for %s (%s): rerun `ortq prepare`", e.Dir, what, manifest.StepFile(key))
	}
	path := filepath.Join(e.Dir, g.File)
	opts := e.Opts
	if dense {
		cfg := maps.Clone(opts.Tuning.SessionConfig) // the caller's map stays as it is
		if cfg == nil {
			cfg = map[string]string{}
		}
		maps.Copy(cfg, manifest.DenseSessionConfig)
		opts.Tuning.SessionConfig = cfg
		e.Notes = append(e.Notes, fmt.Sprintf("base: dense (%s: the 4-bit weights dequantized once at load and held in float16, %.2f GiB more)", g.File,
			e.Man.DenseExtraBytes()/(1<<30)))
	}
	opts.CUDAGraph = cudaGraph && strings.HasPrefix(opts.Device, "cuda")
	if opts.CUDAGraph && len(g.CaptureBlockers) > 0 {
		e.Notes = append(e.Notes, fmt.Sprintf("CUDA graphs off: %s holds %s, whose CUDA kernels a captured graph cannot replay safely", g.File,
			strings.Join(g.CaptureBlockers, ", ")))
		opts.CUDAGraph = false
	}
	e.shareWeights(path, g, &opts, noShare)
	s, err := ortrun.NewSession(path, opts)
	if err != nil && opts.CUDAGraph {
		e.Notes = append(e.Notes, fmt.Sprintf("CUDA graphs off: ONNX Runtime refused to capture %s (%v)", g.File, err))
		opts.CUDAGraph = false
		s, err = ortrun.NewSession(path, opts)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", g.File, err)
	}
	e.step = s
	how := "without CUDA graphs"
	if opts.CUDAGraph {
		how = "captured in CUDA graphs"
	}
	e.Notes = append(e.Notes, fmt.Sprintf("optimizer step: device-resident (%s: LoRA weights, AdamW state and gradients in the session's memory), %s", g.File,
		how))
	return nil
}

// shareWeights gives the step session one buffer for each group of initializers that name
// the same 4-bit bytes (the device step's MatMulNBits uint8 tensor and
// DequantizeLinear's UINT4 view), so that it holds them once; noShare
// (EngineOptions.NoShareWeights) lets ONNX Runtime load every name on its own. A failure leaves the weights unshared and says so.
func (e *Engine) shareWeights(path string, g *manifest.Graph, opts *ortrun.Options, noShare bool) {
	if len(g.SharedInitializers) == 0 {
		return
	}
	if noShare {
		e.Notes = append(e.Notes, fmt.Sprintf("4-bit weights not shared (ORTQX_SHARE_WEIGHTS=0): %s holds %d of them twice", g.File, len(g.SharedInitializers)))
		return
	}
	sh, err := ortrun.LoadSharedInitializers(path, g.SharedInitializers, e.Opts)
	if err != nil {
		e.Notes = append(e.Notes, fmt.Sprintf("4-bit weights not shared: %v", err))
		return
	}
	e.shared = sh
	opts.Initializers = sh.Initializers
	e.Notes = append(e.Notes, fmt.Sprintf("4-bit weights shared by MatMulNBits and DequantizeLinear: %d weights, %.1f MiB in one buffer",
		len(g.SharedInitializers), float64(sh.Bytes)/(1<<20)))
}

// DeviceStep reports whether the engine opened the device-resident step graph.
func (e *Engine) DeviceStep() bool { return e.step != nil }

// SharedWeightBytes is the size of the buffer holding the device step's shared 4-bit
// weights (0 when they are not shared). The buffer lies outside the step session's arena,
// whose statistics therefore do not count those weights.
func (e *Engine) SharedWeightBytes() int64 {
	if e.shared == nil {
		return 0
	}
	return e.shared.Bytes
}

// NewStepper returns the Stepper of the engine's training session: the device-resident
// one when the engine opened the device step (batches up to rows × seq), else the host one.
func (e *Engine) NewStepper(init []optim.Param, cfg StepConfig, rows, seq int) (Stepper, error) {
	if e.step != nil {
		return NewDeviceStepper(e, init, cfg, rows, seq)
	}
	return NewHostStepper(e, init, cfg)
}

func (e *Engine) openEval() error {
	if e.eval != nil {
		return nil
	}
	s, err := ortrun.NewSession(filepath.Join(e.Dir, e.Man.Eval.File), e.Opts)
	if err != nil {
		return fmt.Errorf("open %s: %w", e.Man.Eval.File, err)
	}
	e.eval = s
	return nil
}

// Close releases the sessions.
func (e *Engine) Close() {
	if e.train != nil {
		e.train.Close()
	}
	if e.step != nil {
		e.step.Close()
	}
	e.shared.Close() // after the step session, which reads it
	e.shared = nil
	if e.eval != nil {
		e.eval.Close()
		e.eval = nil
	}
}

// TrainAllocatorStats is ONNX Runtime's allocator statistics of the training session (the
// CUDA arena on CUDA, the CPU arena on the CPU; see ortrun.Session.AllocatorStats); ok is false
// when no training session is open or its allocator keeps none.
func (e *Engine) TrainAllocatorStats() (stats ortrun.ArenaStats, ok bool, err error) {
	switch {
	case e.step != nil:
		return e.step.AllocatorStats()
	case e.train == nil:
		return ortrun.ArenaStats{}, false, nil
	}
	return e.train.AllocatorStats()
}

// feeds builds the graph inputs for a batch and the current LoRA values.
func feeds(g *manifest.Graph, b data.Batch, params map[string][]float32, lossScale float32, dropoutSeed uint64) (map[string]*ortrun.Tensor, error) {
	in := map[string]*ortrun.Tensor{}
	shape := b.Shape()
	for _, io := range g.Inputs {
		switch io.Role {
		case manifest.RoleInputIDs:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: b.InputIDs}
		case manifest.RoleAttentionMask:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: b.AttentionMask}
		case manifest.RolePositionIDs:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: b.Positions()}
		case manifest.RoleLabels:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: b.Labels}
		case manifest.RoleLossScale:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Float32, Shape: []int64{1}, Data: []float32{lossScale}}
		case manifest.RoleDropoutSeed:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: []int64{1}, Data: []int64{int64(dropoutSeed % manifest.DropoutSeedModulus)}}
		case manifest.RoleDropoutRows:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int32, Shape: shape,
				Data: manifest.DropoutRowFactors(int64(dropoutSeed%manifest.DropoutSeedModulus), len(b.InputIDs))}
		case manifest.RoleLoRA:
			v, ok := params[io.Param]
			if !ok {
				return nil, fmt.Errorf("no value for LoRA parameter %q", io.Param)
			}
			s := make([]int64, len(io.Shape))
			for i := range io.Shape {
				fmt.Sscan(io.Shape[i], &s[i])
			}
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Float32, Shape: s, Data: v}
		default:
			return nil, fmt.Errorf("graph %s input %q has role %q that ortq cannot feed", g.File, io.Name, io.Role)
		}
	}
	return in, nil
}

func scalarOut(out map[string]*ortrun.Tensor, name string) (float64, error) {
	t, ok := out[name]
	if !ok {
		return 0, fmt.Errorf("graph did not return %q", name)
	}
	v, ok := t.Data.([]float32)
	if !ok || len(v) != 1 {
		return 0, fmt.Errorf("output %q is not a 1-element float tensor", name)
	}
	return float64(v[0]), nil
}

// StepResult is one micro-batch's forward + backward.
type StepResult struct {
	LossSum float64
	Tokens  int
	// Grads are d(loss_sum · lossScale)/dθ by PEFT name.
	Grads map[string][]float32
}

// Step runs the training graph on one micro-batch.
func (e *Engine) Step(b data.Batch, params map[string][]float32, lossScale float32) (*StepResult, error) {
	r, tokens, err := e.stepMean(b, params, lossScale)
	if err != nil {
		return nil, err
	}
	for _, v := range r.Grads {
		for i := range v {
			v[i] *= float32(tokens)
		}
	}
	return r, nil
}

// stepMean is Step with the gradients as the graph returns them: d(loss_sum·lossScale/
// tokens)/dθ, and that token divisor (multiplying back in float32, as Step does, can
// overflow where the graph did not; the host stepper multiplies in float64).
func (e *Engine) stepMean(b data.Batch, params map[string][]float32, lossScale float32) (*StepResult, int, error) {
	if e.train == nil {
		panic("Engine.Step without a training session")
	}
	g := e.trainGraph
	// The graph differentiates loss_sum · loss_scale. Seeding with scale/tokens keeps the
	// backward's magnitudes those of the mean loss (as PyTorch's are): a sum over
	// thousands of tokens times a 2^16 loss scale would overflow fp16 activations.
	// The gradients are multiplied back by the token count below, so callers still get
	// d(loss_sum · lossScale)/dθ for exact token-weighted accumulation.
	tokens := b.Tokens
	if tokens <= 0 {
		tokens = 1
	}
	in, err := feeds(g, b, params, lossScale/float32(tokens), e.DropoutSeed)
	e.DropoutSeed++
	if err != nil {
		return nil, 0, err
	}
	var names []string
	for _, io := range g.Outputs {
		if io.Role == manifest.RoleGrad || io.Role == manifest.RoleLossSum || io.Role == manifest.RoleTokenCount {
			names = append(names, io.Name)
		}
	}
	out, err := e.train.Run(in, names)
	if err != nil {
		return nil, 0, err
	}
	r := &StepResult{Grads: map[string][]float32{}}
	for _, io := range g.Outputs {
		switch io.Role {
		case manifest.RoleGrad:
			v, ok := out[io.Name].Data.([]float32)
			if !ok {
				return nil, 0, fmt.Errorf("gradient output %q is not float32", io.Name)
			}
			r.Grads[io.Param] = v
		case manifest.RoleLossSum:
			if r.LossSum, err = scalarOut(out, io.Name); err != nil {
				return nil, 0, err
			}
		case manifest.RoleTokenCount:
			c, err := scalarOut(out, io.Name)
			if err != nil {
				return nil, 0, err
			}
			r.Tokens = int(c)
		}
	}
	return r, tokens, nil
}

// Eval returns the summed loss and token count of the batches under params.
func (e *Engine) Eval(batches []data.Batch, params map[string][]float32) (lossSum float64, tokens int64, err error) {
	if err := e.openEval(); err != nil {
		return 0, 0, err
	}
	if e.lazyEval {
		defer func() {
			e.eval.Close()
			e.eval = nil
		}()
	}
	g := &e.Man.Eval
	var sumName, cntName string
	for _, io := range g.Outputs {
		switch io.Role {
		case manifest.RoleLossSum:
			sumName = io.Name
		case manifest.RoleTokenCount:
			cntName = io.Name
		}
	}
	for _, b := range batches {
		in, err := feeds(g, b, params, 1, 0)
		if err != nil {
			return 0, 0, err
		}
		out, err := e.eval.Run(in, []string{sumName, cntName})
		if err != nil {
			return 0, 0, err
		}
		s, err := scalarOut(out, sumName)
		if err != nil {
			return 0, 0, err
		}
		c, err := scalarOut(out, cntName)
		if err != nil {
			return 0, 0, err
		}
		lossSum += s
		tokens += int64(c)
	}
	return lossSum, tokens, nil
}
