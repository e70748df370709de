package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/train"
)

func run(t *testing.T, args ...string) error {
	t.Helper()
	root := newRoot()
	root.SetArgs(args)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	return root.Execute()
}

func demoData(t *testing.T) string {
	p := os.Getenv("ORTQ_DEMO_DATA")
	if p == "" {
		p = "../../.cache/demo/brown-learned.txt"
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("ORTQ_REQUIRE_FIXTURES") != "" {
			t.Fatalf("demo data %s missing (make demo-data): %v", p, err)
		}
		t.Skipf("demo data %s missing (run make demo-data)", p)
	}
	return p
}

// TestDemoLowersPerplexity is the end-to-end check on the embedded default model: prepare
// (4-bit, LoRA q/v) and a short fine-tune on Brown's "learned" genre on the CPU must lower
// the held-out perplexity by at least 15 % (measured: 93 → 64 in the full demo).
func TestDemoLowersPerplexity(t *testing.T) {
	ortruntest.Lib(t)
	data := demoData(t)
	dir := t.TempDir()
	art, out := filepath.Join(dir, "art"), filepath.Join(dir, "run")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	if err := run(t, "train", "--artifacts", art, "--data", data, "--tokenizer", "default", "--max-steps", "40",
		"--max-seq-len", "256", "--micro-batch", "8", "--lr", "2e-3", "--max-eval-batches", "16", "--quiet", "--out", out); err != nil {
		t.Fatal(err)
	}
	rep := readReport(t, out)
	before, after := float64(rep.Baseline.Perplexity), float64(rep.Final.Perplexity)
	t.Logf("perplexity %.2f → %.2f after %d steps", before, after, rep.OptimizerSteps)
	if !(after < 0.85*before) {
		t.Errorf("perplexity %.2f → %.2f: less than the 15 %% drop asserted", before, after)
	}
	for _, f := range []string{"adapter_model.safetensors", "adapter_config.json", "report.md"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("run directory lacks %s", f)
		}
	}
}

// TestBadInput: every bad input is a one-line error naming the culprit, and nothing is
// written where it should not be.
func TestBadInput(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art := filepath.Join(dir, "art")
	if err := run(t, "prepare", "--out", art, "--quiet", "--bits", "16"); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "corrupt.onnx")
	os.WriteFile(corrupt, []byte("not a protobuf at all"), 0o644)
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	short := filepath.Join(dir, "short.txt")
	os.WriteFile(short, []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("lora_rank: 4\n"), 0o644)
	keep := filepath.Join(dir, "keep")
	os.MkdirAll(keep, 0o755)
	os.WriteFile(filepath.Join(keep, "precious.txt"), []byte("x"), 0o644)
	big := "../../.cache/tokenizers/llama2/tokenizer.json"
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"corrupt onnx", []string{"prepare", "--model", corrupt, "--out", filepath.Join(dir, "o1")}, "not an ONNX protobuf"},
		{"missing model", []string{"prepare", "--model", filepath.Join(dir, "nope.onnx"), "--out", filepath.Join(dir, "o2")}, "nope.onnx"},
		{"existing output", []string{"prepare", "--out", art}, "pass --force"},
		{"non-artifacts dir", []string{"prepare", "--out", keep, "--force"}, "refusing to replace"},
		{"target matches nothing", []string{"prepare", "--out", filepath.Join(dir, "o3"), "--targets", "lm_head_x"}, "lm_head_x"},
		{"bad block size", []string{"prepare", "--out", filepath.Join(dir, "o4"), "--block-size", "48"}, "block"},
		{"missing tokenizer", []string{"train", "--artifacts", art, "--data", short, "--tokenizer", filepath.Join(dir, "tok.json")}, "tok.json"},
		{"empty data", []string{"train", "--artifacts", art, "--data", empty, "--tokenizer", "default"}, "empty"},
		{"too-short data", []string{"train", "--artifacts", art, "--data", short, "--tokenizer", "default"}, "short"},
		{"no artifacts", []string{"train", "--artifacts", filepath.Join(dir, "none"), "--data", short, "--tokenizer", "default"}, "ortq prepare"},
		{"max-seq-len beyond the model", []string{"train", "--artifacts", art, "--data", short, "--tokenizer", "default", "--max-seq-len", "1024"},
			"exceeds the model's maximum sequence length 512"},
		{"bad config file", []string{"prepare", "--config", filepath.Join(dir, "bad.yaml"), "--out", filepath.Join(dir, "o5")}, "unknown option \"lora_rank\""},
		{"tokenizer larger than embedding", []string{"train", "--artifacts", art, "--data", short, "--tokenizer", big}, "embedding has 3072 rows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if strings.Contains(strings.Join(c.args, " "), "tokenizers/llama2") {
				if _, err := os.Stat(big); err != nil {
					if os.Getenv("ORTQ_REQUIRE_FIXTURES") != "" {
						t.Fatalf("Llama 2 tokenizer %s missing (ORTQ_REQUIRE_FIXTURES is set): run make tokenizer-fixtures", big)
					}
					t.Skip("Llama 2 tokenizer not fetched (make tokenizer-fixtures; set ORTQ_REQUIRE_FIXTURES=1 to fail instead)")
				}
			}
			err := run(t, c.args...)
			if err == nil {
				t.Fatalf("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q does not mention %q", msg, c.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(keep, "precious.txt")); err != nil {
		t.Errorf("a refused prepare touched an unrelated directory: %v", err)
	}
	for _, o := range []string{"o1", "o2", "o3", "o4"} {
		if _, err := os.Stat(filepath.Join(dir, o)); err == nil {
			t.Errorf("failed prepare left %s behind", o)
		}
	}
}

// TestOptionPrecedence: flags beat ORTQ_* environment variables, which beat the YAML file.
func TestOptionPrecedence(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ortq.yaml")
	os.WriteFile(cfg, []byte("lora-r: 4\nlora-alpha: 8\nbits: 16\n"), 0o644)
	read := func(out string) map[string]any {
		b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Options map[string]any `json:"options"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m.Options
	}
	t.Setenv("ORTQ_LORA_ALPHA", "12")
	out := filepath.Join(dir, "a")
	if err := run(t, "prepare", "--config", cfg, "--out", out, "--quiet", "--lora-r", "2"); err != nil {
		t.Fatal(err)
	}
	o := read(out)
	if o["lora_r"] != 2.0 || o["lora_alpha"] != 12.0 || o["bits"] != 16.0 {
		t.Errorf("options r=%v (flag 2), alpha=%v (env 12), bits=%v (file 16)", o["lora_r"], o["lora_alpha"], o["bits"])
	}
}

// TestTokenizeRoundTrip runs `ortq tokenize` and `ortq tokenize --decode` on the embedded
// default tokenizer through files, as a user would.
func TestTokenizeRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	os.WriteFile(in, []byte("the study of learned texts\nanother line\n"), 0o644)
	capture := func(args ...string) string {
		t.Helper()
		r, w, _ := os.Pipe()
		old := os.Stdout
		os.Stdout = w
		err := run(t, args...)
		w.Close()
		os.Stdout = old
		b, _ := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ids := capture("tokenize", "--tokenizer", "default", in)
	lines := strings.Split(strings.TrimSpace(ids), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "[") {
		t.Fatalf("tokenize printed %q", ids)
	}
	idsFile := filepath.Join(dir, "ids.jsonl")
	os.WriteFile(idsFile, []byte(ids), 0o644)
	text := capture("tokenize", "--tokenizer", "default", "--decode", idsFile)
	want := "\"the study of learned texts\"\n\"another line\"\n"
	if text != want {
		t.Errorf("decode(encode(x)) = %q, want %q", text, want)
	}
}

// TestBenchRunsTorchPeer: --peer torch runs the peer script with the bench's workload and
// merges its JSON into the report. A stand-in interpreter records its arguments and writes
// a recorded peer result, so no torch is needed here.
func TestBenchRunsTorchPeer(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	fixture, err := filepath.Abs("../../bench/testdata/peer_fixture.json")
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "python")
	script := "#!/bin/sh\necho \"$@\" > " + filepath.Join(dir,
		"args") + "\nwhile [ $# -gt 0 ]; do if [ \"$1\" = --out ]; then cp " + fixture + " \"$2\"; fi; shift; done\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bench")
	if err := run(t, "bench", "--preset", "tiny", "--seq-len", "32", "--micro-batch", "2", "--steps", "2", "--warmup", "1",
		"--quiet", "--peer", "torch", "--python", fake, "--peer-script", "peer.py", "--out", out); err != nil {
		t.Fatal(err)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	for _, want := range []string{"peer.py", "--preset tiny", "--micro-batch 2", "--seq-len 32", "--recompute none"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("peer invoked with %q, missing %q", args, want)
		}
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "fixture") {
		t.Errorf("report.md does not show the peer's row")
	}
}

// TestPrepareFromCheckpoint: `prepare --model HF_DIR` imports the checkpoint itself; for a
// 4-bit base the import packs the Linears (no full-precision copy in the temp directory),
// symmetric or asymmetric, and the manifest says so; --bits 16 imports full precision.
func TestPrepareFromCheckpoint(t *testing.T) {
	ortruntest.Lib(t)
	ck := filepath.Join("..", "..", "hfimport", "testdata", "hf", "llama32")
	dir := t.TempDir()
	for _, c := range []struct {
		name         string
		args         []string
		quantized    int // Linears quantized (prepare's pass or the import)
		prequantized bool
	}{
		{"4-bit", nil, 14, true},
		{"asymmetric", []string{"--asymmetric"}, 14, true},
		{"block 64", []string{"--block-size", "64"}, 14, true},
		{"16-bit", []string{"--bits", "16"}, 0, false},
	} {
		out := filepath.Join(dir, c.name)
		if err := run(t, append([]string{"prepare", "--model", ck, "--out", out, "--quiet"}, c.args...)...); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		man, err := manifest.ReadManifest(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(man.Quant) != c.quantized {
			t.Errorf("%s: %d quantized Linears, want %d", c.name, len(man.Quant), c.quantized)
		}
		for _, q := range man.Quant {
			if q.Prequantized != c.prequantized {
				t.Errorf("%s: %s prequantized = %v, want %v", c.name, q.Module, q.Prequantized, c.prequantized)
			}
		}
	}
}

// readReport reads the report.json a train run wrote into out.
func readReport(t *testing.T, out string) train.Report {
	t.Helper()
	var rep train.Report
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}
