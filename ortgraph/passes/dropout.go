package passes

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

// DropoutSeedInput is the training graph's int64 [1] input that selects the LoRA dropout
// masks of one run of the graph; a value in [0, DropoutPrime).
const DropoutSeedInput = "lora_dropout_seed"

// DropoutRowsInput is the training graph's int32 [batch, seq] input of row factors R
// (manifest.DropoutRowFactors of the seed), one per token in row-major order.
const DropoutRowsInput = "lora_dropout_rows"

// DropoutPrime is the modulus of the small hashes the masks are built from. The training
// loop feeds the seed input reduced by it, so its value is the artifacts contract's
// manifest.DropoutSeedModulus (which says why this prime).
const DropoutPrime = manifest.DropoutSeedModulus

// DropoutMaskKey marks, in its metadata, the node that computes a LoRA dropout mask (the
// bool keep mask), which RecomputeOptions.KeepMasks keeps from the forward pass.
const DropoutMaskKey = "ortq.dropout_mask"

// dropoutColStride separates the modules in the column hash's index: column c of module m
// hashes index m·stride + c, so widths up to the stride and modules up to P/stride never
// share an index.
const dropoutColStride = 1 << 16

// dropoutHash builds LoRA dropout masks from a counter-based hash instead of ONNX's random
// ops. Why: ONNX Runtime's RandomUniformLike keeps its generator state inside the session,
// so a resumed run (a new session) would draw different masks than the uninterrupted run
// did; a mask that is a pure function of (seed input, module, row, column) makes resume
// exact and lets the recompute pass recompute masks instead of keeping them alive.
//
// Element (row r, column c) of module m is kept when the wrapping int32 product of a row
// factor and a column factor is at least a threshold:
//
//	keep = int32(R[r] · C[m][c]) ≥ T(p),   T(p) = ⌈p·2^32⌉ − 2^31
//	R[r]    = F(mix(r + offR(seed)))
//	C[m][c] = F(mix(m·2^16 + c + offC(seed)))
//	F(h)    = 8h + 1 − 2^31   (h a residue mod P, so F(h) is an int32 ≡ 1 mod 8)
//
// where mix is two rounds of multiply and square mod P = DropoutPrime, and offR, offC are
// mix of affine maps of the seed. Only the product and the comparison touch every element
// (two full-size int32 ops; int32 halves the traffic of int64), so a module costs
// Mul + GreaterOrEqual + the Where that applies the mask. R (one per token of the run) is
// the graph's dropout_rows input, computed by the trainer (manifest.DropoutRowFactors); the
// column table of all modules of one input width (one per width, handed to the modules by
// Splits) is computed in the graph with int64 ops mod P and cast to int32.
//
// Why a product: for an odd column factor C, R ↦ R·C permutes the odd residues mod 2^32,
// so with R uniform over its range each column (and each module) keeps 1−p of the rows,
// and symmetrically each row keeps 1−p of the columns. Over the columns, two rows see the
// pairs (u, k·u) with k = R[r']/R[r], and over the rows, two modules see (u, k·u) with
// k = C'[c]/C[c]; the top bits of u and of k·u are nearly independent unless k is one of
// the rare multipliers with a short lattice vector. A sum R[r] + C[c] instead would have the same averages but make
// whole rows alike (measured: per-row kept fractions spread 1.5 times and neighbouring-row
// agreements 40 times as much as for independent draws). TestDropoutHashStatistics
// measures the keep rate, the pairwise agreement of near and far rows, columns, modules
// and seeds, the parity of 2×2 blocks and those spreads against independent draws.
//
// The ops (Range, Add, Mul, Div, Sub on int64; Cast to int32; Split; Mul and
// GreaterOrEqual on int32; Where; and Squeeze/Size/Shape/Slice/Concat/Reshape) all have
// CUDA kernels in ONNX Runtime, and int32 Mul wraps there (a*b in CUDA) as it does on the
// CPU and in Go.
type dropoutHash struct {
	g      *ortgraph.Graph
	widths []int64           // input width of each module, by module number
	seed   string            // the seed input as a scalar ("" until the first module)
	rows   string            // row factors R, int32 [rows], built from the first module's x
	offC   string            // the seed's column offset
	cols   map[int]string    // module → its column factors, int32 [1, in]
	shaped map[string]string // x → R reshaped to x's leading dims and 1
}

// newDropoutHash prepares masks for modules 0…len(widths)−1, widths[m] being module m's
// input width (all modules of one width share one column table).
func newDropoutHash(g *ortgraph.Graph, widths []int64) *dropoutHash {
	return &dropoutHash{g: g, widths: widths, cols: map[int]string{}, shaped: map[string]string{}}
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

// factor maps residues to int32 factors F(h) = 8h + 1 − 2^31 (odd, in int32 range).
func (h *dropoutHash) factor(v string) string {
	g := h.g
	f := g.Op("Add", []string{g.Op("Mul", []string{v, g.ScalarI64(8)}), g.ScalarI64(1 - 1<<31)})
	return g.Op("Cast", []string{f}, ortgraph.AInt("to", int64(ortgraph.Int32)))
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

// columns builds the column factors of every module of width in (one table, one Split)
// and records each module's [1, in] slice.
func (h *dropoutHash) columns(in int64) {
	g := h.g
	var mods, base []int64
	for m, w := range h.widths {
		if w == in {
			mods = append(mods, int64(m))
			base = append(base, int64(m)*dropoutColStride)
		}
	}
	start := g.AddInitializer(ortgraph.Int64Tensor(g.Fresh("col_base"), []int64{int64(len(mods)), 1}, base))
	idx := g.Op("Add", []string{start, g.Op("Range", []string{g.ScalarI64(0), g.ScalarI64(in), g.ScalarI64(1)})}) // [modules, in]: m·stride + c
	table := h.factor(h.mix(h.modP(g.Op("Add", []string{idx, h.offC}))))
	g.SetType(table, ortgraph.TensorType(ortgraph.Int32, []int64{int64(len(mods)), in}))
	ones := make([]int64, len(mods))
	for i := range ones {
		ones[i] = 1
	}
	// At most maxKernelArgs outputs per Split, so that a CUDA graph can capture it (a
	// 28-layer q/v model has 56 modules of one width).
	outs := splitTreeTyped(g, table, ones, func(n int64) *onnxpb.TypeProto { return ortgraph.TensorType(ortgraph.Int32, []int64{n, in}) })
	for i, m := range mods {
		h.cols[int(m)] = outs[i]
	}
}

// keep returns the bool mask, shaped like x [..., in], of module number m for dropout p.
func (h *dropoutHash) keep(x string, m int, p float64) (string, error) {
	g := h.g
	if m < 0 || m >= len(h.widths) {
		return "", fmt.Errorf("dropout mask for module %d: only %d modules were planned", m, len(h.widths))
	}
	in := h.widths[m]
	if in > dropoutColStride || int64(m) >= DropoutPrime/dropoutColStride {
		return "", fmt.Errorf("dropout mask for module %d of width %d: the hash takes widths up to %d and modules below %d", m, in, dropoutColStride,
			DropoutPrime/dropoutColStride)
	}
	// Shared vectors live outside any layer's scope, so the recompute pass keeps them
	// (they are small) rather than cloning them per layer.
	saved := g.Scope
	g.Scope = "lora/dropout"
	s, err := h.seedInput()
	if err != nil {
		g.Scope = saved
		return "", err
	}
	if h.rows == "" {
		h.offC = h.mix(h.affine(s, 1103515245%DropoutPrime, 12345))
		rows, err := h.rowsInput()
		if err != nil {
			g.Scope = saved
			return "", err
		}
		h.rows = rows
	}
	if h.cols[m] == "" {
		h.columns(in)
	}
	g.Scope = saved
	if h.shaped[x] == "" {
		lead := g.Op("Slice", []string{g.Op("Shape", []string{x}), g.ConstI64(0), g.ConstI64(-1)})
		target := g.Op("Concat", []string{lead, g.ConstI64(1)}, ortgraph.AInt("axis", 0))
		h.shaped[x] = g.Op("Reshape", []string{h.rows, target})
	}
	u := g.Op("Mul", []string{h.shaped[x], h.cols[m]})
	g.SetType(u, ortgraph.SymTensorType(ortgraph.Int32, g.SymDims(x)))
	keep := g.Op("GreaterOrEqual", []string{u, h.threshold(p)})
	g.SetType(keep, ortgraph.SymTensorType(ortgraph.Bool, g.SymDims(x)))
	n := g.Producer(keep)
	n.MetadataProps = append(n.MetadataProps, &onnxpb.StringStringEntryProto{Key: DropoutMaskKey, Value: "1"})
	return keep, nil
}

// rowsInput adds the row factors' graph input. The trainer computes R on the host: the
// graph would need the token count (a Size or Shape read on the host) and a Range of that
// length, and measured on an H200 that part of the mask is what kept ONNX Runtime from
// capturing the step in a CUDA graph (CUDA failure 901 at the end of the capture; with R
// an input, the same step captures).
func (h *dropoutHash) rowsInput() (string, error) {
	if err := h.g.Reserve(DropoutRowsInput); err != nil {
		return "", err
	}
	h.g.P.Input = append(h.g.P.Input, &onnxpb.ValueInfoProto{Name: DropoutRowsInput, Type: ortgraph.SymTensorType(ortgraph.Int32, []string{"batch", "seq"})})
	h.g.Reindex()
	return DropoutRowsInput, nil
}

// threshold is T(p) as a 0-d int32 constant (shared when identical).
func (h *dropoutHash) threshold(p float64) string {
	t := dropoutThreshold(p)
	name := "const_i32_scalar_" + strconv.FormatInt(int64(t), 10)
	if h.g.Initializer(name) == nil {
		h.g.AddInitializer(ortgraph.BytesTensor(name, ortgraph.Int32, nil, binary.LittleEndian.AppendUint32(nil, uint32(t))))
	}
	return name
}

// dropoutThreshold is T(p) = ⌈p·2^32⌉ − 2^31: the int32 values ≥ T are a fraction 1−p of
// all int32 values.
func dropoutThreshold(p float64) int32 {
	t := math.Ceil(p*(1<<32)) - (1 << 31)
	if t > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(t)
}

// dropoutMix is mix in Go.
func dropoutMix(v int64) int64 { return manifest.DropoutMix(v) }

// dropoutFactor is F in Go.
func dropoutFactor(h int64) int32 { return manifest.DropoutFactor(h) }

// dropoutRowFactor and dropoutColFactor are R[row] and C[m][col] under seed.
func dropoutRowFactor(seed, row int64) int32 { return manifest.DropoutRowFactor(seed, row) }

func dropoutColFactor(seed int64, m int, col int64) int32 {
	const P = DropoutPrime
	off := dropoutMix((seed*(1103515245%P) + 12345) % P)
	return dropoutFactor(dropoutMix((int64(m)*dropoutColStride + col + off) % P))
}

// DropoutKeepRef is the mask hash in Go, for tests and for checking the graph: keep of
// element (row, col) of module m under seed (in [0, DropoutPrime)). Go's int32
// multiplication wraps, as ONNX Runtime's int32 Mul does.
func DropoutKeepRef(seed int64, m int, row, col int64, p float64) bool {
	return dropoutRowFactor(seed, row)*dropoutColFactor(seed, m, col) >= dropoutThreshold(p)
}
