package prepare_test

import (
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
)

// TestAttentionForwardEqualsUnfused: with --attention-forward (the default) the recomputing
// device steps compute each attention whose internals the backward pass does not read as one
// MultiHeadAttention node (--attention-kernel mha, the default) or one opset-23 Attention
// node, and give the decomposed graphs' (--attention-forward=false) loss, gradient norm and
// LoRA weights after one AdamW step (float32, CPU; grouped-query attention, document-id
// mask, dropout on); the eval graph stays decomposed either way (export reads it). So do
// the graphs with --fuse-residual-norm.
func TestAttentionForwardEqualsUnfused(t *testing.T) {
	ortruntest.Lib(t)
	dir, model, b := tinyStepFixture(t, 9)
	art := map[string]string{}
	for _, kernel := range []string{"", "attention", "mha"} {
		o := prepare.DefaultOptions()
		o.Model, o.Out = model, filepath.Join(dir, "plain"+kernel)
		o.AttentionForward, o.AttentionKernel, o.FuseResidualNorm = kernel != "", kernel, false
		if _, err := prepare.Run(o, nil); err != nil {
			t.Fatal(err)
		}
		art[kernel] = o.Out
	}
	for kernel, op := range map[string]string{"attention": "Attention", "mha": "MultiHeadAttention"} {
		if n := countOps(t, filepath.Join(art[kernel], "eval.onnx")); n["MultiHeadAttention"]+n["Attention"] != 0 {
			t.Errorf("--attention-kernel %s: the eval graph has fused attention nodes %v", kernel, n)
		}
		if n := countOps(t, filepath.Join(art[kernel], "train_step.onnx")); n[op] == 0 {
			t.Errorf("--attention-kernel %s: no %s node in train_step.onnx", kernel, op)
		}
		for _, policy := range []string{manifest.RecomputeLayer, manifest.RecomputeSelective} {
			sameStep(t, policy, "with "+kernel+" nodes", "without", art[kernel], art[""], policy, b)
		}
	}
	// --fuse-residual-norm: the first forward's residual Adds and RMSNorms as one node each.
	o := prepare.DefaultOptions()
	o.Model, o.Out, o.FuseResidualNorm = model, filepath.Join(dir, "residual"), true
	if _, err := prepare.Run(o, nil); err != nil {
		t.Fatal(err)
	}
	if n := countOps(t, filepath.Join(o.Out, "train_step.onnx")); n["SkipSimplifiedLayerNormalization"] == 0 {
		t.Errorf("--fuse-residual-norm: no SkipSimplifiedLayerNormalization node in train_step.onnx")
	}
	for _, policy := range []string{manifest.RecomputeLayer, manifest.RecomputeSelective} {
		sameStep(t, policy, "with fused residual norms", "without", o.Out, art["mha"], policy, b)
	}
}

// countOps counts the nodes of an ONNX file by op type.
func countOps(t *testing.T, path string) map[string]int {
	n := map[string]int{}
	for _, node := range graphNodes(t, path) {
		n[node.OpType]++
	}
	return n
}
