package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ortq/ortq/chat"
	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/generate"
	"github.com/ortq/ortq/internal/fsutil"
	"github.com/ortq/ortq/tokenize"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

func newGenerate() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate --model EXPORT_DIR --prompt TEXT [--prompt TEXT ...]",
		Short: "Generate text with a model written by ortq export (KV cache, CPU or CUDA)",
		Long: `generate tokenizes the prompt (--prompt, or standard input when it is absent or "-") with
the tokenizer.json in --model (the tokenizer training used; BOS is prepended when the
tokenizer has one, as train does), runs the prompt through the exported decoder in one
prefill, then decodes one token per run with the KV cache, printing the text as it grows.
Greedy by default; --temperature > 0 samples, restricted by --top-k and --top-p, seeded by
--seed. It stops at EOS or after --max-new-tokens, and prints the prefill and decode speed
(tokens/s) to standard error.

With --ids it prints the new token ids instead of text: one JSON array on standard output,
written id by id as they are drawn, with the EOS that ends it (as transformers' generate
returns it). A model whose vocabulary is larger than its tokenizer.json's (vocab_size in
genai_config.json) can draw ids that have no text, so without --ids it is refused.

Several prompts (--prompt repeated, or --prompts FILE.jsonl with one {"prompt": "..."} per
line) are decoded together as one batch when the export has a shared KV cache (ortq export
--kv-cache shared), one after another otherwise; each row stops at its own EOS. A batch
prints one JSON object per prompt when all are done: {"prompt": ..., "completion": ...},
or {"ids": [...]} with --ids.

On CUDA a shared-KV-cache export decodes in a CUDA graph (captured after two plain steps,
then replayed per token) with the argmax on the device; --cuda-graph=false runs the same
steps uncaptured. Where ONNX Runtime refuses the capture, generate says so on standard
error and decodes uncaptured.

With --chat the prompt is the user's message (after --system, if given), rendered with the
model's chat template (the chat_template of tokenizer_config.json in --model, or
--chat-template FILE) and its generation prompt, the way the model was instruction-tuned.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := options(cmd)
			if err != nil {
				return err
			}
			prompts, err := cmd.Flags().GetStringArray("prompt")
			if err != nil {
				return err
			}
			return runGenerate(v, prompts, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.String("model", "", "directory written by ortq export")
	f.StringArray("prompt", nil, "prompt text; repeat for a batch (none or \"-\": read standard input)")
	f.String("prompts", "", "JSONL file of prompts, one {\"prompt\": \"...\"} per line, decoded as a batch")
	f.Bool("cuda-graph", true, "on CUDA, capture the decode step of a shared-KV-cache export in a CUDA graph")
	f.Int("max-new-tokens", 64, "most tokens to generate")
	f.Float64("temperature", 0, "0: greedy; > 0: sample from softmax(logits / temperature)")
	f.Int("top-k", 0, "sample among the k most likely tokens only (0: all)")
	f.Float64("top-p", 1, "sample among the most likely tokens whose probability reaches p (1: all)")
	f.Uint64("seed", 42, "seed for sampling")
	f.String("device", "cpu", "execution provider: cpu, cuda or cuda:N")
	f.Int("threads", 0, "CPU intra-op threads (0: one per core)")
	f.String("adapter", "", "with a --format onnx-adapter export: the .onnx_adapter to apply (default: the export's adapter.onnx_adapter; \"none\": the "+
		"base model)")
	f.Bool("ignore-eos", false, "do not stop at EOS: always --max-new-tokens tokens (benchmarks)")
	f.Bool("ids", false, "print the new token ids (a JSON array, streamed) instead of text")
	f.Bool("quiet", false, "no speed line on standard error")
	f.Bool("chat", false, "render the prompt as a user message through the model's chat template (tokenizer_config.json in --model) with its generation "+
		"prompt, as apply_chat_template(add_generation_prompt=True) does")
	f.String("system", "", "with --chat: a system message before the prompt")
	f.String("chat-template", "", "with --chat: a Jinja chat template file to use instead of the model's")
	return cmd
}

func runGenerate(v *viper.Viper, flagPrompts []string, stdin io.Reader, stdout io.Writer) error {
	dir := v.GetString("model")
	sampler, err := generateFlags(v, dir)
	if err != nil {
		return err
	}
	cfg, tok, err := readExport(v, dir)
	if err != nil {
		return err
	}
	texts, prompts, err := generatePrompts(v, flagPrompts, stdin, tok, dir, cfg)
	if err != nil {
		return err
	}
	m, err := openGenerator(v, dir)
	if err != nil {
		return err
	}
	defer m.Close()
	o := generate.Options{MaxNewTokens: v.GetInt("max-new-tokens"), Sampler: sampler}
	if !v.GetBool("ignore-eos") {
		o.EOS = append(o.EOS, m.Config.Model.EOS...)
		if e, ok := tok.EOS(); ok {
			o.EOS = append(o.EOS, e)
		}
	}
	var st generate.Stats
	if len(prompts) == 1 {
		st, err = generateOne(m, tok, prompts[0], o, v.GetBool("ids"), stdout)
	} else {
		st, err = generateBatch(m, tok, texts, prompts, o, v.GetBool("ids"), stdout)
	}
	if err != nil {
		return err
	}
	if !v.GetBool("quiet") {
		printGenerateStats(m, st)
	}
	return nil
}

// generateFlags checks generate's flags that need nothing read and makes the sampler.
func generateFlags(v *viper.Viper, dir string) (*generate.Sampler, error) {
	if dir == "" {
		return nil, usageError{fmt.Errorf("--model is required: a directory written by ortq export")}
	}
	if v.GetInt("max-new-tokens") < 1 {
		return nil, usageError{fmt.Errorf("--max-new-tokens %d: must be at least 1", v.GetInt("max-new-tokens"))}
	}
	sampler, err := generate.NewSampler(v.GetFloat64("temperature"), v.GetInt("top-k"), v.GetFloat64("top-p"), v.GetUint64("seed"))
	if err != nil {
		return nil, usageError{err}
	}
	return sampler, nil
}

// readExport reads the export's genai_config.json and tokenizer, the export itself first:
// a missing or wrong --model is named as such, not as a missing tokenizer.
func readExport(v *viper.Viper, dir string) (*export.GenAIConfig, *tokenize.Tokenizer, error) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, nil, usageError{fmt.Errorf("--model %q: not a directory: pass one written by ortq export", dir)}
	}
	cfg, err := export.ReadGenAIConfig(filepath.Join(dir, export.GenAIConfigFile))
	if err != nil {
		return nil, nil, fmt.Errorf("--model %q: %w", dir, err)
	}
	tok, err := tokenize.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("--model %q: %w (export with --tokenizer to ship one)", dir, err)
	}
	if n, tn := cfg.Model.VocabSize, tok.VocabSize(); n > tn && !v.GetBool("ids") {
		return nil, nil, usageError{fmt.Errorf("--model %q: the model's vocabulary (%d tokens, %s) is larger than its tokenizer.json's (%d), "+
			"so ids from %d on have no text: pass --ids to print token ids, or export with the model's own tokenizer", dir, n, export.GenAIConfigFile, tn, tn)}
	}
	return cfg, tok, nil
}

// generatePrompts reads and encodes the prompts, refusing one that does not fit the
// model's context before anything is printed (generate.Generate checks it again).
func generatePrompts(v *viper.Viper, flagPrompts []string, stdin io.Reader, tok *tokenize.Tokenizer, dir string,
	cfg *export.GenAIConfig) ([]string, [][]int64, error) {
	texts, err := readPrompts(v.GetString("prompts"), flagPrompts, stdin)
	if err != nil {
		return nil, nil, err
	}
	prompts := make([][]int64, len(texts))
	for i, text := range texts {
		if prompts[i], err = encodePrompt(v, tok, dir, text); err != nil {
			return nil, nil, err
		}
		if ctx, n := cfg.Model.ContextLength, v.GetInt("max-new-tokens"); ctx > 0 && len(prompts[i])+n > ctx {
			return nil, nil, fmt.Errorf("prompt (%d tokens) + --max-new-tokens %d exceeds the model's context of %d tokens", len(prompts[i]), n, ctx)
		}
	}
	return texts, prompts, nil
}

// openGenerator opens the export on the device with its adapter; a refused CUDA-graph
// capture is said even with --quiet.
func openGenerator(v *viper.Viper, dir string) (*generate.Model, error) {
	opts, err := sessionOptions(v)
	if err != nil {
		return nil, err
	}
	opts.CUDAGraph = v.GetBool("cuda-graph")
	m, err := generate.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	for _, n := range m.Notes {
		if strings.HasPrefix(n, generate.NoteGraphOff) {
			fmt.Fprintln(os.Stderr, "warning:", n)
		}
	}
	if err := useAdapter(m, dir, v.GetString("adapter")); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// printGenerateStats prints the model's notes and the prefill and decode rates to stderr.
func printGenerateStats(m *generate.Model, st generate.Stats) {
	for _, n := range m.Notes {
		if !strings.HasPrefix(n, generate.NoteGraphOff) {
			fmt.Fprintln(os.Stderr, n)
		}
	}
	rows := ""
	if st.Rows > 1 {
		rows = fmt.Sprintf("%d rows, ", st.Rows)
	}
	fmt.Fprintf(os.Stderr, "%sprompt %d tokens, prefill %.1f tokens/s; %d new tokens, decode %.1f tokens/s%s\n",
		rows, st.PromptTokens, st.PrefillPerSecond(), st.NewTokens, st.DecodePerSecond(), map[bool]string{true: " (stopped at EOS)"}[st.StoppedAtEOS])
}

// generateOne decodes one prompt, streaming its text (or ids) as it grows.
func generateOne(m *generate.Model, tok *tokenize.Tokenizer, ids []int64, o generate.Options, asIDs bool, stdout io.Writer) (generate.Stats, error) {
	var err error
	if asIDs {
		fmt.Fprint(stdout, "[")
		o.OnToken = newIDPrinter(stdout)
	} else if o.OnToken, err = newPrinter(tok, ids, stdout); err != nil {
		return generate.Stats{}, err
	}
	out, st, err := m.Generate(ids, o)
	if asIDs {
		if st.StoppedAtEOS {
			o.OnToken(int(out[len(out)-1]))
		}
		fmt.Fprint(stdout, "]")
	}
	fmt.Fprintln(stdout)
	return st, err
}

// generateBatch decodes several prompts together and prints one JSON object per prompt:
// its text and completion, or the new ids (EOS included, as --ids prints them).
func generateBatch(m *generate.Model, tok *tokenize.Tokenizer, texts []string, prompts [][]int64, o generate.Options, asIDs bool,
	stdout io.Writer) (generate.Stats, error) {
	outs, st, err := m.GenerateBatch(prompts, o)
	if err != nil {
		return st, err
	}
	eos := map[int64]bool{}
	for _, e := range o.EOS {
		eos[int64(e)] = true
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for i, out := range outs {
		if asIDs {
			if err := enc.Encode(map[string][]int64{"ids": append([]int64{}, out...)}); err != nil {
				return st, err
			}
			continue
		}
		text, err := completion(tok, prompts[i], out, eos)
		if err != nil {
			return st, err
		}
		if err := enc.Encode(struct {
			Prompt     string `json:"prompt"`
			Completion string `json:"completion"`
		}{texts[i], text}); err != nil {
			return st, err
		}
	}
	return st, nil
}

// completion is the text the new ids (EOS left out) add to the prompt's: decoded with the
// prompt, as newPrinter prints it, so the first word keeps its separating space.
func completion(tok *tokenize.Tokenizer, prompt, out []int64, eos map[int64]bool) (string, error) {
	var ids []int
	for _, id := range prompt {
		ids = append(ids, int(id))
	}
	head, err := tok.Decode(ids, true)
	if err != nil {
		return "", err
	}
	for _, id := range out {
		if !eos[id] {
			ids = append(ids, int(id))
		}
	}
	all, err := tok.Decode(ids, true)
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(all, head), nil
}

// readPrompts returns the prompts of --prompts FILE.jsonl, or of --prompt (repeated), or
// standard input (no --prompt, or "-").
func readPrompts(file string, flagPrompts []string, stdin io.Reader) ([]string, error) {
	if file != "" {
		if len(flagPrompts) > 0 {
			return nil, usageError{fmt.Errorf("--prompts and --prompt: pass one of them")}
		}
		return readPromptFile(file)
	}
	if len(flagPrompts) == 0 || (len(flagPrompts) == 1 && flagPrompts[0] == "-") {
		b, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return nil, fmt.Errorf("reading the prompt from standard input: %w", err)
		}
		return []string{strings.TrimRight(string(b), "\n")}, nil
	}
	return flagPrompts, nil
}

// readPromptFile reads a JSONL file of {"prompt": "..."} objects (blank lines skipped).
func readPromptFile(path string) ([]string, error) {
	b, err := fsutil.ReadLimited(path, "--prompts", 64<<20)
	if err != nil {
		return nil, fmt.Errorf("--prompts: %w", err)
	}
	var prompts []string
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var rec struct {
			Prompt *string `json:"prompt"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Prompt == nil {
			return nil, usageError{fmt.Errorf("--prompts %s:%d: want a JSON object with a string field \"prompt\"", path, i+1)}
		}
		prompts = append(prompts, *rec.Prompt)
	}
	if len(prompts) == 0 {
		return nil, usageError{fmt.Errorf("--prompts %s: no prompts: write one {\"prompt\": \"...\"} per line", path)}
	}
	return prompts, nil
}

// encodePrompt tokenizes one prompt, through the chat template with --chat.
func encodePrompt(v *viper.Viper, tok *tokenize.Tokenizer, dir, prompt string) ([]int64, error) {
	if v.GetBool("chat") {
		return chatPromptIDs(tok, dir, v.GetString("chat-template"), v.GetString("system"), prompt)
	}
	if v.GetString("system") != "" || v.GetString("chat-template") != "" {
		return nil, usageError{fmt.Errorf("--system and --chat-template apply to --chat prompts: pass --chat")}
	}
	return promptIDs(tok, prompt)
}

// promptIDs tokenizes the prompt as train tokenizes a document: BOS first when the
// tokenizer has one.
func promptIDs(tok *tokenize.Tokenizer, prompt string) ([]int64, error) {
	enc, err := tok.Encode(prompt, true)
	if err != nil {
		return nil, err
	}
	var ids []int64
	if bos, ok := tok.BOS(); ok && (len(enc) == 0 || enc[0] != bos) {
		ids = append(ids, int64(bos))
	}
	for _, id := range enc {
		ids = append(ids, int64(id))
	}
	if len(ids) == 0 {
		return nil, usageError{fmt.Errorf("--prompt is empty: give some text")}
	}
	return ids, nil
}

// chatPromptIDs renders the prompt as the user's message (after an optional system
// message) with the model's chat template and its generation prompt, and tokenizes the
// result as train tokenizes a rendered conversation: the template places BOS itself.
func chatPromptIDs(tok *tokenize.Tokenizer, dir, override, system, prompt string) ([]int64, error) {
	if strings.TrimSpace(prompt) == "" {
		return nil, usageError{fmt.Errorf("--prompt is empty: give some text")}
	}
	tpl, err := chat.Load(filepath.Join(dir, "tokenizer.json"), override)
	if err != nil {
		return nil, fmt.Errorf("--chat: %w", err)
	}
	var msgs []chat.Message
	if system != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: system})
	}
	text, err := tpl.Render(append(msgs, chat.Message{Role: "user", Content: prompt}), true)
	if err != nil {
		return nil, fmt.Errorf("--chat: %w", err)
	}
	enc, err := tok.Encode(text, false)
	if err != nil {
		return nil, err
	}
	ids := make([]int64, len(enc))
	for i, id := range enc {
		ids[i] = int64(id)
	}
	return ids, nil
}

// useAdapter applies an .onnx_adapter to a model exported with --format onnx-adapter: the
// one named, else the export's own; "none" keeps the base model.
func useAdapter(m *generate.Model, dir, adapter string) error {
	if adapter == "none" {
		return nil
	}
	if adapter == "" {
		adapter = filepath.Join(dir, export.AdapterFile)
		if _, err := os.Stat(adapter); err != nil {
			return nil
		}
	}
	if m.AdapterInputs() == 0 {
		return usageError{fmt.Errorf("--adapter %q: the model in %s has no LoRA inputs: export it with --format onnx-adapter", adapter, dir)}
	}
	// Read and checked here first, bounded (ONNX Runtime would read a device such as
	// /dev/zero without end, and crash or misreport on a truncated file).
	if _, err := export.ReadAdapterFile(adapter); err != nil {
		return fmt.Errorf("--adapter: %w", err)
	}
	return m.UseAdapter(adapter)
}

// newIDPrinter returns the OnToken callback of --ids: each id after the opening "[" the
// caller printed, comma-separated, so the output is what json.Marshal writes for the ids.
func newIDPrinter(w io.Writer) func(int) error {
	first := true
	return func(id int) error {
		if !first {
			fmt.Fprint(w, ",")
		}
		first = false
		_, err := fmt.Fprint(w, id)
		return err
	}
}

// newPrinter prints the prompt and returns the OnToken callback that prints the text as it
// grows: the whole text is decoded again each time and what it adds is printed, because
// tokenizers join pieces (Metaspace spaces, byte fallback), so one token's text alone can
// be wrong; decoding with the prompt gives the first new word its separating space.
func newPrinter(tok *tokenize.Tokenizer, prompt []int64, w io.Writer) (func(int) error, error) {
	var text []int
	for _, id := range prompt {
		text = append(text, int(id))
	}
	printed, err := tok.Decode(text, true)
	if err != nil {
		return nil, err
	}
	fmt.Fprint(w, printed)
	return func(id int) error {
		text = append(text, id)
		s, err := tok.Decode(text, true)
		if err != nil {
			return err
		}
		if strings.HasPrefix(s, printed) {
			fmt.Fprint(w, s[len(printed):])
			printed = s
		}
		return nil
	}, nil
}
