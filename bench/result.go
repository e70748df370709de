package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/train"
)

// Schema names the JSON layout of Result; bench/peer/torch_peft.py writes the same.
const Schema = "ortq-bench/1"

// ToolOrtq is Result.Tool for ortq's own runs.
const ToolOrtq = "ortq"

// Float encodes NaN/Inf as JSON null (a figure that could not be measured).
type Float = train.Float

// Result is one benchmark run: the machine, the configuration and one Point per sweep
// point. Peers (bench/peer/torch_peft.py) write the same schema.
type Result struct {
	Schema    string    `json:"schema"`
	Tool      string    `json:"tool"` // "ortq", "torch+peft", …
	CreatedAt time.Time `json:"created_at"`
	Machine   Machine   `json:"machine"`
	// Config is the harness configuration as run (Config for ortq; the peer's own
	// flags for a peer).
	Config any `json:"config,omitempty"`
	// ReferenceMS is the time of a fixed pure-Go computation (ReferenceWork) measured in
	// the same process; `compare` divides throughput by machine speed with it.
	ReferenceMS Float    `json:"reference_ms"`
	Points      []Point  `json:"points"`
	Notes       []string `json:"notes,omitempty"`

	// Timeline is the memory monitor's samples (written to memory.jsonl, not report.json).
	Timeline []MemSample `json:"-"`
}

// Machine describes where the run happened.
type Machine struct {
	Hostname   string            `json:"hostname,omitempty"`
	OS         string            `json:"os,omitempty"`
	CPU        string            `json:"cpu,omitempty"`
	Cores      int               `json:"cores,omitempty"`       // physical
	Threads    int               `json:"threads,omitempty"`     // logical
	HostMemory uint64            `json:"host_memory,omitempty"` // bytes
	GPUs       []GPU             `json:"gpus,omitempty"`
	Driver     string            `json:"gpu_driver,omitempty"`
	CUDADriver string            `json:"cuda_driver,omitempty"` // e.g. "13.0"
	Runtime    string            `json:"runtime,omitempty"`     // "ONNX Runtime 1.29.0" / "torch 2.11.0+cu130"
	RuntimeLib string            `json:"runtime_lib,omitempty"`
	Go         string            `json:"go,omitempty"`
	Commit     string            `json:"commit,omitempty"` // ortq's git commit ("+dirty" when modified)
	Extra      map[string]string `json:"extra,omitempty"`  // peers: library versions
}

// GPU is one device as NVML names it.
type GPU struct {
	Index  int    `json:"index"`
	Name   string `json:"name"`
	Memory uint64 `json:"memory"` // bytes
	UUID   string `json:"uuid,omitempty"`
}

// Params are the options a sweep point varies.
type Params struct {
	MicroBatch int      `json:"micro_batch"`
	SeqLen     int      `json:"seq_len"`
	Bits       int      `json:"bits"`      // 4 or 16 (base weights)
	Recompute  string   `json:"recompute"` // "none" or "layer" (gradient checkpointing)
	Targets    []string `json:"targets,omitempty"`
	// Step is how the optimizer step runs: train.StepHost, StepDevice or StepGraph ("": host).
	Step train.StepKind `json:"step,omitempty"`
}

// Point is one measured configuration.
type Point struct {
	Label  string `json:"label"`
	Params Params `json:"params"`
	Device string `json:"device"`
	// Precision of the base/activations: "float16", "float32".
	Precision     string              `json:"precision,omitempty"`
	Warmup        int                 `json:"warmup"`
	Steps         int                 `json:"steps"`
	TokensPerStep int                 `json:"tokens_per_step"` // micro-batch × seq-len, all real tokens
	TokensPerSec  Float               `json:"tokens_per_second"`
	StepTime      train.DurationStats `json:"step_time"`
	SkippedSteps  int                 `json:"skipped_steps,omitempty"` // fp16 overflow skips (still timed)
	Losses        []Float             `json:"losses,omitempty"`        // mean loss per step, warm-up included

	// PeakGPUBytes is this process's peak GPU memory, by GPUSource: "nvml-process" (NVML's
	// per-process used memory), "nvml-device-delta" (device used minus before the run),
	// "torch-allocator" (peers without NVML: max_memory_reserved). 0 = not measured.
	PeakGPUBytes uint64 `json:"peak_gpu_bytes,omitempty"`
	GPUSource    string `json:"gpu_source,omitempty"`
	// PeakGPUDeviceBytes is the device's peak used memory, every process included.
	PeakGPUDeviceBytes uint64 `json:"peak_gpu_device_bytes,omitempty"`
	// Allocator peaks (peers: torch.cuda.max_memory_allocated / max_memory_reserved).
	PeakGPUAllocatedBytes uint64 `json:"peak_gpu_allocated_bytes,omitempty"`
	PeakGPUReservedBytes  uint64 `json:"peak_gpu_reserved_bytes,omitempty"`
	PeakRSSBytes          uint64 `json:"peak_rss_bytes,omitempty"`
	// ORTArena is ONNX Runtime's own account of the training session's memory after the last
	// measured step (AllocatorGetStats of its arena: the CUDA arena on CUDA, the CPU arena on
	// the CPU): in use, peak in use and reserved, beside NVML's process peak. nil for peers and
	// where the allocator keeps no statistics.
	ORTArena *ortrun.ArenaStats `json:"ort_arena,omitempty"`
	// SharedWeightBytes is the part of the weights the training session reads from one
	// buffer outside its arena (the device step's shared 4-bit weights; 0 = none).
	SharedWeightBytes int64 `json:"shared_weight_bytes,omitempty"`
	// Memory splits PeakGPUBytes into weights, step state, activations, arena slack and what
	// lies outside the arena (nil where the arena keeps no statistics or NVML was not read).
	Memory *MemoryBreakdown `json:"memory_breakdown,omitempty"`

	FLOPs *FLOPs `json:"flops,omitempty"`
	// MFU is model FLOPs/s (FLOPs.ModelPerStep, no recompute) ÷ PeakFLOPS; HFU counts
	// the recomputed forward too. null without a known peak.
	MFU       Float `json:"mfu"`
	HFU       Float `json:"hfu"`
	PeakFLOPS Float `json:"peak_flops"`

	Eval *EvalSummary `json:"eval,omitempty"`
	// Generate holds a `bench generate` point's figures (nil for training points).
	Generate *GenerateFigures `json:"generate,omitempty"`
	// PrepareSeconds is the time `prepare` took for this point (0: artifacts reused).
	PrepareSeconds Float    `json:"prepare_seconds,omitempty"`
	Notes          []string `json:"notes,omitempty"`
}

// EvalSummary is eval perplexity before and after the point's steps.
type EvalSummary struct {
	Batches int              `json:"batches"`
	Before  train.EvalResult `json:"before"`
	After   train.EvalResult `json:"after"`
}

// WriteJSON writes r as indented JSON, atomically.
func (r *Result) WriteJSON(path string) error {
	b, err := r.JSON()
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, 0o644, func(w *bufio.Writer) error { _, err := w.Write(b); return err })
}

// JSON encodes r as written to report.json.
func (r *Result) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode bench result: %w", err)
	}
	return append(b, '\n'), nil
}

// ReadResult reads a report.json (ortq's or a peer's).
func ReadResult(path string) (*Result, error) {
	b, err := fsutil.ReadLimited(path, "bench result", 64<<20)
	if err != nil {
		return nil, fmt.Errorf("bench result: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench result %q: not valid JSON: %w", path, err)
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("bench result %q: schema %q, want %q (written by `ortq bench` or bench/peer/torch_peft.py)", path, r.Schema, Schema)
	}
	if len(r.Points) == 0 {
		return nil, fmt.Errorf("bench result %q has no points", path)
	}
	if r.Tool == "" {
		r.Tool = "peer"
	}
	for i := range r.Points {
		p := &r.Points[i]
		if p.Label == "" {
			p.Label = p.Params.Label()
		}
	}
	return &r, nil
}

// Label is the point's name in tables and in `compare`: every swept option.
func (p Params) Label() string {
	s := fmt.Sprintf("mb=%d seq=%d bits=%d recompute=%s", p.MicroBatch, p.SeqLen, p.Bits, orNone(p.Recompute))
	if len(p.Targets) > 0 {
		s += " targets=" + joinComma(p.Targets)
	}
	if p.Step != "" && p.Step != train.StepHost {
		s += " step=" + string(p.Step)
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func joinComma(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
