package data

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadDocuments(t *testing.T) {
	dir := t.TempDir()
	txt := writeFile(t, dir, "a.txt", "\uFEFFfirst line\r\n\r\nsecond line\n")
	jsonl := writeFile(t, dir, "b.jsonl", "{\"text\": \"one\"}\n\n{\"text\": \"two\", \"id\": 3}\r\n{\"text\": \"   \"}\n{\"text\":\"three\"}")
	tests := []struct {
		name  string
		paths []string
		opts  ReadOptions
		want  []Document
	}{
		{"txt whole file", []string{txt}, ReadOptions{}, []Document{{Source: txt, Text: "first line\n\nsecond line\n"}}},
		{"txt per line", []string{txt}, ReadOptions{LinePerDocument: true}, []Document{
			{Source: txt, Line: 1, Text: "first line"}, {Source: txt, Line: 3, Text: "second line"}}},
		{"jsonl skips blank lines and blank text", []string{jsonl}, ReadOptions{}, []Document{
			{Source: jsonl, Line: 1, Text: "one"}, {Source: jsonl, Line: 3, Text: "two"}, {Source: jsonl, Line: 5, Text: "three"}}},
		{"files in order", []string{jsonl, txt}, ReadOptions{}, []Document{
			{Source: jsonl, Line: 1, Text: "one"}, {Source: jsonl, Line: 3, Text: "two"}, {Source: jsonl, Line: 5, Text: "three"},
			{Source: txt, Text: "first line\n\nsecond line\n"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadDocuments(tc.paths, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d docs %+v, want %+v", len(got), got, tc.want)
			}
			for i := range got {
				if !reflect.DeepEqual(got[i], tc.want[i]) {
					t.Errorf("doc %d = %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestReadDocumentsErrors(t *testing.T) {
	dir := t.TempDir()
	empty1 := writeFile(t, dir, "empty.txt", "  \n\n")
	empty2 := writeFile(t, dir, "empty.jsonl", "\n")
	tests := []struct {
		name    string
		file    string // content for bad.jsonl, or "" to use paths
		paths   []string
		opts    ReadOptions
		wantAll []string
	}{
		{name: "bad json", file: "{\"text\": \"ok\"}\n{\"text\": oops}\n", wantAll: []string{"bad.jsonl:2", "not a JSON object"}},
		{name: "missing field", file: "{\"text\": \"ok\"}\n\n{\"body\": \"x\"}\n", wantAll: []string{"bad.jsonl:3", `missing field "text"`}},
		{name: "custom field missing", file: "{\"text\": \"ok\"}\n", opts: ReadOptions{TextField: "content"}, wantAll: []string{"bad.jsonl:1", `"content"`}},
		{name: "non-string", file: "{\"text\": 12}\n", wantAll: []string{"bad.jsonl:1", `field "text" must be a string`}},
		{name: "null text", file: "{\"text\": null}\n", wantAll: []string{"bad.jsonl:1", `field "text" must be a string`}},
		{name: "array line", file: "[1,2]\n", wantAll: []string{"bad.jsonl:1"}},
		{name: "all empty", paths: []string{empty1, empty2}, wantAll: []string{"no text found", empty1, empty2}},
		{name: "no files", paths: []string{}, wantAll: []string{"no data files"}},
		{name: "missing file", paths: []string{filepath.Join(dir, "nope.txt")}, wantAll: []string{"nope.txt"}},
		{name: "directory", paths: []string{dir}, wantAll: []string{"is a directory"}},
		{name: "too big", file: "{\"text\": \"0123456789\"}\n", opts: ReadOptions{MaxFileBytes: 8}, wantAll: []string{"limit"}},
		{name: "invalid utf8", paths: []string{writeFile(t, dir, "bin.txt", "a\xff\xfeb")}, wantAll: []string{"bin.txt", "UTF-8"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			paths := tc.paths
			if tc.file != "" {
				paths = []string{writeFile(t, dir, "bad.jsonl", tc.file)}
			}
			_, err := ReadDocuments(paths, tc.opts)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.wantAll {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// FuzzParseDocuments: no input may panic the readers, in any format.
func FuzzParseDocuments(f *testing.F) {
	f.Add([]byte("{\"text\": \"hi\"}\n{\"text\": 1}\n"), uint8(FormatJSONL))
	f.Add([]byte("plain\ntext\n"), uint8(FormatText))
	f.Add([]byte("\uFEFF{\"text\":\"\\u00e9\"}"), uint8(FormatJSONL))
	f.Add([]byte("[{\"prompt\": \"a\", \"completion\": \"b\"}]"), uint8(FormatJSON))
	f.Add([]byte("[{\"instruction\": \"a\", \"output\": \"b\"}, 3]"), uint8(FormatJSON))
	f.Add([]byte("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}"), uint8(FormatJSONL))
	f.Add([]byte("text,b\n\"x\ny\",2\n"), uint8(FormatCSV))
	f.Add([]byte("prompt\tcompletion\na\tb\n"), uint8(FormatTSV))
	f.Add([]byte("PAR1\x00\x00PAR1"), uint8(FormatParquet))
	f.Fuzz(func(t *testing.T, b []byte, format uint8) {
		fm := Format(format % uint8(FormatParquet+1))
		docs, err := ParseDocuments(strings.NewReader(string(b)), "fuzz", ReadOptions{Format: fm, LinePerDocument: fm == FormatText, MaxFileBytes: 1 << 20})
		if err == nil {
			for _, d := range docs {
				if strings.TrimSpace(d.Text) == "" {
					t.Fatalf("blank document %+v returned", d)
				}
				for _, sp := range d.Trained {
					if sp.Start < 0 || sp.End > len(d.Text) || sp.Start > sp.End {
						t.Fatalf("range %+v outside %q", sp, d.Text)
					}
				}
			}
		}
	})
}
