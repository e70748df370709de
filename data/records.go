package data

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ortq/ortq/chat"
)

// Span is a byte range [Start, End) of a Document's text.
type Span struct{ Start, End int }

// TrainOn says which tokens of instruction and chat records the loss learns.
type TrainOn int

const (
	// TrainCompletion trains on the completion (prompt/completion and Alpaca records) or the
	// assistant turns (chat records) only; the prompt's labels are IgnoreIndex, as TRL's
	// completion-only collator makes them. The default.
	TrainCompletion TrainOn = iota
	// TrainAll trains on every token (continued pre-training on the formatted records).
	TrainAll
)

// ParseTrainOn reads --train-on.
func ParseTrainOn(s string) (TrainOn, error) {
	switch s {
	case "completion", "":
		return TrainCompletion, nil
	case "prompt+completion", "all":
		return TrainAll, nil
	}
	return 0, fmt.Errorf("--train-on %q: use completion or prompt+completion", s)
}

// recordKind is what a record holds; every record of a file has the first one's kind.
type recordKind int

const (
	kindText recordKind = iota
	kindPromptCompletion
	kindAlpaca
	kindChat
)

var kindNames = [...]string{"text", "prompt/completion", "instruction/output (Alpaca)", "messages (chat)"}

// record is one JSON object, CSV row or Parquet row, with where it came from.
type record struct {
	fields map[string]json.RawMessage
	name   string // file
	where  string // "name:line" or "name: row N", for errors
	line   int
}

// fieldNames are the field (column) names a reader looks for.
type fieldNames struct {
	text, prompt, completion string
	// pc, text: the prompt/completion or the text fields were named explicitly, which
	// fixes the kind of the records instead of telling it from their fields.
	pc, textSet bool
}

func (o ReadOptions) fieldNames() fieldNames {
	f := fieldNames{text: o.TextField, prompt: o.PromptField, completion: o.CompletionField,
		pc: o.PromptField != "" || o.CompletionField != "", textSet: o.TextField != ""}
	if f.text == "" {
		f.text = "text"
	}
	if f.prompt == "" {
		f.prompt = "prompt"
	}
	if f.completion == "" {
		f.completion = "completion"
	}
	return f
}

// detectKind tells a record's kind by its fields: messages, then prompt+completion, then
// instruction+output, then text.
func detectKind(r record, f fieldNames) (recordKind, error) {
	has := func(k string) bool { _, ok := r.fields[k]; return ok }
	switch {
	case f.pc:
		return kindPromptCompletion, nil
	case f.textSet:
		return kindText, nil
	case has("messages"):
		return kindChat, nil
	case has(f.prompt) && has(f.completion):
		return kindPromptCompletion, nil
	case has("instruction") && has("output"):
		return kindAlpaca, nil
	case has(f.text):
		return kindText, nil
	}
	return 0, fmt.Errorf("%s: missing field %q: a record needs a string %q, %q and %q, \"instruction\" and \"output\" (Alpaca), or \"messages\" (chat); it has %s",
		r.where, f.text, f.text, f.prompt, f.completion, fieldList(r.fields))
}

func fieldList(m map[string]json.RawMessage) string {
	if len(m) == 0 {
		return "no fields"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, fmt.Sprintf("%q", k))
	}
	sortStrings(keys)
	return strings.Join(keys, ", ")
}

// str reads a string field; a missing, null or non-string one is an error naming it.
func (r record) str(field string, kind recordKind, optional bool) (string, error) {
	raw, ok := r.fields[field]
	if !ok {
		if optional {
			return "", nil
		}
		return "", fmt.Errorf("%s: missing field %q (the records of %s are %s records, as its first one)", r.where, field, r.name, kindNames[kind])
	}
	var s string
	// json.Unmarshal accepts null into a string silently; a null text is a data bug the
	// user should hear about, not an empty document.
	if err := json.Unmarshal(raw, &s); err != nil || strings.TrimSpace(string(raw)) == "null" {
		return "", fmt.Errorf("%s: field %q must be a string, got %s", r.where, field, abbreviate(raw))
	}
	return s, nil
}

// alpacaPrompt is the Stanford Alpaca prompt format (with and without an input).
func alpacaPrompt(instruction, input string) string {
	if strings.TrimSpace(input) == "" {
		return "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n" +
			instruction + "\n\n### Response:\n"
	}
	return "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately " +
		"completes the request.\n\n### Instruction:\n" +
		instruction + "\n\n### Input:\n" + input + "\n\n### Response:\n"
}

// document turns a record of a known kind into a Document (Text "" for a blank one).
func (r record) document(kind recordKind, o ReadOptions) (Document, error) {
	f := o.fieldNames()
	d := Document{Source: r.name, Line: r.line}
	var prompt, completion string
	var err error
	switch kind {
	case kindText:
		d.Text, err = r.str(f.text, kind, false)
		return d, err
	case kindChat:
		return r.chatDocument(o)
	case kindPromptCompletion:
		if prompt, err = r.str(f.prompt, kind, false); err == nil {
			completion, err = r.str(f.completion, kind, false)
		}
	case kindAlpaca:
		var instruction, input string
		if instruction, err = r.str("instruction", kind, false); err == nil {
			if input, err = r.str("input", kind, true); err == nil {
				completion, err = r.str("output", kind, false)
			}
		}
		prompt = alpacaPrompt(instruction, input)
	}
	if err != nil {
		return d, err
	}
	if strings.TrimSpace(completion) == "" {
		return d, fmt.Errorf("%s: the completion is empty: nothing to train on", r.where)
	}
	d.Text = prompt + completion
	if o.TrainOn == TrainCompletion {
		d.Trained = []Span{{Start: len(prompt), End: len(d.Text)}}
	}
	return d, nil
}

func (r record) chatDocument(o ReadOptions) (Document, error) {
	d := Document{Source: r.name, Line: r.line, Templated: true}
	var msgs []chat.Message
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(r.fields["messages"], &raw); err != nil || len(raw) == 0 {
		return d, fmt.Errorf("%s: field \"messages\" must be a non-empty list of {\"role\": ..., \"content\": ...} objects", r.where)
	}
	for i, m := range raw {
		sub := record{fields: m, name: r.name, where: fmt.Sprintf("%s: messages[%d]", r.where, i)}
		role, err := sub.str("role", kindChat, false)
		if err != nil {
			return d, err
		}
		content, err := sub.str("content", kindChat, false)
		if err != nil {
			return d, err
		}
		msgs = append(msgs, chat.Message{Role: role, Content: content})
	}
	if o.Chat == nil {
		return d,
			fmt.Errorf("%s: field \"messages\": chat records need a chat template, and the tokenizer's tokenizer_config.json has none: pass --chat-template FILE",
				r.where)
	}
	text, spans, err := o.Chat.AssistantSpans(msgs)
	if err != nil {
		return d, fmt.Errorf("%s: %w", r.where, err)
	}
	d.Text = text
	if o.TrainOn == TrainCompletion {
		d.Trained = []Span{} // non-nil: no assistant turn trains nothing
		for _, sp := range spans {
			d.Trained = append(d.Trained, Span{Start: sp.Start, End: sp.End})
		}
	}
	return d, nil
}
