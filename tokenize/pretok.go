package tokenize

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// piece is a pre-tokenized span. first is true when it starts at offset 0 of the input text,
// which Metaspace's prepend_scheme "first" needs.
type piece struct {
	s     string
	first bool
}

// preTokenizer splits pieces further, appending to dst.
type preTokenizer interface {
	split(src, dst []piece) []piece
}

// Patterns of the two regexes that appear in nearly every byte-level tokenizer.json. Both are
// matched by hand-written scanners (faster than any regex engine, and Go's regexp rejects the
// (?!\S) lookahead); every other Split pattern goes through regexp2, which has lookaround.
const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	gpt2Pattern   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
)

// matcher returns the non-empty, non-overlapping matches of a pattern, leftmost first.
type matcher interface {
	find(s string, dst [][2]int) [][2]int
}

type scanMatcher func(s string, i int) int

// find: both scanned patterns match at every position (their last alternatives cover any
// char), so the matches tile the string.
func (f scanMatcher) find(s string, dst [][2]int) [][2]int {
	for i := 0; i < len(s); {
		j := f(s, i)
		dst = append(dst, [2]int{i, j})
		i = j
	}
	return dst
}

type stringMatcher string

func (p stringMatcher) find(s string, dst [][2]int) [][2]int {
	for off := 0; ; {
		k := strings.Index(s[off:], string(p))
		if k < 0 {
			return dst
		}
		dst = append(dst, [2]int{off + k, off + k + len(p)})
		off += k + len(p)
	}
}

// regexMatcher runs a regexp2 pattern. regexp2 backtracks, so a pathological pattern such
// as (a+)+$ can take exponential time: each match gets matchTimeout, and a timeout panics
// with a regexTimeout that Encode and Decode turn into an error naming the pattern.
type regexMatcher struct{ re *regexp2.Regexp }

// matchTimeout bounds one regexp2 match (ordinary tokenizer patterns take microseconds).
const matchTimeout = time.Second

// regexTimeout is the panic value of a regexp2 match that ran out of time.
type regexTimeout struct{ pattern string }

// compileRegex compiles a tokenizer.json pattern for regexMatcher, with the match timeout.
func compileRegex(pattern string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(pattern, regexp2.None)
	if err != nil {
		return nil, err
	}
	re.MatchTimeout = matchTimeout
	return re, nil
}

func (m regexMatcher) find(s string, dst [][2]int) [][2]int {
	runes := []rune(s)
	// regexp2 reports rune offsets; map them to byte offsets.
	offs := make([]int, len(runes)+1)
	b := 0
	for i, r := range runes {
		offs[i] = b
		b += utf8.RuneLen(r)
	}
	offs[len(runes)] = b
	mt, err := m.re.FindRunesMatch(runes)
	for err == nil && mt != nil {
		if mt.Length > 0 {
			dst = append(dst, [2]int{offs[mt.Index], offs[mt.Index+mt.Length]})
		}
		mt, err = m.re.FindNextMatch(mt)
	}
	if err != nil {
		panic(regexTimeout{m.re.String()})
	}
	return dst
}

func newMatcher(p *patternJSON, field string) (matcher, error) {
	switch {
	case p == nil:
		return nil, fmt.Errorf("%s.pattern is missing", field)
	case p.String != nil:
		if *p.String == "" {
			return nil, fmt.Errorf("%s.pattern.String is empty", field)
		}
		return stringMatcher(*p.String), nil
	case p.Regex != nil:
		switch *p.Regex {
		case llama3Pattern:
			return scanMatcher(scanLlama3), nil
		case gpt2Pattern:
			return scanMatcher(scanGPT2), nil
		}
		re, err := compileRegex(*p.Regex)
		if err != nil {
			return nil, fmt.Errorf("%s.pattern.Regex %q: %w", field, *p.Regex, err)
		}
		return regexMatcher{re}, nil
	}
	return nil, fmt.Errorf("%s.pattern: want String or Regex", field)
}

// Character classes of the scanners: \p{L}, \p{N}, \s (Unicode White_Space, as in Rust
// regex and Oniguruma), and everything else.
const (
	clsOther = iota
	clsLetter
	clsNumber
	clsSpace
)

var asciiClass [128]uint8

func init() {
	for r := rune(0); r < 128; r++ {
		asciiClass[r] = classSlow(r)
	}
}

func classSlow(r rune) uint8 {
	switch {
	case unicode.IsLetter(r):
		return clsLetter
	case unicode.IsNumber(r):
		return clsNumber
	case unicode.Is(unicode.White_Space, r):
		return clsSpace
	}
	return clsOther
}

func class(r rune) uint8 {
	if r < 128 {
		return asciiClass[r]
	}
	return classSlow(r)
}

func at(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// runOf returns the end of the run of chars of class c starting at i.
func runOf(s string, i int, c uint8) int {
	for i < len(s) {
		r, n := at(s, i)
		if class(r) != c {
			break
		}
		i += n
	}
	return i
}

// fold is the case folding the (?i:...) contraction group needs: ASCII plus U+017F LATIN SMALL
// LETTER LONG S, which Unicode simple case folding maps to 's'.
func fold(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 'a' - 'A'
	}
	if r == 0x17F {
		return 's'
	}
	return r
}

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at i (s[i] == '\”), folded if ci.
func contraction(s string, i int, ci bool) int {
	j := i + 1
	if j >= len(s) {
		return -1
	}
	r, n := at(s, j)
	if ci {
		r = fold(r)
	}
	switch r {
	case 's', 't', 'm', 'd':
		return j + n
	case 'r', 'v', 'l':
		k := j + n
		if k >= len(s) {
			return -1
		}
		r2, n2 := at(s, k)
		if ci {
			r2 = fold(r2)
		}
		if (r != 'l' && r2 == 'e') || (r == 'l' && r2 == 'l') {
			return k + n2
		}
	}
	return -1
}

// spaceRun handles the whitespace alternatives shared by both patterns at i (a space char):
// withNL adds Llama 3's \s*[\r\n]+ before \s+(?!\S) and \s+.
func spaceRun(s string, i int, withNL bool) int {
	end, lastStart, lastNL, count := i, i, -1, 0
	for end < len(s) {
		r, n := at(s, end)
		if class(r) != clsSpace {
			break
		}
		if r == '\r' || r == '\n' {
			lastNL = end
		}
		lastStart = end
		end += n
		count++
	}
	if withNL && lastNL >= 0 {
		return lastNL + 1 // \s*[\r\n]+ backtracks to the last newline of the run
	}
	if end == len(s) {
		return end // \s+(?!\S) at end of text
	}
	if count >= 2 {
		return lastStart // \s+(?!\S) gives back the last space, which precedes \S
	}
	return end // \s+
}

// scanLlama3 returns the end of the llama3Pattern match at i.
func scanLlama3(s string, i int) int {
	r, n := at(s, i)
	if r == '\'' {
		if j := contraction(s, i, true); j > 0 {
			return j
		}
	}
	c := class(r)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if c == clsLetter {
		return runOf(s, i+n, clsLetter)
	}
	if c != clsNumber && r != '\r' && r != '\n' && i+n < len(s) {
		if r2, _ := at(s, i+n); class(r2) == clsLetter {
			return runOf(s, i+n, clsLetter)
		}
	}
	// \p{N}{1,3}
	if c == clsNumber {
		j := i + n
		for k := 1; k < 3 && j < len(s); k++ {
			r2, n2 := at(s, j)
			if class(r2) != clsNumber {
				break
			}
			j += n2
		}
		return j
	}
	//  ?[^\s\p{L}\p{N}]+[\r\n]*
	j := i
	if r == ' ' {
		j = i + 1
	}
	if j < len(s) {
		if r2, _ := at(s, j); class(r2) == clsOther {
			j = runOf(s, j, clsOther)
			for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
				j++
			}
			return j
		}
	}
	return spaceRun(s, i, true)
}

// scanGPT2 returns the end of the gpt2Pattern match at i.
func scanGPT2(s string, i int) int {
	r, _ := at(s, i)
	if r == '\'' {
		if j := contraction(s, i, false); j > 0 {
			return j
		}
	}
	j := i
	if r == ' ' && i+1 < len(s) {
		j = i + 1
	}
	r2, _ := at(s, j)
	if c := class(r2); c != clsSpace {
		return runOf(s, j, c)
	}
	return spaceRun(s, i, false)
}

// splitPre is the Split pre-tokenizer (and, with ByteLevel use_regex, the GPT-2 split).
type splitPre struct {
	m        matcher
	behavior string
	invert   bool
}

func (p *splitPre) split(src, dst []piece) []piece {
	var ms [][2]int
	for _, pc := range src {
		ms = p.m.find(pc.s, ms[:0])
		// segs covers pc.s: matched spans and the gaps between them.
		type seg struct {
			a, b  int
			match bool
		}
		var segs []seg
		prev := 0
		for _, m := range ms {
			if m[0] > prev {
				segs = append(segs, seg{prev, m[0], p.invert})
			}
			segs = append(segs, seg{m[0], m[1], !p.invert})
			prev = m[1]
		}
		if prev < len(pc.s) {
			segs = append(segs, seg{prev, len(pc.s), p.invert})
		}
		var out []seg
		switch p.behavior {
		case "Isolated":
			out = segs
		case "Removed":
			for _, sg := range segs {
				if !sg.match {
					out = append(out, sg)
				}
			}
		case "MergedWithPrevious":
			prevMatch := false
			for _, sg := range segs {
				if sg.match && !prevMatch && len(out) > 0 {
					out[len(out)-1].b = sg.b
				} else {
					out = append(out, sg)
				}
				prevMatch = sg.match
			}
		case "MergedWithNext":
			prevMatch := false
			for k := len(segs) - 1; k >= 0; k-- {
				sg := segs[k]
				if sg.match && !prevMatch && len(out) > 0 {
					out[len(out)-1].a = sg.a
				} else {
					out = append(out, sg)
				}
				prevMatch = sg.match
			}
			for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
				out[l], out[r] = out[r], out[l]
			}
		}
		for _, sg := range out {
			if sg.b > sg.a {
				dst = append(dst, piece{pc.s[sg.a:sg.b], pc.first && sg.a == 0})
			}
		}
	}
	return dst
}

// scanPre is the fast path of splitPre for the scanner patterns with Isolated behaviour.
type scanPre struct{ f scanMatcher }

func (p scanPre) split(src, dst []piece) []piece {
	for _, pc := range src {
		s := pc.s
		for i := 0; i < len(s); {
			j := p.f(s, i)
			dst = append(dst, piece{s[i:j], pc.first && i == 0})
			i = j
		}
	}
	return dst
}

// prefixSpace is ByteLevel's add_prefix_space.
type prefixSpace struct{}

func (prefixSpace) split(src, dst []piece) []piece {
	for _, pc := range src {
		if !strings.HasPrefix(pc.s, " ") {
			pc.s = " " + pc.s
		}
		dst = append(dst, pc)
	}
	return dst
}

// metaspace is the Metaspace pre-tokenizer: ' ' -> replacement, prepend, split before each
// replacement char (MergedWithNext).
type metaspace struct {
	repl   string
	scheme string // always, first, never
	split_ bool
}

func (m *metaspace) split(src, dst []piece) []piece {
	for _, pc := range src {
		s := strings.ReplaceAll(pc.s, " ", m.repl)
		if !strings.HasPrefix(s, m.repl) && (m.scheme == "always" || (m.scheme == "first" && pc.first)) {
			s = m.repl + s
		}
		if !m.split_ {
			dst = append(dst, piece{s, pc.first})
			continue
		}
		start := 0
		for start < len(s) {
			k := strings.Index(s[start+1:], m.repl)
			end := len(s)
			if k >= 0 {
				end = start + 1 + k
			}
			dst = append(dst, piece{s[start:end], pc.first && start == 0})
			start = end
		}
	}
	return dst
}

// whitespaceSplit splits on Unicode whitespace and drops it.
type whitespaceSplit struct{}

func (whitespaceSplit) split(src, dst []piece) []piece {
	for _, pc := range src {
		for _, f := range strings.FieldsFunc(pc.s, func(r rune) bool { return unicode.Is(unicode.White_Space, r) }) {
			dst = append(dst, piece{f, false})
		}
	}
	return dst
}

// buildPre turns a pre_tokenizer object into a list of steps. byteLevel reports that the last
// step is ByteLevel, so that the model works on raw bytes.
func buildPre(raw json.RawMessage, field string) (steps []preTokenizer, byteLevel bool, err error) {
	if isNull(raw) {
		return nil, false, nil
	}
	c, err := decodeComponent(raw, field)
	if err != nil {
		return nil, false, err
	}
	switch c.Type {
	case "Sequence":
		for i, sub := range c.Pretokenizers {
			if byteLevel {
				return nil, false, fmt.Errorf("%s.pretokenizers[%d]: a pre-tokenizer after ByteLevel is not supported", field, i)
			}
			s, bl, err := buildPre(sub, fmt.Sprintf("%s.pretokenizers[%d]", field, i))
			if err != nil {
				return nil, false, err
			}
			steps = append(steps, s...)
			byteLevel = bl
		}
		return steps, byteLevel, nil
	case "Split":
		m, err := newMatcher(c.Pattern, field)
		if err != nil {
			return nil, false, err
		}
		switch c.Behavior {
		case "Isolated", "Removed", "MergedWithPrevious", "MergedWithNext":
		default:
			return nil, false, fmt.Errorf("%s.behavior %q is not supported", field, c.Behavior)
		}
		if sm, ok := m.(scanMatcher); ok && c.Behavior == "Isolated" && !c.Invert {
			return []preTokenizer{scanPre{sm}}, false, nil
		}
		return []preTokenizer{&splitPre{m, c.Behavior, c.Invert}}, false, nil
	case "ByteLevel":
		if c.AddPrefixSpace != nil && *c.AddPrefixSpace {
			steps = append(steps, prefixSpace{})
		}
		if c.UseRegex == nil || *c.UseRegex {
			steps = append(steps, scanPre{scanGPT2})
		}
		return steps, true, nil
	case "Metaspace":
		m := &metaspace{repl: c.Replacement, scheme: c.PrependScheme, split_: c.Split == nil || *c.Split}
		if m.scheme == "" { // tokenizers < 0.19 wrote add_prefix_space instead
			m.scheme = "always"
			if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
				m.scheme = "never"
			}
		}
		if utf8.RuneCountInString(m.repl) != 1 {
			return nil, false, fmt.Errorf("%s.replacement %q: want one char", field, m.repl)
		}
		switch m.scheme {
		case "always", "first", "never":
		default:
			return nil, false, fmt.Errorf("%s.prepend_scheme %q is not supported", field, m.scheme)
		}
		return []preTokenizer{m}, false, nil
	case "Whitespace":
		re := regexp2.MustCompile(`\w+|[^\w\s]+`, regexp2.None)
		re.MatchTimeout = matchTimeout
		return []preTokenizer{&splitPre{regexMatcher{re}, "Removed", true}}, false, nil
	case "WhitespaceSplit":
		return []preTokenizer{whitespaceSplit{}}, false, nil
	}
	return nil, false, fmt.Errorf("%s.type %q is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Whitespace, WhitespaceSplit)", field, c.Type)
}
