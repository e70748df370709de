package envconfig

import (
	"reflect"
	"strings"
	"testing"
)

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// TestParse: each knob's values as read, and a bad value refused naming the variable.
func TestParse(t *testing.T) {
	on, off, n := true, false, 4194304
	for _, c := range []struct {
		env  map[string]string
		want Values
		err  string // a substring of the error; "" for none
	}{
		{nil, Values{DirectCopy: true, ShareWeights: true}, ""},
		{map[string]string{"ORTQX_SHARE_WEIGHTS": "0", "ORTQX_DIRECT_COPY": "false", "ORTQX_ORT_VERBOSE": "1", "ORTQX_PROFILE": "/tmp/p"},
			Values{Profile: "/tmp/p", ORTVerbose: true}, ""},
		{map[string]string{"ORTQX_MEM_PATTERN": "1"}, Values{MemPattern: &on, DirectCopy: true, ShareWeights: true}, ""},
		{map[string]string{"ORTQX_MEM_PATTERN": "0"}, Values{MemPattern: &off, DirectCopy: true, ShareWeights: true}, ""},
		{map[string]string{"ORTQX_MEM_PATTERN": "auto"}, Values{DirectCopy: true, ShareWeights: true}, ""},
		{map[string]string{"ORTQX_ARENA_MAX_DEAD_BYTES": "4194304"}, Values{ArenaMaxDeadBytes: &n, DirectCopy: true, ShareWeights: true}, ""},
		{map[string]string{"ORTQX_CUDA_OPTIONS": "gpu_mem_limit=1024, cudnn_conv_algo_search=HEURISTIC,", "ORTQX_SESSION_CONFIG": "a=b"},
			Values{CUDAOptions: map[string]string{"gpu_mem_limit": "1024", "cudnn_conv_algo_search": "HEURISTIC"},
				SessionConfig: map[string]string{"a": "b"}, DirectCopy: true, ShareWeights: true}, ""},
		{map[string]string{"ORTQX_SHARE_WEIGHTS": "banana"}, Values{}, `ORTQX_SHARE_WEIGHTS="banana": want 1 or 0`},
		{map[string]string{"ORTQX_MEM_PATTERN": "2"}, Values{}, "ORTQX_MEM_PATTERN"},
		{map[string]string{"ORTQX_ARENA_MAX_DEAD_BYTES": "-5"}, Values{}, "ORTQX_ARENA_MAX_DEAD_BYTES"},
		{map[string]string{"ORTQX_ARENA_MAX_DEAD_BYTES": "4MB"}, Values{}, "ORTQX_ARENA_MAX_DEAD_BYTES"},
		{map[string]string{"ORTQX_CUDA_OPTIONS": "gpu_mem_limit"}, Values{}, `ORTQX_CUDA_OPTIONS entry "gpu_mem_limit": want key=value`},
		{map[string]string{"ORTQ_SHARE_WEIGHTS": "0"}, Values{}, "ORTQ_SHARE_WEIGHTS is now named ORTQX_SHARE_WEIGHTS"},
		// ORTQ_PROFILE is `ortq bench --profile` (viper), not a knob: neither read nor refused.
		{map[string]string{"ORTQ_PROFILE": "dir"}, Values{DirectCopy: true, ShareWeights: true}, ""},
	} {
		got, err := Parse(lookup(c.env))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want one containing %q", c.env, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v: got %+v, %v; want %+v", c.env, got, err, c.want)
		}
	}
}

// TestTable: every knob Parse reads is in the table (and so in `ortq env` and the README),
// under the prefix no flag's variable can have.
func TestTable(t *testing.T) {
	read := map[string]bool{}
	if _, err := Parse(func(k string) (string, bool) { read[k] = true; return "", false }); err != nil {
		t.Fatal(err)
	}
	inTable := map[string]bool{}
	for _, k := range Knobs {
		if !strings.HasPrefix(k.Name, Prefix) || k.Usage == "" || k.Default == "" {
			t.Errorf("knob %+v: want the %s prefix, a default and a usage", k, Prefix)
		}
		inTable[k.Name] = true
	}
	for k := range read {
		if strings.HasPrefix(k, Prefix) && !inTable[k] {
			t.Errorf("%s is read but not in Knobs", k)
		}
	}
	for k := range inTable {
		if !read[k] {
			t.Errorf("%s is in Knobs but never read", k)
		}
	}
}
