package codeshape

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

const (
	maxFuncLines = 80
	maxLineRunes = 160
)

// longFuncs are the non-test functions allowed over maxFuncLines, by file:name.
var longFuncs = map[string]string{
	"ortgraph/infer.go:inferTypes": "one switch over every op the builder types; split, it reads worse",
}

// longLines are the files allowed lines over maxLineRunes, with how many (none now).
var longLines = map[string]int{}

// TestCodeShape fails on a function or a line over its limit that the allowlists do not
// name, and on an allowlist entry that is no longer needed.
func TestCodeShape(t *testing.T) {
	root := filepath.Join("..", "..")
	funcsSeen := map[string]bool{}
	linesSeen := map[string]int{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "third_party" || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		for i, line := range strings.Split(string(src), "\n") {
			if n := utf8.RuneCountInString(line); n > maxLineRunes {
				linesSeen[rel]++
				if linesSeen[rel] > longLines[rel] {
					t.Errorf("%s:%d: %d characters, more than %d: wrap it", rel, i+1, n, maxLineRunes)
				}
			}
		}
		if strings.HasSuffix(name, "_test.go") {
			return nil
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			lines := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			key := rel + ":" + fd.Name.Name
			if lines > maxFuncLines {
				funcsSeen[key] = true
				if _, ok := longFuncs[key]; !ok {
					t.Errorf("%s: %d lines, more than %d: split it into named steps", key, lines, maxFuncLines)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for key := range longFuncs {
		if !funcsSeen[key] {
			t.Errorf("longFuncs names %s, which is no longer over %d lines (or gone): remove the entry", key, maxFuncLines)
		}
	}
	for rel, n := range longLines {
		if linesSeen[rel] < n {
			t.Errorf("longLines allows %s %d long lines, it has %d: lower the entry", rel, n, linesSeen[rel])
		}
	}
}
