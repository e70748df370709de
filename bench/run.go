package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/internal/gpumem"
	"github.com/ortq/ortq/internal/runreport"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// Run measures every sweep point of cfg and returns the result (memory timeline included).
// ONNX Runtime must be loadable (ortrun.Init is called with the default library when the
// caller has not loaded one).
func Run(cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := ortrun.Init(""); err != nil {
		return nil, err
	}
	start := time.Now()
	res := &Result{Schema: Schema, Tool: ToolOrtq, CreatedAt: start.UTC().Truncate(time.Second), Config: cfg}
	res.Machine = DescribeMachine()
	refBefore := MeasureReference(7)

	r := &runner{cfg: cfg, logf: logf, res: res, dirs: map[string]*graphDir{}, shapes: map[string]*ModelShape{}}
	defer func() {
		if r.cleanup != nil {
			r.cleanup()
		}
	}()
	devs, err := devices(cfg.Device)
	if err != nil {
		return nil, err
	}
	r.devs = devs
	base, err := r.resolveBase()
	if err != nil {
		return nil, err
	}
	pts, err := expand(base, cfg.Sweep)
	if err != nil {
		return nil, err
	}
	for _, p := range pts {
		if p.graphKey() != r.baseKey && r.source == "" {
			return nil,
				fmt.Errorf("point %s needs the graph prepared with %s, but artifacts %q name no source model that exists (%q): pass --model instead of --artifacts",
					p.Label(), p.graphKey(), cfg.Artifacts, r.sourceNamed)
		}
	}

	// With several GPUs, memory is sampled on the first (they hold the same graphs and state).
	gpu, gerr := openGPU(r.devs[0])
	if gerr != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("GPU memory not measured: %v", gerr))
	}
	r.setPeakFLOPS(gpu)
	r.mon = newMonitor(start, cfg.SampleInterval, gpu)
	if err := resetPeakRSS(); err != nil {
		res.Notes = append(res.Notes,
			fmt.Sprintf("cannot reset the kernel's peak-RSS mark (%v): peak host RSS may include work done before a point (prepare, earlier points)", err))
		r.noHWMReset = true
	}

	for i, p := range pts {
		logf("point %d/%d: %s", i+1, len(pts), p.Label())
		pt, err := r.point(p)
		if err != nil {
			return nil, fmt.Errorf("point %s: %w", p.Label(), err)
		}
		arena := ""
		if a := pt.ORTArena; a != nil {
			arena = fmt.Sprintf(", ONNX Runtime arena (%s) peak in use %s of %s reserved", a.Device, fbytes(nonNeg(a.PeakInUse)), fbytes(nonNeg(a.Reserved)))
		}
		logf("  %.1f tokens/s, step p50 %.1f ms, peak GPU %s, peak host RSS %s%s",
			float64(pt.TokensPerSec), float64(pt.StepTime.P50MS), fbytes(pt.PeakGPUBytes), fbytes(pt.PeakRSSBytes), arena)
		res.Points = append(res.Points, *pt)
	}
	res.ReferenceMS = Float(min(refBefore, MeasureReference(7)))
	res.Timeline = r.mon.timeline()
	return res, nil
}

// graphDir is one prepared artifacts directory.
type graphDir struct {
	dir        string
	prepareSec float64
	linears    *passes.Linears // from prepare, when it ran here
}

type runner struct {
	cfg  Config
	devs []string // cfg.Device resolved: the devices every point trains on
	logf func(string, ...any)
	res  *Result
	mon  *monitor

	// source is the model to prepare points from ("" when only the artifacts exist).
	source, sourceNamed string
	prep                prepare.Options
	baseKey             string
	dirs                map[string]*graphDir
	shapes              map[string]*ModelShape // by graph key
	workDir             string
	cleanup             func()
	peak                float64
	peakNote            string
	noHWMReset          bool
}

// setPeakFLOPS takes the peak MFU is measured against: --peak-flops, else the table's row
// for the GPU; the report notes which.
func (r *runner) setPeakFLOPS(gpu gpuProbe) {
	r.peak, r.peakNote = r.cfg.PeakFLOPS, "--peak-flops"
	if r.peak == 0 && gpu != nil {
		p, row, err := PeakFLOPS(gpu.name())
		if err != nil {
			r.res.Notes = append(r.res.Notes, err.Error())
		} else {
			r.peak, r.peakNote = p, row+" dense fp16 peak"
		}
	}
	if r.peak > 0 {
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("MFU against %.0f TFLOP/s (%s)", r.peak/1e12, r.peakNote))
	}
}

// resolveBase works out the base point and where its graph comes from.
func (r *runner) resolveBase() (Params, error) {
	c := r.cfg
	rec := c.Recompute
	if rec == "" || rec == "auto" {
		rec = "none"
		if provider, _, err := ortrun.ParseDevice(r.devs[0]); err == nil && provider == "cuda" {
			rec = "layer"
		}
	}
	if c.Preset != "" {
		dir, err := r.work()
		if err != nil {
			return Params{}, err
		}
		o := hfimport.SynthOptions{Preset: c.Preset, Seed: c.Seed, Layers: c.PresetLayers,
			Common: hfimport.Common{Out: filepath.Join(dir, "synth-"+unsafeChars.ReplaceAllString(c.Preset, "_")), DType: c.PresetDType, Force: true}}
		r.logf("synthesize %s → %s", c.Preset, o.Out)
		sr, err := hfimport.Synth(o)
		if err != nil {
			return Params{}, fmt.Errorf("--preset %s: %w", c.Preset, err)
		}
		c.Model = sr.Model
		r.res.Notes = append(r.res.Notes, fmt.Sprintf("model: preset %s synthesized with random weights (%s, %d parameters, seed %d)", c.Preset, sr.DType,
			sr.Params, c.Seed))
		debug.FreeOSMemory()
	}
	if c.Model != "" {
		r.source, r.sourceNamed = c.Model, c.Model
		r.prep = c.Prepare
		p := Params{MicroBatch: c.MicroBatch, SeqLen: c.SeqLen, Bits: c.Prepare.Bits, Recompute: rec,
			Targets: slices.Clone(c.Prepare.Targets), Step: resolveStep(c.Step, r.devs)}
		r.baseKey = "" // nothing prepared yet
		return p, nil
	}
	man, err := manifest.ReadManifest(c.Artifacts)
	if err != nil {
		return Params{}, err
	}
	// The manifest stores prepare's options as written; read them back as such.
	raw, _ := json.Marshal(man.Options)
	r.prep = prepare.DefaultOptions()
	if err := json.Unmarshal(raw, &r.prep); err != nil {
		return Params{}, fmt.Errorf("artifacts %q: manifest options: %w", c.Artifacts, err)
	}
	// The report records the options the artifacts were prepared with, not the defaults a
	// run from a model would prepare with.
	reported := c
	reported.Prepare = r.prep
	r.res.Config = reported
	if rec == "layer" && (c.Recompute == "" || c.Recompute == "auto") && len(r.devs) == 1 {
		if rec, err = r.chooseRecompute(man, "auto", resolveStep(c.Step, r.devs), c.MicroBatch); err != nil {
			return Params{}, err
		}
	}
	p := Params{MicroBatch: c.MicroBatch, SeqLen: c.SeqLen, Bits: r.prep.Bits, Recompute: rec,
		Targets: slices.Clone(r.prep.Targets), Step: resolveStep(c.Step, r.devs)}
	r.baseKey = p.graphKey()
	r.dirs[r.baseKey] = &graphDir{dir: c.Artifacts}
	r.sourceNamed = man.Source.Path
	if st, err := os.Stat(man.Source.Path); err == nil && st.Mode().IsRegular() {
		r.source = man.Source.Path
	}
	return p, nil
}

// chooseRecompute resolves a point's recompute and the run's Base into a device step key
// (train.ResolveRecompute against MaxGPUMemory, or 90% of the device's free memory), noting
// the choice in the report; a recompute that names a dense step already is kept.
func (r *runner) chooseRecompute(man *manifest.Manifest, rec string, kind train.StepKind, rows int) (string, error) {
	if _, dense := manifest.SplitStepKey(rec); dense {
		return rec, nil
	}
	base, _ := train.ParseBase(r.cfg.Base)
	free := func() uint64 { n, _ := gpumem.Free(r.devs[0]); return n }
	key, note, err := train.ResolveRecompute(man, r.devs, rec, base, kind, r.cfg.MaxGPUMemory, free, rows, r.cfg.SeqLen)
	if err != nil {
		return "", err
	}
	if note != "" && !slices.Contains(r.res.Notes, note) {
		r.res.Notes = append(r.res.Notes, note)
	}
	return key, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.=-]+`)

// graph returns the artifacts for a point, preparing them on first use.
func (r *runner) graph(p Params) (*graphDir, error) {
	key := p.graphKey()
	if g, ok := r.dirs[key]; ok {
		return g, nil
	}
	workDir, err := r.work()
	if err != nil {
		return nil, err
	}
	o := r.prep
	o.Model, o.Force = r.source, true
	o.Bits, o.Targets = p.Bits, slices.Clone(p.Targets)
	o.Out = filepath.Join(workDir, unsafeChars.ReplaceAllString(key, "_"))
	r.logf("  prepare %s → %s", key, o.Out)
	t0 := time.Now()
	pr, err := prepare.Run(o, nil)
	if err != nil {
		return nil, fmt.Errorf("prepare (%s): %w", key, err)
	}
	g := &graphDir{dir: o.Out, prepareSec: time.Since(t0).Seconds(), linears: pr.Linears}
	r.dirs[key] = g
	// prepare holds the whole model while it runs; give that memory back before measuring.
	debug.FreeOSMemory()
	return g, nil
}

// work returns the directory for synthesized models and prepared artifacts.
func (r *runner) work() (string, error) {
	if r.workDir != "" {
		return r.workDir, nil
	}
	if r.cfg.WorkDir != "" {
		if err := os.MkdirAll(r.cfg.WorkDir, 0o755); err != nil {
			return "", err
		}
		r.workDir = r.cfg.WorkDir
		return r.workDir, nil
	}
	d, err := os.MkdirTemp("", "ortq-bench-")
	if err != nil {
		return "", err
	}
	r.workDir, r.cleanup = d, func() { os.RemoveAll(d) }
	return d, nil
}

// shape returns what the FLOP count needs, from prepare's Linears when prepare ran here,
// else from the source model (passes.FindLinears), else from the manifest's quantized
// layers (nil when none of these can say).
func (r *runner) shape(g *graphDir, man *manifest.Manifest) (*ModelShape, string) {
	ls := g.linears
	if ls == nil && r.source != "" {
		if s, ok := r.shapes["source"]; ok {
			return withLoRA(s, man), ""
		}
		var err error
		if ls, err = prepare.Inspect(r.source); err != nil {
			ls = nil
		}
		debug.FreeOSMemory()
	}
	var s *ModelShape
	if ls != nil {
		s = &ModelShape{Layers: ls.Layers, AttnWidth: ls.Hidden}
		head := false
		for _, l := range ls.All {
			s.LinearParams += l.In * l.Out
			if l.Kind == "lm_head" {
				head, s.LMHeadParams = true, l.In*l.Out
			}
			if l.Kind == "q_proj" && l.Layer == 0 {
				s.AttnWidth = l.Out
			}
		}
		if !head {
			// Not a MatMul with a weight initializer of its own (e.g. a Gemm on the tied
			// embedding): it is still hidden×vocab of arithmetic.
			s.LMHeadParams = ls.Hidden * man.Model.Vocab
			s.LinearParams += s.LMHeadParams
		}
		if r.source != "" {
			r.shapes["source"] = s
		}
		return withLoRA(s, man), ""
	}
	if len(man.Quant) == 0 {
		return nil, "FLOPs (and MFU) unknown: the artifacts' source model is gone and its Linears were not quantized; pass --model"
	}
	s = &ModelShape{Layers: man.Model.Layers, AttnWidth: man.Model.Hidden}
	head := false
	for _, q := range man.Quant {
		s.LinearParams += int64(q.Shape[0]) * int64(q.Shape[1])
		if q.Module == "lm_head" {
			head, s.LMHeadParams = true, int64(q.Shape[0])*int64(q.Shape[1])
		}
		if strings.HasSuffix(q.Module, "layers.0.self_attn.q_proj") {
			s.AttnWidth = int64(q.Shape[0])
		}
	}
	if !head {
		s.LMHeadParams = man.Model.Hidden * man.Model.Vocab
		s.LinearParams += s.LMHeadParams
	}
	return withLoRA(s, man), ""
}

func withLoRA(s *ModelShape, man *manifest.Manifest) *ModelShape {
	c := *s
	c.LoRAParams = man.Counts.LoRAParams
	return &c
}

// point measures one sweep point: evaluation of the starting adapter, the timed steps on a
// training engine of their own, evaluation of the trained adapter, then throughput and MFU.
func (r *runner) point(p Params) (*Point, error) {
	c := r.cfg
	g, err := r.graph(p)
	if err != nil {
		return nil, err
	}
	man, err := manifest.ReadManifest(g.dir)
	if err != nil {
		return nil, err
	}
	label := p.Label()
	devs := r.devs
	pt := &Point{Label: label, Params: p, Device: strings.Join(devs, ","), Precision: man.Model.Precision,
		Warmup: c.Warmup, Steps: c.Steps, TokensPerStep: len(devs) * p.MicroBatch * p.SeqLen, PrepareSeconds: Float(g.prepareSec),
		MFU: Float(math.NaN()), HFU: Float(math.NaN()), PeakFLOPS: Float(math.NaN())}
	g.prepareSec = 0 // reported once, on the point that prepared it
	shape, note := r.shape(g, man)
	if note != "" {
		pt.Notes = append(pt.Notes, note)
	}
	opts := c.Session
	opts.Device, opts.IntraOpThreads, opts.BatchTokens = devs[0], c.Threads, p.MicroBatch*p.SeqLen
	vocab := int(man.Model.Vocab)
	if vocab <= 0 {
		return nil, fmt.Errorf("artifacts %q: manifest has no vocabulary size", g.dir)
	}
	params, err := train.LoadParams(filepath.Join(g.dir, man.LoRAInit), man)
	if err != nil {
		return nil, err
	}
	evaluate := r.evaluator(g.dir, opts, vocab, p)

	r.mon.begin(label, "eval_before")
	ended := false
	defer func() {
		if !ended {
			r.mon.end()
		}
	}()
	if c.EvalBatches > 0 {
		ev, err := evaluate(0, paramValues(params))
		if err != nil {
			return nil, err
		}
		pt.Eval = &EvalSummary{Batches: c.EvalBatches, Before: ev}
	}
	values, times, err := r.measure(pt, p, g.dir, man, opts, params)
	if err != nil {
		return nil, err
	}
	total := pt.Warmup + c.Steps
	if c.EvalBatches > 0 {
		r.mon.mark("eval_after", total)
		ev, err := evaluate(total, values)
		if err != nil {
			return nil, err
		}
		pt.Eval.After = ev
	}
	gp := r.mon.end()
	ended = true
	pt.PeakGPUBytes, pt.PeakGPUDeviceBytes, pt.GPUSource = gp.bytes, gp.device, gp.source
	pt.Memory = breakDown(pt, weightsBytes(g.dir, man), stepStateBytes(p.Step, man.Counts.LoRAParams))
	if gp.err != nil {
		pt.Notes = append(pt.Notes, fmt.Sprintf("GPU sampling: %v", gp.err))
	}
	if err := r.rates(pt, p, times, shape); err != nil {
		return nil, err
	}
	return pt, nil
}

// paramValues is params by name (the slices themselves, not copies).
func paramValues(params []optim.Param) map[string][]float32 {
	values := make(map[string][]float32, len(params))
	for _, q := range params {
		values[q.Name] = q.Data
	}
	return values
}

// evaluator returns the point's evaluation over EvalBatches synthetic batches. Each call
// opens an eval-only engine of its own and closes it, so that no evaluation session exists
// while the steps are measured.
func (r *runner) evaluator(dir string, opts ortrun.Options, vocab int, p Params) func(step int, values map[string][]float32) (train.EvalResult, error) {
	stream := NewSynthetic(vocab, r.cfg.Seed, 2)
	set := make([]data.Batch, r.cfg.EvalBatches)
	for i := range set {
		set[i] = stream.Batch(p.MicroBatch, p.SeqLen)
	}
	return func(step int, values map[string][]float32) (train.EvalResult, error) {
		eng, err := train.OpenEngine(dir, opts, false)
		if err != nil {
			return train.EvalResult{}, err
		}
		defer eng.Close()
		s, n, err := eng.Eval(set, values)
		if err != nil {
			return train.EvalResult{}, fmt.Errorf("eval: %w", err)
		}
		return train.NewEvalResult(step, s, n), nil
	}
}

// measure times the point's steps on a training engine opened for them: the point's host
// RSS and ONNX Runtime arena peaks are those from here to that engine's Close. It returns
// the adapter after the steps (what the evaluation after them uses) and the step times
// after the warm-up.
func (r *runner) measure(pt *Point, p Params, dir string, man *manifest.Manifest, opts ortrun.Options,
	params []optim.Param) (map[string][]float32, []time.Duration, error) {
	c := r.cfg
	debug.FreeOSMemory()
	if !r.noHWMReset {
		_ = resetPeakRSS()
	}
	rss := runreport.NewRSSMonitor(max(c.SampleInterval, 10*time.Millisecond), nil)
	rss.Start()
	// Deferred first, so it runs last: after the engine's Close.
	defer func() {
		pt.PeakRSSBytes = rss.Stop()
		if err := rss.Err(); err != nil {
			pt.Notes = append(pt.Notes, fmt.Sprintf("host RSS: %v", err))
		}
	}()
	r.mon.mark("open", 0)
	if c.ProfileDir != "" {
		if err := os.MkdirAll(c.ProfileDir, 0o755); err != nil {
			return nil, nil, err
		}
		// Only the training session is profiled (opts is this function's copy).
		opts.ProfilePrefix = filepath.Join(c.ProfileDir, unsafeChars.ReplaceAllString(pt.Label, "_"))
	}
	key, err := r.chooseRecompute(man, p.Recompute, p.Step, p.MicroBatch)
	if err != nil {
		return nil, nil, fmt.Errorf("point %s: %w", p.Label(), err)
	}
	p.Recompute, pt.Params.Recompute = key, key
	eo, err := engineOptions(p, r.devs, dir, man)
	if err != nil {
		return nil, nil, err
	}
	eo.NoShareWeights = c.NoShareWeights
	devs := r.devs
	engines, err := train.OpenEngines(dir, opts, eo, devs)
	if err != nil {
		return nil, nil, err
	}
	defer train.CloseEngines(engines)
	tr := engines[0]
	pt.Notes = append(pt.Notes, tr.Notes...)
	pt.SharedWeightBytes = tr.SharedWeightBytes()
	if len(engines) > 1 {
		pt.Notes = append(pt.Notes, fmt.Sprintf("data-parallel over %s: one micro-batch per device per step; GPU memory sampled on %s", strings.Join(devs, ","),
			devs[0]))
	}
	values, times, err := r.steps(pt, engines, p, man, params)
	if err != nil {
		return nil, nil, err
	}
	r.mon.mark("close", pt.Warmup+c.Steps)
	// Read before Close: the arena's figures die with the session.
	if st, ok, err := tr.TrainAllocatorStats(); err != nil {
		pt.Notes = append(pt.Notes, fmt.Sprintf("ONNX Runtime allocator statistics: %v", err))
	} else if ok {
		pt.ORTArena = &st
	}
	return values, times, nil
}

// engineOptions selects point p's training graph (train.ChooseStep: with or without
// per-layer recomputation, or the device-resident step of p's recomputation policy, with
// CUDA graphs for step=graph); only the training session opens (LazyEval).
func engineOptions(p Params, devs []string, dir string, man *manifest.Manifest) (train.EngineOptions, error) {
	if p.Recompute == "layer" && man.TrainRecompute == nil {
		return train.EngineOptions{}, fmt.Errorf("recompute layer is not supported by artifacts %q (no %s): rerun `ortq prepare`", dir, manifest.TrainRecomputeFile)
	}
	step := p.Step
	if step == "" {
		step = train.StepHost
	}
	eo, err := train.ChooseStep(step, devs, p.Recompute, man)
	switch {
	case errors.Is(err, train.ErrHostSelective):
		return eo, fmt.Errorf("point %s: %w: use step=device or step=graph", p.Label(), err)
	case err != nil:
		return eo, fmt.Errorf("point %s (artifacts %q): %w", p.Label(), dir, err)
	}
	// LazyEval and no Eval call: only the training session exists while it is measured.
	// ONNX Runtime gives each session its own copy of the initializers, so an open
	// evaluation session would add the model's size (≈2 GiB for a 4-bit 3B on CUDA) to the
	// measured peak; perplexity uses a separate eval-only Engine between the phases.
	eo.LazyEval = true
	return eo, nil
}

// steps makes the point's Stepper on tr (the run's own, as `ortq train` makes it) and times
// one optimizer step per synthetic batch; the adapter after them comes back with the times.
func (r *runner) steps(pt *Point, engines []*train.Engine, p Params, man *manifest.Manifest,
	params []optim.Param) (map[string][]float32, []time.Duration, error) {
	c := r.cfg
	sc := train.StepConfig{AdamW: optim.DefaultAdamWConfig(), Scaler: optim.DefaultGradScalerConfig()}
	sc.AdamW.LR, sc.AdamW.WeightDecay = c.LR, c.WeightDecay
	sc.Scaler.Disabled = man.Model.Precision != "float16"
	stepper, err := train.NewRunStepper(engines, params, sc, p.MicroBatch, p.SeqLen)
	if err != nil {
		return nil, nil, err
	}
	defer stepper.Close()
	// Batches are drawn before the clock starts: the harness times ortq, not the RNG. A
	// step holds one micro-batch per device.
	trainStream := NewSynthetic(int(man.Model.Vocab), c.Seed, 1)
	extendWarmup(pt, stepper)
	batches := make([][]data.Batch, pt.Warmup+c.Steps)
	for i := range batches {
		for range engines {
			batches[i] = append(batches[i], trainStream.Batch(p.MicroBatch, p.SeqLen))
		}
	}
	times, err := r.timeSteps(pt, stepper, batches, pt.Warmup)
	if err != nil {
		return nil, nil, err
	}
	// The benchmark's adapter is what evaluation after the steps uses.
	values, err := stepper.Params()
	if err != nil {
		return nil, nil, err
	}
	return values, times, nil
}

// extendWarmup makes the point's warm-up cover a Warmer's costly first micro-batches (the
// CUDA-graph captures, measured at up to 809 ms against a 227 ms median on the 3B step),
// which would otherwise be timed and weigh on the mean tokens/s; a step holds one
// micro-batch per device, so micro-batches are steps here.
func extendWarmup(pt *Point, st train.Stepper) {
	w, ok := st.(train.Warmer)
	if !ok || w.WarmupMicroBatches() <= pt.Warmup {
		return
	}
	n := w.WarmupMicroBatches()
	pt.Notes = append(pt.Notes, fmt.Sprintf("warm-up extended from %d to %d steps: the step's first %d micro-batches capture its CUDA graphs", pt.Warmup, n, n))
	pt.Warmup = n
}

// rates fills in the point's step-time summary, throughput, FLOPs and MFU/HFU from the
// measured step times.
func (r *runner) rates(pt *Point, p Params, times []time.Duration, shape *ModelShape) error {
	var err error
	if pt.StepTime, err = train.SummarizeDurations(times); err != nil {
		return err
	}
	var sum time.Duration
	for _, d := range times {
		sum += d
	}
	secs := sum.Seconds()
	pt.TokensPerSec = Float(float64(pt.TokensPerStep*len(times)) / secs)
	if shape != nil {
		// Every device's micro-batch counts; MFU is against the peak of all the devices.
		n := pt.TokensPerStep / max(1, p.MicroBatch*p.SeqLen)
		policy, _ := manifest.SplitStepKey(pt.Params.Recompute) // the step key measure chose
		pt.FLOPs = CountFLOPs(*shape, n*p.MicroBatch, p.SeqLen, policy == "layer")
		if r.peak > 0 {
			perStep := secs / float64(len(times))
			pt.PeakFLOPS = Float(r.peak * float64(n))
			pt.MFU = Float(pt.FLOPs.ModelPerStep / perStep / float64(pt.PeakFLOPS))
			pt.HFU = Float(pt.FLOPs.HardwarePerStep / perStep / float64(pt.PeakFLOPS))
		}
	}
	if pt.SkippedSteps > 0 {
		pt.Notes = append(pt.Notes, fmt.Sprintf("%d steps skipped by the loss scaler (fp16 overflow); they are timed like the others", pt.SkippedSteps))
	}
	return nil
}

// newStepper is the point's Stepper: the engine's own on one device, else the data-parallel
// timeSteps runs one optimizer step per entry of steps (one micro-batch per device) and
// returns the times of those after the warm-up; losses and overflow skips go into pt.
func (r *runner) timeSteps(pt *Point, st train.Stepper, steps [][]data.Batch, warmup int) ([]time.Duration, error) {
	var times []time.Duration
	for i, bs := range steps {
		phase := "measure"
		if i < warmup {
			phase = "warmup"
		}
		r.mon.mark(phase, i+1)
		t0 := time.Now()
		in := train.StepInput{Step: i + 1, Batches: bs, LR: r.cfg.LR}
		for k := range bs {
			in.Seeds = append(in.Seeds, uint64(i*len(bs)+k))
		}
		out, err := st.Step(context.Background(), in)
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", i+1, err)
		}
		if out.NonFinite {
			return nil, fmt.Errorf("step %d: loss or gradients are not finite (loss %v) in fp32: lower --lr", i+1, out.Loss)
		}
		if out.Skipped {
			pt.SkippedSteps++
		}
		dt := time.Since(t0)
		if i >= warmup {
			times = append(times, dt)
		}
		pt.Losses = append(pt.Losses, Float(out.Loss))
	}
	return times, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
