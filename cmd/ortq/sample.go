package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ortq/ortq/manifest"
	"github.com/ortq/ortq/ortrun"
	"github.com/ortq/ortq/tokenize"
	"github.com/ortq/ortq/train"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// addSampleFlags adds train's --sample-* flags.
func addSampleFlags(f *pflag.FlagSet) {
	f.StringArray("sample-prompt", nil, "a prompt to complete greedily with the current adapter every --sample-every steps and at the end, "+
		"printed and written to run.jsonl and the report (repeatable; rendered as a user message through the chat template when the data is chat \"messages\")")
	f.Int("sample-every", 0, "complete the --sample-prompt prompts every N optimizer steps (0: only at the end)")
	setMin(f, "sample-every", "0")
	f.Int("sample-max-tokens", 32, "most new tokens of each sample")
	setMin(f, "sample-max-tokens", "1")
}

// checkSampleFlags refuses an empty --sample-prompt, and --sample-every without a prompt,
// before anything runs (the numbers' ranges are setMin's).
func checkSampleFlags(v *viper.Viper) error {
	prompts := v.GetStringSlice("sample-prompt")
	if len(prompts) == 0 && v.IsSet("sample-prompt") { // viper reads a lone "" as no value
		prompts = []string{""}
	}
	for i, p := range prompts {
		if strings.TrimSpace(p) == "" {
			return usageError{fmt.Errorf("--sample-prompt %d of %d is empty: give some text", i+1, len(prompts))}
		}
	}
	if v.GetInt("sample-every") > 0 && len(prompts) == 0 {
		return usageError{fmt.Errorf("--sample-every %d: give the prompts to complete with --sample-prompt TEXT", v.GetInt("sample-every"))}
	}
	return nil
}

// trainSampler is train's Sampler: the --sample-prompt prompts, tokenized as `ortq generate`
// tokenizes its prompt (through the chat template, as generate --chat, when the training
// data is chat), completed greedily by sampleModel.
type trainSampler struct {
	tok     *tokenize.Tokenizer
	prompts []string
	ids     [][]int64
	maxNew  int
	eos     []int
	model   *sampleModel
}

// newTrainSampler returns nil without --sample-prompt. chatData says the training data
// was rendered by the chat template; opts are the sessions' options on the run's (first)
// device.
func newTrainSampler(v *viper.Viper, dir, out string, man *manifest.Manifest, chatData bool, opts ortrun.Options) (*trainSampler, error) {
	prompts := v.GetStringSlice("sample-prompt")
	if len(prompts) == 0 {
		return nil, nil
	}
	tokPath, err := resolveTokenizer(v.GetString("tokenizer"))
	if err != nil {
		return nil, err
	}
	s := &trainSampler{prompts: prompts, maxNew: v.GetInt("sample-max-tokens")}
	if s.tok, err = tokenize.Load(tokPath); err != nil {
		return nil, err
	}
	if e, ok := s.tok.EOS(); ok {
		s.eos = append(s.eos, e)
	}
	for i, p := range prompts {
		var ids []int64
		if chatData {
			ids, err = chatPromptIDs(s.tok, filepath.Dir(tokPath), v.GetString("chat-template"), "", p)
		} else {
			ids, err = promptIDs(s.tok, p)
		}
		if err != nil {
			return nil, fmt.Errorf("--sample-prompt %d: %w", i+1, err)
		}
		if n := man.Model.MaxPositions; n > 0 && len(ids)+s.maxNew > n {
			return nil,
				usageError{fmt.Errorf("--sample-prompt %d (%d tokens) + --sample-max-tokens %d exceeds the model's %d positions: "+
					"shorten it or lower --sample-max-tokens", i+1, len(ids), s.maxNew, n)}
		}
		s.ids = append(s.ids, ids)
	}
	if s.model, err = openSampleModel(dir, out, man, opts); err != nil {
		return nil, fmt.Errorf("--sample-prompt: %w", err)
	}
	return s, nil
}

// Sample completes every prompt with params (train.Sampler).
func (s *trainSampler) Sample(params map[string][]float32) ([]train.Sample, error) {
	outs, err := s.model.greedy(params, s.ids, s.maxNew, s.eos)
	if err != nil {
		return nil, err
	}
	samples := make([]train.Sample, len(outs))
	for i, out := range outs {
		samples[i] = train.Sample{Prompt: s.prompts[i], Completion: completionText(s.tok, s.ids[i], out), IDs: out}
	}
	return samples, nil
}

// Close removes the sample model's export.
func (s *trainSampler) Close() error { return s.model.close() }

// completionText is the text the completion adds to the prompt: both decoded together, as
// generate prints it (tokenizers join pieces, so the completion alone could lose its first
// space), special tokens skipped. Ids the tokenizer has no text for are shown as ids.
func completionText(tok *tokenize.Tokenizer, prompt, out []int64) string {
	var all []int
	for _, id := range prompt {
		all = append(all, int(id))
	}
	head, err := tok.Decode(all, true)
	for _, id := range out {
		all = append(all, int(id))
	}
	text, err2 := tok.Decode(all, true)
	if err != nil || err2 != nil || !strings.HasPrefix(text, head) {
		return fmt.Sprint(out)
	}
	return text[len(head):]
}

// trainSampling sets cfg's sample options and Sampler (none without --sample-prompt),
// on the run's first device.
func trainSampling(v *viper.Viper, f trainSetup, man *manifest.Manifest, chatData bool, cfg *train.Config) error {
	// A run killed while sampling leaves its export; the next run in --out removes it
	// (holding --out's lock), whether it samples or not.
	if err := removeStaleSampleExports(f.out); err != nil {
		return err
	}
	if len(v.GetStringSlice("sample-prompt")) == 0 {
		return nil
	}
	opts, err := sessionOptions(v)
	if err != nil {
		return err
	}
	opts.Device = f.devs[0]
	s, err := newTrainSampler(v, f.dir, f.out, man, chatData, opts)
	if err != nil {
		return err
	}
	cfg.Sampler, cfg.SampleEvery, cfg.SamplePrompts, cfg.SampleMaxTokens = s, v.GetInt("sample-every"), s.prompts, s.maxNew
	return nil
}
