package chat

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/nikolalohinski/gonja/v2/exec"
)

// filterToJSON is transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent,
// separators=separators, sort_keys=sort_keys), which differs from Jinja's own (HTML-safe
// escapes) and from gonja's (Go's compact separators).
func filterToJSON(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	if in.IsError() {
		return in
	}
	indent := -1
	if v, ok := params.KwArgs["indent"]; ok && !v.IsNil() {
		if !v.IsInteger() {
			return exec.AsValue(fmt.Errorf("tojson: indent must be an integer, got %s", v.String()))
		}
		indent = v.Integer()
	}
	sortKeys := false
	if v, ok := params.KwArgs["sort_keys"]; ok {
		sortKeys = v.IsTrue()
	}
	item, key := ", ", ": "
	if indent >= 0 {
		item = ","
	}
	if v, ok := params.KwArgs["separators"]; ok && v.IsList() && v.Len() == 2 {
		item, key = v.Index(0).String(), v.Index(1).String()
	}
	w := jsonWriter{indent: indent, item: item, key: key, sortKeys: sortKeys}
	if err := w.value(reflect.ValueOf(in), 0); err != nil {
		return exec.AsValue(err)
	}
	return exec.AsSafeValue(w.b.String())
}

type jsonWriter struct {
	b         strings.Builder
	indent    int
	item, key string
	sortKeys  bool
}

var valueType = reflect.TypeOf((*exec.Value)(nil))

func (w *jsonWriter) value(v reflect.Value, depth int) error {
	for v.IsValid() && (v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer) {
		if v.IsNil() {
			break
		}
		if v.Type() == valueType {
			v = v.Interface().(*exec.Value).Val
			continue
		}
		v = v.Elem()
	}
	if !v.IsValid() || ((v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface || v.Kind() == reflect.Map || v.Kind() == reflect.Slice) && v.IsNil()) {
		w.b.WriteString("null")
		return nil
	}
	switch v.Kind() {
	case reflect.Bool:
		w.b.WriteString(map[bool]string{true: "true", false: "false"}[v.Bool()])
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		w.b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		w.b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case reflect.Float32, reflect.Float64:
		w.b.WriteString(pyFloat(v.Float()))
	case reflect.String:
		writeJSONString(&w.b, v.String())
	case reflect.Slice, reflect.Array:
		items := make([]reflect.Value, v.Len())
		for i := range items {
			items[i] = v.Index(i)
		}
		return w.seq('[', ']', len(items), depth, func(i int) error { return w.value(items[i], depth+1) })
	case reflect.Map:
		keys := v.MapKeys()
		ks := make([]string, len(keys))
		for i, k := range keys {
			ks[i] = fmt.Sprint(k.Interface())
		}
		sort.Strings(ks) // a Go map has no order; sorted is the only deterministic choice
		return w.object(ks, func(k string) reflect.Value { return v.MapIndex(reflect.ValueOf(k)) }, depth)
	case reflect.Struct:
		if d, ok := v.Interface().(exec.Dict); ok {
			ks := make([]string, len(d.Pairs))
			vals := map[string]reflect.Value{}
			for i, p := range d.Pairs {
				ks[i] = p.Key.String()
				vals[ks[i]] = reflect.ValueOf(p.Value)
			}
			if w.sortKeys {
				sort.Strings(ks)
			}
			return w.object(ks, func(k string) reflect.Value { return vals[k] }, depth)
		}
		return fmt.Errorf("tojson: cannot serialize %s", v.Type())
	default:
		return fmt.Errorf("tojson: cannot serialize %s", v.Type())
	}
	return nil
}

func (w *jsonWriter) object(keys []string, get func(string) reflect.Value, depth int) error {
	return w.seq('{', '}', len(keys), depth, func(i int) error {
		writeJSONString(&w.b, keys[i])
		w.b.WriteString(w.key)
		return w.value(get(keys[i]), depth+1)
	})
}

// seq writes open, n items separated as json.dumps separates them, and close.
func (w *jsonWriter) seq(open, close byte, n, depth int, item func(int) error) error {
	w.b.WriteByte(open)
	if n == 0 {
		w.b.WriteByte(close)
		return nil
	}
	for i := 0; i < n; i++ {
		if i > 0 {
			w.b.WriteString(w.item)
		}
		if w.indent >= 0 {
			w.b.WriteString("\n" + strings.Repeat(" ", w.indent*(depth+1)))
		}
		if err := item(i); err != nil {
			return err
		}
	}
	if w.indent >= 0 {
		w.b.WriteString("\n" + strings.Repeat(" ", w.indent*depth))
	}
	w.b.WriteByte(close)
	return nil
}

// writeJSONString escapes as Python's json with ensure_ascii=False: quotes, backslashes and
// control characters only.
func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pyFloat is Python's repr of a float as json.dumps writes it.
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	exp := 0
	if f != 0 {
		exp = int(math.Floor(math.Log10(math.Abs(f))))
	}
	if exp < -4 || exp >= 16 {
		s := strconv.FormatFloat(f, 'e', -1, 64) // 1e-05, 1.5e+16 as Python writes them
		return s
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}
