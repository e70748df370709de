package runreport

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestFormatBytes(t *testing.T) {
	for _, c := range []struct {
		n    uint64
		want string
	}{{0, "n/a"}, {1 << 20, "1.0 MiB"}, {1536 << 10, "1.5 MiB"}, {1<<30 - 1, "1024.0 MiB"}, {1 << 30, "1.00 GiB"}, {5 << 29, "2.50 GiB"}} {
		if got := FormatBytes(c.n); got != c.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

func TestMarkdownEscape(t *testing.T) {
	if got, want := MarkdownEscape("a|b\nc"), `a\|b c`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestFlatten: nesting, number digits, lists of strings and of objects, and the empty
// values kept or left out.
func TestFlatten(t *testing.T) {
	type inner struct {
		R       int     `json:"r"`
		Dropout float64 `json:"dropout"`
	}
	cfg := struct {
		LR      json.Number       `json:"lr"`
		LoRA    inner             `json:"lora"`
		Targets []string          `json:"targets"`
		Sweep   []map[string]any  `json:"sweep"`
		Path    string            `json:"path"`
		Empty   string            `json:"empty"`
		None    []string          `json:"none"`
		Nil     *int              `json:"nil"`
		Map     map[string]string `json:"map"`
		Zero    int               `json:"zero"`
	}{
		LR: "2e-4", LoRA: inner{8, 0.1}, Targets: []string{"q_proj", "v_proj"},
		Sweep: []map[string]any{{"name": "mb", "values": []string{"1", "2"}}}, Path: "a<b>&c", None: []string{}, Map: map[string]string{},
	}
	all := [][2]string{
		{"empty", ""}, {"lora.dropout", "0.1"}, {"lora.r", "8"}, {"lr", "2e-4"}, {"map", "{}"}, {"nil", "null"},
		{"none", ""}, {"path", "a<b>&c"}, {"sweep", `{"name":"mb","values":["1","2"]}`}, {"targets", "q_proj, v_proj"}, {"zero", "0"},
	}
	got, err := Flatten(cfg, false)
	if err != nil || !slices.Equal(got, all) {
		t.Errorf("Flatten(keep empty) = %q, %v\nwant %q", got, err, all)
	}
	kept := slices.DeleteFunc(slices.Clone(all), func(r [2]string) bool {
		return slices.Contains([]string{"empty", "map", "nil", "none"}, r[0])
	})
	if got, err := Flatten(cfg, true); err != nil || !slices.Equal(got, kept) {
		t.Errorf("Flatten(omit empty) = %q, %v\nwant %q", got, err, kept)
	}
	if _, err := Flatten(func() {}, false); err == nil {
		t.Error("a value JSON cannot encode was accepted")
	}
}
