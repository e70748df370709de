package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortrun/ortruntest"
)

// chatReport is the part of report.json the chat tests read.
type chatReport struct {
	Config struct {
		TrainOn   string `json:"train_on"`
		DataStats struct {
			Tokens      int  `json:"tokens"`
			TrainTokens int  `json:"train_tokens"`
			EvalTokens  int  `json:"eval_tokens"`
			TrainLabels int  `json:"train_labels"`
			EvalLabels  int  `json:"eval_labels"`
			Examples    int  `json:"examples"`
			Masked      bool `json:"masked"`
		} `json:"data_stats"`
	} `json:"config"`
	Baseline struct {
		Loss   float64
		Tokens int
	} `json:"baseline_eval"`
	Final struct {
		Loss   float64
		Tokens int
	} `json:"final_eval"`
}

func readChatReport(t *testing.T, out string) chatReport {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r chatReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestChatInstructionTuning: the demo's chat data trains through the default model's chat
// template with the prompt masked: the report counts fewer trained labels than tokens, the
// eval perplexity averages over exactly the eval split's trained labels, the completion loss
// falls; with --train-on prompt+completion every label counts; generate --chat renders the
// prompt through the template.
func TestChatInstructionTuning(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art := filepath.Join(dir, "art")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	args := []string{"train", "--artifacts", art, "--data", "../../testdata/chat-demo.jsonl", "--tokenizer", "default",
		"--no-pack", "--max-seq-len", "128", "--lr", "5e-3", "--max-steps", "30", "--threads", "1", "--quiet"}
	out := filepath.Join(dir, "run")
	if err := run(t, append(args, "--out", out)...); err != nil {
		t.Fatal(err)
	}
	r := readChatReport(t, out)
	d := r.Config.DataStats
	if !d.Masked || r.Config.TrainOn != "completion" || d.TrainLabels <= 0 || 2*d.TrainLabels > d.TrainTokens {
		t.Errorf("masked data: %+v (train_on %q): want well under half the tokens trained", d, r.Config.TrainOn)
	}
	if r.Baseline.Tokens != d.EvalLabels || r.Final.Tokens != d.EvalLabels {
		t.Errorf("eval counts %d / %d tokens, the eval split has %d trained labels", r.Baseline.Tokens, r.Final.Tokens, d.EvalLabels)
	}
	if !(r.Final.Loss < r.Baseline.Loss-1) {
		t.Errorf("completion loss %.3f → %.3f: want a fall of more than 1", r.Baseline.Loss, r.Final.Loss)
	}

	all := filepath.Join(dir, "all")
	if err := run(t, append(args, "--out", all, "--train-on", "prompt+completion", "--max-steps", "1")...); err != nil {
		t.Fatal(err)
	}
	ra := readChatReport(t, all).Config.DataStats
	if ra.Masked || ra.TrainLabels+ra.EvalLabels != ra.TrainTokens+ra.EvalTokens-ra.Examples {
		t.Errorf("prompt+completion: %+v: want every token after the first of each example trained", ra)
	}

	exp := filepath.Join(dir, "export")
	if err := run(t, "export", "--artifacts", art, "--adapter", filepath.Join(out, "adapter_model.safetensors"), "--out", exp, "--quiet"); err != nil {
		t.Fatal(err)
	}
	root := newRoot()
	var buf bytes.Buffer
	root.SetOut(&buf)
	root.SetErr(&buf)
	root.SetArgs([]string{"generate", "--model", exp, "--chat", "--system", "Be brief.", "--prompt", "What is the plural of box?", "--max-new-tokens", "8",
		"--quiet"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if want := "Be brief.  Question: What is the plural of box? Answer:"; !strings.HasPrefix(buf.String(), want) {
		t.Errorf("generate --chat printed %q, want it to start with the rendered prompt %q", buf.String(), want)
	}
}

// TestDataFormatRefusals: what the issue saw trained on as raw bytes is refused in one line
// naming the file and line.
func TestDataFormatRefusals(t *testing.T) {
	ortruntest.Lib(t)
	dir := t.TempDir()
	art := filepath.Join(dir, "art")
	if err := run(t, "prepare", "--out", art, "--quiet"); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ file, content, want string }{
		{"news.csv", "headline,body\nA,B\n", `news.csv:2: missing field "text"`},
		{"records.json", "{\n \"a\": [1, 2]\n}\n", "records.json\" is one JSON value, not records"},
		{"page.html", "<html></html>", "ortq does not read .html files"},
		{"instruct.jsonl", `{"prompt": "a", "completion": 3}`, `instruct.jsonl:1: field "completion" must be a string`},
	} {
		err := run(t, "train", "--artifacts", art, "--data", write(c.file, c.content), "--tokenizer", "default", "--out", filepath.Join(dir, "run"), "--quiet")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.file, err, c.want)
		}
	}
}
