package passes

import (
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// DropoutSeedInput is the training graph's int64 [1] input that selects the LoRA dropout
// masks of one run of the graph; a value in [0, DropoutPrime).
const DropoutSeedInput = "lora_dropout_seed"

// DropoutPrime is the modulus of the mask hash: the largest prime below 2^29, so that a
// sum of three residues, squared, stays below 2^63 in int64 arithmetic.
const DropoutPrime = 536870909

// dropoutHash builds LoRA dropout masks from a counter-based hash instead of ONNX's random
// ops. Why: ONNX Runtime's RandomUniformLike keeps its generator state inside the session,
// so a resumed run (a new session) would draw different masks than the uninterrupted run
// did; a mask that is a pure function of (seed input, module, position) makes resume exact,
// lets the recompute pass recompute masks instead of keeping them alive, and still uses
// only integer Add/Mul/Div/Sub/GreaterOrEqual, which the CUDA provider runs.
//
// For position (row r, column c) of module m, with residues mod P = DropoutPrime:
//
//	R[r] = mix(r + offR(seed)),  C[c] = mix(c + offC(seed)),  k_m = module constant
//	keep = ((R[r] + k_m + C[c])² mod P) ≥ ⌈p·P⌉
//
// where mix is two rounds of multiply and square mod P. R and C are small vectors computed
// once per graph run (C once per input width); per module only the last line touches every
// element. The squares of distinct shifts of a uniform residue are nearly independent
// (Weil's bound), so masks of different rows, columns and modules decorrelate;
// TestDropoutHashStatistics measures the keep rate and the pairwise agreement.
type dropoutHash struct {
	g       *ortgraph.Graph
	seed    string            // the seed input as a scalar ("" until the first module)
	rows    string            // mixed row vector [rows], built from the first module's x
	cols    map[int64]string  // mixed column vector per input width
	targets map[string]string // x → the shape [..., 1] R is reshaped to
	offC    string            // the seed's column offset
}

func newDropoutHash(g *ortgraph.Graph) *dropoutHash {
	return &dropoutHash{g: g, cols: map[int64]string{}, targets: map[string]string{}}
}

// modP reduces a non-negative int64 tensor mod P with Div/Mul/Sub (the CUDA provider has
// these for int64; a Mod node might fall back to the CPU).
func (h *dropoutHash) modP(v string) string {
	g := h.g
	p := g.ScalarI64(DropoutPrime)
	return g.Op("Sub", []string{v, g.Op("Mul", []string{g.Op("Div", []string{v, p}), p})})
}

// affine is (v·a + b) mod P.
func (h *dropoutHash) affine(v string, a, b int64) string {
	g := h.g
	return h.modP(g.Op("Add", []string{g.Op("Mul", []string{v, g.ScalarI64(a)}), g.ScalarI64(b)}))
}

// square is (v² + b) mod P.
func (h *dropoutHash) square(v string, b int64) string {
	g := h.g
	return h.modP(g.Op("Add", []string{g.Op("Mul", []string{v, v}), g.ScalarI64(b)}))
}

// mix maps residues to scrambled residues: two rounds of multiply and square.
func (h *dropoutHash) mix(v string) string {
	return h.square(h.affine(h.square(h.affine(v, 48271, 0), 12345), 69621, 11), 777)
}

// indices is mix(Range(0, n) + off).
func (h *dropoutHash) indices(n, off string) string {
	g := h.g
	r := g.Op("Range", []string{g.ScalarI64(0), n, g.ScalarI64(1)})
	return h.mix(h.modP(g.Op("Add", []string{r, off})))
}

// seedInput adds the graph input once and returns it as a scalar.
func (h *dropoutHash) seedInput() (string, error) {
	if h.seed == "" {
		if err := h.g.Reserve(DropoutSeedInput); err != nil {
			return "", err
		}
		h.g.P.Input = append(h.g.P.Input, &onnxpb.ValueInfoProto{Name: DropoutSeedInput, Type: ortgraph.TensorType(ortgraph.Int64, []int64{1})})
		h.g.Reindex()
		h.seed = h.g.Op("Squeeze", []string{DropoutSeedInput, h.g.ConstI64(0)})
	}
	return h.seed, nil
}

// keep returns the bool mask, shaped like x [..., in], of module number m for dropout p.
func (h *dropoutHash) keep(x string, in int64, m int, p float64) (string, error) {
	g := h.g
	s, err := h.seedInput()
	if err != nil {
		return "", err
	}
	// Shared vectors live outside any layer's scope, so the recompute pass keeps them
	// (they are small) rather than cloning them per layer.
	saved := g.Scope
	g.Scope = "lora/dropout"
	if h.rows == "" {
		n := g.Op("Div", []string{g.Op("Size", []string{x}), g.ScalarI64(in)})
		h.rows = h.indices(n, h.affine(s, 69069, 1))
		h.offC = h.affine(s, 1103515245%DropoutPrime, 12345)
	}
	if h.cols[in] == "" {
		h.cols[in] = h.indices(g.ScalarI64(in), h.offC)
	}
	g.Scope = saved
	if h.targets[x] == "" {
		lead := g.Op("Slice", []string{g.Op("Shape", []string{x}), g.ConstI64(0), g.ConstI64(-1)})
		h.targets[x] = g.Op("Concat", []string{lead, g.ConstI64(1)}, ortgraph.AInt("axis", 0))
	}
	km := (int64(m+1) * 2654435761) % DropoutPrime
	r := g.Op("Reshape", []string{g.Op("Add", []string{h.rows, g.ScalarI64(km)}), h.targets[x]})
	z := g.Op("Add", []string{r, h.cols[in]})
	hz := h.modP(g.Op("Mul", []string{z, z}))
	thr := int64(p*DropoutPrime + 0.999999)
	keep := g.Op("GreaterOrEqual", []string{hz, g.ScalarI64(thr)})
	g.SetType(keep, ortgraph.SymTensorType(ortgraph.Bool, g.SymDims(x)))
	return keep, nil
}

// DropoutKeepRef is the mask hash in Go, for tests and for checking the graph: keep of
// element (row, col) of module m under seed.
func DropoutKeepRef(seed int64, m int, row, col int64, p float64) bool {
	const P = DropoutPrime
	mod := func(v int64) int64 { return v % P }
	mix := func(v int64) int64 {
		v = mod(v * 48271)
		v = mod(v*v + 12345)
		v = mod(v*69621 + 11)
		return mod(v*v + 777)
	}
	r := mix(mod(row + mod(seed*69069+1)))
	c := mix(mod(col + mod(seed*(1103515245%P)+12345)))
	z := r + (int64(m+1)*2654435761)%P + c
	return mod(z*z) >= int64(p*P+0.999999)
}
