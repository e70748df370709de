package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/ortq/ortq/internal/envconfig"
	"github.com/ortq/ortq/ortrun"
	"github.com/spf13/cobra"
)

func newEnv() *cobra.Command {
	return &cobra.Command{
		Use:   "env",
		Short: "List the ORTQX_* experiment knobs, their values and what they do",
		Long: `env lists ortq's experiment knobs: environment variables named ORTQX_* that tune ONNX
Runtime and the training engine for measurements and that no flag sets. (Every flag can
also be given as an ORTQ_<FLAG> variable, e.g. ORTQ_LORA_R for --lora-r; those are flags,
not knobs.) A value a knob cannot use is refused by every command, naming the variable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "VARIABLE\tVALUE\tDEFAULT\tWHAT")
			for _, k := range envconfig.Knobs {
				val, ok := os.LookupEnv(k.Name)
				if !ok {
					val = "-"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k.Name, val, k.Default, k.Usage)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			_, err := envconfig.Load()
			return err
		},
	}
}

// knobs returns the experiment knobs (a bad value is a usage error naming the variable).
func knobs() (envconfig.Values, error) {
	k, err := envconfig.Load()
	if err != nil {
		return k, usageError{err}
	}
	return k, nil
}

// applyKnobs sets the session options the experiment knobs ask for.
func applyKnobs(o *ortrun.Options, k envconfig.Values) {
	if o.ProfilePrefix == "" {
		o.ProfilePrefix = k.Profile
	}
	o.LogVerbose = o.LogVerbose || k.ORTVerbose
	o.Tuning = ortrun.Tuning{SessionConfig: k.SessionConfig, CUDAOptions: k.CUDAOptions, MemPattern: k.MemPattern,
		ArenaMaxDeadBytes: k.ArenaMaxDeadBytes, NoDirectCopy: !k.DirectCopy}
}
