package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/train"
	"github.com/spf13/viper"
)

// Packing modes of --pack.
const (
	packIsolated = "isolated"
	packConcat   = "concat"
	packNone     = "none"
)

// dataSettings resolves the data options from the flags: --no-pack (deprecated) is
// --pack none, and --eval-fraction defaults to 0 when --eval-data holds the eval set.
func dataSettings(v *viper.Viper) (train.DataSettings, error) {
	d := train.DataSettings{Files: splitList(v.GetStringSlice("data")), EvalData: splitList(v.GetStringSlice("eval-data")),
		MaxSeqLen: v.GetInt("max-seq-len"), Pack: v.GetString("pack"), EvalFraction: v.GetFloat64("eval-fraction")}
	if v.GetBool("no-pack") {
		if v.IsSet("pack") && d.Pack != packNone {
			return d, usageError{fmt.Errorf("--no-pack and --pack %s contradict each other: --no-pack is --pack none", d.Pack)}
		}
		d.Pack = packNone
	}
	switch d.Pack {
	case packIsolated, packConcat, packNone:
	default:
		return d,
			usageError{fmt.Errorf("--pack %q: use isolated (documents packed without attending to each other), concat (joined with EOS) or none (one document per row)",
				d.Pack)}
	}
	if len(d.EvalData) > 0 {
		if v.IsSet("eval-fraction") && d.EvalFraction > 0 {
			return d, usageError{fmt.Errorf("--eval-fraction %g with --eval-data: the eval set is --eval-data; drop --eval-fraction", d.EvalFraction)}
		}
		d.EvalFraction = 0
	}
	return d, nil
}

// checkPack refuses isolated packing on artifacts whose graphs take a 0/1 mask.
func checkPack(d train.DataSettings, man *manifest.Manifest, dir string) error {
	if d.Pack != packIsolated || man.DocumentIDs() {
		return nil
	}
	return fmt.Errorf("--pack isolated: artifacts %q take a 0/1 attention mask (prepared before ortq packed documents apart, or a graph prepare's doc-mask "+
		"pass could not rewrite): re-run `ortq prepare --force`, or pass --pack concat",
		dir)
}

// buildOptions are data.Options for d.
func buildOptions(d train.DataSettings, seed uint64, vocab int64, maxPositions int) data.Options {
	o := data.DefaultOptions()
	o.MaxSeqLen = d.MaxSeqLen
	o.NoPack = d.Pack == packNone
	o.Isolate = d.Pack == packIsolated
	o.EvalFraction = d.EvalFraction
	o.Seed = seed
	o.VocabSize = int(vocab)
	o.ModelMaxLen = maxPositions
	return o
}

// runReport is what `ortq eval` reads of a run's report.json.
type runReport struct {
	Config struct {
		MicroBatch  int                 `json:"micro_batch"`
		PadMultiple int                 `json:"pad_multiple"`
		Seed        uint64              `json:"seed"`
		Data        *train.DataSettings `json:"data"`
	} `json:"config"`
}

// applyRunReport fills the data options of eval that no flag, variable or config file set
// from report.json beside the adapter (RUN/report.json), and returns a line saying which
// settings were used and where they came from.
func applyRunReport(v *viper.Viper, adapter string) (string, error) {
	if adapter == "" {
		return "eval: data settings from the flags (no --adapter, so no run report)", nil
	}
	path := filepath.Join(filepath.Dir(adapter), "report.json")
	b, err := fsutil.ReadBounded(path, 64<<20)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Sprintf("eval: data settings from the flags (%s not found)", path), nil
	} else if err != nil {
		return "", err
	}
	var r runReport
	if err := json.Unmarshal(b, &r); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if r.Config.Data == nil {
		return fmt.Sprintf("eval: data settings from the flags (%s predates recorded data settings)", path), nil
	}
	d := r.Config.Data
	set := func(key string, val any) {
		if !v.IsSet(key) {
			v.Set(key, val)
		}
	}
	set("max-seq-len", d.MaxSeqLen)
	set("pack", d.Pack)
	set("micro-batch", r.Config.MicroBatch)
	set("pad-multiple", r.Config.PadMultiple)
	set("seed", r.Config.Seed)
	if !v.IsSet("eval-data") && !v.IsSet("eval-fraction") && !v.IsSet("data") {
		v.Set("eval-data", d.EvalData)
		v.Set("eval-fraction", d.EvalFraction)
	}
	if !v.IsSet("data") && len(d.Files) > 0 {
		v.Set("data", d.Files)
	}
	return fmt.Sprintf("eval: data settings of the run (%s) unless given: --max-seq-len %d --micro-batch %d --pack %s --seed %d --pad-multiple %d "+
		"--eval-fraction %g --eval-data %q",
		path, v.GetInt("max-seq-len"), v.GetInt("micro-batch"), v.GetString("pack"), v.GetUint64("seed"), v.GetInt("pad-multiple"),
		v.GetFloat64("eval-fraction"), splitList(v.GetStringSlice("eval-data"))), nil
}
