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
		RunE: func(cmd *cobra.Command, args []string) error {
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
			special, jsonl, decode := v.GetBool("special"), v.GetBool("jsonl"), v.GetBool("decode")
			w := bufio.NewWriter(os.Stdout)
			defer w.Flush()
			each := func(name string, r io.Reader) error {
				sc := bufio.NewScanner(r)
				sc.Buffer(make([]byte, 1<<20), 64<<20)
				line := 0
				for sc.Scan() {
					line++
					text := sc.Text()
					if decode {
						var ids []int
						if err := json.Unmarshal([]byte(text), &ids); err != nil {
							return fmt.Errorf("%s:%d: expected a JSON array of ids: %w", name, line, err)
						}
						s, err := tok.Decode(ids, !special)
						if err != nil {
							return fmt.Errorf("%s:%d: %w", name, line, err)
						}
						b, _ := json.Marshal(s)
						fmt.Fprintln(w, string(b))
						continue
					}
					if jsonl {
						if err := json.Unmarshal([]byte(text), &text); err != nil {
							return fmt.Errorf("%s:%d: expected a JSON string: %w", name, line, err)
						}
					}
					ids, err := tok.Encode(text, special)
					if err != nil {
						return fmt.Errorf("%s:%d: %w", name, line, err)
					}
					b, _ := json.Marshal(ids)
					fmt.Fprintln(w, string(b))
				}
				if err := sc.Err(); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				return nil
			}
			if len(args) == 0 {
				return each("stdin", os.Stdin)
			}
			for _, a := range args {
				f, err := os.Open(a)
				if err != nil {
					return err
				}
				err = each(a, f)
				f.Close()
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("tokenizer", "", "Hugging Face tokenizer.json")
	f.Bool("special", false, "add BOS/EOS as tokenizer.json's post-processor says (encode); keep special tokens (decode)")
	f.Bool("jsonl", false, "each input line is a JSON string")
	f.Bool("decode", false, "decode JSON arrays of ids back to text")
	return cmd
}
