package quantize

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
)

// NF4Table and FP4Table are bitsandbytes' 4-bit code tables, indexed by the 4-bit code: the
// values ONNX Runtime's MatMulBnb4 kernels dequantize with (nf4_qaunt_map and fp4_qaunt_map in
// onnxruntime/contrib_ops/cpu/quantization/blockwise_quant_block_bnb4.h, which copy
// bitsandbytes' CUDA constants). NF4 is the QLoRA paper's NormalFloat: quantiles of N(0, 1)
// scaled to [−1, 1], with an exact 0. FP4 is bitsandbytes' e2m1 table [0, 0.0625, 8, 12, 4,
// 6, 2, 3] / 12 with a sign bit (code 8 is −0).
var (
	NF4Table = [16]float32{
		-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
		-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
		0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
		0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
	}
	FP4Table = [16]float32{
		0.00000000, 5.208333333e-03, 0.66666667, 1.00000000,
		0.33333333, 0.50000000, 0.16666667, 0.25000000,
		-0.00000000, -5.208333333e-03, -0.66666667, -1.00000000,
		-0.33333333, -0.50000000, -0.16666667, -0.25000000,
	}
)

// NestedBlockSize is the number of absmax values sharing one second-level scale under double
// quantization (bitsandbytes' quantize_4bit: quantize_blockwise(absmax − mean, blocksize=256)).
const NestedBlockSize = 256

// Table returns t's 16-entry code table (nil for Int4).
func (t Type) Table() []float32 {
	switch t {
	case NF4:
		return NF4Table[:]
	case FP4:
		return FP4Table[:]
	}
	return nil
}

// Bnb4 is a weight [N, K] (torch Linear [out, in]) in bitsandbytes' 4-bit layout, which is
// com.microsoft.MatMulBnb4's: the weight flattened row-major, cut into blocks of BlockSize
// consecutive values, each block scaled by its absolute maximum and every value replaced by
// the code of the nearest table entry; two codes a byte, the even flat index in the HIGH
// nibble (the opposite of MatMulNBits' order).
type Bnb4 struct {
	N, K, BlockSize int
	Type            Type
	// Data is MatMulBnb4's B: uint8 [N·K/2].
	Data []byte
	// Absmax is one float32 per block [N·K/BlockSize]; nil when double-quantized (Nested).
	Absmax []float32
	// Nested holds the absmax values double-quantized; nil otherwise.
	Nested *NestedAbsmax
}

// NestedAbsmax is the 8-bit form of a Bnb4's absmax values, bitsandbytes' compress_statistics:
// absmax[i] ≈ DynamicMap[Codes[i]]·Scales[i/256] + Offset, where Offset is the mean absmax and
// Scales are the absolute maxima of (absmax − Offset) over blocks of 256.
type NestedAbsmax struct {
	// Codes holds one 8-bit code per block, padded to a multiple of NestedBlockSize with the
	// code of 0 so that the graph can reshape it to [len(Scales), 256].
	Codes  []byte
	Scales []float32
	Offset float32
	Blocks int // the number of real (unpadded) codes: N·K/BlockSize
}

// QuantizeBnb4 quantizes the row-major weight w [n, k] in bitsandbytes' layout with
// opt.Type (NF4 or FP4) and opt.BlockSize, double-quantizing the absmax values when
// opt.DoubleQuant. n·k must be a multiple of the block size (every Llama Linear is).
func QuantizeBnb4(w []float32, n, k int, opt Options) (*Bnb4, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	opt = opt.withDefaults()
	if !opt.Type.IsBnb4() {
		return nil, fmt.Errorf("quantize: QuantizeBnb4 with Type %s: want nf4 or fp4", opt.Type)
	}
	if n <= 0 || k <= 0 {
		return nil, fmt.Errorf("quantize: weight shape [%d, %d]: both dimensions must be positive", n, k)
	}
	if len(w) != n*k {
		return nil, fmt.Errorf("quantize: weight has %d elements, shape [%d, %d] needs %d", len(w), n, k, n*k)
	}
	bs := opt.BlockSize
	if n*k%bs != 0 {
		return nil, fmt.Errorf("quantize: weight [%d, %d] has %d values, not a multiple of the block size %d: pick a --block-size that divides it", n, k, n*k, bs)
	}
	for i, v := range w {
		if v-v != 0 {
			return nil, fmt.Errorf("quantize: weight[%d, %d] = %v: weights must be finite (check the source checkpoint)", i/k, i%k, v)
		}
	}
	p := &Bnb4{N: n, K: k, BlockSize: bs, Type: opt.Type, Data: make([]byte, n*k/2), Absmax: make([]float32, n*k/bs)}
	enc := newEncoder(opt.Type.Table())
	blocks := func(b0, b1 int) {
		for b := b0; b < b1; b++ {
			p.Absmax[b] = quantizeBnb4Block(w[b*bs:(b+1)*bs], p.Data[b*bs/2:(b+1)*bs/2], enc)
		}
	}
	nb := len(p.Absmax)
	workers := min(runtime.GOMAXPROCS(0), nb)
	if n*k < parallelMinElems || workers < 2 {
		blocks(0, nb)
	} else {
		var wg sync.WaitGroup
		for i := range workers {
			wg.Go(func() { blocks(i*nb/workers, (i+1)*nb/workers) })
		}
		wg.Wait()
	}
	if opt.DoubleQuant {
		p.Nested = nestAbsmax(p.Absmax)
		p.Absmax = nil
	}
	return p, nil
}

// quantizeBnb4Block writes one block's codes and returns its absmax. As bitsandbytes and
// ONNX Runtime do, values are multiplied by the reciprocal of the absmax before the lookup.
func quantizeBnb4Block(blk []float32, out []byte, enc encoder) float32 {
	var amax float32
	for _, v := range blk {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	var inv float32
	if amax != 0 {
		inv = 1 / amax
	}
	for i := range out {
		out[i] = enc.code(blk[2*i]*inv)<<4 | enc.code(blk[2*i+1]*inv)
	}
	return amax
}

// encoder finds the code of the table entry nearest to a value in [−1, 1].
type encoder struct {
	values []float32 // the table's values, ascending (FP4's −0 dropped)
	codes  []byte    // the code of each value
	mids   []float32 // midpoints between neighbours
	// negZero is the code of −0 (FP4's 8), given to negative values that round to 0; 0 if
	// the table has none.
	negZero byte
}

func newEncoder(table []float32) encoder {
	var e encoder
	idx := make([]int, 0, len(table))
	for i, v := range table {
		if v == 0 && math.Signbit(float64(v)) {
			e.negZero = byte(i) // FP4's −0: +0 stands for it in the search
			continue
		}
		idx = append(idx, i)
	}
	slices.SortFunc(idx, func(a, b int) int { return cmpFloat(table[a], table[b]) })
	for j, i := range idx {
		e.values = append(e.values, table[i])
		e.codes = append(e.codes, byte(i))
		if j > 0 {
			e.mids = append(e.mids, float32((float64(table[idx[j-1]])+float64(table[i]))/2))
		}
	}
	return e
}

// code returns the code of the nearest value; a value exactly on a midpoint takes the lower
// neighbour, as the decision trees of bitsandbytes and ONNX Runtime (x > midpoint) do. FP4
// keeps the sign of a negative value that rounds to 0 (code 8, −0), as those trees do.
func (e encoder) code(x float32) byte {
	// The first midpoint ≥ x (binary search; sort.Search's closure costs twice as much here).
	lo, hi := 0, len(e.mids)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if e.mids[m] < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	j := lo
	c := e.codes[j]
	if e.values[j] == 0 && x < 0 && e.negZero != 0 {
		c = e.negZero
	}
	return c
}

func cmpFloat(a, b float32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// nestAbsmax double-quantizes absmax values: subtract their mean, then 8-bit blockwise
// quantization over blocks of NestedBlockSize with bitsandbytes' signed dynamic map, each
// block scaled by its own absolute maximum (bitsandbytes' quantize_blockwise). The mean is
// summed in float64 and rounded to float32 (torch sums float32 pairwise: the two may differ
// in the last bit).
func nestAbsmax(a []float32) *NestedAbsmax {
	var sum float64
	for _, v := range a {
		sum += float64(v)
	}
	off := float32(sum / float64(len(a)))
	nb := (len(a) + NestedBlockSize - 1) / NestedBlockSize
	code := DynamicMap()
	enc := encoder{values: code, codes: make([]byte, 256), mids: make([]float32, 255)}
	for i := range code {
		enc.codes[i] = byte(i)
		if i > 0 {
			enc.mids[i-1] = float32((float64(code[i-1]) + float64(code[i])) / 2)
		}
	}
	zero := enc.code(0)
	n := &NestedAbsmax{Codes: make([]byte, nb*NestedBlockSize), Scales: make([]float32, nb), Offset: off, Blocks: len(a)}
	for b := range nb {
		blk := a[b*NestedBlockSize : min((b+1)*NestedBlockSize, len(a))]
		var s float32
		for _, v := range blk {
			s = max(s, float32(math.Abs(float64(v-off))))
		}
		n.Scales[b] = s
		var inv float32
		if s != 0 {
			inv = 1 / s
		}
		for i := range NestedBlockSize {
			c := zero
			if i < len(blk) {
				c = enc.code((blk[i] - off) * inv)
			}
			n.Codes[b*NestedBlockSize+i] = c
		}
	}
	return n
}

// AbsmaxValues returns the absmax values a MatMulBnb4 reads: Absmax, or the double-quantized
// ones dequantized in float32 as the graph does (code·scale, then + offset).
func (p *Bnb4) AbsmaxValues() []float32 {
	if p.Nested == nil {
		return p.Absmax
	}
	return p.Nested.Dequantize()
}

// Dequantize returns the absmax values: DynamicMap[code]·scale + offset, each operation
// rounded to float32.
func (n *NestedAbsmax) Dequantize() []float32 {
	code := DynamicMap()
	out := make([]float32, n.Blocks)
	for i := range out {
		v := code[n.Codes[i]] * n.Scales[i/NestedBlockSize]
		out[i] = v + n.Offset
	}
	return out
}

// Dequantize returns the float32 weight [N, K]: table[code]·absmax, as MatMulBnb4's fp32
// kernel computes it.
func (p *Bnb4) Dequantize() []float32 {
	t := p.Type.Table()
	a := p.AbsmaxValues()
	out := make([]float32, p.N*p.K)
	for i := range out {
		c := p.Data[i/2] >> 4
		if i%2 == 1 {
			c = p.Data[i/2] & 0x0f
		}
		out[i] = t[c] * a[i/p.BlockSize]
	}
	return out
}

// ErrorStats compares w [N, K] with Dequantize(). It panics if len(w) != N·K.
func (p *Bnb4) ErrorStats(w []float32) Stats {
	if len(w) != p.N*p.K {
		panic(fmt.Sprintf("quantize: ErrorStats: weight has %d elements, Bnb4 is [%d, %d]", len(w), p.N, p.K))
	}
	return errorStats(w, p.Dequantize())
}

// Bytes is the memory of the quantized weight: codes, and the absmax values (float32) or
// their double-quantized form (8-bit codes, float32 scales, the offset).
func (p *Bnb4) Bytes() int64 {
	b := int64(len(p.Data)) + 4*int64(len(p.Absmax))
	if p.Nested != nil {
		b += int64(len(p.Nested.Codes)) + 4*int64(len(p.Nested.Scales)) + 4
	}
	return b
}

// DynamicMap returns bitsandbytes' signed 8-bit dynamic quantization map,
// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for exponent i in 0..6,
// the 2^i midpoints of torch.linspace(0.1, 1, 2^i + 1) times 10^(i−6), both signs, plus 0
// and 1, sorted (256 values in [−0.99297, 1]). Computed in float32 as torch does (linspace's
// two-sided stepping, float32 midpoints and products).
func DynamicMap() []float32 {
	data := []float32{0, 1}
	for i := range 7 {
		n := 1<<i + 1
		b := linspace32(0.1, 1, n)
		scale := float32(math.Pow(10, float64(i-6)))
		for j := 0; j+1 < n; j++ {
			m := (b[j] + b[j+1]) / 2
			data = append(data, scale*m, -(scale * m))
		}
	}
	slices.Sort(data)
	return data
}

// linspace32 is torch.linspace(start, end, steps) in float32: the first half stepped up from
// start, the second down from end.
func linspace32(start, end float32, steps int) []float32 {
	out := make([]float32, steps)
	step := (end - start) / float32(steps-1)
	half := steps / 2
	for i := range out {
		if i < half {
			out[i] = start + step*float32(i)
		} else {
			out[i] = end - step*float32(steps-i-1)
		}
	}
	return out
}
