package optim

import (
	"math"
)

// DefaultMaxGradNorm is Hugging Face Trainer's max_grad_norm, the --max-grad-norm default.
const DefaultMaxGradNorm = 1.0

// clipEps is the 1e-6 torch.nn.utils.clip_grad_norm_ adds to the norm before dividing.
const clipEps = 1e-6

// TensorNorm is one gradient tensor's L2 norm as a float32, as torch.linalg.vector_norm
// returns it: the sum of squares is taken in float64 and the root rounded once, which is the
// correctly rounded norm (torch's float32 reduction may differ from it by an ulp or so).
func TensorNorm(g []float32) float32 {
	s := 0.0
	for _, v := range g {
		s += float64(v) * float64(v)
	}
	return float32(math.Sqrt(s))
}

// TotalNorm is clip_grad_norm_'s total norm: the L2 norm of the per-tensor norms (in the
// order given), as torch stacks them and takes vector_norm again.
func TotalNorm(norms []float32) float32 {
	return TensorNorm(norms)
}

// clipCoef is the factor clip_grad_norm_ multiplies every gradient by, computed with
// torch's float32 tensor ops: clamp(max_norm / (total + 1e-6), max=1), where Python's
// max_norm / t is t.reciprocal() * max_norm.
func clipCoef(total float32, maxNorm float64) float32 {
	r := 1 / float32(total+float32(clipEps))
	return min(float32(r*float32(maxNorm)), 1)
}

// scaleGrad multiplies g by c in place (a factor of 1 changes nothing, as in torch).
func scaleGrad(g []float32, c float32) {
	if c == 1 {
		return
	}
	for i, v := range g {
		g[i] = v * c
	}
}

// ClipGrads is torch.nn.utils.clip_grad_norm_(params, maxNorm) over grads, the tensors
// taken in the order of order: it returns the total L2 norm before clipping and, when
// maxNorm > 0 and the norm is finite, scales every gradient by clipCoef. grads must hold
// every tensor of order (the steppers check that before).
func ClipGrads(order []Param, grads map[string][]float32, maxNorm float64) float64 {
	norms := make([]float32, len(order))
	names := make([]string, len(order))
	for i, p := range order {
		norms[i], names[i] = TensorNorm(grads[p.Name]), p.Name
	}
	total := TotalNorm(norms)
	ApplyClip(grads, names, total, maxNorm)
	return float64(total)
}

// ApplyClip scales the named gradients by clipCoef(total, maxNorm) when clipping is on and
// total is finite (a non-finite gradient makes the step skipped or stopped, never clipped).
func ApplyClip(grads map[string][]float32, names []string, total float32, maxNorm float64) {
	if !(maxNorm > 0) || math.IsInf(float64(total), 0) || math.IsNaN(float64(total)) {
		return
	}
	c := clipCoef(total, maxNorm)
	for _, n := range names {
		scaleGrad(grads[n], c)
	}
}
