package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/ortq/ortq/tokenize"
	"github.com/spf13/cobra"
)

func newTokenize() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokenize --tokenizer tokenizer.json [FILE...]",
		Short: "Print token ids (one JSON array per input line) or decode them with --decode",
		Long: `tokenize reads lines from the files given (or stdin) and prints, per line, a JSON array of
token ids. With --jsonl each line is a JSON string (so texts may contain newlines). With
--decode each line is a JSON array of ids and the decoded text is printed as a JSON string.`,
		RunE: runTokenize,
	}
	f := cmd.Flags()
	f.String("tokenizer", "", "Hugging Face tokenizer.json")
	f.Bool("special", false, "add BOS/EOS as tokenizer.json's post-processor says (encode); keep special tokens (decode)")
	f.Bool("jsonl", false, "each input line is a JSON string")
	f.Bool("decode", false, "decode JSON arrays of ids back to text")
	return cmd
}

// runTokenize is `ortq tokenize`: each line of the files (or stdin) encoded, or decoded with
// --decode, to one JSON line on stdout.
func runTokenize(cmd *cobra.Command, args []string) error {
	v, err := options(cmd)
	if err != nil {
		return err
	}
	path, err := resolveTokenizer(v.GetString("tokenizer"))
	if err != nil {
		return err
	}
	if path == "" {
		return usageError{fmt.Errorf("--tokenizer is required")}
	}
	tok, err := tokenize.Load(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	l := lineTokenizer{tok: tok, w: w, special: v.GetBool("special"), jsonl: v.GetBool("jsonl"), decode: v.GetBool("decode")}
	if len(args) == 0 {
		return l.each("stdin", os.Stdin)
	}
	for _, a := range args {
		f, err := os.Open(a)
		if err != nil {
			return err
		}
		err = l.each(a, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// lineTokenizer is what `ortq tokenize` does to each input line, by its flags.
type lineTokenizer struct {
	tok                    *tokenize.Tokenizer
	w                      io.Writer
	special, jsonl, decode bool
}

// each handles every line of r (named name in errors).
func (l lineTokenizer) each(name string, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if err := l.line(sc.Text()); err != nil {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// line writes the ids of text (its text, with --decode) as one JSON line.
func (l lineTokenizer) line(text string) error {
	if l.decode {
		var ids []int
		if err := json.Unmarshal([]byte(text), &ids); err != nil {
			return fmt.Errorf("expected a JSON array of ids: %w", err)
		}
		s, err := l.tok.Decode(ids, !l.special)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(s)
		fmt.Fprintln(l.w, string(b))
		return nil
	}
	if l.jsonl {
		if err := json.Unmarshal([]byte(text), &text); err != nil {
			return fmt.Errorf("expected a JSON string: %w", err)
		}
	}
	ids, err := l.tok.Encode(text, l.special)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(ids)
	fmt.Fprintln(l.w, string(b))
	return nil
}
