package tokenize

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the tokenizer.json loader. Load turns panics into
// "internal error" errors for users; here such an error is a failure, as is a panic in
// encoding or decoding with a tokenizer that loaded. `go test` runs the seeds
// (f.Add and testdata/fuzz); scripts/fuzz.sh runs the fuzzer.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}`,
		`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]],"byte_fallback":true,"unk_token":"a"},"added_tokens":[{"id":3,` +
			`"content":"<s>","special":true}],"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},` +
			`{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[3],"tokens":["<s>"]}}}}`,
		`{"model":{"type":"BPE","vocab":{"a":1000000000}}}`,
		`{"model":{"type":"BPE","vocab":{"a":-1}}}`,
		`{"model":{"type":"BPE","vocab":{"a":0}},"added_tokens":[{"id":4611686018427387904,"content":"x"}]}`,
		`{"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},` +
			`"pre_tokenizer":null,"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},` +
			`{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},"model":{"type":"BPE","vocab":{"▁":0,"a":1,"<0x41>":2},"merges":[],` +
			`"byte_fallback":true}}`,
		`{"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true},"decoder":{"type":"ByteLevel"},` +
			`"model":{"type":"BPE","vocab":{"Ġ":0,"a":1},"merges":["Ġ a"]}}`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "custom_metaspace.tokenizer.json")); err == nil {
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "tokenizer.json")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		tok, err := Load(p)
		if err != nil {
			if strings.Contains(err.Error(), "internal error") {
				t.Fatal(err)
			}
			return
		}
		for _, text := range []string{"Hello world", " a  b\tab <s>ü\x00", ""} {
			ids, err := tok.Encode(text, true)
			if err != nil {
				t.Fatalf("encode %q: %v", text, err)
			}
			if _, err := tok.Decode(ids, false); err != nil && strings.Contains(err.Error(), "internal error") {
				t.Fatalf("decode %v: %v", ids, err)
			}
		}
	})
}
