package bench

import (
	"bufio"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/runreport"
	"github.com/ortq/ortq/manifest"
)

// Peers are other tools' results shown beside ortq's.
type Peers []*Result

// MatchPeer returns the peer point to hold p against: same micro-batch and sequence
// length, preferring the same recompute setting, then the same bits (ok=false if none).
// Peers usually run a 16-bit base; the 4-bit ortq point is compared with it on purpose
// (QLoRA's claim is the memory it saves for the speed it costs).
func (ps Peers) MatchPeer(p Point) (*Result, *Point, bool) {
	var bestR *Result
	var bestP *Point
	bestScore := -1
	for _, r := range ps {
		for i := range r.Points {
			q := &r.Points[i]
			// Same batch shape and the same recomputation choice: a peer run with
			// checkpointing is no yardstick for an ortq point without it, or the reverse
			// (a dense base is the same policy: manifest.SplitStepKey).
			policy, _ := manifest.SplitStepKey(p.Params.Recompute)
			if q.Params.MicroBatch != p.Params.MicroBatch || q.Params.SeqLen != p.Params.SeqLen ||
				orNone(q.Params.Recompute) != orNone(policy) {
				continue
			}
			score := 0
			if q.Params.Bits == p.Params.Bits {
				score++
			}
			if score > bestScore {
				bestR, bestP, bestScore = r, q, score
			}
		}
	}
	return bestR, bestP, bestP != nil
}

// Ratio is an ortq/peer comparison of one point.
type Ratio struct {
	Point, Peer string
	PeerTool    string
	Throughput  Float  // ortq tokens/s ÷ peer tokens/s
	Memory      Float  // ortq peak ÷ peer peak
	MemoryBasis string // what was compared
}

// Ratios pairs every ortq point with its peer point.
func Ratios(r *Result, peers Peers) []Ratio {
	var out []Ratio
	for _, p := range r.Points {
		pr, q, ok := peers.MatchPeer(p)
		if !ok {
			continue
		}
		x := Ratio{Point: p.Label, Peer: q.Label, PeerTool: pr.Tool, Throughput: ratio(MedianTokensPerSec(&p), MedianTokensPerSec(q)), Memory: Float(math.NaN())}
		a, aSrc := p.PeakGPUBytes, p.GPUSource
		b, bSrc := peerGPUPeak(q)
		switch {
		case a > 0 && b > 0:
			x.Memory, x.MemoryBasis = Float(float64(a)/float64(b)), fmt.Sprintf("GPU: %s vs %s", aSrc, bSrc)
		case p.PeakRSSBytes > 0 && q.PeakRSSBytes > 0 && a == 0 && b == 0:
			x.Memory, x.MemoryBasis = Float(float64(p.PeakRSSBytes)/float64(q.PeakRSSBytes)), "host RSS"
		}
		out = append(out, x)
	}
	return out
}

// peerGPUPeak is a peer point's GPU peak: its NVML figure where it measured one, else
// torch's reserved (what the caching allocator holds, the closest to what NVML sees
// short of the CUDA context), else allocated.
func peerGPUPeak(q *Point) (uint64, string) {
	switch {
	case q.PeakGPUBytes > 0:
		return q.PeakGPUBytes, orDefault(q.GPUSource, "peak")
	case q.PeakGPUReservedBytes > 0:
		return q.PeakGPUReservedBytes, "torch reserved"
	case q.PeakGPUAllocatedBytes > 0:
		return q.PeakGPUAllocatedBytes, "torch allocated"
	}
	return 0, ""
}

// MedianTokensPerSec is p's throughput at its median step: tokens/s (the summed step times)
// scaled by mean ÷ median step time, so one slow step does not move a comparison. Speed
// ratios between tools use it; tokens/s is reported as measured.
func MedianTokensPerSec(p *Point) Float {
	if !(p.StepTime.P50MS > 0) || !(p.StepTime.MeanMS > 0) {
		return p.TokensPerSec
	}
	return p.TokensPerSec * p.StepTime.MeanMS / p.StepTime.P50MS
}

func ratio(a, b Float) Float {
	if !(b > 0) || math.IsNaN(float64(a)) || math.IsInf(float64(a), 0) {
		return Float(math.NaN())
	}
	return a / b
}

// MarkdownOptions adds what is not in the Result itself.
type MarkdownOptions struct {
	Peers Peers
	// Figures are image files written beside report.md (shown in this order).
	Figures []string
}

// Markdown renders the report; deterministic for a given Result and options.
func Markdown(r *Result, o MarkdownOptions) (string, error) {
	var b strings.Builder
	writeMachine(&b, r)
	all := append([]*Result{r}, o.Peers...)
	b.WriteString("\n## Results\n\n")
	b.WriteString(Summary(r, o.Peers))
	writePerPoint(&b, all)
	arena := writeArena(&b, r.Points)
	writeBreakdown(&b, r.Points)
	if len(o.Figures) > 0 {
		b.WriteString("\n## Figures\n\n")
		for _, f := range o.Figures {
			fmt.Fprintf(&b, "![%s](%s)\n\n", strings.TrimSuffix(f, ".png"), f)
		}
	}
	writeMethod(&b, arena)
	writeNotes(&b, all)
	if err := writeConfig(&b, r); err != nil {
		return "", err
	}
	return b.String(), nil
}

// writeConfig ends a report with its configuration as an option/value table.
func writeConfig(b *strings.Builder, r *Result) error {
	if r.Config == nil {
		return nil
	}
	rows, err := runreport.Flatten(r.Config, true)
	if err != nil {
		return err
	}
	b.WriteString("\n## Configuration\n\n| option | value |\n|---|---|\n")
	for _, kv := range rows {
		fmt.Fprintf(b, "| %s | %s |\n", mdEscape(kv[0]), mdEscape(kv[1]))
	}
	return nil
}

// writeMachine opens the report with the machine, runtime and workload.
func writeMachine(b *strings.Builder, r *Result) {
	m := r.Machine
	b.WriteString("# ortq bench\n\n| | |\n|---|---|\n")
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(b, "| %s | %s |\n", k, mdEscape(v))
		}
	}
	row("ortq commit", m.Commit)
	row("runtime", m.Runtime)
	dev := ""
	if len(r.Points) > 0 {
		dev = r.Points[0].Device
	}
	if len(m.GPUs) > 0 {
		var gs []string
		for _, g := range m.GPUs {
			gs = append(gs, fmt.Sprintf("%d: %s (%s)", g.Index, g.Name, fbytes(g.Memory)))
		}
		drv := ""
		if m.Driver != "" {
			drv = ", driver " + m.Driver
			if m.CUDADriver != "" {
				drv += " (CUDA " + m.CUDADriver + ")"
			}
		}
		row("GPUs", strings.Join(gs, "; ")+drv)
	}
	row("device", dev)
	host := m.Hostname
	if m.CPU != "" {
		host += ": " + m.CPU
	}
	if m.Cores > 0 || m.Threads > 0 {
		host += fmt.Sprintf(", %d cores / %d threads", m.Cores, m.Threads)
	}
	if m.HostMemory > 0 {
		host += ", " + fbytes(m.HostMemory)
	}
	row("host", strings.TrimPrefix(host, ": "))
	if !r.CreatedAt.IsZero() {
		row("created", r.CreatedAt.UTC().Format(time.RFC3339))
	}
	if r.ReferenceMS > 0 {
		row("reference", fmt.Sprintf("%.2f ms (256×256 float32 matmul in pure Go, fastest of 7; `compare` scales throughput by it)", float64(r.ReferenceMS)))
	}
	switch {
	case len(r.Points) > 0 && r.Points[0].Generate != nil:
		p := r.Points[0]
		row("workload", fmt.Sprintf("generation: seeded random prompt ids, greedy, EOS ignored, warm-up %d + %d measured generations", p.Warmup, p.Steps))
	case len(r.Points) > 0:
		p := r.Points[0]
		row("workload",
			fmt.Sprintf("synthetic tokens (seeded; every position real, labels = ids), warm-up %d + %d measured optimizer steps, one micro-batch per step, AdamW",
				p.Warmup, p.Steps))
	}
}

// writePerPoint is the FLOPs, MFU, skips and final loss of every point.
func writePerPoint(b *strings.Builder, all []*Result) {
	b.WriteString("\n## Per point\n\n| tool | point | FLOPs/step (model / with recompute) | achieved TFLOP/s | MFU / HFU | steps skipped | final loss | " +
		"prepare (s) |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range all {
		for _, p := range res.Points {
			fl, tf := "n/a", "n/a"
			if p.FLOPs != nil {
				fl = fmt.Sprintf("%s / %s", fsci(p.FLOPs.ModelPerStep), fsci(p.FLOPs.HardwarePerStep))
				if p.StepTime.MeanMS > 0 && p.TokensPerSec > 0 {
					// achieved = FLOPs per token × tokens per second
					tf = fmt.Sprintf("%.2f", p.FLOPs.ModelPerStep/float64(p.TokensPerStep)*float64(p.TokensPerSec)/1e12)
				}
			}
			final := "n/a"
			if n := len(p.Losses); n > 0 {
				final = fnum(p.Losses[n-1], 4)
			}
			prep := "–" // artifacts reused
			if p.PrepareSeconds > 0 {
				prep = fnum(p.PrepareSeconds, 1)
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s / %s | %d | %s | %s |\n", mdEscape(res.Tool), mdEscape(p.Label), fl, tf,
				fpct(p.MFU), fpct(p.HFU), p.SkippedSteps, final, prep)
		}
	}
}

// writeArena is ONNX Runtime's arena statistics of the points that have them; it reports
// whether there were any.
func writeArena(b *strings.Builder, pts []Point) bool {
	arena := false
	for _, p := range pts {
		arena = arena || p.ORTArena != nil
	}
	if !arena {
		return false
	}
	b.WriteString("\n## ONNX Runtime's arena\n\n| point | device | in use after the last step | peak in use | reserved | peak GPU (NVML) | allocations | " +
		"arena extensions | largest allocation |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range pts {
		a := p.ORTArena
		if a == nil {
			continue
		}
		nvml := "n/a"
		if p.PeakGPUBytes > 0 {
			nvml = fmt.Sprintf("%s (%s)", fbytes(p.PeakGPUBytes), p.GPUSource)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %d | %d | %s |\n", mdEscape(p.Label), a.Device,
			fbytes(nonNeg(a.InUse)), fbytes(nonNeg(a.PeakInUse)), fbytes(nonNeg(a.Reserved)), nvml,
			a.NumAllocs, a.NumArenaExtensions, fbytes(nonNeg(a.MaxAllocSize)))
	}
	return true
}

// writeMethod says how every figure was measured.
func writeMethod(b *strings.Builder, arena bool) {
	b.WriteString("\n## Method\n\n")
	b.WriteString("- tokens/s = micro-batch × seq-len × measured steps ÷ their summed wall time; a step is one micro-batch's forward + backward on ONNX " +
		"Runtime, loss-scale unscaling and the AdamW update (in Go memory with step host; inside the step graph, in device memory, with step device or " +
		"graph).\n")
	b.WriteString("- FLOPs (bench/flops.go): N = Linear weights incl. lm_head, P = LoRA weights, A = 2·L·T·S·d (causal attention); model FLOPs = 4·N·T + " +
		"6·P·T + 3·A (frozen base: no weight gradients); with recompute add one decoder forward. MFU = model FLOPs/s ÷ dense fp16 peak; HFU counts the " +
		"recompute.\n")
	b.WriteString("- peak GPU: nvml-process = NVML's used memory of this process (CUDA context included); nvml-device-delta = device used minus before the " +
		"run (when the driver hides per-process use, e.g. in containers); sampled every ~10 ms and at every step boundary, over session creation and the " +
		"training steps (evaluation excluded). Peers: NVML where they measured it, else torch's reserved.\n")
	if arena {
		b.WriteString("- ONNX Runtime's arena: AllocatorGetStats of the training session's allocator for its device (the CUDA arena on CUDA, the CPU arena on " +
			"the CPU), read after the last measured step: in use = what the arena hands out then, peak in use = its high-water mark since the session opened " +
			"(initializers included), reserved = what the arena holds from the device (TotalAllocated). NVML's peak is larger by the CUDA context, " +
			"cuBLAS/cuDNN workspaces and memory outside the arena.\n")
	}
	b.WriteString("- peak host RSS: the kernel's high-water mark (VmHWM, reset before each point's training phase) and 10 ms samples; memory the allocators " +
		"kept from earlier points stays counted.\n")
}

// writeNotes lists the results' and points' notes.
func writeNotes(b *strings.Builder, all []*Result) {
	var notes []string
	for _, res := range all {
		for _, n := range res.Notes {
			notes = append(notes, res.Tool+": "+n)
		}
		for _, p := range res.Points {
			for _, n := range p.Notes {
				notes = append(notes, fmt.Sprintf("%s %s: %s", res.Tool, p.Label, n))
			}
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range notes {
			fmt.Fprintf(b, "- %s\n", mdEscape(n))
		}
	}
}

// Summary is the results table (ortq's points, then the peers') and, with peers, the
// ortq ÷ peer ratios: what `ortq bench` prints and report.md opens with.
func Summary(r *Result, peers Peers) string {
	var b strings.Builder
	all := append([]*Result{r}, peers...)
	b.WriteString("| tool | micro-batch | seq | bits | recompute | targets | step | tokens/s | step p50 / p95 (ms) | peak GPU | peak host RSS | MFU | eval " +
		"ppl before → after |\n")
	b.WriteString("|---|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, res := range all {
		for _, p := range res.Points {
			gpu := "n/a"
			if v, src := peerGPUPeak(&p); v > 0 {
				gpu = fmt.Sprintf("%s (%s)", fbytes(v), src)
			}
			ppl := "n/a"
			if p.Eval != nil {
				ppl = fmt.Sprintf("%s → %s", fnum(p.Eval.Before.Perplexity, 2), fnum(p.Eval.After.Perplexity, 2))
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s |\n",
				mdEscape(res.Tool), p.Params.MicroBatch, p.Params.SeqLen, p.Params.Bits, orNone(p.Params.Recompute),
				mdEscape(joinComma(p.Params.Targets)), orDefault(string(p.Params.Step), "–"), ftps(p.TokensPerSec), fnum(p.StepTime.P50MS, 1), fnum(p.StepTime.P95MS, 1),
				gpu, fbytes(p.PeakRSSBytes), fpct(p.MFU), ppl)
		}
	}

	if rs := Ratios(r, peers); len(rs) > 0 {
		b.WriteString("\n| ortq point | peer point | speed ortq ÷ peer (median steps) | peak memory ortq ÷ peer | memory compared |\n|---|---|---:|---:|---|\n")
		for _, x := range rs {
			fmt.Fprintf(&b, "| %s | %s: %s | %s | %s | %s |\n", mdEscape(x.Point), mdEscape(x.PeerTool), mdEscape(x.Peer),
				fx(x.Throughput), fx(x.Memory), mdEscape(orDefault(x.MemoryBasis, "n/a")))
		}
	}
	if fs := AtPeerMemory(r, peers); len(fs) > 0 {
		b.WriteString("\nWithin the peer's peak memory (the fastest ortq point that needs no more, any recomputation or micro-batch):\n\n")
		b.WriteString("| peer point | its peak | fastest ortq point within it | its peak | speed ortq ÷ peer (median steps) |\n|---|---:|---|---:|---:|\n")
		for _, f := range fs {
			pm, _ := peakMemory(f.Peer)
			om, _ := peakMemory(f.Ours)
			fmt.Fprintf(&b, "| %s: %s | %s | %s | %s | %s |\n", mdEscape(f.PeerTool), mdEscape(f.Peer.Params.Label()), fbytes(pm),
				mdEscape(f.Ours.Params.Label()), fbytes(om), fx(Float(f.Ratio)))
		}
	}

	return b.String()
}

// WriteMarkdown writes Markdown(r, o) to path, atomically.
func WriteMarkdown(path string, r *Result, o MarkdownOptions) error {
	md, err := Markdown(r, o)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error { _, err := w.WriteString(md); return err })
}

func fnum(f Float, prec int) string {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// ftps formats tokens/s: thousands separators above 1000, one decimal below.
func ftps(f Float) string {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
		return "n/a"
	}
	if v < 1000 {
		return fmt.Sprintf("%.1f", v)
	}
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func fpct(f Float) string {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f %%", 100*v)
}

func fx(f Float) string {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", v)
}

func fsci(v float64) string {
	if v <= 0 || math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.3g", v)
}

// Byte sizes and Markdown cells are formatted as in the training report.
var (
	fbytes   = runreport.FormatBytes
	mdEscape = runreport.MarkdownEscape
)

// nonNeg converts an ONNX Runtime byte count (int64) for fbytes; negative counts read as 0.
func nonNeg(n int64) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(n)
}

// writeBreakdown adds the peak-memory breakdown table of the points that have one.
func writeBreakdown(b *strings.Builder, pts []Point) {
	head := false
	for _, p := range pts {
		m := p.Memory
		if m == nil {
			continue
		}
		if !head {
			b.WriteString("\n## Where the peak GPU memory goes\n\n| point | peak GPU (NVML) | weights | LoRA + optimizer state | activations and workspace (arena " +
				"peak) | arena slack | outside the arena |\n|---|---:|---:|---:|---:|---:|---:|\n")
			head = true
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", mdEscape(p.Label), fbytes(p.PeakGPUBytes),
			fbytes(uint64(m.Weights)), fbytes(uint64(m.StepState)), fbytes(uint64(m.Activations)), fbytes(uint64(m.ArenaSlack)), fbytes(uint64(m.OutsideArena)))
	}
}
