package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/train"
)

// TestBaseModelName: adapter_config.json's base_model_name_or_path is the model the user
// gave prepare (a checkpoint directory, made absolute; not the temporary import), and
// --base-model-name on prepare or train replaces it.
func TestBaseModelName(t *testing.T) {
	ortruntest.Lib(t)
	ck := filepath.Join("..", "..", "hfimport", "testdata", "hf", "llama32")
	abs, err := filepath.Abs(ck)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, c := range []struct {
		name, prepareFlag, trainOverride, want string
	}{
		{"checkpoint dir", "", "", abs},
		{"prepare override", "meta-llama/Llama-3.2-1B", "", "meta-llama/Llama-3.2-1B"},
		{"train override", "meta-llama/Llama-3.2-1B", "org/other", "org/other"},
	} {
		art := filepath.Join(dir, c.name)
		args := []string{"prepare", "--model", ck, "--out", art, "--quiet"}
		if c.prepareFlag != "" {
			args = append(args, "--base-model-name", c.prepareFlag)
		}
		if err := run(t, args...); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		man, err := manifest.ReadManifest(art)
		if err != nil {
			t.Fatal(err)
		}
		// What train does with --base-model-name, then the adapter it saves.
		train.SetBaseModelName(man, c.trainOverride)
		params, err := train.LoadParams(filepath.Join(art, man.LoRAInit), man)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(art, "run")
		os.MkdirAll(out, 0o755)
		if err := train.SaveAdapter(out, man, params); err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Base string `json:"base_model_name_or_path"`
		}
		b, err := os.ReadFile(filepath.Join(out, "adapter_config.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Base != c.want {
			t.Errorf("%s: base_model_name_or_path %q, want %q", c.name, cfg.Base, c.want)
		}
	}
}

// TestTrainBaseModelNameFlag: `train --base-model-name` reaches adapter_config.json.
func TestTrainBaseModelNameFlag(t *testing.T) {
	dir, args := relFixture(t, 1)
	out := filepath.Join(dir, "run")
	if err := run(t, with(args, "--out", out, "--base-model-name", "org/name")...); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	json.Unmarshal(b, &cfg)
	if cfg["base_model_name_or_path"] != "org/name" {
		t.Errorf("base_model_name_or_path = %v", cfg["base_model_name_or_path"])
	}
}
