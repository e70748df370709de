package chat

import (
	"testing"
)

// TestAssistantSpans: the spans of each template cover exactly the assistant turns
// (content plus the end-of-turn the template writes), checked against hand-written
// expectations on the rendered strings.
func TestAssistantSpans(t *testing.T) {
	s := loadSpec(t)
	tests := []struct {
		template, conv string
		want           []string
	}{
		{"default", "system_two_turns", []string{" Seven.</s>\n", " Two, the only even prime.</s>\n"}},
		{"llama3_1", "system_two_turns", []string{"Seven.<|eot_id|>", "Two, the only even prime.<|eot_id|>"}},
		{"qwen2_5", "system_two_turns", []string{"Seven.<|im_end|>\n", "Two, the only even prime.<|im_end|>\n"}},
		// Mistral writes the system message into the last user turn only: found by content.
		{"mistral_nemo", "system_two_turns", []string{"Seven.</s>", "Two, the only even prime.</s>"}},
		// The base Llama 3 template writes the assistant header after every conversation:
		// the last span carries it, the earlier ones stop where the next header differs.
		{"llama3", "system_two_turns", []string{"Seven.<|eot_id|><|start_header_id|>",
			"Two, the only even prime.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"}},
		{"qwen3", "think", []string{"<think>\nadd them\n</think>\n\n4<|im_end|>\n"}},
		{"qwen3", "system_two_turns", []string{"Seven.<|im_end|>\n", "<think>\n\n</think>\n\nTwo, the only even prime.<|im_end|>\n"}},
	}
	for _, tc := range tests {
		tpl := loadTemplate(t, s, tc.template)
		text, spans, err := tpl.AssistantSpans(s.Conversations[tc.conv])
		if err != nil {
			t.Fatalf("%s: %v", tc.template, err)
		}
		var got []string
		for _, sp := range spans {
			got = append(got, text[sp.Start:sp.End])
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%s: spans %q, want %q", tc.template, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: span %d = %q, want %q", tc.template, i, got[i], tc.want[i])
			}
		}
	}
	// A conversation without an assistant turn trains on nothing.
	tpl := loadTemplate(t, s, "default")
	if _, spans, err := tpl.AssistantSpans(s.Conversations["prompt_only"]); err != nil || len(spans) != 0 {
		t.Errorf("prompt only: spans %v, err %v", spans, err)
	}
}
