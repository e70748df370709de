package export

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/internal/safetensors"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/ortgraph/passes"
	"github.com/ortq/ortq/quantize"
)

// Adapter is a PEFT LoRA adapter checked against the artifacts' manifest: A [r, in] and
// B [out, r] per target module, fp32, and the scale α/r.
type Adapter struct {
	Path  string
	A, B  map[string][]float32 // by module path
	Shape map[string][2][]int64
	Scale float64
	// Modules in the manifest's order.
	Modules []string
}

// Has reports whether the adapter adapts module mod.
func (a *Adapter) Has(mod string) bool { return a != nil && a.A[mod] != nil }

// LoadAdapter reads a PEFT adapter_model.safetensors and checks every tensor the manifest
// lists (name and shape), and, when adapter_config.json sits beside it, its r and α.
func LoadAdapter(path string, man *manifest.Manifest) (*Adapter, error) {
	r, alpha := loraOptions(man)
	if r <= 0 {
		return nil, fmt.Errorf("manifest: no lora_r recorded: rerun `ortq prepare`")
	}
	if err := checkAdapterConfig(filepath.Join(filepath.Dir(path), "adapter_config.json"), man); err != nil {
		return nil, err
	}
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ad := &Adapter{Path: path, A: map[string][]float32{}, B: map[string][]float32{}, Shape: map[string][2][]int64{}, Scale: alpha / float64(r)}
	values, err := man.AdapterValues(path, f) // names, shapes, finiteness, nothing else
	if err != nil {
		return nil, err
	}
	for _, p := range man.Params {
		v := values[p.Name]
		sh := ad.Shape[p.Module]
		if p.Kind == "A" {
			ad.A[p.Module], sh[0] = v, p.Shape
			ad.Modules = append(ad.Modules, p.Module)
		} else {
			ad.B[p.Module], sh[1] = v, p.Shape
		}
		ad.Shape[p.Module] = sh
	}
	return ad, nil
}

// loraOptions reads lora_r and lora_alpha from the manifest's prepare options.
func loraOptions(man *manifest.Manifest) (r int, alpha float64) {
	if o, ok := man.Options.(map[string]any); ok {
		if v, ok := o["lora_r"].(float64); ok {
			r = int(v)
		}
		alpha, _ = o["lora_alpha"].(float64)
	}
	return r, alpha
}

// checkAdapterConfig checks an adapter_config.json beside the adapter as train
// --init-adapter does (manifest.CheckAdapterConfig); a missing file is fine: the
// safetensors alone carry no scale, the manifest's applies.
func checkAdapterConfig(path string, man *manifest.Manifest) error {
	if _, err := os.Lstat(path); os.IsNotExist(err) {
		return nil
	}
	return man.CheckAdapterConfig(path)
}

// inputs returns the graph values holding Aᵀ [in, r] and Bᵀ [r, out] of mod in the graph's
// type: initializers (LoRASeparate), or Transposes of the LoRA inputs A [r, in] and B
// [out, r] under their PEFT names (LoRAInputs, loraTensor).
func (a *Adapter) inputs(b *builder, mod string) (at, bt string) {
	g, sh := b.g, a.Shape[mod]
	r, in, out := sh[0][0], sh[0][1], sh[1][0]
	if b.mode == LoRAInputs {
		at = g.Op("Transpose", []string{b.loraTensor(passes.PEFTName(mod, "A"), sh[0], a.A[mod])}, ortgraph.AInts("perm", 1, 0))
		bt = g.Op("Transpose", []string{b.loraTensor(passes.PEFTName(mod, "B"), sh[1], a.B[mod])}, ortgraph.AInts("perm", 1, 0))
		return at, bt
	}
	at = b.loraTensor(passes.PEFTName(mod, "A")+".T", []int64{in, r}, quantize.Transpose(a.A[mod], int(r), int(in)))
	bt = b.loraTensor(passes.PEFTName(mod, "B")+".T", []int64{r, out}, quantize.Transpose(a.B[mod], int(out), int(r)))
	return at, bt
}

// loraTensor adds a LoRA tensor of values v in the graph's type and returns its name: an
// initializer, or in LoRAInputs mode an optional graph input whose default is zeros (the base
// model) with v recorded for the .onnx_adapter.
func (b *builder) loraTensor(name string, dims []int64, v []float32) string {
	if b.mode != LoRAInputs {
		return b.g.AddInitializer(ortgraph.FloatTensor(name, b.dt, dims, v))
	}
	b.g.P.Input = append(b.g.P.Input, &onnxpb.ValueInfoProto{Name: name, Type: ortgraph.TensorType(b.dt, dims)})
	b.g.AddInitializer(ortgraph.FloatTensor(name, b.dt, dims, make([]float32, len(v))))
	b.params = append(b.params, AdapterParam{Name: name, Dims: append([]int64(nil), dims...), DType: b.dt, Raw: encodeFloats(v, b.dt)})
	return name
}
