package main

import (
	"fmt"
	"math"

	"github.com/ortq/ortq/data"
	"github.com/ortq/ortq/train"
	"github.com/spf13/cobra"
)

func newEval() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval --artifacts DIR --data FILE... --tokenizer tokenizer.json [--adapter FILE]",
		Short: "Report eval-split loss and perplexity of the base model or a trained adapter",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := options(cmd)
			if err != nil {
				return err
			}
			if err := checkDataFlags(v); err != nil {
				return err
			}
			dir := v.GetString("artifacts")
			if dir == "" {
				return usageError{fmt.Errorf("--artifacts is required")}
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
			ds, err := loadDataset(v, eng.Man.Model.Vocab, eng.Man.Model.MaxPositions)
			if err != nil {
				return err
			}
			path := v.GetString("adapter")
			if path == "" {
				path = dir + "/" + eng.Man.LoRAInit
			}
			params, err := train.LoadParams(path, eng.Man)
			if err != nil {
				return err
			}
			values := map[string][]float32{}
			for _, p := range params {
				values[p.Name] = p.Data
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
				return fmt.Errorf("the eval split has no tokens: add data or raise --eval-fraction")
			}
			fmt.Printf("eval: %d tokens, loss %.4f, perplexity %.3f\n", n, s/float64(n), math.Exp(s/float64(n)))
			return nil
		},
	}
	f := cmd.Flags()
	f.String("artifacts", "", "artifacts directory written by ortq prepare")
	f.StringSlice("data", nil, "data files, in any format train reads; the same seeded eval split (and prompt masking) as train is used")
	f.String("tokenizer", "", "Hugging Face tokenizer.json")
	f.String("adapter", "", "adapter_model.safetensors to evaluate (default: the untrained initial adapter = base model)")
	f.Int("micro-batch", 7, "sequences per batch")
	f.String("device", "cpu", "execution provider: cpu, cuda or cuda:N")
	f.Int("threads", 0, "CPU intra-op threads (0: one per core)")
	addDataFlags(f)
	return cmd
}
