package train

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/internal/runreport"

	"github.com/montanaflynn/stats"
)

// Float is a float64 that encodes NaN and ±Inf as JSON null, so a report of a
// diverged run (NaN loss, Inf perplexity) can still be written.
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(v)
}

// UnmarshalJSON implements json.Unmarshaler (null reads back as NaN).
func (f *Float) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = Float(math.NaN())
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = Float(v)
	return nil
}

// EvalResult is one evaluation pass.
type EvalResult struct {
	Step       int   `json:"step"`
	Loss       Float `json:"loss"`       // mean loss per counted token
	Perplexity Float `json:"perplexity"` // exp(Loss)
	Tokens     int64 `json:"tokens"`
}

// NewEvalResult turns an eval pass's loss sum and token count (the graph's
// outputs, summed over batches) into mean loss and perplexity.
func NewEvalResult(step int, lossSum float64, tokens int64) EvalResult {
	loss := math.NaN()
	if tokens > 0 {
		loss = lossSum / float64(tokens)
	}
	return EvalResult{Step: step, Loss: Float(loss), Perplexity: Float(math.Exp(loss)), Tokens: tokens}
}

// DurationStats summarises step times in milliseconds.
type DurationStats struct {
	Count  int   `json:"count"`
	MeanMS Float `json:"mean_ms"`
	P50MS  Float `json:"p50_ms"`
	P95MS  Float `json:"p95_ms"`
	MinMS  Float `json:"min_ms"`
	MaxMS  Float `json:"max_ms"`
}

// SummarizeDurations computes mean and percentiles with montanaflynn/stats
// (its Percentile interpolates between closest ranks, NumPy's default).
func SummarizeDurations(ds []time.Duration) (DurationStats, error) {
	if len(ds) == 0 {
		return DurationStats{}, errors.New("no step times recorded")
	}
	ms := make(stats.Float64Data, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	var out DurationStats
	out.Count = len(ds)
	var err error
	get := func(f func(stats.Float64Data) (float64, error)) Float {
		v, e := f(ms)
		if e != nil && err == nil {
			err = e
		}
		return Float(v)
	}
	out.MeanMS = get(stats.Mean)
	out.P50MS = get(func(d stats.Float64Data) (float64, error) { return stats.Percentile(d, 50) })
	out.P95MS = get(func(d stats.Float64Data) (float64, error) { return stats.Percentile(d, 95) })
	out.MinMS = get(stats.Min)
	out.MaxMS = get(stats.Max)
	return out, err
}

// GradNormStats summarizes the gradient norms (before clipping) of a run's steps with a
// finite norm, as Hugging Face Trainer logs grad_norm.
type GradNormStats struct {
	Steps int   `json:"steps"` // steps with a finite norm
	Last  Float `json:"last"`
	Mean  Float `json:"mean"`
	Max   Float `json:"max"`
	// MaxGradNorm is the clipping threshold (0: off); Clipped counts the steps whose norm
	// exceeded it.
	MaxGradNorm Float `json:"max_grad_norm"`
	Clipped     int   `json:"clipped_steps"`
}

// SummarizeGradNorms returns the statistics of the finite norms (nil when there are none).
func SummarizeGradNorms(norms []Float, maxNorm float64) *GradNormStats {
	s := &GradNormStats{MaxGradNorm: Float(maxNorm)}
	sum := 0.0
	for _, n := range norms {
		v := float64(n)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		s.Steps++
		sum += v
		s.Last, s.Max = n, max(s.Max, n)
		if maxNorm > 0 && v > maxNorm {
			s.Clipped++
		}
	}
	if s.Steps == 0 {
		return nil
	}
	s.Mean = Float(sum / float64(s.Steps))
	return s
}

// Report is the run report written at the end of `ortq train`.
type Report struct {
	// Config is any JSON-encodable value (the resolved options); Markdown
	// shows it flattened to dotted keys.
	Config          any           `json:"config"`
	StartedAt       time.Time     `json:"started_at"`
	WallTime        time.Duration `json:"wall_time_ns"`
	OptimizerSteps  int           `json:"optimizer_steps"`
	SkippedSteps    int           `json:"skipped_steps"` // fp16 overflow skips
	Epochs          Float         `json:"epochs"`
	TrainTokens     int64         `json:"train_tokens"`
	Baseline        EvalResult    `json:"baseline_eval"`
	Final           EvalResult    `json:"final_eval"`
	EvalHistory     []EvalResult  `json:"eval_history,omitempty"`
	TokensPerSecond Float         `json:"tokens_per_second"`
	StepTime        DurationStats `json:"step_time"`
	PeakRSSBytes    uint64        `json:"peak_rss_bytes"`
	// GradNorm summarizes the steps' gradient norms (nil when no step recorded one).
	GradNorm *GradNormStats `json:"grad_norm,omitempty"`
	// PeakGPUBytes is the highest GPU memory the run log sampled (0 without a GPU).
	PeakGPUBytes uint64 `json:"peak_gpu_bytes,omitempty"`
	// PeakGPUPerDevice is each device's highest sampled GPU memory, by device name, when the
	// run spans several devices.
	PeakGPUPerDevice map[string]uint64 `json:"peak_gpu_per_device_bytes,omitempty"`
	// RunLog names the JSONL memory and progress log, when one was written.
	RunLog string `json:"run_log,omitempty"`
	// Samples are the last round of greedy completions of the sample prompts.
	Samples []Sample `json:"samples,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// WriteJSON writes the report as indented JSON, atomically.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	b = append(b, '\n')
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error { _, err := w.Write(b); return err })
}

// WriteMarkdown writes Markdown(), atomically.
func (r *Report) WriteMarkdown(path string) error {
	md, err := r.Markdown()
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error { _, err := w.WriteString(md); return err })
}

// Markdown renders the report for humans; deterministic for a given Report.
func (r *Report) Markdown() (string, error) {
	var b strings.Builder
	b.WriteString("# ortq training report\n\n")
	if !r.StartedAt.IsZero() {
		fmt.Fprintf(&b, "Started %s, wall time %s.\n\n", r.StartedAt.UTC().Format(time.RFC3339), r.WallTime.Round(time.Second))
	}
	b.WriteString("## Evaluation\n\n")
	b.WriteString("| | baseline | final | change |\n|---|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| eval loss | %s | %s | %s |\n", fnum(r.Baseline.Loss, 4), fnum(r.Final.Loss, 4), fdelta(r.Baseline.Loss, r.Final.Loss))
	fmt.Fprintf(&b, "| perplexity | %s | %s | %s |\n", fnum(r.Baseline.Perplexity, 3), fnum(r.Final.Perplexity, 3),
		fpct(r.Baseline.Perplexity, r.Final.Perplexity))
	fmt.Fprintf(&b, "| eval tokens | %d | %d | |\n", r.Baseline.Tokens, r.Final.Tokens)
	if len(r.EvalHistory) > 0 {
		b.WriteString("\n| step | eval loss | perplexity |\n|---:|---:|---:|\n")
		for _, e := range r.EvalHistory {
			fmt.Fprintf(&b, "| %d | %s | %s |\n", e.Step, fnum(e.Loss, 4), fnum(e.Perplexity, 3))
		}
	}
	b.WriteString("\n## Training\n\n| | |\n|---|---:|\n")
	fmt.Fprintf(&b, "| optimizer steps | %d |\n", r.OptimizerSteps)
	fmt.Fprintf(&b, "| skipped steps (overflow) | %d |\n", r.SkippedSteps)
	fmt.Fprintf(&b, "| epochs | %s |\n", fnum(r.Epochs, 2))
	fmt.Fprintf(&b, "| tokens trained | %d |\n", r.TrainTokens)
	fmt.Fprintf(&b, "| tokens/s | %s |\n", fnum(r.TokensPerSecond, 1))
	if r.StepTime.Count > 0 {
		fmt.Fprintf(&b, "| step time p50 / p95 / mean (ms) | %s / %s / %s |\n", fnum(r.StepTime.P50MS, 1), fnum(r.StepTime.P95MS, 1), fnum(r.StepTime.MeanMS, 1))
	} else {
		b.WriteString("| step time p50 / p95 / mean (ms) | n/a |\n")
	}
	if g := r.GradNorm; g != nil {
		fmt.Fprintf(&b, "| gradient norm last / mean / max | %s / %s / %s |\n", fnum(g.Last, 4), fnum(g.Mean, 4), fnum(g.Max, 4))
		if g.MaxGradNorm > 0 {
			fmt.Fprintf(&b, "| steps clipped (norm > %g) | %d of %d |\n", float64(g.MaxGradNorm), g.Clipped, g.Steps)
		}
	}
	fmt.Fprintf(&b, "| peak host RSS | %s |\n", runreport.FormatBytes(r.PeakRSSBytes))
	if r.PeakGPUBytes > 0 {
		fmt.Fprintf(&b, "| peak GPU memory (sampled) | %s |\n", runreport.FormatBytes(r.PeakGPUBytes))
	}
	if len(r.PeakGPUPerDevice) > 0 {
		var per []string
		for _, d := range slices.Sorted(maps.Keys(r.PeakGPUPerDevice)) {
			per = append(per, d+" "+runreport.FormatBytes(r.PeakGPUPerDevice[d]))
		}
		fmt.Fprintf(&b, "| peak GPU memory per device (sampled) | %s |\n", runreport.MarkdownEscape(strings.Join(per, ", ")))
	}
	if r.RunLog != "" {
		fmt.Fprintf(&b, "| memory and progress log | %s |\n", runreport.MarkdownEscape(r.RunLog))
	}
	b.WriteString(samplesMarkdown(r.Samples))
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", runreport.MarkdownEscape(n))
		}
	}
	if r.Config != nil {
		rows, err := runreport.Flatten(r.Config, false)
		if err != nil {
			return "", err
		}
		b.WriteString("\n## Configuration\n\n| option | value |\n|---|---|\n")
		for _, kv := range rows {
			fmt.Fprintf(&b, "| %s | %s |\n", runreport.MarkdownEscape(kv[0]), runreport.MarkdownEscape(kv[1]))
		}
	}
	return b.String(), nil
}

func fnum(f Float, prec int) string {
	v := float64(f)
	if math.IsNaN(v) {
		return "n/a"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func fdelta(a, b Float) string {
	d := float64(b - a)
	if math.IsNaN(d) || math.IsInf(d, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%+.4f", d)
}

func fpct(a, b Float) string {
	if !(a > 0) || math.IsInf(float64(a), 0) || math.IsNaN(float64(b)) || math.IsInf(float64(b), 0) {
		return "n/a"
	}
	return fmt.Sprintf("%+.1f %%", 100*float64(b-a)/float64(a))
}
