package export

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"google.golang.org/protobuf/proto"
)

// The fused decode graph of the shared layout (`ortq export --kv-cache shared`, on unless
// --fuse=false). At batch 1 a decode step is a few-microsecond kernel per node, so the
// layer is written with fewer, larger nodes; each fusion below computes what the unfused
// graph computes (the same 4-bit bytes, the same LoRA product up to where α/r is applied).
const (
	// FuseQKV: q, k and v as one MatMulNBits (or MatMulBnb4, absmax not double-quantized)
	// of N = Nq+Nk+Nv (rows of the packed weights, scales and zero points concatenated)
	// feeding GroupQueryAttention's packed-QKV form.
	FuseQKV = "qkv"
	// FuseLoRA: α/r folded into B; the targets that read one input share one A product
	// (x·[A₁;A₂…]ᵀ), and each base output gets one MatMul by a block B (zeros where a
	// target does not write) and one Add.
	FuseLoRA = "lora"
	// FuseSkipNorm: the residual Add and the RMSNorm after it as one
	// com.microsoft.SkipSimplifiedLayerNormalization (its fourth output is the sum).
	FuseSkipNorm = "skip_norm"
	// MetaFused is the model metadata key listing the fusions applied (comma-separated;
	// "none" for an unfused shared export), which generate and bench report.
	MetaFused = "ortq.fused"
)

// fusion records what the builder fused and why it refused where it did.
type fusion struct {
	on    bool
	done  map[string]bool
	notes []string
}

// did marks fusion name applied.
func (f *fusion) did(name string) { f.done[name] = true }

// note records a refusal once.
func (f *fusion) note(format string, args ...any) {
	if s := fmt.Sprintf(format, args...); !slices.Contains(f.notes, s) {
		f.notes = append(f.notes, s)
	}
}

// applied lists the fusions applied, sorted.
func (f *fusion) applied() []string {
	var s []string
	for k := range f.done {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// metadata writes the fusions applied into the model's metadata (shared layout only).
func (b *builder) metadata() {
	if !b.shared {
		return
	}
	v := strings.Join(b.fz.applied(), ",")
	if v == "" {
		v = "none"
	}
	b.g.M.P.MetadataProps = append(b.g.M.P.MetadataProps, &onnxpb.StringStringEntryProto{Key: MetaFused, Value: v})
}

// addNorm returns RMSNorm i of h+d and the sum (d "": of h, which is the sum): one
// SkipSimplifiedLayerNormalization when fusing, else the Add and the norm.
func (b *builder) addNorm(i int, h, d string) (x, sum string) {
	if d == "" {
		return b.norm(i, h), h
	}
	if !b.fz.on {
		sum = b.g.Op("Add", []string{h, d})
		return b.norm(i, sum), sum
	}
	n := b.s.Norms[i]
	outs := b.g.Add(ortgraph.NodeSpec{Op: "SkipSimplifiedLayerNormalization", Domain: "com.microsoft", NOut: 4,
		Inputs: []string{h, d, b.copyInit(n.Weight)}, Attrs: []ortgraph.Attr{ortgraph.AFloat("epsilon", n.Eps)},
		Name: fmt.Sprintf("/model/skip_norm_%d", i)})
	node := b.g.P.Node[len(b.g.P.Node)-1]
	node.Output[1], node.Output[2] = "", "" // mean and inverse std: not computed
	b.g.Reindex()
	b.fz.did(FuseSkipNorm)
	return outs[0], outs[3]
}

// packedQKV writes q, k and v (modules mods, reading x) as one MatMulNBits or MatMulBnb4 when their
// weights allow it, and returns its output [batch, seq, Nq+Nk+Nv] with the LoRA updates
// added; ok false (with a note) where it refuses, the caller then writes three Linears.
func (b *builder) packedQKV(mods [3]string, x string) (y string, ok bool, err error) {
	if !b.fz.on {
		return "", false, nil
	}
	var nodes [3]*onnxpb.NodeProto
	for i, mod := range mods {
		l := b.s.Linears[mod]
		if l == nil {
			return "", false, fmt.Errorf("eval graph: no Linear %s", mod)
		}
		switch {
		case b.merged[mod] != nil:
			b.fz.note("--merge: q, k and v stay three nodes (the merged targets are float MatMuls)")
			return "", false, nil
		case l.Node.OpType != "MatMulNBits" && l.Node.OpType != "MatMulBnb4":
			b.fz.note("q, k and v stay three nodes: their base is %s, only MatMulNBits and MatMulBnb4 bases are packed", l.Node.OpType)
			return "", false, nil
		}
		if _, _, _, nested := autodiff.Bnb4Nested(l.Node); nested {
			b.fz.note("q, k and v stay three MatMulBnb4: a double-quantized absmax has one offset per weight and scales over 256 blocks, which do not concatenate")
			return "", false, nil
		}
		nodes[i] = l.Node
	}
	if why := unpackable(nodes); why != "" {
		b.fz.note("q, k and v stay three %s: %s", nodes[0].OpType, why)
		return "", false, nil
	}
	if y, err = b.concatWeights(nodes, x, strings.TrimSuffix(mods[0], ".q_proj")+".qkv_proj"); err != nil {
		return "", false, err
	}
	b.fz.did(FuseQKV)
	var s sink
	s.y = y
	for _, mod := range mods {
		s.mods, s.cols = append(s.mods, mod), append(s.cols, s.width)
		s.width += ortgraph.AttrInt(b.s.Linears[mod].Node, "N", 0)
	}
	return b.lora(x, []sink{s})[0], true, nil
}

// unpackable says why MatMulNBits or MatMulBnb4 nodes cannot be one ("" when they can): one
// op; the same K, bits, block_size and accuracy_level (MatMulNBits) or K, block_size and
// quant_type with whole blocks per weight (MatMulBnb4, whose blocks run over the flattened
// [N, K]); the same inputs present (zero points all or none, of one type), no g_idx or bias.
func unpackable(nodes [3]*onnxpb.NodeProto) string {
	attrs := []string{"K", "bits", "block_size", "accuracy_level"}
	if nodes[0].OpType == "MatMulBnb4" {
		attrs = []string{"K", "block_size", "quant_type"}
	}
	for _, n := range nodes {
		if n.OpType != nodes[0].OpType {
			return fmt.Sprintf("they are %s and %s", nodes[0].OpType, n.OpType)
		}
		if bs := ortgraph.AttrInt(n, "block_size", 0); n.OpType == "MatMulBnb4" && (bs <= 0 || ortgraph.AttrInt(n, "N", 0)*ortgraph.AttrInt(n, "K", 0)%bs != 0) {
			return fmt.Sprintf("%s's N·K is not a whole number of blocks of %d", n.Name, bs)
		}
	}
	for _, a := range attrs {
		v := [3]int64{}
		for i, n := range nodes {
			v[i] = ortgraph.AttrInt(n, a, -1)
		}
		if v[0] != v[1] || v[0] != v[2] {
			return fmt.Sprintf("they differ in %s (%d, %d, %d)", a, v[0], v[1], v[2])
		}
	}
	for _, n := range nodes {
		if len(n.Input) != len(nodes[0].Input) || (len(n.Input) > 3 && (n.Input[3] == "") != (nodes[0].Input[3] == "")) {
			return "some have zero points and some do not"
		}
		for _, in := range n.Input[min(4, len(n.Input)):] {
			if in != "" {
				return "one has a g_idx or bias input"
			}
		}
	}
	return ""
}

// concatWeights writes one MatMulNBits (MatMulBnb4) whose weight rows are those of nodes,
// in order: MatMulNBits' B [N, blocks, blob], scales and zero points are row-major over N
// (a uint8 zero-point row is padded to whole bytes), MatMulBnb4's B and absmax are the
// flattened [N, K] in whole blocks, so either concatenates along its first dimension.
func (b *builder) concatWeights(nodes [3]*onnxpb.NodeProto, x, mod string) (string, error) {
	ins := []string{x}
	suffix := []string{"", ".weight_q4", ".weight_scales", ".weight_zero_points"}
	if nodes[0].OpType == "MatMulBnb4" {
		suffix = []string{"", ".weight_bnb4", ".weight_absmax"}
	}
	for i := 1; i < min(4, len(nodes[0].Input)); i++ {
		if nodes[0].Input[i] == "" {
			ins = append(ins, "")
			continue
		}
		var t *onnxpb.TensorProto
		for _, n := range nodes {
			p := b.s.G.Initializer(n.Input[i])
			if p == nil {
				return "", fmt.Errorf("eval graph node %q: input %q is not an initializer", n.Name, n.Input[i])
			}
			raw, err := b.s.Eval.TensorBytes(p)
			if err != nil {
				return "", err
			}
			if t == nil {
				t = &onnxpb.TensorProto{Name: mod + suffix[i], DataType: p.DataType, Dims: slices.Clone(p.Dims)}
			} else if p.DataType != t.DataType || len(p.Dims) == 0 || !slices.Equal(p.Dims[1:], t.Dims[1:]) {
				return "", fmt.Errorf("eval graph node %q: input %q is %s %v, not of the layout of %q", n.Name, p.Name,
					ortgraph.DTypeName(p.DataType), p.Dims, nodes[0].Input[i])
			} else {
				t.Dims[0] += p.Dims[0]
			}
			t.RawData = append(t.RawData, raw...)
		}
		ins = append(ins, b.g.AddInitializer(t))
	}
	var n int64
	for _, nd := range nodes {
		n += ortgraph.AttrInt(nd, "N", 0)
	}
	attrs := []*onnxpb.AttributeProto{}
	for _, a := range nodes[0].Attribute {
		a = proto.Clone(a).(*onnxpb.AttributeProto)
		if a.Name == "N" {
			a.I = n
		}
		attrs = append(attrs, a)
	}
	op := nodes[0].OpType
	return b.g.Add(ortgraph.NodeSpec{Op: op, Domain: "com.microsoft", Inputs: ins, Attrs: attrs, Name: "/" + mod + "/" + op})[0], nil
}

// sink is a base output the LoRA updates of mods land on: y [..., width], target mods[i]
// writing columns cols[i] onward.
type sink struct {
	y     string
	width int64
	mods  []string
	cols  []int64
}

// lora adds the LoRA updates of every sink, all reading x, and returns the sinks' new
// outputs. Unfused it is loraUpdate per target; fused, one
// MatMul by the packed Aᵀ [in, Σr] for all of them, then per sink one MatMul by its block
// of (α/r)·Bᵀ [Σr, width] and one Add.
func (b *builder) lora(x string, sinks []sink) []string {
	ys := make([]string, len(sinks))
	var mods []string
	for i, s := range sinks {
		ys[i] = s.y
		for _, m := range s.mods {
			if b.ad.Has(m) {
				mods = append(mods, m)
			}
		}
	}
	if b.mode == LoRANone || b.mode == LoRAMerged || len(mods) == 0 {
		return ys
	}
	if !b.fz.on {
		for i, s := range sinks {
			for _, m := range s.mods {
				if b.ad.Has(m) {
					ys[i] = b.loraUpdate(m, x, ys[i])
				}
			}
		}
		return ys
	}
	at, rows, total := b.packedA(mods)
	h := b.g.Op("MatMul", []string{x, at})
	for i, s := range sinks {
		if bt := b.packedB(s, rows, total); bt != "" {
			ys[i] = b.g.Op("Add", []string{ys[i], b.g.Op("MatMul", []string{h, bt})})
		}
	}
	b.fz.did(FuseLoRA)
	return ys
}

// packedA is [A₁; A₂; …]ᵀ [in, Σr] of mods as an initializer, each module's first row
// (column of the product) and Σr.
func (b *builder) packedA(mods []string) (string, map[string]int64, int64) {
	rows, total := map[string]int64{}, int64(0)
	in := b.ad.Shape[mods[0]][0][1]
	for _, m := range mods {
		rows[m], total = total, total+b.ad.Shape[m][0][0]
	}
	at := make([]float32, in*total)
	for _, m := range mods {
		a, r := b.ad.A[m], b.ad.Shape[m][0][0]
		for j := int64(0); j < r; j++ {
			for k := int64(0); k < in; k++ {
				at[k*total+rows[m]+j] = a[j*in+k]
			}
		}
	}
	return b.loraTensor(passes.PEFTName(mods[0], "A")+".packed.T", []int64{in, total}, at), rows, total
}

// packedB is sink s's (α/r)·Bᵀ blocks [total = Σr, width] ("" when no target of s has LoRA).
func (b *builder) packedB(s sink, rows map[string]int64, total int64) string {
	bt := make([]float32, total*s.width)
	first := ""
	for i, m := range s.mods {
		if !b.ad.Has(m) {
			continue
		}
		if first == "" {
			first = m
		}
		bm, r, out := b.ad.B[m], b.ad.Shape[m][0][0], b.ad.Shape[m][1][0]
		for j := int64(0); j < r; j++ {
			for n := int64(0); n < out; n++ {
				bt[(rows[m]+j)*s.width+s.cols[i]+n] = float32(b.ad.Scale) * bm[n*r+j]
			}
		}
	}
	if first == "" {
		return ""
	}
	return b.loraTensor(passes.PEFTName(first, "B")+".packed.T", []int64{total, s.width}, bt)
}
