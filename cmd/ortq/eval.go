package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/train"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

func newEval() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval --artifacts DIR --data FILE... --tokenizer tokenizer.json [--adapter FILE]",
		Short: "Report eval-split loss and perplexity of the base model or a trained adapter",
		Long: `eval reports the loss and perplexity of the eval set: the seeded --eval-fraction split of
--data (the split train holds out), the whole of --data with --eval-fraction 1, or --eval-data.
With --adapter RUN/adapter_model.safetensors, the data settings the run used (--data,
--eval-data, --max-seq-len, --micro-batch, --pack, --seed, --pad-multiple, --eval-fraction)
come from RUN/report.json unless given; one line on stderr says which were used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runEval(cmd) },
	}
	f := cmd.Flags()
	f.String("artifacts", "", "artifacts directory written by ortq prepare")
	f.StringSlice("data", nil,
		"data files, in any format train reads; the same seeded eval split (and prompt masking) as train is used (default: the run's, from report.json beside "+
			"--adapter)")
	f.String("tokenizer", "", "Hugging Face tokenizer.json")
	f.String("adapter", "", "adapter_model.safetensors to evaluate (default: the untrained initial adapter = base model)")
	f.Int("micro-batch", 7, "sequences per batch (default: the run's)")
	f.String("device", "cpu", "execution provider: cpu, cuda or cuda:N")
	f.Int("threads", 0, "CPU intra-op threads (0: one per core)")
	addDataFlags(f)
	return cmd
}

// runEval is `ortq eval`: settings (the run's, from its report, unless given), the
// evaluation engine, the eval split, the adapter, and one line of loss and perplexity.
func runEval(cmd *cobra.Command) error {
	v, err := options(cmd)
	if err != nil {
		return err
	}
	dir := v.GetString("artifacts")
	if dir == "" {
		return usageError{fmt.Errorf("--artifacts is required")}
	}
	line, err := applyRunReport(v, v.GetString("adapter"))
	if err != nil {
		return err
	}
	if err := checkDataFlags(v); err != nil {
		return err
	}
	d, err := evalSettings(v)
	if err != nil {
		return err
	}
	opts, err := sessionOptions(v)
	if err != nil {
		return err
	}
	eng, err := train.OpenEngine(dir, opts, false)
	if err != nil {
		return err
	}
	defer eng.Close()
	if err := checkPack(d, eng.Man, dir); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, line)
	ds, err := loadDataset(v, d, eng.Man.Model.Vocab, eng.Man.Model.MaxPositions)
	if err != nil {
		return err
	}
	values, err := evalAdapter(v.GetString("adapter"), dir, eng)
	if err != nil {
		return err
	}
	batches, err := data.Batches(ds.Eval, data.BatchOptions{BatchSize: v.GetInt("micro-batch"), PadMultiple: v.GetInt("pad-multiple")})
	if err != nil {
		return err
	}
	s, n, err := eng.Eval(batches, values)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("the eval set has no tokens: add data, raise --eval-fraction or pass --eval-data")
	}
	fmt.Printf("eval: %d tokens, loss %.4f, perplexity %.3f\n", n, s/float64(n), math.Exp(s/float64(n)))
	return nil
}

// evalAdapter loads the LoRA values to evaluate, by tensor name: the adapter at path
// (its adapter_config.json checked against the artifacts where there is one), or the
// artifacts' initial adapter (the base model) when path is "".
func evalAdapter(path, dir string, eng *train.Engine) (map[string][]float32, error) {
	if path == "" {
		path = dir + "/" + eng.Man.LoRAInit
	} else if cfg := filepath.Join(filepath.Dir(path), "adapter_config.json"); fileExists(cfg) {
		// Checked as train --init-adapter and export check it.
		if err := eng.Man.CheckAdapterConfig(cfg); err != nil {
			return nil, err
		}
	}
	params, err := train.LoadParams(path, eng.Man)
	if err != nil {
		return nil, err
	}
	values := map[string][]float32{}
	for _, p := range params {
		values[p.Name] = p.Data
	}
	return values, nil
}

// evalSettings are eval's data settings: --eval-fraction 1 evaluates the whole of --data
// (as --eval-data would), and 0 without --eval-data holds nothing out to evaluate.
func evalSettings(v *viper.Viper) (train.DataSettings, error) {
	d, err := dataSettings(v)
	if err != nil {
		return d, err
	}
	switch {
	case len(d.EvalData) > 0:
		d.Files = nil // the eval set is --eval-data, whole
	case d.EvalFraction >= 1:
		d.EvalData, d.Files, d.EvalFraction = d.Files, nil, 0
	case d.EvalFraction == 0:
		return d,
			usageError{fmt.Errorf("--eval-fraction 0 holds nothing out, so there is nothing to evaluate: pass --eval-fraction 1 to evaluate all of --data, or " +
				"--eval-data FILE")}
	}
	return d, nil
}

// fileExists reports whether path names something (a broken or unreadable one is left to
// the reader to report).
func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
