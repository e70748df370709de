package tokenize

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedMatcher finds added tokens in text the way tokenizers' AddedVocabulary does: leftmost,
// then longest match (aho-corasick LeftmostLongest); lstrip/rstrip widen a match over
// whitespace next to it. Added tokens are few and most share a first byte ("<|"), so a
// first-byte table plus HasPrefix is enough and beats a general automaton at this size.
type addedMatcher struct {
	byFirst [256][]addedTok // candidates by first byte, longest first
	any     bool
}

type addedTok struct {
	content        string
	id             int32
	lstrip, rstrip bool
}

func newAddedMatcher(toks []addedTok) *addedMatcher {
	m := &addedMatcher{}
	for _, t := range toks {
		if t.content == "" {
			continue
		}
		m.byFirst[t.content[0]] = append(m.byFirst[t.content[0]], t)
		m.any = true
	}
	for i := range m.byFirst {
		c := m.byFirst[i]
		sort.SliceStable(c, func(a, b int) bool { return len(c[a].content) > len(c[b].content) })
	}
	return m
}

// split calls emit for each segment of text in order: plain text with id -1, or an added
// token with its id. Empty plain segments are not emitted. first tells whether the segment
// starts at offset 0.
func (m *addedMatcher) split(text string, emit func(seg string, id int32, first bool)) {
	if m == nil || !m.any {
		if text != "" {
			emit(text, -1, true)
		}
		return
	}
	prev := 0 // end of the last emitted segment
	for i := 0; i < len(text); i++ {
		cands := m.byFirst[text[i]]
		if len(cands) == 0 {
			continue
		}
		for _, t := range cands {
			if !strings.HasPrefix(text[i:], t.content) {
				continue
			}
			start, end := i, i+len(t.content)
			if t.lstrip {
				for start > prev {
					r, n := utf8.DecodeLastRuneInString(text[prev:start])
					if !unicode.Is(unicode.White_Space, r) {
						break
					}
					start -= n
				}
			}
			if t.rstrip {
				for end < len(text) {
					r, n := utf8.DecodeRuneInString(text[end:])
					if !unicode.Is(unicode.White_Space, r) {
						break
					}
					end += n
				}
			}
			if start > prev {
				emit(text[prev:start], -1, prev == 0)
			}
			emit(text[start:end], t.id, start == 0)
			prev = end
			i = end - 1
			break
		}
	}
	if prev < len(text) {
		emit(text[prev:], -1, prev == 0)
	}
}
