package tokenize

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decoder is one step of tokenizers' decode_chain: tokens in, tokens out.
type decoder func([]string) []string

func buildDecoders(raw json.RawMessage, field string) ([]decoder, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := decodeComponent(raw, field)
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		return buildSequence(c.Decoders, field+".decoders", buildDecoders)
	case "ByteLevel":
		return []decoder{decodeByteLevel}, nil
	case "ByteFallback":
		return []decoder{decodeByteFallback}, nil
	case "Fuse":
		return []decoder{func(t []string) []string { return []string{strings.Join(t, "")} }}, nil
	case "Replace":
		to, err := stringContent(c.Content, field)
		if err != nil {
			return nil, err
		}
		r, err := newReplacer(c.Pattern, to, field)
		if err != nil {
			return nil, err
		}
		return []decoder{func(t []string) []string {
			for i := range t {
				t[i] = r(t[i])
			}
			return t
		}}, nil
	case "Strip":
		content, err := stringContent(c.Content, field)
		if err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(content) != 1 {
			return nil, fmt.Errorf("%s.content %q: want one char", field, content)
		}
		ch, _ := utf8.DecodeRuneInString(content)
		return []decoder{stripDecoder(ch, c.Start, c.Stop)}, nil
	case "Metaspace":
		scheme := c.PrependScheme
		if scheme == "" {
			scheme = "always"
			if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
				scheme = "never"
			}
		}
		repl, _ := utf8.DecodeRuneInString(c.Replacement)
		return []decoder{func(t []string) []string {
			// tokenizers drops every replacement char of the first token (not only a leading
			// one) unless prepend_scheme is "never"; the others become spaces.
			for i, tok := range t {
				var sb strings.Builder
				for _, r := range tok {
					if r == repl {
						if i == 0 && scheme != "never" {
							continue
						}
						r = ' '
					}
					sb.WriteRune(r)
				}
				t[i] = sb.String()
			}
			return t
		}}, nil
	}
	return nil, fmt.Errorf("%s.type %q is not supported (supported: Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace)", field, c.Type)
}

// decodeByteLevel maps the byte-level alphabet back to bytes (a token with a char outside it
// is taken as its UTF-8 bytes) and decodes them as String::from_utf8_lossy does.
func decodeByteLevel(toks []string) []string {
	var buf []byte
	for _, t := range toks {
		start := len(buf)
		ok := true
		for _, r := range t {
			b, in := charToByte[r]
			if !in {
				ok = false
				break
			}
			buf = append(buf, b)
		}
		if !ok {
			buf = append(buf[:start], t...)
		}
	}
	return []string{lossyUTF8(buf)}
}

// lossyUTF8 is Rust's String::from_utf8_lossy: each maximal prefix of an ill-formed sequence
// becomes one U+FFFD (Go's strings.ToValidUTF8 would merge a whole run into one).
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || n > 1 {
			sb.Write(b[i : i+n])
			i += n
			continue
		}
		sb.WriteRune(utf8.RuneError)
		i += invalidLen(b[i:])
	}
	return sb.String()
}

// invalidLen is the length of the maximal subpart of an ill-formed sequence at b[0]
// (Unicode 3.9, "U+FFFD substitution of maximal subparts").
func invalidLen(b []byte) int {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for k := 0; k < need && n < len(b); k++ {
		x := b[n]
		if k > 0 {
			lo, hi = 0x80, 0xBF
		}
		if x < lo || x > hi {
			break
		}
		n++
	}
	return n
}

// decodeByteFallback turns runs of "<0xXX>" tokens into their bytes; a run that is not valid
// UTF-8 becomes one U+FFFD per byte, as in tokenizers.
func decodeByteFallback(toks []string) []string {
	out := make([]string, 0, len(toks))
	var pending []byte
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if utf8.Valid(pending) {
			out = append(out, string(pending))
		} else {
			for range pending {
				out = append(out, "\uFFFD")
			}
		}
		pending = pending[:0]
	}
	for _, t := range toks {
		if len(t) == 6 && strings.HasPrefix(t, "<0x") && t[5] == '>' {
			if v, err := strconv.ParseUint(t[3:5], 16, 8); err == nil {
				pending = append(pending, byte(v))
				continue
			}
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// stripDecoder copies tokenizers' Strip decoder, including its use of the byte length where
// a char count is meant (it only matters for multi-byte tokens with stop > 0).
func stripDecoder(ch rune, start, stop int) decoder {
	return func(toks []string) []string {
		for i, t := range toks {
			rs := []rune(t)
			sc := 0
			for sc < len(rs) && sc < start && rs[sc] == ch {
				sc++
			}
			ec := 0
			for ec < len(rs) && ec < stop && rs[len(rs)-1-ec] == ch {
				ec++
			}
			take := len(t) - sc - ec
			if take < 0 || take > len(rs)-sc { // negative wraps around in Rust: take all
				take = len(rs) - sc
			}
			toks[i] = string(rs[sc : sc+take])
		}
		return toks
	}
}
