package chat

import (
	"fmt"
	"strings"
)

// Span is a byte range [Start, End) of a rendered conversation.
type Span struct{ Start, End int }

// AssistantSpans renders msgs (without a generation prompt) and returns the text and the byte
// ranges of its assistant turns, which prompt masking trains on. A template has no notion of
// turns, so they are found by rendering prefixes of the conversation, the usual technique:
// assistant turn i starts where msgs[:i] rendered with add_generation_prompt stops (after
// the assistant header) and ends where msgs[:i+1] rendered without it stops (after the
// turn's end-of-turn token and whatever the template writes after it).
//
// Some templates render earlier turns differently once later ones exist (Mistral puts the
// system message into the last user turn only; Qwen 3 drops the reasoning of turns before
// the last user query), so a prefix rendering is not always a prefix of the whole. Where it
// is not, the turn is found by its content instead: it starts at the message's content
// (trimmed, searched from where the renderings part) and ends after the text the prefix
// rendering writes after that content, as far as the whole rendering agrees with it. A
// template that writes a generation prompt even without add_generation_prompt (Llama 3's
// base template) has that header counted in the last assistant span.
func (t *Template) AssistantSpans(msgs []Message) (string, []Span, error) {
	full, err := t.Render(msgs, false)
	if err != nil {
		return "", nil, err
	}
	var spans []Span
	for i, m := range msgs {
		if m.Role != "assistant" {
			continue
		}
		before, upto := "", ""
		if i > 0 {
			if before, err = t.Render(msgs[:i], true); err != nil {
				return "", nil, fmt.Errorf("rendering the conversation up to message %d: %w", i+1, err)
			}
		}
		if upto, err = t.Render(msgs[:i+1], false); err != nil {
			return "", nil, fmt.Errorf("rendering the conversation up to message %d: %w", i+1, err)
		}
		if sp := turnSpan(full, before, upto, strings.TrimSpace(m.Content)); sp.End > sp.Start {
			spans = append(spans, sp)
		}
	}
	return full, spans, nil
}

// turnSpan places one assistant turn in full from the renderings before and up to it.
func turnSpan(full, before, upto, content string) Span {
	start, end := commonPrefix(before, full), commonPrefix(upto, full)
	if start == len(before) && end == len(upto) || content == "" {
		return Span{start, end}
	}
	from := min(start, end)
	at := strings.Index(full[from:], content)
	inUpto := strings.LastIndex(upto, content)
	if at < 0 || inUpto < 0 {
		return Span{start, end}
	}
	contentEnd := from + at + len(content)
	tail := upto[inUpto+len(content):]
	return Span{from + at, contentEnd + commonPrefix(tail, full[contentEnd:])}
}
func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
