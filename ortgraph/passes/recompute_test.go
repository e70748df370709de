package passes_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
)

var reAnyLayer = regexp.MustCompile(`layers[./_](\d+)(?:$|[^0-9])`)

// moduleLayer is the test's own reading of a node's decoder layer: any layers.N in the
// exporter's module path (name_scopes or namespace metadata), else in the node name.
func moduleLayer(n *onnxpb.NodeProto) int {
	for _, s := range []string{ortgraph.MetaValue(n, "pkg.torch.onnx.name_scopes"), ortgraph.MetaValue(n, "namespace"), n.Name} {
		if m := reAnyLayer.FindAllStringSubmatch(s, -1); m != nil {
			l, _ := strconv.Atoi(m[len(m)-1][1])
			return l
		}
	}
	return -1
}

// TestRecomputeLayerForward: on stock dynamo exports (whose name_scopes end with the fx
// node name, not the module) the backward pass of layer N reads no forward activation of
// layer N except through a recomputed clone or the layer boundary (a value of layer N read by
// the forward pass outside the layer), so only the residual stream stays alive.
func TestRecomputeLayerForward(t *testing.T) {
	model, _, err := defaultmodel.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	graphs := []struct{ name, path string }{
		{"gqa_tied_llama3", "../../testdata/llama/gqa_tied_llama3/model.onnx"},
		{"mask_untied", "../../testdata/llama/mask_untied/model.onnx"},
		{"opset23_gqa", "../../testdata/llama/opset23_gqa/model.onnx"},
		{"default", model},
	}
	configs := []struct {
		name string
		opts passes.RunOptions
	}{
		{"16bit_qv", passes.RunOptions{
			Quantize: passes.QuantizeOptions{Bits: 16},
			LoRA:     passes.LoRAOptions{Targets: []string{"q_proj", "v_proj"}, Rank: 4, Alpha: 8},
			Loss:     passes.LossOptions{Train: true},
		}},
		{"4bit_all_dropout_chunked", passes.RunOptions{
			Quantize: passes.QuantizeOptions{Bits: 4},
			LoRA:     passes.LoRAOptions{Targets: passes.Kinds, Rank: 4, Alpha: 8, Dropout: 0.1},
			Loss:     passes.LossOptions{Train: true, Chunks: 2},
		}},
	}
	for _, gr := range graphs {
		for _, c := range configs {
			t.Run(gr.name+"/"+c.name, func(t *testing.T) {
				g := loadFrom(t, filepath.Clean(gr.path))
				opts := c.opts
				opts.Quantize.Quant.BlockSize = 16
				ctx, err := ortgraph.RunPasses(g, opts.Options(), nil, passes.HalfSoftmax, passes.Quantize, passes.RMSNorm, passes.DQForward, passes.LoRA,
					passes.Loss, passes.Backward, passes.Recompute)
				if err != nil {
					t.Fatal(err)
				}
				fwd := ortgraph.ResultOf[*passes.BackwardResult](ctx, passes.Backward).Forward
				checkRecomputeLayers(t, g, fwd)
				checkClonesWait(t, g)
			})
		}
	}
}

func checkRecomputeLayers(t *testing.T, g *ortgraph.Graph, fwd map[*onnxpb.NodeProto]bool) {
	t.Helper()
	outputs := map[string]bool{}
	for _, o := range g.P.Output {
		outputs[o.Name] = true
	}
	layerOf := map[string]int{} // forward value → layer of its producer (-1: none)
	byName := map[string]*onnxpb.NodeProto{}
	layers := map[int]bool{}
	for _, n := range g.P.Node {
		if !fwd[n] {
			continue
		}
		byName[n.Name] = n
		l := moduleLayer(n)
		if l >= 0 {
			layers[l] = true
		}
		for _, o := range n.Output {
			layerOf[o] = l
		}
	}
	// Boundary: a value of layer L that the forward pass reads outside L (the residual
	// stream, or the last layer's output read by the final norm) or a graph output.
	boundary := map[string]bool{}
	for _, n := range g.P.Node {
		if !fwd[n] {
			continue
		}
		for _, in := range n.Input {
			if l, ok := layerOf[in]; ok && l >= 0 && l != moduleLayer(n) {
				boundary[in] = true
			}
		}
	}
	// Values computed from the LoRA parameters (graph inputs) and constants alone — the
	// parameters cast, transposed and scaled — are no activations: the backward pass may read
	// the forward pass's.
	weights := map[string]bool{}
	for _, n := range g.P.Node {
		if !fwd[n] {
			continue
		}
		only := true
		for _, in := range n.Input {
			only = only && (in == "" || weights[in] || g.Initializer(in) != nil || strings.Contains(in, ".lora_") && g.Producer(in) == nil)
		}
		for _, o := range n.Output {
			weights[o] = only
		}
	}
	clones := map[int]int{}
	kinds := map[int]map[string]bool{}
	var bad []string
	for _, n := range g.P.Node {
		if fwd[n] {
			continue
		}
		if strings.HasPrefix(n.Name, "recompute/") {
			// A recomputed 4-bit Linear dequantizes its weight again: reading the forward
			// pass's dequantized weight would keep it alive until the backward pass.
			for _, in := range n.Input {
				if p := dqRoot(g, in); p != nil && fwd[p] {
					bad = append(bad, fmt.Sprintf("clone %s %q reads the forward dequantized weight %s (%q)", n.OpType, n.Name, in, p.Name))
				}
			}
			if o := byName[strings.TrimPrefix(n.Name, "recompute/")]; o != nil && moduleLayer(o) >= 0 {
				l := moduleLayer(o)
				clones[l]++
				if kinds[l] == nil {
					kinds[l] = map[string]bool{}
				}
				kinds[l][o.OpType] = true
			}
			continue
		}
		for _, in := range n.Input {
			if l, ok := layerOf[in]; ok && l >= 0 && !boundary[in] && !outputs[in] && !weights[in] {
				bad = append(bad, fmt.Sprintf("%s %q reads %s (%s %q, layer %d)", n.OpType, n.Name, in, g.Producer(in).OpType, g.Producer(in).Name, l))
			}
		}
	}
	if len(layers) == 0 {
		t.Fatal("no forward node names a decoder layer")
	}
	var ls []int
	for l := range layers {
		ls = append(ls, l)
	}
	sort.Ints(ls)
	for _, l := range ls {
		t.Logf("layer %d: %d forward nodes recomputed", l, clones[l])
		// The norms and the attention's and MLP's Linears are recomputed, not only LoRA.
		for _, op := range []string{"MatMul", "Mul"} {
			if !kinds[l][op] {
				t.Errorf("layer %d: no %s of the layer recomputed", l, op)
			}
		}
	}
	sort.Strings(bad)
	for i, b := range bad {
		if i == 10 {
			t.Errorf("... and %d more", len(bad)-10)
			break
		}
		t.Errorf("backward reads a forward activation of its layer kept from the forward pass: %s", b)
	}
}

// dqRoot returns the DequantizeLinear v is a (reshaped, transposed, sliced or gated:
// Where(c, x, x)) view of, or nil.
func dqRoot(g *ortgraph.Graph, v string) *onnxpb.NodeProto {
	for p := g.Producer(v); p != nil; p = g.Producer(v) {
		switch {
		case p.OpType == "DequantizeLinear":
			return p
		case p.OpType == "Reshape" || p.OpType == "Transpose" || p.OpType == "Slice":
			v = p.Input[0]
		case p.OpType == "Where" && p.Input[1] == p.Input[2]:
			v = p.Input[1]
		default:
			return nil
		}
	}
	return nil
}

// checkClonesWait: every recomputed clone depends on a gradient through a gate (an IsNaN
// among its ancestors), so ONNX Runtime cannot run it in the forward pass and keep its
// output alive until the backward pass (the gate may sit on any input: the layer input is
// read as it is, a norm weight or a weight's scales through the gate).
func checkClonesWait(t *testing.T, g *ortgraph.Graph) {
	t.Helper()
	waits := map[string]bool{}   // values that depend on an IsNaN
	for _, n := range g.P.Node { // topological order
		w := n.OpType == "IsNaN"
		for _, in := range n.Input {
			w = w || waits[in]
		}
		for _, o := range n.Output {
			waits[o] = w
		}
		if strings.HasPrefix(n.Name, "recompute/") && !w {
			t.Errorf("clone %s (%s) depends on no gradient: it could run in the forward pass", n.Name, n.OpType)
			return
		}
	}
}
