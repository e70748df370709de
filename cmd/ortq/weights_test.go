package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/manifest"
)

// TestDamagedWeights (issue 13 item 7): a flipped byte in weights.bin is refused by
// `ortq verify` and by the first `ortq train`, a truncated weights.bin by every command
// that opens artifacts — each naming weights.bin, the truncation with both sizes and
// before ONNX Runtime reads the file — and artifacts whose manifest predates the
// recorded size and hash still train.
func TestDamagedWeights(t *testing.T) {
	dir, trainArgs := relFixture(t, 1)
	art := filepath.Join(dir, "art")
	var evalArgs []string
	for i := 0; i < len(trainArgs); i++ {
		switch trainArgs[i] {
		case "--data", "--tokenizer", "--max-seq-len", "--threads":
			evalArgs = append(evalArgs, trainArgs[i], trainArgs[i+1])
		}
	}
	wb, err := os.ReadFile(filepath.Join(art, manifest.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(wb))
	truncated := []string{"weights.bin is 1000000 bytes, manifest.json records " + itoa(size), "ortq prepare --force"}
	flipped := []string{"weights.bin is damaged", "SHA-256", "ortq prepare --force"}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, art string)
		cmd    string   // train, eval, verify or bench
		want   []string // substrings of the error; none: the command succeeds
		output string   // with no error: a substring of verify's output
	}{
		{name: "intact/verify", cmd: "verify", output: "OK: "},
		{name: "flipped byte/verify", damage: flipByte, cmd: "verify", want: flipped},
		{name: "flipped byte/first train", damage: flipByte, cmd: "train", want: flipped},
		{name: "truncated/train", damage: truncate, cmd: "train", want: truncated},
		{name: "truncated/eval", damage: truncate, cmd: "eval", want: truncated},
		{name: "truncated/verify", damage: truncate, cmd: "verify", want: truncated},
		{name: "truncated/bench --artifacts", damage: truncate, cmd: "bench", want: truncated},
		{name: "old manifest/train", damage: oldManifest, cmd: "train"},
		{name: "old manifest/verify", damage: oldManifest, cmd: "verify", output: "records no sizes or hashes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := filepath.Join(t.TempDir(), "art")
			copyDir(t, art, a)
			if tc.damage != nil {
				tc.damage(t, a)
			}
			var args []string
			switch tc.cmd {
			case "train":
				args = with(setFlag(trainArgs, "--artifacts", a), "--out", filepath.Join(t.TempDir(), "run"))
			case "eval":
				args = append([]string{"eval", "--artifacts", a}, evalArgs...)
			case "verify":
				args = []string{"verify", "--artifacts", a}
			case "bench":
				args = []string{"bench", "--artifacts", a, "--out", filepath.Join(t.TempDir(), "bench"), "--steps", "1", "--warmup", "0", "--quiet"}
			}
			root := newRoot()
			root.SetArgs(args)
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			err := root.Execute()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("%s: %v", tc.cmd, err)
				}
				if !strings.Contains(out.String(), tc.output) {
					t.Errorf("output %q lacks %q", out.String(), tc.output)
				}
				return
			}
			if err == nil {
				t.Fatalf("%s accepted damaged weights.bin", tc.cmd)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") || strings.Contains(strings.ToLower(msg), "onnxruntime") || strings.Contains(msg, "ORT") {
				t.Errorf("not one line of ortq's own: %q", msg)
			}
		})
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func flipByte(t *testing.T, art string) {
	p := filepath.Join(art, manifest.WeightsFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, art string) {
	if err := os.Truncate(filepath.Join(art, manifest.WeightsFile), 1000000); err != nil {
		t.Fatal(err)
	}
}

// oldManifest removes what prepare records since issue 13 item 7 (data_files) and the
// verified state, as in artifacts prepared before.
func oldManifest(t *testing.T, art string) {
	p := filepath.Join(art, manifest.ManifestFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["data_files"]; !ok {
		t.Fatal("manifest.json records no data_files")
	}
	delete(m, "data_files")
	b, _ = json.Marshal(m)
	os.WriteFile(p, b, 0o644)
	os.Remove(filepath.Join(art, manifest.VerifiedFile))
}

// copyDir copies the files of src (a flat artifacts directory) into a new dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}
