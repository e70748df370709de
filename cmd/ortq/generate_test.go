package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/ortrun/ortruntest"
	"github.com/ortq/ortq/tokenize"
)

// TestGenerateIDs: --ids prints the new ids as one JSON array, the ids whose text the
// default output prints, ending with the EOS that stops them; an export whose model
// vocabulary (3072) is larger than its tokenizer's is refused in one line naming both sizes
// and --ids, and runs with --ids.
func TestGenerateIDs(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art, out, small := filepath.Join(dir, "art"), filepath.Join(dir, "export"), filepath.Join(dir, "small")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	for _, o := range []string{out, small} {
		if err := run(t, "export", "--artifacts", art, "--out", o, "--quiet"); err != nil {
			t.Fatal(err)
		}
	}
	// small's tokenizer: one id per lower-case letter, the space and the full stop (28 ids),
	// no special tokens.
	vocab := map[string]int{" ": 0}
	for c := 'a'; c <= 'z'; c++ {
		vocab[string(c)] = int(c-'a') + 1
	}
	vocab["."] = 27
	b, _ := json.Marshal(map[string]any{"model": map[string]any{"type": "BPE", "vocab": vocab, "merges": []string{}}})
	for _, f := range []string{"tokenizer_config.json", "special_tokens_map.json"} {
		os.Remove(filepath.Join(small, f))
	}
	if err := os.WriteFile(filepath.Join(small, "tokenizer.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}

	const prompt, n = "the history of", 12
	gen := []string{"generate", "--prompt", prompt, "--max-new-tokens", fmt.Sprint(n), "--ignore-eos", "--threads", "1", "--quiet"}
	text, err := runOut(t, "", append(gen, "--model", out)...)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenize.Load(filepath.Join(out, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	pids, err := promptIDs(tok, prompt)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		model string
		args  []string
		vocab int      // ids must lie in [0, vocab)
		err   []string // nil: succeeds; else what the one-line error names
	}{
		{"ids", out, []string{"--ids"}, 3072, nil},
		{"larger vocab", small, nil, 0, []string{"(3072 tokens", "(28)", "--ids"}},
		{"larger vocab with --ids", small, []string{"--ids"}, 3072, nil},
	} {
		got, err := runOut(t, "", append(append(gen, "--model", c.model), c.args...)...)
		if c.err != nil {
			if err == nil || strings.Contains(err.Error(), "\n") {
				t.Errorf("%s: error %v, want one line", c.name, err)
				continue
			}
			for _, part := range c.err {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("%s: error %q does not name %q", c.name, err, part)
				}
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var ids []int
		if !strings.HasSuffix(got, "]\n") || strings.Count(got, "\n") != 1 || json.Unmarshal([]byte(got), &ids) != nil {
			t.Fatalf("%s: printed %q, want one JSON array of ids", c.name, got)
		}
		if len(ids) != n {
			t.Errorf("%s: %d ids, want --max-new-tokens %d", c.name, len(ids), n)
		}
		for _, id := range ids {
			if id < 0 || id >= c.vocab {
				t.Errorf("%s: id %d outside [0, %d)", c.name, id, c.vocab)
			}
		}
		if c.model == out { // the same greedy tokens as the text printed without --ids
			var all []int
			for _, id := range pids {
				all = append(all, int(id))
			}
			all = append(all, ids...)
			want, err := tok.Decode(all, true)
			if err != nil {
				t.Fatal(err)
			}
			if want+"\n" != text {
				t.Errorf("%s: ids %v decode to %q, generate printed %q", c.name, ids, want, text)
			}
		}
	}

	// Stopped at EOS: the ids end with it, as transformers' generate returns them. EOS is
	// the 4th id drawn without it, set in small's genai_config.json (its tokenizer has none).
	var all, got []int
	if o, err := runOut(t, "", append(gen, "--model", small, "--ids")...); err != nil || json.Unmarshal([]byte(o), &all) != nil || len(all) != n {
		t.Fatalf("--ids: %q, %v", o, err)
	}
	gcPath := filepath.Join(small, export.GenAIConfigFile)
	gc, err := export.ReadGenAIConfig(gcPath)
	if err != nil {
		t.Fatal(err)
	}
	gc.Model.EOS = []int{all[3]}
	if b, err = json.Marshal(gc); err != nil || os.WriteFile(gcPath, b, 0o644) != nil {
		t.Fatal(err)
	}
	o, err := runOut(t, "", "generate", "--model", small, "--prompt", prompt, "--max-new-tokens", fmt.Sprint(n), "--threads", "1", "--quiet", "--ids")
	if err != nil || json.Unmarshal([]byte(o), &got) != nil {
		t.Fatalf("--ids with EOS %d: %q, %v", all[3], o, err)
	}
	want := all[:slices.Index(all, all[3])+1]
	if !slices.Equal(got, want) {
		t.Errorf("--ids with EOS %d: %v, want %v", all[3], got, want)
	}
}
