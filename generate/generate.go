package generate

import (
	"fmt"
	"time"
)

// Options of one generation.
type Options struct {
	MaxNewTokens int
	Sampler      *Sampler
	// EOS ends the generation when drawn (it is returned but not passed to OnToken).
	EOS []int
	// OnToken sees every new token as it is chosen (streaming); an error stops the run.
	// GenerateBatch calls it for row 0 only; OnRowToken sees every row's.
	OnToken func(id int) error
	// OnRowToken is OnToken with the row of a batch (GenerateBatch).
	OnRowToken func(row, id int) error
}

// Stats are the token counts and wall times of the prefill (the prompt in one run) and of
// the decode (one run per new token after the first).
type Stats struct {
	PromptTokens, NewTokens int
	Prefill, Decode         time.Duration
	// StoppedAtEOS: every row ended at EOS.
	StoppedAtEOS bool
	// Rows is the batch size (0 or 1: one prompt).
	Rows int
	// Steps are the decode runs' wall times, one per step of the whole batch.
	Steps []time.Duration
}

// PrefillPerSecond and DecodePerSecond are throughputs (0 when nothing ran).
func (s Stats) PrefillPerSecond() float64 { return perSecond(s.PromptTokens, s.Prefill) }

// DecodePerSecond counts the tokens decoded after the prefill's (one per row), all rows
// together.
func (s Stats) DecodePerSecond() float64 { return perSecond(s.NewTokens-max(s.Rows, 1), s.Decode) }

// checkPrompt refuses an empty prompt, one that does not fit the context with n new
// tokens, and ids outside the vocabulary.
func (m *Model) checkPrompt(prompt []int64, n int) error {
	if len(prompt) == 0 {
		return fmt.Errorf("the prompt is empty: give at least one token")
	}
	if ctx := m.Config.Model.ContextLength; ctx > 0 && len(prompt)+n > ctx {
		return fmt.Errorf("prompt (%d tokens) + --max-new-tokens %d exceeds the model's context of %d tokens", len(prompt), n, ctx)
	}
	for _, id := range prompt {
		if id < 0 || int(id) >= m.vocab {
			return fmt.Errorf("prompt token %d is outside the vocabulary (%d tokens): use the model's tokenizer", id, m.vocab)
		}
	}
	return nil
}

func perSecond(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Generate continues prompt by up to o.MaxNewTokens tokens and returns the new ones.
func (m *Model) Generate(prompt []int64, o Options) ([]int64, Stats, error) {
	st := Stats{PromptTokens: len(prompt)}
	if err := m.checkPrompt(prompt, o.MaxNewTokens); err != nil {
		return nil, st, err
	}
	if m.shared {
		if o.OnToken != nil && o.OnRowToken == nil {
			on := o.OnToken
			o.OnRowToken = func(_, id int) error { return on(id) }
		}
		outs, st, err := m.generateShared([][]int64{prompt}, o)
		return outs[0], st, err
	}
	eos := map[int]bool{}
	for _, e := range o.EOS {
		eos[e] = true
	}
	state := m.NewState()
	defer state.Close()
	var out []int64
	in := prompt
	for len(out) < o.MaxNewTokens {
		t0 := time.Now()
		logits, err := m.Forward(state, in)
		if err != nil {
			return out, st, err
		}
		if len(out) == 0 {
			st.Prefill += time.Since(t0)
		} else {
			st.Decode += time.Since(t0)
			st.Steps = append(st.Steps, time.Since(t0))
		}
		id := o.Sampler.Next(logits[(len(in)-1)*m.vocab:])
		out = append(out, int64(id))
		st.NewTokens++
		if eos[id] {
			st.StoppedAtEOS = true
			break
		}
		if o.OnToken != nil {
			if err := o.OnToken(id); err != nil {
				return out, st, err
			}
		}
		in = []int64{int64(id)}
	}
	return out, st, nil
}

// GenerateBatch continues each prompt by up to o.MaxNewTokens tokens. A shared-layout
// export decodes the rows together (one run per step for all of them, each row at its own
// length); a concat-layout export decodes them one after another.
func (m *Model) GenerateBatch(prompts [][]int64, o Options) ([][]int64, Stats, error) {
	st := Stats{Rows: len(prompts)}
	if len(prompts) == 0 {
		return nil, st, fmt.Errorf("no prompts: give at least one")
	}
	for i, p := range prompts {
		if err := m.checkPrompt(p, o.MaxNewTokens); err != nil {
			return nil, st, fmt.Errorf("prompt %d: %w", i+1, err)
		}
	}
	if m.shared {
		return m.generateShared(prompts, o)
	}
	outs := make([][]int64, len(prompts))
	st.StoppedAtEOS = true
	for i, p := range prompts {
		one := o
		if o.OnRowToken != nil {
			one.OnToken = func(id int) error { return o.OnRowToken(i, id) }
		}
		out, s, err := m.Generate(p, one)
		outs[i] = out
		st.PromptTokens, st.NewTokens = st.PromptTokens+s.PromptTokens, st.NewTokens+s.NewTokens
		st.Prefill, st.Decode, st.Steps = st.Prefill+s.Prefill, st.Decode+s.Decode, append(st.Steps, s.Steps...)
		st.StoppedAtEOS = st.StoppedAtEOS && s.StoppedAtEOS
		if err != nil {
			return outs, st, err
		}
	}
	return outs, st, nil
}
