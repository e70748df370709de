package hfimport

import (
	"strings"
	"testing"
)

// TestConfigBounds (issue 13 item 5): sizes far beyond any Llama are refused naming the
// field and the bound, not reported as "must be positive" nor accepted.
func TestConfigBounds(t *testing.T) {
	for _, c := range []struct{ field, value string }{
		{"hidden_size", "1000000000000"},
		{"hidden_size", "1e12"},
		{"max_position_embeddings", "1000000000000"},
		{"max_position_embeddings", "0"},
	} {
		js := `{"architectures":["LlamaForCausalLM"],"vocab_size":256,"hidden_size":64,"intermediate_size":128,
"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":128}`
		js = strings.Replace(js, `"`+c.field+`":`+map[string]string{"hidden_size": "64", "max_position_embeddings": "128"}[c.field], `"`+c.field+`":`+c.value, 1)
		_, err := ParseConfig([]byte(js))
		if err == nil || !strings.Contains(err.Error(), c.field) || strings.Contains(err.Error(), "must be positive") {
			t.Errorf("%s = %s: %v", c.field, c.value, err)
		} else {
			t.Logf("%s = %s: %v", c.field, c.value, err)
		}
	}
}
