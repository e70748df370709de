package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/ortq/ortq/dist"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		// One line, no usage dump: errors name the file, node or flag at fault.
		msg := err.Error()
		msg = strings.ReplaceAll(msg, "\n", " ")
		fmt.Fprintln(os.Stderr, "ortq:", msg)
		os.Exit(exitCode(err))
	}
}

// usageError marks errors in how ortq was called (exit status 2).
type usageError struct{ error }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	var pe *dist.PeerError
	if errors.As(err, &pe) {
		return dist.ExitPeer // another rank of a data-parallel run failed first
	}
	return 1
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "ortq",
		Short:         "QLoRA fine-tuning of Llama ONNX graphs on a stock ONNX Runtime",
		SilenceUsage:  true,
		SilenceErrors: true,
		Long: `ortq rewrites a Llama ONNX graph for training (4-bit MatMulNBits base, LoRA adapters,
causal-LM loss, a backward graph built by ortq's own autodiff) and fine-tunes it on ONNX
Runtime 1.29's CPU or CUDA execution provider.

Options come from flags, ORTQ_* environment variables (ORTQ_LORA_R=16) and a YAML file
(--config, keys as flag names); flags win over the environment, which wins over the file.
One file can drive the whole pipeline: top-level keys are shared, and a section named after
a command (prepare:, train:, eval:, export:, bench:, generate: …) applies to that command only,
its keys winning over the top level's. An unknown key or section is refused, naming it; a
top-level key must be an option of the command reading the file, except in a file with
sections, where another command's option is left to that command. Keys ignore case, so
two keys that differ only in case are refused.`,
	}
	root.PersistentFlags().String("config", "",
		"YAML file with option values (keys are flag names; a section per command, e.g. train:, holds that command's options)")
	root.PersistentFlags().String("ort-lib", "", "path of libonnxruntime.so.1 (default: $ORTQ_ORT_LIB, then ./.ort/)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newPrepare(), newTrain(), newEval(), newVerify(), newTokenize(), newImport(), newSynth(), newBench())
	root.AddCommand(newExport(), newGenerate(), newEnv())
	return root
}

// options binds a command's flags to viper with the ORTQ_ prefix and the --config file.
func options(cmd *cobra.Command) (*viper.Viper, error) {
	v := viper.New()
	v.SetEnvPrefix("ORTQ")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	var bindErr error
	bind := func(f *pflag.Flag) {
		if err := v.BindPFlag(f.Name, f); err != nil && bindErr == nil {
			bindErr = err
		}
	}
	cmd.Flags().VisitAll(bind)
	cmd.InheritedFlags().VisitAll(bind)
	if bindErr != nil {
		return nil, bindErr
	}
	origin := map[string]string{}
	if cfg, _ := cmd.Flags().GetString("config"); cfg != "" {
		cf, err := readConfig(cfg, cmd) // config.go: top-level keys and cmd's section
		if err != nil {
			return nil, usageError{fmt.Errorf("--config %q: %w", cfg, err)}
		}
		if err := v.MergeConfigMap(cf.values); err != nil {
			return nil, usageError{fmt.Errorf("--config %q: %w", cfg, err)}
		}
		origin = cf.origin
	}
	if err := checkValues(cmd, v, origin); err != nil {
		return nil, err
	}
	if _, err := knobs(); err != nil { // refused before anything runs, as a bad flag
		return nil, err
	}
	return v, nil
}

// minAnnotation on a numeric flag (setMin) is the least value checkValues accepts.
const minAnnotation = "ortq_min"

// setMin makes checkValues refuse values of flag name below low, naming where the value
// came from (the flag, its ORTQ_* variable or the --config file).
func setMin(f *pflag.FlagSet, name, low string) {
	if err := f.SetAnnotation(name, minAnnotation, []string{low}); err != nil {
		panic(err) // a flag ortq itself defines: a programming error
	}
}

// checkValues parses every typed option where it was given (flag, ORTQ_* variable or
// --config file, where origin names the key as written) as its flag would, so a bad value is
// refused naming where it came from instead of becoming viper's silent zero; float options
// must be finite, and numeric ones at least their setMin value.
func checkValues(cmd *cobra.Command, v *viper.Viper, origin map[string]string) error {
	cfg, _ := cmd.Flags().GetString("config")
	var err error
	check := func(f *pflag.Flag) {
		if err != nil {
			return
		}
		var raw, where string
		env := "ORTQ_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if f.Changed {
			raw, where = f.Value.String(), "--"+f.Name
		} else if e, ok := os.LookupEnv(env); ok {
			raw, where = e, fmt.Sprintf("%s (for --%s)", env, f.Name)
		} else if cfg != "" && v.InConfig(f.Name) {
			raw, where = fmt.Sprint(v.Get(f.Name)), fmt.Sprintf("--config %q: %s", cfg, origin[f.Name])
		} else {
			return
		}
		var perr error
		what := ""
		switch f.Value.Type() {
		case "int", "int64", "int32":
			_, perr = strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
			what = "an integer"
		case "uint", "uint64", "uint32":
			_, perr = strconv.ParseUint(strings.TrimSpace(raw), 10, 64)
			what = "a non-negative integer"
		case "float64", "float32":
			var x float64
			x, perr = strconv.ParseFloat(strings.TrimSpace(raw), 64)
			if perr == nil && (math.IsNaN(x) || math.IsInf(x, 0)) {
				perr = errors.New("not finite")
			}
			what = "a finite number"
		case "bool":
			_, perr = strconv.ParseBool(strings.TrimSpace(raw))
			what = "true or false"
		default:
			return
		}
		if perr != nil {
			err = usageError{fmt.Errorf("%s = %q: must be %s", where, raw, what)}
		} else if m, ok := f.Annotations[minAnnotation]; ok && len(m) == 1 {
			x, _ := strconv.ParseFloat(strings.TrimSpace(raw), 64)
			if low, _ := strconv.ParseFloat(m[0], 64); x < low {
				err = usageError{fmt.Errorf("%s = %q: must be ≥ %s", where, raw, m[0])}
			}
		}
	}
	cmd.Flags().VisitAll(check)
	cmd.InheritedFlags().VisitAll(check)
	return err
}
