package passes

import (
	"testing"

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
		{"stock export: Linear", "node_linear_5", meta(scopes, "['', 'm', 'm.model', 'm.model.layers.12', 'm.model.layers.12.mlp', 'm.model.layers.12.mlp.down_proj', 'linear_5']"), 12},
		{"stock export: module last", "node_x", meta(scopes, "['', 'm', 'm.model', 'm.model.layers.3']"), 3},
		{"stock export: shared", "node_mul_500", meta(scopes, "['', 'm', 'm.model', 'm.model.norm', 'mul_500']"), -1},
		{"namespace only", "node_mul_111", meta(ns, ": common.LogitsOnly/m: LlamaForCausalLM/m.model: LlamaModel/m.model.layers.1: LlamaDecoderLayer/m.model.layers.1.input_layernorm: LlamaRMSNorm/mul_111: aten.mul.Tensor"), 1},
		{"namespace shared", "node_embedding", meta(ns, ": common.LogitsOnly/m: LlamaForCausalLM/m.model: LlamaModel/m.model.embed_tokens: Embedding/embedding: aten.embedding.default"), -1},
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
