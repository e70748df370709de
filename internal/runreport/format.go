package runreport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// FormatBytes renders a byte count as GiB or MiB ("n/a" for 0), for reports.
func FormatBytes(n uint64) string {
	if n == 0 {
		return "n/a"
	}
	const gib, mib = 1 << 30, 1 << 20
	if n >= gib {
		return fmt.Sprintf("%.2f GiB", float64(n)/gib)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/mib)
}

// MarkdownEscape makes s safe inside a Markdown table cell.
func MarkdownEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// Flatten turns any JSON-encodable value into key/value rows sorted by key, for a report's
// configuration table: objects nest into dotted keys, numbers keep the digits JSON wrote,
// strings are written as they are, and a list is its elements (each as JSON, a string's
// quotes dropped) joined by ", ". Empty values (null, an empty string, list or object)
// are rows of "null", "" and "{}" unless omitEmpty leaves them out.
func Flatten(v any, omitEmpty bool) ([][2]string, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode report config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep integers and exact decimals as written
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, err
	}
	var rows [][2]string
	add := func(key, value string, empty bool) {
		if !empty || !omitEmpty {
			rows = append(rows, [2]string{key, value})
		}
	}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch t := v.(type) {
		case map[string]any:
			if len(t) == 0 && prefix != "" {
				add(prefix, "{}", true)
			}
			for k, sub := range t {
				key := k
				if prefix != "" {
					key = prefix + "." + k
				}
				walk(key, sub)
			}
		case []any:
			parts := make([]string, len(t))
			for i, e := range t {
				eb, _ := json.Marshal(e)
				parts[i] = strings.Trim(string(eb), `"`)
			}
			add(prefix, strings.Join(parts, ", "), len(t) == 0)
		case string:
			add(prefix, t, t == "")
		case nil:
			add(prefix, "null", true)
		default:
			add(prefix, fmt.Sprint(t), false)
		}
	}
	walk("", tree)
	sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
	return rows, nil
}
