package train_test

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/prepare"
	"github.com/ortq/ortq/prepare/preparetest"
	"github.com/ortq/ortq/train"
	"github.com/ortq/ortq/train/optim"
)

// dumpFile is a batch dump read back (Config.DumpBatches).
type dumpFile struct {
	run         train.DumpRun
	evalBatches []train.DumpBatch
	evals       []train.DumpEval
	batches     map[int][]train.DumpBatch // by step
	steps       []train.DumpStep
	kinds       []string // every line's kind, in order
}

func readDump(t *testing.T, path string) dumpFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := dumpFile{batches: map[int][]train.DumpBatch{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<26)
	for sc.Scan() {
		var k struct{ Kind string }
		if err := json.Unmarshal(sc.Bytes(), &k); err != nil {
			t.Fatal(err)
		}
		d.kinds = append(d.kinds, k.Kind)
		var v any
		switch k.Kind {
		case "run":
			v = &d.run
		case "eval_batch", "batch":
			var b train.DumpBatch
			if err := json.Unmarshal(sc.Bytes(), &b); err != nil {
				t.Fatal(err)
			}
			if k.Kind == "batch" {
				d.batches[b.Step] = append(d.batches[b.Step], b)
			} else {
				d.evalBatches = append(d.evalBatches, b)
			}
			continue
		case "eval":
			d.evals = append(d.evals, train.DumpEval{})
			v = &d.evals[len(d.evals)-1]
		case "step":
			d.steps = append(d.steps, train.DumpStep{})
			v = &d.steps[len(d.steps)-1]
		default:
			t.Fatalf("unknown kind %q", k.Kind)
		}
		if err := json.Unmarshal(sc.Bytes(), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// sameBatch fails unless the dumped micro-batch is b as the graph takes it.
func sameBatch(t *testing.T, what string, got train.DumpBatch, b data.Batch) {
	t.Helper()
	if got.Rows != b.Rows || got.SeqLen != b.SeqLen || got.Tokens != b.Tokens || !slices.Equal(got.InputIDs, b.InputIDs) ||
		!slices.Equal(got.Labels, b.Labels) || !slices.Equal(got.AttentionMask, b.AttentionMask) || !slices.Equal(got.PositionIDs, b.Positions()) {
		t.Errorf("%s: the dump differs from the batch consumed (%d×%d, %d tokens dumped; %d×%d, %d tokens consumed)", what,
			got.Rows, got.SeqLen, got.Tokens, b.Rows, b.SeqLen, b.Tokens)
	}
}

// stepRecorder wraps a Stepper and records every step's input and outcome.
type stepRecorder struct {
	train.Stepper
	ins  *[]train.StepInput
	outs *[]train.StepOutcome
}

func (r stepRecorder) Step(ctx context.Context, in train.StepInput) (train.StepOutcome, error) {
	out, err := r.Stepper.Step(ctx, in)
	*r.ins, *r.outs = append(*r.ins, in), append(*r.outs, out)
	return out, err
}

// TestFakeBatchDump: the dump holds the run's settings, the evaluation batches (capped as
// the run caps them), every micro-batch each step consumed with its learning rate, each
// step's outcome and each evaluation's result, in order — on the fake backend, across
// accumulation, evaluation cadence and fp16 steps with an overflow skip.
func TestFakeBatchDump(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*train.Config)
		fault func(int) float64
	}{
		{"accum 1", func(c *train.Config) { c.GradAccum = 1 }, nil},
		{"accum 3, eval every 2, 1 eval batch", func(c *train.Config) { c.GradAccum, c.EvalEvery, c.MaxEvalBatches = 3, 2, 1 }, nil},
		{"fp16, step 3 skipped", func(c *train.Config) { c.FP16 = true }, faultAt(math.Inf(1), 3)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := fastTempDir(t)
			cfg := fakeConfig(filepath.Join(dir, "run"))
			c.edit(&cfg)
			cfg.DumpBatches = filepath.Join(dir, "dump.jsonl")
			b := newFakeBackend(t)
			b.fault = c.fault
			var ins []train.StepInput
			var outs []train.StepOutcome
			cfg.NewStepper = func(init []optim.Param, sc train.StepConfig, rows, seq int) (train.Stepper, error) {
				st, err := b.NewStepper(init, sc, rows, seq)
				return stepRecorder{Stepper: st, ins: &ins, outs: &outs}, err
			}
			evalSet := fakeExamples(4, 2)
			rep, err := runFake(context.Background(), b, cfg)
			if err != nil {
				t.Fatal(err)
			}
			d := readDump(t, cfg.DumpBatches)
			checkDumpRun(t, d, cfg)
			evals, err := data.Batches(evalSet, data.BatchOptions{BatchSize: cfg.MicroBatch, PadMultiple: cfg.PadMultiple})
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxEvalBatches > 0 {
				evals = evals[:cfg.MaxEvalBatches]
			}
			if len(d.evalBatches) != len(evals) {
				t.Fatalf("%d eval batches dumped, %d evaluated", len(d.evalBatches), len(evals))
			}
			for i, eb := range evals {
				sameBatch(t, "eval batch", d.evalBatches[i], eb)
			}
			checkDumpSteps(t, d, ins, outs)
			if len(d.evals) != len(rep.EvalHistory) {
				t.Fatalf("%d evaluations dumped, %d in the report", len(d.evals), len(rep.EvalHistory))
			}
			for i, e := range rep.EvalHistory {
				if d.evals[i].EvalResult != e {
					t.Errorf("evaluation %d: dumped %+v, reported %+v", i, d.evals[i].EvalResult, e)
				}
			}
		})
	}
}

func checkDumpRun(t *testing.T, d dumpFile, cfg train.Config) {
	t.Helper()
	r := d.run
	if d.kinds[0] != "run" || r.Steps != cfg.MaxSteps || r.GradAccum != cfg.GradAccum || r.MicroBatch != cfg.MicroBatch ||
		r.Schedule != cfg.Schedule || r.Warmup != cfg.Warmup || r.MaxGradNorm != cfg.MaxGradNorm || r.AdamW.LR != cfg.LR ||
		r.AdamW.WeightDecay != cfg.WeightDecay || r.AdamW.Beta1 != 0.9 || r.AdamW.Beta2 != 0.999 || r.AdamW.Eps != 1e-8 ||
		r.FP16 != cfg.FP16 || r.Scaler.Disabled == cfg.FP16 || r.Seed != cfg.Seed {
		t.Errorf("run line %+v (first kind %q) does not match the config %+v", r, d.kinds[0], cfg)
	}
}

// checkDumpSteps compares the dumped steps with what the Stepper was given and returned.
func checkDumpSteps(t *testing.T, d dumpFile, ins []train.StepInput, outs []train.StepOutcome) {
	t.Helper()
	if len(d.steps) != len(ins) {
		t.Fatalf("%d steps dumped, %d run", len(d.steps), len(ins))
	}
	for i, in := range ins {
		s, out := d.steps[i], outs[i]
		if s.Step != in.Step || s.LR != in.LR || !sameFloat(float64(s.Loss), out.Loss) || !sameFloat(float64(s.GradNorm), out.GradNorm) ||
			s.Skipped != out.Skipped || s.Scale != out.Scale {
			t.Errorf("step %d: dumped %+v, the stepper returned %+v at lr %v", in.Step, s, out, in.LR)
		}
		got := d.batches[in.Step]
		if len(got) != len(in.Batches) {
			t.Fatalf("step %d: %d micro-batches dumped, %d consumed", in.Step, len(got), len(in.Batches))
		}
		tokens := 0
		for m, b := range in.Batches {
			if got[m].Micro != m || got[m].LR != in.LR {
				t.Errorf("step %d micro-batch %d: dumped as micro %d at lr %v", in.Step, m, got[m].Micro, got[m].LR)
			}
			sameBatch(t, "train batch", got[m], b)
			tokens += b.Tokens
		}
		if s.Tokens != tokens {
			t.Errorf("step %d: %d tokens dumped, %d consumed", in.Step, s.Tokens, tokens)
		}
	}
}

// sameFloat: equal bits, or both NaN (the dump writes null for NaN).
func sameFloat(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
}

// TestBatchDumpRefusals: a resumed run cannot dump (its dump would miss the first steps),
// and a dump that cannot be created stops the run before any step, naming the flag.
func TestBatchDumpRefusals(t *testing.T) {
	dir := fastTempDir(t)
	cases := []struct {
		name string
		edit func(*train.Config)
		want string
	}{
		{"resume", func(c *train.Config) { c.Resume = "latest" }, "--dump-batches records a run from its first step"},
		{"unwritable", func(c *train.Config) { c.DumpBatches = filepath.Join(dir, "no", "such", "dir", "d.jsonl") }, "--dump-batches"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := fakeConfig(filepath.Join(dir, c.name))
			cfg.DumpBatches = filepath.Join(dir, c.name+".jsonl")
			c.edit(&cfg)
			b := newFakeBackend(t)
			_, err := runFake(context.Background(), b, cfg)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
			if b.evals != 0 {
				t.Errorf("%d evaluations ran before the refusal", b.evals)
			}
		})
	}
}

// TestBatchDumpReplaysThroughEval: on the real engine (default model, LoRA dropout 0 so the
// training graph's loss is the eval graph's function), every dumped step's micro-batches,
// evaluated through the eval graph with the LoRA values the step started from (lora_init,
// then each step's checkpoint), give the step's dumped loss — the dump is what the step
// consumed — and the dumped final evaluation is the eval batches under the final adapter.
func TestBatchDumpReplaysThroughEval(t *testing.T) {
	art := preparetest.Default(t, func(o *prepare.Options) { o.Dropout = 0 })
	_, trainSet, evalSet := loopFixture(t)
	dir := fastTempDir(t)
	cfg := loopConfig(art, filepath.Join(dir, "run"))
	cfg.MaxSteps, cfg.SaveEvery, cfg.Keep, cfg.GradAccum = 3, 1, 0, 2
	cfg.DumpBatches = filepath.Join(dir, "dump.jsonl")
	if _, err := runLoop(t, art, context.Background(), trainSet, evalSet, cfg); err != nil {
		t.Fatal(err)
	}
	d := readDump(t, cfg.DumpBatches)
	eng, err := train.OpenEngine(art, ortrun.Options{Device: "cpu", IntraOpThreads: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	init, err := train.LoadParams(filepath.Join(art, eng.Man.LoRAInit), eng.Man)
	if err != nil {
		t.Fatal(err)
	}
	params := map[string][]float32{}
	for _, p := range init {
		params[p.Name] = p.Data
	}
	if len(d.steps) != cfg.MaxSteps {
		t.Fatalf("%d steps dumped", len(d.steps))
	}
	cks, err := train.ListCheckpoints(filepath.Join(cfg.Out, train.CheckpointsDir))
	if err != nil || len(cks) != cfg.MaxSteps {
		t.Fatalf("checkpoints %v (%v), want one per step", cks, err)
	}
	for _, s := range d.steps {
		if s.Step > 1 {
			ck, err := train.LoadCheckpoint(cks[s.Step-2])
			if err != nil {
				t.Fatal(err)
			}
			params = ck.Params
		}
		got := replayLoss(t, eng, d.batches[s.Step], params)
		if rel := math.Abs(got-float64(s.Loss)) / float64(s.Loss); rel > 1e-5 {
			t.Errorf("step %d: dumped loss %.7f, its batches through the eval graph %.7f (rel %.1e)", s.Step, float64(s.Loss), got, rel)
		}
	}
	final, err := train.LoadParams(filepath.Join(cfg.Out, "adapter_model.safetensors"), eng.Man)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range final {
		params[p.Name] = p.Data
	}
	last := d.evals[len(d.evals)-1]
	if got := replayLoss(t, eng, d.evalBatches, params); math.Abs(got-float64(last.Loss)) > 1e-9*float64(last.Loss) {
		t.Errorf("final evaluation: dumped loss %.9f, the dumped eval batches under the final adapter %.9f", float64(last.Loss), got)
	}
}

// replayLoss is the mean loss per counted token of dumped batches through the eval graph.
func replayLoss(t *testing.T, eng *train.Engine, dumped []train.DumpBatch, params map[string][]float32) float64 {
	t.Helper()
	var bs []data.Batch
	for _, b := range dumped {
		bs = append(bs, data.Batch{Rows: b.Rows, SeqLen: b.SeqLen, InputIDs: b.InputIDs, Labels: b.Labels, AttentionMask: b.AttentionMask,
			PositionIDs: b.PositionIDs, Tokens: b.Tokens})
	}
	sum, n, err := eng.Eval(bs, params)
	if err != nil {
		t.Fatal(err)
	}
	return sum / float64(n)
}
