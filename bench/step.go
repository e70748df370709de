package bench

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
)

// trainer runs only an artifacts directory's training graph.
//
// Why not train.Engine: OpenEngine always opens eval.onnx too, and ONNX Runtime gives each
// session its own copy of the initializers — on CUDA a second copy of every weight on the
// GPU, which would inflate the measured peak by the model's size (≈2 GiB for a 4-bit 3B).
// The step itself is train.Engine.Step's, input for input (TestTrainerMatchesEngine holds
// the two to the same outputs); perplexity uses train.Engine in eval-only mode, opened and
// closed around the training phases.
type trainer struct {
	g    *manifest.Graph
	sess *ortrun.Session
	outs []string
}

// openTrainer opens a training graph of dir: the manifest's Train or TrainRecompute.
func openTrainer(dir string, g *manifest.Graph, opts ortrun.Options) (*trainer, error) {
	s, err := ortrun.NewSession(filepath.Join(dir, g.File), opts)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", g.File, err)
	}
	t := &trainer{g: g, sess: s}
	for _, io := range g.Outputs {
		if io.Role == manifest.RoleGrad || io.Role == manifest.RoleLossSum || io.Role == manifest.RoleTokenCount {
			t.outs = append(t.outs, io.Name)
		}
	}
	return t, nil
}

func (t *trainer) Close() { t.sess.Close() }

// stepOut is one micro-batch's loss sum, token count and gradients of
// loss_sum·lossScale (train.StepResult's contract).
type stepOut struct {
	lossSum float64
	tokens  int
	grads   map[string][]float32
}

// step mirrors train.Engine.Step: the graph's loss-scale input is lossScale/tokens (so the
// backward sees mean-loss magnitudes, as in PyTorch, and fp16 does not overflow) and the
// gradients are multiplied back by the token count.
func (t *trainer) step(b data.Batch, params map[string][]float32, lossScale float32) (*stepOut, error) {
	tokens := b.Tokens
	if tokens <= 0 {
		tokens = 1
	}
	in := map[string]*ortrun.Tensor{}
	shape := b.Shape()
	for _, io := range t.g.Inputs {
		switch io.Role {
		case manifest.RoleInputIDs:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: b.InputIDs}
		case manifest.RoleAttentionMask:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: b.AttentionMask}
		case manifest.RolePositionIDs:
			pos := make([]int64, len(b.InputIDs))
			for i := range pos {
				pos[i] = int64(i % b.SeqLen)
			}
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: pos}
		case manifest.RoleLabels:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Int64, Shape: shape, Data: b.Labels}
		case manifest.RoleLossScale:
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Float32, Shape: []int64{1}, Data: []float32{lossScale / float32(tokens)}}
		case manifest.RoleLoRA:
			v, ok := params[io.Param]
			if !ok {
				return nil, fmt.Errorf("no value for LoRA parameter %q", io.Param)
			}
			s := make([]int64, len(io.Shape))
			for i, d := range io.Shape {
				n, err := strconv.ParseInt(d, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("LoRA input %q has symbolic dimension %q", io.Name, d)
				}
				s[i] = n
			}
			in[io.Name] = &ortrun.Tensor{DType: ortrun.Float32, Shape: s, Data: v}
		default:
			return nil, fmt.Errorf("graph %s input %q has role %q that ortq cannot feed", t.g.File, io.Name, io.Role)
		}
	}
	out, err := t.sess.Run(in, t.outs)
	if err != nil {
		return nil, err
	}
	r := &stepOut{grads: map[string][]float32{}}
	for _, io := range t.g.Outputs {
		o, ok := out[io.Name]
		if !ok {
			continue
		}
		switch io.Role {
		case manifest.RoleGrad:
			v, ok := o.Data.([]float32)
			if !ok {
				return nil, fmt.Errorf("gradient output %q is not float32", io.Name)
			}
			for i := range v {
				v[i] *= float32(tokens)
			}
			r.grads[io.Param] = v
		case manifest.RoleLossSum, manifest.RoleTokenCount:
			v, ok := o.Data.([]float32)
			if !ok || len(v) != 1 {
				return nil, fmt.Errorf("output %q is not a 1-element float tensor", io.Name)
			}
			if io.Role == manifest.RoleLossSum {
				r.lossSum = float64(v[0])
			} else {
				r.tokens = int(v[0])
			}
		}
	}
	return r, nil
}
