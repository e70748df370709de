package tokenize

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites a text segment. Only ids matter here, so unlike tokenizers we keep no
// alignment between original and normalized offsets.
type normalizer func(string) string

func buildNormalizers(raw json.RawMessage, field string) ([]normalizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := decodeComponent(raw, field)
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		return buildSequence(c.Normalizers, field+".normalizers", buildNormalizers)
	case "Prepend":
		p := c.Prepend
		// tokenizers prepends only to a non-empty string.
		return []normalizer{func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}}, nil
	case "Replace":
		to, err := stringContent(c.Content, field)
		if err != nil {
			return nil, err
		}
		r, err := newReplacer(c.Pattern, to, field)
		if err != nil {
			return nil, err
		}
		return []normalizer{r}, nil
	case "NFC":
		return []normalizer{norm.NFC.String}, nil
	case "NFD":
		return []normalizer{norm.NFD.String}, nil
	case "NFKC":
		return []normalizer{norm.NFKC.String}, nil
	case "NFKD":
		return []normalizer{norm.NFKD.String}, nil
	case "Lowercase":
		// Rust's str::to_lowercase; Go's differs only for U+0130 (İ -> "i̇") and final sigma.
		return []normalizer{func(s string) string {
			return strings.ToLower(strings.ReplaceAll(s, "\u0130", "i\u0307"))
		}}, nil
	case "Strip":
		l, r := c.Left, c.Right
		isWS := func(r rune) bool { return unicode.Is(unicode.White_Space, r) }
		return []normalizer{func(s string) string {
			if l {
				s = strings.TrimLeftFunc(s, isWS)
			}
			if r {
				s = strings.TrimRightFunc(s, isWS)
			}
			return s
		}}, nil
	}
	return nil, fmt.Errorf("%s.type %q is not supported (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)", field, c.Type)
}

// newReplacer is the Replace normalizer/decoder: a literal or a regex (regexp2, since
// tokenizers' patterns are Oniguruma syntax).
func newReplacer(p *patternJSON, to, field string) (func(string) string, error) {
	switch {
	case p != nil && p.String != nil:
		from := *p.String
		if from == "" {
			return nil, fmt.Errorf("%s.pattern.String is empty", field)
		}
		return func(s string) string { return strings.ReplaceAll(s, from, to) }, nil
	case p != nil && p.Regex != nil:
		re, err := compileRegex(*p.Regex)
		if err != nil {
			return nil, fmt.Errorf("%s.pattern.Regex %q: %w", field, *p.Regex, err)
		}
		m := regexMatcher{re}
		return func(s string) string {
			var sb strings.Builder
			prev := 0
			for _, sp := range m.find(s, nil) {
				sb.WriteString(s[prev:sp[0]])
				sb.WriteString(to)
				prev = sp[1]
			}
			sb.WriteString(s[prev:])
			return sb.String()
		}, nil
	}
	return nil, fmt.Errorf("%s.pattern: want String or Regex", field)
}
