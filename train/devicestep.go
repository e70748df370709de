package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train/optim"
)

// deviceStepper runs the device-resident step graph (manifest.TrainStep): LoRA weights,
// AdamW moments, the gradient sum and the loss statistics stay in the training session's
// device memory, in two sets of flat buffers that the runs read and write in turn (run k
// reads set k mod 2 and writes the other). Per micro-batch only the token batch and a
// vector of scalars go in; per optimizer step four floats come out (loss sum, token count,
// overflow flag, gradient norm): the graph clips the gradient norm itself. The loss scaler and AdamW's step count stay on the host, which computes
// the step's scalars exactly as the host AdamW does.
//
// Every batch is padded to one shape (rows × seq, fixed when the stepper is made): padded
// rows hold one attended token and no labels, padded columns no attention and no labels, so
// the loss and gradients are those of the unpadded batch. One shape means two fixed
// bindings, which a CUDA session with Options.CUDAGraph captures once each and replays.
type deviceStepper struct {
	sess   *ortrun.Session
	cp     *ortrun.Copier
	layout []manifest.FlatParam
	size   int64
	adam   optim.AdamWConfig
	step   int64 // AdamW's step count
	scaler *optim.GradScaler
	rows   int
	seq    int
	// feeds are the per-run inputs, in graph order: every micro-batch's upload is one copy
	// (one CopyTensors call on CUDA, one run of one copy session elsewhere).
	feeds []feedSlot
	// pad are two one-element float32 buffers that fill the state transfers up to three
	// vectors, so that where the Copier copies through sessions every state transfer uses the
	// same one (each copy session is an execution provider with its own device memory).
	pad   [2]*ortrun.Buffer
	state [2]map[string]*ortrun.Buffer
	binds [2]*ortrun.Binding
	cur   int // the state set holding the current values

	// maxNorm is StepConfig.MaxGradNorm (0: no clipping).
	maxNorm float64
}

// feedSlot is one per-run input of the device step and the buffer it is uploaded to.
type feedSlot struct {
	role string
	buf  *ortrun.Buffer
}

// NewDeviceStepper returns the device-resident Stepper of an engine opened with
// EngineOptions.DeviceStep, for batches of at most rows × seq, starting from init.
func NewDeviceStepper(e *Engine, init []optim.Param, cfg StepConfig, rows, seq int) (Stepper, error) {
	if e.step == nil {
		return nil, errors.New("device stepper: the engine has no device step session (open it with EngineOptions.DeviceStep)")
	}
	if cfg.GradHook != nil {
		return nil, errors.New("device stepper: gradient hooks need the host stepper")
	}
	if rows <= 0 || seq < 2 {
		return nil, fmt.Errorf("device stepper: batch shape %d × %d", rows, seq)
	}
	if err := cfg.AdamW.Validate(); err != nil {
		return nil, err
	}
	if !(cfg.MaxGradNorm >= 0) || math.IsInf(cfg.MaxGradNorm, 0) {
		return nil, fmt.Errorf("invalid max gradient norm %v: must be ≥ 0 and finite", cfg.MaxGradNorm)
	}
	scaler, err := optim.NewGradScaler(cfg.Scaler)
	if err != nil {
		return nil, err
	}
	s := &deviceStepper{sess: e.step, cp: ortrun.NewCopier(e.Opts), layout: e.Man.StepLayout, adam: cfg.AdamW,
		maxNorm: cfg.MaxGradNorm, scaler: scaler, rows: rows, seq: seq}
	for _, l := range s.layout {
		s.size += l.Size
	}
	if err := s.allocate(e.Man.TrainStep); err != nil {
		s.Close()
		return nil, err
	}
	st := StepState{Params: init, Adam: optim.AdamWState{ExpAvg: map[string][]float32{}, ExpAvgSq: map[string][]float32{}}, Scaler: scaler.State()}
	for _, p := range init {
		st.Adam.ExpAvg[p.Name] = make([]float32, len(p.Data))
		st.Adam.ExpAvgSq[p.Name] = make([]float32, len(p.Data))
	}
	if err := s.Restore(st); err != nil {
		s.Close()
		return nil, err
	}
	// Restore's upload settled how the copier copies on CUDA (ortrun.Copier.Note).
	if n := s.cp.Note(); n != "" && !slices.Contains(e.Notes, n) {
		e.Notes = append(e.Notes, n)
	}
	return s, nil
}

// allocate makes the buffers of every input and output of g, and the two bindings, before
// any run: a captured CUDA graph replays its own intermediate addresses, so nothing may be
// allocated from the session's arena after the first capture.
func (s *deviceStepper) allocate(g *manifest.Graph) error {
	var ins [2]map[string]*ortrun.Buffer
	var outs [2]map[string]*ortrun.Buffer
	for i := range s.state {
		s.state[i] = map[string]*ortrun.Buffer{}
		ins[i], outs[i] = map[string]*ortrun.Buffer{}, map[string]*ortrun.Buffer{}
	}
	stateShape := func(name string) []int64 {
		if name == manifest.StateStats {
			return []int64{manifest.StatsLen}
		}
		return []int64{s.size}
	}
	for i := range s.state {
		for _, name := range []string{manifest.StateParams, manifest.StateExpAvg, manifest.StateExpAvgSq, manifest.StateGradSum, manifest.StateStats} {
			b, err := s.sess.NewBuffer(ortrun.Float32, stateShape(name))
			if err != nil {
				return err
			}
			s.state[i][name] = b
		}
	}
	for _, io := range g.Inputs {
		switch io.Role {
		case manifest.RoleState:
			for i := range ins {
				ins[i][io.Name] = s.state[i][io.Param]
			}
			continue
		}
		b, err := s.feedBuffer(io)
		if err != nil {
			return err
		}
		s.feeds = append(s.feeds, feedSlot{role: io.Role, buf: b})
		for i := range ins {
			ins[i][io.Name] = b
		}
	}
	for _, io := range g.Outputs {
		if io.Role != manifest.RoleStateNext || s.state[0][io.Param] == nil {
			return fmt.Errorf("graph %s output %q has role %q that the device step cannot bind", g.File, io.Name, io.Role)
		}
		for i := range outs {
			outs[i][io.Name] = s.state[1-i][io.Param]
		}
	}
	for i := range s.pad {
		b, err := s.sess.NewBuffer(ortrun.Float32, []int64{1})
		if err != nil {
			return err
		}
		s.pad[i] = b
	}
	for i := range s.binds {
		b, err := s.sess.Bind(ins[i], outs[i], i+1)
		if err != nil {
			return fmt.Errorf("graph %s: %w", g.File, err)
		}
		s.binds[i] = b
	}
	return nil
}

func (s *deviceStepper) feedBuffer(io manifest.IO) (*ortrun.Buffer, error) {
	switch io.Role {
	case manifest.RoleInputIDs, manifest.RoleAttentionMask, manifest.RolePositionIDs, manifest.RoleLabels:
		return s.sess.NewBuffer(ortrun.Int64, []int64{int64(s.rows), int64(s.seq)})
	case manifest.RoleDropoutSeed:
		return s.sess.NewBuffer(ortrun.Int64, []int64{1})
	case manifest.RoleDropoutRows:
		return s.sess.NewBuffer(ortrun.Int32, []int64{int64(s.rows), int64(s.seq)})
	case manifest.RoleStepScalars:
		return s.sess.NewBuffer(ortrun.Float32, []int64{manifest.StepScalars})
	}
	return nil, fmt.Errorf("device step input %q has role %q that ortq cannot feed", io.Name, io.Role)
}

func (s *deviceStepper) Step(ctx context.Context, in StepInput) (StepOutcome, error) {
	if err := in.check(); err != nil {
		return StepOutcome{}, err
	}
	total := in.tokens()
	out := StepOutcome{Scale: s.scaler.Scale()}
	if err := s.run(ctx, in.Batches, in.Seeds, s.scalars(in.LR, total), total > 0); err != nil {
		return StepOutcome{}, err
	}
	return s.outcome(out, total)
}

// outcome reads the loss statistics of the step just run (loss sum, token count, overflow
// flag, gradient norm) into out, total the step's counted tokens, and counts the step where
// the graph applied it.
func (s *deviceStepper) outcome(out StepOutcome, total int) (StepOutcome, error) {
	st, err := s.downloadState(manifest.StateStats)
	if err != nil {
		return StepOutcome{}, err
	}
	v := st[0]
	if total == 0 {
		out.Loss, out.NoTokens, out.GradNorm = math.NaN(), true, math.NaN()
		return out, nil
	}
	out.GradNorm = float64(v[3])
	if int(v[1]) != total {
		return StepOutcome{}, fmt.Errorf("device step counted %g tokens, the batches %d", v[1], total)
	}
	out.Loss = float64(v[0]) / float64(v[1])
	// The graph has already applied AdamW where the step was finite (it checks the loss too);
	// the host counts the step.
	err = finishStep(s.scaler, &out, v[2] != 0, func() error { s.step++; return nil })
	return out, err
}

// WarmupMicroBatches: with CUDA graphs each of the two bindings runs GraphWarmupRuns plain
// runs, then captures on its next (the bindings alternate per micro-batch); replays follow.
func (s *deviceStepper) WarmupMicroBatches() int {
	if !s.binds[0].Captures() {
		return 0
	}
	return len(s.binds) * (ortrun.GraphWarmupRuns + 1)
}

// run runs the micro-batches with the scalars sc, accumulating from zero; with apply the
// last run applies AdamW.
func (s *deviceStepper) run(ctx context.Context, batches []data.Batch, seeds []uint64, sc []float32, apply bool) error {
	for k, b := range batches {
		if err := ctx.Err(); err != nil {
			return err
		}
		sc[manifest.StepScalarKeep] = b2f(k > 0)
		sc[manifest.StepScalarApply] = b2f(k == len(batches)-1 && apply)
		if err := s.feed(b, seeds[k], sc); err != nil {
			return fmt.Errorf("micro-batch %d: %w", k, err)
		}
		if err := s.binds[s.cur].Run(); err != nil {
			return fmt.Errorf("micro-batch %d: %w", k, err)
		}
		s.cur = 1 - s.cur
	}
	return nil
}

// scalars is the step_scalars vector of an optimizer step with lr over total counted
// tokens (keep and apply are set per micro-batch).
func (s *deviceStepper) scalars(lr float64, total int) []float32 {
	scale := s.scaler.Scale()
	a := s.adam.Scalars(lr, s.step+1)
	v := make([]float32, manifest.StepScalars)
	if total > 0 {
		v[manifest.StepScalarSeed] = float32(float64(scale) / float64(total))
	}
	v[manifest.StepScalarInvScale] = float32(1 / float64(scale))
	v[manifest.StepScalarDecay] = a.Decay
	v[manifest.StepScalarW1] = a.W1
	v[manifest.StepScalarBeta2] = a.Beta2
	v[manifest.StepScalarC2] = a.C2
	v[manifest.StepScalarNegStep] = a.NegStepSize
	v[manifest.StepScalarBC2Sqrt] = a.BC2Sqrt
	v[manifest.StepScalarEps] = a.Eps
	v[manifest.StepScalarMaxNorm] = maxNormScalar(s.maxNorm)
	return v
}

// maxNormScalar is the step graph's clipping threshold for --max-grad-norm m: m in float32
// (torch's Python scalar), or +Inf, which makes the graph's clip factor exactly 1, for 0.
func maxNormScalar(m float64) float32 {
	if m > 0 {
		return float32(m)
	}
	return float32(math.Inf(1))
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// feed uploads one micro-batch, padded to the stepper's shape, its dropout seed and the
// scalars.
func (s *deviceStepper) feed(b data.Batch, seed uint64, sc []float32) error {
	if b.Rows > s.rows || b.SeqLen > s.seq {
		return fmt.Errorf("batch %d × %d exceeds the device step's shape %d × %d", b.Rows, b.SeqLen, s.rows, s.seq)
	}
	p := padBatch(b, s.rows, s.seq)
	shape := []int64{int64(s.rows), int64(s.seq)}
	var bufs []*ortrun.Buffer
	var ts []*ortrun.Tensor
	for _, f := range s.feeds {
		var t *ortrun.Tensor
		switch f.role {
		case manifest.RoleInputIDs:
			t = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: p.InputIDs}
		case manifest.RoleAttentionMask:
			t = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: p.AttentionMask}
		case manifest.RoleLabels:
			t = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: p.Labels}
		case manifest.RolePositionIDs:
			t = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: p.Positions()}
		case manifest.RoleDropoutSeed:
			t = &ortrun.Tensor{DType: ortrun.Int64, Shape: []int64{1}, Data: []int64{int64(seed % manifest.DropoutSeedModulus)}}
		case manifest.RoleDropoutRows:
			t = &ortrun.Tensor{DType: ortrun.Int32, Shape: shape, Data: manifest.DropoutRowFactors(int64(seed%manifest.DropoutSeedModulus), s.rows*s.seq)}
		case manifest.RoleStepScalars:
			t = &ortrun.Tensor{DType: ortrun.Float32, Shape: []int64{manifest.StepScalars}, Data: sc}
		}
		bufs, ts = append(bufs, f.buf), append(ts, t)
	}
	return s.cp.UploadAll(bufs, ts)
}

// downloadState reads one to three of the current state vectors in one copy.
func (s *deviceStepper) downloadState(names ...string) ([][]float32, error) {
	bufs := []*ortrun.Buffer{}
	for _, n := range names {
		bufs = append(bufs, s.state[s.cur][n])
	}
	bufs = append(bufs, s.pad[:3-len(bufs)]...)
	ts, err := s.cp.DownloadAll(bufs)
	if err != nil {
		return nil, fmt.Errorf("reading the device step's state: %w", err)
	}
	out := make([][]float32, len(names))
	for i := range names {
		out[i] = ts[i].Data.([]float32)
	}
	return out, nil
}

// uploadState writes one to three state vectors in one copy.
func (s *deviceStepper) uploadState(names []string, vals [][]float32) error {
	var bufs []*ortrun.Buffer
	var ts []*ortrun.Tensor
	for i, n := range names {
		b := s.state[s.cur][n]
		bufs, ts = append(bufs, b), append(ts, &ortrun.Tensor{DType: ortrun.Float32, Shape: b.Shape, Data: vals[i]})
	}
	for _, b := range s.pad[:3-len(bufs)] {
		bufs, ts = append(bufs, b), append(ts, &ortrun.Tensor{DType: ortrun.Float32, Shape: []int64{1}, Data: []float32{0}})
	}
	return s.cp.UploadAll(bufs, ts)
}

// padBatch returns b as rows × seq: padded rows attend to their first position only and
// padded positions to nothing; neither has a label.
func padBatch(b data.Batch, rows, seq int) data.Batch {
	if b.Rows == rows && b.SeqLen == seq {
		return b
	}
	p := data.Batch{Rows: rows, SeqLen: seq, Tokens: b.Tokens, InputIDs: make([]int64, rows*seq),
		AttentionMask: make([]int64, rows*seq), PositionIDs: make([]int64, rows*seq), Labels: make([]int64, rows*seq)}
	for i := range p.Labels {
		p.Labels[i] = data.IgnoreIndex
		p.PositionIDs[i] = int64(i % seq)
	}
	pos := b.Positions()
	for r := 0; r < rows; r++ {
		if r >= b.Rows {
			p.AttentionMask[r*seq] = 1
			continue
		}
		copy(p.InputIDs[r*seq:], b.InputIDs[r*b.SeqLen:(r+1)*b.SeqLen])
		copy(p.AttentionMask[r*seq:], b.AttentionMask[r*b.SeqLen:(r+1)*b.SeqLen])
		copy(p.PositionIDs[r*seq:], pos[r*b.SeqLen:(r+1)*b.SeqLen])
		copy(p.Labels[r*seq:], b.Labels[r*b.SeqLen:(r+1)*b.SeqLen])
	}
	return p
}

// flat packs per-tensor values into one state vector in layout order.
func (s *deviceStepper) flat(values map[string][]float32, what string) ([]float32, error) {
	v := make([]float32, s.size)
	for _, l := range s.layout {
		x, ok := values[l.Name]
		if !ok || int64(len(x)) != l.Size {
			return nil, fmt.Errorf("%s of LoRA tensor %q missing or of the wrong size", what, l.Name)
		}
		copy(v[l.Offset:], x)
	}
	return v, nil
}

// unflat splits a state vector into per-tensor copies.
func (s *deviceStepper) unflat(v []float32) map[string][]float32 {
	out := make(map[string][]float32, len(s.layout))
	for _, l := range s.layout {
		out[l.Name] = append([]float32(nil), v[l.Offset:l.Offset+l.Size]...)
	}
	return out
}

func (s *deviceStepper) download(state string) ([]float32, error) {
	vs, err := s.downloadState(state)
	if err != nil {
		return nil, err
	}
	return vs[0], nil
}

func (s *deviceStepper) Params() (map[string][]float32, error) {
	v, err := s.download(manifest.StateParams)
	if err != nil {
		return nil, err
	}
	return s.unflat(v), nil
}

func (s *deviceStepper) State() (StepState, error) {
	st := StepState{Adam: optim.AdamWState{Step: s.step}, Scaler: s.scaler.State()}
	names := []string{manifest.StateParams, manifest.StateExpAvg, manifest.StateExpAvgSq}
	ts, err := s.downloadState(names...)
	if err != nil {
		return StepState{}, err
	}
	vals := map[string]map[string][]float32{}
	for i, name := range names {
		vals[name] = s.unflat(ts[i])
	}
	for _, l := range s.layout {
		st.Params = append(st.Params, optim.Param{Name: l.Name, Data: vals[manifest.StateParams][l.Name]})
	}
	st.Adam.ExpAvg, st.Adam.ExpAvgSq = vals[manifest.StateExpAvg], vals[manifest.StateExpAvgSq]
	return st, nil
}

func (s *deviceStepper) Restore(st StepState) error {
	if st.Adam.Step < 0 {
		return fmt.Errorf("AdamW state: negative step %d", st.Adam.Step)
	}
	params := make(map[string][]float32, len(st.Params))
	for _, p := range st.Params {
		params[p.Name] = p.Data
	}
	if len(params) != len(s.layout) {
		return fmt.Errorf("state has %d LoRA tensors, the device step %d", len(params), len(s.layout))
	}
	var names []string
	var vals [][]float32
	for _, u := range []struct {
		name string
		vals map[string][]float32
	}{{manifest.StateParams, params}, {manifest.StateExpAvg, st.Adam.ExpAvg}, {manifest.StateExpAvgSq, st.Adam.ExpAvgSq}} {
		v, err := s.flat(u.vals, u.name)
		if err != nil {
			return err
		}
		names, vals = append(names, u.name), append(vals, v)
	}
	if err := s.uploadState(names, vals); err != nil {
		return err
	}
	if err := s.scaler.LoadState(st.Scaler); err != nil {
		return err
	}
	s.step = st.Adam.Step
	return nil
}

func (s *deviceStepper) Scale() float32 { return s.scaler.Scale() }

// Close frees the bindings, buffers and the Copier (the step session is the engine's).
func (s *deviceStepper) Close() {
	for i := range s.binds {
		if s.binds[i] != nil {
			s.binds[i].Close()
			s.binds[i] = nil
		}
	}
	for i := range s.state {
		for _, b := range s.state[i] {
			b.Close()
		}
		s.state[i] = nil
	}
	for _, f := range s.feeds {
		f.buf.Close()
	}
	for i := range s.pad {
		s.pad[i].Close()
		s.pad[i] = nil
	}
	s.feeds = nil
	s.cp.Close()
}
