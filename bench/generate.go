package bench

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/generate"
	"github.com/ortq/ortq/internal/runreport"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
)

// GenerateConfig is `ortq bench generate`: an export decoded with seeded random prompts of
// PromptTokens ids, Batch rows together, NewTokens new tokens each (EOS ignored, greedy),
// Warmup unmeasured generations first, then Runs measured ones.
type GenerateConfig struct {
	Model        string         `json:"model"` // directory written by ortq export
	Device       string         `json:"device"`
	Threads      int            `json:"threads"`
	Batch        int            `json:"batch"`
	PromptTokens int            `json:"prompt_tokens"`
	NewTokens    int            `json:"new_tokens"`
	Warmup       int            `json:"warmup"`
	Runs         int            `json:"runs"`
	Seed         uint64         `json:"seed"`
	CUDAGraph    bool           `json:"cuda_graph"`
	SampleMS     int            `json:"sample_ms"`
	Session      ortrun.Options `json:"-"`
}

// Validate names the first flag out of range.
func (c *GenerateConfig) Validate() error {
	for _, f := range []struct {
		name string
		v    int
		min  int
	}{{"--batch", c.Batch, 1}, {"--prompt-tokens", c.PromptTokens, 1}, {"--new-tokens", c.NewTokens, 2}, {"--warmup", c.Warmup, 0}, {"--runs", c.Runs, 1}} {
		if f.v < f.min {
			return fmt.Errorf("%s %d: must be at least %d", f.name, f.v, f.min)
		}
	}
	if c.Model == "" {
		return fmt.Errorf("--model is required: a directory written by ortq export")
	}
	return nil
}

// GenerateFigures are a generation point's speeds, all rows together.
type GenerateFigures struct {
	Batch        int    `json:"batch"`
	PromptTokens int    `json:"prompt_tokens"` // per row
	NewTokens    int    `json:"new_tokens"`    // per row
	KVCache      string `json:"kv_cache,omitempty"`
	// Fused is the export's decode-graph fusions (generate.Model.Fused).
	Fused     string `json:"fused,omitempty"`
	CUDAGraph bool   `json:"cuda_graph"`
	// PrefillTokensPerSec is prompt tokens (all rows) over the prefill's wall time, which
	// TimeToFirstTokenMS is (the first new token of every row included), mean over runs.
	PrefillTokensPerSec Float `json:"prefill_tokens_per_second"`
	TimeToFirstTokenMS  Float `json:"time_to_first_token_ms"`
	// DecodeTokensPerSec counts the tokens after each row's first over the decode steps'
	// wall time; TokenLatency is one decode step's time (every row's next token).
	DecodeTokensPerSec Float               `json:"decode_tokens_per_second"`
	TokenLatency       train.DurationStats `json:"token_latency"`
}

// RunGenerate measures c and returns a Result of one point whose Generate holds the
// figures (TokensPerSec: decode tokens/s; StepTime: the per-token latency), with the peak
// GPU memory (NVML) and host RSS from opening the model to closing it.
func RunGenerate(c GenerateConfig) (*Result, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	res := &Result{Schema: Schema, Tool: ToolOrtq, CreatedAt: start.UTC().Truncate(time.Second), Config: c}
	res.Machine = DescribeMachine()
	gpu, gerr := openGPU(c.Device)
	if gerr != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("GPU memory not measured: %v", gerr))
	}
	interval := time.Duration(max(c.SampleMS, 1)) * time.Millisecond
	mon := newMonitor(start, interval, gpu)
	_ = resetPeakRSS()
	rss := runreport.NewRSSMonitor(max(interval, 10*time.Millisecond), nil)
	rss.Start()
	label := fmt.Sprintf("generate batch %d prompt %d new %d", c.Batch, c.PromptTokens, c.NewTokens)
	mon.begin(label, "open")
	pt, notes, err := openAndMeasure(c, mon, label)
	gp := mon.end()
	peakRSS := rss.Stop()
	if err != nil {
		return nil, err
	}
	pt.PeakGPUBytes, pt.PeakGPUDeviceBytes, pt.GPUSource, pt.PeakRSSBytes = gp.bytes, gp.device, gp.source, peakRSS
	res.Notes = append(res.Notes, notes...)
	res.Points = []Point{*pt}
	res.Timeline = mon.timeline()
	return res, nil
}

// openAndMeasure opens the export (with its own adapter when it is an onnx-adapter export,
// as ortq generate applies it), measures it and closes it; it returns the model's notes.
func openAndMeasure(c GenerateConfig, mon *monitor, label string) (*Point, []string, error) {
	opts := c.Session
	opts.Device, opts.IntraOpThreads, opts.CUDAGraph = c.Device, c.Threads, c.CUDAGraph
	m, err := generate.Open(c.Model, opts)
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	if ad := filepath.Join(c.Model, export.AdapterFile); m.AdapterInputs() > 0 && fileExists(ad) {
		if err := m.UseAdapter(ad); err != nil {
			return nil, nil, err
		}
	}
	pt, err := measureGenerate(m, c, mon, label)
	return pt, m.Notes, err
}

// measureGenerate runs the warm-up and measured generations and sums their figures.
func measureGenerate(m *generate.Model, c GenerateConfig, mon *monitor, label string) (*Point, error) {
	rng := rand.New(rand.NewPCG(c.Seed, 24))
	vocab := m.Config.Model.VocabSize
	prompts := make([][]int64, c.Batch)
	for b := range prompts {
		prompts[b] = make([]int64, c.PromptTokens)
		for i := range prompts[b] {
			prompts[b][i] = int64(rng.IntN(vocab))
		}
	}
	s, _ := generate.NewSampler(0, 0, 1, 0)
	o := generate.Options{MaxNewTokens: c.NewTokens, Sampler: s}
	var sum generate.Stats
	for i := 0; i < c.Warmup+c.Runs; i++ {
		phase := "warmup"
		if i >= c.Warmup {
			phase = "measure"
		}
		mon.mark(phase, i+1)
		_, st, err := m.GenerateBatch(prompts, o)
		if err != nil {
			return nil, err
		}
		if i >= c.Warmup {
			sum.Rows, sum.PromptTokens, sum.NewTokens = st.Rows, sum.PromptTokens+st.PromptTokens, sum.NewTokens+st.NewTokens
			sum.Prefill, sum.Decode, sum.Steps = sum.Prefill+st.Prefill, sum.Decode+st.Decode, append(sum.Steps, st.Steps...)
		}
	}
	lat, err := train.SummarizeDurations(sum.Steps)
	if err != nil {
		return nil, err
	}
	decode := perSecond(sum.NewTokens-c.Batch*c.Runs, sum.Decode)
	f := &GenerateFigures{Batch: c.Batch, PromptTokens: c.PromptTokens, NewTokens: c.NewTokens, KVCache: m.KVCache(), Fused: m.Fused(), CUDAGraph: m.Captured(),
		PrefillTokensPerSec: Float(perSecond(sum.PromptTokens, sum.Prefill)),
		TimeToFirstTokenMS:  Float(float64(sum.Prefill) / float64(time.Millisecond) / float64(c.Runs)),
		DecodeTokensPerSec:  Float(decode), TokenLatency: lat}
	return &Point{Label: label, Device: c.Device, Warmup: c.Warmup, Steps: c.Runs, TokensPerStep: c.Batch * c.NewTokens,
		TokensPerSec: Float(decode), StepTime: lat, Generate: f, Params: Params{MicroBatch: c.Batch, SeqLen: c.PromptTokens}}, nil
}

func perSecond(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
