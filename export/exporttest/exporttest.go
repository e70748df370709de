// Package exporttest holds test helpers shared by the export and generate tests: prepared
// artifacts of the default model and of the llama32 checkpoint fixture (once per test
// binary), random PEFT adapters, and the eval graph's logits, the reference every exported
// model is checked against. It lives apart from export so that the ortq binary does not link
// package testing.
package exporttest

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/internal/defaultmodel"
	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"google.golang.org/protobuf/proto"
)

// RepoRoot is the repository's root directory (found from this file's path).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Llama32 is the llama32 checkpoint fixture's directory (a 2-layer Llama-3.2-style model:
// GQA, tied embeddings, llama3 rotary scaling; vocabulary 128).
func Llama32() string { return filepath.Join(RepoRoot(), "hfimport", "testdata", "hf", "llama32") }

// fixture is prepared artifacts shared by the tests of one model.
type fixture struct {
	once sync.Once
	art  string
	err  error
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[string]*fixture{}
)

// Artifacts prepares (once per test binary) into a temporary directory: "default", the
// embedded default model ("default-nf4": with an NF4 base, block 64; "default-nf4-dq": also
// double-quantized); "llama32", the llama32 checkpoint fixture imported 4-bit with
// LoRA on every Linear kind; "VARIANT-fp32", a checkpoint of hfimport/testdata/hf (llama32,
// llama2, ...) with its float32 weights as they are (--bits 16), which Hugging Face
// references compare against; "-fp16" imports the checkpoint as float16 (then "-fp32" is
// not given: the weights are 4-bit, activations float16); a "-chunked" suffix prepares with
// --loss-chunks 4, "-fused" imports with the opset-23 ops (RMSNormalization, RotaryEmbedding,
// Attention). Suffixes go in that order: llama32-fp32-fused.
func Artifacts(t testing.TB, name string) string {
	t.Helper()
	fixturesMu.Lock()
	f := fixtures[name]
	if f == nil {
		f = &fixture{}
		fixtures[name] = f
	}
	fixturesMu.Unlock()
	f.once.Do(func() {
		dir, err := os.MkdirTemp("", "ortq-export-test-")
		if err != nil {
			f.err = err
			return
		}
		o := prepare.DefaultOptions()
		o.Out = filepath.Join(dir, "art")
		switch name {
		case "default":
			o.Model, _, f.err = defaultmodel.Extract(filepath.Join(dir, "model"))
		case "default-nf4", "default-nf4-dq":
			o.Model, _, f.err = defaultmodel.Extract(filepath.Join(dir, "model"))
			o.Quant, o.BlockSize, o.DoubleQuant = "nf4", 64, name == "default-nf4-dq"
		default:
			variant, fused := strings.CutSuffix(name, "-fused")
			ops := map[bool]string{false: "decomposed", true: "fused"}[fused]
			variant, chunked := strings.CutSuffix(variant, "-chunked")
			if chunked {
				o.LossChunks = 4
			}
			variant, fp16 := strings.CutSuffix(variant, "-fp16")
			dtype := map[bool]string{false: "float32", true: "float16"}[fp16]
			variant, fp32 := strings.CutSuffix(variant, "-fp32")
			ck := filepath.Join(RepoRoot(), "hfimport", "testdata", "hf", variant)
			if fp32 {
				o.Bits = 16
			}
			var res *hfimport.Result
			res, f.err = hfimport.Import(hfimport.ImportOptions{HF: ck, Common: hfimport.Common{Out: filepath.Join(dir, "onnx"), DType: dtype,
				Quantize: !fp32, BlockSize: 32, Ops: ops}})
			if f.err == nil {
				o.Model, o.BaseModel = res.Model, ck
				o.Targets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
			}
		}
		if f.err == nil {
			_, f.err = prepare.Run(o, nil)
		}
		f.art = o.Out
	})
	if f.err != nil {
		t.Fatalf("preparing %s: %v", name, f.err)
	}
	return f.art
}

// Cleanup removes the prepared fixtures (call it from TestMain after m.Run).
func Cleanup() {
	for _, f := range fixtures {
		if f.art != "" {
			os.RemoveAll(filepath.Dir(f.art))
		}
	}
}

// RandomAdapter writes a PEFT adapter with nonzero A and B (small values, so logits move by
// about as much as training moves them) for the artifacts' LoRA tensors.
func RandomAdapter(t testing.TB, man *manifest.Manifest, dir string, seed uint64) (string, map[string][]float32) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	var ts []safetensors.Tensor
	vals := map[string][]float32{}
	for _, p := range man.Params {
		v := make([]float32, p.Shape[0]*p.Shape[1])
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.05)
		}
		vals[p.Name] = v
		ts = append(ts, safetensors.F32Tensor(p.Name, p.Shape, v))
	}
	os.MkdirAll(dir, 0o755)
	path := filepath.Join(dir, "adapter_model.safetensors")
	if err := safetensors.Write(path, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return path, vals
}

// EvalLogits runs the artifacts' eval graph (the full sequence at once, as training sees it)
// with the LoRA values lora (zeros when nil) and returns its logits [seq, vocab]: the
// reference the exported cache graph must reproduce. The graph's "logits" value is made an
// output of a copy written beside eval.onnx, so it reads the same weights.bin.
func EvalLogits(t testing.TB, art string, man *manifest.Manifest, ids []int64, lora map[string][]float32) []float32 {
	t.Helper()
	m, err := ortgraph.Load(filepath.Join(art, man.Eval.File))
	if err != nil {
		t.Fatal(err)
	}
	g := ortgraph.NewGraph(m)
	if g.Producer("logits") == nil {
		t.Fatal("eval graph has no value named logits")
	}
	g.P.Output = append(g.P.Output, &onnxpb.ValueInfoProto{Name: "logits", Type: ortgraph.SymTensorType(ortgraph.Float, []string{"batch", "seq", "vocab"})})
	b, err := proto.Marshal(m.P)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(art, "eval_logits.onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(path)
	sess, err := ortrun.NewSession(path, ortrun.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	n := int64(len(ids))
	in := map[string]*ortrun.Tensor{
		"input_ids":      {DType: ortrun.Int64, Shape: []int64{1, n}, Data: ids},
		"attention_mask": {DType: ortrun.Int64, Shape: []int64{1, n}, Data: Ones(len(ids))},
		"labels":         {DType: ortrun.Int64, Shape: []int64{1, n}, Data: append([]int64(nil), ids...)},
	}
	if man.DocumentIDs() { // the graph reads positions (passes.DocMask): 0..n-1 for one document
		pos := make([]int64, n)
		for i := range pos {
			pos[i] = int64(i)
		}
		in["position_ids"] = &ortrun.Tensor{DType: ortrun.Int64, Shape: []int64{1, n}, Data: pos}
	}
	for _, p := range man.Params {
		v := lora[p.Name]
		if v == nil {
			v = make([]float32, p.Shape[0]*p.Shape[1])
		}
		in[p.Name] = &ortrun.Tensor{DType: ortrun.Float32, Shape: p.Shape, Data: v}
	}
	out, err := sess.Run(in, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	return out["logits"].Data.([]float32)
}

func Ones(n int) []int64 {
	v := make([]int64, n)
	for i := range v {
		v[i] = 1
	}
	return v
}
