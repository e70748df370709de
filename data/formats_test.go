package data

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ortq/ortq/chat"
	"github.com/parquet-go/parquet-go"
)

const alpacaNoInput = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### " +
	"Instruction:\nSay hi\n\n### Response:\n"

func defaultTemplate(t *testing.T) *chat.Template {
	t.Helper()
	src, err := os.ReadFile("testdata/chat/templates/default.jinja")
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := chat.Parse("default.jinja", string(src), "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	return tpl
}

type pcRow struct {
	Prompt     string  `parquet:"prompt"`
	Completion *string `parquet:"completion,optional"`
	N          int64   `parquet:"n"`
}

// writeParquet writes rows with parquet-go, the library the reader uses (a committed binary
// fixture would have to be regenerated the same way).
func writeParquet(t *testing.T, dir, name string, rows any) string {
	t.Helper()
	var b bytes.Buffer
	var err error
	switch r := rows.(type) {
	case []pcRow:
		err = parquet.Write(&b, r)
	case []struct {
		Text string `parquet:"body"`
	}:
		err = parquet.Write(&b, r)
	}
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name, b.String())
}

func strp(s string) *string { return &s }

// TestReadFormats: each format and record kind becomes the documents and trained ranges
// written out by hand here.
func TestReadFormats(t *testing.T) {
	dir := t.TempDir()
	tpl := defaultTemplate(t)
	pc := func(src string, line int, prompt, completion string) Document {
		return Document{Source: src, Line: line, Text: prompt + completion, Trained: []Span{{len(prompt), len(prompt + completion)}}}
	}
	chatText := "<s>Question: 2+2?\nAnswer: 4</s>\n"
	tests := []struct {
		name, file, content string
		opts                ReadOptions
		want                func(path string) []Document
	}{
		{"jsonl prompt/completion", "pc.jsonl", `{"prompt": "Q: hi\nA:", "completion": " hello"}` + "\n", ReadOptions{},
			func(p string) []Document { return []Document{pc(p, 1, "Q: hi\nA:", " hello")} }},
		{"train on prompt+completion", "pc.jsonl", `{"prompt": "Q:", "completion": " a"}`, ReadOptions{TrainOn: TrainAll},
			func(p string) []Document { return []Document{{Source: p, Line: 1, Text: "Q: a"}} }},
		{"json array of alpaca records", "alpaca.json",
			"[\n {\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"},\n {\"instruction\": \"Say hi\", \"output\": \"hey\"}\n]", ReadOptions{},
			func(p string) []Document {
				return []Document{pc(p, 2, alpacaNoInput, "hi"), pc(p, 3, alpacaNoInput, "hey")}
			}},
		{"json lines in a .json file", "lines.json", `{"text": "one"}` + "\n" + `{"text": "two"}`, ReadOptions{},
			func(p string) []Document {
				return []Document{{Source: p, Line: 1, Text: "one"}, {Source: p, Line: 2, Text: "two"}}
			}},
		{"chat messages", "chat.jsonl", `{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}`, ReadOptions{Chat: tpl},
			func(p string) []Document {
				return []Document{{Source: p, Line: 1, Text: chatText, Templated: true, Trained: []Span{{len("<s>Question: 2+2?\nAnswer:"), len(chatText)}}}}
			}},
		{"csv text column", "t.csv", "id,body\n1,\"first, quoted\"\n2,second\n", ReadOptions{TextField: "body"},
			func(p string) []Document {
				return []Document{{Source: p, Line: 2, Text: "first, quoted"}, {Source: p, Line: 3, Text: "second"}}
			}},
		{"tsv prompt/completion columns", "t.tsv", "q\ta\nWhy?\tBecause.\n", ReadOptions{PromptField: "q", CompletionField: "a"},
			func(p string) []Document { return []Document{pc(p, 2, "Why?", "Because.")} }},
		{"no extension, JSON content", "records", `{"text": "x"}`, ReadOptions{},
			func(p string) []Document { return []Document{{Source: p, Line: 1, Text: "x"}} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.file, tc.content)
			got, err := ReadDocuments([]string{p}, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.want(p); !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
	t.Run("parquet prompt/completion", func(t *testing.T) {
		p := writeParquet(t, dir, "pc.parquet", []pcRow{{"Q1", strp(" A1"), 1}, {"Q2", strp(" A2"), 2}})
		got, err := ReadDocuments([]string{p}, ReadOptions{})
		if want := []Document{pc(p, 1, "Q1", " A1"), pc(p, 2, "Q2", " A2")}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, %v\nwant %+v", got, err, want)
		}
	})
	t.Run("parquet text column", func(t *testing.T) {
		p := writeParquet(t, dir, "t.parquet", []struct {
			Text string `parquet:"body"`
		}{{"hello"}})
		got, err := ReadDocuments([]string{p}, ReadOptions{TextField: "body"})
		if want := []Document{{Source: p, Line: 1, Text: "hello"}}; err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, %v", got, err)
		}
	})
}

// TestFormatRefusals: what does not fit is refused in one line naming the file, the line
// (or row) and the field.
func TestFormatRefusals(t *testing.T) {
	dir := t.TempDir()
	tpl := defaultTemplate(t)
	tests := []struct {
		name, file, content string
		opts                ReadOptions
		wantAll             []string
	}{
		{"unknown extension", "notes.docx", "text", ReadOptions{}, []string{"notes.docx", ".docx", ".parquet"}},
		{".json that is not records", "config.json", "{\n \"lr\": 1\n}\n", ReadOptions{}, []string{"config.json", "not records"}},
		{".json array of non-objects", "nums.json", "[\n1, 2]", ReadOptions{}, []string{"nums.json:2", "element 0", "not a JSON object"}},
		{"a record of another kind", "mixed.jsonl", `{"prompt": "a", "completion": "b"}` + "\n" + `{"prompt": "c"}`, ReadOptions{},
			[]string{"mixed.jsonl:2", `missing field "completion"`, "prompt/completion"}},
		{"no known field", "x.jsonl", `{"question": "a", "answer": "b"}`, ReadOptions{}, []string{"x.jsonl:1", `"text"`, `"messages"`, `"answer", "question"`}},
		{"non-string completion", "n.jsonl", `{"prompt": "a", "completion": 3}`, ReadOptions{}, []string{"n.jsonl:1", `field "completion" must be a string`}},
		{"empty completion", "e.jsonl", `{"prompt": "a", "completion": " "}`, ReadOptions{}, []string{"e.jsonl:1", "completion is empty"}},
		{"alpaca output missing", "al.json", `[{"instruction": "a", "output": "b"}, {"instruction": "c", "input": "d"}]`, ReadOptions{},
			[]string{"al.json:1", `missing field "output"`}},
		{"messages not a list", "m.jsonl", `{"messages": "hi"}`, ReadOptions{Chat: tpl}, []string{"m.jsonl:1", `"messages" must be a non-empty list`}},
		{"message without content", "m2.jsonl", `{"messages": [{"role": "user"}]}`, ReadOptions{Chat: tpl},
			[]string{"m2.jsonl:1: messages[0]", `missing field "content"`}},
		{"chat without a template", "m3.jsonl", `{"messages": [{"role": "user", "content": "x"}]}`, ReadOptions{}, []string{"m3.jsonl:1", "--chat-template"}},
		{"template refuses the conversation", "m4.jsonl", `{"messages": [{"role": "tool", "content": "x"}]}`, ReadOptions{Chat: tpl},
			[]string{"m4.jsonl:1", "roles must be system, user or assistant, not tool"}},
		{"csv without the column", "c.csv", "title,body\na,b\n", ReadOptions{}, []string{"c.csv:2", `missing field "text"`, `"body", "title"`}},
		{"csv ragged row", "r.csv", "text\na\nb,c\n", ReadOptions{}, []string{"r.csv:3", "wrong number of fields"}},
		{"tsv invalid utf-8", "u.tsv", "text\n\xff\n", ReadOptions{}, []string{"u.tsv", "UTF-8"}},
		{"not parquet", "bad.parquet", "PAR1 nonsense", ReadOptions{}, []string{"bad.parquet", "not a Parquet file"}},
		{"csv with a NUL", "z.csv", "text\na\x00b\n", ReadOptions{}, []string{"z.csv", "NUL byte"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.file, tc.content)
			_, err := ReadDocuments([]string{p}, tc.opts)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			for _, w := range tc.wantAll {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("parquet null completion", func(t *testing.T) {
		p := writeParquet(t, dir, "null.parquet", []pcRow{{"Q1", strp("A1"), 1}, {"Q2", nil, 2}})
		_, err := ReadDocuments([]string{p}, ReadOptions{})
		if err == nil || !strings.Contains(err.Error(), "null.parquet: row 2") || !strings.Contains(err.Error(), `"completion" must be a string`) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("parquet column of another type", func(t *testing.T) {
		p := writeParquet(t, dir, "num.parquet", []pcRow{{"Q1", strp("A1"), 1}})
		for _, o := range []ReadOptions{{TextField: "n"}, {PromptField: "n"}} {
			_, err := ReadDocuments([]string{p}, o)
			if err == nil || !strings.Contains(err.Error(), "num.parquet: row 1") || !strings.Contains(err.Error(), `missing field "n"`) {
				t.Errorf("%+v: got %v", o, err)
			}
		}
	})
}
