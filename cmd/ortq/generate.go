package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/ortq/ortq/chat"
	"github.com/ortq/ortq/export"
	"github.com/ortq/ortq/generate"
	"github.com/ortq/ortq/tokenize"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

func newGenerate() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate --model EXPORT_DIR --prompt TEXT",
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

With --chat the prompt is the user's message (after --system, if given), rendered with the
model's chat template (the chat_template of tokenizer_config.json in --model, or
--chat-template FILE) and its generation prompt, the way the model was instruction-tuned.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := options(cmd)
			if err != nil {
				return err
			}
			return runGenerate(v, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.String("model", "", "directory written by ortq export")
	f.String("prompt", "", "prompt text (default or \"-\": read standard input)")
	f.Int("max-new-tokens", 64, "most tokens to generate")
	f.Float64("temperature", 0, "0: greedy; > 0: sample from softmax(logits / temperature)")
	f.Int("top-k", 0, "sample among the k most likely tokens only (0: all)")
	f.Float64("top-p", 1, "sample among the most likely tokens whose probability reaches p (1: all)")
	f.Uint64("seed", 42, "seed for sampling")
	f.String("device", "cpu", "execution provider: cpu, cuda or cuda:N")
	f.Int("threads", 0, "CPU intra-op threads (0: one per core)")
	f.String("adapter", "", "with a --format onnx-adapter export: the .onnx_adapter to apply (default: the export's adapter.onnx_adapter; \"none\": the base model)")
	f.Bool("ignore-eos", false, "do not stop at EOS: always --max-new-tokens tokens (benchmarks)")
	f.Bool("ids", false, "print the new token ids (a JSON array, streamed) instead of text")
	f.Bool("quiet", false, "no speed line on standard error")
	f.Bool("chat", false, "render the prompt as a user message through the model's chat template (tokenizer_config.json in --model) with its generation prompt, as apply_chat_template(add_generation_prompt=True) does")
	f.String("system", "", "with --chat: a system message before the prompt")
	f.String("chat-template", "", "with --chat: a Jinja chat template file to use instead of the model's")
	return cmd
}

func runGenerate(v *viper.Viper, stdin io.Reader, stdout io.Writer) error {
	dir := v.GetString("model")
	if dir == "" {
		return usageError{fmt.Errorf("--model is required: a directory written by ortq export")}
	}
	if v.GetInt("max-new-tokens") < 1 {
		return usageError{fmt.Errorf("--max-new-tokens %d: must be at least 1", v.GetInt("max-new-tokens"))}
	}
	sampler, err := generate.NewSampler(v.GetFloat64("temperature"), v.GetInt("top-k"), v.GetFloat64("top-p"), v.GetUint64("seed"))
	if err != nil {
		return usageError{err}
	}
	// The export itself first: a missing or wrong --model is named as such, not as a
	// missing tokenizer.
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usageError{fmt.Errorf("--model %q: not a directory: pass one written by ortq export", dir)}
	}
	cfg, err := export.ReadGenAIConfig(filepath.Join(dir, export.GenAIConfigFile))
	if err != nil {
		return fmt.Errorf("--model %q: %w", dir, err)
	}
	tok, err := tokenize.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return fmt.Errorf("--model %q: %w (export with --tokenizer to ship one)", dir, err)
	}
	asIDs := v.GetBool("ids")
	if n, tn := cfg.Model.VocabSize, tok.VocabSize(); n > tn && !asIDs {
		return usageError{fmt.Errorf("--model %q: the model's vocabulary (%d tokens, %s) is larger than its tokenizer.json's (%d), so ids from %d on have no text: pass --ids to print token ids, or export with the model's own tokenizer", dir, n, export.GenAIConfigFile, tn, tn)}
	}
	prompt := v.GetString("prompt")
	if prompt == "" || prompt == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return fmt.Errorf("reading the prompt from standard input: %w", err)
		}
		prompt = strings.TrimRight(string(b), "\n")
	}
	var ids []int64
	if v.GetBool("chat") {
		ids, err = chatPromptIDs(tok, dir, v.GetString("chat-template"), v.GetString("system"), prompt)
	} else if v.GetString("system") != "" || v.GetString("chat-template") != "" {
		return usageError{fmt.Errorf("--system and --chat-template apply to --chat prompts: pass --chat")}
	} else {
		ids, err = promptIDs(tok, prompt)
	}
	if err != nil {
		return err
	}
	// Refused before anything is printed (generate.Generate checks it again).
	if ctx, n := cfg.Model.ContextLength, v.GetInt("max-new-tokens"); ctx > 0 && len(ids)+n > ctx {
		return fmt.Errorf("prompt (%d tokens) + --max-new-tokens %d exceeds the model's context of %d tokens", len(ids), n, ctx)
	}
	opts, err := sessionOptions(v)
	if err != nil {
		return err
	}
	m, err := generate.Open(dir, opts)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := useAdapter(m, dir, v.GetString("adapter")); err != nil {
		return err
	}
	var eos []int
	if !v.GetBool("ignore-eos") {
		eos = append(eos, m.Config.Model.EOS...)
		if e, ok := tok.EOS(); ok {
			eos = append(eos, e)
		}
	}
	var printer func(int) error
	if asIDs {
		fmt.Fprint(stdout, "[")
		printer = newIDPrinter(stdout)
	} else if printer, err = newPrinter(tok, ids, stdout); err != nil {
		return err
	}
	out, st, err := m.Generate(ids, generate.Options{MaxNewTokens: v.GetInt("max-new-tokens"), Sampler: sampler, EOS: eos, OnToken: printer})
	if asIDs {
		if st.StoppedAtEOS {
			printer(int(out[len(out)-1]))
		}
		fmt.Fprint(stdout, "]")
	}
	fmt.Fprintln(stdout)
	if err != nil {
		return err
	}
	if !v.GetBool("quiet") {
		fmt.Fprintf(os.Stderr, "prompt %d tokens, prefill %.1f tokens/s; %d new tokens, decode %.1f tokens/s%s\n",
			st.PromptTokens, st.PrefillPerSecond(), st.NewTokens, st.DecodePerSecond(), map[bool]string{true: " (stopped at EOS)"}[st.StoppedAtEOS])
	}
	return nil
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
