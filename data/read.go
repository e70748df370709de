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
	"strings"
	"unicode/utf8"
)

// Document is one unit of text before tokenization, with where it came from so
// that later errors (bad token ids, too-short data) can point at the input.
type Document struct {
	Source string // file path (or the name given to ParseDocuments)
	Line   int    // 1-based line for JSONL and per-line text; 0 for a whole .txt file
	Text   string
}

// Format says how a file is parsed.
type Format int

const (
	// FormatAuto picks by extension: .jsonl/.ndjson are JSONL, anything else text.
	FormatAuto Format = iota
	// FormatText is plain UTF-8 text.
	FormatText
	// FormatJSONL is one JSON object per line with a string field (default "text").
	FormatJSONL
)

// ReadOptions controls how files become documents.
type ReadOptions struct {
	// LinePerDocument makes every non-blank line of a text file its own
	// document; used with --no-pack, where one example per line is wanted.
	// JSONL is always one document per line.
	LinePerDocument bool
	// TextField is the JSONL field holding the text; "" means "text".
	TextField string
	// Format overrides detection by extension.
	Format Format
	// MaxFileBytes bounds a single input file (0 = 4 GiB) so that a wrong
	// path (a device, a huge binary) fails fast instead of exhausting memory.
	MaxFileBytes int64
}

const defaultMaxFileBytes = 4 << 30

// DetectFormat returns the format a path is read with under FormatAuto.
func DetectFormat(path string) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson":
		return FormatJSONL
	default:
		return FormatText
	}
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
		o := opts
		if o.Format == FormatAuto {
			o.Format = DetectFormat(p)
		}
		d, err := ParseDocuments(io.LimitReader(f, maxBytes+1), p, o)
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
		format = DetectFormat(name)
	}
	maxBytes := opts.MaxFileBytes
	if maxBytes <= 0 {
		maxBytes = defaultMaxFileBytes
	}
	g := &textGuard{r: r, name: name}
	var docs []Document
	var err error
	switch format {
	case FormatJSONL:
		docs, err = parseJSONL(g, name, opts.TextField, maxBytes)
	case FormatText:
		docs, err = parseText(g, name, opts.LinePerDocument, maxBytes)
	default:
		return nil, fmt.Errorf("data file %q: unknown format %d", name, format)
	}
	if g.err != nil {
		return nil, g.err // the cause, not the reader's wrapping of it
	}
	return docs, err
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
		g.err = fmt.Errorf("data file %q has a NUL byte at offset %d: it is binary, not text (pass UTF-8 .txt or .jsonl files)", g.name, g.off+int64(i))
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

func parseJSONL(r io.Reader, name, field string, maxBytes int64) ([]Document, error) {
	if field == "" {
		field = "text"
	}
	br := bufio.NewReader(r)
	var docs []Document
	var total int64
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		total += int64(len(line))
		if total > maxBytes {
			return nil, fmt.Errorf("data file %q is larger than the %d-byte limit per file: split it", name, maxBytes)
		}
		if len(line) > 0 {
			if lineNo == 1 {
				line = bytes.TrimPrefix(line, []byte("\uFEFF"))
			}
			trimmed := bytes.TrimSpace(line)
			if len(trimmed) > 0 {
				doc, perr := parseJSONLLine(trimmed, name, lineNo, field)
				if perr != nil {
					return nil, perr
				}
				if strings.TrimSpace(doc.Text) != "" {
					docs = append(docs, doc)
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read data file %q: %w", name, err)
		}
	}
	return docs, nil
}

func parseJSONLLine(line []byte, name string, lineNo int, field string) (Document, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil {
		return Document{}, fmt.Errorf("%s:%d: not a JSON object (each JSONL line must be like {%q: \"...\"}): %w", name, lineNo, field, err)
	}
	raw, ok := obj[field]
	if !ok {
		return Document{}, fmt.Errorf("%s:%d: missing field %q (each JSONL line needs a string %q field)", name, lineNo, field, field)
	}
	var text string
	// json.Unmarshal accepts null into a string silently; a null text is a
	// data bug the user should hear about, not an empty document.
	if err := json.Unmarshal(raw, &text); err != nil || string(bytes.TrimSpace(raw)) == "null" {
		return Document{}, fmt.Errorf("%s:%d: field %q must be a string, got %s", name, lineNo, field, abbreviate(raw))
	}
	return Document{Source: name, Line: lineNo, Text: text}, nil
}

func abbreviate(b []byte) string {
	const max = 40
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

func quoteList(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = fmt.Sprintf("%q", p)
	}
	return strings.Join(q, ", ")
}
