package passes_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		wl, gl := strings.Split(string(want), "\n"), strings.Split(got, "\n")
		for i := 0; i < len(wl) || i < len(gl); i++ {
			var w, g string
			if i < len(wl) {
				w = wl[i]
			}
			if i < len(gl) {
				g = gl[i]
			}
			if w != g {
				t.Fatalf("%s differs from the golden at line %d:\n  want %s\n  got  %s\n(go test -update rewrites it)", name, i+1, w, g)
			}
		}
	}
}

const fixture = "../../testdata/llama/gqa_tied_llama3/model.onnx"

func load(t *testing.T) *ortgraph.Graph { return loadFrom(t, fixture) }

func loadFrom(t *testing.T, path string) *ortgraph.Graph {
	t.Helper()
	m, err := ortgraph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return ortgraph.NewGraph(m)
}

// TestFindLinearsByEveryMeans finds the same Linears from the exporter's metadata and,
// with metadata and names stripped, from the graph's structure alone.
func TestFindLinearsByEveryMeans(t *testing.T) {
	for _, v := range []string{"gqa_tied_llama3", "mask_untied", "opset23_gqa"} {
		t.Run(v, func(t *testing.T) { findLinearsByEveryMeans(t, "../../testdata/llama/"+v+"/model.onnx", v) })
	}
}

func findLinearsByEveryMeans(t *testing.T, path, variant string) {
	list := func(g *ortgraph.Graph) string {
		ctx, err := ortgraph.RunPasses(g, nil, nil, passes.FindLinears)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, l := range ortgraph.ResultOf[*passes.Linears](ctx, passes.FindLinears).All {
			b.WriteString(l.Module() + " " + l.Node.Output[0] + "\n")
		}
		return b.String()
	}
	byMeta := list(loadFrom(t, path))
	golden(t, "linears_"+variant+".txt", byMeta)
	g := loadFrom(t, path)
	for i, n := range g.P.Node {
		n.MetadataProps = nil
		n.Name = "n" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
	}
	for _, init := range g.P.Initializer {
		if strings.Contains(init.Name, "lm_head") {
			init.Name = strings.ReplaceAll(init.Name, "lm_head", "w")
		}
	}
	// Renaming initializers needs the readers renamed too.
	for _, n := range g.P.Node {
		for i, in := range n.Input {
			n.Input[i] = strings.ReplaceAll(in, "lm_head", "w")
		}
	}
	g.Reindex()
	if got := list(g); got != byMeta {
		t.Errorf("structure-only detection differs from metadata:\n%s\nvs\n%s", got, byMeta)
	}
}

// TestPassGoldens keeps text dumps of the rewritten evaluation graph (LoRA on q/v, loss) and
// of the chunked loss.
func TestPassGoldens(t *testing.T) {
	for _, c := range []struct {
		name  string
		chunk int
	}{{"eval_lora_qv.txt", 0}, {"eval_lora_qv_chunked.txt", 3}} {
		t.Run(c.name, func(t *testing.T) {
			g := load(t)
			opts := passes.RunOptions{
				Quantize: passes.QuantizeOptions{Bits: 16},
				LoRA:     passes.LoRAOptions{Targets: []string{"q_proj", "v_proj"}, Rank: 8, Alpha: 32},
				Loss:     passes.LossOptions{Chunks: c.chunk},
			}
			if _, err := ortgraph.RunPasses(g, opts.Options(), nil, passes.LoRA, passes.Loss); err != nil {
				t.Fatal(err)
			}
			g.Prune()
			golden(t, c.name, ortgraph.Dump(g))
		})
	}
}
