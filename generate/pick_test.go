package generate

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestPickerIsFirstArgmax: the device picker equals the host's first-of-equal-maxima argmax
// on every row, with the maximum planted first, last, in the middle and tied several times
// (within a chunk and across chunks), on rows of all-equal values, of +inf and of NaN, for
// vocabularies that fill their last chunk and ones that do not.
func TestPickerIsFirstArgmax(t *testing.T) {
	ortruntest.Lib(t)
	for _, vocab := range []int{1000, 1024, 7, 128256} {
		const rows, seq = 2, 5
		p, err := openPicker(ortrun.Options{Device: "cpu"}, vocab)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, uint64(vocab)))
		logits := make([]float32, rows*seq*vocab)
		for i := range logits {
			logits[i] = float32(r.NormFloat64())
		}
		row := func(i int) []float32 { return logits[i*vocab : (i+1)*vocab] }
		row(0)[0] = 9
		row(1)[vocab-1] = 9
		row(2)[vocab/2], row(2)[vocab/3], row(2)[vocab-2] = 9, 9, 9
		row(3)[1], row(3)[2] = 9, 9
		for j := range row(5) {
			row(5)[j] = -2
		}
		row(6)[3], row(6)[4] = float32(math.Inf(1)), float32(math.Inf(1))
		for j := range row(9) {
			row(9)[j] = float32(math.NaN())
		}
		out, err := p.Run(map[string]*ortrun.Tensor{pickIn: {DType: ortrun.Float32, Shape: []int64{rows, seq, int64(vocab)}, Data: logits}}, []string{pickOut})
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := out[pickOut].Data.([]int64)
		for i := range rows * seq {
			if want := int64(argmax(row(i))); got[i] != want {
				t.Errorf("vocab %d row %d: picker %d, first argmax %d", vocab, i, got[i], want)
			}
		}
	}
}
