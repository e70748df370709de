package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/ortq/ortq/internal/fsutil"
)

// configLimit bounds the --config file: option values, never data.
const configLimit = 1 << 20

// configFile is what one command takes from a --config file: option values by flag name
// and where each was written ("max-steps" at the top level, "train.max-steps" in a section),
// for error messages.
type configFile struct {
	values map[string]any
	origin map[string]string
}

// configEntry is one key: value pair of a YAML mapping.
type configEntry struct {
	key  string // lower-cased, as viper and the flags spell options
	raw  string // as written
	line int
	val  *yaml.Node
}

// readConfig reads the --config file for cmd. Top-level keys are options shared by the
// commands; a top-level mapping named after a command (prepare:, train:, eval: …) is that
// command's section, whose keys win over the top level's for it. Every section's keys must
// be its command's options, and a top-level key must be one of cmd's; in a file with
// sections, a top-level key of another command is left to that command (the file is
// shared). Keys are case-insensitive, so two that differ only in case are refused.
func readConfig(path string, cmd *cobra.Command) (*configFile, error) {
	b, err := fsutil.ReadBounded(path, configLimit)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	cf := &configFile{values: map[string]any{}, origin: map[string]string{}}
	if len(doc.Content) == 0 {
		return cf, nil // an empty file
	}
	top, err := entries(doc.Content[0], "")
	if err != nil {
		return nil, err
	}
	cmds := commandOptions(cmd)
	sectioned := false
	for i, e := range top {
		if _, isCmd := cmds[e.key]; isCmd && e.val.Kind == yaml.ScalarNode && e.val.Tag == "!!null" {
			top[i].val = &yaml.Node{Kind: yaml.MappingNode} // `train:` with nothing under it
			e = top[i]
		}
		if e.val.Kind != yaml.MappingNode {
			continue
		}
		if err := cf.section(e, cmd.Name(), cmds); err != nil {
			return nil, err
		}
		sectioned = true
	}
	for _, e := range top {
		if e.val.Kind == yaml.MappingNode {
			continue
		}
		if !cmds[cmd.Name()][e.key] {
			if sectioned && slices.ContainsFunc(sortedKeys(cmds), func(c string) bool { return cmds[c][e.key] }) {
				continue // another command's shared option
			}
			return nil, fmt.Errorf("unknown option %q for `ortq %s`%s", e.raw, cmd.Name(), elsewhere(e.key, cmds))
		}
		if _, set := cf.values[e.key]; set {
			continue // the section's value wins
		}
		if err := cf.set(e, e.key); err != nil {
			return nil, err
		}
	}
	return cf, nil
}

// section checks a top-level mapping e as the section of the command it names, and takes
// its values when that command is the one running.
func (cf *configFile) section(e configEntry, running string, cmds map[string]map[string]bool) error {
	opts, ok := cmds[e.key]
	if !ok {
		if elsewhere(e.key, cmds) != "" {
			return fmt.Errorf("%s (line %d): a mapping; the option wants a value", e.raw, e.line)
		}
		return fmt.Errorf("%s (line %d): unknown section; sections are named after commands (%s)", e.raw, e.line, strings.Join(sortedKeys(cmds), ", "))
	}
	sub, err := entries(e.val, e.raw+".")
	if err != nil {
		return err
	}
	for _, s := range sub {
		name := e.key + "." + s.raw
		switch {
		case s.val.Kind == yaml.MappingNode:
			return fmt.Errorf("%s (line %d): a mapping; sections hold option: value pairs", name, s.line)
		case !opts[s.key]:
			return fmt.Errorf("%s (line %d): unknown option for `ortq %s`%s", name, s.line, e.key, elsewhere(s.key, cmds))
		case e.key == running:
			if err := cf.set(s, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// set decodes e's value (aliases resolved) as the option e.key, written at origin.
func (cf *configFile) set(e configEntry, origin string) error {
	var v any
	if err := e.val.Decode(&v); err != nil {
		return fmt.Errorf("%s (line %d): %w", origin, e.line, err)
	}
	cf.values[e.key], cf.origin[e.key] = v, origin
	return nil
}

// entries lists a mapping's pairs, refusing keys that are not plain strings and two keys
// that are equal ignoring case (YAML would keep both; the options would take the last).
func entries(m *yaml.Node, prefix string) ([]configEntry, error) {
	if m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of option: value pairs", m.Line)
	}
	var out []configEntry
	seen := map[string]configEntry{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			return nil, fmt.Errorf("%s%s (line %d): keys must be option names", prefix, k.Value, k.Line)
		}
		e := configEntry{key: strings.ToLower(k.Value), raw: k.Value, line: k.Line, val: v}
		if d, dup := seen[e.key]; dup {
			return nil, fmt.Errorf("%s%s (line %d) and %s%s (line %d) name the same option (keys ignore case): keep one", prefix, d.raw, d.line, prefix, e.raw, e.line)
		}
		seen[e.key] = e
		out = append(out, e)
	}
	return out, nil
}

// commandOptions maps each ortq command that reads options (and cmd itself) to its option
// names: its own flags and the persistent ones it inherits.
func commandOptions(cmd *cobra.Command) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	add := func(c *cobra.Command) {
		set := map[string]bool{}
		mark := func(f *pflag.Flag) { set[f.Name] = true }
		c.Flags().VisitAll(mark)
		c.InheritedFlags().VisitAll(mark)
		c.Root().PersistentFlags().VisitAll(mark)
		out[c.Name()] = set
	}
	for _, c := range cmd.Root().Commands() {
		if c.Name() != "help" && c.Name() != "completion" && c != cmd {
			add(c)
		}
	}
	add(cmd)
	return out
}

// elsewhere names the commands that have option key, as a hint ("" when none has).
func elsewhere(key string, cmds map[string]map[string]bool) string {
	var in, sections []string
	for _, c := range sortedKeys(cmds) {
		if cmds[c][key] {
			in, sections = append(in, c), append(sections, c+":")
		}
	}
	if len(in) == 0 {
		return ""
	}
	return fmt.Sprintf(" (an option of %s: put it under %s)", strings.Join(in, ", "), strings.Join(sections, " or "))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
