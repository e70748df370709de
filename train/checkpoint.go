package train

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/train/optim"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/safetensors"
)

// Checkpoints. A checkpoint is a directory <out>/checkpoints/step-NNNNNNNN holding
//
//	state.safetensors  LoRA fp32 master weights ("lora.<name>") and the AdamW moments
//	                   ("exp_avg.<name>", "exp_avg_sq.<name>", step in the metadata)
//	state.json         everything else (Checkpoint): counters, GradScaler, data position,
//	                   seed, loss and eval history, the run config, the compatibility
//	                   fingerprint and the SHA-256 of state.safetensors
//
// It is written into checkpoints/.tmp-XXXX (each file fsynced, then the directory),
// renamed to its final name and the parent directory fsynced, so a crash or kill -9 at
// any moment leaves either no step-N directory or a complete one; a .tmp-* directory left
// by a crash is ignored and removed by the next run. state.json is written last and
// names the tensors file's hash, so a step directory damaged afterwards (disk errors,
// hand edits) is detected on load rather than silently resumed.
//
// What a resume replays exactly: the LoRA weights, the optimizer (moments and step), the
// loss scale and its growth tracker, the data order (a pure function of seed and epoch,
// see data.Position), the step counters and the LoRA dropout masks (a hash of a seed that
// is a function of --seed, the step and the micro-batch; see microSeed), so a run on the
// CPU interrupted and resumed reproduces the uninterrupted run's losses bit for bit.

// CheckpointsDir is the directory of checkpoints inside a run's --out.
const CheckpointsDir = "checkpoints"

const (
	checkpointFormat   = 1
	ckStateFile        = "state.json"
	ckTensorsFile      = "state.safetensors"
	ckTmpPrefix        = ".tmp-"
	ckStepPrefix       = "step-"
	loraTensorPrefix   = "lora."
	maxCheckpointState = 256 << 20 // state.json bound: ~10M steps of loss history
)

// Checkpoint is state.json: everything of a run's state but the tensors.
type Checkpoint struct {
	Format int `json:"format"`
	// Step is the number of loop steps completed (optimizer steps plus skipped ones);
	// a resume continues with Step+1.
	Step           int                   `json:"step"`
	Total          int                   `json:"total_steps"`
	OptimizerSteps int                   `json:"optimizer_steps"`
	SkippedSteps   int                   `json:"skipped_steps"`
	TrainTokens    int64                 `json:"train_tokens"`
	Data           data.Position         `json:"data_position"`
	Seed           uint64                `json:"seed"`
	Scaler         optim.GradScalerState `json:"grad_scaler"`
	AdamStep       int64                 `json:"adamw_step"`
	// Losses[i] is the training loss of step i+1 (null when not finite).
	Losses      []Float      `json:"losses"`
	GradNorms   []Float      `json:"grad_norms,omitempty"` // step i+1's gradient norm before clipping
	Baseline    EvalResult   `json:"baseline_eval"`
	EvalHistory []EvalResult `json:"eval_history"`
	StepTimesMS []float64    `json:"step_times_ms"`
	TrainTimeNS int64        `json:"train_time_ns"`
	// Compat is the fingerprint a resume must match: field name → value.
	Compat         map[string]string `json:"compat"`
	ManifestSHA256 string            `json:"manifest_sha256"`
	TensorsSHA256  string            `json:"tensors_sha256"`
	Config         Config            `json:"config"`
	CreatedAt      time.Time         `json:"created_at"`

	// Filled by LoadCheckpoint.
	Dir    string               `json:"-"`
	Params map[string][]float32 `json:"-"`
	Adam   optim.AdamWState     `json:"-"`
}

// CheckpointName is the directory name of the checkpoint after step.
func CheckpointName(step int) string { return fmt.Sprintf("%s%08d", ckStepPrefix, step) }

func parseCheckpointName(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, ckStepPrefix)
	if !ok || s == "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || CheckpointName(n) != name {
		return 0, false
	}
	return n, true
}

// ListCheckpoints returns the step-N directories under root, oldest first. Temp
// directories and anything else are ignored; completeness is not checked here.
func ListCheckpoints(root string) ([]string, error) {
	es, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	type ck struct {
		step int
		dir  string
	}
	var cks []ck
	for _, e := range es {
		if n, ok := parseCheckpointName(e.Name()); ok && e.IsDir() {
			cks = append(cks, ck{n, filepath.Join(root, e.Name())})
		}
	}
	sort.Slice(cks, func(i, j int) bool { return cks[i].step < cks[j].step })
	out := make([]string, len(cks))
	for i, c := range cks {
		out[i] = c.dir
	}
	return out, nil
}

// CleanCheckpointTemp removes .tmp-* directories a crashed writer left under root and
// returns their names.
func CleanCheckpointTemp(root string) ([]string, error) {
	es, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	var removed []string
	for _, e := range es {
		if strings.HasPrefix(e.Name(), ckTmpPrefix) {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				return removed, fmt.Errorf("remove unfinished checkpoint %q: %w", filepath.Join(root, e.Name()), err)
			}
			removed = append(removed, e.Name())
		}
	}
	return removed, nil
}

// LatestCheckpoint loads the newest complete checkpoint under root. Step directories
// that fail to load (which atomic writes should make impossible, short of disk damage)
// are reported through warn and skipped.
func LatestCheckpoint(root string, warn func(string, ...any)) (*Checkpoint, error) {
	dirs, err := ListCheckpoints(root)
	if err != nil {
		return nil, err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		ck, err := LoadCheckpoint(dirs[i])
		if err == nil {
			return ck, nil
		}
		if warn != nil {
			warn("skipping damaged checkpoint: %v", err)
		}
	}
	if len(dirs) > 0 {
		return nil, fmt.Errorf("no complete checkpoint in %q to resume from (%d damaged): start afresh with --force instead of --resume, which deletes them",
			root, len(dirs))
	}
	return nil, fmt.Errorf("no complete checkpoint in %q to resume from: start without --resume", root)
}

// LoadCheckpoint reads and verifies one checkpoint directory.
func LoadCheckpoint(dir string) (*Checkpoint, error) {
	sp := filepath.Join(dir, ckStateFile)
	b, err := fsutil.ReadBounded(sp, maxCheckpointState)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %q: %w", dir, err)
	}
	var ck Checkpoint
	if err := json.Unmarshal(b, &ck); err != nil {
		return nil, fmt.Errorf("checkpoint %q: %s is not valid: %w", dir, ckStateFile, err)
	}
	if ck.Format != checkpointFormat {
		return nil, fmt.Errorf("checkpoint %q: format %d, this ortq reads format %d", dir, ck.Format, checkpointFormat)
	}
	if ck.Step < 0 || len(ck.Losses) != ck.Step {
		return nil, fmt.Errorf("checkpoint %q: step %d with %d recorded losses", dir, ck.Step, len(ck.Losses))
	}
	tp := filepath.Join(dir, ckTensorsFile)
	sum, err := fileSHA256(tp)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %q: %w", dir, err)
	}
	if sum != ck.TensorsSHA256 {
		return nil, fmt.Errorf("checkpoint %q: %s has SHA-256 %s, %s records %s: the file is damaged", dir, ckTensorsFile, sum, ckStateFile, ck.TensorsSHA256)
	}
	f, err := safetensors.ReadFile(tp)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %q: %w", dir, err)
	}
	ck.Params = map[string][]float32{}
	for _, t := range f.Tensors {
		if name, ok := strings.CutPrefix(t.Name, loraTensorPrefix); ok {
			if ck.Params[name], err = t.Float32s(); err != nil {
				return nil, fmt.Errorf("checkpoint %q: %w", dir, err)
			}
		}
	}
	if ck.Adam, err = optim.AdamWStateFromTensors(f.Tensors, f.Metadata); err != nil {
		return nil, fmt.Errorf("checkpoint %q: %w", dir, err)
	}
	if ck.Adam.Step != ck.AdamStep {
		return nil, fmt.Errorf("checkpoint %q: AdamW step %d in %s, %d in %s", dir, ck.Adam.Step, ckTensorsFile, ck.AdamStep, ckStateFile)
	}
	ck.Dir = dir
	return &ck, nil
}

// CheckpointHook is called at each stage of a checkpoint write ("begin", "tensors",
// "state", "synced", "renamed") with the step being saved; an error it returns fails the
// write exactly as an I/O error there would (fault-injection tests).
type CheckpointHook func(stage string, step int) error

// WriteCheckpoint writes ck with the LoRA values and optimizer state as root/step-N and
// then keeps only the newest keep step directories (keep ≤ 0 keeps all). If step-N
// already exists complete, nothing is written. On error nothing under root changes but
// a .tmp-* directory, which is removed unless the process dies first.
func WriteCheckpoint(root string, ck *Checkpoint, params []optim.Param, adam optim.AdamWState, keep int, hook CheckpointHook) (dir string, err error) {
	if hook == nil {
		hook = func(string, int) error { return nil }
	}
	final := filepath.Join(root, CheckpointName(ck.Step))
	if _, err := os.Stat(final); err == nil {
		if _, lerr := LoadCheckpoint(final); lerr == nil {
			return final, nil
		}
	}
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("write checkpoint %s in %q: %w", CheckpointName(ck.Step), root, err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fail(err)
	}
	tmp, err := os.MkdirTemp(root, ckTmpPrefix)
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := writeCheckpointFiles(tmp, ck, params, adam, hook); err != nil {
		return fail(err)
	}
	if err := renameCheckpoint(root, tmp, final); err != nil {
		return fail(err)
	}
	// The checkpoint is in place; failing to fsync the parent only weakens durability
	// against power loss, so from here errors are returned but the directory stays.
	if err := syncDir(root); err != nil {
		return final, fmt.Errorf("write checkpoint %q: fsync %q: %w", final, root, err)
	}
	if err := hook("renamed", ck.Step); err != nil {
		return final, fmt.Errorf("write checkpoint %q: %w", final, err)
	}
	if err := PruneCheckpoints(root, keep); err != nil {
		return final, err
	}
	return final, nil
}

// writeCheckpointFiles writes the tensors and the state of ck (with the tensors' hash)
// into the directory tmp and fsyncs it, calling hook at each stage.
func writeCheckpointFiles(tmp string, ck *Checkpoint, params []optim.Param, adam optim.AdamWState, hook CheckpointHook) (err error) {
	if err := hook("begin", ck.Step); err != nil {
		return err
	}
	ts, meta := adam.Tensors()
	for _, p := range params {
		ts = append(ts, safetensors.F32Tensor(loraTensorPrefix+p.Name, []int64{int64(len(p.Data))}, p.Data))
	}
	tp := filepath.Join(tmp, ckTensorsFile)
	if err := safetensors.Write(tp, ts, meta); err != nil {
		return err
	}
	if err := hook("tensors", ck.Step); err != nil {
		return err
	}
	// Hashing what is on disk rather than what was meant to be written also catches a
	// write that silently went wrong.
	c := *ck
	c.Format = checkpointFormat
	c.AdamStep = adam.Step
	c.CreatedAt = time.Now().UTC()
	if c.TensorsSHA256, err = fileSHA256(tp); err != nil {
		return err
	}
	js, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return err
	}
	js = append(js, '\n')
	if err := fsutil.WriteFileAtomic(filepath.Join(tmp, ckStateFile), 0o644, func(w *bufio.Writer) error { _, err := w.Write(js); return err }); err != nil {
		return err
	}
	if err := hook("state", ck.Step); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	return hook("synced", ck.Step)
}

// renameCheckpoint puts the written directory tmp in place as final, moving a damaged
// directory of the same step out of the way first, since rename cannot replace a
// non-empty directory.
func renameCheckpoint(root, tmp, final string) error {
	if _, err := os.Stat(final); err == nil {
		old, err := os.MkdirTemp(root, ckTmpPrefix+"old-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(old)
		if err := os.Rename(final, filepath.Join(old, "d")); err != nil {
			return err
		}
	}
	return os.Rename(tmp, final)
}

// PruneCheckpoints removes all but the newest keep step directories (keep ≤ 0: none).
func PruneCheckpoints(root string, keep int) error {
	if keep <= 0 {
		return nil
	}
	dirs, err := ListCheckpoints(root)
	if err != nil {
		return err
	}
	for len(dirs) > keep {
		// Rename into a temp name first so a crash mid-removal leaves a .tmp-* (ignored
		// and cleaned) rather than a half-deleted step directory that looks like one.
		gone := filepath.Join(root, ckTmpPrefix+"prune-"+filepath.Base(dirs[0]))
		if err := os.Rename(dirs[0], gone); err != nil {
			return fmt.Errorf("remove old checkpoint %q: %w", dirs[0], err)
		}
		if err := os.RemoveAll(gone); err != nil {
			return fmt.Errorf("remove old checkpoint %q: %w", dirs[0], err)
		}
		dirs = dirs[1:]
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("fsync %q: %w", dir, err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %q: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FileSHA256 is the hex SHA-256 of a file's contents (resume fingerprints).
func FileSHA256(path string) (string, error) { return fileSHA256(path) }

// examplesSHA256 fingerprints the tokenized training set: any change of data files,
// tokenizer, packing or split shows up here even when no option names it.
func examplesSHA256(exs []data.Example) string {
	h := sha256.New()
	var buf []byte
	for _, e := range exs {
		buf = binary.LittleEndian.AppendUint32(buf[:0], uint32(len(e)))
		for _, t := range e {
			buf = binary.LittleEndian.AppendUint32(buf, uint32(t))
		}
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// compatFingerprint lists what a resume must share with the checkpoint, keyed by the
// option (or input) a user would change. Options that do not change the trajectory
// (--eval-every, --device, --quiet, --out, --save-every, --keep) are not in it, nor is the
// total step count: a resume may run to another total (the schedule follows it, see
// Trainer.Run), which leaves the steps already taken as they were.
func compatFingerprint(cfg Config, manifestSHA string, train []data.Example) map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	m := map[string]string{
		"artifacts (manifest.json sha256)": manifestSHA,
		"--micro-batch":                    strconv.Itoa(cfg.MicroBatch),
		"--grad-accum":                     strconv.Itoa(cfg.GradAccum),
		"--lr":                             f(cfg.LR),
		"--weight-decay":                   f(cfg.WeightDecay),
		"--schedule":                       cfg.Schedule,
		"--warmup-steps":                   strconv.Itoa(cfg.Warmup),
		"--max-grad-norm":                  f(cfg.MaxGradNorm),
		"--seed":                           strconv.FormatUint(cfg.Seed, 10),
		"--pad-multiple":                   strconv.Itoa(cfg.PadMultiple),
		"fp16 loss scaling":                strconv.FormatBool(cfg.FP16),
		"training examples (count)":        strconv.Itoa(len(train)),
		"training examples (sha256)":       examplesSHA256(train),
	}
	for k, v := range cfg.Inputs {
		m[k] = v
	}
	return m
}

// legacyTotalKey is the total step count's fingerprint entry in checkpoints of ortq versions
// that refused a resume to another total; it is not compared.
const legacyTotalKey = "total steps (--max-steps, --epochs)"

// checkCompat names every field where the checkpoint and this run differ.
func checkCompat(dir string, saved, now map[string]string) error {
	keys := map[string]bool{}
	for k := range saved {
		keys[k] = k != legacyTotalKey
	}
	for k := range now {
		keys[k] = true
	}
	var names []string
	for k, compare := range keys {
		if compare {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	var diffs []string
	for _, k := range names {
		a, okA := saved[k]
		b, okB := now[k]
		switch {
		case !okA:
			diffs = append(diffs, fmt.Sprintf("%s: not recorded in the checkpoint, %q now", k, b))
		case !okB:
			diffs = append(diffs, fmt.Sprintf("%s: %q in the checkpoint, not given now", k, a))
		case a != b:
			diffs = append(diffs, fmt.Sprintf("%s: %q in the checkpoint, %q now", k, a, b))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("cannot resume from %q: the run differs in %s; resume with the artifacts, data and options of the interrupted run, or start a new "+
			"run with another --out",
			dir, strings.Join(diffs, "; "))
	}
	return nil
}
