package tokenize

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dlclark/regexp2"
)

// TestScannersMatchRegexp2 checks the hand-written scanners against regexp2 running the very
// patterns they replace, on the hard cases and random strings over tricky characters.
func TestScannersMatchRegexp2(t *testing.T) {
	var hard []string
	b, err := os.ReadFile(filepath.Join("testdata", "hard_cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &hard); err != nil {
		t.Fatal(err)
	}
	alphabet := []rune("aZé1٣½ \t\n\r\u00a0\u2003\u200b'sStTrReEvVmMlLdD.,!?-_()😀\u0301中\x0b")
	rng := rand.New(rand.NewPCG(1, 2))
	inputs := append([]string{}, hard...)
	for range 5000 {
		rs := make([]rune, rng.IntN(24))
		for i := range rs {
			rs[i] = alphabet[rng.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(rs))
	}
	for _, tc := range []struct {
		name    string
		pattern string
		scan    scanMatcher
	}{
		{"llama3", llama3Pattern, scanLlama3},
		{"gpt2", gpt2Pattern, scanGPT2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re := regexMatcher{regexp2.MustCompile(tc.pattern, regexp2.None)}
			for _, s := range inputs {
				// regexp2's (?i) does not fold U+017F to 's' as Oniguruma does; the hard
				// cases cover that char against HF itself.
				if strings.ContainsRune(s, 0x17F) {
					continue
				}
				got, want := tc.scan.find(s, nil), re.find(s, nil)
				if len(got) != len(want) {
					t.Fatalf("%q: scanner %v, regexp2 %v", s, got, want)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%q: scanner %v, regexp2 %v", s, got, want)
					}
				}
			}
		})
	}
}

// minimal is a valid tokenizer.json that each error case breaks in one place.
const minimal = `{"version":"1.0","truncation":null,"padding":null,
 "added_tokens":[{"id":3,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
 "normalizer":null,"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
 "post_processor":null,"decoder":{"type":"ByteLevel"},
 "model":{"type":"BPE","dropout":null,"unk_token":null,"vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}`

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, wantErr string
	}{
		{"ok", "", "", ""},
		{"model type", `"type":"BPE"`, `"type":"Unigram"`, `model.type "Unigram" is not supported`},
		{"dropout", `"dropout":null`, `"dropout":0.1`, "model.dropout"},
		{"pre-tokenizer", `"type":"ByteLevel","add_prefix_space"`, `"type":"Digits","add_prefix_space"`, `pre_tokenizer.type "Digits"`},
		{"normalizer", `"normalizer":null`, `"normalizer":{"type":"Precompiled"}`, `normalizer.type "Precompiled"`},
		{"decoder", `"decoder":{"type":"ByteLevel"}`, `"decoder":{"type":"CTC"}`, `decoder.type "CTC"`},
		{"post-processor", `"post_processor":null`, `"post_processor":{"type":"Foo"}`, `post_processor.type "Foo"`},
		{"merge token", `"merges":["a b"]`, `"merges":["a c"]`, "model.merges[0]"},
		{"merge layout", `"merges":["a b"]`, `"merges":["a b c"]`, "model.merges[0]"},
		{"single word", `"single_word":false`, `"single_word":true`, `added_tokens[0] ("<s>"): single_word`},
		{"truncation", `"truncation":null`, `"truncation":{"max_length":5}`, "truncation"},
		{"bad regex", `"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`,
			`"pre_tokenizer":{"type":"Split","pattern":{"Regex":"(?<"},"behavior":"Isolated","invert":false}`, "pre_tokenizer.pattern.Regex"},
		{"unk missing", `"unk_token":null`, `"unk_token":"<unk>"`, `model.unk_token "<unk>"`},
		{"not json", `{"version"`, `{"version`, "not a Hugging Face tokenizer.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(minimal, tc.old, tc.new, 1)
			if tc.old != "" && src == minimal {
				t.Fatalf("case does not change the file: %q", tc.old)
			}
			path := filepath.Join(t.TempDir(), "tokenizer.json")
			if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			tok, err := Load(path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				ids, err := tok.Encode("ab<s>ba", true)
				if err != nil || !slices.Equal(ids, []int{2, 3, 1, 0}) {
					t.Fatalf("Encode = %v, %v", ids, err)
				}
				if _, err := tok.Decode([]int{9}, false); err == nil || !strings.Contains(err.Error(), "ids[0] = 9") {
					t.Fatalf("Decode of a bad id: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line naming %s and %q", err, path, tc.wantErr)
			}
		})
	}
}

func TestSpecialIDs(t *testing.T) {
	for _, tc := range []struct {
		name          string
		bos, eos, pad int // -1: none
		vocab         int
	}{
		{"llama3", 128000, 128001, -1, 128256},
		{"llama2", 1, 2, -1, 32000},
		{"custom_bytelevel", -1, 0, -1, 4096},
		{"custom_metaspace", 1, 2, -1, 2048},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Load(tokenizerFile(t, tc.name))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				what string
				f    func() (int, bool)
				want int
			}{{"BOS", tok.BOS, tc.bos}, {"EOS", tok.EOS, tc.eos}, {"PAD", tok.PAD, tc.pad}} {
				id, ok := c.f()
				if ok != (c.want >= 0) || (ok && id != c.want) {
					t.Errorf("%s = %d, %v; want %d", c.what, id, ok, c.want)
				}
			}
			if tok.VocabSize() != tc.vocab {
				t.Errorf("VocabSize = %d, want %d", tok.VocabSize(), tc.vocab)
			}
		})
	}
}

func TestLossyUTF8(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ok", "ok"},
		{"\xe2\x82a", "\uFFFDa"},               // truncated 3-byte sequence: one U+FFFD
		{"\xff\xfe", "\uFFFD\uFFFD"},           // two invalid bytes: two
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: ED then A0 is no valid continuation
		{"\xf0\x9f\x98", "\uFFFD"},             // truncated emoji
	} {
		if got := lossyUTF8([]byte(tc.in)); got != tc.want {
			t.Errorf("lossyUTF8(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
