package passes_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ortq/ortq/ortgraph"
	"github.com/ortq/ortq/ortgraph/passes"
)

// allPasses are the package's passes by the name of their variable; TestDocRequirements
// fails when a pass declared in the package is missing here.
var allPasses = map[string]*ortgraph.Pass{
	"FindLinears": passes.FindLinears, "ORTCompat": passes.ORTCompat, "Quantize": passes.Quantize,
	"HalfSoftmax": passes.HalfSoftmax, "Rotary": passes.Rotary, "DocMask": passes.DocMask,
	"GroupedKV": passes.GroupedKV, "RMSNorm": passes.RMSNorm, "DQForward": passes.DQForward,
	"LoRA": passes.LoRA, "Loss": passes.Loss, "Backward": passes.Backward,
	"Recompute": passes.Recompute, "DeviceStep": passes.DeviceStep, "NBitsForward": passes.NBitsForward,
	"AttentionGrad": passes.AttentionGrad, "DenseBase": passes.DenseBase, "Bnb4Forward": passes.Bnb4Forward,
	"AttentionForward": passes.AttentionForward, "AttentionForwardMHA": passes.AttentionForwardMHA,
	"ResidualNorm": passes.ResidualNorm, "ScaleMatMul": passes.ScaleMatMul, "SwiGLUForward": passes.SwiGLUForward,
	"RotaryKernel": passes.RotaryKernel, "MaskedSoftmax": passes.MaskedSoftmax,
	"RMSNormKernel": passes.RMSNormKernel, "NormGradSum": passes.NormGradSum, "Bnb4Kernel": passes.Bnb4Kernel,
}

// TestPassDeclarations: every pass has a name, a Doc and a Run, the names are unique and
// Requires has no cycle (what RunPasses checks before it runs anything).
func TestPassDeclarations(t *testing.T) {
	if err := ortgraph.Validate(slices.Collect(maps.Values(allPasses))...); err != nil {
		t.Fatal(err)
	}
}

// TestDocRequirements keeps doc.go's list of passes equal to the code: the same passes as
// the package declares (var X = &ortgraph.Pass{...}), each with the requirements in its
// brackets equal to its Requires.
func TestDocRequirements(t *testing.T) {
	declared := declaredPasses(t)
	if want := slices.Sorted(maps.Keys(allPasses)); !slices.Equal(declared, want) {
		t.Fatalf("the package declares passes %v; allPasses (validate_test.go) lists %v", declared, want)
	}
	documented := docRequirements(t)
	if got := slices.Sorted(maps.Keys(documented)); !slices.Equal(got, declared) {
		t.Fatalf("doc.go lists passes %v; the package declares %v", got, declared)
	}
	name := map[*ortgraph.Pass]string{}
	for n, p := range allPasses {
		name[p] = n
	}
	for n, p := range allPasses {
		var code []string
		for _, r := range p.Requires {
			code = append(code, name[r])
		}
		slices.Sort(code)
		doc := slices.Sorted(slices.Values(documented[n]))
		if !slices.Equal(doc, code) {
			t.Errorf("%s: doc.go says it requires %v, its Requires are %v", n, doc, code)
		}
	}
}

// declaredPasses returns the names of the package-level variables of the package's
// non-test files initialised with &ortgraph.Pass{...}, sorted.
func declaredPasses(t *testing.T) []string {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, v := range vs.Values {
					if u, ok := v.(*ast.UnaryExpr); ok && u.Op == token.AND {
						if cl, ok := u.X.(*ast.CompositeLit); ok {
							if sel, ok := cl.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Pass" {
								out = append(out, vs.Names[i].Name)
							}
						}
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

var (
	docEntry = regexp.MustCompile(`^//\t([A-Z][A-Za-z0-9]*)\s`)
	docMore  = regexp.MustCompile(`^//\t\s+\S`)
	docReqs  = regexp.MustCompile(`\[([A-Za-z, ]*)\]$`)
)

// docRequirements reads doc.go's list of passes (a tab-indented line starting with the
// pass's name, continued by lines indented further) and the requirements each names in
// brackets at its end.
func docRequirements(t *testing.T) map[string][]string {
	t.Helper()
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	text := map[string]string{}
	cur := ""
	for _, line := range strings.Split(string(src), "\n") {
		switch m := docEntry.FindStringSubmatch(line); {
		case m != nil:
			cur = m[1]
			if _, dup := text[cur]; dup {
				t.Fatalf("doc.go lists %s twice", cur)
			}
			text[cur] = line
		case cur != "" && docMore.MatchString(line):
			text[cur] += " " + strings.TrimSpace(strings.TrimPrefix(line, "//"))
		default:
			cur = ""
		}
	}
	out := map[string][]string{}
	for n, s := range text {
		out[n] = nil
		if m := docReqs.FindStringSubmatch(strings.TrimSpace(s)); m != nil {
			for _, r := range strings.Split(m[1], ",") {
				out[n] = append(out[n], strings.TrimSpace(r))
			}
		}
	}
	return out
}
