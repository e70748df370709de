package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// optionsFor resolves the options of `ortq name` (a command of a fresh root) from a config
// file with the given YAML and the given flags.
func optionsFor(t *testing.T, name, yamlText string, flags ...string) (*viper.Viper, error) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte(yamlText), 0o644); err != nil {
		t.Fatal(err)
	}
	root := newRoot()
	var cmd *cobra.Command
	for _, c := range root.Commands() {
		if c.Name() == name {
			cmd = c
		}
	}
	if cmd == nil {
		t.Fatalf("no command %q", name)
	}
	if err := root.PersistentFlags().Set("config", cfg); err != nil {
		t.Fatal(err)
	}
	cmd.InheritedFlags() // merge the persistent --config into cmd's inherited set
	for i := 0; i+1 < len(flags); i += 2 {
		if err := cmd.Flags().Set(flags[i], flags[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	return options(cmd)
}

// TestConfigSections: one file drives several commands. Each takes the top-level keys it
// has and its own section, whose keys win; flags and ORTQ_* variables win over both; a
// top-level key of another command is that command's in a file with sections and an error
// in a flat file (as before sections existed); unknown keys and sections, keys that differ
// only in case, and bad values are refused naming the key as written and its line.
func TestConfigSections(t *testing.T) {
	pipeline := `seed: 3
lora-r: 16            # prepare's: shared, train leaves it
max-steps: 5
prepare:
  lora-alpha: 32
train:
  max-steps: 9
  Micro-Batch: 2      # keys ignore case
eval:
  micro-batch: 4
`
	for _, c := range []struct {
		name, cmd, yaml string
		flags           []string
		env             map[string]string
		want            map[string]string // option → value as viper.GetString gives it
		wantErr         []string
	}{
		{name: "flat file as before", cmd: "train", yaml: "max-steps: 7\nlr: 0.001\n",
			want: map[string]string{"max-steps": "7", "lr": "0.001"}},
		{name: "flat file, key case-insensitive as before", cmd: "train", yaml: "Max-Steps: 7\n",
			want: map[string]string{"max-steps": "7"}},
		{name: "flat file, another command's option", cmd: "train", yaml: "lora-r: 16\n",
			wantErr: []string{`unknown option "lora-r" for ` + "`ortq train`", "an option of bench, prepare: put it under bench: or prepare:"}},
		{name: "train: its section wins over the top level", cmd: "train", yaml: pipeline,
			want: map[string]string{"seed": "3", "max-steps": "9", "micro-batch": "2"}},
		{name: "prepare: top level and its section", cmd: "prepare", yaml: pipeline,
			want: map[string]string{"seed": "3", "lora-r": "16", "lora-alpha": "32"}},
		{name: "eval: its section", cmd: "eval", yaml: pipeline,
			want: map[string]string{"micro-batch": "4", "seed": "3"}},
		{name: "a flag wins over the section", cmd: "train", yaml: pipeline, flags: []string{"max-steps", "11"},
			want: map[string]string{"max-steps": "11"}},
		{name: "an ORTQ_ variable wins over the section", cmd: "train", yaml: pipeline, env: map[string]string{"ORTQ_MAX_STEPS": "12"},
			want: map[string]string{"max-steps": "12"}},
		{name: "unknown key in the section", cmd: "train", yaml: "train:\n  lora-rr: 1\n",
			wantErr: []string{"train.lora-rr (line 2): unknown option"}},
		{name: "unknown key in another command's section", cmd: "train", yaml: "prepare:\n  max-stepz: 1\n",
			wantErr: []string{"prepare.max-stepz (line 2): unknown option for `ortq prepare`"}},
		{name: "another command's option in a section", cmd: "train", yaml: "train:\n  lora-r: 8\n",
			wantErr: []string{"train.lora-r (line 2): unknown option", "prepare:"}},
		{name: "unknown section", cmd: "train", yaml: "trian:\n  max-steps: 1\n",
			wantErr: []string{"trian (line 1): unknown section", "train"}},
		{name: "unknown top-level key beside sections", cmd: "train", yaml: "max-stepz: 1\ntrain:\n  seed: 1\n",
			wantErr: []string{`unknown option "max-stepz"`}},
		{name: "option given a mapping", cmd: "train", yaml: "seed:\n  a: 1\n",
			wantErr: []string{"seed (line 1): a mapping"}},
		{name: "mapping inside a section", cmd: "train", yaml: "train:\n  lr:\n    a: 1\n",
			wantErr: []string{"train.lr (line 2): a mapping"}},
		{name: "keys differing in case", cmd: "train", yaml: "max-steps: 1\nMax-Steps: 2\n",
			wantErr: []string{"max-steps (line 1) and Max-Steps (line 2)", "same option"}},
		{name: "keys differing in case in a section", cmd: "eval", yaml: "train:\n  seed: 1\n  SEED: 2\n",
			wantErr: []string{"train.seed (line 2) and train.SEED (line 3)"}},
		{name: "sections differing in case", cmd: "eval", yaml: "train:\n  seed: 1\nTrain:\n  seed: 2\n",
			wantErr: []string{"train (line 1) and Train (line 3)"}},
		{name: "bad value in the section", cmd: "train", yaml: "train:\n  micro-batch: sixteen\n",
			wantErr: []string{"train.micro-batch", "must be an integer"}},
		{name: "not a mapping", cmd: "train", yaml: "- max-steps\n",
			wantErr: []string{"want a mapping"}},
		{name: "empty file", cmd: "train", yaml: "", want: map[string]string{"max-steps": "0"}},
		{name: "empty section", cmd: "prepare", yaml: "lora-r: 4\ntrain:\neval: {}\n", want: map[string]string{"lora-r": "4"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			v, err := optionsFor(t, c.cmd, c.yaml, c.flags...)
			if c.wantErr != nil {
				for _, w := range c.wantErr {
					if err == nil || !strings.Contains(err.Error(), w) {
						t.Fatalf("error %v, want it to say %q", err, w)
					}
				}
				if _, ok := err.(usageError); !ok {
					t.Errorf("error %v is not a usage error (exit status 2)", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range c.want {
				if got := v.GetString(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestReadmePipelineConfig: the README's pipeline.yaml example is accepted by each command
// it has a section for, and each takes its own section's values.
func TestReadmePipelineConfig(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "# pipeline.yaml")
	if !ok {
		t.Fatal("README.md has no pipeline.yaml example")
	}
	text, _, _ := strings.Cut(rest[strings.Index(rest, "\n")+1:], "```")
	for _, c := range []struct{ cmd, key, want string }{
		{"prepare", "lora-r", "16"}, {"prepare", "seed", "7"},
		{"train", "max-steps", "200"}, {"train", "artifacts", "art/"}, {"train", "max-grad-norm", "1"},
		{"eval", "adapter", "art/run/adapter_model.safetensors"}, {"eval", "tokenizer", "default"},
	} {
		v, err := optionsFor(t, c.cmd, text)
		if err != nil {
			t.Fatalf("%s: %v", c.cmd, err)
		}
		if got := v.GetString(c.key); got != c.want {
			t.Errorf("%s: %s = %q, want %q", c.cmd, c.key, got, c.want)
		}
	}
}
