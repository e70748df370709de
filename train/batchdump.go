package train

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/train/optim"
)

// The batch dump (Config.DumpBatches, `train --dump-batches FILE`) records what a run
// consumed, so that an outside reference (scripts/peft_loss_curve.py: PyTorch+PEFT) can
// replay it exactly: the optimizer settings, every evaluation batch, every training
// micro-batch of every optimizer step as the graph took it, and each step's and each
// evaluation's outcome. One JSON object a line, in this order:
//
//	{"kind":"run", ...DumpRun}                       once, first
//	{"kind":"eval_batch", "index":i, ...DumpBatch}   the evaluation batches, in order
//	{"kind":"eval", ...EvalResult}                   each evaluation (baseline first)
//	{"kind":"batch", "step":k, "micro":m, ...}       step k's micro-batches, after the step ran
//	{"kind":"step", ...DumpStep}                     step k's outcome
//
// Batches are data.Batch as the loop handed them to the Stepper: the host step feeds them
// as they are; the device steps pad each to their one fixed shape with positions that have
// no label and attend to nothing (padBatch), which changes neither loss nor gradients.
// Steps are written once they have run, so an interrupted run's dump holds its finished
// steps only. With the dump off nothing of this runs (a nil *batchDump records nothing).

// DumpRun is the first line of a batch dump: what a reference needs beside the batches.
type DumpRun struct {
	Kind        string                 `json:"kind"` // "run"
	Steps       int                    `json:"steps"`
	GradAccum   int                    `json:"grad_accum"`
	MicroBatch  int                    `json:"micro_batch"`
	Schedule    string                 `json:"schedule"`
	Warmup      int                    `json:"warmup_steps"`
	MaxGradNorm float64                `json:"max_grad_norm"`
	AdamW       optim.AdamWConfig      `json:"adamw"`  // LR is the peak rate; every parameter decays
	Scaler      optim.GradScalerConfig `json:"scaler"` // disabled for fp32 graphs
	FP16        bool                   `json:"fp16"`
	Seed        uint64                 `json:"seed"`
}

// DumpBatch is one micro-batch as the graph takes it: [Rows, SeqLen] row-major int64
// tensors (AttentionMask carries document ids, data.Batch), and Tokens, the labels the
// shifted loss counts.
type DumpBatch struct {
	Kind          string  `json:"kind"` // "batch" or "eval_batch"
	Step          int     `json:"step,omitempty"`
	Micro         int     `json:"micro"`
	Index         int     `json:"index"`
	LR            float64 `json:"lr,omitempty"`
	Rows          int     `json:"rows"`
	SeqLen        int     `json:"seq_len"`
	Tokens        int     `json:"tokens"`
	InputIDs      []int64 `json:"input_ids"`
	Labels        []int64 `json:"labels"`
	AttentionMask []int64 `json:"attention_mask"`
	PositionIDs   []int64 `json:"position_ids"`
}

// DumpStep is one optimizer step's outcome: the mean loss over its counted tokens, the
// gradient norm before clipping (null when not finite), its learning rate and whether the
// scaler skipped it.
type DumpStep struct {
	Kind     string  `json:"kind"` // "step"
	Step     int     `json:"step"`
	Loss     Float   `json:"loss"`
	GradNorm Float   `json:"grad_norm"`
	LR       float64 `json:"lr"`
	Tokens   int     `json:"tokens"`
	Scale    float32 `json:"scale"`
	Skipped  bool    `json:"skipped,omitempty"`
}

// DumpEval is one evaluation's result.
type DumpEval struct {
	Kind string `json:"kind"` // "eval"
	EvalResult
}

// batchDump writes a batch dump; its methods do nothing on a nil receiver.
type batchDump struct {
	path string
	f    *os.File
	w    *bufio.Writer
	enc  *json.Encoder
}

// openBatchDump creates path and writes the run line and the evaluation batches.
func openBatchDump(path string, cfg Config, total int, evals []data.Batch) (*batchDump, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--dump-batches: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	d := &batchDump{path: path, f: f, w: w, enc: json.NewEncoder(w)}
	sc := cfg.stepConfig()
	err = d.put(DumpRun{Kind: "run", Steps: total, GradAccum: cfg.GradAccum, MicroBatch: cfg.MicroBatch, Schedule: cfg.Schedule,
		Warmup: cfg.Warmup, MaxGradNorm: cfg.MaxGradNorm, AdamW: sc.AdamW, Scaler: sc.Scaler, FP16: cfg.FP16, Seed: cfg.Seed})
	for i, b := range evals {
		if err == nil {
			err = d.put(dumpBatch("eval_batch", 0, 0, i, 0, b))
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func dumpBatch(kind string, step, micro, index int, lr float64, b data.Batch) DumpBatch {
	return DumpBatch{Kind: kind, Step: step, Micro: micro, Index: index, LR: lr, Rows: b.Rows, SeqLen: b.SeqLen, Tokens: b.Tokens,
		InputIDs: b.InputIDs, Labels: b.Labels, AttentionMask: b.AttentionMask, PositionIDs: b.Positions()}
}

func (d *batchDump) put(v any) error {
	if err := d.enc.Encode(v); err != nil {
		return fmt.Errorf("--dump-batches %q: %w", d.path, err)
	}
	return nil
}

// step records an optimizer step that ran: its micro-batches, then its outcome.
func (d *batchDump) step(in StepInput, out StepOutcome) error {
	if d == nil {
		return nil
	}
	for m, b := range in.Batches {
		if err := d.put(dumpBatch("batch", in.Step, m, 0, in.LR, b)); err != nil {
			return err
		}
	}
	return d.put(DumpStep{Kind: "step", Step: in.Step, Loss: Float(out.Loss), GradNorm: Float(out.GradNorm), LR: in.LR,
		Tokens: in.tokens(), Scale: out.Scale, Skipped: out.Skipped})
}

// eval records an evaluation's result.
func (d *batchDump) eval(r EvalResult) error {
	if d == nil {
		return nil
	}
	return d.put(DumpEval{Kind: "eval", EvalResult: r})
}

// close flushes and closes the file; a second call does nothing.
func (d *batchDump) close() error {
	if d == nil || d.f == nil {
		return nil
	}
	err := d.w.Flush()
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	d.f = nil
	if err != nil {
		return fmt.Errorf("--dump-batches %q: %w", d.path, err)
	}
	return nil
}
