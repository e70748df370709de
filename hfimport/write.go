package hfimport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/onnxpb"
	"github.com/ortq/ortq/quantize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
	"google.golang.org/protobuf/proto"
)

// Output file names inside the output directory.
const (
	ModelFile = "model.onnx"
	DataFile  = "model.onnx.data"
)

// DefaultMinExternal: weights of at least this many bytes go to the external data file.
const DefaultMinExternal = 1024

// Common options of Import and Synth.
type Common struct {
	Out string
	// DType of the graph: "float32" or "float16" ("fp32", "fp16", "half" accepted).
	DType string
	Force bool
	// MinExternal: weights of at least this many bytes are stored in DataFile (0 → 1024).
	MinExternal int
	// Progress receives a progress bar (nil: none).
	Progress io.Writer
	// Workers for synth's generation and import's conversion (0 → one per core).
	Workers int
	// Ops: "fused" (opset-23 Attention, RMSNormalization, RotaryEmbedding) or "decomposed"
	// (opset-21 primitives). "" → decomposed (for import the exact reference form: every
	// op in every runtime; for synth the faster one to train on ORT CUDA, measured).
	Ops string
	// Quantize writes the decoder Linears as 4-bit com.microsoft.MatMulNBits with
	// BlockSize (0 → 32) and Asymmetric zero points or not, exactly as prepare would
	// quantize them, so a large model never needs its full-precision copy on disk.
	// Embeddings and lm_head stay in DType.
	Quantize   bool
	BlockSize  int
	Asymmetric bool
	// Quant is the 4-bit type (quantize.Type: "" or int4, nf4, fp4). NF4/FP4 Linears are
	// com.microsoft.MatMulBnb4 (BlockSize over the flattened weight), their absmax values
	// double-quantized when DoubleQuant, as prepare --quant [--double-quant] writes them.
	Quant       string
	DoubleQuant bool
}

// quantOptions is Quantize/BlockSize as the builder takes them (nil: full precision).
func (o Common) quantOptions() (*quantize.Options, error) {
	if !o.Quantize {
		return nil, nil
	}
	q := &quantize.Options{BlockSize: o.BlockSize, Asymmetric: o.Asymmetric, Type: quantize.Type(strings.ToLower(o.Quant))}
	if q.BlockSize == 0 {
		q.BlockSize = quantize.DefaultBlockSize
	}
	q.DoubleQuant = o.DoubleQuant
	if q.Type != "" && q.Type != quantize.Int4 && !q.Type.IsBnb4() {
		return nil, fmt.Errorf("--quant %q: use int4, nf4 or fp4", o.Quant)
	}
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("--block-size %d, --quant %q: %w", o.BlockSize, o.Quant, err)
	}
	return q, nil
}

// ImportOptions of `ortq import`.
type ImportOptions struct {
	Common
	HF string // checkpoint directory
}

// SynthOptions of `ortq synth`.
type SynthOptions struct {
	Common
	Preset string
	Seed   uint64
	// Layers, when > 0, cuts the decoder to this many layers.
	Layers int
}

// Result describes what was written.
type Result struct {
	Dir       string
	Model     string // path of model.onnx
	Config    *Config
	DType     string
	Ops       string // "fused" or "decomposed"
	Params    int64
	DataBytes int64
	Nodes     int
	Elapsed   time.Duration
}

// ParseDType maps a --dtype value to an ONNX element type.
func ParseDType(s string) (int32, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "float32", "fp32", "float", "f32":
		return ortgraph.Float, nil
	case "float16", "fp16", "half", "f16":
		return ortgraph.Float16, nil
	}
	return 0, fmt.Errorf("--dtype %q: use float32 or float16", s)
}

func dtypeName(dt int32) string {
	if dt == ortgraph.Float16 {
		return "float16"
	}
	return "float32"
}

// Import builds the graph of a Hugging Face checkpoint directory.
func Import(o ImportOptions) (*Result, error) {
	start := time.Now()
	if o.HF == "" {
		return nil, fmt.Errorf("--hf is required: the checkpoint directory (config.json + *.safetensors)")
	}
	if o.DType == "" {
		o.DType = "float32"
	}
	dt, err := ParseDType(o.DType)
	if err != nil {
		return nil, err
	}
	ops, err := ParseOps(o.Ops)
	if err != nil {
		return nil, err
	}
	o.Ops = ops.String()
	quant, err := o.quantOptions()
	if err != nil {
		return nil, err
	}
	if err := checkOut(o.Out, o.Force); err != nil {
		return nil, err
	}
	if st, err := os.Stat(o.HF); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("checkpoint directory %q does not exist or is not a directory", o.HF)
	}
	cfgPath := filepath.Join(o.HF, "config.json")
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	ck, err := openCheckpoint(o.HF)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	m, ws, err := buildOps(cfg, dt, ops, quant)
	if err != nil {
		return nil, fmt.Errorf("config %q: %w", cfgPath, err)
	}
	// Check every tensor before writing anything: present, float, right shape.
	src := make([]*stTensor, len(ws))
	for i, w := range ws {
		t := ck.tensors[w.Name]
		if t == nil {
			return nil, fmt.Errorf("checkpoint %q: tensor %q is missing (config %s expects it)", o.HF, w.Name, cfgPath)
		}
		if err := t.checkFloat(); err != nil {
			return nil, err
		}
		if !slices.Equal(t.shape, w.HFShape) {
			return nil, fmt.Errorf("%s has shape %v, config.json implies %v", t.where(), t.shape, w.HFShape)
		}
		src[i] = t
	}
	fill := func(i int, w *Weight, from, n int64, dst []float32, scratch *[]byte) error {
		return readWeight(src[i], w, from, n, dst, scratch)
	}
	extra := []string{"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"}
	res, err := write(o.Common, m, ws, dt, fill, true, func(tmp string) error {
		for _, name := range extra {
			if err := copySmall(filepath.Join(o.HF, name), filepath.Join(tmp, name)); err != nil {
				return err
			}
		}
		return nil
	}, "import "+filepath.Base(filepath.Clean(o.HF)))
	if err != nil {
		return nil, err
	}
	res.Config = cfg
	res.Elapsed = time.Since(start)
	return res, nil
}

// Synth writes a preset's graph with random weights drawn like HF's _init_weights:
// Linear/Embedding N(0, 0.02), RMSNorm 1, biases 0. The same seed gives the same bytes
// whatever the number of workers (each chunk of each tensor has its own stream).
func Synth(o SynthOptions) (*Result, error) {
	start := time.Now()
	cfg, err := Preset(o.Preset)
	if err != nil {
		return nil, err
	}
	if o.Layers < 0 {
		return nil, fmt.Errorf("--layers %d: must be ≥ 0 (0 keeps the preset's %d)", o.Layers, cfg.NumLayers)
	}
	if o.Layers > 0 {
		cfg.NumLayers = o.Layers
	}
	if o.DType == "" {
		o.DType = "float16"
		if cfg.Params() < 100e6 {
			o.DType = "float32"
		}
	}
	dt, err := ParseDType(o.DType)
	if err != nil {
		return nil, err
	}
	ops, err := ParseOps(o.Ops) // "" → decomposed (see ParseOps for why)
	if err != nil {
		return nil, err
	}
	o.Ops = ops.String()
	cfg.DType = dtypeName(dt)
	if err := checkOut(o.Out, o.Force); err != nil {
		return nil, err
	}
	quant, err := o.quantOptions()
	if err != nil {
		return nil, err
	}
	m, ws, err := buildOps(cfg, dt, ops, quant)
	if err != nil {
		return nil, err
	}
	std := cfg.InitializerRange
	fill := func(i int, w *Weight, from, n int64, dst []float32, _ *[]byte) error {
		switch w.init {
		case initOnes:
			for j := range dst[:n] {
				dst[j] = 1
			}
		case initZeros:
			clear(dst[:n])
		default:
			// One PCG stream per (seed, tensor, chunk): deterministic under any schedule.
			rng := rand.New(rand.NewPCG(o.Seed, uint64(i)<<40|uint64(from/chunkElems)))
			for j := range dst[:n] {
				dst[j] = float32(rng.NormFloat64() * std)
			}
		}
		return nil
	}
	res, err := write(o.Common, m, ws, dt, fill, false, func(tmp string) error {
		return os.WriteFile(filepath.Join(tmp, "config.json"), cfg.JSON(), 0o644)
	}, "synth "+o.Preset)
	if err != nil {
		return nil, err
	}
	res.Config = cfg
	res.Elapsed = time.Since(start)
	return res, nil
}

// checkOut refuses to replace an existing output unless forced, and then only a directory
// that holds an imported model (and nothing else) or nothing (fsutil.CheckReplace).
func checkOut(out string, force bool) error {
	return fsutil.CheckReplace(out, force, ModelFile, "import")
}

// chunkElems is the unit of work for conversion and generation (and of synth's random
// streams, so changing it changes synth's weights).
const chunkElems = 1 << 20

// progressMin: smaller outputs are written without a progress bar (they take a blink).
const progressMin = 64 << 20

// wholeBudget bounds the memory of whole-tensor (transposed) import jobs in flight.
const wholeBudget = 3 << 30

// fillFunc produces elements [from, from+n) of weight i in the graph layout, as float32.
type fillFunc func(i int, w *Weight, from, n int64, dst []float32, scratch *[]byte) error

type job struct {
	i        int
	from, n  int64
	off      int64 // file offset (external) or -1 (inline: whole tensor)
	inlineTo []byte
	// A 4-bit weight (Weight.Quant) is one job: its packed bytes and scales go to their
	// own places (sOff/sInline as off/inlineTo).
	sOff    int64
	sInline []byte
	zOff    int64
	zInline []byte
	oOff    int64 // double-quantized NF4/FP4: the absmax offset
	oInline []byte
}

// write lays out the weights (inline below MinExternal, else 4096-aligned in DataFile),
// generates/converts them chunk by chunk on Workers goroutines straight into the data file,
// saves the graph, lets extra add files, and renames the temp directory into place.
//
// wholeTransposed (import) makes a transposed weight one job: it is read whole and transposed
// in memory; such jobs share a memory budget so 16 workers never hold 16 big Linears at once.
func write(o Common, m *ortgraph.Model, ws []*Weight, dt int32, fill fillFunc, wholeTransposed bool,
	extra func(tmp string) error, what string) (*Result, error) {
	l := layOut(ws, int64(ortgraph.ElemSize(dt)), int64(o.MinExternal), wholeTransposed)
	tmp, f, err := createDataFile(o.Out, l.dataSize)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	defer f.Close()
	if err := runJobs(o, l, ws, dt, f, fill, wholeTransposed, what); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := saveModel(m, tmp); err != nil {
		return nil, err
	}
	if extra != nil {
		if err := extra(tmp); err != nil {
			return nil, err
		}
	}
	if err := fsutil.ReplaceDir(tmp, o.Out); err != nil {
		return nil, err
	}
	return &Result{Dir: o.Out, Model: filepath.Join(o.Out, ModelFile), DType: dtypeName(dt), Ops: o.Ops, Params: l.params, DataBytes: l.dataSize,
		Nodes: len(m.P.Graph.Node)}, nil
}

// layout is where write puts the weights: the jobs that fill them, the data file's size
// and the parameter count.
type layout struct {
	jobs             []job
	dataSize, params int64
}

// layOut places every weight inline (below minExt bytes; ≤ 0 means DefaultMinExternal) or
// 4096-aligned in the data file, setting its TensorProto's location, and cuts the work into
// jobs: a 4-bit weight whole, a transposed one whole when wholeTransposed, others in chunks.
func layOut(ws []*Weight, es, minExt int64, wholeTransposed bool) layout {
	if minExt <= 0 {
		minExt = DefaultMinExternal
	}
	var l layout
	// place lays a tensor of size bytes out inline or in the data file; it returns the
	// file offset (or -1) and the inline buffer.
	place := func(t *onnxpb.TensorProto, size int64) (int64, []byte) {
		if size < minExt {
			buf := make([]byte, size)
			t.RawData = buf
			return -1, buf
		}
		l.dataSize += (4096 - l.dataSize%4096) % 4096
		off := l.dataSize
		t.DataLocation = onnxpb.TensorProto_EXTERNAL
		t.ExternalData = []*onnxpb.StringStringEntryProto{
			{Key: "location", Value: DataFile},
			{Key: "offset", Value: strconv.FormatInt(off, 10)},
			{Key: "length", Value: strconv.FormatInt(size, 10)},
		}
		l.dataSize += size
		return off, nil
	}
	for i, w := range ws {
		n := w.NumElements()
		l.params += n
		if w.Quant != nil {
			j := job{i: i, from: 0, n: n}
			j.off, j.inlineTo = place(w.T, ortgraph.NumElements(w.T.Dims))
			j.sOff, j.sInline = place(w.Scales, tensorBytes(w.Scales))
			if w.ZeroPoints != nil {
				j.zOff, j.zInline = place(w.ZeroPoints, tensorBytes(w.ZeroPoints))
			}
			if w.Offset != nil {
				j.oOff, j.oInline = place(w.Offset, tensorBytes(w.Offset))
			}
			l.jobs = append(l.jobs, j)
			continue
		}
		off, buf := place(w.T, n*es)
		switch {
		case buf != nil:
			l.jobs = append(l.jobs, job{i: i, from: 0, n: n, off: -1, inlineTo: buf})
		case w.Transpose && wholeTransposed:
			// A transposed weight is produced whole (it is one Linear, ≤ a few hundred MB).
			l.jobs = append(l.jobs, job{i: i, from: 0, n: n, off: off})
		default:
			for from := int64(0); from < n; from += chunkElems {
				l.jobs = append(l.jobs, job{i: i, from: from, n: min(chunkElems, n-from), off: off + from*es})
			}
		}
	}
	return l
}

// createDataFile makes the temporary directory beside out (readable like an ordinary
// directory) and in it the data file of size bytes; the caller removes the directory.
func createDataFile(out string, size int64) (tmp string, f *os.File, err error) {
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", nil, err
	}
	tmp, err = os.MkdirTemp(parent, ".tmp-"+filepath.Base(filepath.Clean(out))+"-")
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, *os.File, error) {
		os.RemoveAll(tmp)
		return "", nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fail(err)
	}
	if f, err = os.Create(filepath.Join(tmp, DataFile)); err != nil {
		return fail(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fail(fmt.Errorf("write %s: %w", DataFile, err))
	}
	return tmp, f, nil
}

// runJobs converts every job into f or its inline buffer, showing a progress bar on
// o.Progress for big files.
func runJobs(o Common, l layout, ws []*Weight, dt int32, f *os.File, fill fillFunc, wholeTransposed bool, what string) error {
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	es := int64(ortgraph.ElemSize(dt))
	var bar *progressbar.ProgressBar
	if o.Progress != nil && l.dataSize >= progressMin {
		bar = progressbar.NewOptions64(l.dataSize,
			progressbar.OptionSetWriter(o.Progress),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(24),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(o.Progress) }),
		)
	}
	mem := semaphore.NewWeighted(wholeBudget)
	// Each job converts one chunk (or one whole transposed weight) on at most `workers`
	// goroutines; the first error cancels the jobs not yet started. Buffers are reused
	// across jobs through a pool, except a big job's, which are let go.
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(workers)
	bufs := sync.Pool{New: func() any { return new(jobBuffers) }}
	for _, j := range l.jobs {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if ctx.Err() != nil {
				return nil // another job failed; g.Wait returns its error
			}
			w := ws[j.i]
			cost := j.n * (8 + 4 + es) // dst + src float32s, raw bytes, encoded bytes
			if j.n > chunkElems {
				cost = min(cost, wholeBudget)
				if err := mem.Acquire(ctx, cost); err != nil {
					return nil // cancelled by another job's error
				}
				defer mem.Release(cost)
			}
			b := bufs.Get().(*jobBuffers)
			if j.n <= chunkElems {
				defer bufs.Put(b)
			}
			return convertJob(j, w, b, dt, es, f, bar, fill, wholeTransposed)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if bar != nil {
		bar.Finish()
	}
	return nil
}

// saveModel writes the graph (weights already placed) as ModelFile in dir.
func saveModel(m *ortgraph.Model, dir string) error {
	buf, err := proto.Marshal(m.P)
	if err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	if len(buf) > ortgraph.MaxModelProtoBytes {
		return fmt.Errorf("save model: protobuf part is %d bytes: lower --min-external", len(buf))
	}
	if err := fsutil.WriteFile(filepath.Join(dir, ModelFile), buf, 0o644); err != nil {
		return err
	}
	return os.Chmod(filepath.Join(dir, ModelFile), 0o644) // CreateTemp made it 0600
}

// jobBuffers are one job's reusable buffers: the float32 values, the encoded bytes and
// fill's scratch space.
type jobBuffers struct {
	vals         []float32
	out, scratch []byte
}

// convertJob fills one job's values, encodes them and writes them to the data file (or to
// the tensor's inline bytes).
func convertJob(j job, w *Weight, b *jobBuffers, dt int32, es int64, f *os.File, bar *progressbar.ProgressBar, fill fillFunc, wholeTransposed bool) error {
	if int64(cap(b.vals)) < j.n {
		b.vals = make([]float32, j.n)
	}
	vals := b.vals[:j.n]
	if w.Quant != nil {
		return writeQuantized(w, j, vals, dt, f, bar, func(from, n int64) error {
			if wholeTransposed {
				return fill(j.i, w, from, n, vals[from:from+n], &b.scratch)
			}
			for c := from; c < from+n; c += chunkElems {
				// Chunk by chunk: synth's random streams are per chunk, so the
				// values equal those of the full-precision graph.
				if err := fill(j.i, w, c, min(chunkElems, from+n-c), vals[c:], &b.scratch); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := fill(j.i, w, j.from, j.n, vals, &b.scratch); err != nil {
		return err
	}
	dst := j.inlineTo
	if dst == nil {
		if int64(cap(b.out)) < j.n*es {
			b.out = make([]byte, j.n*es)
		}
		dst = b.out[:j.n*es]
	}
	if err := encode(dt, vals, dst); err != nil {
		return fmt.Errorf("weight %q: %w", w.Name, err)
	}
	if j.off >= 0 {
		if _, err := f.WriteAt(dst, j.off); err != nil {
			return fmt.Errorf("write %s: %w", DataFile, err)
		}
		if bar != nil {
			bar.Add64(int64(len(dst)))
		}
	}
	return nil
}

// encode writes float32 values in the graph dtype; float16 overflow is an error (a weight
// beyond ±65504 cannot be represented and would silently become ±Inf).
func encode(dt int32, v []float32, dst []byte) error {
	switch dt {
	case ortgraph.Float:
		for i, x := range v {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(x))
		}
	case ortgraph.Float16:
		for i, x := range v {
			h := ortgraph.FloatToHalf(x)
			if h&0x7c00 == 0x7c00 && !math.IsInf(float64(x), 0) && !math.IsNaN(float64(x)) {
				return fmt.Errorf("value %g at element %d is outside the float16 range: use --dtype float32", x, i)
			}
			binary.LittleEndian.PutUint16(dst[2*i:], h)
		}
	default:
		panic("hfimport: encode: unsupported dtype " + ortgraph.DTypeName(dt))
	}
	return nil
}

// readWeight converts elements [from, from+n) of a weight from the checkpoint. For a
// transposed weight the whole tensor is read (n = all) and transposed from [out, in].
func readWeight(t *stTensor, w *Weight, from, n int64, dst []float32, scratch *[]byte) error {
	if !w.Transpose {
		b, err := t.readRange(from, n, *scratch, dst)
		*scratch = b
		return err
	}
	rows, cols := w.HFShape[0], w.HFShape[1] // [out, in]
	src := make([]float32, rows*cols)
	b, err := t.readRange(0, rows*cols, *scratch, src)
	*scratch = b
	if err != nil {
		return err
	}
	// dst[c*rows + r] = src[r*cols + c], in 64×64 tiles for cache locality.
	const tile = 64
	for r0 := int64(0); r0 < rows; r0 += tile {
		for c0 := int64(0); c0 < cols; c0 += tile {
			for r := r0; r < min(r0+tile, rows); r++ {
				row := src[r*cols:]
				for c := c0; c < min(c0+tile, cols); c++ {
					dst[c*rows+r] = row[c]
				}
			}
		}
	}
	return nil
}

func copySmall(src, dst string) error {
	b, err := fsutil.ReadBounded(src, 64<<20)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copy %q: %w", src, err)
	}
	return os.WriteFile(dst, b, 0o644)
}

// writeQuantized generates a Linear weight whole (fillAll), brings it to [out, in] and
// writes its 4-bit packing, scales and zero points where job j placed them.
func writeQuantized(w *Weight, j job, vals []float32, dt int32, f *os.File, bar *progressbar.ProgressBar, fillAll func(from, n int64) error) error {
	if err := fillAll(0, j.n); err != nil {
		return err
	}
	out, in := int(w.HFShape[0]), int(w.HFShape[1])
	v := vals
	if w.Transpose {
		v = quantize.Transpose(vals, in, out)
	}
	type part = dataPart
	if w.Quant.Type.IsBnb4() {
		p, err := quantize.QuantizeBnb4(v, out, in, *w.Quant)
		if err != nil {
			return fmt.Errorf("weight %q: %w", w.Name, err)
		}
		if nq := p.Nested; nq != nil {
			scales, offset := make([]byte, 4*len(nq.Scales)), make([]byte, 4)
			if err := errors.Join(encode(ortgraph.Float, nq.Scales, scales), encode(ortgraph.Float, []float32{nq.Offset}, offset)); err != nil {
				return fmt.Errorf("weight %q absmax: %w", w.Name, err)
			}
			return writeParts(f, bar, []part{{p.Data, j.off, j.inlineTo}, {nq.Codes, j.sOff, j.sInline}, {scales, j.zOff, j.zInline}, {offset, j.oOff, j.oInline}})
		}
		absmax := make([]byte, len(p.Absmax)*ortgraph.ElemSize(dt))
		if err := encode(dt, p.Absmax, absmax); err != nil {
			return fmt.Errorf("weight %q absmax: %w", w.Name, err)
		}
		return writeParts(f, bar, []part{{p.Data, j.off, j.inlineTo}, {absmax, j.sOff, j.sInline}})
	}
	p, err := quantize.Quantize(v, out, in, *w.Quant)
	if err != nil {
		return fmt.Errorf("weight %q: %w", w.Name, err)
	}
	scales := make([]byte, len(p.Scales)*ortgraph.ElemSize(dt))
	if err := encode(dt, p.Scales, scales); err != nil {
		return fmt.Errorf("weight %q scales: %w", w.Name, err)
	}
	parts := []part{{p.Data, j.off, j.inlineTo}, {scales, j.sOff, j.sInline}}
	if w.ZeroPoints != nil {
		if int64(len(p.ZeroPoints)) != ortgraph.NumElements(w.ZeroPoints.Dims) {
			panic(fmt.Sprintf("hfimport: %d zero-point bytes for %v", len(p.ZeroPoints), w.ZeroPoints.Dims))
		}
		parts = append(parts, part{p.ZeroPoints, j.zOff, j.zInline})
	}
	return writeParts(f, bar, parts)
}

// tensorBytes is the size of t's data.
func tensorBytes(t *onnxpb.TensorProto) int64 {
	return ortgraph.NumElements(t.Dims) * int64(ortgraph.ElemSize(t.DataType))
}

// dataPart is bytes bound for a file offset, or, when off < 0, for a tensor's inline bytes.
type dataPart struct {
	data   []byte
	off    int64
	inline []byte
}

// writeParts writes each part where it is bound.
func writeParts(f *os.File, bar *progressbar.ProgressBar, parts []dataPart) error {
	for _, part := range parts {
		if part.off < 0 {
			copy(part.inline, part.data)
			continue
		}
		if _, err := f.WriteAt(part.data, part.off); err != nil {
			return fmt.Errorf("write %s: %w", DataFile, err)
		}
		if bar != nil {
			bar.Add64(int64(len(part.data)))
		}
	}
	return nil
}
