package prepare_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortgraph"
)

// TestWeightsStoredOnce: every graph of an artifacts directory reads its weights from one
// weights.bin, and each 4-bit weight and its scales are stored once — MatMulNBits' uint8 B
// and [N, Blocks] scales (evaluation graph) and DequantizeLinear's UINT4 [N·Blocks,
// BlockSize] view and 1-D scale view (training graphs) point at the same bytes — and held
// once per graph: no training graph holds both a tensor and its view.
func TestWeightsStoredOnce(t *testing.T) {
	c := refCases(t)[0]
	dir := prepareFor(t, filepath.Join(fixtures, c.variant, "model.onnx"), c.targets, 4)
	type ref struct{ loc, off, length string }
	refs := map[string]ref{}
	var total int64
	isView := func(name string) (base string, ok bool) {
		switch {
		case strings.HasSuffix(name, "_zp_uint4"): // repacked zero points: bytes of their own
			return "", false
		case strings.HasSuffix(name, "_uint4"):
			return strings.TrimSuffix(name, "_uint4"), true
		case strings.HasSuffix(name, "_1d"):
			return strings.TrimSuffix(name, "_1d"), true
		}
		return "", false
	}
	scaleViews := 0
	for _, f := range []string{manifest.TrainFile, manifest.TrainRecomputeFile, manifest.EvalFile} {
		m, err := ortgraph.Load(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		inits := map[string]bool{}
		for _, init := range m.P.Graph.Initializer {
			inits[init.Name] = true
		}
		for name := range inits {
			if base, ok := isView(name); ok {
				if inits[base] {
					t.Errorf("%s holds %s and its view %s: two copies of the same bytes in one session", f, base, name)
				}
				if strings.HasSuffix(name, "_1d") {
					scaleViews++
				}
			}
		}
		for _, init := range m.P.Graph.Initializer {
			if len(init.ExternalData) == 0 {
				continue
			}
			var r ref
			for _, kv := range init.ExternalData {
				switch kv.Key {
				case "location":
					r.loc = kv.Value
				case "offset":
					r.off = kv.Value
				case "length":
					r.length = kv.Value
				}
			}
			if r.loc != manifest.WeightsFile {
				t.Errorf("%s: %s reads %q, not %s", f, init.Name, r.loc, manifest.WeightsFile)
			}
			if prev, ok := refs[init.Name]; ok && prev != r {
				t.Errorf("%s is stored twice: %v and %v", init.Name, prev, r)
			}
			refs[init.Name] = r
		}
	}
	shared := 0
	for name, r := range refs {
		if b, ok := isView(name); ok {
			base, stored := refs[b]
			if !stored || base != r {
				t.Errorf("%s and its view %s are stored apart: %v vs %v", b, name, base, r)
			}
			shared++
		}
	}
	if shared == 0 || scaleViews == 0 {
		t.Fatalf("%d external views, %d scale views found: the training graph should dequantize the stored 4-bit bytes with 1-D scales", shared, scaleViews)
	}
	st, err := os.Stat(filepath.Join(dir, manifest.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	total = st.Size()
	t.Logf("%d external initializers, %d weights and scales shared by MatMulNBits and DequantizeLinear, weights.bin %d bytes", len(refs), shared, total)
}
