package hfimport_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/hfimport"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/autodiff"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/quantize"
	"github.com/ortq/ortq/train"
	"google.golang.org/protobuf/proto"
)

// TestQuantize: `synth --quantize` and `import --quantize` write the 4-bit packing prepare
// would make from the full-precision graph of the same weights, so the two prepared
// artifacts train identically — same loss, same gradients, bit for bit — while the
// quantized model's data file holds no full-precision Linear. prepare takes the MatMulNBits
// as they are, refuses --bits 16 on them, and refuses a MatMulNBits of another width.
func TestQuantize(t *testing.T) {
	ortruntest.Lib(t)
	for _, src := range []string{"synth", "import"} {
		for _, q := range []quantize.Options{{BlockSize: 32}, {BlockSize: 64, Asymmetric: true}} {
			t.Run(fmt.Sprintf("%s/block%d-asym%v", src, q.BlockSize, q.Asymmetric), func(t *testing.T) {
				testQuantize(t, q, func(name string, quant bool) *hfimport.Result {
					c := hfimport.Common{Out: filepath.Join(t.TempDir(), name), Workers: 2, Quantize: quant, BlockSize: q.BlockSize, Asymmetric: q.Asymmetric}
					var res *hfimport.Result
					var err error
					if src == "synth" {
						res, err = hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 11, Common: c})
					} else {
						// llama32: GQA, tied embeddings (lm_head stays full precision), llama3 rope.
						res, err = hfimport.Import(hfimport.ImportOptions{HF: filepath.Join(hfData, "llama32"), Common: c})
					}
					if err != nil {
						t.Fatal(err)
					}
					return res
				})
			})
		}
	}
}

func testQuantize(t *testing.T, q quantize.Options, synth func(name string, quant bool) *hfimport.Result) {
	dir := t.TempDir()
	full, q4 := synth("full", false), synth("q4", true)
	size := func(r *hfimport.Result) int64 {
		st, err := os.Stat(filepath.Join(r.Dir, hfimport.DataFile))
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	t.Logf("data file: full precision %d bytes, --quantize %d bytes", size(full), size(q4))
	if size(q4) >= size(full) {
		t.Errorf("--quantize data file is %d bytes, full precision %d", size(q4), size(full))
	}
	m, err := ortgraph.Load(q4.Model)
	if err != nil {
		t.Fatal(err)
	}
	for _, init := range m.P.Graph.Initializer {
		if strings.HasSuffix(init.Name, "_proj.weight") {
			t.Errorf("--quantize kept the full-precision Linear weight %q", init.Name)
		}
	}
	nbits := 0
	for _, n := range m.P.Graph.Node {
		if n.OpType == "MatMulNBits" {
			nbits++
		}
	}
	if want := 7 * full.Config.NumLayers; nbits != want {
		t.Errorf("%d MatMulNBits nodes, want %d (7 per layer)", nbits, want)
	}

	prep := func(r *hfimport.Result, bits int) (*prepare.Result, string, error) {
		o := prepare.DefaultOptions()
		o.Model, o.Out, o.Bits, o.Dropout = r.Model, filepath.Join(dir, filepath.Base(r.Dir)+"-art"), bits, 0
		o.BlockSize, o.Asymmetric = q.BlockSize, q.Asymmetric
		res, err := prepare.Run(o, t.Logf)
		return res, o.Out, err
	}
	if _, _, err := prep(q4, 16); err == nil || !strings.Contains(err.Error(), "already 4-bit") {
		t.Errorf("prepare --bits 16 of a 4-bit graph: err = %v, want a refusal naming the MatMulNBits node", err)
	}
	// Options that contradict the packing are refused, naming the flag to pass.
	q.BlockSize *= 2
	if _, _, err := prep(q4, 4); err == nil || !strings.Contains(err.Error(), "--block-size") {
		t.Errorf("prepare with another --block-size: err = %v, want a refusal naming --block-size", err)
	}
	q.BlockSize /= 2
	q.Asymmetric = !q.Asymmetric
	if _, _, err := prep(q4, 4); err == nil || !strings.Contains(err.Error(), "asymmetric") {
		t.Errorf("prepare with the other --asymmetric: err = %v, want a refusal naming --asymmetric", err)
	}
	q.Asymmetric = !q.Asymmetric
	resF, artF, err := prep(full, 4)
	if err != nil {
		t.Fatal(err)
	}
	resQ, artQ, err := prep(q4, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(resQ.Manifest.Quant) != len(resF.Manifest.Quant) || len(resQ.Manifest.Quant) == 0 {
		t.Fatalf("quantized Linears: %d from --quantize, %d from prepare", len(resQ.Manifest.Quant), len(resF.Manifest.Quant))
	}
	for _, q := range resQ.Manifest.Quant {
		if !q.Prequantized {
			t.Errorf("%s: not marked prequantized", q.Module)
		}
	}
	if resQ.Manifest.Counts != resF.Manifest.Counts {
		t.Errorf("parameter counts %+v, from the full-precision source %+v", resQ.Manifest.Counts, resF.Manifest.Counts)
	}

	// A MatMulNBits of another width is refused, naming the node.
	bad := synth("q4-bits8", true)
	mb, err := ortgraph.Load(bad.Model)
	if err != nil {
		t.Fatal(err)
	}
	var victim string
	for _, n := range mb.P.Graph.Node {
		if n.OpType == "MatMulNBits" {
			for _, a := range n.Attribute {
				if a.Name == "bits" {
					a.I, victim = 8, n.Name
				}
			}
			break
		}
	}
	buf, err := proto.Marshal(mb.P)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad.Model, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := prep(bad, 4); err == nil || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), "bits=8") {
		t.Errorf("prepare of a bits=8 MatMulNBits: err = %v, want a refusal naming %q", err, victim)
	}

	// Same batch, same non-zero LoRA values on both.
	rng := rand.New(rand.NewPCG(3, 4))
	rows, seq := 2, 12
	ids := make([]int64, rows*seq)
	mask := make([]int64, rows*seq)
	for i := range ids {
		ids[i], mask[i] = rng.Int64N(resF.Manifest.Model.Vocab-1)+1, 1
	}
	batch := data.Batch{Rows: rows, SeqLen: seq, InputIDs: ids, AttentionMask: mask, Labels: ids, Tokens: rows*seq - rows}
	params := map[string][]float32{}
	for _, p := range resF.Manifest.Params {
		v := make([]float32, p.Shape[0]*p.Shape[1])
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.05)
		}
		params[p.Name] = v
	}
	step := func(art string) *train.StepResult {
		eng, err := train.OpenEngine(art, ortrun.Options{IntraOpThreads: 1}, true)
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		r, err := eng.Step(batch, params, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := step(artF), step(artQ)
	if a.LossSum != b.LossSum {
		t.Errorf("loss sum %v from --quantize, %v from prepare's quantization", b.LossSum, a.LossSum)
	}
	diff := 0
	for name, g := range a.Grads {
		for i := range g {
			if g[i] != b.Grads[name][i] {
				diff++
			}
		}
	}
	t.Logf("loss sum %.6f vs %.6f; %d gradient values differ", a.LossSum, b.LossSum, diff)
	if diff > 0 {
		t.Errorf("%d gradient values differ between --quantize and prepare's quantization", diff)
	}
}

// TestQuantizeBnb4: `synth --quantize --quant nf4` and `import --quantize --quant fp4` write
// MatMulBnb4 Linears with the bytes and absmax values prepare --quant makes from the
// full-precision graph of the same weights (so the prepared artifacts train identically),
// and prepare takes them as they are; a contradicting --quant is refused naming the flag.
func TestQuantizeBnb4(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		src string
		q   quantize.Options
	}{
		{"synth", quantize.Options{Type: quantize.NF4, BlockSize: 64}},
		{"synth", quantize.Options{Type: quantize.NF4, BlockSize: 16, DoubleQuant: true}},
		{"import", quantize.Options{Type: quantize.FP4, BlockSize: 32, DoubleQuant: true}},
	} {
		t.Run(fmt.Sprintf("%s/%s/double=%v", c.src, c.q.Type, c.q.DoubleQuant), func(t *testing.T) {
			dir := t.TempDir()
			gen := func(name string, quant bool) *hfimport.Result {
				co := hfimport.Common{Out: filepath.Join(dir, name), Workers: 2, Quantize: quant, BlockSize: c.q.BlockSize, Quant: string(c.q.Type),
					DoubleQuant: c.q.DoubleQuant}
				var res *hfimport.Result
				var err error
				if c.src == "synth" {
					res, err = hfimport.Synth(hfimport.SynthOptions{Preset: "tiny", Seed: 11, Common: co})
				} else {
					res, err = hfimport.Import(hfimport.ImportOptions{HF: filepath.Join(hfData, "llama32"), Common: co})
				}
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			prep := func(r *hfimport.Result, q quantize.Options) (*prepare.Result, string, error) {
				o := prepare.DefaultOptions()
				o.Model, o.Out, o.Dropout = r.Model, filepath.Join(dir, filepath.Base(r.Dir)+"-art-"+string(q.Type)), 0
				o.BlockSize, o.Quant, o.DoubleQuant = q.BlockSize, string(q.Type), q.DoubleQuant
				res, err := prepare.Run(o, t.Logf)
				return res, o.Out, err
			}
			full, q4 := gen("full", false), gen("q4", true)
			if _, _, err := prep(q4, quantize.Options{BlockSize: c.q.BlockSize}); err == nil || !strings.Contains(err.Error(), "--quant "+string(c.q.Type)) {
				t.Errorf("prepare --quant int4 of a %s graph: err = %v, want a refusal naming --quant", c.q.Type, err)
			}
			resF, artF, err := prep(full, c.q)
			if err != nil {
				t.Fatal(err)
			}
			resQ, artQ, err := prep(q4, c.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(resQ.Manifest.Quant) != len(resF.Manifest.Quant) || len(resQ.Manifest.Quant) != 7*full.Config.NumLayers {
				t.Fatalf("quantized Linears: %d from --quantize, %d from prepare", len(resQ.Manifest.Quant), len(resF.Manifest.Quant))
			}
			evalF, err := ortgraph.Load(filepath.Join(artF, "eval.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			evalQ, err := ortgraph.Load(filepath.Join(artQ, "eval.onnx"))
			if err != nil {
				t.Fatal(err)
			}
			gF, gQ := ortgraph.NewGraph(evalF), ortgraph.NewGraph(evalQ)
			for i, qf := range resF.Manifest.Quant {
				qq := resQ.Manifest.Quant[i]
				pairs := [][2]string{{qf.Weights, qq.Weights}, {qf.Scales, qq.Scales}}
				if c.q.DoubleQuant {
					pairs = append(pairs, nestedPairs(t, gF, gQ, qf.Weights, qq.Weights)...)
				}
				for _, pair := range pairs {
					a, errA := evalF.TensorBytes(gF.Initializer(pair[0]))
					b, errB := evalQ.TensorBytes(gQ.Initializer(pair[1]))
					if errA != nil || errB != nil || !bytes.Equal(a, b) {
						t.Errorf("%s: %s (prepare) and %s (--quantize) differ (%v, %v)", qf.Module, pair[0], pair[1], errA, errB)
					}
				}
			}
		})
	}
}

// nestedPairs pairs the double-quantized absmax initializers (codes, scales, offset) of the
// MatMulBnb4 nodes reading weights wf in gf and wq in gq.
func nestedPairs(t *testing.T, gf, gq *ortgraph.Graph, wf, wq string) [][2]string {
	t.Helper()
	nested := func(g *ortgraph.Graph, w string) []string {
		for _, n := range g.Consumers()[w] {
			if c, s, o, ok := autodiff.Bnb4Nested(n); ok {
				return []string{c, s, o}
			}
		}
		t.Fatalf("no double-quantized MatMulBnb4 reads %s", w)
		return nil
	}
	f, q := nested(gf, wf), nested(gq, wq)
	return [][2]string{{f[0], q[0]}, {f[1], q[1]}, {f[2], q[2]}}
}
