package export

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/export/exporttest"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun/ortruntest"
	ort "github.com/yalue/onnxruntime_go"
)

// TestONNXAdapterRoundTrip: `--format onnx-adapter` writes a base graph whose LoRA tensors
// are optional inputs (zeros by default) and adapter.onnx_adapter; ONNX Runtime loads the
// file through its C API (CreateLoraAdapter) and a run with it active
// (RunOptionsAddActiveLoraAdapter) gives the logits of the same graph fed the adapter's
// tensors as inputs, bit for bit, and those of the separate-MatMul export within float
// rounding; a run without it gives the base model's.
func TestONNXAdapterRoundTrip(t *testing.T) {
	ortruntest.Lib(t)
	art := exporttest.Artifacts(t, "default")
	man, err := manifest.ReadManifest(art)
	if err != nil {
		t.Fatal(err)
	}
	adapter, vals := exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 3)
	dir := t.TempDir()
	outs := map[string]string{}
	for _, c := range []struct {
		name string
		o    Options
	}{
		{"onnx-adapter", Options{Adapter: adapter, Format: FormatONNXAdapter}},
		{"separate", Options{Adapter: adapter}},
		{"base", Options{}},
	} {
		c.o.Artifacts, c.o.Out = art, filepath.Join(dir, c.name)
		if _, err := Run(c.o); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		outs[c.name] = filepath.Join(c.o.Out, ModelFile)
	}
	ids := []int64{1, 45, 310, 7, 1022, 88}
	la, err := ort.NewLoraAdapter(filepath.Join(dir, "onnx-adapter", AdapterFile))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Destroy()
	withAdapter := runPrefill(t, outs["onnx-adapter"], man, ids, nil, la)
	fed := runPrefill(t, outs["onnx-adapter"], man, ids, vals, nil)
	without := runPrefill(t, outs["onnx-adapter"], man, ids, nil, nil)
	separate := runPrefill(t, outs["separate"], man, ids, nil, nil)
	base := runPrefill(t, outs["base"], man, ids, nil, nil)
	for _, c := range []struct {
		name      string
		got, want []float32
		tol       float64
	}{
		{"adapter active = tensors fed as inputs", withAdapter, fed, 0},
		{"adapter active ≈ separate MatMuls", withAdapter, separate, 1e-5},
		{"no adapter = base", without, base, 0},
	} {
		d := maxAbsDiff(c.got, c.want)
		t.Logf("%s: max |Δlogit| %.3g", c.name, d)
		if d > c.tol {
			t.Errorf("%s: max |Δlogit| %.3g > %g", c.name, d, c.tol)
		}
	}
	if maxAbsDiff(withAdapter, without) < 1e-3 {
		t.Error("the adapter did not change the logits")
	}
}

// runPrefill runs an exported model once over ids (empty cache) through onnxruntime_go,
// with LoRA tensors fed as inputs (lora) and/or an adapter active, and returns the logits.
func runPrefill(t *testing.T, model string, man *manifest.Manifest, ids []int64, lora map[string][]float32, la *ort.LoraAdapter) []float32 {
	t.Helper()
	n := int64(len(ids))
	names := []string{InputIDs, AttentionMask, PositionIDs}
	var values []ort.Value
	add := func(name string, v ort.Value, err error) {
		if err != nil {
			t.Fatal(err)
		}
		names, values = append(names, name), append(values, v)
	}
	for _, d := range [][]int64{ids, exporttest.Ones(len(ids)), rangeIDs(0, len(ids))} {
		v, err := ort.NewTensor(ort.NewShape(1, n), d)
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, v)
	}
	for i := 0; i < man.Model.Layers; i++ {
		for _, name := range []string{PastKey(i), PastValue(i)} {
			e, err := ort.NewTensor(ort.NewShape(1, 2, 0, 32), []float32{})
			add(name, e, err)
		}
	}
	for name, val := range lora {
		var shape []int64
		for _, q := range man.Params {
			if q.Name == name {
				shape = q.Shape
			}
		}
		e, err := ort.NewTensor(ort.NewShape(shape...), val)
		add(name, e, err)
	}
	defer func() {
		for _, v := range values {
			v.Destroy()
		}
	}()
	sess, err := ort.NewDynamicAdvancedSession(model, names, []string{Logits}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Destroy()
	opts, err := ort.NewRunOptions()
	if err != nil {
		t.Fatal(err)
	}
	defer opts.Destroy()
	if la != nil {
		if err := opts.AddActiveLoraAdapter(la); err != nil {
			t.Fatal(err)
		}
	}
	out := []ort.Value{nil}
	if err := sess.RunWithOptions(values, out, opts); err != nil {
		t.Fatal(err)
	}
	defer out[0].Destroy()
	return append([]float32(nil), out[0].(*ort.Tensor[float32]).GetData()...)
}

// TestReadAdapterFile: ortq reads back what it wrote (names, dims, type, bytes), and a
// damaged file is an error naming it, never a panic.
func TestReadAdapterFile(t *testing.T) {
	dir := t.TempDir()
	ad := &Adapter{Modules: []string{"m"}, A: map[string][]float32{"m": {1, 2, 3, 4, 5, 6}}, B: map[string][]float32{"m": {7, 8, 9, 10}},
		Shape: map[string][2][]int64{"m": {{2, 3}, {2, 2}}}}
	good := filepath.Join(dir, "a.onnx_adapter")
	if err := WriteAdapterFile(good, ad, 1); err != nil {
		t.Fatal(err)
	}
	ps, err := ReadAdapterFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != "base_model.model.m.lora_A.weight" || len(ps[0].Dims) != 2 || ps[0].Dims[1] != 3 || ps[1].DType != 1 || len(ps[1].Raw) != 16 {
		t.Fatalf("read back %+v", ps)
	}
	b, _ := os.ReadFile(good)
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated", b[:len(b)/2]},
		{"identifier", append([]byte{0, 0, 0, 0, 'X', 'X', 'X', 'X'}, b[8:]...)},
		{"root offset out of range", append([]byte{0xff, 0xff, 0xff, 0x7f}, b[4:]...)},
		{"zeroed tail", append(append([]byte(nil), b[:40]...), make([]byte, len(b)-40)...)},
	} {
		p := filepath.Join(dir, c.name)
		os.WriteFile(p, c.data, 0o644)
		if _, err := ReadAdapterFile(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v does not name %s", c.name, err, p)
		}
	}
}

// FuzzReadAdapterFile: any bytes give parameters or an error, never a panic or a hang.
func FuzzReadAdapterFile(f *testing.F) {
	dir := f.TempDir()
	good := filepath.Join(dir, "seed.onnx_adapter")
	ad := &Adapter{Modules: []string{"m"}, A: map[string][]float32{"m": {1, 2}}, B: map[string][]float32{"m": {3, 4}},
		Shape: map[string][2][]int64{"m": {{1, 2}, {2, 1}}}}
	if err := WriteAdapterFile(good, ad, 1); err != nil {
		f.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	f.Add(b)
	f.Add(b[:len(b)-3])
	f.Add([]byte("\x10\x00\x00\x00TORT"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "a.onnx_adapter")
		os.WriteFile(p, data, 0o644)
		ReadAdapterFile(p)
	})
}
