package quantize

import (
	"fmt"
	"github.com/ortq/ortq/internal/half"
	"math"
	"runtime"
	"sync"
)

// Packed is a block-quantized weight [N, K]; see the package comment for the layouts.
type Packed struct {
	N, K      int // logical weight shape [N, K] (torch Linear [out, in])
	BlockSize int // elements per block along K
	Blocks    int // ceil(K / BlockSize)
	// Data is MatMulNBits' B, uint8 [N, Blocks, BlockSize/2], low nibble = even K index; the
	// same bytes are an ONNX UINT4 tensor [N, Blocks·BlockSize] or [N·Blocks, BlockSize] (one
	// row per block, the training graphs' per-axis view). Padding codes dequantize to 0.
	Data []byte
	// Scales is [N, Blocks]. Symmetric scales may be negative (see the package comment).
	Scales []float32
	// ZeroPoints is MatMulNBits' packed zero_points, uint8 [N, ceil(Blocks/2)], low nibble
	// first, each row padded to whole bytes; nil when symmetric (implicit zero point 8).
	ZeroPoints []byte
}

// symMethod is how a symmetric block's scale is chosen.
type symMethod int

const (
	// symSignedMax is ONNX Runtime's choice: scale = v/−8 for the value v of largest
	// magnitude, so v is code 0 exactly and all 16 codes are used.
	symSignedMax symMethod = iota
	// symAbsMax7 is scale = absmax/7: codes 1..15, positive scales.
	symAbsMax7
)

// defaultSymMethod won on RMS error (TestSymmetricScaleChoice).
const defaultSymMethod = symSignedMax

// parallelMinElems is the matrix size below which Quantize stays on one goroutine: spawning
// costs more than it saves for the small matrices of tests and tiny models.
const parallelMinElems = 1 << 16

// Quantize block-quantizes the row-major weight w [n, k] along k.
// It returns an error (naming the problem) for a bad shape, bad options or a non-finite weight.
func Quantize(w []float32, n, k int, opt Options) (*Packed, error) {
	return quantize(w, n, k, opt, defaultSymMethod)
}

func quantize(w []float32, n, k int, opt Options, method symMethod) (*Packed, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	opt = opt.withDefaults()
	if n <= 0 || k <= 0 {
		return nil, fmt.Errorf("quantize: weight shape [%d, %d]: both dimensions must be positive", n, k)
	}
	if len(w) != n*k {
		return nil, fmt.Errorf("quantize: weight has %d elements, shape [%d, %d] needs %d", len(w), n, k, n*k)
	}
	bs := opt.BlockSize
	blocks := (k + bs - 1) / bs
	p := &Packed{
		N: n, K: k, BlockSize: bs, Blocks: blocks,
		Data:   make([]byte, n*blocks*bs/2),
		Scales: make([]float32, n*blocks),
	}
	zpRow := 0
	if opt.Asymmetric {
		zpRow = (blocks + 1) / 2
		p.ZeroPoints = make([]byte, n*zpRow)
	}

	// rows quantizes rows [r0, r1) and returns the flat index of the first non-finite weight,
	// or −1.
	rows := func(r0, r1 int) int {
		for r := r0; r < r1; r++ {
			var zp []byte
			if zpRow > 0 {
				zp = p.ZeroPoints[r*zpRow : (r+1)*zpRow]
			}
			if c := quantizeRow(w[r*k:(r+1)*k], bs,
				p.Data[r*blocks*bs/2:(r+1)*blocks*bs/2], p.Scales[r*blocks:(r+1)*blocks], zp, method); c >= 0 {
				return r*k + c
			}
		}
		return -1
	}

	bad := -1
	workers := min(runtime.GOMAXPROCS(0), n)
	if n*k < parallelMinElems || workers < 2 {
		bad = rows(0, n)
	} else {
		badAt := make([]int, workers)
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() { badAt[i] = rows(i*n/workers, (i+1)*n/workers) })
		}
		wg.Wait()
		for _, b := range badAt { // workers cover increasing row ranges: first hit is lowest
			if b >= 0 {
				bad = b
				break
			}
		}
	}
	if bad >= 0 {
		return nil, fmt.Errorf("quantize: weight[%d, %d] = %v: weights must be finite (check the source checkpoint)",
			bad/k, bad%k, w[bad])
	}
	return p, nil
}

// quantizeRow quantizes one row into its packed codes (len blocks·bs/2), scales (len blocks)
// and, when zp != nil, packed zero points. It returns the column of the first non-finite
// value, or −1.
func quantizeRow(row []float32, bs int, codes []byte, scales []float32, zp []byte, method symMethod) int {
	k := len(row)
	for b := range scales {
		start := b * bs
		blk := row[start:min(start+bs, k)]

		lo, hi := float32(0), float32(0) // range widened to include 0, as ORT does
		for i, v := range blk {
			if v-v != 0 { // NaN or ±Inf
				return start + i
			}
			// plain comparisons: NaN is already excluded, so the min/max builtins' NaN and
			// ±0 handling would be wasted work in the hottest loop
			if v < lo {
				lo = v
			}
			if v > hi {
				hi = v
			}
		}

		var scale float32
		zero := 8
		if zp != nil {
			// In float64 so that a range near the float32 limit cannot overflow to Inf.
			scale = float32((float64(hi) - float64(lo)) / 15)
			if scale != 0 {
				zero = int(clamp(math.RoundToEven(float64(-lo/scale)), 0, 15))
			} else {
				zero = 0
			}
			if b%2 == 0 {
				zp[b/2] = byte(zero)
			} else {
				zp[b/2] |= byte(zero) << 4
			}
		} else {
			switch method {
			case symSignedMax:
				ext := lo // on a magnitude tie take the negative one (positive scale)
				if -lo < hi {
					ext = hi
				}
				scale = ext / -8
			case symAbsMax7:
				scale = max(-lo, hi) / 7
			default:
				panic("quantize: unknown symMethod")
			}
		}
		scales[b] = scale

		out := codes[b*bs/2 : (b+1)*bs/2]
		if scale == 0 {
			for i := range out {
				out[i] = byte(zero) | byte(zero)<<4
			}
			continue
		}
		// Codes: round-half-even of v/scale, plus the zero point, saturated to 0..15 (as
		// QuantizeLinear does). Multiplying by the reciprocal instead of dividing is cheaper and
		// can only differ from v/scale at an exact .5 tie, which is equally good either way.
		// Padding elements past K get the zero point's code, which dequantizes to exactly 0.
		inv := 1 / scale
		enc := func(v float32) byte {
			q := int(math.RoundToEven(float64(v*inv))) + zero
			return byte(min(max(q, 0), 15))
		}
		for i := range out {
			c0, c1 := byte(zero), byte(zero)
			if j := 2 * i; j+1 < len(blk) {
				c0, c1 = enc(blk[j]), enc(blk[j+1])
			} else if j < len(blk) {
				c0 = enc(blk[j])
			}
			out[i] = c0 | c1<<4
		}
	}
	return -1
}

func clamp(x, lo, hi float64) float64 { return min(max(x, lo), hi) }

// code returns the 4-bit code of element (r, c), c < Blocks·BlockSize.
func (p *Packed) code(r, c int) int {
	b := p.Data[(r*p.Blocks*p.BlockSize+c)/2]
	if c%2 == 1 {
		b >>= 4
	}
	return int(b & 0x0f)
}

// zeroPoint returns the zero point of block (r, b).
func (p *Packed) zeroPoint(r, b int) int {
	if p.ZeroPoints == nil {
		return 8
	}
	z := p.ZeroPoints[r*((p.Blocks+1)/2)+b/2]
	if b%2 == 1 {
		z >>= 4
	}
	return int(z & 0x0f)
}

// DequantizeOptions selects the precision Dequantize reproduces.
type DequantizeOptions struct {
	// FP16Scales uses ScalesFP16() (what MatMulNBits and DequantizeLinear see when the scales
	// are stored as fp16, i.e. with fp16 activations) instead of the float32 scales.
	FP16Scales bool
	// FP16Values also rounds each (code − zero point)·scale to fp16, as a kernel that writes
	// the dequantized weight to an fp16 tensor does (DequantizeLinear with fp16 scales, the
	// CUDA MatMulNBits path that dequantizes to an fp16 buffer). Implies FP16Scales. The
	// float32 product of a 4-bit integer and an fp16 scale is exact, so this is one rounding.
	FP16Values bool
}

// Dequantize returns the float32 weight [N, K] that the packed codes and float32 scales stand
// for: (code − zero point)·scale, computed in float32 as ONNX Runtime's fp32 kernels do.
func (p *Packed) Dequantize() []float32 { return p.DequantizeWith(DequantizeOptions{}) }

// DequantizeWith is Dequantize with the scales and/or results rounded to fp16.
func (p *Packed) DequantizeWith(o DequantizeOptions) []float32 {
	scales := p.Scales
	if o.FP16Scales || o.FP16Values {
		scales = make([]float32, len(p.Scales))
		for i, s := range p.Scales {
			scales[i] = half.RoundFloat16(s)
		}
	}
	out := make([]float32, p.N*p.K)
	for r := range p.N {
		for c := range p.K {
			b := c / p.BlockSize
			v := float32(p.code(r, c)-p.zeroPoint(r, b)) * scales[r*p.Blocks+b]
			if o.FP16Values {
				v = half.RoundFloat16(v)
			}
			out[r*p.K+c] = v
		}
	}
	return out
}

// ScalesFP16 returns the scales as IEEE binary16 bits (round to nearest, ties to even), for
// graphs whose activations are fp16. Scales beyond ±65504 become ±Inf and those below 2^−24
// become 0; both only happen for weights far outside any trained model's range.
func (p *Packed) ScalesFP16() []uint16 {
	h := make([]uint16, len(p.Scales))
	for i, s := range p.Scales {
		h[i] = half.Float32ToFloat16(s)
	}
	return h
}

// ZeroPointsUINT4 returns the zero points as an ONNX UINT4 tensor [N, Blocks] (or, the same
// bytes, [N·Blocks] for the per-axis view), packed two a byte over the flattened tensor, low
// nibble first (rows are not byte-aligned when Blocks is odd). Symmetric weights get a tensor
// of 8s: DequantizeLinear's default zero point is 0.
func (p *Packed) ZeroPointsUINT4() []byte {
	out := make([]byte, (p.N*p.Blocks+1)/2)
	for r := range p.N {
		for b := range p.Blocks {
			i := r*p.Blocks + b
			out[i/2] |= byte(p.zeroPoint(r, b)) << (4 * (i % 2))
		}
	}
	return out
}

// Stats summarises quantization error against the original weight.
type Stats struct {
	MaxAbs float64 // max |w − dequantized|
	RMS    float64 // sqrt(mean((w − dequantized)²))
	RelRMS float64 // RMS / sqrt(mean(w²)); 0 when w is all zeros
}

// ErrorStats compares w [N, K] with Dequantize(). It panics if len(w) != N·K: the caller
// pairs a weight with its own Packed.
func (p *Packed) ErrorStats(w []float32) Stats {
	if len(w) != p.N*p.K {
		panic(fmt.Sprintf("quantize: ErrorStats: weight has %d elements, Packed is [%d, %d]", len(w), p.N, p.K))
	}
	return errorStats(w, p.Dequantize())
}

func errorStats(w, d []float32) Stats {
	var s Stats
	var se, sw float64
	for i, v := range w {
		e := math.Abs(float64(v) - float64(d[i]))
		s.MaxAbs = max(s.MaxAbs, e)
		se += e * e
		sw += float64(v) * float64(v)
	}
	if len(w) > 0 {
		s.RMS = math.Sqrt(se / float64(len(w)))
	}
	if sw > 0 {
		s.RelRMS = math.Sqrt(se / sw)
	}
	return s
}

// Transpose returns the [cols, rows] transpose of a row-major [rows, cols] matrix. Graphs
// store Linear weights [in, out] (y = x·W) while MatMulNBits packs [out, in] (N×K), so
// every caller of Quantize on a graph weight needs it.
func Transpose(w []float32, rows, cols int) []float32 {
	t := make([]float32, len(w))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			t[c*rows+r] = w[r*cols+c]
		}
	}
	return t
}
