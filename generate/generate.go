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
	OnToken func(id int) error
}

// Stats are the token counts and wall times of the prefill (the prompt in one run) and of
// the decode (one run per new token after the first).
type Stats struct {
	PromptTokens, NewTokens int
	Prefill, Decode         time.Duration
	StoppedAtEOS            bool
}

// PrefillPerSecond and DecodePerSecond are throughputs (0 when nothing ran).
func (s Stats) PrefillPerSecond() float64 { return perSecond(s.PromptTokens, s.Prefill) }

// DecodePerSecond counts the tokens decoded after the prefill's.
func (s Stats) DecodePerSecond() float64 { return perSecond(s.NewTokens-1, s.Decode) }

func perSecond(n int, d time.Duration) float64 {
	if n <= 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Generate continues prompt by up to o.MaxNewTokens tokens and returns the new ones.
func (m *Model) Generate(prompt []int64, o Options) ([]int64, Stats, error) {
	st := Stats{PromptTokens: len(prompt)}
	if len(prompt) == 0 {
		return nil, st, fmt.Errorf("the prompt is empty: give at least one token")
	}
	if ctx := m.Config.Model.ContextLength; ctx > 0 && len(prompt)+o.MaxNewTokens > ctx {
		return nil, st, fmt.Errorf("prompt (%d tokens) + --max-new-tokens %d exceeds the model's context of %d tokens", len(prompt), o.MaxNewTokens, ctx)
	}
	for _, id := range prompt {
		if id < 0 || int(id) >= m.vocab {
			return nil, st, fmt.Errorf("prompt token %d is outside the vocabulary (%d tokens): use the model's tokenizer", id, m.vocab)
		}
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
