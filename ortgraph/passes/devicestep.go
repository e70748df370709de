package passes

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// Graph names of the device step's inputs and outputs. The state inputs are StateInput(x),
// the outputs StateOutput(x), for x among manifest.StateParams … manifest.StateStats.
const (
	StepScalarsInput = "step_scalars"
	statePrefix      = "state."
	stateNextSuffix  = ".next"
)

// StateInput and StateOutput name the device step's state vectors.
func StateInput(state string) string  { return statePrefix + state }
func StateOutput(state string) string { return statePrefix + state + stateNextSuffix }

// States lists the device step's state vectors in graph order.
var States = []string{manifest.StateParams, manifest.StateExpAvg, manifest.StateExpAvgSq, manifest.StateGradSum, manifest.StateStats}

// StateRole returns the manifest role and state of a device-step input or output name
// (ok false for other names).
func StateRole(name string) (role, state string, ok bool) {
	if !strings.HasPrefix(name, statePrefix) {
		return "", "", false
	}
	s := strings.TrimPrefix(name, statePrefix)
	if base, next := strings.CutSuffix(s, stateNextSuffix); next {
		return manifest.RoleStateNext, base, true
	}
	return manifest.RoleState, s, true
}

// DeviceStepResult is the result of the DeviceStep pass: where each LoRA tensor lies in
// the flat state vectors.
type DeviceStepResult struct {
	Layout []manifest.FlatParam
	// Size is the state vectors' length (the LoRA parameter count).
	Size int64
}

// DeviceStep turns a training graph (Backward's outputs: loss_sum, token_count and
// grad.<p> for each LoRA input p) into one run of a device-resident optimizer step. The
// LoRA inputs become slices of one flat fp32 parameter vector; the gradients are summed into
// a flat accumulator; on the run that applies the step, the accumulated gradients are
// unscaled, checked for Inf/NaN, clipped to the step's max_grad_norm (torch's
// clip_grad_norm_, see clipNorm) and, when finite, AdamW (torch's expressions: decoupled
// decay, lerp of exp_avg, exp_avg_sq·β2 + (1−β2)·g², bias corrections as host scalars)
// updates parameters and moments. Every state vector enters as state.<x> and leaves as
// state.<x>.next, so a caller keeps two copies in device memory and swaps them between
// runs; the graph has no control flow, so ONNX Runtime can capture it in a CUDA graph.
var DeviceStep = &ortgraph.Pass{
	Name:       "device-step",
	Doc:        "flat LoRA/AdamW/accumulator state in and out, gradient accumulation and AdamW inside the graph",
	ResultType: reflect.TypeFor[*DeviceStepResult](),
	Run:        runDeviceStep,
}

// stepParam is one LoRA input of the training graph and its gradient output.
type stepParam struct {
	name, grad string
	shape      []int64
}

func runDeviceStep(ctx *ortgraph.Context) (any, error) {
	g := ctx.G
	params, err := stepParams(g)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{StepScalarsInput, StateInput(manifest.StateParams)} {
		if g.Producer(name) != nil || g.Initializer(name) != nil || isInput(g, name) {
			return nil, fmt.Errorf("graph already has a value named %q", name)
		}
	}
	saved := g.Scope
	g.Scope = "device_step"
	defer func() { g.Scope = saved }()

	res := &DeviceStepResult{}
	for _, p := range params {
		n := ortgraph.NumElements(p.shape)
		res.Layout = append(res.Layout, manifest.FlatParam{Name: p.name, Offset: res.Size, Size: n})
		res.Size += n
	}
	in := addStateInputs(g, res.Size)
	g.Reindex()
	sc := splitScalars(g)
	feedParams(g, params, res.Layout, in[manifest.StateParams])
	// The loss scale input now comes from the scalars: loss scale ÷ the step's tokens.
	if isInput(g, LossScaleInput) {
		g.ReplaceUses(LossScaleInput, sc[manifest.StepScalarSeed])
		removeInput(g, LossScaleInput)
	}
	g.P.Output = nil
	setStateOutputs(g, optimizerStep(g, params, in, sc), res.Size)
	// Prune walks the nodes backwards and so needs them in order first.
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	g.Prune()
	ctx.Logf("device step: %d LoRA tensors, %d parameters in flat state", len(params), res.Size)
	return res, nil
}

// stateType is the type of state vector s for size LoRA parameters.
func stateType(s string, size int64) *onnxpb.TypeProto {
	if s == manifest.StateStats {
		return ortgraph.TensorType(ortgraph.Float, []int64{manifest.StatsLen})
	}
	return ortgraph.TensorType(ortgraph.Float, []int64{size})
}

// addStateInputs adds the inputs state.<x> of every state vector and step_scalars to g and
// returns the state inputs' names by state.
func addStateInputs(g *ortgraph.Graph, size int64) map[string]string {
	in := map[string]string{}
	for _, s := range States {
		in[s] = StateInput(s)
		g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: in[s], Type: stateType(s, size)})
	}
	g.P.Input = append(g.P.Input, &onnxpb.ValueInfoProto{Name: StepScalarsInput, Type: ortgraph.TensorType(ortgraph.Float, []int64{manifest.StepScalars})})
	return in
}

// setStateOutputs names each next state value out[x] state.<x>.next and appends it to g's
// outputs.
func setStateOutputs(g *ortgraph.Graph, out map[string]string, size int64) {
	for _, s := range States {
		rename(g, out[s], StateOutput(s))
		g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: StateOutput(s), Type: stateType(s, size)})
	}
}

// stepParams pairs each grad.<p> output with its LoRA input p (fp32, static shape).
func stepParams(g *ortgraph.Graph) ([]stepParam, error) {
	outs := map[string]bool{}
	for _, o := range g.P.Output {
		outs[o.Name] = true
	}
	for _, need := range []string{LossSumOutput, TokenCountOutput} {
		if !outs[need] {
			return nil, fmt.Errorf("graph has no %q output: run the Loss and Backward passes first", need)
		}
	}
	var ps []stepParam
	for _, vi := range g.P.Input {
		grad := GradName(vi.Name)
		if !outs[grad] {
			continue
		}
		dims := g.Dims(vi.Name)
		if g.ElemType(vi.Name) != ortgraph.Float || len(dims) == 0 || ortgraph.NumElements(dims) <= 0 {
			return nil, fmt.Errorf("LoRA input %q: want a float32 tensor of static shape, have %s %v", vi.Name, ortgraph.DTypeName(g.ElemType(vi.Name)),
				g.SymDims(vi.Name))
		}
		ps = append(ps, stepParam{name: vi.Name, grad: grad, shape: dims})
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("graph has no gradient outputs (grad.<input>): run the Backward pass first")
	}
	return ps, nil
}

// splitScalars splits step_scalars into one [1] value per StepScalar index (one kernel).
func splitScalars(g *ortgraph.Graph) []string {
	ones := make([]int64, manifest.StepScalars)
	for i := range ones {
		ones[i] = 1
	}
	outs := g.Add(ortgraph.NodeSpec{Op: "Split", Inputs: []string{StepScalarsInput, g.ConstI64(ones...)}, NOut: manifest.StepScalars,
		Attrs: []ortgraph.Attr{ortgraph.AInt("axis", 0)}})
	for _, o := range outs {
		g.SetType(o, ortgraph.TensorType(ortgraph.Float, []int64{1}))
	}
	return outs
}

// feedParams replaces each LoRA input by its slice of the flat parameter vector (one Split
// kernel, then free Reshapes). Where every reader of every LoRA input casts it to one
// activation type (the LoRA pass's Cast to float16), the flat vector is cast once and split
// in that type: one Cast kernel a micro-batch instead of one per tensor, the same values.
func feedParams(g *ortgraph.Graph, ps []stepParam, layout []manifest.FlatParam, flat string) {
	sizes := make([]int64, len(layout))
	var total int64
	for i, l := range layout {
		sizes[i] = l.Size
		total += l.Size
	}
	cons := g.Consumers()
	dt := commonCast(cons, ps)
	src, elem := flat, int32(ortgraph.Float)
	if dt != 0 {
		src, elem = g.Op("Cast", []string{flat}, ortgraph.AInt("to", int64(dt))), dt
		g.SetType(src, ortgraph.TensorType(dt, []int64{total}))
	}
	parts := splitTreeTyped(g, src, sizes, func(n int64) *onnxpb.TypeProto { return ortgraph.TensorType(elem, []int64{n}) })
	for i, p := range ps {
		v := g.Op("Reshape", []string{parts[i], g.ConstI64(p.shape...)})
		g.SetType(v, ortgraph.TensorType(elem, p.shape))
		if dt != 0 {
			for _, c := range cons[p.name] {
				g.ReplaceUses(c.Output[0], v)
				c.Input[0] = v // read by nobody now: Prune removes it
			}
		} else {
			g.ReplaceUses(p.name, v)
		}
		removeInput(g, p.name)
	}
}

// commonCast is the type every reader of every LoRA input casts it to, when they are all
// Casts to one type other than float32; 0 otherwise.
func commonCast(cons map[string][]*onnxpb.NodeProto, ps []stepParam) int32 {
	var dt int64
	for _, p := range ps {
		if len(cons[p.name]) == 0 {
			return 0
		}
		for _, c := range cons[p.name] {
			to := ortgraph.AttrInt(c, "to", 0)
			if !isOp(c, "Cast") || to == int64(ortgraph.Float) || dt != 0 && to != dt {
				return 0
			}
			dt = to
		}
	}
	return int32(dt)
}

// captureUnsafe are ops (by domain and type) whose ONNX Runtime CUDA kernels copy host
// memory that lives only during the kernel's launch: a CUDA graph records the copy's source
// address and replays it after the memory is gone.
//   - GatherND copies its slice sizes from a std::vector with cudaMemcpyAsync (measured on an
//     H200: the embedded default model, whose attention-mask construction holds one GatherND,
//     fails with an illegal memory access once its captured step is replayed; the 3B graph,
//     without GatherND, replays correctly).
//   - com.microsoft.MatMulBnb4 copies its 16-entry NF4/FP4 code table from an array on the
//     host stack with cudaMemcpyAsync on every run (SetBnbQuantMap). Measured on an H200: the
//     default model with an NF4 + double-quantized base trained 20 steps on CUDA equal to the
//     CPU (1e-4) for the four uncaptured micro-batches, then a loss of ≈25 instead of ≈6 from
//     the first replayed step on.
var captureUnsafe = map[[2]string]bool{{"", "GatherND"}: true, {"com.microsoft", "MatMulBnb4"}: true}

// CaptureBlockers lists the ops of g that keep its runs from being captured in a CUDA graph
// safely (op types, sorted, each once; nil when there are none).
func CaptureBlockers(g *ortgraph.Graph) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range g.P.Node {
		if captureUnsafe[[2]string{n.Domain, n.OpType}] && !seen[n.OpType] {
			seen[n.OpType] = true
			out = append(out, n.OpType)
		}
	}
	sort.Strings(out)
	return out
}

// maxKernelArgs is the most inputs (Concat) or outputs (Split) whose pointers ONNX Runtime's
// CUDA kernels take as kernel arguments; beyond it they copy a pointer table from pinned host
// memory, which a captured CUDA graph would replay from a buffer freed after the capture.
const maxKernelArgs = 32

// splitTree splits the vector flat into parts of the given sizes with Splits of at most
// maxKernelArgs outputs (a second level of Splits when there are more parts).
func splitTree(g *ortgraph.Graph, flat string, sizes []int64) []string {
	return splitTreeTyped(g, flat, sizes, func(n int64) *onnxpb.TypeProto { return ortgraph.TensorType(ortgraph.Float, []int64{n}) })
}

// splitTreeTyped is splitTree along axis 0 of any tensor; typeOf gives the type of a part
// of n rows.
func splitTreeTyped(g *ortgraph.Graph, flat string, sizes []int64, typeOf func(n int64) *onnxpb.TypeProto) []string {
	if len(sizes) == 1 {
		return []string{flat}
	}
	if len(sizes) <= maxKernelArgs {
		outs := g.Add(ortgraph.NodeSpec{Op: "Split", Inputs: []string{flat, g.ConstI64(sizes...)}, NOut: len(sizes),
			Attrs: []ortgraph.Attr{ortgraph.AInt("axis", 0)}})
		for i, o := range outs {
			g.SetType(o, typeOf(sizes[i]))
		}
		return outs
	}
	groups := chunks(len(sizes))
	sums := make([]int64, len(groups))
	for i, gr := range groups {
		for _, n := range sizes[gr[0]:gr[1]] {
			sums[i] += n
		}
	}
	var out []string
	for i, part := range splitTreeTyped(g, flat, sums, typeOf) {
		out = append(out, splitTreeTyped(g, part, sizes[groups[i][0]:groups[i][1]], typeOf)...)
	}
	return out
}

// concatTree concatenates vectors with Concats of at most maxKernelArgs inputs.
func concatTree(g *ortgraph.Graph, parts []string) string {
	if len(parts) == 1 {
		return parts[0]
	}
	if len(parts) <= maxKernelArgs {
		return g.Op("Concat", parts, ortgraph.AInt("axis", 0))
	}
	var level []string
	for _, gr := range chunks(len(parts)) {
		level = append(level, concatTree(g, parts[gr[0]:gr[1]]))
	}
	return concatTree(g, level)
}

// chunks cuts n items into ⌈n / maxKernelArgs⌉ runs of nearly equal length, as [start, end).
func chunks(n int) [][2]int {
	k := (n + maxKernelArgs - 1) / maxKernelArgs
	out := make([][2]int, k)
	for i := range out {
		out[i] = [2]int{i * n / k, (i + 1) * n / k}
	}
	return out
}

// flatGrads concatenates the backward's gradients (before the Identity that names each
// output) into one float32 vector of n values. Where each is a Cast to float32 of one
// activation type (the LoRA pass's Cast's gradient), the Casts' inputs are concatenated and
// cast once: one Cast kernel a micro-batch instead of one per tensor, the same values.
func flatGrads(g *ortgraph.Graph, ps []stepParam, n int64) string {
	gvs := make([]string, len(ps))
	var from int32 // the common type cast from, or -1
	for i, p := range ps {
		gvs[i] = p.grad
		if id := g.Producer(gvs[i]); id != nil && id.OpType == "Identity" {
			gvs[i] = id.Input[0]
		}
		c := g.Producer(gvs[i])
		t := int32(-1)
		if isOp(c, "Cast") && ortgraph.AttrInt(c, "to", 0) == int64(ortgraph.Float) {
			t = g.ElemType(c.Input[0])
		}
		switch {
		case i == 0:
			from = t
		case t != from:
			from = -1
		}
	}
	elem := int32(ortgraph.Float)
	if from > 0 && from != ortgraph.Float {
		elem = from
		for i, v := range gvs {
			gvs[i] = g.Producer(v).Input[0]
		}
	}
	flat := make([]string, len(ps))
	for i, p := range ps {
		flat[i] = g.Op("Reshape", []string{gvs[i], g.ConstI64(-1)})
		g.SetType(flat[i], ortgraph.TensorType(elem, []int64{ortgraph.NumElements(p.shape)}))
	}
	grads := concatTree(g, flat)
	if elem != ortgraph.Float {
		grads = g.Op("Cast", []string{grads}, ortgraph.AInt("to", int64(ortgraph.Float)))
	}
	g.SetType(grads, ortgraph.TensorType(ortgraph.Float, []int64{n}))
	return grads
}

// optimizerStep appends accumulation, the overflow check, clipping and AdamW; it returns the
// value of each next state.
func optimizerStep(g *ortgraph.Graph, ps []stepParam, in map[string]string, sc []string) map[string]string {
	f := func(v string, dims ...int64) string {
		g.SetType(v, ortgraph.TensorType(ortgraph.Float, dims))
		return v
	}
	n := ortgraph.NumElements(g.Dims(in[manifest.StateParams]))
	grads := flatGrads(g, ps, n)
	zero := g.ConstF(ortgraph.Float, 0)
	keep := g.Op("Cast", []string{sc[manifest.StepScalarKeep]}, ortgraph.AInt("to", int64(ortgraph.Bool)))
	// Where, not a multiply by keep: a skipped step leaves Inf/NaN in the accumulator.
	gsum := f(g.Op("Add", []string{g.Op("Where", []string{keep, in[manifest.StateGradSum], zero}), grads}), n)
	stats := f(g.Op("Slice", []string{in[manifest.StateStats], g.ConstI64(0), g.ConstI64(2), g.ConstI64(0)}), 2)
	micro := f(g.Op("Concat", []string{LossSumOutput, TokenCountOutput}, ortgraph.AInt("axis", 0)), 2)
	stats = f(g.Op("Add", []string{g.Op("Where", []string{keep, stats, zero}), micro}), 2)

	gu := f(g.Op("Mul", []string{gsum, sc[manifest.StepScalarInvScale]}), n)
	// Σ(0·g)² is NaN exactly when some g is Inf or NaN: one GEMV, no reduction kernel.
	z := g.Op("Mul", []string{gu, zero})
	dot := g.Op("MatMul", []string{g.Op("Reshape", []string{z, g.ConstI64(1, n)}), g.Op("Reshape", []string{z, g.ConstI64(n, 1)})})
	// A non-finite loss sum counts as an overflow too (0·loss joins the dot product).
	lossZ := g.Op("Mul", []string{g.Op("Slice", []string{stats, g.ConstI64(0), g.ConstI64(1), g.ConstI64(0)}), zero})
	inf := g.Op("Reshape", []string{g.Op("IsNaN", []string{g.Op("Add", []string{dot, lossZ})}), g.ConstI64(1)})
	apply := g.Op("And", []string{g.Op("Cast", []string{sc[manifest.StepScalarApply]}, ortgraph.AInt("to", int64(ortgraph.Bool))), g.Op("Not", []string{inf})})

	norm, gc := clipNorm(g, gu, n, sc[manifest.StepScalarMaxNorm])

	p, m, v := in[manifest.StateParams], in[manifest.StateExpAvg], in[manifest.StateExpAvgSq]
	pd := f(g.Op("Mul", []string{p, sc[manifest.StepScalarDecay]}), n)
	m1 := f(g.Op("Add", []string{m, g.Op("Mul", []string{sc[manifest.StepScalarW1], g.Op("Sub", []string{gc, m})})}), n)
	v1 := f(g.Op("Add", []string{
		g.Op("Mul", []string{v, sc[manifest.StepScalarBeta2]}),
		g.Op("Mul", []string{g.Op("Mul", []string{sc[manifest.StepScalarC2], gc}), gc}),
	}), n)
	denom := g.Op("Add", []string{g.Op("Div", []string{g.Op("Sqrt", []string{v1}), sc[manifest.StepScalarBC2Sqrt]}), sc[manifest.StepScalarEps]})
	p1 := f(g.Op("Add", []string{pd, g.Op("Div", []string{g.Op("Mul", []string{sc[manifest.StepScalarNegStep], m1}), denom})}), n)

	return map[string]string{
		manifest.StateParams:   f(g.Op("Where", []string{apply, p1, p}), n),
		manifest.StateExpAvg:   f(g.Op("Where", []string{apply, m1, m}), n),
		manifest.StateExpAvgSq: f(g.Op("Where", []string{apply, v1, v}), n),
		manifest.StateGradSum:  gsum,
		manifest.StateStats: f(g.Op("Concat", []string{stats, g.Op("Cast", []string{inf}, ortgraph.AInt("to", int64(ortgraph.Float))), norm},
			ortgraph.AInt("axis", 0)), manifest.StatsLen),
	}
}

// clipNorm is torch.nn.utils.clip_grad_norm_ on the flat unscaled gradient gu of n values:
// it returns the L2 norm ([1], before clipping) and gu times
// min(1, max_norm · 1/(norm + 1e-6)), torch's expression in float32 (Python's
// max_norm / t is t.reciprocal() · max_norm). The sum of squares is one GEMV, like the
// overflow check. max_norm = +Inf turns clipping off: the factor is then exactly 1. An
// infinite norm of finite gradients (a float32 overflow of the sum) leaves them unclipped,
// as the host steppers do; a NaN or Inf gradient makes the run skip the update anyway.
func clipNorm(g *ortgraph.Graph, gu string, n int64, maxNorm string) (norm, clipped string) {
	one := g.ConstF(ortgraph.Float, 1)
	sq := g.Op("MatMul", []string{g.Op("Reshape", []string{gu, g.ConstI64(1, n)}), g.Op("Reshape", []string{gu, g.ConstI64(n, 1)})})
	norm = g.Op("Reshape", []string{g.Op("Sqrt", []string{sq}), g.ConstI64(1)})
	g.SetType(norm, ortgraph.TensorType(ortgraph.Float, []int64{1}))
	inv := g.Op("Reciprocal", []string{g.Op("Add", []string{norm, g.ConstF(ortgraph.Float, 1e-6)})})
	coef := g.Op("Min", []string{g.Op("Mul", []string{inv, maxNorm}), one})
	coef = g.Op("Where", []string{g.Op("IsInf", []string{norm}), one, coef})
	clipped = g.Op("Mul", []string{gu, coef})
	g.SetType(clipped, ortgraph.TensorType(ortgraph.Float, []int64{n}))
	return norm, clipped
}

func isInput(g *ortgraph.Graph, name string) bool {
	for _, in := range g.P.Input {
		if in.Name == name {
			return true
		}
	}
	return false
}

func removeInput(g *ortgraph.Graph, name string) {
	ins := g.P.Input[:0]
	for _, in := range g.P.Input {
		if in.Name != name {
			ins = append(ins, in)
		}
	}
	g.P.Input = ins
	g.Reindex()
}
