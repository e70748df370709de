package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortrun/ortruntest"
)

// TestGenerateBatchCLI: several --prompt (or a --prompts JSONL file) print one JSON object
// per prompt, in order, whose ids are each prompt's alone; with a shared-KV-cache export
// the rows run as one batch, with a concat export one after another, and both print the
// same. A bad --prompts line is refused naming the file and line.
func TestGenerateBatchCLI(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art := filepath.Join(dir, "art")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	prompts := []string{"The history of", "a study of the", "language"}
	file := filepath.Join(dir, "prompts.jsonl")
	var lines []string
	for _, p := range prompts {
		b, _ := json.Marshal(map[string]string{"prompt": p})
		lines = append(lines, string(b))
	}
	os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	gen := []string{"generate", "--max-new-tokens", "6", "--ignore-eos", "--threads", "1", "--quiet", "--ids"}
	var outputs []string
	for _, kv := range []string{"concat", "shared"} {
		out := filepath.Join(dir, kv)
		if err := run(t, "export", "--artifacts", art, "--out", out, "--quiet", "--kv-cache", kv); err != nil {
			t.Fatal(err)
		}
		var alone []string
		for _, p := range prompts {
			o, err := runOut(t, "", append(gen, "--model", out, "--prompt", p)...)
			if err != nil {
				t.Fatal(err)
			}
			alone = append(alone, `{"ids":`+strings.TrimSpace(o)+`}`)
		}
		args := append(gen, "--model", out)
		for _, p := range prompts {
			args = append(args, "--prompt", p)
		}
		batch, err := runOut(t, "", args...)
		if err != nil {
			t.Fatal(err)
		}
		fromFile, err := runOut(t, "", append(gen, "--model", out, "--prompts", file)...)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.Join(alone, "\n") + "\n"; batch != want || fromFile != want {
			t.Errorf("%s: batch printed\n%s--prompts printed\n%seach alone\n%s", kv, batch, fromFile, want)
		}
		outputs = append(outputs, batch)
	}
	if outputs[0] != outputs[1] {
		t.Errorf("concat and shared exports differ:\n%s\n%s", outputs[0], outputs[1])
	}
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(lines[0]+"\n{\"text\": \"x\"}\n"), 0o644)
	err := run(t, "generate", "--model", filepath.Join(dir, "shared"), "--prompts", bad)
	if err == nil || !strings.Contains(err.Error(), bad+":2") || strings.Contains(err.Error(), "\n") {
		t.Errorf("bad --prompts line: %v, want one line naming %s:2", err, bad)
	}
}
