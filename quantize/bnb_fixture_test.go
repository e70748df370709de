package quantize

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
)

// bnbRecord is one configuration of testdata/bnb4.json (testdata/gen/bnb4_fixture.py).
type bnbRecord struct {
	Packed     string    `json:"packed"`
	Absmax     []float32 `json:"absmax"`
	Codes      string    `json:"codes"`
	Scales     []float32 `json:"scales"`
	Offset     float32   `json:"offset"`
	DynamicMap []float32 `json:"dynamic_map"`
}

// TestAgainstBitsandbytes compares QuantizeBnb4 with bitsandbytes' quantize_4bit on the same
// weight (fixture made by bitsandbytes itself): the packed bytes and the absmax values must
// be equal; double-quantized, DynamicMap must equal bitsandbytes' map within two float32 ulps
// and the dequantized absmax values agree within one step of the map (the mean and exact
// ties may differ, see doc.go). Skipped, saying so, while the fixture is absent
// (bitsandbytes was not installed where fixtures are generated).
func TestAgainstBitsandbytes(t *testing.T) {
	raw, err := os.ReadFile("testdata/bnb4.json")
	if os.IsNotExist(err) {
		t.Skip("testdata/bnb4.json absent: generate it with testdata/gen/bnb4_fixture.py where bitsandbytes is installed")
	}
	if err != nil {
		t.Fatal(err)
	}
	var fx map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	const n, k = 8, 64
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(math.Sin(float64(i)*0.37) * 0.05 * float64(1+i%7))
	}
	for _, typ := range []Type{NF4, FP4} {
		for _, dq := range []bool{false, true} {
			key := fmt.Sprintf("%s/double=%v", typ, dq)
			var rec bnbRecord
			if err := json.Unmarshal(fx[key], &rec); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			p, err := QuantizeBnb4(w, n, k, Options{Type: typ, BlockSize: 64, DoubleQuant: dq})
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(p.Data); got != rec.Packed {
				t.Errorf("%s: packed bytes differ from bitsandbytes'\nortq %s\nbnb  %s", key, got, rec.Packed)
			}
			if !dq {
				for i, a := range rec.Absmax {
					if p.Absmax[i] != a {
						t.Errorf("%s: absmax[%d] = %v, bitsandbytes %v", key, i, p.Absmax[i], a)
					}
				}
				continue
			}
			checkNested(t, key, p.Nested, rec)
		}
	}
}

func checkNested(t *testing.T, key string, nq *NestedAbsmax, rec bnbRecord) {
	t.Helper()
	m := DynamicMap()
	for i, v := range rec.DynamicMap {
		if d := math.Abs(float64(m[i] - v)); d > math.Abs(float64(v))*2.4e-7 { // two float32 ulps
			t.Errorf("%s: DynamicMap[%d] = %v, bitsandbytes %v", key, i, m[i], v)
		}
	}
	codes, err := hex.DecodeString(rec.Codes)
	if err != nil {
		t.Fatal(err)
	}
	got := nq.Dequantize()
	for i := range got {
		want := m[codes[i]]*rec.Scales[i/NestedBlockSize] + rec.Offset
		if d := math.Abs(float64(got[i] - want)); d > 0.01*math.Abs(float64(want)) {
			t.Errorf("%s: absmax[%d] = %v, bitsandbytes' %v", key, i, got[i], want)
		}
	}
}
