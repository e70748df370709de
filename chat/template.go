package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nikolalohinski/gonja/v2"
	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"

	"github.com/ortq/ortq/internal/fsutil"
)

// Message is one turn of a conversation in the OpenAI / Hugging Face chat form.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Template is a parsed chat template with the special tokens it is rendered with.
type Template struct {
	Name     string // where it came from, for errors
	Source   string
	BOS, EOS string
	tpl      *exec.Template
}

// Parse compiles a Jinja chat template; name is used in errors.
func Parse(name, source, bos, eos string) (*Template, error) {
	cfg := config.New()
	cfg.TrimBlocks, cfg.LeftStripBlocks = true, true // as transformers' jinja2 environment
	loader, err := loaders.NewFileSystemLoader("")
	if err != nil {
		return nil, err
	}
	root, err := loaders.NewShiftedLoader(name, strings.NewReader(source), loader)
	if err != nil {
		return nil, err
	}
	tpl, err := exec.NewTemplate(name, cfg, root, environment())
	if err != nil {
		return nil, fmt.Errorf("chat template %s: %s", name, withoutSource(err.Error()))
	}
	return &Template{Name: name, Source: source, BOS: bos, EOS: eos, tpl: tpl}, nil
}

// environment is gonja's default environment with transformers' tojson and globals.
func environment() *exec.Environment {
	filters := exec.NewFilterSet(map[string]exec.FilterFunction{})
	filters.Update(builtins.Filters)
	filters.Replace("tojson", filterToJSON)
	ctx := exec.EmptyContext().Update(gonja.DefaultContext)
	ctx.Set("raise_exception", raiseException)
	ctx.Set("strftime_now", strftimeNow)
	return &exec.Environment{
		Context:           ctx,
		Filters:           filters,
		Tests:             builtins.Tests,
		ControlStructures: builtins.ControlStructures,
		Methods:           methods(),
	}
}

// methods is gonja's with dict keys(), values() and items() in insertion order, as Python's
// dicts have them (gonja sorts them): a message's keys come out in the order it was written.
func methods() exec.Methods {
	m := builtins.Methods
	orig := m.Dict
	set := map[string]exec.Method[map[string]any]{}
	for _, name := range []string{"get", "pop", "update", "copy", "setdefault", "clear", "keys", "values", "items"} {
		if f, ok := orig.Get(name); ok {
			set[name] = f
		}
	}
	ordered := func(name string, pick func(p *exec.Pair) any) {
		fallback := set[name]
		set[name] = func(self map[string]any, selfValue *exec.Value, args *exec.VarArgs) (any, error) {
			d, ok := selfValue.Interface().(*exec.Dict)
			if !ok || len(args.Args)+len(args.KwArgs) > 0 {
				return fallback(self, selfValue, args)
			}
			out := make([]any, len(d.Pairs))
			for i, p := range d.Pairs {
				out[i] = pick(p)
			}
			return out, nil
		}
	}
	ordered("keys", func(p *exec.Pair) any { return p.Key })
	ordered("values", func(p *exec.Pair) any { return p.Value })
	ordered("items", func(p *exec.Pair) any { return []any{p.Key, p.Value} })
	m.Dict = exec.NewMethodSet(set)
	return m
}

// TemplateError is a raise_exception call of the template: the conversation does not fit it.
type TemplateError struct{ Message string }

func (e *TemplateError) Error() string { return e.Message }

func raiseException(msg string) (string, error) { return "", &TemplateError{Message: msg} }

// strftimeNow formats the current local time with a strftime format, as transformers'
// strftime_now does (the directives templates use: %d %b %B %Y %m %y %H %M %S %A %a %j %%).
func strftimeNow(format string) string { return strftime(time.Now(), format) }

// withoutSource drops the template text gonja quotes in its parse errors ("failed to parse
// template '<the whole template>': reason (Line: l Col: c ...)"), keeping the reason.
func withoutSource(msg string) string {
	const head = "failed to parse template '"
	if strings.HasPrefix(msg, head) {
		if i := strings.LastIndex(msg, "': "); i > len(head) {
			return "cannot parse it: " + msg[i+3:]
		}
	}
	return msg
}

// Render renders messages; addGenerationPrompt appends the template's assistant header.
func (t *Template) Render(msgs []Message, addGenerationPrompt bool) (out string, err error) {
	defer func() { // gonja panics on a few bad expressions (an integer divided by zero)
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat template %s failed: %v", t.Name, r)
		}
	}()
	list := make([]*exec.Value, len(msgs))
	for i, m := range msgs {
		d := exec.NewDict()
		d.Pairs = append(d.Pairs,
			&exec.Pair{Key: exec.AsValue("role"), Value: exec.AsValue(m.Role)},
			&exec.Pair{Key: exec.AsValue("content"), Value: exec.AsValue(m.Content)})
		list[i] = exec.AsValue(d)
	}
	ctx := exec.NewContext(map[string]any{
		"messages":              list,
		"bos_token":             t.BOS,
		"eos_token":             t.EOS,
		"add_generation_prompt": addGenerationPrompt,
	})
	out, err = t.tpl.ExecuteToString(ctx)
	if err != nil {
		var te *TemplateError
		if errors.As(err, &te) {
			return "", fmt.Errorf("chat template %s refuses the conversation: %s", t.Name, te.Message)
		}
		return "", fmt.Errorf("chat template %s: %w", t.Name, err)
	}
	return out, nil
}

// ErrNoTemplate is Load's error for a tokenizer without a chat template.
var ErrNoTemplate = errors.New("the tokenizer has no chat template: pass one with --chat-template FILE")

// Load reads the chat template of a tokenizer: tokenizer_config.json beside tokenizer.json
// (its "chat_template", a string or the "default" of a list of named templates, and its
// bos_token/eos_token). override, when not "", is a template file used instead of the
// config's template (--chat-template).
func Load(tokenizerJSON, override string) (*Template, error) {
	cfgPath := filepath.Join(filepath.Dir(tokenizerJSON), "tokenizer_config.json")
	raw, err := fsutil.ReadLimited(cfgPath, "tokenizer_config.json", 16<<20)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	return FromConfig(cfgPath, raw, override)
}

// FromConfig is Load on the bytes of a tokenizer_config.json (nil: none) named cfgPath.
func FromConfig(cfgPath string, raw []byte, override string) (*Template, error) {
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if raw != nil {
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", cfgPath, err)
		}
	}
	bos, eos := tokenContent(cfg.BOS), tokenContent(cfg.EOS)
	if override != "" {
		src, err := fsutil.ReadLimited(override, "chat template", 16<<20)
		if err != nil {
			return nil, fmt.Errorf("--chat-template: %w", err)
		}
		return Parse(override, string(src), bos, eos)
	}
	src, err := templateSource(cfg.ChatTemplate)
	if err != nil {
		return nil, fmt.Errorf("%s: field \"chat_template\": %w", cfgPath, err)
	}
	if src == "" {
		return nil, fmt.Errorf("%s has no \"chat_template\": %w", cfgPath, ErrNoTemplate)
	}
	return Parse(cfgPath, src, bos, eos)
}

// templateSource reads chat_template: a string, or [{"name", "template"}] whose "default" is used.
func templateSource(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var named []struct{ Name, Template string }
	if err := json.Unmarshal(raw, &named); err != nil {
		return "", errors.New("must be a string or a list of {\"name\", \"template\"} objects")
	}
	for _, n := range named {
		if n.Name == "default" {
			return n.Template, nil
		}
	}
	return "", errors.New("a list of named templates without a \"default\" one")
}

// tokenContent reads a special token given as a string or as an AddedToken object.
func tokenContent(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct{ Content string }
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content
	}
	return ""
}
