package tokenize

import (
	"fmt"
	"strings"
	"unicode/utf8"

	sugarpre "github.com/sugarme/tokenizer/pretokenizer"
)

// bpe is the BPE model of tokenizer.json, written to reproduce tokenizers' model/bpe exactly
// (merge order, byte_fallback, unk fusing, ignore_merges). sugarme's bpe.Word.MergeAll breaks
// rank ties by a zero timestamp, not by position as tokenizers does, so repeated pairs ("aaa",
// runs of spaces) can merge differently; it also has no byte_fallback or ignore_merges.
type bpe struct {
	// vocab maps a token in "model space" to its id. With a ByteLevel pre-tokenizer, model space
	// is the raw bytes (tokens are converted back from the GPT-2 byte-to-char alphabet once at
	// load), so encoding never builds the mapped string; otherwise it is the token text.
	vocab      map[string]int32
	merges     map[uint64]mergeVal
	byteIDs    [256]int32 // byte-level: id of each single byte, -1 if absent
	byteLevel  bool
	ignoreMrg  bool
	byteFB     bool
	fbIDs      [256]int32 // byte_fallback: id of "<0xXX>", -1 if absent
	unk        int32      // -1 when no unk_token
	fuseUnk    bool
	prefix     string // continuing_subword_prefix
	suffix     string // end_of_word_suffix
	maxCacheLn int
}

type mergeVal struct{ rank, id int32 }

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// byteToChar and charToByte are the GPT-2 byte-level alphabet; we take sugarme's table.
var (
	byteToChar [256]string
	charToByte = map[rune]byte{}
)

func init() {
	for b := 0; b < 256; b++ {
		s := sugarpre.BytesChar[uint8(b)]
		byteToChar[b] = s
		r, _ := utf8.DecodeRuneInString(s)
		charToByte[r] = byte(b)
	}
}

// fromByteLevel converts a token from the byte-level alphabet to raw bytes; ok is false when a
// char is outside the alphabet (such a token can never be produced by byte-level encoding).
func fromByteLevel(tok string) (string, bool) {
	var sb strings.Builder
	for _, r := range tok {
		b, ok := charToByte[r]
		if !ok {
			return "", false
		}
		sb.WriteByte(b)
	}
	return sb.String(), true
}

func newBPE(m *modelJSON, byteLevel bool) (*bpe, error) {
	if m.Type != "BPE" {
		return nil, fmt.Errorf("model.type %q is not supported (only BPE)", m.Type)
	}
	if m.Dropout != nil && *m.Dropout > 0 {
		return nil, fmt.Errorf("model.dropout = %v is not supported (random merges give no stable ids)", *m.Dropout)
	}
	b := &bpe{
		vocab: make(map[string]int32, len(m.Vocab)), byteLevel: byteLevel,
		ignoreMrg: m.IgnoreMerges, byteFB: m.ByteFallback, fuseUnk: m.FuseUnk, unk: -1, maxCacheLn: 256,
	}
	if m.ContinuingSubwordPrefix != nil {
		b.prefix = *m.ContinuingSubwordPrefix
	}
	if m.EndOfWordSuffix != nil {
		b.suffix = *m.EndOfWordSuffix
	}
	for tok, id := range m.Vocab {
		key := tok
		if byteLevel {
			var ok bool
			if key, ok = fromByteLevel(tok); !ok {
				continue
			}
		}
		b.vocab[key] = int32(id)
	}
	if m.UnkToken != nil {
		id, ok := m.Vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model.unk_token %q is not in model.vocab", *m.UnkToken)
		}
		b.unk = int32(id)
	}
	for i := 0; i < 256; i++ {
		b.byteIDs[i], b.fbIDs[i] = -1, -1
		if id, ok := b.vocab[string([]byte{byte(i)})]; ok && byteLevel {
			b.byteIDs[i] = id
		}
		if id, ok := m.Vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			b.fbIDs[i] = int32(id)
		}
	}
	merges, err := parseMerges(m.Merges)
	if err != nil {
		return nil, err
	}
	b.merges = make(map[uint64]mergeVal, len(merges))
	for rank, p := range merges {
		a, ok1 := m.Vocab[p[0]]
		c, ok2 := m.Vocab[p[1]]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("model.merges[%d] %q %q: token not in model.vocab", rank, p[0], p[1])
		}
		if len(b.prefix) > 0 && !strings.HasPrefix(p[1], b.prefix) {
			return nil, fmt.Errorf("model.merges[%d]: %q lacks continuing_subword_prefix %q", rank, p[1], b.prefix)
		}
		merged := p[0] + p[1][len(b.prefix):]
		id, ok := m.Vocab[merged]
		if !ok {
			return nil, fmt.Errorf("model.merges[%d]: merged token %q not in model.vocab", rank, merged)
		}
		k := pairKey(int32(a), int32(c))
		if _, dup := b.merges[k]; !dup { // tokenizers keeps the first (lowest) rank
			b.merges[k] = mergeVal{int32(rank), int32(id)}
		}
	}
	return b, nil
}

type symbol struct {
	id         int32
	prev, next int32
	n          int32 // bytes covered; 0 once merged into its left neighbour
}

type mergeItem struct{ rank, pos, id int32 }

// encodeWord appends the ids of one pre-tokenized piece (in model space) to out.
func (b *bpe) encodeWord(st *state, w string, out []int32) []int32 {
	if len(w) == 0 {
		return out
	}
	if b.ignoreMrg {
		if id, ok := b.vocab[w]; ok {
			return append(out, id)
		}
	}
	cacheable := len(w) <= b.maxCacheLn
	if cacheable {
		if sp, ok := st.cache[w]; ok {
			return append(out, st.arena[sp[0]:sp[1]]...)
		}
	}
	syms := b.initial(st, w)
	syms = b.mergeAll(st, syms)
	start := len(out)
	for i := int32(0); i >= 0 && int(i) < len(syms); i = syms[i].next {
		out = append(out, syms[i].id)
	}
	if cacheable {
		st.remember(w, out[start:])
	}
	return out
}

// initial splits w into the first symbols, as tokenizers' BPE::merge_word does.
func (b *bpe) initial(st *state, w string) []symbol {
	syms := st.syms[:0]
	if b.byteLevel && b.prefix == "" && b.suffix == "" {
		var fast bool
		if syms, fast = b.byteSymbols(syms, w); fast {
			st.syms = syms
			return syms
		}
		syms = syms[:0]
	}
	add := func(id int32, n int) { syms = addSymbol(syms, id, n) }
	unkID, unkLen := int32(-1), 0
	for i := 0; i < len(w); {
		_, sz := utf8.DecodeRuneInString(w[i:])
		if b.byteLevel {
			sz = 1 // model space is bytes: every byte is one initial symbol
		}
		s := w[i : i+sz]
		if i > 0 && b.prefix != "" {
			s = b.prefix + s
		}
		if i+sz == len(w) && b.suffix != "" {
			s += b.suffix
		}
		i += sz
		if id, ok := b.vocab[s]; ok {
			if unkID >= 0 {
				add(unkID, unkLen)
				unkID = -1
			}
			add(id, sz)
			continue
		}
		if b.byteFB {
			ok := true
			for j := 0; j < len(s); j++ {
				if b.fbIDs[s[j]] < 0 {
					ok = false
					break
				}
			}
			if ok {
				for j := 0; j < len(s); j++ {
					add(b.fbIDs[s[j]], 1)
				}
				continue
			}
		}
		if b.unk >= 0 {
			switch {
			case unkID >= 0 && b.fuseUnk:
				unkLen += sz
			case unkID >= 0:
				add(unkID, unkLen)
				unkID, unkLen = b.unk, sz
			default:
				unkID, unkLen = b.unk, sz
			}
		}
		// Without unk_token tokenizers drops the char (it errors only in merge_word's
		// caller for some versions); we drop it too so that ids stay aligned with HF.
	}
	if unkID >= 0 {
		add(unkID, unkLen)
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	st.syms = syms
	return syms
}

// byteSymbols is initial's fast path for byte-level models without affixes: one symbol
// per byte of w, appended to syms; ok is false (syms then holds a partial result) when a
// byte has no id.
func (b *bpe) byteSymbols(syms []symbol, w string) (_ []symbol, ok bool) {
	for i := 0; i < len(w); i++ {
		id := b.byteIDs[w[i]]
		if id < 0 {
			return syms, false
		}
		syms = addSymbol(syms, id, 1)
	}
	syms[len(syms)-1].next = -1
	return syms, true
}

// addSymbol appends a symbol of id covering n bytes, linked to its neighbours by index.
func addSymbol(syms []symbol, id int32, n int) []symbol {
	i := int32(len(syms))
	return append(syms, symbol{id: id, prev: i - 1, next: i + 1, n: int32(n)})
}

// mergeAll is tokenizers' Word::merge_all without dropout: a min-heap on (rank, pos); a popped
// merge is applied if its left symbol is alive and the current pair merges to the same new id
// (tokenizers checks the new id, not the rank, and we copy that).
func (b *bpe) mergeAll(st *state, syms []symbol) []symbol {
	h := st.heap[:0]
	for i := 0; i+1 < len(syms); i++ {
		if m, ok := b.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			h = heapPush(h, mergeItem{m.rank, int32(i), m.id})
		}
	}
	for len(h) > 0 {
		var top mergeItem
		top, h = heapPop(h)
		cur := &syms[top.pos]
		if cur.n == 0 || cur.next < 0 {
			continue
		}
		nextPos := cur.next
		right := syms[nextPos]
		if m, ok := b.merges[pairKey(cur.id, right.id)]; !ok || m.id != top.id {
			continue
		}
		cur.id = top.id
		cur.n += right.n
		cur.next = right.next
		syms[nextPos].n = 0
		if right.next >= 0 {
			syms[right.next].prev = top.pos
		}
		if cur.prev >= 0 {
			if m, ok := b.merges[pairKey(syms[cur.prev].id, cur.id)]; ok {
				h = heapPush(h, mergeItem{m.rank, cur.prev, m.id})
			}
		}
		if cur.next >= 0 {
			if m, ok := b.merges[pairKey(cur.id, syms[cur.next].id)]; ok {
				h = heapPush(h, mergeItem{m.rank, top.pos, m.id})
			}
		}
	}
	st.heap = h
	return syms
}

func less(a, b mergeItem) bool { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos) }

// heapPush/heapPop are a hand-written binary heap: container/heap would box every item.
func heapPush(h []mergeItem, it mergeItem) []mergeItem {
	h = append(h, it)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !less(h[i], h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	return h
}

func heapPop(h []mergeItem) (mergeItem, []mergeItem) {
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && less(h[r], h[l]) {
			m = r
		}
		if !less(h[m], h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	return top, h
}
