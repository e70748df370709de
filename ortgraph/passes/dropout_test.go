package passes

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"google.golang.org/protobuf/proto"
)

// TestDropoutHashMatchesReference: the masks ONNX Runtime computes from the emitted graph
// equal DropoutKeepRef element for element, for modules sharing an input and a column
// table, a module of another width (a later module number, so the column index crosses
// the module stride) and another dropout rate, at several seeds — so the graph's int64
// arithmetic never overflows, its int32 product wraps as Go's does, and the hash is what
// the statistics below measure.
func TestDropoutHashMatchesReference(t *testing.T) {
	ortruntest.Lib(t)
	const rows, seq, wide, narrow = 3, 37, 96, 40
	m := &onnxpb.ModelProto{
		IrVersion:   10,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: "", Version: 18}},
		Graph:       &onnxpb.GraphProto{Name: "dropout"},
	}
	g := ortgraph.NewGraph(&ortgraph.Model{P: m, Dir: "."})
	for _, in := range []struct {
		name string
		w    int64
	}{{"x", wide}, {"y", narrow}} {
		m.Graph.Input = append(m.Graph.Input, &onnxpb.ValueInfoProto{Name: in.name, Type: ortgraph.SymTensorType(ortgraph.Float16, []string{"b", "s", itoa(in.w)})})
	}
	g.Reindex()
	// Modules 0, 1 and 3 read x; 2 and 4 read y (2 is planned but never masked).
	h := newDropoutHash(g, []int64{wide, wide, narrow, wide, narrow})
	cases := []struct {
		x string
		m int
		w int64
		p float64
	}{{"x", 0, wide, 0.1}, {"x", 1, wide, 0.1}, {"y", 4, narrow, 0.1}, {"x", 3, wide, 0.5}}
	var outs []string
	for i, c := range cases {
		keep, err := h.keep(c.x, c.m, c.p)
		if err != nil {
			t.Fatal(err)
		}
		out := g.Op("Cast", []string{keep}, ortgraph.AInt("to", int64(ortgraph.Int64)))
		m.Graph.Output = append(m.Graph.Output, &onnxpb.ValueInfoProto{Name: out, Type: ortgraph.SymTensorType(ortgraph.Int64, []string{"b", "s",
			"w" + itoa(int64(i))})})
		outs = append(outs, out)
	}
	if err := g.TopoSort(); err != nil {
		t.Fatal(err)
	}
	buf, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ortrun.NewSessionFromBytes(buf, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, seed := range []int64{0, 1, 12345, DropoutPrime - 1} {
		in := map[string]*ortrun.Tensor{
			"x":              {DType: ortrun.Float16, Shape: []int64{rows, seq, wide}, Data: make([]uint16, rows*seq*wide)},
			"y":              {DType: ortrun.Float16, Shape: []int64{rows, seq, narrow}, Data: make([]uint16, rows*seq*narrow)},
			DropoutSeedInput: {DType: ortrun.Int64, Shape: []int64{1}, Data: []int64{seed}},
			DropoutRowsInput: {DType: ortrun.Int32, Shape: []int64{rows, seq}, Data: manifest.DropoutRowFactors(seed, int(rows*seq))},
		}
		got, err := s.Run(in, outs)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range cases {
			v := got[outs[i]].Data.([]int64)
			bad, kept := 0, 0
			for j, k := range v {
				want := DropoutKeepRef(seed, c.m, int64(j)/c.w, int64(j)%c.w, c.p)
				if (k == 1) != want {
					bad++
				}
				kept += int(k)
			}
			if bad > 0 {
				t.Errorf("seed %d module %d: %d of %d mask elements differ from DropoutKeepRef", seed, c.m, bad, len(v))
			}
			if f := float64(kept) / float64(len(v)); math.Abs(f-(1-c.p)) > 0.05 {
				t.Errorf("seed %d module %d: kept %.3f of the elements, want about %.2f", seed, c.m, f, 1-c.p)
			}
		}
	}
}

// TestDropoutHashStatistics measures the reference hash over a Llama-3B-sized block of
// 512 rows × 3072 columns: the kept fraction is 1−p; the masks of neighbouring and far
// rows, neighbouring and far columns, pairs of modules (adjacent and far apart) and pairs
// of seeds agree as often as independent Bernoulli(1−p) draws would (q² + (1−q)²); the
// parity of 2×2 blocks (adjacent and spread out) is that of four independent draws; and
// the kept fraction of each row and column, and the agreement of each pair of neighbouring
// rows, neighbouring columns and modules, spread like binomial counts. The last two catch
// what the averages cannot: a hash additive in row and column (keep = R[r] + C[c] ≥ T)
// has the right averages but per-row kept fractions spread 1.5 times and neighbouring-row
// agreements 40 times as much as independent draws.
func TestDropoutHashStatistics(t *testing.T) {
	const rows, cols, p = 512, 3072, 0.1
	const farRow, farCol = 1000, cols / 2
	indep := p*p + (1-p)*(1-p)
	parity := (1 + math.Pow(1-2*p, 4)) / 2
	n := float64(rows * cols)
	// Four standard deviations of a mean of n Bernoulli draws: the bound is loose enough
	// for a fixed seed never to flake, tight enough to catch a biased or correlated hash.
	tol := 4 * math.Sqrt(0.25/n)
	type stat struct {
		what   string
		want   float64
		same   func(k bool, r, c int64) bool
		spread bool   // also check the spread over rows and over columns
		chain  string // "rows"/"columns": pairs of neighbours along that axis overlap
		got    float64
		perRow []float64
		perCol []float64
	}
	for _, seed := range []int64{7, 123456789} {
		key := func(m int, r, c int64) bool { return DropoutKeepRef(seed, m, r, c, p) }
		stats := []*stat{
			{what: "kept fraction", want: 1 - p, spread: true, same: func(k bool, r, c int64) bool { return k }},
			{what: "agreement with the next row", want: indep, spread: true, chain: "rows", same: func(k bool, r, c int64) bool { return k == key(0, r+1, c) }},
			{what: "agreement with a far row", want: indep, same: func(k bool, r, c int64) bool { return k == key(0, r+farRow, c) }},
			{what: "agreement with the next column", want: indep, spread: true, chain: "columns", same: func(k bool, r, c int64) bool { return k == key(0, r, c+1) }},
			{what: "agreement with a far column", want: indep, same: func(k bool, r, c int64) bool { return k == key(0, r, (c+farCol)%cols) }},
			{what: "agreement of modules 0 and 1", want: indep, spread: true, same: func(k bool, r, c int64) bool { return k == key(1, r, c) }},
			{what: "agreement of modules 1 and 30", want: indep, same: func(_ bool, r, c int64) bool { return key(1, r, c) == key(30, r, c) }},
			{what: "agreement of modules 0 and 55", want: indep, same: func(k bool, r, c int64) bool { return k == key(55, r, c) }},
			{what: "agreement with the next seed", want: indep, same: func(k bool, r, c int64) bool { return k == DropoutKeepRef(seed+1, 0, r, c, p) }},
			{what: "agreement with a far seed", want: indep, same: func(k bool, r, c int64) bool {
				return k == DropoutKeepRef((seed+DropoutPrime/2)%DropoutPrime, 0, r, c, p)
			}},
			{what: "even parity of adjacent 2×2 blocks", want: parity, same: func(k bool, r, c int64) bool {
				return k != key(0, r+1, c) == (key(0, r, c+1) != key(0, r+1, c+1))
			}},
			{what: "even parity of spread-out 2×2 blocks", want: parity, same: func(k bool, r, c int64) bool {
				c2 := (c + farCol) % cols
				return k != key(0, r+farRow, c) == (key(0, r, c2) != key(0, r+farRow, c2))
			}},
		}
		for _, s := range stats {
			s.perRow, s.perCol = make([]float64, rows), make([]float64, cols)
		}
		for r := int64(0); r < rows; r++ {
			for c := int64(0); c < cols; c++ {
				k := key(0, r, c)
				for _, s := range stats {
					if s.same(k, r, c) {
						s.got++
						s.perRow[r]++
						s.perCol[c]++
					}
				}
			}
		}
		for _, s := range stats {
			s.got /= n
			t.Logf("seed %d: %s %.5f (independent draws: %.5f, bound ±%.5f)", seed, s.what, s.got, s.want, tol)
			if math.Abs(s.got-s.want) > tol {
				t.Errorf("seed %d: %s is %.5f, want %.5f ± %.5f", seed, s.what, s.got, s.want, tol)
			}
			if !s.spread {
				continue
			}
			// The sample variance of k binomial(m, q) fractions is q(1−q)/m with a
			// relative standard error of √(2/(k−1)); allow four of those. Along a chain
			// (row r with r+1, r+1 with r+2, …) neighbouring pairs share an element, and
			// for independent draws the variance of the mean of m is (v + 2·cov)/m, with
			// cov = P(three equal) − q² = (1−p)³ + p³ − q².
			for _, sp := range []struct {
				per, over string // one count per row, summed over the columns, and vice versa
				counts    []float64
				m         float64
			}{{"row", "columns", s.perRow, cols}, {"column", "rows", s.perCol, rows}} {
				mean, v := 0.0, 0.0
				for _, x := range sp.counts {
					mean += x / sp.m
				}
				mean /= float64(len(sp.counts))
				for _, x := range sp.counts {
					v += (x/sp.m - mean) * (x/sp.m - mean)
				}
				want := s.want * (1 - s.want)
				if s.chain == sp.over {
					want += 2 * (math.Pow(1-p, 3) + math.Pow(p, 3) - s.want*s.want)
				}
				ratio := v / float64(len(sp.counts)-1) / (want / sp.m)
				bound := 4 * math.Sqrt(2/float64(len(sp.counts)-1))
				t.Logf("seed %d: %s per %s: variance / that of independent draws = %.3f (bound 1 ± %.3f)", seed, s.what, sp.per, ratio, bound)
				if math.Abs(ratio-1) > bound {
					t.Errorf("seed %d: the %s per %s varies %.3f times as much as for independent draws (bound 1 ± %.3f)", seed, s.what, sp.per, ratio, bound)
				}
			}
		}
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// TestLoRADropoutIsPEFTs: on a real Llama graph with dropout p, the LoRA branch of a
// module (layer 0's v_proj, module 1) computes PEFT's (α/r)·B·A·x̃ with x̃ = mask⊙x/(1−p)
// and the mask of DropoutKeepRef at the element's (row, column) — although the graph
// applies the mask as Where(keep, x, 0) and folds 1/(1−p) into the scale — and the
// gradients of A and B are PEFT's for that mask: dB = s·dyᵀ(x̃Aᵀ), dA = s·(dy B)ᵀx̃. With
// ShareDropoutMasks the mask is that of module 0 (q_proj, which reads the same input) and
// the A product is shared with q_proj's.
func TestLoRADropoutIsPEFTs(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		shared     bool
		maskModule int    // the module number whose mask v_proj sees
		maskScope  string // the module whose scope holds the Where
	}{
		{false, 1, "model.layers.0.self_attn.v_proj"},
		{true, 0, "model.layers.0.self_attn.q_proj"},
	} {
		t.Run(fmt.Sprintf("shared=%v", c.shared), func(t *testing.T) { loraDropoutIsPEFTs(t, c.shared, c.maskModule, c.maskScope) })
	}
}

func loraDropoutIsPEFTs(t *testing.T, shared bool, maskModule int, maskScope string) {
	const p, rank, alpha, seed, module = 0.3, 4, 8.0, 99, "model.layers.0.self_attn.v_proj"
	const batch, seq = 2, 5
	md, err := ortgraph.Load("../../testdata/llama/gqa_tied_llama3/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	g := ortgraph.NewGraph(md)
	opts := RunOptions{
		Quantize: QuantizeOptions{Bits: 16},
		LoRA:     LoRAOptions{Targets: []string{"q_proj", "v_proj"}, Rank: rank, Alpha: alpha, Dropout: p, ShareDropoutMasks: shared},
		Loss:     LossOptions{Train: true},
	}
	ctx, err := ortgraph.RunPasses(g, opts.Options(), nil, LoRA, Loss, Backward)
	if err != nil {
		t.Fatal(err)
	}
	x, ds, dds := loraBranch(t, g, ctx, module, maskScope)
	aName, bName := PEFTName(module, "A"), PEFTName(module, "B")
	outs := []string{x, ds, dds, "grad." + aName, "grad." + bName}
	got, params := runLoRABranch(t, g, seed, batch, seq, outs)
	xv, dsv, ddsv := got[x].Data.([]float32), got[ds].Data.([]float32), got[dds].Data.([]float32)
	gA, gB := got[outs[3]].Data.([]float32), got[outs[4]].Data.([]float32)
	A, B := params[aName], params[bName]
	nIn, nOut, rows := len(A)/rank, len(B)/rank, batch*seq
	// PEFT in float64: x̃ = dropout(x), h = x̃Aᵀ, ds = s·hBᵀ.
	ref := peftDropout(xv, A, rows, nIn, rank, seed, maskModule, p)
	want, wantA, wantB := ref.lora(B, ddsv, nOut, alpha/rank)
	worst := 0.0
	check := func(what string, got []float32, want []float64) {
		scale := 0.0
		for _, w := range want {
			scale = math.Max(scale, math.Abs(w))
		}
		for i := range want {
			if e := math.Abs(float64(got[i])-want[i]) / scale; e > worst {
				worst = e
			}
			if math.Abs(float64(got[i])-want[i]) > 1e-5*scale {
				t.Fatalf("%s[%d] = %g, PEFT's dropout-then-scale gives %g", what, i, got[i], want[i])
			}
		}
	}
	check("LoRA output", dsv, want)
	check("dB", gB, wantB)
	check("dA", gA, wantA)
	dropped := ref.dropped
	t.Logf("%d of %d inputs dropped; worst deviation from PEFT %.2g of the largest value", dropped, rows*nIn, worst)
	if dropped == 0 || dropped == rows*nIn {
		t.Fatalf("%d of %d inputs dropped: the mask is not applied", dropped, rows*nIn)
	}
}

// loraBranch finds module's LoRA branch: x is the Where's data input (in maskScope's
// scope, the first module of its group), ds = scale·B·A·x the Add's second input, dds its
// gradient.
func loraBranch(t *testing.T, g *ortgraph.Graph, ctx *ortgraph.Context, module, maskScope string) (x, ds, dds string) {
	t.Helper()
	for _, n := range g.P.Node {
		switch {
		case n.OpType == "Where" && strings.HasPrefix(n.Name, "lora/"+maskScope+"/"):
			x = n.Input[1]
		case n.OpType == "Add" && strings.HasPrefix(n.Name, "lora/"+module+"/"):
			ds = n.Input[1]
		}
	}
	dds = ortgraph.ResultOf[*BackwardResult](ctx, Backward).ValueGrads[ds]
	if x == "" || ds == "" || dds == "" {
		t.Fatalf("LoRA branch of %s not found (x %q, delta %q, its gradient %q)", module, x, ds, dds)
	}
	return x, ds, dds
}

// runLoRABranch runs the training graph on ONNX Runtime's CPU provider with random token
// ids and random LoRA parameters (returned by name), fetching outs (the first three are
// intermediate values, made graph outputs here).
func runLoRABranch(t *testing.T, g *ortgraph.Graph, seed int64, batch, seq int64, outs []string) (map[string]*ortrun.Tensor, map[string][]float32) {
	t.Helper()
	md := g.M
	for _, v := range outs[:3] {
		md.P.Graph.Output = append(md.P.Graph.Output, &onnxpb.ValueInfoProto{Name: v,
			Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: ortgraph.Float}}}})
	}
	buf, err := proto.Marshal(md.P)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ortrun.NewSessionFromBytes(buf, ortrun.Options{Device: "cpu", IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]int64, batch*seq)
	for i := range ids {
		ids[i] = rng.Int64N(256)
	}
	in := map[string]*ortrun.Tensor{
		"input_ids":      {DType: ortrun.Int64, Shape: []int64{batch, seq}, Data: ids},
		"labels":         {DType: ortrun.Int64, Shape: []int64{batch, seq}, Data: ids},
		"loss_scale":     {DType: ortrun.Float32, Shape: []int64{1}, Data: []float32{1}},
		DropoutSeedInput: {DType: ortrun.Int64, Shape: []int64{1}, Data: []int64{seed}},
		DropoutRowsInput: {DType: ortrun.Int32, Shape: []int64{batch, seq}, Data: manifest.DropoutRowFactors(seed, int(batch*seq))},
	}
	params := map[string][]float32{}
	for _, vi := range md.P.Graph.Input {
		if !strings.HasPrefix(vi.Name, "base_model.") {
			continue
		}
		d := g.Dims(vi.Name)
		v := make([]float32, d[0]*d[1])
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.1)
		}
		params[vi.Name] = v
		in[vi.Name] = &ortrun.Tensor{DType: ortrun.Float32, Shape: d, Data: v}
	}
	got, err := s.Run(in, outs)
	if err != nil {
		t.Fatal(err)
	}
	return got, params
}

// peftRef is PEFT's LoRA dropout in float64: x̃ = mask⊙x/(1−p) with DropoutKeepRef's mask
// of module m, h = x̃Aᵀ.
type peftRef struct {
	xt, h           []float64
	rows, nIn, rank int
	dropped         int
}

func peftDropout(xv, A []float32, rows, nIn, rank int, seed int64, m int, p float64) *peftRef {
	ref := &peftRef{xt: make([]float64, rows*nIn), h: make([]float64, rows*rank), rows: rows, nIn: nIn, rank: rank}
	for r := 0; r < rows; r++ {
		for i := 0; i < nIn; i++ {
			if DropoutKeepRef(seed, m, int64(r), int64(i), p) {
				ref.xt[r*nIn+i] = float64(xv[r*nIn+i]) / (1 - p)
			} else {
				ref.dropped++
			}
		}
	}
	for r := 0; r < rows; r++ {
		for j := 0; j < rank; j++ {
			for i := 0; i < nIn; i++ {
				ref.h[r*rank+j] += ref.xt[r*nIn+i] * float64(A[j*nIn+i])
			}
		}
	}
	return ref
}

// lora returns PEFT's LoRA output ds = s·hBᵀ and, for its gradient dds, dA = s·(dds B)ᵀx̃
// and dB = s·ddsᵀh.
func (ref *peftRef) lora(B, ddsv []float32, nOut int, sc float64) (want, wantA, wantB []float64) {
	rows, nIn, rank := ref.rows, ref.nIn, ref.rank
	want = make([]float64, rows*nOut)
	for r := 0; r < rows; r++ {
		for o := 0; o < nOut; o++ {
			for j := 0; j < rank; j++ {
				want[r*nOut+o] += sc * ref.h[r*rank+j] * float64(B[o*rank+j])
			}
		}
	}
	wantB = make([]float64, nOut*rank)
	wantA = make([]float64, rank*nIn)
	for r := 0; r < rows; r++ {
		for o := 0; o < nOut; o++ {
			dy := float64(ddsv[r*nOut+o])
			for j := 0; j < rank; j++ {
				wantB[o*rank+j] += sc * dy * ref.h[r*rank+j]
				for i := 0; i < nIn; i++ {
					wantA[j*nIn+i] += sc * dy * float64(B[o*rank+j]) * ref.xt[r*nIn+i]
				}
			}
		}
	}
	return want, wantA, wantB
}
