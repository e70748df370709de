package generate

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/export/exporttest"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestResidentMatchesHost: the device-resident cache (what CUDA uses; here the CPU's
// memory through the same Buffer/Binding calls) gives the host cache's logits for a prefill
// and cached steps, and the same greedy ids, for a float32 and a float16 model and for an
// onnx-adapter export with its adapter applied.
func TestResidentMatchesHost(t *testing.T) {
	ortruntest.Lib(t)
	for _, c := range []struct {
		fixture string
		format  string
	}{{"default", ""}, {"llama32-fp16", ""}, {"llama32", export.FormatONNXAdapter}} {
		art := exporttest.Artifacts(t, c.fixture)
		man, err := manifest.ReadManifest(art)
		if err != nil {
			t.Fatal(err)
		}
		ad, _ := exporttest.RandomAdapter(t, man, filepath.Join(t.TempDir(), "run"), 6)
		out := filepath.Join(t.TempDir(), "export")
		if _, err := export.Run(export.Options{Artifacts: art, Adapter: ad, Format: c.format, Out: out}); err != nil {
			t.Fatal(err)
		}
		var logits [2][]float32
		var ids [2][]int64
		for i, resident := range []bool{false, true} {
			m, err := OpenWith(out, ortrun.Options{IntraOpThreads: 1}, resident)
			if err != nil {
				t.Fatal(err)
			}
			if c.format != "" {
				if err := m.UseAdapter(filepath.Join(out, export.AdapterFile)); err != nil {
					t.Fatal(err)
				}
			}
			st := m.NewState()
			for _, piece := range [][]int64{{1, 17, 99}, {4}, {60}, {33}} {
				l, err := m.Forward(st, piece)
				if err != nil {
					t.Fatalf("%s resident=%v: %v", c.fixture, resident, err)
				}
				logits[i] = append(logits[i], l...)
			}
			st.Close()
			s, _ := NewSampler(0, 0, 1, 0)
			if ids[i], _, err = m.Generate([]int64{1, 17, 99}, Options{MaxNewTokens: 10, Sampler: s}); err != nil {
				t.Fatal(err)
			}
			m.Close()
		}
		d, scale := 0.0, 1.0
		for j := range logits[0] {
			d = math.Max(d, math.Abs(float64(logits[0][j]-logits[1][j])))
			scale = math.Max(scale, math.Abs(float64(logits[0][j])))
		}
		t.Logf("%s %s: resident vs host max |Δlogit| %.3g (max |logit| %.3g)", c.fixture, c.format, d, scale)
		if d > 1e-5*scale || len(logits[0]) != len(logits[1]) {
			t.Errorf("%s: resident vs host max |Δlogit| %.3g", c.fixture, d)
		}
		for j := range ids[0] {
			if ids[0][j] != ids[1][j] {
				t.Errorf("%s: greedy ids host %v, resident %v", c.fixture, ids[0], ids[1])
				break
			}
		}
	}
}
