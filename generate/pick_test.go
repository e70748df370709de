package generate

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestPickerIsFirstArgmax: the device picker equals the host's first-of-equal-maxima argmax
// on every row, with the maximum planted first, last, in the middle and tied several times,
// on rows of all-equal values, and gives a valid id (vocab-1) for a row of NaN.
func TestPickerIsFirstArgmax(t *testing.T) {
	ortruntest.Lib(t)
	const rows, seq, vocab = 2, 5, 1000
	p, err := openPicker(ortrun.Options{Device: "cpu"}, vocab)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, rows*seq*vocab)
	for i := range logits {
		logits[i] = float32(r.NormFloat64())
	}
	row := func(i int) []float32 { return logits[i*vocab : (i+1)*vocab] }
	row(0)[0] = 9
	row(1)[vocab-1] = 9
	row(2)[500], row(2)[17], row(2)[900] = 9, 9, 9
	for j := range row(3) {
		row(3)[j] = -2
	}
	row(4)[3], row(4)[4] = float32(math.Inf(1)), float32(math.Inf(1))
	for j := range row(9) {
		row(9)[j] = float32(math.NaN())
	}
	out, err := p.Run(map[string]*ortrun.Tensor{pickIn: {DType: ortrun.Float32, Shape: []int64{rows, seq, vocab}, Data: logits}}, []string{pickOut})
	if err != nil {
		t.Fatal(err)
	}
	got := out[pickOut].Data.([]int64)
	for i := range rows * seq {
		want := int64(argmax(row(i)))
		if i == 9 {
			want = vocab - 1
		}
		if got[i] != want {
			t.Errorf("row %d: picker %d, first argmax %d", i, got[i], want)
		}
	}
}
