package passes

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
)

func TestNodeLayer(t *testing.T) {
	meta := func(kv ...string) []*onnxpb.StringStringEntryProto {
		var m []*onnxpb.StringStringEntryProto
		for i := 0; i < len(kv); i += 2 {
			m = append(m, &onnxpb.StringStringEntryProto{Key: kv[i], Value: kv[i+1]})
		}
		return m
	}
	const scopes, ns = "pkg.torch.onnx.name_scopes", "namespace"
	for _, c := range []struct {
		name, node string
		meta       []*onnxpb.StringStringEntryProto
		want       int
	}{
		{"stock export: fx name last", "node_mul_111", meta(scopes, "['', 'm', 'm.model', 'm.model.layers.0', 'm.model.layers.0.input_layernorm', 'mul_111']"), 0},
		{"stock export: Linear", "node_linear_5", meta(scopes,
			"['', 'm', 'm.model', 'm.model.layers.12', 'm.model.layers.12.mlp', 'm.model.layers.12.mlp.down_proj', 'linear_5']"), 12},
		{"stock export: module last", "node_x", meta(scopes, "['', 'm', 'm.model', 'm.model.layers.3']"), 3},
		{"stock export: shared", "node_mul_500", meta(scopes, "['', 'm', 'm.model', 'm.model.norm', 'mul_500']"), -1},
		{"namespace only", "node_mul_111", meta(ns,
			": common.LogitsOnly/m: LlamaForCausalLM/m.model: LlamaModel/m.model.layers.1: LlamaDecoderLayer/m.model.layers.1.input_layernorm: "+
				"LlamaRMSNorm/mul_111: aten.mul.Tensor"), 1},
		{"namespace shared", "node_embedding", meta(ns,
			": common.LogitsOnly/m: LlamaForCausalLM/m.model: LlamaModel/m.model.embed_tokens: Embedding/embedding: aten.embedding.default"), -1},
		{"synth name", "/model/layers.5/self_attn/q_proj/MatMul", nil, 5},
		{"torchscript name", "/model/layers.10/mlp/Mul", nil, 10},
		{"lora node name", "/model/layers.4/self_attn/q_proj/lora_A", meta(scopes, "['', 'm', 'mul_3']"), 4},
		{"no layer", "/model/norm/Mul", nil, -1},
		{"no layer at all", "node_Shape_0", meta(scopes, "['_empty_nn_module_stack_from_metadata_hook', 'sym_size_int_10']"), -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := &onnxpb.NodeProto{Name: c.node, MetadataProps: c.meta}
			if got := nodeLayer(n); got != c.want {
				t.Errorf("nodeLayer(%q, %v) = %d, want %d", c.node, c.meta, got, c.want)
			}
		})
	}
}

// nodes builds forward nodes from "name: Op in,in -> out" lines; without an Op (a word
// starting with a capital letter) the node is a Mul.
func nodes(lines ...string) []*onnxpb.NodeProto {
	var out []*onnxpb.NodeProto
	for _, l := range lines {
		name, rest, _ := strings.Cut(l, ":")
		ins, outs, _ := strings.Cut(rest, "->")
		op := "Mul"
		fields := strings.Fields(ins)
		if len(fields) > 0 && fields[0][0] >= 'A' && fields[0][0] <= 'Z' {
			op, fields = fields[0], fields[1:]
		}
		var in []string
		if len(fields) == 1 {
			in = strings.Split(fields[0], ",")
		}
		out = append(out, &onnxpb.NodeProto{Name: name, OpType: op, Input: in, Output: strings.Split(strings.TrimSpace(outs), ",")})
	}
	return out
}

// TestLayerPhases: layer tags (explicit and propagated), the checkpoints between layers and
// the gradient each layer's recomputation waits for, on small forward graphs.
func TestLayerPhases(t *testing.T) {
	// Two layers on a residual stream: embed → layer 0 → layer 1 → norm.
	twoLayers := []string{
		"/model/embed/Gather: ids -> e",
		"/model/layers.0/a: e -> a0",
		"/model/layers.0/b: Add a0,e -> h0",
		"/model/layers.1/a: h0 -> a1",
		"/model/layers.1/b: Add a1,h0 -> h1",
		"/model/norm/Mul: h1 -> logits",
	}
	for _, c := range []struct {
		name     string
		nodes    []string
		grads    map[string]string
		layers   string // value=layer for every value, in forward order
		boundary string
		gates    string
	}{
		{"two layers", twoLayers, map[string]string{"a0": "da0", "h0": "dh0", "h1": "dh1", "e": "de"},
			"e=-1 a0=0 h0=0 a1=1 h1=1 logits=-1", "h0 h1 logits", "0:dh0 1:dh1"},
		{"untagged inside a layer joins it",
			[]string{"/model/embed/Gather: ids -> e", "/model/layers.0/a: e -> a0", "node_x: Cast a0 -> u", "/model/layers.0/b: Add u,e -> h0",
				"/model/norm/Mul: h0 -> logits"},
			map[string]string{"h0": "dh0", "u": "du"},
			"e=-1 a0=0 u=0 h0=0 logits=-1", "h0 logits", "0:dh0"},
		{"untagged after the last layer stays shared",
			[]string{"/model/embed/Gather: ids -> e", "/model/layers.0/a: e -> h0", "node_y: Cast h0 -> y", "/model/norm/Mul: y -> logits"},
			map[string]string{"h0": "dh0", "y": "dy"},
			"e=-1 h0=0 y=-1 logits=-1", "h0 logits", "0:dh0"},
		{"untagged reading two layers is shared",
			[]string{"/model/layers.0/a: x -> a0", "/model/layers.1/a: a0 -> a1", "node_z: Add a0,a1 -> z", "/model/norm/Mul: z -> logits"},
			nil,
			"a0=0 a1=1 z=-1 logits=-1", "a0 a1 logits", ""},
		{"the later boundary gradient gates the layer",
			[]string{"/model/layers.0/a: x -> a0", "/model/layers.0/b: a0 -> b0", "/model/norm/Mul: Add a0,b0 -> logits"},
			map[string]string{"a0": "da0", "b0": "db0"},
			"a0=0 b0=0 logits=-1", "a0 b0 logits", "0:db0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fwd := nodes(c.nodes...)
			nl, layerOf := tagLayers(fwd)
			var got []string
			for _, n := range fwd {
				for _, o := range n.Output {
					got = append(got, fmt.Sprintf("%s=%d", o, layerOf[o]))
				}
			}
			if s := strings.Join(got, " "); s != c.layers {
				t.Errorf("layers: %s, want %s", s, c.layers)
			}
			boundary := layerBoundaries(fwd, nl, layerOf, []string{"logits"})
			got = got[:0]
			for v := range boundary {
				got = append(got, v)
			}
			sort.Strings(got)
			if s := strings.Join(got, " "); s != c.boundary {
				t.Errorf("boundary: %s, want %s", s, c.boundary)
			}
			got = got[:0]
			for l, g := range layerGates(fwd, layerOf, boundary, c.grads) {
				got = append(got, fmt.Sprintf("%d:%s", l, g))
			}
			sort.Strings(got)
			if s := strings.Join(got, " "); s != c.gates {
				t.Errorf("gates: %s, want %s", s, c.gates)
			}
		})
	}
}

// TestRandomValues: a random draw and what is computed from it and constants alone are
// random (never recomputed); a value that also reads an activation is not.
func TestRandomValues(t *testing.T) {
	m := &ortgraph.Model{P: &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{
		Initializer: []*onnxpb.TensorProto{ortgraph.FloatTensor("p", ortgraph.Float, nil, []float32{0.1})},
	}}}
	g := ortgraph.NewGraph(m)
	fwd := nodes(
		"/model/layers.0/x: Relu in -> x",
		"/model/layers.0/r: RandomUniformLike x -> r",
		"/model/layers.0/c: Constant -> two",
		"/model/layers.0/keep: GreaterOrEqual r,p -> keep",
		"/model/layers.0/scaled: Mul keep,two -> mask",
		"/model/layers.0/y: Mul x,mask -> y",
	)
	_, random := randomValues(g, fwd)
	var got []string
	for v := range random {
		got = append(got, v)
	}
	sort.Strings(got)
	if s := strings.Join(got, " "); s != "keep mask r" {
		t.Errorf("random values %s, want keep mask r", s)
	}
}

// TestReuseRecomputedWeights: the backward pass's dequantization chain of a 4-bit weight
// (DequantizeLinear → Reshape, its scale gated) is replaced by the recomputation's gated
// clone of the forward chain, and only then.
func TestReuseRecomputedWeights(t *testing.T) {
	for _, c := range []struct {
		name string
		// bare: no Reshape after the DequantizeLinears; ungatedClone: the clone reads the
		// scale straight from the initializer; notRecomputed: no clone at all; axis: the
		// backward DequantizeLinear has an attribute the forward one lacks.
		bare, ungatedClone, notRecomputed, axis bool
		reused                                  int
	}{
		{name: "chain", reused: 1},
		{name: "bare DequantizeLinear", bare: true},
		{name: "clone not gated", ungatedClone: true},
		{name: "not recomputed", notRecomputed: true},
		{name: "different attributes", axis: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			gp := &onnxpb.GraphProto{Initializer: []*onnxpb.TensorProto{
				ortgraph.FloatTensor("wq", ortgraph.Float, []int64{4}, []float32{1, 2, 3, 4}),
				ortgraph.FloatTensor("s", ortgraph.Float, []int64{1}, []float32{0.5}),
				ortgraph.Int64Tensor("shp", []int64{2}, []int64{2, 2}),
			}}
			chain := func(prefix, scale string, attrs ...*onnxpb.AttributeProto) string {
				gp.Node = append(gp.Node, &onnxpb.NodeProto{Name: prefix + "DQ", OpType: "DequantizeLinear", Input: []string{"wq", scale},
					Output: []string{prefix + "dq"}, Attribute: attrs})
				if c.bare {
					return prefix + "dq"
				}
				gp.Node = append(gp.Node, &onnxpb.NodeProto{Name: prefix + "Reshape", OpType: "Reshape", Input: []string{prefix + "dq", "shp"},
					Output: []string{prefix + "w"}})
				return prefix + "w"
			}
			w := chain("f/", "s")
			gp.Node = append(gp.Node, &onnxpb.NodeProto{Name: "f/MatMul", OpType: "MatMul", Input: []string{"x", w}, Output: []string{"y"}})
			fwd := append([]*onnxpb.NodeProto(nil), gp.Node...)
			isFwd := map[*onnxpb.NodeProto]bool{}
			for _, n := range fwd {
				isFwd[n] = true
			}
			gate := func(name string) string {
				gp.Node = append(gp.Node, &onnxpb.NodeProto{Name: name, OpType: "Where", Input: []string{"cond", "s", "s"}, Output: []string{name}})
				return name
			}
			clones := map[string]string{}
			if !c.notRecomputed {
				scale := "s"
				if !c.ungatedClone {
					scale = gate("gate_r")
				}
				clones[w] = chain("recompute/", scale)
			}
			var attrs []*onnxpb.AttributeProto
			if c.axis {
				attrs = []*onnxpb.AttributeProto{{Name: "axis", Type: onnxpb.AttributeProto_INT, I: 0}}
			}
			wb := chain("b/", gate("gate_b"), attrs...)
			dx := &onnxpb.NodeProto{Name: "b/MatMul", OpType: "MatMul", Input: []string{"dy", wb}, Output: []string{"dx"}}
			gp.Node = append(gp.Node, dx)
			g := ortgraph.NewGraph(&ortgraph.Model{P: &onnxpb.ModelProto{Graph: gp}})
			if got := reuseRecomputedWeights(g, fwd, isFwd, clones); got != c.reused {
				t.Fatalf("reused %d, want %d", got, c.reused)
			}
			want := wb
			if c.reused > 0 {
				want = clones[w]
			}
			if dx.Input[1] != want {
				t.Errorf("dx reads %s, want %s", dx.Input[1], want)
			}
		})
	}
}
