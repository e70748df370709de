package data

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
)

// readBounded reads all of r, refusing more than maxBytes.
func readBounded(r io.Reader, name string, maxBytes int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read data file %q: %w", name, err)
	}
	if int64(len(b)) > maxBytes {
		return nil, fmt.Errorf("data file %q is larger than the %d-byte limit per file: split it", name, maxBytes)
	}
	return bytes.TrimPrefix(b, []byte("\uFEFF")), nil
}

// parseJSON reads a .json file: an array of records, or records one per line (what
// Hugging Face datasets' to_json writes). Anything else is refused.
func parseJSON(r io.Reader, name string, opts ReadOptions, maxBytes int64) ([]Document, error) {
	b, err := readBounded(r, name, maxBytes)
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return nil, nil
	}
	if trimmed[0] != '[' {
		docs, err := parseJSONL(bytes.NewReader(b), name, opts, maxBytes)
		if err != nil && json.Valid(trimmed) {
			return nil, fmt.Errorf("data file %q is one JSON value, not records: a .json file must hold an array of objects or one object per line", name)
		}
		return docs, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	rs := newRecordSet(name, opts)
	for i := 0; dec.More(); i++ {
		line := lineAt(b, dec.InputOffset())
		var obj map[string]json.RawMessage
		if err := dec.Decode(&obj); err != nil || obj == nil {
			return nil, fmt.Errorf("%s:%d: element %d of the array is not a JSON object (records look like {\"text\": \"...\"}): %v", name, line, i, jsonErr(err))
		}
		if err := rs.add(record{fields: obj, name: name, where: fmt.Sprintf("%s:%d", name, line), line: line}); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, lineAt(b, dec.InputOffset()), err)
	}
	if rest := bytes.TrimSpace(b[dec.InputOffset():]); len(rest) > 0 {
		return nil, fmt.Errorf("%s:%d: text after the array's closing ]", name, lineAt(b, dec.InputOffset()))
	}
	return rs.docs, nil
}

// lineAt is the 1-based line of the first non-blank, non-comma byte at or after off.
func lineAt(b []byte, off int64) int {
	i := int(off)
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n' || b[i] == ',') {
		i++
	}
	return 1 + bytes.Count(b[:min(i, len(b))], []byte("\n"))
}

// parseCSV reads a table with a header row; each row is a record of its named columns.
func parseCSV(r io.Reader, name string, tab bool, opts ReadOptions, maxBytes int64) ([]Document, error) {
	b, err := readBounded(r, name, maxBytes)
	if err != nil {
		return nil, err
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("data file %q is not valid UTF-8 text: convert it (e.g. iconv -t UTF-8)", name)
	}
	cr := csv.NewReader(bytes.NewReader(b))
	if tab {
		cr.Comma = '\t'
	}
	header, err := cr.Read()
	if err == io.EOF {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	rs := newRecordSet(name, opts)
	for {
		row, err := cr.Read()
		if err == io.EOF {
			return rs.docs, nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s:%d: %v (the header has %d columns)", name, pe.Line, pe.Err, len(header))
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		rec := record{fields: map[string]json.RawMessage{}, name: name, where: fmt.Sprintf("%s:%d", name, line), line: line}
		for i, col := range header {
			rec.fields[strings.TrimSpace(col)], _ = json.Marshal(row[i])
		}
		if err := rs.add(rec); err != nil {
			return nil, err
		}
	}
}

// parseParquet reads the string columns of a Parquet table (parquet-go); each row is a
// record of its top-level columns.
func parseParquet(r io.Reader, name string, opts ReadOptions, maxBytes int64) (docs []Document, err error) {
	defer func() { // a damaged file must be an error, whatever the decoder does with it
		if p := recover(); p != nil {
			docs, err = nil, fmt.Errorf("data file %q is a damaged Parquet file: %v", name, p)
		}
	}()
	b, err := readBounded(r, name, maxBytes)
	if err != nil {
		return nil, err
	}
	f, err := parquet.OpenFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("data file %q is not a Parquet file: %w", name, err)
	}
	var cols []string
	for _, field := range f.Schema().Fields() {
		cols = append(cols, field.Name())
	}
	pr := parquet.NewReader(f)
	defer pr.Close()
	rs := newRecordSet(name, opts)
	rows := make([]parquet.Row, 64)
	for rowNo := 1; ; {
		n, err := pr.ReadRows(rows)
		for _, row := range rows[:n] {
			rec, rerr := parquetRecord(row, cols, f.Schema(), name, rowNo)
			if rerr == nil {
				rerr = rs.add(rec)
			}
			if rerr != nil {
				return nil, rerr
			}
			rowNo++
		}
		if err == io.EOF {
			return rs.docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: row %d: %w", name, rowNo, err)
		}
	}
}

// parquetRecord holds a row's string (BYTE_ARRAY) columns; other columns, and nested ones,
// are left out, so a text field stored as a number is reported missing by name.
func parquetRecord(row parquet.Row, cols []string, schema *parquet.Schema, name string, rowNo int) (record, error) {
	rec := record{fields: map[string]json.RawMessage{}, name: name, where: fmt.Sprintf("%s: row %d", name, rowNo), line: rowNo}
	for _, col := range cols {
		leaf, ok := schema.Lookup(col)
		if !ok || leaf.Node.Type().Kind() != parquet.ByteArray {
			continue
		}
		for _, v := range row {
			if v.Column() != leaf.ColumnIndex {
				continue
			}
			if v.IsNull() {
				rec.fields[col] = json.RawMessage("null")
			} else {
				s := string(v.ByteArray())
				if !utf8.ValidString(s) {
					return rec, fmt.Errorf("%s: column %q is not valid UTF-8", rec.where, col)
				}
				rec.fields[col], _ = json.Marshal(s)
			}
			break
		}
	}
	return rec, nil
}
