package ortrun

import "testing"

// TestArenaConfig: Tuning.ArenaMaxDeadBytes gives one arena configuration per value for the
// process, and a one-line error for a negative value.
func TestArenaConfig(t *testing.T) {
	deviceTestLib(t)
	for _, c := range []struct {
		n  int
		ok bool
	}{{0, true}, {1048576, true}, {-1, false}} {
		cfg, err := arenaConfig(c.n)
		if (err == nil) != c.ok || (cfg != nil) != c.ok {
			t.Errorf("%d: config %v, error %v", c.n, cfg, err)
		}
		if again, _ := arenaConfig(c.n); again != cfg {
			t.Errorf("%d: a second call made another configuration", c.n)
		}
	}
}
