package data

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/ortq/ortq/chat"
)

// Document is one unit of text before tokenization, with where it came from so
// that later errors (bad token ids, too-short data) can point at the input.
type Document struct {
	Source string // file path (or the name given to ParseDocuments)
	Line   int    // 1-based line (JSONL, CSV, per-line text) or row (Parquet); 0 for a whole .txt file
	Text   string
	// Trained are the byte ranges of Text the loss learns (the completion, the assistant
	// turns) under --train-on completion; nil trains on all of Text.
	Trained []Span
	// Templated marks text a chat template rendered: it holds its own BOS and end-of-turn
	// tokens, so Build adds neither BOS nor EOS.
	Templated bool
}

// Format says how a file is parsed.
type Format int

const (
	// FormatAuto picks by extension (DetectFormat), and by content for a file without one.
	FormatAuto Format = iota
	// FormatText is plain UTF-8 text (.txt).
	FormatText
	// FormatJSONL is one JSON record per line (.jsonl, .ndjson).
	FormatJSONL
	// FormatJSON is a JSON array of records, or one record per line (.json).
	FormatJSON
	// FormatCSV and FormatTSV are tables with a header row (.csv, .tsv).
	FormatCSV
	FormatTSV
	// FormatParquet is an Apache Parquet table (.parquet).
	FormatParquet
)

// ReadOptions controls how files become documents.
type ReadOptions struct {
	// LinePerDocument makes every non-blank line of a text file its own
	// document; used with --no-pack, where one example per line is wanted.
	// Record formats are always one document per record.
	LinePerDocument bool
	// TextField, PromptField and CompletionField name the fields (JSON) or columns (CSV,
	// TSV, Parquet) of text and prompt/completion records; "" means "text", "prompt" and
	// "completion" (--text-column, --prompt-column, --completion-column).
	TextField, PromptField, CompletionField string
	// Chat renders "messages" records (the model's chat template); nil refuses them.
	Chat *chat.Template
	// TrainOn selects the tokens instruction and chat records train on.
	TrainOn TrainOn
	// Format overrides detection by extension.
	Format Format
	// MaxFileBytes bounds a single input file (0 = 4 GiB) so that a wrong
	// path (a device, a huge binary) fails fast instead of exhausting memory.
	MaxFileBytes int64
}

const defaultMaxFileBytes = 4 << 30

// Extensions lists the data file extensions ortq reads, for messages.
const Extensions = ".txt, .jsonl, .ndjson, .json, .csv, .tsv, .parquet"

// DetectFormat returns the format a path is read with under FormatAuto: FormatAuto for a
// name without an extension (the content decides), an error for an extension ortq does
// not read, which is refused rather than trained on as text.
func DetectFormat(path string) (Format, error) {
	ext := strings.ToLower(filepath.Ext(path))
	switch ext {
	case "":
		return FormatAuto, nil
	case ".txt", ".text":
		return FormatText, nil
	case ".jsonl", ".ndjson":
		return FormatJSONL, nil
	case ".json":
		return FormatJSON, nil
	case ".csv":
		return FormatCSV, nil
	case ".tsv":
		return FormatTSV, nil
	case ".parquet":
		return FormatParquet, nil
	}
	return FormatAuto, fmt.Errorf("data file %q: ortq does not read %s files: pass %s (or convert it to one of them)", path, ext, Extensions)
}

// ReadDocuments reads every path in order. Blank documents (only white space)
// are skipped because they add no tokens; if nothing is left the error names
// all files so the user sees which inputs were empty.
func ReadDocuments(paths []string, opts ReadOptions) ([]Document, error) {
	if len(paths) == 0 {
		return nil, errors.New("no data files given: pass at least one text or JSONL file")
	}
	maxBytes := opts.MaxFileBytes
	if maxBytes <= 0 {
		maxBytes = defaultMaxFileBytes
	}
	var docs []Document
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("open data file: %w", err)
		}
		st, err := f.Stat()
		if err == nil && st.IsDir() {
			f.Close()
			return nil, fmt.Errorf("data file %q is a directory: pass the files inside it", p)
		}
		if err == nil && st.Mode().IsRegular() && st.Size() > maxBytes {
			f.Close()
			return nil, fmt.Errorf("data file %q is %d bytes, more than the %d-byte limit per file: split it", p, st.Size(), maxBytes)
		}
		d, err := ParseDocuments(io.LimitReader(f, maxBytes+1), p, opts)
		f.Close()
		if err != nil {
			return nil, err
		}
		docs = append(docs, d...)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("no text found in data files %s: they are empty or contain only blank lines", quoteList(paths))
	}
	return docs, nil
}

// ParseDocuments parses one input stream; name is used in errors and in
// Document.Source. It is the fuzzing entry point for the readers.
func ParseDocuments(r io.Reader, name string, opts ReadOptions) ([]Document, error) {
	format := opts.Format
	if format == FormatAuto {
		var err error
		if format, err = DetectFormat(name); err != nil {
			return nil, err
		}
	}
	maxBytes := opts.MaxFileBytes
	if maxBytes <= 0 {
		maxBytes = defaultMaxFileBytes
	}
	if format == FormatParquet { // binary: no text guard
		return parseParquet(r, name, opts, maxBytes)
	}
	g := &textGuard{r: r, name: name}
	br := bufio.NewReader(g)
	if format == FormatAuto {
		format = sniffFormat(br)
	}
	var docs []Document
	var err error
	switch format {
	case FormatJSONL:
		docs, err = parseJSONL(br, name, opts, maxBytes)
	case FormatJSON:
		docs, err = parseJSON(br, name, opts, maxBytes)
	case FormatCSV, FormatTSV:
		docs, err = parseCSV(br, name, format == FormatTSV, opts, maxBytes)
	case FormatText:
		docs, err = parseText(br, name, opts.LinePerDocument, maxBytes)
	default:
		return nil, fmt.Errorf("data file %q: unknown format %d", name, format)
	}
	if g.err != nil {
		return nil, g.err // the cause, not the reader's wrapping of it
	}
	return docs, err
}

// sniffFormat decides for a file without an extension: JSON records when its first
// non-blank byte opens an object or an array, plain text otherwise.
func sniffFormat(br *bufio.Reader) Format {
	head, _ := br.Peek(512)
	head = bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\uFEFF")), " \t\r\n")
	switch {
	case len(head) == 0:
		return FormatText
	case head[0] == '{':
		return FormatJSONL
	case head[0] == '[':
		return FormatJSON
	}
	return FormatText
}

// textGuard passes text through one read (at most the caller's buffer) at a time and
// stops at the first NUL byte, which no UTF-8 text or JSONL file holds: a binary file or
// a device such as /dev/zero is refused after its first piece instead of being buffered
// up to the size limit.
type textGuard struct {
	r    io.Reader
	name string
	off  int64
	err  error
}

func (g *textGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if i := bytes.IndexByte(p[:n], 0); i >= 0 {
		g.err = fmt.Errorf("data file %q has a NUL byte at offset %d: it is binary, not text (pass UTF-8 text, JSON or CSV files, or .parquet)", g.name,
			g.off+int64(i))
		return 0, g.err
	}
	g.off += int64(n)
	return n, err
}

func parseText(r io.Reader, name string, perLine bool, maxBytes int64) ([]Document, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read data file %q: %w", name, err)
	}
	if int64(len(b)) > maxBytes {
		return nil, fmt.Errorf("data file %q is larger than the %d-byte limit per file: split it", name, maxBytes)
	}
	b = bytes.TrimPrefix(b, []byte("\uFEFF")) // editors on Windows add a BOM; it is not text
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("data file %q is not valid UTF-8 text: convert it (e.g. iconv -t UTF-8)", name)
	}
	if !perLine {
		s := strings.ReplaceAll(string(b), "\r\n", "\n")
		if strings.TrimSpace(s) == "" {
			return nil, nil
		}
		return []Document{{Source: name, Text: s}}, nil
	}
	var docs []Document
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		docs = append(docs, Document{Source: name, Line: i + 1, Text: line})
	}
	return docs, nil
}

func parseJSONL(r io.Reader, name string, opts ReadOptions, maxBytes int64) ([]Document, error) {
	br := bufio.NewReader(r)
	rs := newRecordSet(name, opts)
	var total int64
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		total += int64(len(line))
		if total > maxBytes {
			return nil, fmt.Errorf("data file %q is larger than the %d-byte limit per file: split it", name, maxBytes)
		}
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		if trimmed := bytes.TrimSpace(line); len(trimmed) > 0 {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(trimmed, &obj); err != nil || obj == nil {
				return nil, fmt.Errorf("%s:%d: not a JSON object (each JSONL line must be one record, like {%q: \"...\"}): %v", name, lineNo, rs.fields.text, jsonErr(err))
			}
			if err := rs.add(record{fields: obj, name: name, where: fmt.Sprintf("%s:%d", name, lineNo), line: lineNo}); err != nil {
				return nil, err
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read data file %q: %w", name, err)
		}
	}
	return rs.docs, nil
}

func jsonErr(err error) error {
	if err == nil {
		return errors.New("null")
	}
	return err
}

// recordSet turns the records of one file into documents: the first record's fields
// decide the kind, and every later record must be of that kind.
type recordSet struct {
	name   string
	opts   ReadOptions
	fields fieldNames
	kind   recordKind
	seen   bool
	docs   []Document
}

func newRecordSet(name string, opts ReadOptions) *recordSet {
	return &recordSet{name: name, opts: opts, fields: opts.fieldNames()}
}

func (rs *recordSet) add(r record) error {
	if !rs.seen {
		k, err := detectKind(r, rs.fields)
		if err != nil {
			return err
		}
		rs.kind, rs.seen = k, true
	}
	d, err := r.document(rs.kind, rs.opts)
	if err != nil {
		return err
	}
	if strings.TrimSpace(d.Text) != "" {
		rs.docs = append(rs.docs, d)
	}
	return nil
}

func abbreviate(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

func sortStrings(s []string) { sort.Strings(s) }

func quoteList(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = fmt.Sprintf("%q", p)
	}
	return strings.Join(q, ", ")
}
