package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/ortrun/ortruntest"
)

// runOut runs the CLI in-process and returns what it printed to standard output.
func runOut(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	root.SetArgs(args)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	err := root.Execute()
	return out.String(), err
}

// TestExportGenerateCLI: prepare → export (base, LoRA from lora_init, merged, onnx-adapter,
// shared fused and --fuse=false) → generate prints text; greedy output is the same from
// --prompt and from standard input.
func TestExportGenerateCLI(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art := filepath.Join(dir, "art")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	init := filepath.Join(art, "lora_init.safetensors")
	for _, c := range []struct {
		name string
		args []string
	}{
		{"base", nil},
		{"lora", []string{"--adapter", init}},
		{"merged", []string{"--adapter", init, "--merge"}},
		{"onnx-adapter", []string{"--adapter", init, "--format", "onnx-adapter"}},
		{"shared", []string{"--kv-cache", "shared"}},
		{"shared-onnx-adapter", []string{"--adapter", init, "--format", "onnx-adapter", "--kv-cache", "shared"}},
		{"shared-unfused", []string{"--adapter", init, "--kv-cache", "shared", "--fuse=false"}},
	} {
		out := filepath.Join(dir, c.name)
		if err := run(t, append([]string{"export", "--artifacts", art, "--out", out, "--quiet"}, c.args...)...); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for _, f := range []string{export.ModelFile, export.DataFile, export.GenAIConfigFile, "tokenizer.json", "config.json"} {
			if !exists(filepath.Join(out, f)) {
				t.Errorf("%s: %s missing", c.name, f)
			}
		}
		a, err := runOut(t, "", "generate", "--model", out, "--prompt", "The history of", "--max-new-tokens", "12", "--threads", "1", "--quiet")
		if err != nil {
			t.Fatalf("%s: generate: %v", c.name, err)
		}
		b, err := runOut(t, "The history of\n", "generate", "--model", out, "--max-new-tokens", "12", "--threads", "1", "--quiet")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(a) == "" || a != b {
			t.Errorf("%s: --prompt gave %q, stdin %q", c.name, a, b)
		}
		if c.name == "base" {
			_, err := runOut(t, "", "generate", "--model", out, "--prompt", "x", "--adapter", init)
			if err == nil || !strings.Contains(err.Error(), "--format onnx-adapter") {
				t.Errorf("--adapter on a model without LoRA inputs: %v", err)
			}
		}
		if c.name == "onnx-adapter" { // lora_init's B is zero: the adapter changes nothing
			n, err := runOut(t, "", "generate", "--model", out, "--prompt", "The history of", "--max-new-tokens", "12", "--threads", "1", "--quiet", "--adapter", "none")
			if err != nil || n != a {
				t.Errorf("--adapter none: %q (%v), with the adapter %q", n, err, a)
			}
		}
	}
}

// TestExportBadInput: wrong input is refused in one line naming the flag or file, and
// nothing is written.
func TestExportBadInput(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art := filepath.Join(dir, "art")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(bad, []byte("not a safetensors file"), 0o644)
	existing := filepath.Join(dir, "existing")
	os.MkdirAll(existing, 0o755)
	// An existing export (an empty directory is no longer refused: nothing in it is lost).
	os.WriteFile(filepath.Join(existing, "genai_config.json"), []byte("{}"), 0o644)
	out := filepath.Join(dir, "out")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no artifacts", []string{"export", "--out", out}, "--artifacts"},
		{"no out", []string{"export", "--artifacts", art}, "--out"},
		{"bad format", []string{"export", "--artifacts", art, "--out", out, "--format", "gguf"}, "--format"},
		{"bad kv-cache", []string{"export", "--artifacts", art, "--out", out, "--kv-cache", "paged"}, "--kv-cache"},
		{"merge without adapter", []string{"export", "--artifacts", art, "--out", out, "--merge"}, "--merge"},
		{"damaged adapter", []string{"export", "--artifacts", art, "--out", out, "--adapter", bad}, bad},
		{"missing adapter", []string{"export", "--artifacts", art, "--out", out, "--adapter", filepath.Join(dir, "none.safetensors")}, "none.safetensors"},
		{"bad hf config", []string{"export", "--artifacts", art, "--out", out, "--hf-config", filepath.Join(dir, "nope.json")}, "--hf-config"},
		{"other model's config", []string{"export", "--artifacts", art, "--out", out, "--hf-config", filepath.Join("..", "..", "hfimport", "testdata", "hf",
			"llama32", "config.json")}, "num_hidden_layers 2, the artifacts have 4"},
		{"out exists", []string{"export", "--artifacts", art, "--out", existing}, "--force"},
		{"generate no model", []string{"generate", "--prompt", "x"}, "--model"},
		{"generate not an export", []string{"generate", "--model", art, "--prompt", "x"}, art},
		{"generate bad top-p", []string{"generate", "--model", art, "--prompt", "x", "--top-p", "2"}, "--top-p"},
	} {
		err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming %s", c.name, err, c.want)
		}
		if exists(out) {
			t.Fatalf("%s: %s written", c.name, out)
		}
	}
}

// TestExportAfterCheckpointPrepare: `prepare --model HF_DIR` imports into a temporary
// directory that is gone afterwards; export finds config.json in the checkpoint directory
// prepare recorded, and genai_config.json carries its sizes and special tokens.
func TestExportAfterCheckpointPrepare(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	ck := filepath.Join("..", "..", "hfimport", "testdata", "hf", "llama32")
	art, out := filepath.Join(dir, "art"), filepath.Join(dir, "export")
	if err := run(t, "prepare", "--model", ck, "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	if err := run(t, "export", "--artifacts", art, "--out", out, "--tokenizer", "default", "--quiet"); err != nil {
		t.Fatal(err)
	}
	gc, err := export.ReadGenAIConfig(filepath.Join(out, export.GenAIConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	m, d := gc.Model, gc.Model.Decoder
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"vocab", m.VocabSize, 128}, {"context", m.ContextLength, 128}, {"bos", m.BOS, 1}, {"eos", len(m.EOS) == 1 && m.EOS[0] == 2, true},
		{"layers", d.Layers, 2}, {"heads", d.Heads, 4}, {"kv heads", d.KVHeads, 2}, {"head size", d.HeadSize, 16}, {"hidden", d.HiddenSize, 32},
		{"past names", d.Inputs["past_key_names"], "past_key_values.%d.key"}, {"present names", d.Outputs["present_value_names"], "present.%d.value"},
	} {
		if c.got != c.want {
			t.Errorf("genai_config.json %s = %v, want %v", c.name, c.got, c.want)
		}
	}
}
