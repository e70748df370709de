package tokenize

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRegexMatchTimeout (issue 26 #7): a tokenizer.json normalizer with a catastrophically
// backtracking regex, (a+)+$ on 32 a's then b, once ran for minutes; now Encode fails
// within a few seconds naming the tokenizer file and the pattern.
func TestRegexMatchTimeout(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "custom_bytelevel.tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	d["normalizer"] = map[string]any{"type": "Replace", "pattern": map[string]any{"Regex": "(a+)+$"}, "content": "x"}
	b, _ = json.Marshal(d)
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = tok.Encode(strings.Repeat("a", 32)+"b", false)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "(a+)+$") || time.Since(start) > 10*time.Second {
		t.Fatalf("Encode: %v after %v, want an error naming %s and the pattern within seconds", err, time.Since(start), path)
	}
	if ids, err := tok.Encode("b", false); err != nil || len(ids) == 0 {
		t.Errorf("an ordinary text after the timeout: %v %v", ids, err)
	}
}
