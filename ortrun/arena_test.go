package ortrun

import "testing"

// TestParseArenaConfig: ORTQ_ARENA_MAX_DEAD_BYTES gives an arena configuration, none when
// unset, and a one-line error naming the variable otherwise.
func TestParseArenaConfig(t *testing.T) {
	deviceTestLib(t)
	for _, c := range []struct {
		v       string
		cfg, ok bool
	}{{"", false, true}, {"0", true, true}, {"1048576", true, true}, {"-1", false, false}, {"4MB", false, false}} {
		cfg, err := parseArenaConfig(c.v)
		if (err == nil) != c.ok || (cfg != nil) != c.cfg {
			t.Errorf("%q: config %v, error %v", c.v, cfg, err)
		}
		if cfg != nil {
			cfg.Destroy()
		}
	}
}
